//! Header hygiene and claim header values: what a client sends that must never reach the
//! upstream, what the gateway adds in its place, and how claims become header values.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The claim header names of [`config`], lower case.
const CLAIM_NAMES: [&str; 3] = ["x-auth-sub", "x-auth-email", "x-auth-roles"];

/// Routes: `/protected` (required, three claim headers), `/public` (none, no claim headers),
/// `/optional` (optional, X-Auth-Sub), `/fwd` (required, forward_token), `/q` (token_query),
/// `/c` (token_cookie), `/claims` (one claim header per value shape). No route for `/nothing`.
fn config() -> String {
    format!(
        r#"{}
[[route]]
name = "protected"
path_prefix = "/protected"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Roles" = "roles"

[[route]]
name = "public"
path_prefix = "/public"
upstream = "{{upstream}}"
auth = "none"

[[route]]
name = "optional"
path_prefix = "/optional"
upstream = "{{upstream}}"
auth = "optional"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "fwd"
path_prefix = "/fwd"
upstream = "{{upstream}}"
auth = "required"
forward_token = true

[[route]]
name = "query"
path_prefix = "/q"
upstream = "{{upstream}}"
auth = "required"
token_query = "access_token"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "cookie"
path_prefix = "/c"
upstream = "{{upstream}}"
auth = "required"
token_cookie = "session"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "claims"
path_prefix = "/claims"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-C-Str" = "s"
"X-C-Int" = "n"
"X-C-Float" = "f"
"X-C-Bool" = "b"
"X-C-Arr" = "arr"
"X-C-Mixed" = "mixed"
"X-C-Obj" = "obj"
"X-C-Roles" = "/realm_access/roles"
"X-C-Missing" = "missing"
"X-C-Null" = "nul"
"X-C-Utf8" = "name"
"#,
        default_issuer()
    )
}

/// [`config`] with the test client's address (127.0.0.1) as a trusted proxy.
fn trusted_loopback_config() -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n{}",
        config()
    )
}

/// Claims for the protected route: sub, email and roles.
fn full_claims() -> Value {
    let mut c = claims();
    c["email"] = "alice@example.com".into();
    c["roles"] = json!(["admin", "user"]);
    c
}

fn tok() -> String {
    token("ES256", &full_claims())
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1: exact header-name spelling on the wire, chunked bodies with trailers.

#[derive(Debug)]
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    text: String,
}

impl RawAnswer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}):\n{}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `None` while incomplete.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(b, b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            // No trailers, or trailer lines up to an empty line.
            if b.starts_with(b"\r\n") || find(b, b"\r\n\r\n").is_some() {
                return Some(out);
            }
            return None;
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Sends `request` on a new connection and reads one whole response (Content-Length, chunked,
/// or until close).
async fn raw(h: &Harness, request: &str) -> RawAnswer {
    let mut s = TcpStream::connect(h.addr)
        .await
        .expect("connect to gateway");
    s.write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let body = &buf[end + 4..];
                let cl = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if let Some(cl) = cl {
                    if body.len() >= cl {
                        return;
                    }
                } else if head.contains("transfer-encoding: chunked") && dechunk(body).is_some() {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "gateway did not answer in time:\n{}",
                String::from_utf8_lossy(&buf)
            )
        });
    let text = String::from_utf8_lossy(&buf).into_owned();
    let end = find(&buf, b"\r\n\r\n").unwrap_or_else(|| panic!("no response head:\n{text}"));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line:\n{text}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let raw_body = &buf[end + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(raw_body).unwrap_or_else(|| panic!("incomplete chunked body:\n{text}"))
    } else {
        raw_body.to_vec()
    };
    RawAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        text,
    }
}

/// A GET request with the given extra header lines (each without CRLF).
fn get_req(path: &str, lines: &[String]) -> String {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n");
    for l in lines {
        r.push_str(l);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// A header name as the gateway must compare it: lower case, `_` read as `-`.
fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Every value the upstream received under any spelling equivalent to `claim` (lower case).
fn claim_like_values(echo: &Value, claim: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(obj) = echo["headers"].as_object() {
        for (name, values) in obj {
            if fold(name) == claim {
                for v in values.as_array().into_iter().flatten() {
                    out.push(v.as_str().unwrap_or_default().to_owned());
                }
            }
        }
    }
    out
}

/// Upper-cases every other letter: `x-AuTh-SuB`.
fn alternate_case(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The spellings of a claim header name a client might use to spoof it, each as the list of
/// header lines sent (so "repeated" variants send two lines).
fn spoof_variants(canonical: &str, value: &str) -> Vec<(String, Vec<String>)> {
    let line = |n: &str| format!("{n}: {value}");
    let last_dash = canonical.rfind('-').expect("a dash");
    let mut one_underscore = canonical.to_owned();
    one_underscore.replace_range(last_dash..=last_dash, "_");
    let names = [
        ("exact", canonical.to_owned()),
        ("lower", canonical.to_ascii_lowercase()),
        ("upper", canonical.to_ascii_uppercase()),
        ("mixed", alternate_case(canonical)),
        ("underscores", canonical.replace('-', "_")),
        (
            "lower underscores",
            canonical.to_ascii_lowercase().replace('-', "_"),
        ),
        (
            "upper underscores",
            canonical.to_ascii_uppercase().replace('-', "_"),
        ),
        ("one underscore", one_underscore),
    ];
    let mut out: Vec<(String, Vec<String>)> = names
        .iter()
        .map(|(what, n)| (format!("{what} {n:?}"), vec![line(n)]))
        .collect();
    out.push((
        format!("repeated {canonical:?}"),
        vec![line(canonical), line(canonical)],
    ));
    out.push((
        format!("repeated mixed {canonical:?}"),
        vec![
            line(canonical),
            line(&canonical.to_ascii_lowercase().replace('-', "_")),
        ],
    ));
    out
}

/// Sends every spoof variant of every claim header to `path` with `auth_lines`, and checks the
/// upstream never sees a spoofed value; `expected[i]` is what CLAIM_NAMES[i] must carry.
async fn check_spoofing(
    h: &Harness,
    path: &str,
    auth_lines: &[String],
    expected: [Option<&str>; 3],
) {
    for canonical in ["X-Auth-Sub", "X-Auth-Email", "X-Auth-Roles"] {
        for (what, spoof_lines) in spoof_variants(canonical, "evil-spoof") {
            let mut lines = auth_lines.to_vec();
            lines.extend(spoof_lines);
            let a = raw(h, &get_req(path, &lines)).await;
            assert_eq!(a.status, 200, "{path} {what}:\n{}", a.text);
            let echo = a.json();
            let headers_text = echo["headers"].to_string();
            assert!(
                !headers_text.contains("evil-spoof"),
                "{path} {what}: spoofed value reached the upstream: {headers_text}"
            );
            for (claim, want) in CLAIM_NAMES.iter().zip(expected) {
                let got = claim_like_values(&echo, claim);
                let want: Vec<String> = want.iter().map(|w| (*w).to_owned()).collect();
                assert_eq!(
                    got, want,
                    "{path} {what}: upstream values for {claim}: {headers_text}"
                );
            }
        }
    }
}

fn bearer_line(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

// ---------------------------------------------------------------------------------------------
// Spoofing claim headers.

#[tokio::test]
async fn spoofed_claim_headers_replaced_by_real_claims_on_protected_route() {
    let h = Harness::start(&config()).await;
    check_spoofing(
        &h,
        "/protected/x",
        &[bearer_line(&tok())],
        [Some("alice"), Some("alice@example.com"), Some("admin,user")],
    )
    .await;
}

#[tokio::test]
async fn spoofed_claim_headers_removed_when_claim_absent_on_protected_route() {
    // The token has sub only: the spoofed email/roles must not survive in place of a claim.
    let h = Harness::start(&config()).await;
    let t = token("ES256", &claims());
    check_spoofing(
        &h,
        "/protected/x",
        &[bearer_line(&t)],
        [Some("alice"), None, None],
    )
    .await;
}

#[tokio::test]
async fn spoofed_claim_headers_removed_on_public_route_without_token() {
    let h = Harness::start(&config()).await;
    check_spoofing(&h, "/public/x", &[], [None, None, None]).await;
}

#[tokio::test]
async fn spoofed_claim_headers_removed_on_public_route_with_invalid_token() {
    let h = Harness::start(&config()).await;
    let bad = sign_raw_other(
        "ES256",
        r#"{"alg":"ES256","typ":"JWT","kid":"ec256"}"#,
        &full_claims().to_string(),
    );
    check_spoofing(&h, "/public/x", &[bearer_line(&bad)], [None, None, None]).await;
    check_spoofing(
        &h,
        "/public/x",
        &[bearer_line("not.a.jwt")],
        [None, None, None],
    )
    .await;
}

#[tokio::test]
async fn spoofed_claim_headers_removed_on_optional_route_without_token() {
    let h = Harness::start(&config()).await;
    check_spoofing(&h, "/optional/x", &[], [None, None, None]).await;
}

#[tokio::test]
async fn spoofed_claim_headers_replaced_on_optional_route_with_token() {
    // The optional route maps only X-Auth-Sub; email and roles are other routes' names.
    let h = Harness::start(&config()).await;
    check_spoofing(
        &h,
        "/optional/x",
        &[bearer_line(&tok())],
        [Some("alice"), None, None],
    )
    .await;
}

#[tokio::test]
async fn connection_listing_a_claim_header_does_not_remove_the_real_claim() {
    let h = Harness::start(&config()).await;
    for conn in [
        "X-Auth-Sub",
        "x-auth-sub, X-Auth-Email",
        "keep-alive, X-AUTH-SUB",
    ] {
        let a = raw(
            &h,
            &get_req(
                "/protected/x",
                &[
                    bearer_line(&tok()),
                    format!("Connection: {conn}"),
                    "X-Auth-Sub: evil-spoof".into(),
                ],
            ),
        )
        .await;
        assert_eq!(a.status, 200, "Connection: {conn}:\n{}", a.text);
        let echo = a.json();
        assert_eq!(
            claim_like_values(&echo, "x-auth-sub"),
            ["alice"],
            "Connection: {conn}: {}",
            a.body
        );
        assert_eq!(
            claim_like_values(&echo, "x-auth-email"),
            ["alice@example.com"],
            "Connection: {conn}: {}",
            a.body
        );
        assert!(!a.body.contains("evil-spoof"), "{}", a.body);
    }
}

#[tokio::test]
async fn claim_header_in_chunked_trailer_never_becomes_an_upstream_header() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let no: Vec<String> = Vec::new();
    for (path, auth, want_sub, want_email) in [
        (
            "/protected/t",
            bearer_line(&t),
            vec!["alice".to_owned()],
            vec!["alice@example.com".to_owned()],
        ),
        ("/public/t", String::new(), no.clone(), no.clone()),
        ("/optional/t", String::new(), no.clone(), no.clone()),
    ] {
        let auth = if auth.is_empty() {
            String::new()
        } else {
            format!("{auth}\r\n")
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: gw.test\r\n{auth}Transfer-Encoding: chunked\r\n\
             Trailer: X-Auth-Sub, x_auth_email\r\n\r\n\
             5\r\nhello\r\n0\r\nX-Auth-Sub: evil-spoof\r\nx_auth_email: evil-spoof\r\n\r\n"
        );
        let a = raw(&h, &req).await;
        assert_eq!(a.status, 200, "{path}:\n{}", a.text);
        let echo = a.json();
        assert_eq!(echo["body"], "hello", "{path}: {}", a.body);
        assert_eq!(
            claim_like_values(&echo, "x-auth-sub"),
            want_sub,
            "{path}: {}",
            a.body
        );
        assert_eq!(
            claim_like_values(&echo, "x-auth-email"),
            want_email,
            "{path}: {}",
            a.body
        );
        assert!(
            !echo["headers"].to_string().contains("evil-spoof"),
            "{path}: trailer reached the upstream as a header: {}",
            a.body
        );
        assert!(echo["headers"].get("trailer").is_none(), "{}", a.body);
    }
}

// ---------------------------------------------------------------------------------------------
// Hop-by-hop headers.

#[tokio::test]
async fn hop_by_hop_headers_never_reach_upstream() {
    let h = Harness::start(&config()).await;
    let a = raw(
        &h,
        &get_req(
            "/public/hop",
            &[
                "Connection: keep-alive".into(),
                "Keep-Alive: timeout=5, max=100".into(),
                "Proxy-Connection: keep-alive".into(),
                "TE: trailers".into(),
                "Trailer: X-Checksum".into(),
                "Upgrade: foo/1".into(),
                "Proxy-Authorization: Basic dXNlcjpwYXNz".into(),
                "X-Kept: yes".into(),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let names = a.json()["headers"]
        .as_object()
        .expect("echo headers")
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(
            !names.iter().any(|n| n == hop),
            "{hop} reached the upstream: {names:?}"
        );
    }
    assert!(names.iter().any(|n| n == "x-kept"), "{names:?}");
}

#[tokio::test]
async fn headers_listed_in_connection_are_removed() {
    let h = Harness::start(&config()).await;
    let a = raw(
        &h,
        &get_req(
            "/public/conn",
            &[
                "Connection: foo, bar".into(),
                "Connection: Baz".into(),
                "Foo: 1".into(),
                "bar: 2".into(),
                "baz: 3".into(),
                "Qux: 4".into(),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let echo = a.json();
    for gone in ["foo", "bar", "baz", "connection"] {
        assert!(
            echo["headers"].get(gone).is_none(),
            "{gone} reached the upstream: {}",
            a.body
        );
    }
    assert_eq!(echo["headers"]["qux"], json!(["4"]), "{}", a.body);
}

#[tokio::test]
async fn connection_cannot_remove_gateway_headers() {
    let h = Harness::start(&config()).await;
    let a = raw(
        &h,
        &get_req(
            "/public/conn",
            &[
                "Connection: x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-request-id, host"
                    .into(),
                "X-Forwarded-For: 1.2.3.4".into(),
                "X-Request-Id: client-id-1".into(),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let echo = a.json();
    let hv = |n: &str| echo["headers"][n].clone();
    // The listed X-Forwarded-For is the client's hop-by-hop header: removed, then ours is set.
    assert_eq!(hv("x-forwarded-for"), json!(["127.0.0.1"]), "{}", a.body);
    assert_eq!(hv("x-forwarded-proto"), json!(["http"]), "{}", a.body);
    assert_eq!(hv("x-forwarded-host"), json!(["gw.test"]), "{}", a.body);
    assert_eq!(hv("host"), json!(["gw.test"]), "{}", a.body);
    let id = hv("x-request-id");
    let ids = id.as_array().expect("upstream got an x-request-id");
    assert_eq!(ids.len(), 1, "{}", a.body);
    assert_eq!(
        Some(ids[0].as_str().unwrap_or_default()),
        a.header("x-request-id"),
        "the upstream and the client see the same request id: {}",
        a.text
    );
}

// ---------------------------------------------------------------------------------------------
// X-Forwarded-*, Host, X-Request-Id, traceparent.

#[tokio::test]
async fn x_forwarded_for_set_when_absent() {
    let h = Harness::start(&config()).await;
    let a = h.get("/public/x", &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn x_forwarded_for_appended_when_present_from_a_trusted_proxy() {
    // SPEC "Connections and trust": only a trusted peer's chain is kept (the untrusted case is
    // in tests/attacks_trust.rs).
    let h = Harness::start(&trusted_loopback_config()).await;
    let a = h.get("/public/x", &[("x-forwarded-for", "1.2.3.4")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-forwarded-for"), ["1.2.3.4, 127.0.0.1"]);
}

#[tokio::test]
async fn x_forwarded_proto_is_http_and_overrides_client() {
    let h = Harness::start(&config()).await;
    let a = h.get("/public/x", &[]).await;
    assert_eq!(
        a.upstream_header("x-forwarded-proto"),
        ["http"],
        "{}",
        a.body
    );
    let a = h.get("/public/x", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        a.upstream_header("x-forwarded-proto"),
        ["http"],
        "{}",
        a.body
    );
}

#[tokio::test]
async fn x_forwarded_host_and_host_are_the_clients_host() {
    let h = Harness::start(&config()).await;
    let a = h
        .get(
            "/public/x",
            &[
                ("host", "api.example.test:8080"),
                ("x-forwarded-host", "evil.example"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.upstream_header("x-forwarded-host"),
        ["api.example.test:8080"]
    );
    assert_eq!(a.upstream_header("host"), ["api.example.test:8080"]);
}

#[tokio::test]
async fn client_request_id_kept_and_returned() {
    let h = Harness::start(&config()).await;
    let a = h
        .get(
            "/protected/x",
            &[
                ("x-request-id", "client-req-42"),
                ("authorization", &format!("Bearer {}", tok())),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-request-id"), ["client-req-42"]);
    assert_eq!(a.header("x-request-id"), Some("client-req-42"));
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn request_id_generated_when_absent_and_same_upstream_and_client() {
    let h = Harness::start(&config()).await;
    let a = h.get("/public/x", &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let up = a.upstream_header("x-request-id");
    assert_eq!(up.len(), 1, "{}", a.body);
    assert!(is_hex32(&up[0]), "generated id {:?}", up[0]);
    assert_eq!(a.header("x-request-id"), Some(up[0].as_str()));
    let b = h.get("/public/x", &[]).await;
    assert_ne!(
        b.upstream_header("x-request-id"),
        up,
        "each request gets its own id"
    );
}

#[tokio::test]
async fn error_answers_carry_request_id() {
    let h = Harness::start(&config()).await;
    for (path, status) in [("/protected/x", 401), ("/nothing", 404)] {
        let a = h.get(path, &[]).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
        assert!(a.json()["error"].is_string(), "{path}: {}", a.body);
        let id = a.header("x-request-id").unwrap_or_default();
        assert!(is_hex32(id), "{path}: x-request-id {id:?}");
        let a = h.get(path, &[("x-request-id", "err-id-7")]).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
        assert_eq!(a.header("x-request-id"), Some("err-id-7"), "{path}");
    }
    // An invalid token's 401 too.
    let a = h.get_with_token("/protected/x", "not.a.jwt").await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(is_hex32(a.header("x-request-id").unwrap_or_default()));
}

#[tokio::test]
async fn traceparent_passes_through_unchanged() {
    let h = Harness::start(&config()).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let auth = format!("Bearer {}", tok());
    for path in ["/public/x", "/protected/x"] {
        let a = h
            .get(path, &[("traceparent", tp), ("authorization", &auth)])
            .await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(a.upstream_header("traceparent"), [tp], "{path}");
    }
}

// ---------------------------------------------------------------------------------------------
// Claim values.

#[tokio::test]
async fn claim_values_rendered_by_type() {
    let h = Harness::start(&config()).await;
    let mut c = claims();
    c["s"] = "plain string".into();
    c["n"] = json!(42);
    c["f"] = json!(1.5);
    c["b"] = json!(true);
    c["arr"] = json!(["a", "b c", "d"]);
    c["mixed"] = json!(["a", 1, true]);
    c["obj"] = json!({ "a": 1, "b": "x" });
    c["realm_access"] = json!({ "roles": ["admin", "viewer"] });
    c["nul"] = Value::Null;
    c["name"] = "Zoë Ångström 日本 🚀".into();
    let a = h.get_with_token("/claims/x", &token("ES256", &c)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    for (name, want) in [
        ("x-c-str", "plain string"),
        ("x-c-int", "42"),
        ("x-c-float", "1.5"),
        ("x-c-bool", "true"),
        ("x-c-arr", "a,b c,d"),
        ("x-c-mixed", r#"["a",1,true]"#),
        ("x-c-obj", r#"{"a":1,"b":"x"}"#),
        ("x-c-roles", "admin,viewer"),
        ("x-c-utf8", "Zoë Ångström 日本 🚀"),
    ] {
        assert_eq!(a.upstream_header(name), [want], "{name}: {}", a.body);
    }
    for absent in ["x-c-missing", "x-c-null"] {
        assert!(
            a.json()["headers"].get(absent).is_none(),
            "{absent} should be absent: {}",
            a.body
        );
    }
}

#[tokio::test]
async fn claim_value_non_ascii_utf8_is_byte_exact_on_the_wire() {
    // The echo decodes lossily; check the raw bytes the upstream received round-trip through
    // the JSON text byte for byte (a mangled byte would show as U+FFFD).
    let h = Harness::start(&config()).await;
    let name = "Zoë \u{00e9}\u{4e2d}\u{1f600} \u{0301}x";
    let mut c = claims();
    c["name"] = name.into();
    let a = h.get_with_token("/claims/x", &token("ES256", &c)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let got = a.upstream_header("x-c-utf8");
    assert_eq!(got.len(), 1, "{}", a.body);
    assert_eq!(got[0].as_bytes(), name.as_bytes());
    assert!(!got[0].contains('\u{fffd}'));
}

#[tokio::test]
async fn claim_value_with_control_character_is_invalid_token() {
    let h = Harness::start(&config()).await;
    let bads = [
        ("CRLF", "ok\r\nX-Injected: yes"),
        ("LF", "ok\nX-Injected: yes"),
        ("CR", "ok\rX-Injected: yes"),
        ("NUL", "ok\u{0000}x"),
        ("TAB", "ok\tx"),
        ("ESC", "ok\u{001b}[31mx"),
        ("DEL", "ok\u{007f}x"),
    ];
    let mut cases: Vec<(String, Value)> = Vec::new();
    for (what, bad) in bads {
        let mut c = claims();
        c["s"] = bad.into();
        cases.push((format!("{what} in a string claim"), c));
        let mut c = claims();
        c["arr"] = json!(["fine", bad]);
        cases.push((format!("{what} in an array element"), c));
        let mut c = claims();
        c["realm_access"] = json!({ "roles": ["fine", bad] });
        cases.push((format!("{what} in a JSON-pointer array"), c));
    }
    for (what, c) in cases {
        let t = token("ES256", &c);
        let a = h.get_with_token("/claims/x", &t).await;
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        let body = a.json();
        assert_eq!(body["error"], "invalid_token", "{what}: {}", a.body);
        assert!(
            body.get("headers").is_none() && body.get("method").is_none(),
            "{what}: the upstream was reached: {}",
            a.body
        );
        let www = a.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with("Bearer realm=\"jwtgate\", error=\"invalid_token\""),
            "{what}: WWW-Authenticate {www:?}"
        );
        assert!(
            a.headers.get("x-injected").is_none(),
            "{what}: {:?}",
            a.headers
        );
        assert!(!a.body.contains("X-Injected"), "{what}: {}", a.body);
        assert!(!a.body.contains(&t), "{what}: token echoed: {}", a.body);
    }
}

#[tokio::test]
async fn control_character_inside_json_rendered_claim_is_escaped_or_refused() {
    // Objects and mixed arrays are sent as compact JSON, which escapes U+0000..U+001F: the
    // header value holds `\r\n` as text, never a raw control byte. JSON leaves DEL unescaped,
    // so a DEL there is a raw control byte and the token is refused.
    let h = Harness::start(&config()).await;
    for (what, bad) in [
        ("CRLF", "ok\r\nX-Injected: yes"),
        ("LF", "ok\nX-Injected: yes"),
        ("NUL", "ok\u{0000}x"),
        ("TAB", "ok\tx"),
        ("ESC", "ok\u{001b}x"),
    ] {
        for (name, claim, value) in [
            ("x-c-obj", "obj", json!({ "k": bad })),
            ("x-c-mixed", "mixed", json!([1, bad])),
        ] {
            let mut c = claims();
            c[claim] = value.clone();
            let a = h.get_with_token("/claims/x", &token("ES256", &c)).await;
            assert_eq!(a.status, 200, "{what} in {claim}: {}", a.body);
            let got = a.upstream_header(name);
            assert_eq!(got, [value.to_string()], "{what} in {claim}: {}", a.body);
            assert!(
                got[0].bytes().all(|b| b >= 0x20 && b != 0x7f),
                "{what} in {claim}: raw control byte in {got:?}"
            );
            assert!(a.upstream_header("x-injected").is_empty(), "{}", a.body);
        }
    }
    for (claim, value) in [
        ("obj", json!({ "k": "ok\u{007f}x" })),
        ("mixed", json!([1, "ok\u{007f}x"])),
    ] {
        let mut c = claims();
        c[claim] = value;
        let a = h.get_with_token("/claims/x", &token("ES256", &c)).await;
        assert_eq!(a.status, 401, "DEL in {claim}: {}", a.body);
        assert_eq!(
            a.json()["error"],
            "invalid_token",
            "DEL in {claim}: {}",
            a.body
        );
    }
}

#[tokio::test]
async fn control_character_in_unmapped_claim_is_harmless() {
    // Only claims that become headers are held to header rules.
    let h = Harness::start(&config()).await;
    let mut c = claims();
    c["note"] = "line1\nline2".into();
    c["s"] = "fine".into();
    let a = h.get_with_token("/claims/x", &token("ES256", &c)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-c-str"), ["fine"]);
}

// ---------------------------------------------------------------------------------------------
// forward_token.

#[tokio::test]
async fn authorization_removed_by_default() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let a = h.get_with_token("/protected/x", &t).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.upstream_header("authorization").is_empty(), "{}", a.body);
    assert!(
        !a.body.contains(&t),
        "token reached the upstream: {}",
        a.body
    );
}

#[tokio::test]
async fn authorization_kept_with_forward_token() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let a = h.get_with_token("/fwd/x", &t).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("authorization"), [format!("Bearer {t}")]);
}

// ---------------------------------------------------------------------------------------------
// Where the token comes from.

fn assert_400(a: &Answer, t: &str, what: &str) {
    assert_eq!(a.status, 400, "{what}: {}", a.body);
    assert_eq!(a.json()["error"], "invalid_request", "{what}: {}", a.body);
    assert!(!a.body.contains(t), "{what}: token echoed: {}", a.body);
}

#[tokio::test]
async fn two_authorization_headers_is_400() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let auth = format!("Bearer {t}");
    for path in ["/protected/x", "/public/x", "/optional/x"] {
        let a = h
            .get(path, &[("authorization", &auth), ("authorization", &auth)])
            .await;
        assert_400(&a, &t, path);
    }
}

#[tokio::test]
async fn header_token_and_access_token_query_is_400() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let auth = format!("Bearer {t}");
    for path in ["/protected/x", "/q/x"] {
        let a = h
            .get(
                &format!("{path}?access_token={t}"),
                &[("authorization", &auth)],
            )
            .await;
        assert_400(&a, &t, path);
    }
}

#[tokio::test]
async fn token_query_alone_works_and_is_removed() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let a = h.get(&format!("/q/x?a=1&access_token={t}&b=2"), &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let echo = a.json();
    assert_eq!(echo["query"], "a=1&b=2", "{}", a.body);
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
    assert!(
        !a.body.contains(&t),
        "token reached the upstream: {}",
        a.body
    );

    let a = h.get(&format!("/q/x?access_token={t}"), &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json()["query"].is_null(), "{}", a.body);
    assert!(
        !a.body.contains(&t),
        "token reached the upstream: {}",
        a.body
    );

    // Without the token the route is still protected.
    let a = h.get("/q/x?a=1", &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
}

#[tokio::test]
async fn token_cookie_works_and_only_that_cookie_is_removed() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let cookie = format!("a=1; session={t}; b=2");
    let a = h.get("/c/x", &[("cookie", &cookie)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
    assert_eq!(a.upstream_header("cookie"), ["a=1; b=2"], "{}", a.body);
    assert!(
        !a.body.contains(&t),
        "token reached the upstream: {}",
        a.body
    );

    let a = h.get("/c/x", &[("cookie", &format!("session={t}"))]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.upstream_header("cookie").is_empty(), "{}", a.body);
}

#[tokio::test]
async fn header_token_and_cookie_token_is_400() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let auth = format!("Bearer {t}");
    let cookie = format!("session={t}");
    let a = h
        .get("/c/x", &[("authorization", &auth), ("cookie", &cookie)])
        .await;
    assert_400(&a, &t, "header + cookie");
}

// ---------------------------------------------------------------------------------------------
// Authorization scheme variants.

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let h = Harness::start(&config()).await;
    let t = tok();
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let v = format!("{scheme} {t}");
        let a = h.get("/protected/x", &[("authorization", &v)]).await;
        assert_eq!(a.status, 200, "{scheme}: {}", a.body);
        assert_eq!(a.upstream_header("x-auth-sub"), ["alice"], "{scheme}");
    }
}

#[tokio::test]
async fn basic_credentials_on_required_route_count_as_no_token() {
    let h = Harness::start(&config()).await;
    let a = h
        .get("/protected/x", &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(
        a.header("www-authenticate"),
        Some("Bearer realm=\"jwtgate\"")
    );
    assert_eq!(a.json()["error"], "missing_token", "{}", a.body);
    assert!(!a.body.contains("dXNlcjpwYXNz"), "{}", a.body);
}

#[tokio::test]
async fn bearer_without_token_is_401() {
    let h = Harness::start(&config()).await;
    for v in ["Bearer", "Bearer ", "Bearer    "] {
        let a = h.get("/protected/x", &[("authorization", v)]).await;
        assert_eq!(a.status, 401, "{v:?}: {}", a.body);
        // "Bearer" names the scheme, so an empty token is a malformed token, not a missing one.
        assert_eq!(a.json()["error"], "invalid_token", "{v:?}: {}", a.body);
        let www = a.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with("Bearer realm=\"jwtgate\", error=\"invalid_token\""),
            "{v:?}: {www:?}"
        );
        assert!(
            a.json().get("headers").is_none(),
            "{v:?}: upstream reached: {}",
            a.body
        );
    }
}

#[tokio::test]
async fn two_query_tokens_or_two_cookie_tokens_is_400() {
    let h = Harness::start(&config()).await;
    let t = tok();
    let a = h
        .get(&format!("/q/x?access_token={t}&access_token={t}"), &[])
        .await;
    assert_400(&a, &t, "two query tokens");
    let cookie = format!("session={t}; x=1; session={t}");
    let a = h.get("/c/x", &[("cookie", &cookie)]).await;
    assert_400(&a, &t, "two session cookies");
}

#[tokio::test]
async fn repeated_x_forwarded_for_merged_into_one_value_from_a_trusted_proxy() {
    let h = Harness::start(&trusted_loopback_config()).await;
    let a = raw(
        &h,
        &get_req(
            "/public/x",
            &[
                "X-Forwarded-For: 1.1.1.1".into(),
                "X-Forwarded-For: 2.2.2.2".into(),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.json()["headers"]["x-forwarded-for"],
        json!(["1.1.1.1, 2.2.2.2, 127.0.0.1"]),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn repeated_client_request_id_forwarded_once() {
    let h = Harness::start(&config()).await;
    let a = raw(
        &h,
        &get_req(
            "/public/x",
            &["X-Request-Id: one".into(), "X-Request-Id: two".into()],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let ids = a.json()["headers"]["x-request-id"].clone();
    assert_eq!(ids.as_array().map(Vec::len), Some(1), "{}", a.body);
    assert_eq!(ids[0].as_str(), a.header("x-request-id"), "{}", a.text);
}

/// A one-shot upstream that records the exact bytes of one request and answers 200.
async fn capture_upstream() -> (String, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind capture upstream");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let body = &buf[end + 4..];
                let done = if head.contains("transfer-encoding: chunked") {
                    dechunk(body).is_some()
                } else {
                    head.lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .is_none_or(|cl| body.len() >= cl)
                };
                if done {
                    break;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        let _ = tx.send(buf);
    });
    (url, rx)
}

#[tokio::test]
async fn claim_header_in_chunked_trailer_never_reaches_upstream_bytes() {
    // Stronger than the echo check: the exact bytes on the upstream connection, so a spoofed
    // claim forwarded as a trailer (which a backend might merge into headers) is caught too.
    let (url, captured) = capture_upstream().await;
    let cfg = config().replacen("{upstream}", &url, 1); // the first route is /protected
    let h = Harness::start(&cfg).await;
    let req = format!(
        "POST /protected/t HTTP/1.1\r\nHost: gw.test\r\n{}\r\nTransfer-Encoding: chunked\r\n\
         Trailer: X-Auth-Sub\r\n\r\n5\r\nhello\r\n0\r\nX-Auth-Sub: evil-spoof\r\n\r\n",
        bearer_line(&tok())
    );
    let a = raw(&h, &req).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body, "ok", "{}", a.text);
    let bytes = tokio::time::timeout(Duration::from_secs(5), captured)
        .await
        .expect("upstream captured in time")
        .expect("upstream captured a request");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("evil-spoof"),
        "upstream saw the spoof:\n{text}"
    );
    let lower = text.to_ascii_lowercase();
    assert_eq!(
        lower.matches("x-auth-sub:").count(),
        1,
        "exactly one X-Auth-Sub on the wire:\n{text}"
    );
    assert!(lower.contains("x-auth-sub: alice\r\n"), "{text}");
    assert!(text.contains("hello"), "{text}");
}

/// An HTTP/2 (prior knowledge) request to the gateway; each header pair is sent as its own field.
async fn h2_get(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Answer {
    common::client::get_h2(&format!("http://{}{}", h.addr, path), headers).await
}

#[tokio::test]
async fn token_cookie_removal_keeps_other_cookies_in_split_cookie_headers() {
    // HTTP/2 clients (browsers) send each cookie as its own `cookie` field (RFC 9113 §8.2.3).
    let h = Harness::start(&config()).await;
    let t = tok();
    let session = format!("session={t}");
    let a = h2_get(
        &h,
        "/c/x",
        &[("cookie", "a=1"), ("cookie", &session), ("cookie", "b=2")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        !a.body.contains(&t),
        "token reached the upstream: {}",
        a.body
    );
    let cookies = a.upstream_header("cookie").join("; ");
    assert_eq!(cookies, "a=1; b=2", "{}", a.body);

    // The same over HTTP/1.1 with two Cookie lines.
    let a = raw(
        &h,
        &get_req(
            "/c/x",
            &[format!("Cookie: {session}"), "Cookie: b=2".into()],
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        !a.body.contains(&t),
        "token reached the upstream: {}",
        a.body
    );
    let echo = a.json();
    let cookies: Vec<&str> = echo["headers"]["cookie"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(cookies.join("; "), "b=2", "{}", a.body);
}

#[tokio::test]
async fn spoofed_claim_headers_removed_over_http2() {
    let h = Harness::start(&config()).await;
    let auth = format!("Bearer {}", tok());
    for (path, auth, want_sub) in [
        ("/public/x", None, vec![]),
        (
            "/protected/x",
            Some(auth.as_str()),
            vec!["alice".to_owned()],
        ),
    ] {
        let mut hs = vec![
            ("x-auth-sub", "evil-spoof"),
            ("x_auth_sub", "evil-spoof"),
            ("x-auth_email", "evil-spoof"),
            ("x_auth_roles", "evil-spoof"),
        ];
        if let Some(a) = auth {
            hs.push(("authorization", a));
        }
        let a = h2_get(&h, path, &hs).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        let echo = a.json();
        assert!(!a.body.contains("evil-spoof"), "{path}: {}", a.body);
        assert_eq!(claim_like_values(&echo, "x-auth-sub"), want_sub, "{path}");
    }
}

#[tokio::test]
async fn http2_cookie_crumbs_joined_for_http1_upstream() {
    let h = Harness::start(&config()).await;
    let a = h2_get(&h, "/public/x", &[("cookie", "a=1"), ("cookie", "b=2")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("cookie"), ["a=1; b=2"], "{}", a.body);
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from a kept-alive connection.
async fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Value) {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while pending.len() < end + 4 + len {
                let n = s.read(&mut buf).await.expect("read body");
                assert!(n > 0, "connection closed mid-body after {head}");
                pending.extend_from_slice(&buf[..n]);
            }
            let body: Vec<u8> = pending.drain(..end + 4 + len).skip(end + 4).collect();
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return (head, json);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "connection closed before an answer");
        pending.extend_from_slice(&buf[..n]);
    }
}

/// An idle keep-alive connection holds no read buffer (vendor/hyper/JWTGATE-PATCH.md): each
/// request head's first read goes to a small stack buffer. Whatever way a head arrives, the
/// request must come through whole, on the same connection.
#[tokio::test]
async fn request_heads_arriving_in_any_shape_on_one_keep_alive_connection() {
    let h = Harness::start(&config()).await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let mut pending = Vec::new();

    // 1. A head dribbled a few bytes at a time.
    let head = "GET /public/dribble?x=1 HTTP/1.1\r\nHost: gw.test\r\nX-Custom: slow\r\n\r\n";
    for chunk in head.as_bytes().chunks(3) {
        s.write_all(chunk).await.expect("write");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (status, echo) = read_response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(echo["path"], "/public/dribble", "{echo}");
    assert_eq!(echo["headers"]["x-custom"][0], "slow", "{echo}");

    // 2. A head larger than the 4 KiB first read, in one write.
    let big = "b".repeat(6000);
    let req = format!("GET /public/big HTTP/1.1\r\nHost: gw.test\r\nX-Big: {big}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let (status, echo) = read_response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(echo["headers"]["x-big"][0], big.as_str());

    // 3. A POST whose body arrives with its head, then two pipelined requests in one write.
    let req =
        "POST /public/post HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 11\r\n\r\nhello world\
               GET /public/one HTTP/1.1\r\nHost: gw.test\r\n\r\n\
               GET /public/two HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    s.write_all(req.as_bytes()).await.expect("write");
    let (status, echo) = read_response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "hello world", "{echo}");
    for want in ["/public/one", "/public/two"] {
        let (status, echo) = read_response(&mut s, &mut pending).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(echo["path"], want, "{echo}");
    }

    // 4. After a pause long enough for the connection to go idle, it still serves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"GET /public/after-idle HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    let (status, echo) = read_response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(echo["path"], "/public/after-idle", "{echo}");
    assert!(pending.is_empty(), "unexpected extra bytes");
}

//! Request-level findings of the outside probe (issue 13, F2-F7): query token names with an
//! array suffix or a NUL, raw non-ASCII in the query, TRACE/TRACK, a missing Host, unknown
//! transfer codings, non-http schemes, invisible or imprecise claim values, the added trust
//! headers, metrics on the first scrape and token name validation. HTTP/1.1 requests are sent
//! as raw bytes; HTTP/2 ones over a prior-knowledge connection.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use common::{claims, default_issuer, raw_exchange, token, Harness};

const WAIT: Duration = Duration::from_secs(5);

/// `opt` (optional) on `/opt` and `req` (required) on `/req` read the query token
/// `access_token` and the cookie `tok`; `pub` (none) on `/`. `X-Auth-Sub` carries `sub`,
/// `X-Auth-N` the claim `n`.
fn config() -> String {
    let route = |name: &str, prefix: &str, auth: &str| {
        format!(
            r#"
[[route]]
name = "{name}"
path_prefix = "{prefix}"
upstream = "{{upstream}}"
auth = "{auth}"
token_query = "access_token"
token_cookie = "tok"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-N" = "n"
"#
        )
    };
    format!(
        "{}{}{}\n[[route]]\nname = \"pub\"\npath_prefix = \"/\"\nupstream = \"{{upstream}}\"\nauth = \"none\"\n",
        default_issuer(),
        route("opt", "/opt", "optional"),
        route("req", "/req", "required"),
    )
}

fn valid() -> String {
    token("ES256", &claims())
}

/// Status and body of a raw HTTP/1.1 exchange (`head` without its final empty line).
async fn h1(h: &Harness, head: &str) -> (u16, String) {
    let (text, _) = raw_exchange(h.addr, format!("{head}\r\n\r\n").as_bytes(), WAIT).await;
    parse_h1(&text)
}

/// A request without body on its own HTTP/1.1 connection, with `Host: x`.
async fn h1_plain(h: &Harness, method: &str, target: &str) -> (u16, String) {
    h1(
        h,
        &format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close"),
    )
    .await
}

fn parse_h1(text: &str) -> (u16, String) {
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// Status and body of one HTTP/2 request (0 when the stream was refused or reset).
async fn h2(h: &Harness, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{target}", h.addr));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let req = b.body(Full::new(Bytes::new())).expect("request");
    let Ok(res) = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("an HTTP/2 answer in time")
    else {
        return (0, String::new());
    };
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Both protocols: the statuses for the same GET with `headers`.
async fn both(h: &Harness, target: &str, headers: &[(&str, &str)]) -> [(u16, String); 2] {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close");
    for (n, v) in headers {
        head.push_str(&format!("\r\n{n}: {v}"));
    }
    [h1(h, &head).await, h2(h, "GET", target, headers).await]
}

fn echoed(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the echo ({e}): {body}"))
}

#[tokio::test]
async fn query_token_with_array_suffix_is_a_credential() {
    let h = Harness::start(&config()).await;
    let good = valid();
    let auth = format!("Bearer {good}");
    for name in [
        "access_token[]",
        "access_token[0]",
        "access_token%5B%5D",
        "access_token%5b0%5d",
        "access_token[x][y]",
        "ACCESS.TOKEN[]",
    ] {
        // Next to a header token: two credentials.
        for (status, body) in both(
            &h,
            &format!("/opt/p?{name}=FORGED"),
            &[("authorization", &auth)],
        )
        .await
        {
            assert_eq!(status, 400, "{name}: {body}");
        }
        // Alone on an optional route: verified and refused.
        for (status, body) in both(&h, &format!("/opt/p?{name}=FORGED"), &[]).await {
            assert_eq!(status, 401, "{name}: {body}");
        }
        // Alone and valid: verified, and removed before forwarding.
        for (status, body) in both(&h, &format!("/opt/p?a=1&{name}={good}"), &[]).await {
            assert_eq!(status, 200, "{name}: {body}");
            let e = echoed(&body);
            assert_eq!(e["query"], "a=1", "{name}");
            assert_eq!(e["headers"]["x-auth-sub"][0], "alice", "{name}");
        }
    }
    // A cookie with an array suffix is the cookie too.
    let cookie = format!("tok[]={good}");
    for (status, body) in both(
        &h,
        "/opt/p",
        &[("authorization", &auth), ("cookie", &cookie)],
    )
    .await
    {
        assert_eq!(status, 400, "{body}");
    }
    // Names that only start alike stay other parameters.
    for name in ["access_tokens[]", "x[access_token]", "access[token]"] {
        for (status, body) in
            both(&h, &format!("/opt/p?{name}=1"), &[("authorization", &auth)]).await
        {
            assert_eq!(status, 200, "{name}: {body}");
        }
    }
}

#[tokio::test]
async fn a_nul_in_a_query_name_is_refused() {
    let h = Harness::start(&config()).await;
    for target in ["/opt/p?access_token%00=x", "/p?a%00b=1", "/req/p?x=1&%00=2"] {
        for (status, body) in both(&h, target, &[]).await {
            assert_eq!(status, 400, "{target}: {body}");
        }
    }
    // A NUL in a value is the value's business (here it fails verification).
    let [(s1, _), (s2, _)] = both(&h, "/opt/p?access_token=a%00b", &[]).await;
    assert_eq!((s1, s2), (401, 401));
}

#[tokio::test]
async fn raw_non_ascii_in_query_is_refused() {
    let h = Harness::start(&config()).await;
    for query in [
        &b"x=\xc3\xa9"[..],
        b"\xc3\xa9=1",
        b"a=1&access_token=\xe2\x80\x8b",
    ] {
        let mut bytes = b"GET /p?".to_vec();
        bytes.extend_from_slice(query);
        bytes.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (text, _) = raw_exchange(h.addr, &bytes, WAIT).await;
        let (status, body) = parse_h1(&text);
        assert_eq!(status, 400, "{query:?}: {body}");
    }
    assert_eq!(h1_plain(&h, "GET", "/p?x=%C3%A9").await.0, 200);
}

#[tokio::test]
async fn trace_and_track_are_refused_like_connect() {
    let h = Harness::start(&config()).await;
    for method in ["TRACE", "TRACK", "trace", "connect"] {
        for path in ["/p", "/req/p"] {
            let (status, body) = h1_plain(&h, method, path).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert!(
                !body.contains("\"path\""),
                "{method} reached the upstream: {body}"
            );
        }
        let (status, body) = h2(&h, method, "/p", &[]).await;
        assert!(matches!(status, 0 | 400), "h2 {method}: {status} {body}");
        assert!(
            !body.contains("\"path\""),
            "h2 {method} reached the upstream: {body}"
        );
    }
}

#[tokio::test]
async fn http11_without_host_is_refused_and_http10_is_not() {
    let h = Harness::start(&config()).await;
    assert_eq!(h1(&h, "GET /p HTTP/1.1\r\nConnection: close").await.0, 400);
    assert_eq!(
        h1(&h, "GET http://x/p HTTP/1.1\r\nConnection: close")
            .await
            .0,
        400
    );
    let (status, body) = h1(&h, "GET /p HTTP/1.0").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_501() {
    let h = Harness::start(&config()).await;
    for te in [
        "gzip, chunked",
        "deflate,chunked",
        "x-custom, chunked",
        "chunked, chunked",
    ] {
        let (text, _) = raw_exchange(
            h.addr,
            format!("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n").as_bytes(),
            WAIT,
        )
        .await;
        let (status, body) = parse_h1(&text);
        // hyper itself refuses some spellings with a bare 400; none reaches the upstream.
        assert!(matches!(status, 400 | 501), "{te}: {status} {body}");
        assert!(!body.contains("\"path\""), "{te}: {body}");
        if te != "chunked, chunked" {
            assert_eq!(status, 501, "{te}: {body}");
        }
    }
    let (text, _) = raw_exchange(
        h.addr,
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(parse_h1(&text).0, 200, "{text}");
}

#[tokio::test]
async fn an_absolute_target_of_another_scheme_is_refused() {
    let h = Harness::start(&config()).await;
    for (target, want) in [
        ("ftp://x/p", 400),
        ("ws://x/p", 400),
        ("file://x/p", 400),
        ("gopher://x/p", 400),
        ("http://x/p", 200),
        ("HTTPS://x/p", 200),
    ] {
        let (status, body) = h1_plain(&h, "GET", target).await;
        assert_eq!(status, want, "{target}: {body}");
    }
}

#[tokio::test]
async fn invisible_ends_and_imprecise_numbers_refuse_the_token() {
    let h = Harness::start(&config()).await;
    let with = |extra: Value| {
        let mut c = claims();
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        token("ES256", &c)
    };
    let refused = [
        json!({ "sub": "admin\u{200b}" }),
        json!({ "sub": "\u{feff}admin" }),
        json!({ "sub": "admin\u{180e}" }),
        json!({ "sub": "admin\u{00ad}" }),
        json!({ "sub": "\u{2060}admin" }),
        json!({ "sub": "admin\u{200d}" }),
        json!({ "n": 9_007_199_254_740_993u64 }),
        json!({ "n": -9_007_199_254_740_993i64 }),
        json!({ "n": 1.2345678901234568e22 }),
        json!({ "n": [1, 18_446_744_073_709_551_615u64] }),
        json!({ "n": { "a": 1e300 } }),
    ];
    for extra in refused {
        let t = with(extra.clone());
        let auth = format!("Bearer {t}");
        for (status, body) in both(&h, "/req/p", &[("authorization", &auth)]).await {
            assert_eq!(status, 401, "{extra}: {body}");
        }
    }
    let accepted = [
        (
            json!({ "sub": "ad\u{200b}min" }),
            "x-auth-sub",
            "ad\u{200b}min",
        ),
        (
            json!({ "n": 9_007_199_254_740_992u64 }),
            "x-auth-n",
            "9007199254740992",
        ),
        (
            json!({ "n": -9_007_199_254_740_992i64 }),
            "x-auth-n",
            "-9007199254740992",
        ),
        (json!({ "n": 1.5 }), "x-auth-n", "1.5"),
    ];
    for (extra, header, want) in accepted {
        let t = with(extra.clone());
        let auth = format!("Bearer {t}");
        for (status, body) in both(&h, "/req/p", &[("authorization", &auth)]).await {
            assert_eq!(status, 200, "{extra}: {body}");
            assert_eq!(echoed(&body)["headers"][header][0], want, "{extra}");
        }
    }
}

#[tokio::test]
async fn the_added_trust_headers_are_stripped() {
    let h = Harness::start(&config()).await;
    let sent = [
        ("x-user", "admin"),
        ("x_auth_user", "admin"),
        ("x-email", "admin@example.com"),
        ("x-custom-ip-authorization", "127.0.0.1"),
        ("remote-addr", "127.0.0.1"),
        ("x-pomerium-claim-email", "admin@example.com"),
        ("x-pomerium-jwt-assertion", "x"),
    ];
    for (status, body) in both(&h, "/p", &sent).await {
        assert_eq!(status, 200, "{body}");
        let got = echoed(&body);
        for (name, _) in sent {
            let dashed = name.replace('_', "-");
            assert!(
                got["headers"].get(&dashed).is_none(),
                "{name} reached the upstream: {body}"
            );
            assert!(
                got["headers"].get(name).is_none(),
                "{name} reached the upstream: {body}"
            );
        }
    }
}

fn snapshot(text: &str) -> jwtgate::Snapshot {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}",
        text.replace("{upstream}", "http://127.0.0.1:9")
    );
    std::fs::write(&path, text).expect("write");
    jwtgate::Snapshot::build(jwtgate::Config::load(&path).expect("valid config")).expect("snapshot")
}

#[tokio::test]
async fn request_metrics_exist_from_the_first_scrape_and_follow_reloads() {
    let metrics = jwtgate::metrics::Metrics::new();
    let first = snapshot(&config());
    first.publish_key_metrics(None, &metrics);
    let text = metrics.render();
    for route in ["opt", "req", "pub"] {
        assert!(
            text.contains(&format!(
                "jwtgate_request_duration_seconds_count{{route=\"{route}\"}} 0"
            )),
            "{route}:\n{text}"
        );
        for code in ["400", "502", "504"] {
            assert!(
                text.contains(&format!(
                    "jwtgate_requests_total{{code=\"{code}\",route=\"{route}\"}} 0"
                )),
                "{route} {code}:\n{text}"
            );
        }
    }
    for code in ["401", "403", "503"] {
        assert!(
            text.contains(&format!(
                "jwtgate_requests_total{{code=\"{code}\",route=\"req\"}} 0"
            )),
            "{code}"
        );
        assert!(
            !text.contains(&format!(
                "jwtgate_requests_total{{code=\"{code}\",route=\"pub\"}}"
            )),
            "{code}"
        );
    }
    // A reload without `req` removes its series and keeps the others.
    let second = snapshot(&config().replace("name = \"req\"", "name = \"req2\""));
    second.publish_key_metrics(Some(&first), &metrics);
    let text = metrics.render();
    assert!(!text.contains("route=\"req\""), "{text}");
    assert!(
        text.contains("jwtgate_request_duration_seconds_count{route=\"req2\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("jwtgate_requests_total{code=\"502\",route=\"opt\"} 0"),
        "{text}"
    );
}

#[test]
fn token_names_that_parsers_split_are_located_config_errors() {
    let base = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}",
        config().replace("{upstream}", "http://127.0.0.1:9")
    );
    for bad in [
        "",
        "a;b",
        "a=b",
        "a,b",
        "a b",
        "a&b",
        "a[]",
        "a%5B",
        "a\\tb",
        "a\\u0001b",
        " tok",
    ] {
        for key in ["token_query", "token_cookie"] {
            let text = base.replacen(
                &format!(
                    "{key} = \"{}\"",
                    if key == "token_query" {
                        "access_token"
                    } else {
                        "tok"
                    }
                ),
                &format!("{key} = \"{bad}\""),
                1,
            );
            let file = Path::new("/etc/jwtgate/gateway.toml");
            let errs = jwtgate::Config::parse(file, &text)
                .map(|_| ())
                .expect_err(&format!("{key} = {bad:?} should be refused"));
            let shown = errs.to_string();
            assert_eq!(errs.0.len(), 1, "{shown}");
            assert!(common::is_located(&shown, file), "{shown}");
            assert!(
                shown.contains(key) && shown.contains("route \"opt\""),
                "{shown}"
            );
        }
    }
}

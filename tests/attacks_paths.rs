//! Attack classes on paths, hosts and request targets (issue 13): path parameters and the
//! rewrites case-insensitive upstreams apply, IPv6 and look-alike hosts, CONNECT, raw non-ASCII
//! targets and malformed chunked bodies. Every class runs over HTTP/1.1 and HTTP/2, plain and
//! TLS where it applies; the request target is always sent exactly as written.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::tls::CERTS;
use common::{claims, default_issuer, token, Harness};

/// Bound on every network step, so a broken gateway fails a test instead of hanging it.
const IO: Duration = Duration::from_secs(5);

/// How a request reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    H1,
    H2,
    H1Tls,
    H2Tls,
}

const ALL: [Via; 4] = [Via::H1, Via::H2, Via::H1Tls, Via::H2Tls];

impl Via {
    fn tls(self) -> bool {
        matches!(self, Via::H1Tls | Via::H2Tls)
    }
    fn h2(self) -> bool {
        matches!(self, Via::H2 | Via::H2Tls)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The shipped gateway.toml's routes: `orders` (required) on `/api/orders`, `profile`
/// (optional) on `/api`, `public` (none) on `/`. With `tls`, the listener serves the dev
/// certificate (ALPN h2 and http/1.1); without, plain HTTP/1.1 and HTTP/2 prior knowledge.
fn shipped(tls: bool) -> String {
    format!(
        r#"{}{}
[[route]]
name = "orders"
path_prefix = "/api/orders"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "profile"
path_prefix = "/api"
upstream = "{{upstream}}"
auth = "optional"

[[route]]
name = "public"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "none"
"#,
        listen(tls),
        default_issuer()
    )
}

fn listen(tls: bool) -> String {
    if tls {
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{CERTS}/server.crt\", key = \"{CERTS}/server.key\" }}\n"
        )
    } else {
        String::new()
    }
}

/// A plain and a TLS gateway on the same routes.
struct Pair {
    plain: Harness,
    tls: Harness,
}

impl Pair {
    async fn start(config: impl Fn(bool) -> String) -> Pair {
        Pair {
            plain: Harness::start(&config(false)).await,
            tls: Harness::start(&config(true)).await,
        }
    }

    fn for_via(&self, via: Via) -> &Harness {
        if via.tls() {
            &self.tls
        } else {
            &self.plain
        }
    }
}

/// A connection for `via` (TLS to `localhost`, ALPN chosen by the protocol).
async fn connect(h: &Harness, via: Via) -> Box<dyn Io> {
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    if !via.tls() {
        return Box::new(tcp);
    }
    let alpn: &[u8] = if via.h2() { b"h2" } else { b"http/1.1" };
    let name = ServerName::try_from("localhost").expect("name");
    let s = tokio::time::timeout(
        IO,
        TlsConnector::from(common::tls::dev_client(&[alpn], false)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake");
    Box::new(s)
}

/// What came back: the status (0 when the connection closed without an answer) and the body
/// (for HTTP/1.1, everything after the head).
#[derive(Debug)]
struct Got {
    status: u16,
    body: String,
}

impl Got {
    /// The echo upstream answered (it reports what it received as JSON with a `path`).
    fn reached_upstream(&self) -> bool {
        self.status == 200 && self.body.contains("\"path\"")
    }
}

/// One request, with the target bytes exactly as given. `host` is the Host header (HTTP/1.1)
/// or `:authority` (HTTP/2).
async fn send(
    h: &Harness,
    via: Via,
    method: &str,
    target: &[u8],
    host: &str,
    token: Option<&str>,
) -> Got {
    let io = connect(h, via).await;
    if via.h2() {
        h2_send(io, via, method, target, host, None, token).await
    } else {
        let mut head = format!("{method} ").into_bytes();
        head.extend_from_slice(target);
        head.extend_from_slice(format!(" HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
        if let Some(t) = token {
            head.extend_from_slice(format!("Authorization: Bearer {t}\r\n").as_bytes());
        }
        head.extend_from_slice(b"Connection: close\r\n\r\n");
        h1_exchange(io, &head, false).await
    }
}

/// Writes `bytes` (then half-closes when `shutdown`), reads the answer until EOF.
async fn h1_exchange(mut io: Box<dyn Io>, bytes: &[u8], shutdown: bool) -> Got {
    let _ = io.write_all(bytes).await;
    if shutdown {
        let _ = io.shutdown().await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(IO, io.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Got { status, body }
}

async fn h2_send(
    io: Box<dyn Io>,
    via: Via,
    method: &str,
    target: &[u8],
    authority: &str,
    host_header: Option<&str>,
    token: Option<&str>,
) -> Got {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let scheme = if via.tls() { "https" } else { "http" };
    let uri = if method == "CONNECT" {
        http::Uri::try_from(target).expect("authority-form target")
    } else {
        let mut u = format!("{scheme}://{authority}").into_bytes();
        u.extend_from_slice(target);
        http::Uri::try_from(u).expect("the h2 client can carry this target")
    };
    let mut b = http::Request::builder().method(method).uri(uri);
    if let Some(hh) = host_header {
        b = b.header("host", hh);
    }
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = b.body(Full::new(Bytes::new())).expect("request");
    let res = match tokio::time::timeout(IO, sender.send_request(req)).await {
        Ok(Ok(res)) => res,
        // A stream reset or a refused request is an answer that reached nothing.
        Ok(Err(_)) => {
            return Got {
                status: 0,
                body: String::new(),
            }
        }
        Err(_) => panic!("no HTTP/2 answer in time"),
    };
    let status = res.status().as_u16();
    let body = tokio::time::timeout(IO, res.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Got { status, body }
}

fn valid_token() -> String {
    token("ES256", &claims())
}

/// Sends every target without a token over every transport; returns the ones that were not
/// answered 400 or 401 (what reached the upstream is named).
async fn never_past_the_gateway(p: &Pair, targets: &[&str]) -> Vec<String> {
    let mut leaked = Vec::new();
    for via in ALL {
        for target in targets {
            let got = send(
                p.for_via(via),
                via,
                "GET",
                target.as_bytes(),
                "localhost",
                None,
            )
            .await;
            if !matches!(got.status, 400 | 401) {
                leaked.push(format!("{via:?} {target} -> {} {}", got.status, got.body));
            }
        }
    }
    leaked
}

// =============================================================================================
// 1. `;` path parameters in any segment
// =============================================================================================

const PARAM_VARIANTS: &[&str] = &[
    "/api;x/orders/1",
    "/api;x/orders",
    "/api;/orders",
    "/api;/orders/1",
    "/;x/api/orders",
    "/;/api/orders/1",
    "/api;a;b/orders",
    "/api;a=1;b=2/orders/7",
    "/api%3Bx/orders",
    "/api%3bx/orders/1",
    "/api%3B/orders",
    "/%3Bx/api/orders",
    "/api;x/orders;y/1",
    "/api;jsessionid=1/orders",
    "/;a/api;b/orders;c",
];

#[tokio::test]
async fn path_parameters_in_any_segment_never_reach_a_less_protected_route() {
    let p = Pair::start(shipped).await;
    let leaked = never_past_the_gateway(&p, PARAM_VARIANTS).await;
    assert!(
        leaked.is_empty(),
        "reached the upstream without a token:\n{}",
        leaked.join("\n")
    );
}

#[tokio::test]
async fn an_ambiguous_parameter_path_is_400_even_with_a_valid_token() {
    let p = Pair::start(shipped).await;
    let t = valid_token();
    for via in ALL {
        for target in ["/api;x/orders/1", "/api%3Bx/orders", "/;x/api/orders"] {
            let got = send(
                p.for_via(via),
                via,
                "GET",
                target.as_bytes(),
                "localhost",
                Some(&t),
            )
            .await;
            assert_eq!(got.status, 400, "{via:?} {target}: {}", got.body);
            assert!(
                got.body.contains("ambiguous"),
                "{via:?} {target}: {}",
                got.body
            );
            assert!(
                got.body.contains("';' parameters"),
                "{via:?} {target}: {}",
                got.body
            );
        }
    }
}

#[tokio::test]
async fn a_parameter_holding_an_encoded_separator_is_refused() {
    let p = Pair::start(shipped).await;
    let leaked = never_past_the_gateway(
        &p,
        &[
            "/api;x%2F/orders",
            "/x;%2F../api/orders",
            "/api;a%5Cb/orders",
            "/public;a%2Fb/c",
        ],
    )
    .await;
    assert!(leaked.is_empty(), "{}", leaked.join("\n"));
}

// =============================================================================================
// 2. Case folding, trailing dots and spaces, NTFS streams, fullwidth forms (IIS, Windows)
// =============================================================================================

const FOLD_VARIANTS: &[&str] = &[
    "/API/orders",
    "/Api/Orders/1",
    "/api/ORDERS",
    "/api/Orders/1",
    "/API/ORDERS/1",
    "/api./orders",
    "/api/orders./1",
    "/api/orders...",
    "/api%20/orders",
    "/api/orders%20/1",
    "/api.%20./orders",
    "/api%20.%20/orders/1",
    "/api/orders::$DATA",
    "/api/orders:stream/1",
    "/api/orders%3A%3A$DATA",
    "/api%EF%BC%8Forders",
    "/%EF%BD%81pi/orders",
    "/api/%EF%BD%8Frders/1",
    "/api/%EF%BC%AFRDERS",
    // Both rewrites at once: only a Tomcat on a case-insensitive file system reads these.
    "/API;x/orders",
    "/api.;x/orders",
    "/api;x/ORDERS/1",
    "/api%20;x/orders",
];

#[tokio::test]
async fn case_and_windows_name_variants_never_reach_a_less_protected_route() {
    let p = Pair::start(shipped).await;
    let leaked = never_past_the_gateway(&p, FOLD_VARIANTS).await;
    assert!(
        leaked.is_empty(),
        "reached the upstream without a token:\n{}",
        leaked.join("\n")
    );
}

#[tokio::test]
async fn a_case_variant_is_400_with_a_valid_token_and_names_the_rewrite() {
    let p = Pair::start(shipped).await;
    let t = valid_token();
    for via in ALL {
        let got = send(
            p.for_via(via),
            via,
            "GET",
            b"/API/orders/1",
            "localhost",
            Some(&t),
        )
        .await;
        assert_eq!(got.status, 400, "{via:?}: {}", got.body);
        assert!(
            got.body.contains("case-insensitively"),
            "{via:?}: {}",
            got.body
        );
    }
}

/// `/public` open, everything else required: the reverse bypass a gateway that always folded
/// would open on a case-sensitive upstream (`/PUBLIC/x` is under `/` there).
fn public_under_required(tls: bool) -> String {
    format!(
        r#"{}{}
[[route]]
name = "public"
path_prefix = "/public"
upstream = "{{upstream}}"
auth = "none"

[[route]]
name = "rest"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "required"
"#,
        listen(tls),
        default_issuer()
    )
}

#[tokio::test]
async fn case_variants_of_an_open_route_under_a_protected_root_are_not_forwarded() {
    let p = Pair::start(public_under_required).await;
    let leaked = never_past_the_gateway(
        &p,
        &[
            "/PUBLIC/x",
            "/Public/x",
            "/public./x",
            "/public%20/x",
            "/public::$DATA/x",
            "/%EF%BD%90ublic/x",
        ],
    )
    .await;
    assert!(leaked.is_empty(), "{}", leaked.join("\n"));
}

/// Prefixes written with upper case are folded the same way as paths: a lower-case path
/// (which looks plain) still reads as the upper-case prefix to a case-insensitive upstream.
fn upper_case_prefix(tls: bool) -> String {
    format!(
        r#"{}{}
[[route]]
name = "admin"
path_prefix = "/Admin"
upstream = "{{upstream}}"
auth = "required"

[[route]]
name = "rest"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "none"
"#,
        listen(tls),
        default_issuer()
    )
}

#[tokio::test]
async fn an_upper_case_prefix_protects_its_lower_case_spelling() {
    let p = Pair::start(upper_case_prefix).await;
    let leaked = never_past_the_gateway(&p, &["/admin", "/admin/x", "/ADMIN/x", "/Admin./x"]).await;
    assert!(leaked.is_empty(), "{}", leaked.join("\n"));
    let t = valid_token();
    for via in ALL {
        let got = send(
            p.for_via(via),
            via,
            "GET",
            b"/Admin/x",
            "localhost",
            Some(&t),
        )
        .await;
        assert!(
            got.reached_upstream(),
            "{via:?}: {} {}",
            got.status,
            got.body
        );
        let got = send(p.for_via(via), via, "GET", b"/Admin/x", "localhost", None).await;
        assert_eq!(got.status, 401, "{via:?}: {}", got.body);
    }
}

// =============================================================================================
// 3. Other encodings: dots and spaces, %u, overlong UTF-8 (double encoding: routing.rs)
// =============================================================================================

#[tokio::test]
async fn dot_space_overlong_and_u_encodings_are_refused() {
    let p = Pair::start(shipped).await;
    for via in ALL {
        for target in [
            "/x/..%20/api/orders",
            "/x/.%20./api/orders",
            "/x/.../api/orders",
            "/x/..%3B/api/orders",
            "/x/%EF%BC%8E%EF%BC%8E/api/orders",
            "/x/..::$DATA/api/orders",
            "/%u0061pi/orders",
            "/api/%u006Frders",
            "/x/%C0%AE%C0%AE/api/orders",
            "/x%C0%AFapi/orders",
            "/x/%E0%80%AE%E0%80%AE/api/orders",
            "/x%C1%9Capi/orders",
            "/x/%ED%A0%80",
            "/x/%FF",
            "/x/%C3",
        ] {
            let got = send(
                p.for_via(via),
                via,
                "GET",
                target.as_bytes(),
                "localhost",
                None,
            )
            .await;
            assert_eq!(got.status, 400, "{via:?} {target}: {}", got.body);
        }
    }
}

// =============================================================================================
// 4. What stays served
// =============================================================================================

#[tokio::test]
async fn benign_paths_still_pass() {
    let p = Pair::start(shipped).await;
    let t = valid_token();
    for via in ALL {
        let h = p.for_via(via);
        for (target, token) in [
            ("/api/orders/1", Some(t.as_str())),
            ("/api/orders/1;jsessionid=ABC123", Some(t.as_str())),
            ("/api/orders;jsessionid=abc", Some(t.as_str())),
            ("/api/orders/%C3%A9t%C3%A9", Some(t.as_str())),
            ("/api/profile", None),
            ("/api/Profile/Me", None),
            ("/api/me;jsessionid=1", None),
            ("/index.html;jsessionid=XYZ", None),
            ("/Images/Logo.PNG", None),
            ("/static/file.", None),
            ("/docs/a%20b/c", None),
            ("/v1/projects/x:run", None),
            ("/search/100%25", None),
        ] {
            let got = send(h, via, "GET", target.as_bytes(), "localhost", token).await;
            assert!(
                got.reached_upstream(),
                "{via:?} {target}: {} {}",
                got.status,
                got.body
            );
        }
    }
}

// =============================================================================================
// 5. Raw non-ASCII request targets
// =============================================================================================

#[tokio::test]
async fn raw_non_ascii_request_targets_are_400() {
    let p = Pair::start(shipped).await;
    let targets: [&[u8]; 5] = [
        b"/caf\xc3\xa9",
        b"/api/orders/\xff",
        b"/\xe6\x97\xa5\xe6\x9c\xac/x",
        b"/api\xc0\xaforders",
        b"/x/\x80",
    ];
    for via in [Via::H1, Via::H1Tls] {
        for target in targets {
            let got = send(p.for_via(via), via, "GET", target, "localhost", None).await;
            assert_eq!(got.status, 400, "{via:?} {target:?}: {}", got.body);
        }
    }
    // HTTP/2: the client library refuses to build such a `:path`, and so does the server's
    // (the same `http` parser); a `:path` that does arrive is checked by the same rule.
    for target in targets {
        if http::Uri::try_from(target).is_ok() {
            for via in [Via::H2, Via::H2Tls] {
                let got = send(p.for_via(via), via, "GET", target, "localhost", None).await;
                assert!(
                    matches!(got.status, 0 | 400),
                    "{via:?} {target:?}: {}",
                    got.status
                );
            }
        }
    }
}

// =============================================================================================
// 6. Hosts
// =============================================================================================

fn host_routes(tls: bool) -> String {
    let mut c = format!("{}{}", listen(tls), default_issuer());
    for (i, host) in [
        "::1",
        "[2001:db8::1]",
        "::ffff:127.0.0.1",
        "orders.example.com",
    ]
    .iter()
    .enumerate()
    {
        c.push_str(&format!(
            "\n[[route]]\nname = \"h{i}\"\nhost = \"{host}\"\npath_prefix = \"/\"\nupstream = \"{{upstream}}\"\nauth = \"required\"\n"
        ));
    }
    c.push_str("\n[[route]]\nname = \"open\"\npath_prefix = \"/\"\nupstream = \"{upstream}\"\nauth = \"none\"\n");
    c
}

#[tokio::test]
async fn ipv6_and_spelled_variants_of_a_host_route_match_it() {
    let p = Pair::start(host_routes).await;
    for via in ALL {
        for host in [
            "[::1]",
            "[::1]:8443",
            "[0:0:0:0:0:0:0:1]",
            "[::0001]:443",
            "[2001:DB8::1]",
            "[2001:db8:0:0::1]:8443",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]:1",
            "ORDERS.example.com",
            "orders.example.com.",
            "Orders.Example.Com.:8443",
        ] {
            let got = send(p.for_via(via), via, "GET", b"/x", host, None).await;
            assert_eq!(got.status, 401, "{via:?} Host {host}: {}", got.body);
        }
        let got = send(p.for_via(via), via, "GET", b"/x", "[::2]", None).await;
        assert!(
            got.reached_upstream(),
            "{via:?} another host is the open route's"
        );
    }
}

#[tokio::test]
async fn confusing_hosts_are_400() {
    let p = Pair::start(host_routes).await;
    for via in [Via::H1, Via::H1Tls] {
        for host in [
            "[::1]evil.com",
            "[::1]@x",
            "[::1]:80@x",
            "[::1",
            "::1",
            "::1:8443",
            "[]",
            "[]:80",
            "[::1]:99999",
            "[::1]:8x",
            "a@b",
            "orders.example.com@evil",
            "host:80:80",
            "orders.example.com:65536",
            "orders.example.com:-1",
            "orders.example.com..",
            "127.1",
            "0x7f.0.0.1",
        ] {
            let got = send(p.for_via(via), via, "GET", b"/x", host, None).await;
            assert_eq!(got.status, 400, "{via:?} Host {host:?}: {}", got.body);
        }
    }
}

#[tokio::test]
async fn http2_host_header_conflicting_with_authority_is_400() {
    let p = Pair::start(host_routes).await;
    for via in [Via::H2, Via::H2Tls] {
        for (authority, host) in [
            ("orders.example.com", "other.example"),
            ("other.example", "orders.example.com"),
            ("[::2]", "[::1]"),
        ] {
            let io = connect(p.for_via(via), via).await;
            let got = h2_send(io, via, "GET", b"/x", authority, Some(host), None).await;
            assert_eq!(
                got.status, 400,
                "{via:?} {authority} vs Host {host}: {}",
                got.body
            );
        }
        // The same host spelled differently is no conflict.
        let io = connect(p.for_via(via), via).await;
        let got = h2_send(
            io,
            via,
            "GET",
            b"/x",
            "orders.example.com",
            Some("ORDERS.example.com."),
            None,
        )
        .await;
        assert_eq!(got.status, 401, "{via:?}: {}", got.body);
    }
}

// =============================================================================================
// 7. CONNECT
// =============================================================================================

#[tokio::test]
async fn connect_is_refused_and_never_tunnels() {
    let p = Pair::start(shipped).await;
    let t = valid_token();
    for via in [Via::H1, Via::H1Tls] {
        for target in [
            "/x",
            "/api/orders",
            "127.0.0.1:443",
            "[::1]:443",
            "localhost:80",
        ] {
            for token in [None, Some(t.as_str())] {
                let got = send(
                    p.for_via(via),
                    via,
                    "CONNECT",
                    target.as_bytes(),
                    "localhost",
                    token,
                )
                .await;
                assert_eq!(got.status, 400, "{via:?} CONNECT {target}: {}", got.body);
                assert!(
                    got.body.contains("CONNECT"),
                    "{via:?} CONNECT {target}: {}",
                    got.body
                );
            }
        }
    }
    for via in [Via::H2, Via::H2Tls] {
        for target in ["127.0.0.1:443", "localhost:80"] {
            let got = send(
                p.for_via(via),
                via,
                "CONNECT",
                target.as_bytes(),
                "localhost",
                Some(&t),
            )
            .await;
            assert!(
                !(200..300).contains(&got.status),
                "{via:?} CONNECT {target}: {} {}",
                got.status,
                got.body
            );
            assert_eq!(got.status, 400, "{via:?} CONNECT {target}: {}", got.body);
        }
    }
}

// =============================================================================================
// 8. Malformed chunked request bodies
// =============================================================================================

#[tokio::test]
async fn malformed_chunked_bodies_are_the_clients_error() {
    let p = Pair::start(shipped).await;
    let head = "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    for via in [Via::H1, Via::H1Tls] {
        for (body, shutdown, case) in [
            (
                "zz\r\nabc\r\n0\r\n\r\n",
                false,
                "a chunk size that is not hex",
            ),
            ("3\r\nabcXY0\r\n\r\n", false, "no CRLF after the chunk data"),
            (
                "3xyz\r\nabc\r\n0\r\n\r\n",
                false,
                "junk after the chunk size",
            ),
            (
                "ffffffffffffffffff\r\n",
                false,
                "a chunk size that overflows",
            ),
            ("5\r\nab", true, "truncated chunk data"),
            ("3\r\nabc\r\n", true, "no last chunk"),
        ] {
            let io = connect(p.for_via(via), via).await;
            let got = h1_exchange(io, format!("{head}{body}").as_bytes(), shutdown).await;
            assert!(
                got.status == 400 || (shutdown && got.status == 0),
                "{via:?} {case}: {} {}",
                got.status,
                got.body
            );
            assert_ne!(got.status, 502, "{via:?} {case}");
        }
    }
}

// =============================================================================================
// 9. Config: prefixes that could only match ambiguously, IPv6 route hosts
// =============================================================================================

fn one_route(prefix: &str, host: &str) -> String {
    format!(
        "{}\n[[route]]\nname = \"r\"\n{host}path_prefix = {prefix:?}\nupstream = \"{{upstream}}\"\nauth = \"none\"\n",
        default_issuer()
    )
}

#[tokio::test]
async fn ambiguous_prefixes_and_bad_route_hosts_are_config_errors() {
    for (prefix, words) in [
        ("/api;x", "';' parameter"),
        ("/api%3Bx", "';' parameter"),
        ("/api/orders;", "';' parameter"),
        ("/api./x", "case-insensitive"),
        ("/api%20", "case-insensitive"),
        ("/v1/x:run", "case-insensitive"),
        ("/api%3Ax", "case-insensitive"),
        ("/%EF%BC%A1pi", "case-insensitive"),
        ("/caf\u{e9}", "non-ASCII"),
        ("/%C0%AF", "UTF-8"),
    ] {
        let err = match Harness::try_start(&one_route(prefix, "")).await {
            Ok(_) => panic!("{prefix:?} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(words), "{prefix:?}: {err}");
    }
    let twins = format!(
        "{}\n[[route]]\nname = \"a\"\npath_prefix = \"/Admin\"\nupstream = \"{{upstream}}\"\nauth = \"required\"\n\
         \n[[route]]\nname = \"b\"\npath_prefix = \"/admin\"\nupstream = \"{{upstream}}\"\nauth = \"none\"\n",
        default_issuer()
    );
    let err = match Harness::try_start(&twins).await {
        Ok(_) => panic!("prefixes differing only in case accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("only in case"), "{err}");
    for host in ["127.1", "[::1]:80", "::1%eth0", "a@b", "[::1]x"] {
        let cfg = one_route("/", &format!("host = {host:?}\n"));
        assert!(
            Harness::try_start(&cfg).await.is_err(),
            "host {host:?} accepted"
        );
    }
    for host in [
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
        "2001:db8::1",
        "127.0.0.1",
        "Orders.Example.com",
    ] {
        let cfg = one_route("/", &format!("host = {host:?}\n"));
        if let Err(e) = Harness::try_start(&cfg).await {
            panic!("host {host:?} refused: {e}");
        }
    }
}

// =============================================================================================
// 10. `jwtgate explain` makes the same decision as traffic
// =============================================================================================

#[tokio::test]
async fn explain_refuses_what_traffic_refuses() {
    let h = Harness::start(&shipped(false)).await;
    let snap =
        jwtgate::Snapshot::build(jwtgate::Config::load(&h.path("gateway.toml")).expect("config"))
            .expect("snapshot");
    let get = http::Method::GET;
    for path in [
        "/api;x/orders/1",
        "/API/orders",
        "/api./orders",
        "/;x/api/orders",
    ] {
        let r = jwtgate::explain::explain(&snap, None, &get, "localhost", path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.outcome);
        assert!(r.outcome.contains("ambiguous"), "{path}: {}", r.outcome);
        assert_eq!(r.route, None, "{path}");
        assert!(
            !r.routes.is_empty(),
            "{path}: the routes considered are still listed"
        );
        let got = send(&h, Via::H1, "GET", path.as_bytes(), "localhost", None).await;
        assert_eq!(got.status, 400, "traffic for {path}: {}", got.body);
    }
    let r = jwtgate::explain::explain(&snap, None, &get, "localhost", "/api/orders/1;jsessionid=X")
        .await;
    assert_eq!(r.route.as_deref(), Some("orders"), "{}", r.outcome);
    assert_eq!(r.status, 401, "{}", r.outcome);
}

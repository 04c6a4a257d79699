//! Attack classes of issue 13 at the trust boundary with the upstream: headers that backends
//! trust as set by their proxy (and `trusted_proxies`, `strip_headers`, the client-certificate
//! header), claim values that an upstream would read differently, claim header names that may
//! not be configured, and token names compared as upstreams read them. Every class is tried in
//! several spellings, over HTTP/1.1 and HTTP/2, from trusted and untrusted peers.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use common::metrics::metric_or_zero;
use common::tls::{self, cert_file};
use common::{claims, default_issuer, echo_upstream, raw_exchange, token, with, Answer};

/// Bound on every network step, so a broken gateway fails a test instead of hanging it.
const IO: Duration = Duration::from_secs(10);

/// The untrusted peer of tests where 127.0.0.1 is trusted (Linux routes all of 127/8 to lo).
const UNTRUSTED: &str = "127.0.0.2";
const LOOPBACK: &str = "127.0.0.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

const BOTH: [Proto; 2] = [Proto::H1, Proto::H2];

/// A gateway (an [`jwtgate::App`], so its metrics can be read) in front of the echo upstream.
struct Gw {
    addr: SocketAddr,
    app: Arc<jwtgate::App>,
    _dir: tempfile::TempDir,
    _stop_upstream: tokio::sync::oneshot::Sender<()>,
}

/// Routes: `/` (none), `/api` (required), `/opt` (optional), `/q` (optional, token_query),
/// `/c` (optional, token_cookie), `/claims` (required, one claim header per value shape),
/// `/unmapped` (required, no claim headers). Every route but `/unmapped` maps `X-Auth-Sub`.
fn routes() -> String {
    format!(
        r#"{}
[[route]]
name = "public"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "none"

[[route]]
name = "api"
path_prefix = "/api"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "opt"
path_prefix = "/opt"
upstream = "{{upstream}}"
auth = "optional"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "q"
path_prefix = "/q"
upstream = "{{upstream}}"
auth = "optional"
token_query = "access_token"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "c"
path_prefix = "/c"
upstream = "{{upstream}}"
auth = "optional"
token_cookie = "access_token"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "claims"
path_prefix = "/claims"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-C-Str" = "s"
"X-C-Arr" = "arr"
"X-C-Num" = "n"
"X-C-Obj" = "obj"
"X-C-Mixed" = "mixed"
"X-C-Roles" = "/realm_access/roles"
"X-C-Deep" = "/a/b/c"

[[route]]
name = "unmapped"
path_prefix = "/unmapped"
upstream = "{{upstream}}"
auth = "required"
"#,
        default_issuer()
    )
}

/// Starts a gateway on `bind` with `listen_extra` inside `[listen]` (plain or TLS).
async fn start_on(bind: &str, listen_extra: &str, config: &str) -> Gw {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let (upstream, stop) = echo_upstream().await;
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{listen_extra}\n{}",
        config.replace("{upstream}", &format!("http://{upstream}"))
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    let config = jwtgate::Config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
    let snapshot = jwtgate::Snapshot::build(config).unwrap_or_else(|e| panic!("snapshot: {e}"));
    let app =
        Arc::new(jwtgate::App::new(snapshot, jwtgate::metrics::Metrics::new(), None).expect("app"));
    let listener = TcpListener::bind(bind).await.expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(jwtgate::run(listener, app.clone(), async {
        std::future::pending::<()>().await;
        Duration::from_secs(1)
    }));
    Gw {
        addr,
        app,
        _dir: dir,
        _stop_upstream: stop,
    }
}

async fn start(listen_extra: &str) -> Gw {
    start_on("127.0.0.1:0", listen_extra, &routes()).await
}

/// A TCP connection to `addr` from the local address `from`.
async fn connect_from(addr: SocketAddr, from: &str) -> TcpStream {
    let from: IpAddr = from.parse().expect("source address");
    let sock = if from.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .expect("socket");
    sock.bind(SocketAddr::new(from, 0)).expect("bind client");
    tokio::time::timeout(IO, sock.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// One request over `io`: HTTP/1.1 with a Host header, or HTTP/2 with that `:authority`.
async fn exchange<S>(
    io: S,
    proto: Proto,
    scheme: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = Request::builder().method("GET");
    b = match proto {
        Proto::H1 => b.uri(path).header("host", "gw.test"),
        Proto::H2 => b
            .uri(format!("{scheme}://gw.test{path}"))
            .version(http::Version::HTTP_2),
    };
    for (n, v) in headers {
        let name = HeaderName::from_bytes(n.as_bytes()).expect("header name");
        b = b.header(name, HeaderValue::from_str(v).expect("header value"));
    }
    let req = b.body(Full::new(Bytes::new())).expect("request");
    let res = tokio::time::timeout(IO, async {
        match proto {
            Proto::H1 => {
                let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                    .await
                    .expect("h1 handshake");
                tokio::spawn(conn);
                s.send_request(req).await
            }
            Proto::H2 => {
                let (mut s, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                        .await
                        .expect("h2 handshake");
                tokio::spawn(conn);
                s.send_request(req).await
            }
        }
    })
    .await
    .expect("answered in time")
    .expect("answered");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = tokio::time::timeout(IO, res.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A plain request to `gw` from the local address `from`.
async fn send(gw: &Gw, from: &str, proto: Proto, path: &str, headers: &[(&str, &str)]) -> Answer {
    let tcp = connect_from(gw.addr, from).await;
    exchange(tcp, proto, "http", path, headers).await
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn valid() -> String {
    token("ES256", &claims())
}

/// Names (lower case, `-`) the echo upstream received.
fn received_names(a: &Answer) -> Vec<String> {
    a.upstream_header_names()
        .into_iter()
        .map(|n| n.replace('_', "-"))
        .collect()
}

/// The value of the auth failure counter for `route` and `reason`.
fn auth_failures(gw: &Gw, route: &str, reason: &str) -> u64 {
    let labels = [("route", route), ("reason", reason)];
    metric_or_zero(
        &gw.app.metrics.render(),
        "jwtgate_auth_failures_total",
        &labels,
    ) as u64
}

// =============================================================================================
// Headers that backends trust as set by their proxy
// =============================================================================================

/// A sample of every part of the documented family (README "Headers a client may never
/// send"): client address, original URL, method override, client certificate, identity.
const FAMILY: &[&str] = &[
    "Forwarded",
    "X-Real-IP",
    "True-Client-IP",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Forwarded-Ssl",
    "X-Forwarded-Scheme",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-Forwarded-User",
    "X-Forwarded-Access-Token",
    "X-Forwarded-Anything-Else",
    "X-Original-URL",
    "X-Original-URI",
    "X-Original-Host",
    "X-Original-For",
    "X-Rewrite-URL",
    "X-Envoy-Original-Path",
    "X-Envoy-External-Address",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Client-Cert",
    "X-SSL-Cert",
    "X-SSL",
    "SSL-Client-Cert",
    "SSL-Client-Verify",
    "X-SSL-Client-Verify",
    "X-SSL-Client-DN",
    "X-Client-Verify",
    "X-Forwarded-Client-Cert",
    "X-ARR-ClientCert",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "X-ProxyUser-Ip",
    "Client-IP",
    "X-Originating-IP",
    "X-Remote-Addr",
    "WL-Proxy-Client-IP",
    "Front-End-Https",
    "X-Url-Scheme",
    "MS-ASPNETCORE-CLIENTCERT",
    "X-Amzn-Mtls-Clientcert",
    "X-Amzn-Oidc-Identity",
    "X-Auth-Request-User",
    "X-Goog-Authenticated-User-Email",
    "X-MS-CLIENT-PRINCIPAL-NAME",
    "Remote-User",
];

/// The spellings a client may use for one name: as written, lower, upper, `_` for `-`.
fn spellings(name: &str) -> [String; 4] {
    [
        name.to_owned(),
        name.to_ascii_lowercase(),
        name.to_ascii_uppercase(),
        name.replace('-', "_"),
    ]
}

/// Asserts nothing of the family arrived and the gateway's own forwarding headers did.
fn assert_family_gone(a: &Answer, peer: &str, proto: &str, case: &str) {
    assert_eq!(a.status, 200, "{case}: {}", a.body);
    let names = received_names(a);
    for f in FAMILY {
        let f = f.to_ascii_lowercase();
        assert!(
            !names.contains(&f),
            "{case}: {f} reached the upstream: {}",
            a.body
        );
    }
    assert!(
        !a.body.contains("spoofed"),
        "{case}: a spoofed value reached the upstream: {}",
        a.body
    );
    assert_eq!(a.upstream_header("x-forwarded-for"), [peer], "{case}");
    assert_eq!(a.upstream_header("x-forwarded-proto"), [proto], "{case}");
    assert_eq!(a.upstream_header("x-forwarded-host"), ["gw.test"], "{case}");
    assert_eq!(a.json()["method"], "GET", "{case}: method overridden");
}

#[tokio::test]
async fn trust_family_headers_never_reach_the_upstream_in_any_spelling() {
    let gw = start("").await;
    let t = valid();
    let auth = bearer(&t);
    for proto in BOTH {
        for variant in 0..4 {
            let names: Vec<String> = FAMILY
                .iter()
                .map(|f| spellings(f)[variant].clone())
                .collect();
            for (path, with_token) in [("/x", false), ("/api/x", true), ("/opt/x", false)] {
                let mut headers: Vec<(&str, &str)> =
                    names.iter().map(|n| (n.as_str(), "spoofed")).collect();
                headers.push(("X-Forwarded-For", "6.6.6.6"));
                headers.push(("X-Forwarded-Proto", "https"));
                headers.push(("X-Forwarded-Host", "spoofed.example"));
                if with_token {
                    headers.push(("authorization", &auth));
                }
                let a = send(&gw, LOOPBACK, proto, path, &headers).await;
                assert_family_gone(
                    &a,
                    LOOPBACK,
                    "http",
                    &format!("{proto:?} {path} #{variant}"),
                );
            }
        }
    }
}

#[tokio::test]
async fn trust_family_headers_in_raw_http1_spellings_are_removed() {
    let gw = start("").await;
    // Exact bytes on the wire: mixed case, upper case, underscores, several copies.
    let request = "GET /x HTTP/1.1\r\nHost: gw.test\r\n\
        FORWARDED: for=6.6.6.6;proto=https\r\n\
        x_real_ip: 6.6.6.6\r\n\
        X-REAL-IP: 6.6.6.6\r\n\
        True_Client_IP: 6.6.6.6\r\n\
        X-Original-Url: /admin\r\n\
        x_rewrite_url: /admin\r\n\
        X-Http-Method-Override: DELETE\r\n\
        X_SSL_CLIENT_VERIFY: SUCCESS\r\n\
        x-forwarded-client-cert: Hash=spoofed\r\n\
        X_Forwarded_For: 6.6.6.6\r\n\
        X-Forwarded-For: 7.7.7.7\r\n\
        x-forwarded-for: 8.8.8.8\r\n\
        Connection: close\r\n\r\n";
    let (text, _) = raw_exchange(gw.addr, request.as_bytes(), IO).await;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let echo: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    let names: Vec<String> = echo["headers"]
        .as_object()
        .expect("headers")
        .keys()
        .map(|k| k.replace('_', "-"))
        .collect();
    for gone in [
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-ssl-client-verify",
        "x-forwarded-client-cert",
    ] {
        assert!(!names.contains(&gone.to_owned()), "{gone}: {text}");
    }
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        json!([LOOPBACK]),
        "{text}"
    );
    assert!(
        !text.contains("6.6.6.6") && !text.contains("7.7.7.7"),
        "{text}"
    );
    assert_eq!(echo["method"], "GET", "{text}");
}

#[tokio::test]
async fn an_untrusted_peers_forwarding_headers_are_replaced() {
    // 127.0.0.1 is trusted; the client comes from 127.0.0.2, so nothing it says is kept.
    let gw = start("trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]").await;
    for proto in BOTH {
        for (case, headers) in [
            ("one XFF", vec![("X-Forwarded-For", "6.6.6.6")]),
            (
                "two XFF fields",
                vec![
                    ("X-Forwarded-For", "6.6.6.6"),
                    ("X-Forwarded-For", "10.0.0.1"),
                ],
            ),
            ("underscore XFF", vec![("X_Forwarded_For", "6.6.6.6")]),
            (
                "proto, host and port",
                vec![
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "spoofed.example"),
                    ("X-Forwarded-Port", "443"),
                ],
            ),
            ("Forwarded", vec![("Forwarded", "for=6.6.6.6;proto=https")]),
        ] {
            let a = send(&gw, UNTRUSTED, proto, "/x", &headers).await;
            let case = format!("{proto:?} {case}");
            assert_eq!(a.status, 200, "{case}: {}", a.body);
            assert_eq!(a.upstream_header("x-forwarded-for"), [UNTRUSTED], "{case}");
            assert_eq!(a.upstream_header("x-forwarded-proto"), ["http"], "{case}");
            assert_eq!(a.upstream_header("x-forwarded-host"), ["gw.test"], "{case}");
            let names = received_names(&a);
            for gone in ["x-forwarded-port", "forwarded"] {
                assert!(!names.contains(&gone.to_owned()), "{case}: {}", a.body);
            }
        }
    }
}

#[tokio::test]
async fn a_trusted_proxy_passes_its_chain_on_with_itself_appended() {
    let gw = start("trusted_proxies = [\"127.0.0.1/32\"]").await;
    for proto in BOTH {
        let a = send(
            &gw,
            LOOPBACK,
            proto,
            "/x",
            &[
                ("X-Forwarded-For", "203.0.113.9, 10.1.2.3"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "app.example.com"),
                ("X-Forwarded-Port", "8443"),
                // Still never believed, even from a trusted proxy: the rest of the family.
                ("Forwarded", "for=6.6.6.6"),
                ("X-Real-IP", "6.6.6.6"),
                ("X-Original-URL", "/admin"),
                ("X-Forwarded-Client-Cert", "Hash=spoofed"),
                ("X_Forwarded_Host", "spoofed.example"),
            ],
        )
        .await;
        let case = format!("{proto:?}");
        assert_eq!(a.status, 200, "{case}: {}", a.body);
        assert_eq!(
            a.upstream_header("x-forwarded-for"),
            ["203.0.113.9, 10.1.2.3, 127.0.0.1"],
            "{case}"
        );
        assert_eq!(a.upstream_header("x-forwarded-proto"), ["https"], "{case}");
        assert_eq!(
            a.upstream_header("x-forwarded-host"),
            ["app.example.com"],
            "{case}"
        );
        assert_eq!(a.upstream_header("x-forwarded-port"), ["8443"], "{case}");
        let names = received_names(&a);
        for gone in [
            "forwarded",
            "x-real-ip",
            "x-original-url",
            "x-forwarded-client-cert",
        ] {
            assert!(!names.contains(&gone.to_owned()), "{case}: {}", a.body);
        }
        assert!(
            !a.body.contains("spoofed") && !a.body.contains("6.6.6.6"),
            "{}",
            a.body
        );

        // A trusted proxy that sends nothing gets the gateway's own values.
        let a = send(&gw, LOOPBACK, proto, "/x", &[]).await;
        assert_eq!(a.upstream_header("x-forwarded-for"), [LOOPBACK], "{case}");
        assert_eq!(a.upstream_header("x-forwarded-proto"), ["http"], "{case}");
        assert_eq!(a.upstream_header("x-forwarded-host"), ["gw.test"], "{case}");
    }
}

#[tokio::test]
async fn a_trusted_ipv6_proxy_is_matched_by_its_cidr() {
    let gw = start_on("[::1]:0", "trusted_proxies = [\"::1/128\"]", &routes()).await;
    for proto in BOTH {
        let a = send(
            &gw,
            "::1",
            proto,
            "/x",
            &[("X-Forwarded-For", "2001:db8::7")],
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(
            a.upstream_header("x-forwarded-for"),
            ["2001:db8::7, ::1"],
            "{proto:?}"
        );
    }
    // A config trusting only IPv4 does not trust ::1.
    let gw = start_on("[::1]:0", "trusted_proxies = [\"127.0.0.0/8\"]", &routes()).await;
    let a = send(
        &gw,
        "::1",
        Proto::H1,
        "/x",
        &[("X-Forwarded-For", "2001:db8::7")],
    )
    .await;
    assert_eq!(a.upstream_header("x-forwarded-for"), ["::1"], "{}", a.body);
}

#[tokio::test]
async fn strip_headers_removes_the_sites_own_headers_in_any_spelling() {
    let gw = start(
        "trusted_proxies = [\"127.0.0.1/32\"]\nstrip_headers = [\"X-Internal-User\", \"X-Corp-*\"]",
    )
    .await;
    for proto in BOTH {
        for from in [LOOPBACK, UNTRUSTED] {
            for spelling in spellings("X-Internal-User") {
                let a = send(
                    &gw,
                    from,
                    proto,
                    "/x",
                    &[
                        (spelling.as_str(), "spoofed"),
                        ("X-Corp-Role", "spoofed"),
                        ("x_corp_anything", "spoofed"),
                        ("X-Internal", "kept"),
                        ("X-Corporate", "kept"),
                    ],
                )
                .await;
                let case = format!("{proto:?} from {from} {spelling}");
                assert_eq!(a.status, 200, "{case}: {}", a.body);
                assert!(!a.body.contains("spoofed"), "{case}: {}", a.body);
                assert_eq!(a.upstream_header("x-internal"), ["kept"], "{case}");
                assert_eq!(a.upstream_header("x-corporate"), ["kept"], "{case}");
            }
        }
    }
}

#[tokio::test]
async fn listen_trust_settings_are_validated_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    for (entry, want) in [
        ("trusted_proxies = [\"10.0.0.0/33\"]", "not a CIDR"),
        ("trusted_proxies = [\"not-an-ip\"]", "not a CIDR"),
        ("trusted_proxies = [\"\"]", "not a CIDR"),
        (
            "trusted_proxies = [\"10.0.0.0/8\", \"10.1.2.3/8\"]",
            "host bits",
        ),
        ("trusted_proxies = [\"fd00::1/8\"]", "host bits"),
        ("strip_headers = [\"bad header\"]", "not a header name"),
        ("strip_headers = [\"*\"]", "not a header name"),
        ("strip_headers = [\"Host\"]", "Host or the body's framing"),
        (
            "strip_headers = [\"Transfer_Encoding\"]",
            "Host or the body's framing",
        ),
        (
            "strip_headers = [\"Content-*\"]",
            "Host or the body's framing",
        ),
    ] {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{entry}\n{}",
            routes().replace("{upstream}", "http://127.0.0.1:9")
        );
        std::fs::write(&path, &text).expect("write");
        let errs = jwtgate::Config::load(&path).expect_err(entry).0;
        assert_eq!(errs.len(), 1, "{entry}: {errs:?}");
        assert!(errs[0].message.contains(want), "{entry}: {}", errs[0]);
        assert_eq!(errs[0].loc.line, 3, "{entry}: {}", errs[0]);
        assert!(
            common::is_located(&errs[0].to_string(), &path),
            "{}",
            errs[0]
        );
    }
    // Single addresses and canonical CIDRs of both families are fine.
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1/128\", \"2001:db8::/32\"]\n{}",
        routes().replace("{upstream}", "http://127.0.0.1:9")
    );
    std::fs::write(&path, &text).expect("write");
    let config = jwtgate::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen.trusted_proxies.len(), 4);
}

// =============================================================================================
// The client certificate header (mTLS)
// =============================================================================================

fn mtls_listen(extra: &str) -> String {
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}\n{extra}",
        cert_file("server.crt").display(),
        cert_file("server.key").display(),
        cert_file("dev-ca.crt").display()
    )
}

async fn send_tls(
    gw: &Gw,
    proto: Proto,
    identity: bool,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let tcp = connect_from(gw.addr, LOOPBACK).await;
    let alpn: &[u8] = if proto == Proto::H2 {
        b"h2"
    } else {
        b"http/1.1"
    };
    let tls = tls::handshake(tcp, tls::dev_client(&[alpn], identity)).await;
    exchange(tls, proto, "https", path, headers).await
}

/// Splits an Envoy XFCC element into its `key=value` pairs (values unquoted).
fn xfcc_pairs(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value");
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut end = 0;
            let bytes = q.as_bytes();
            while bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            (q[..end].replace("\\\"", "\""), &q[end + 1..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        out.push((key.to_owned(), value));
        rest = next.strip_prefix(';').unwrap_or(next);
    }
    out
}

#[tokio::test]
async fn mtls_sets_x_forwarded_client_cert_from_the_verified_certificate_only() {
    let gw = start_on("127.0.0.1:0", &mtls_listen(""), &routes()).await;
    let der = tls::der_of(&cert_file("client.crt"));
    let hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let t = valid();
    let auth = bearer(&t);
    for proto in BOTH {
        for (path, token) in [("/x", None), ("/api/x", Some(auth.as_str()))] {
            let mut headers = vec![
                (
                    "X-Forwarded-Client-Cert",
                    "Hash=spoofed;Subject=\"CN=admin\"",
                ),
                ("x_forwarded_client_cert", "Hash=spoofed"),
                ("X-SSL-Client-Verify", "SUCCESS"),
                ("SSL-Client-Cert", "spoofed"),
            ];
            if let Some(a) = token {
                headers.push(("authorization", a));
            }
            let a = send_tls(&gw, proto, true, path, &headers).await;
            let case = format!("{proto:?} {path}");
            assert_eq!(a.status, 200, "{case}: {}", a.body);
            assert!(!a.body.contains("spoofed"), "{case}: {}", a.body);
            let xfcc = a.upstream_header("x-forwarded-client-cert");
            assert_eq!(xfcc.len(), 1, "{case}: {}", a.body);
            let pairs = xfcc_pairs(&xfcc[0]);
            let get = |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("{case}: no {k} in {}", xfcc[0]))
            };
            assert_eq!(get("Hash"), hash, "{case}");
            let pem = percent_encoding::percent_decode_str(&get("Cert"))
                .decode_utf8()
                .expect("utf-8")
                .into_owned();
            let parsed = CertificateDer::from_pem_slice(pem.as_bytes()).expect("Cert is a PEM");
            assert_eq!(
                parsed.as_ref(),
                der.as_slice(),
                "{case}: Cert is the client's"
            );
            assert!(
                get("Subject").contains("CN=dev-client"),
                "{case}: {}",
                xfcc[0]
            );
            assert_eq!(a.upstream_header("x-forwarded-proto"), ["https"], "{case}");
        }
    }
}

#[tokio::test]
async fn without_a_verified_certificate_no_client_cert_header_passes() {
    let spoofs = [
        ("X-Forwarded-Client-Cert", "Hash=spoofed"),
        ("X_Forwarded_Client_Cert", "Hash=spoofed"),
        ("X-Client-Cert", "spoofed"),
        ("X-SSL-Client-Cert", "spoofed"),
    ];
    // TLS without client_ca: no certificate, so no header, and the client's are removed.
    let tls_only = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert_file("server.crt").display(),
        cert_file("server.key").display()
    );
    let gw = start_on("127.0.0.1:0", &tls_only, &routes()).await;
    for proto in BOTH {
        let a = send_tls(&gw, proto, false, "/x", &spoofs).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(!a.body.contains("spoofed"), "{proto:?}: {}", a.body);
        assert!(a.upstream_header("x-forwarded-client-cert").is_empty());
    }
    // mTLS with forward_client_cert = false: the verified certificate is not forwarded either.
    let gw = start_on(
        "127.0.0.1:0",
        &mtls_listen("forward_client_cert = false"),
        &routes(),
    )
    .await;
    for proto in BOTH {
        let a = send_tls(&gw, proto, true, "/x", &spoofs).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(!a.body.contains("spoofed"), "{proto:?}: {}", a.body);
        assert!(a.upstream_header("x-forwarded-client-cert").is_empty());
    }
    // Plain HTTP from a trusted proxy: still never the client's.
    let gw = start("trusted_proxies = [\"127.0.0.1/32\"]").await;
    for proto in BOTH {
        let a = send(&gw, LOOPBACK, proto, "/x", &spoofs).await;
        assert!(!a.body.contains("spoofed"), "{proto:?}: {}", a.body);
    }
}

// =============================================================================================
// Claim values that change meaning at the upstream
// =============================================================================================

#[tokio::test]
async fn claim_values_an_upstream_would_read_differently_refuse_the_token_and_others_pass() {
    let gw = start("").await;
    let long = "a".repeat(4097);
    let many: Vec<String> = (0..800).map(|i| format!("role{i}")).collect();
    let cases: Vec<(&str, Value)> = vec![
        (
            "sub with spaces around",
            with(claims(), "sub", json!(" admin ")),
        ),
        (
            "sub with a trailing space",
            with(claims(), "sub", json!("admin ")),
        ),
        (
            "sub with a leading space",
            with(claims(), "sub", json!(" admin")),
        ),
        (
            "sub with a leading NBSP",
            with(claims(), "sub", json!("\u{a0}admin")),
        ),
        (
            "sub with an ideographic space",
            with(claims(), "sub", json!("admin\u{3000}")),
        ),
        ("sub in quotes", with(claims(), "sub", json!("\"admin\""))),
        (
            "string claim with a trailing space",
            with(claims(), "s", json!("admin ")),
        ),
        (
            "array element with a comma",
            with(claims(), "arr", json!(["user", "x,admin"])),
        ),
        (
            "array element with a space",
            with(claims(), "arr", json!(["user", " admin"])),
        ),
        (
            "array element with a trailing space",
            with(claims(), "arr", json!(["admin ", "x"])),
        ),
        (
            "empty array element",
            with(claims(), "arr", json!(["user", ""])),
        ),
        (
            "array element in quotes",
            with(claims(), "arr", json!(["\"admin\""])),
        ),
        (
            "array element with a lone comma",
            with(claims(), "arr", json!([","])),
        ),
        (
            "JSON-pointer array with a comma",
            with(
                claims(),
                "realm_access",
                json!({ "roles": ["user", "x,admin"] }),
            ),
        ),
        (
            "JSON-pointer array with a space",
            with(claims(), "realm_access", json!({ "roles": [" admin"] })),
        ),
        (
            "nested JSON-pointer string with spaces",
            with(claims(), "a", json!({ "b": { "c": " admin " } })),
        ),
        (
            "string longer than 4096 bytes",
            with(claims(), "s", json!(long)),
        ),
        (
            "joined array longer than 4096 bytes",
            with(claims(), "arr", json!(many)),
        ),
    ];
    let mut refused = 0;
    for proto in BOTH {
        for (case, c) in &cases {
            let t = token("ES256", c);
            let auth = bearer(&t);
            let a = send(
                &gw,
                LOOPBACK,
                proto,
                "/claims/x",
                &[("authorization", &auth)],
            )
            .await;
            let case = format!("{proto:?} {case}");
            assert_eq!(a.status, 401, "{case}: {}", a.body);
            let body = a.json();
            assert_eq!(body["error"], "invalid_token", "{case}: {}", a.body);
            assert!(
                body.get("headers").is_none(),
                "{case}: reached the upstream"
            );
            assert!(
                a.header("www-authenticate")
                    .is_some_and(|w| w.contains("error=\"invalid_token\"")),
                "{case}"
            );
            assert!(!a.body.contains(&t), "{case}: token echoed");
            refused += 1;
        }
    }
    assert_eq!(auth_failures(&gw, "claims", "malformed"), refused);

    // What reads the same everywhere is still forwarded.
    let exact = "b".repeat(4096);
    let mut c = claims();
    c["s"] = json!("Doe, John");
    c["arr"] = json!(["user", "a b", "x;y"]);
    c["n"] = json!(-12.5);
    c["obj"] = json!({ "a": "x,admin", "b": " y " });
    c["mixed"] = json!(["admin ", 1, null]);
    c["realm_access"] = json!({ "roles": ["viewer", "editor"] });
    c["a"] = json!({ "b": { "c": exact } });
    for proto in BOTH {
        let t = token("ES256", &c);
        let auth = bearer(&t);
        let a = send(
            &gw,
            LOOPBACK,
            proto,
            "/claims/x",
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(a.status, 200, "{proto:?}: {}", a.body);
        for (name, want) in [
            ("x-c-str", "Doe, John"),
            ("x-c-arr", "user,a b,x;y"),
            ("x-c-num", "-12.5"),
            // JSON text: every string is quoted, so no piece of it read as a list is bare.
            ("x-c-obj", r#"{"a":"x,admin","b":" y "}"#),
            ("x-c-mixed", r#"["admin ",1,null]"#),
            ("x-c-roles", "viewer,editor"),
            ("x-c-deep", exact.as_str()),
        ] {
            assert_eq!(a.upstream_header(name), [want], "{proto:?} {name}");
        }
    }
    // A value is only checked where it becomes a header: a route that maps no claim passes it.
    let t = token("ES256", &with(claims(), "arr", json!(["x,admin"])));
    let auth = bearer(&t);
    let a = send(
        &gw,
        LOOPBACK,
        Proto::H1,
        "/unmapped/x",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

// =============================================================================================
// Claim header names that may not be configured
// =============================================================================================

#[test]
fn claim_headers_may_not_name_framing_hop_or_trust_family_headers() {
    let names = [
        "Expect",
        "Forwarded",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Anything",
        "x_forwarded_prefix",
        "Content-Type",
        "Content-Encoding",
        "Content-Length",
        "Transfer-Encoding",
        "TE",
        "Trailer",
        "Upgrade",
        "Host",
        "Connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Authorization",
        "Cookie",
        "X-Real-IP",
        "X_Real_IP",
        "True-Client-IP",
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-HTTP-Method-Override",
        "X-Client-Cert",
        "SSL-Client-Cert",
        "X-SSL-Client-Verify",
        "X-Forwarded-Client-Cert",
        "X-Request-Id",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    for name in names {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"required\"\n[route.claim_headers]\n\"X-Auth-Sub\" = \"sub\"\n\"{name}\" = \"email\"\n",
            default_issuer()
        );
        let line = text
            .lines()
            .position(|l| l.contains("= \"email\""))
            .expect("line")
            + 1;
        std::fs::write(&path, &text).expect("write");
        let errs = jwtgate::Config::load(&path).expect_err(name).0;
        assert_eq!(errs.len(), 1, "{name}: {errs:?}");
        let e = &errs[0];
        assert!(
            e.message.contains("claim_headers cannot set") && e.message.contains(name),
            "{name}: {e}"
        );
        assert_eq!(e.loc.line, line, "{name}: {e}");
        assert!(common::is_located(&e.to_string(), &path), "{e}");
    }
    // The identity names an authenticating proxy sets are the gateway's to set here.
    for name in [
        "X-Auth-Request-User",
        "X-Remote-User",
        "X-Authenticated-Userid",
    ] {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"required\"\n[route.claim_headers]\n\"{name}\" = \"sub\"\n",
            default_issuer()
        );
        std::fs::write(&path, &text).expect("write");
        jwtgate::Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

// =============================================================================================
// Token names compared as the upstream reads them
// =============================================================================================

/// Query spellings an upstream reads as `access_token`.
const QUERY_NAMES: &[&str] = &[
    "acc%65ss_token",
    "access%5Ftoken",
    "%61ccess_token",
    "ACCESS_TOKEN",
    "Access_Token",
    "access.token",
    "access+token",
    "access%20token",
];

#[tokio::test]
async fn a_query_token_in_any_spelling_next_to_a_header_token_is_400() {
    let gw = start("").await;
    let t = valid();
    let auth = bearer(&t);
    for proto in BOTH {
        for name in QUERY_NAMES {
            // On the route that reads the query token and on routes that do not.
            for prefix in ["/q/x", "/api/x", "/opt/x"] {
                for query in [format!("{name}=FORGED"), format!("a=1;{name}=FORGED")] {
                    let path = format!("{prefix}?{query}");
                    let a = send(&gw, LOOPBACK, proto, &path, &[("authorization", &auth)]).await;
                    assert_eq!(a.status, 400, "{proto:?} {path}: {}", a.body);
                }
            }
        }
    }
}

#[tokio::test]
async fn a_query_token_in_any_spelling_is_verified_and_removed() {
    let gw = start("").await;
    let t = valid();
    for proto in BOTH {
        for name in QUERY_NAMES {
            let a = send(
                &gw,
                LOOPBACK,
                proto,
                &format!("/q/x?{name}=FORGED&a=1"),
                &[],
            )
            .await;
            assert_eq!(a.status, 401, "{proto:?} {name}: {}", a.body);
            assert_eq!(a.json()["error"], "invalid_token", "{proto:?} {name}");

            let a = send(
                &gw,
                LOOPBACK,
                proto,
                &format!("/q/x?a=1&{name}={t};b=2"),
                &[],
            )
            .await;
            assert_eq!(a.status, 200, "{proto:?} {name}: {}", a.body);
            assert_eq!(
                a.upstream_header("x-auth-sub"),
                ["alice"],
                "{proto:?} {name}"
            );
            assert_eq!(a.json()["query"], "a=1;b=2", "{proto:?} {name}: {}", a.body);
            assert!(!a.body.contains(&t), "{proto:?} {name}: token forwarded");
        }
        // A percent-encoded token value is decoded before it is verified.
        let encoded = t.replace('.', "%2E");
        let a = send(
            &gw,
            LOOPBACK,
            proto,
            &format!("/q/x?access_token={encoded}"),
            &[],
        )
        .await;
        assert_eq!(a.status, 200, "{proto:?}: {}", a.body);
        assert!(a.json()["query"].is_null(), "{}", a.body);
        // Two spellings of the same name are two tokens.
        let a = send(
            &gw,
            LOOPBACK,
            proto,
            &format!("/q/x?access_token={t}&ACCESS_TOKEN={t}"),
            &[],
        )
        .await;
        assert_eq!(a.status, 400, "{proto:?}: {}", a.body);
    }
}

/// Cookie headers an upstream reads as holding an `access_token` cookie of value `{v}`.
const COOKIES: &[&str] = &[
    "access_token={v}",
    " access_token={v}",
    "access_token ={v}",
    "access_token= {v}",
    "a=1;access_token={v};b=2",
    "Access_Token={v}",
    "access%5Ftoken={v}",
    "acc%65ss_token={v}",
    "access.token={v}",
    "access_token=\"{v}\"",
    "a=1, access_token={v}",
    "$Version=1; access_token={v}; $Path=/",
];

#[tokio::test]
async fn a_cookie_token_in_any_spelling_next_to_a_header_token_is_400() {
    let gw = start("").await;
    let t = valid();
    let auth = bearer(&t);
    for proto in BOTH {
        for c in COOKIES {
            let cookie = c.replace("{v}", "FORGED");
            let a = send(
                &gw,
                LOOPBACK,
                proto,
                "/c/x",
                &[("authorization", &auth), ("cookie", &cookie)],
            )
            .await;
            assert_eq!(a.status, 400, "{proto:?} {cookie}: {}", a.body);
        }
        // Duplicate names in any spelling are two tokens.
        let cookie = format!("access_token={t}; ACCESS_TOKEN={t}");
        let a = send(&gw, LOOPBACK, proto, "/c/x", &[("cookie", &cookie)]).await;
        assert_eq!(a.status, 400, "{proto:?}: {}", a.body);
    }
}

#[tokio::test]
async fn a_cookie_token_in_any_spelling_is_verified_and_removed() {
    let gw = start("").await;
    let t = valid();
    for proto in BOTH {
        for c in COOKIES {
            let cookie = c.replace("{v}", "FORGED");
            let a = send(&gw, LOOPBACK, proto, "/c/x", &[("cookie", &cookie)]).await;
            assert_eq!(a.status, 401, "{proto:?} {cookie}: {}", a.body);
            assert_eq!(a.json()["error"], "invalid_token", "{proto:?} {cookie}");

            let cookie = format!("{}; keep=1", c.replace("{v}", &t));
            let a = send(&gw, LOOPBACK, proto, "/c/x", &[("cookie", &cookie)]).await;
            assert_eq!(a.status, 200, "{proto:?} {cookie}: {}", a.body);
            assert_eq!(
                a.upstream_header("x-auth-sub"),
                ["alice"],
                "{proto:?} {cookie}"
            );
            assert!(
                !a.body.contains(&t),
                "{proto:?} {cookie}: token forwarded: {}",
                a.body
            );
            let sent = a.upstream_header("cookie").join("; ");
            assert!(sent.contains("keep=1"), "{proto:?} {cookie}: {sent}");
        }
    }
}

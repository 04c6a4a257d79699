//! Findings of an outside probe of the built gateway, each written as the prober reproduced it:
//! a client that takes no response bytes, array-suffixed query token names, raw non-ASCII bytes
//! in the query. Each failed before its fix.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use common::{claims, default_issuer, token, Harness};

/// The deadline the connection test configures.
const DEADLINE: &str = "1s";
/// How long a stalled connection may stay open: a few deadlines plus a wide margin for a busy
/// machine (it was held for as long as the client wished before).
const CLOSED_WITHIN: Duration = Duration::from_secs(10);
/// Bound on any network step that should succeed.
const IO: Duration = Duration::from_secs(10);

/// One `auth = "none"` route `/` and one optional route `/q` reading `token_query`, with the
/// connection and send deadlines set to [`DEADLINE`].
fn config() -> String {
    format!(
        r#"[limits]
header_read_timeout = "{DEADLINE}"
send_timeout = "{DEADLINE}"
{}
[[route]]
name = "public"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "none"

[[route]]
name = "q"
path_prefix = "/q"
upstream = "{{upstream}}"
auth = "optional"
token_query = "access_token"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#,
        default_issuer()
    )
}

/// An HTTP/2 client that advertises a zero stream window asks for a response it can never
/// receive, and answers the gateway's pings: a connection that makes no progress must still
/// be closed (like nginx's `send_timeout`), or a few such clients fill `max_connections`.
#[tokio::test]
async fn h2_zero_window_stream_is_not_held_forever() {
    let h = Harness::start(&config()).await;
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    // Polling the connection answers the gateway's pings, as a live attacker would.
    let conn = tokio::spawn(conn);
    let req = Request::get("http://gw.test/big")
        .body(Full::new(Bytes::new()))
        .expect("request");
    send.ready().await.expect("connection ready");
    let res = tokio::time::timeout(IO, send.send_request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(res.status(), 200);
    // The body is never read and can never be sent: the stream stays open.
    let _held = res;
    let closed = tokio::time::timeout(CLOSED_WITHIN, conn).await;
    assert!(
        closed.is_ok(),
        "the gateway kept a connection whose only stream cannot make progress for {CLOSED_WITHIN:?}"
    );
}

/// PHP and Rack read `access_token[]=X` as the parameter `access_token` (an array): it is a
/// second credential next to a header token, and never forwarded raw on an optional route.
#[tokio::test]
async fn query_token_with_array_suffix_is_a_credential() {
    let h = Harness::start(&config()).await;
    let t = token("ES256", &claims());
    for target in [
        "/q?access_token[]=FORGED",
        "/q?access_token%5B%5D=FORGED",
        "/q?access_token[0]=FORGED",
        "/q?x=1&ACCESS_TOKEN[]=FORGED",
    ] {
        let with_header = h.get_with_token(target, &t).await;
        assert!(
            with_header.status == 400,
            "{target} next to a header token: {} {}",
            with_header.status,
            with_header.body
        );
        let alone = h.get(target, &[]).await;
        assert!(
            alone.status == 401 && !alone.body.contains("FORGED"),
            "{target} alone on an optional route was not verified: {} {}",
            alone.status,
            alone.body
        );
    }
}

/// A request target is ASCII (RFC 9112 §3.2): raw non-ASCII bytes in the query are a 400 like
/// in the path, never forwarded as they came.
#[tokio::test]
async fn raw_non_ascii_in_query_is_refused() {
    let h = Harness::start(&config()).await;
    for query in [
        &b"x=\xc3\xa9"[..],
        b"acces\xc5\xbf_token=FORGED",
        b"a=\xe2\x80\xae",
    ] {
        let mut req = b"GET /?".to_vec();
        req.extend_from_slice(query);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let answer = h.raw(&req, IO).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "query {:?}: {}",
            String::from_utf8_lossy(query),
            answer.lines().next().unwrap_or_default()
        );
    }
}

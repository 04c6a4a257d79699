//! Attacks on connections: every phase in which a client owes bytes has a deadline
//! (`header_read_timeout`, 1 s here) on the traffic listener, plain and TLS, HTTP/1.1 and
//! HTTP/2, and on the admin listener; `max_connections` caps each listener; a process out of
//! file descriptors pauses and counts instead of spinning; HTTP/2 gets HTTP/1's header limits.
//! Long requests, slow upstreams and open HTTP/2 streams are never cut by these deadlines.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;

use common::metrics::metric;
use common::tls::CERTS;
use common::{default_issuer, echo_upstream, eventually, free_port, tls, ChildGuard};

/// The deadline every test configures, unless it says otherwise.
const DEADLINE: &str = "1s";
/// How long a connection may take to be closed after its 1 s deadline: the deadline plus a
/// wide margin for a busy machine (held connections were held forever before).
const CLOSED_WITHIN: Duration = Duration::from_secs(4);
/// Bound on any single network step that should succeed.
const IO: Duration = Duration::from_secs(10);
/// How long a polled condition may take to hold.
const WAIT: Duration = Duration::from_secs(10);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// A gateway with both listeners

/// A running gateway (traffic and admin listeners) in front of the in-process echo upstream,
/// with one `auth = "none"` route so requests need no token.
struct Gw {
    addr: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    echo: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _stop_echo: oneshot::Sender<()>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The config text: `[listen]` (with the dev certificate when `tls`), `[admin]`, `[limits]`
/// with `header_read_timeout = deadline` and `limits`, the default issuer and an open route.
fn config_text(echo: SocketAddr, tls: bool, deadline: &str, limits: &str, admin: &str) -> String {
    let tls_line = if tls {
        format!("tls = {{ cert = \"{CERTS}/server.crt\", key = \"{CERTS}/server.key\" }}\n")
    } else {
        String::new()
    };
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{tls_line}\n[admin]\naddr = \"{admin}\"\n\n[limits]\nheader_read_timeout = \"{deadline}\"\n{limits}\n{}\n[[route]]\nname = \"open\"\npath_prefix = \"/\"\nupstream = \"http://{echo}\"\nauth = \"none\"\n",
        default_issuer()
    )
}

impl Gw {
    async fn start(tls: bool, limits: &str) -> Gw {
        Gw::start_with(tls, DEADLINE, limits).await
    }

    async fn start_with(tls: bool, deadline: &str, limits: &str) -> Gw {
        Gw::start_to(tls, deadline, limits, None).await
    }

    /// Like [`Gw::start_with`], routing to `upstream` instead of the echo upstream when given.
    async fn start_to(tls: bool, deadline: &str, limits: &str, upstream: Option<SocketAddr>) -> Gw {
        let dir = tempfile::tempdir().expect("tempdir");
        common::write_keys(dir.path());
        let (echo, stop_echo) = echo_upstream().await;
        let echo = upstream.unwrap_or(echo);
        let path = dir.path().join("gateway.toml");
        let text = config_text(echo, tls, deadline, limits, "127.0.0.1:0");
        std::fs::write(&path, text).expect("write config");
        let (addr, admin_addr, stop) = common::run_with_admin(&path).await;
        Gw {
            addr,
            admin: admin_addr,
            dir,
            echo,
            stop: Some(stop),
            _stop_echo: stop_echo,
        }
    }

    /// Rewrites the config file (the gateway's watcher reloads it).
    fn rewrite(&self, deadline: &str, limits: &str, admin: &str) {
        let text = config_text(self.echo, false, deadline, limits, admin);
        std::fs::write(self.dir.path().join("gateway.toml"), text).expect("write config");
    }

    /// One admin GET on a fresh connection: status and body.
    async fn admin_get(&self, path: &str) -> (u16, String) {
        let s = TcpStream::connect(self.admin).await.expect("connect admin");
        let mut c = H1::new(s).await;
        c.get(path).await
    }

    /// The value of `name` with `labels` on `/metrics`, when it exists.
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        metric(&body, name, labels)
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A TLS connection trusting the dev CA, offering `alpn`.
async fn tls_connect(addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    tls::connect(addr, tls::dev_client(alpn, false)).await
}

/// Reads until the peer closes (EOF or an error); `Err` with what arrived when it is still
/// open after `limit`.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Result<String, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let done = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match done {
        Ok(()) => Ok(text),
        Err(_) => Err(text),
    }
}

/// Asserts that `s` is closed by the gateway within [`CLOSED_WITHIN`].
async fn assert_closed<S: AsyncRead + Unpin>(s: &mut S, what: &str) {
    if let Err(got) = closed_within(s, CLOSED_WITHIN).await {
        panic!("{what}: still open {CLOSED_WITHIN:?} after a 1 s deadline (got {got:?})");
    }
}

/// Writes `bytes` one at a time every 100 ms (a slowloris) and returns how long the gateway
/// took to close the connection, or `None` if it was still open after every byte (6 s and more).
async fn dribble<S: AsyncRead + AsyncWrite + Unpin>(s: S, bytes: &[u8]) -> Option<Duration> {
    assert!(bytes.len() >= 60, "dribble for longer than the bound");
    let start = Instant::now();
    let (mut r, mut w) = tokio::io::split(s);
    let reader = async move {
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let writer = async move {
        for b in bytes {
            if w.write_all(&[*b]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    };
    tokio::select! {
        () = reader => Some(start.elapsed()),
        finished = writer => (!finished).then(|| start.elapsed()),
    }
}

/// A request head long enough to dribble for over 6 s, never finished.
fn endless_head(path: &str) -> Vec<u8> {
    let mut h = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n").into_bytes();
    while h.len() < 80 {
        h.extend_from_slice(b"X-Slow: ");
        h.extend_from_slice(&[b'a'; 16]);
        h.extend_from_slice(b"\r\n");
    }
    h
}

/// An HTTP/1.1 client connection kept alive between requests.
struct H1 {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

impl H1 {
    async fn new<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S) -> H1 {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("h1 handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        H1 { send, conn }
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let req = Request::get(path)
            .header("host", "gw.test")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let res = tokio::time::timeout(IO, async {
            self.send.ready().await?;
            self.send.send_request(req).await
        })
        .await
        .expect("answered in time")
        .expect("answered");
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Asserts the gateway closes this connection within [`CLOSED_WITHIN`].
    async fn assert_closed(self, what: &str) {
        tokio::time::timeout(CLOSED_WITHIN, self.conn)
            .await
            .unwrap_or_else(|_| panic!("{what}: the idle connection is still open"))
            .expect("connection task");
    }
}

/// An HTTP/2 client connection (prior knowledge, or h2 negotiated by ALPN).
struct H2 {
    send: H2Send,
    conn: tokio::task::JoinHandle<()>,
}

impl H2 {
    async fn new<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S) -> H2 {
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("h2 handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 { send, conn }
    }

    async fn request(&mut self, req: Request<Full<Bytes>>) -> (u16, String) {
        h2_request(&mut self.send, req).await
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        h2_get(&mut self.send, path).await
    }

    /// Asserts the gateway closes this connection (GOAWAY, then the end of the connection)
    /// within [`CLOSED_WITHIN`].
    async fn assert_closed(self, what: &str) {
        tokio::time::timeout(CLOSED_WITHIN, self.conn)
            .await
            .unwrap_or_else(|_| panic!("{what}: the idle HTTP/2 connection is still open"))
            .expect("connection task");
    }
}

type H2Send = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_request(send: &mut H2Send, req: Request<Full<Bytes>>) -> (u16, String) {
    let res = tokio::time::timeout(IO, async {
        send.ready().await?;
        send.send_request(req).await
    })
    .await
    .expect("answered in time")
    .expect("answered");
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn h2_get(send: &mut H2Send, path: &str) -> (u16, String) {
    let req = Request::get(format!("http://gw.test{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    h2_request(send, req).await
}

/// A GET with `n` headers `x-h0..` plus `cookies` separate `cookie` fields.
fn many_headers(n: usize, cookies: usize) -> Request<Full<Bytes>> {
    let mut b = Request::get("http://gw.test/many");
    for i in 0..n {
        b = b.header(format!("x-h{i}"), "v");
    }
    for i in 0..cookies {
        b = b.header("cookie", format!("c{i}=v"));
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

// ---------------------------------------------------------------------------------------------
// Before the first byte, and the protocol sniff

#[tokio::test]
async fn a_silent_connection_is_closed_on_the_traffic_and_admin_listeners() {
    let gw = Gw::start(false, "").await;
    for (addr, what) in [(gw.addr, "traffic"), (gw.admin, "admin")] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        assert_closed(&mut s, &format!("{what}: a connection that sends nothing")).await;
    }
}

#[tokio::test]
async fn a_partial_http2_preface_is_closed() {
    let gw = Gw::start(false, "").await;
    for part in [&H2_PREFACE[..1], &H2_PREFACE[..16], &H2_PREFACE[..23]] {
        for (addr, what) in [(gw.addr, "traffic"), (gw.admin, "admin")] {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(part).await.expect("write");
            let what = format!("{what}: the preface cut after {} bytes", part.len());
            assert_closed(&mut s, &what).await;
        }
    }
}

#[tokio::test]
async fn a_whole_preface_without_a_request_is_closed() {
    let gw = Gw::start(false, "").await;
    // The preface alone, then the preface and the client's SETTINGS: no stream ever opens.
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    for with_settings in [false, true] {
        for (addr, what) in [(gw.addr, "traffic"), (gw.admin, "admin")] {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(H2_PREFACE).await.expect("write");
            if with_settings {
                s.write_all(&settings).await.expect("write");
            }
            let what = format!("{what}: preface (settings: {with_settings}) and no request");
            assert_closed(&mut s, &what).await;
        }
    }
}

#[tokio::test]
async fn tls_connections_that_stall_at_any_phase_are_closed() {
    let gw = Gw::start(true, "").await;
    // Before the ClientHello.
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    assert_closed(&mut s, "TLS: no ClientHello").await;
    // Half a ClientHello (a TLS record header promising more).
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    assert_closed(&mut s, "TLS: a partial ClientHello").await;
    // The handshake completes, then nothing, whatever ALPN said.
    for alpn in [&[][..], &[&b"http/1.1"[..]][..], &[&b"h2"[..]][..]] {
        let mut s = tls_connect(gw.addr, alpn).await;
        assert_closed(
            &mut s,
            &format!("TLS with ALPN {alpn:?}: silent after the handshake"),
        )
        .await;
    }
    // The handshake completes, then part of the HTTP/2 preface.
    let mut s = tls_connect(gw.addr, &[b"h2"]).await;
    s.write_all(&H2_PREFACE[..10]).await.expect("write");
    s.flush().await.expect("flush");
    assert_closed(&mut s, "TLS: a partial HTTP/2 preface").await;
}

// ---------------------------------------------------------------------------------------------
// A request head dribbled byte by byte (slowloris)

#[tokio::test]
async fn a_dribbled_head_ends_at_the_deadline_not_per_byte() {
    let gw = Gw::start(false, "").await;
    for (addr, what) in [(gw.addr, "traffic"), (gw.admin, "admin")] {
        let s = TcpStream::connect(addr).await.expect("connect");
        let took = dribble(s, &endless_head("/slow")).await;
        assert!(
            took.is_some_and(|t| t < CLOSED_WITHIN),
            "{what}: a head sent one byte every 100 ms must end at the 1 s deadline, took {took:?}"
        );
    }
}

#[tokio::test]
async fn a_dribbled_head_over_tls_ends_at_the_deadline() {
    let gw = Gw::start(true, "").await;
    let s = tls_connect(gw.addr, &[b"http/1.1"]).await;
    let took = dribble(s, &endless_head("/slow")).await;
    assert!(
        took.is_some_and(|t| t < CLOSED_WITHIN),
        "TLS: took {took:?}"
    );
}

#[tokio::test]
async fn a_dribbled_second_request_on_a_kept_alive_connection_ends_at_the_deadline() {
    let gw = Gw::start(false, "").await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET /first HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(IO, s.read(&mut buf))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Drain the rest of the first answer so the reader below only waits for the close.
    let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
    let took = dribble(s, &endless_head("/second")).await;
    assert!(
        took.is_some_and(|t| t < CLOSED_WITHIN),
        "a second head dribbled after a kept-alive request: took {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Idle between requests

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed() {
    let gw = Gw::start(false, "").await;
    for (addr, path, what) in [(gw.addr, "/a", "traffic"), (gw.admin, "/healthz", "admin")] {
        let mut c = H1::new(TcpStream::connect(addr).await.expect("connect")).await;
        let (status, body) = c.get(path).await;
        assert_eq!(status, 200, "{what}: {body}");
        c.assert_closed(&format!("{what}: HTTP/1.1 keep-alive"))
            .await;
    }
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_over_tls_is_closed() {
    let gw = Gw::start(true, "").await;
    let mut c = H1::new(tls_connect(gw.addr, &[b"http/1.1"]).await).await;
    let (status, body) = c.get("/a").await;
    assert_eq!(status, 200, "{body}");
    c.assert_closed("TLS HTTP/1.1 keep-alive").await;
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_and_is_closed() {
    let gw = Gw::start(false, "").await;
    // After a request, and without any request.
    for (addr, path, what) in [(gw.addr, "/a", "traffic"), (gw.admin, "/healthz", "admin")] {
        let mut c = H2::new(TcpStream::connect(addr).await.expect("connect")).await;
        let (status, body) = c.get(path).await;
        assert_eq!(status, 200, "{what}: {body}");
        c.assert_closed(&format!("{what}: h2c after a request"))
            .await;
        let c = H2::new(TcpStream::connect(addr).await.expect("connect")).await;
        c.assert_closed(&format!("{what}: h2c with no request"))
            .await;
    }
}

#[tokio::test]
async fn an_idle_http2_connection_over_tls_is_closed() {
    let gw = Gw::start(true, "").await;
    let mut c = H2::new(tls_connect(gw.addr, &[b"h2"]).await).await;
    let (status, body) = c.get("/a").await;
    assert_eq!(status, 200, "{body}");
    c.assert_closed("TLS h2 after a request").await;
    let c = H2::new(tls_connect(gw.addr, &[b"h2"]).await).await;
    c.assert_closed("TLS h2 with no request").await;
}

#[tokio::test]
async fn an_idle_http2_connection_sends_a_goaway_frame() {
    let gw = Gw::start(false, "").await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(H2_PREFACE).await.expect("write");
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("write");
    let frames = read_frames(&mut s).await;
    assert!(
        frames.iter().any(|f| f.kind == 7),
        "an idle HTTP/2 connection is told why it closes (GOAWAY); frames: {:?}",
        frames.iter().map(|f| f.kind).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Long requests are never cut by these deadlines

#[tokio::test]
async fn a_slow_upstream_answer_longer_than_the_deadline_completes() {
    for tls in [false, true] {
        let gw = Gw::start(tls, "").await;
        // HTTP/1.1.
        let mut c = if tls {
            H1::new(tls_connect(gw.addr, &[b"http/1.1"]).await).await
        } else {
            H1::new(TcpStream::connect(gw.addr).await.expect("connect")).await
        };
        let (status, body) = c.get("/slow?delay_ms=2500").await;
        assert_eq!(status, 200, "HTTP/1.1 (tls: {tls}): {body}");
        // The same connection serves the next request at once.
        let (status, body) = c.get("/next").await;
        assert_eq!(status, 200, "HTTP/1.1 (tls: {tls}): {body}");
    }
}

#[tokio::test]
async fn an_http2_connection_with_an_open_slow_stream_is_not_closed() {
    for tls in [false, true] {
        let gw = Gw::start(tls, "").await;
        let mut c = if tls {
            H2::new(tls_connect(gw.addr, &[b"h2"]).await).await
        } else {
            H2::new(TcpStream::connect(gw.addr).await.expect("connect")).await
        };
        // Two slow streams overlapping, each longer than the deadline.
        let mut other = c.send.clone();
        let slow = tokio::spawn(async move { h2_get(&mut other, "/slow2?delay_ms=3000").await });
        let (status, body) = c.get("/slow1?delay_ms=2500").await;
        assert_eq!(status, 200, "h2 (tls: {tls}): {body}");
        let (status, body) = slow.await.expect("task");
        assert_eq!(status, 200, "h2 (tls: {tls}): {body}");
        // No GOAWAY came: the connection takes a new stream.
        let (status, body) = c.get("/after").await;
        assert_eq!(
            status, 200,
            "h2 (tls: {tls}) after the slow streams: {body}"
        );
    }
}

#[tokio::test]
async fn a_slow_upload_within_body_read_timeout_is_not_cut() {
    // The header deadline is 1 s; the body arrives in pieces over 2.5 s.
    let gw = Gw::start(false, "body_read_timeout = \"5s\"").await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    for b in b"hello" {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[*b])
            .await
            .expect("the connection is still open");
    }
    let out = closed_within(&mut s, IO)
        .await
        .expect("answered and closed");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"body\":\"hello\""), "{out}");
}

/// An upstream that answers any request with a 101 (the RFC 6455 example's accept) and then
/// echoes whatever bytes come through the tunnel.
async fn tunnel_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    head.push(b[0]);
                }
                let res = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                if s.write_all(res.as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_websocket_tunnel_quiet_for_longer_than_the_deadline_stays_open() {
    let gw = Gw::start_to(false, DEADLINE, "", Some(tunnel_upstream().await)).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(IO, s.read_exact(&mut b))
            .await
            .expect("answer in time")
            .expect("answer");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Quiet for 2.5 deadlines, then the tunnel still carries bytes both ways.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.write_all(b"still here")
        .await
        .expect("write through the tunnel");
    let mut echoed = [0u8; 10];
    tokio::time::timeout(IO, s.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("the tunnel is still open");
    assert_eq!(&echoed, b"still here");
    // The tunnel's socket still counts as an open connection.
    let open = gw
        .metric("jwtgate_open_connections", &[("listener", "traffic")])
        .await;
    assert_eq!(open, Some(1.0), "an upgraded connection stays counted");
}

// ---------------------------------------------------------------------------------------------
// max_connections and the open-connection gauge

/// Opens `n` connections to `addr` that stay silent.
async fn hold(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TcpStream::connect(addr).await.expect("connect"));
    }
    v
}

#[tokio::test]
async fn past_max_connections_a_new_connection_waits_until_one_closes() {
    // A long deadline, so the held connections stay open.
    let gw = Gw::start_with(false, "30s", "max_connections = 5").await;
    let held = hold(gw.addr, 5).await;
    eventually(WAIT, "five traffic connections counted", || async {
        gw.metric("jwtgate_open_connections", &[("listener", "traffic")])
            .await
            == Some(5.0)
    })
    .await;
    // The sixth connects (the kernel's backlog) but is not served.
    let mut sixth = TcpStream::connect(gw.addr).await.expect("connect");
    sixth
        .write_all(b"GET /sixth HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(800), sixth.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the sixth connection must wait past max_connections = 5, got {early:?}"
    );
    assert_eq!(
        gw.metric("jwtgate_open_connections", &[("listener", "traffic")])
            .await,
        Some(5.0)
    );
    // One closes: the sixth is served.
    drop(held.into_iter().next());
    let out = closed_within(&mut sixth, IO)
        .await
        .expect("served and closed");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test]
async fn max_connections_caps_the_admin_listener_too() {
    let gw = Gw::start_with(false, "30s", "max_connections = 3").await;
    let held = hold(gw.admin, 3).await;
    let mut fourth = TcpStream::connect(gw.admin).await.expect("connect");
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(800), fourth.read(&mut buf)).await;
    assert!(early.is_err(), "admin past max_connections: {early:?}");
    drop(held);
    let out = closed_within(&mut fourth, IO).await.expect("served");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test]
async fn the_open_connection_gauge_goes_up_and_down() {
    let gw = Gw::start_with(false, "30s", "").await;
    let held = hold(gw.addr, 3).await;
    eventually(WAIT, "three open", || async {
        gw.metric("jwtgate_open_connections", &[("listener", "traffic")])
            .await
            == Some(3.0)
    })
    .await;
    // A TLS-less h2 connection and an h1 one with a request count the same way.
    let mut h2 = H2::new(TcpStream::connect(gw.addr).await.expect("connect")).await;
    assert_eq!(h2.get("/x").await.0, 200);
    eventually(WAIT, "four open", || async {
        gw.metric("jwtgate_open_connections", &[("listener", "traffic")])
            .await
            == Some(4.0)
    })
    .await;
    // The admin listener counts the scrape's own connection.
    let admin = gw
        .metric("jwtgate_open_connections", &[("listener", "admin")])
        .await;
    assert!(admin.is_some_and(|v| v >= 1.0), "admin gauge: {admin:?}");
    drop(held);
    drop(h2);
    eventually(WAIT, "back to zero", || async {
        gw.metric("jwtgate_open_connections", &[("listener", "traffic")])
            .await
            == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn connection_metrics_exist_from_the_first_scrape() {
    let gw = Gw::start(false, "").await;
    let (status, body) = gw.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for l in ["traffic", "admin"] {
        for m in ["jwtgate_open_connections", "jwtgate_accept_errors_total"] {
            assert!(
                metric(&body, m, &[("listener", l)]).is_some(),
                "{m}{{listener=\"{l}\"}} missing from the first scrape:\n{body}"
            );
        }
    }
    assert_eq!(
        metric(
            &body,
            "jwtgate_accept_errors_total",
            &[("listener", "traffic")]
        ),
        Some(0.0)
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 gets HTTP/1's header limits

#[tokio::test]
async fn http2_requests_over_100_headers_get_431_like_http1() {
    for tls in [false, true] {
        let gw = Gw::start(tls, "").await;
        let mut c = if tls {
            H2::new(tls_connect(gw.addr, &[b"h2"]).await).await
        } else {
            H2::new(TcpStream::connect(gw.addr).await.expect("connect")).await
        };
        let (status, body) = c.request(many_headers(101, 0)).await;
        assert_eq!(status, 431, "h2 (tls: {tls}) with 101 headers: {body}");
        // The gateway's own answer, not the upstream's.
        assert!(body.contains("request_header_fields_too_large"), "{body}");
        let (status, body) = c.request(many_headers(150, 0)).await;
        assert_eq!(status, 431, "h2 (tls: {tls}) with 150 headers: {body}");
        // Under it the request reaches the upstream (whose own HTTP/1 limit is 100 too, so
        // leave room for the forwarding headers the gateway adds).
        let (status, body) = c.request(many_headers(90, 0)).await;
        assert_eq!(status, 200, "h2 (tls: {tls}) with 90 headers: {body}");
        // The connection is still usable after a 431.
        assert_eq!(c.get("/ok").await.0, 200);
    }
}

#[tokio::test]
async fn http2_header_count_limit_is_inclusive_and_counts_split_cookies_once() {
    // The admin listener answers itself, so exactly 100 fields can be tried.
    let gw = Gw::start(false, "").await;
    let mut c = H2::new(TcpStream::connect(gw.admin).await.expect("connect")).await;
    let at = |n, cookies| {
        let mut r = many_headers(n, cookies);
        *r.uri_mut() = "http://gw.test/healthz".parse().expect("uri");
        r
    };
    assert_eq!(c.request(at(100, 0)).await.0, 200, "100 fields");
    assert_eq!(c.request(at(101, 0)).await.0, 431, "101 fields");
    // 99 fields and one Cookie split into 30 crumbs (RFC 9113 §8.2.3): 100 fields.
    assert_eq!(
        c.request(at(99, 30)).await.0,
        200,
        "99 fields and 30 crumbs"
    );
    assert_eq!(
        c.request(at(100, 2)).await.0,
        431,
        "100 fields and a cookie"
    );
}

#[tokio::test]
async fn http1_requests_over_100_headers_get_431_on_both_listeners() {
    let gw = Gw::start(false, "").await;
    for (addr, what) in [(gw.addr, "traffic"), (gw.admin, "admin")] {
        let mut req =
            String::from("GET /healthz HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n");
        for i in 0..120 {
            req.push_str(&format!("X-H{i}: v\r\n"));
        }
        req.push_str("\r\n");
        let (out, _) = common::raw_exchange(addr, req.as_bytes(), IO).await;
        assert!(out.starts_with("HTTP/1.1 431"), "{what}: {out}");
    }
}

#[tokio::test]
async fn the_admin_listener_applies_max_header_bytes() {
    let gw = Gw::start(false, "").await;
    let big = "a".repeat(40 * 1024);
    let req =
        format!("GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {big}\r\n\r\n");
    let (out, ended) = common::raw_exchange(gw.admin, req.as_bytes(), IO).await;
    assert!(ended, "admin: the connection ends");
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 431"),
        "admin: a 40 KiB header over max_header_bytes: {}",
        &out[..out.len().min(200)]
    );
    // Over h2c too.
    let mut c = H2::new(TcpStream::connect(gw.admin).await.expect("connect")).await;
    let req = Request::get("http://gw.test/healthz")
        .header("x-big", big.as_str())
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(c.request(req).await.0, 431, "admin h2c: a 40 KiB header");
    let (status, _) = c.request(many_headers(101, 0)).await;
    assert_eq!(status, 431, "admin h2c: 101 headers");
}

#[tokio::test]
async fn http2_header_list_over_max_header_bytes_is_431_over_tls() {
    let gw = Gw::start(true, "").await;
    let mut c = H2::new(tls_connect(gw.addr, &[b"h2"]).await).await;
    let req = Request::get("https://localhost/big")
        .header("x-big", "a".repeat(40 * 1024))
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(c.request(req).await.0, 431);
}

/// One HTTP/2 frame as read off the wire.
struct Frame {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

/// Reads frames until the connection closes or 3 s pass.
async fn read_frames(s: &mut TcpStream) -> Vec<Frame> {
    let mut data = Vec::new();
    let _ = tokio::time::timeout(CLOSED_WITHIN, s.read_to_end(&mut data)).await;
    let mut frames = Vec::new();
    let mut rest = &data[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        frames.push(Frame {
            kind: rest[3],
            flags: rest[4],
            payload: rest[9..9 + len].to_vec(),
        });
        rest = &rest[9 + len..];
    }
    frames
}

/// SETTINGS_MAX_CONCURRENT_STREAMS from the server's first SETTINGS frame.
async fn advertised_max_streams(addr: SocketAddr) -> Option<u32> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(H2_PREFACE).await.expect("write");
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("write");
    let frames = read_frames(&mut s).await;
    let settings = frames.iter().find(|f| f.kind == 4 && f.flags & 1 == 0)?;
    settings.payload.chunks_exact(6).find_map(|p| {
        (u16::from_be_bytes([p[0], p[1]]) == 3)
            .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
    })
}

#[tokio::test]
async fn http2_max_concurrent_streams_is_100_by_default_and_configurable() {
    let gw = Gw::start(false, "").await;
    assert_eq!(advertised_max_streams(gw.addr).await, Some(100));
    let gw = Gw::start(false, "max_concurrent_streams = 7").await;
    assert_eq!(advertised_max_streams(gw.addr).await, Some(7));
}

// ---------------------------------------------------------------------------------------------
// Settings on reload

#[tokio::test]
async fn a_reload_applies_the_header_deadline_to_new_connections() {
    let gw = Gw::start_with(false, "60s", "").await;
    let admin = gw.admin.to_string();
    gw.rewrite("1s", "", &admin);
    eventually(WAIT, "the reload is in effect", || async {
        gw.admin_get("/config")
            .await
            .1
            .contains("\"header_read_timeout\":\"1s\"")
    })
    .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    assert_closed(
        &mut s,
        "a silent connection after the deadline was reloaded to 1 s",
    )
    .await;
    let mut s = TcpStream::connect(gw.admin).await.expect("connect");
    assert_closed(&mut s, "admin: a silent connection after the reload").await;
}

#[tokio::test]
async fn settings_that_need_a_restart_are_shown_as_pending_in_config() {
    let gw = Gw::start(false, "").await;
    let (_, body) = gw.admin_get("/config").await;
    let c: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(c["restart_pending"], serde_json::json!({}), "{c}");
    // The configured admin address is 127.0.0.1:0; move it and change the cache size.
    let port = free_port();
    gw.rewrite(
        DEADLINE,
        "token_cache_entries = 5",
        &format!("127.0.0.1:{port}"),
    );
    eventually(WAIT, "the reload is seen", || async {
        gw.admin_get("/config")
            .await
            .1
            .contains("\"token_cache_entries\":5")
    })
    .await;
    let (_, body) = gw.admin_get("/config").await;
    let c: serde_json::Value = serde_json::from_str(&body).expect("json");
    let pending = &c["restart_pending"];
    assert_eq!(pending["admin.addr"]["in_effect"], "127.0.0.1:0", "{c}");
    assert_eq!(
        pending["admin.addr"]["configured"],
        format!("127.0.0.1:{port}"),
        "{c}"
    );
    assert_eq!(
        pending["limits.token_cache_entries"]["in_effect"], 10_000,
        "{c}"
    );
    assert_eq!(
        pending["limits.token_cache_entries"]["configured"], 5,
        "{c}"
    );
    assert!(pending.get("listen.addr").is_none(), "{c}");
}

// ---------------------------------------------------------------------------------------------
// Out of file descriptors

/// User plus system CPU time of process `pid`, from /proc.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports them in USER_HZ, 100 on every architecture jwtgate builds for.
    Some(Duration::from_millis(ticks * 10))
}

/// A blocking GET on a fresh connection, for a gateway in another process; `None` when the
/// connection is refused, reset or not answered within 2 s.
async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
    let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await;
    let Ok(Ok(mut s)) = connect else { return None };
    s.write_all(req.as_bytes()).await.ok()?;
    let out = closed_within(&mut s, Duration::from_secs(2)).await.ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

#[tokio::test]
async fn out_of_file_descriptors_the_gateway_pauses_counts_and_recovers() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let (echo, _stop_echo) = echo_upstream().await;
    let (port, admin_port) = (free_port(), free_port());
    let text = config_text(
        echo,
        false,
        DEADLINE,
        "",
        &format!("127.0.0.1:{admin_port}"),
    )
    .replace(
        "addr = \"127.0.0.1:0\"",
        &format!("addr = \"127.0.0.1:{port}\""),
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, text).expect("write config");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=64:64")
        .arg(common::binary())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("JWTGATE_CONFIG")
        .env("TOKIO_WORKER_THREADS", "1")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout"))
        .stderr(std::fs::File::create(&err).expect("stderr"));
    let child = ChildGuard(cmd.spawn().expect("spawn prlimit jwtgate"));
    let (addr, admin): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{port}").parse().expect("addr"),
        format!("127.0.0.1:{admin_port}").parse().expect("addr"),
    );
    eventually(WAIT, "the gateway serves", || async {
        try_get(admin, "/healthz")
            .await
            .is_some_and(|(s, _)| s == 200)
    })
    .await;
    // More silent connections than the process has descriptors: accepts fail with EMFILE.
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr).await {
            held.push(s);
        }
    }
    let cpu_before = cpu_time(child.id());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu_after = cpu_time(child.id());
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        // A busy accept loop burns the whole 1.5 s; a paused one next to nothing.
        assert!(
            b.saturating_sub(a) < Duration::from_millis(700),
            "the gateway spun while out of descriptors: {:?} of CPU in 1.5 s\n{}",
            b.saturating_sub(a),
            common::output_of(&out, &err)
        );
    }
    drop(held);
    // The silent connections time out, descriptors come back, and the gateway serves again.
    eventually(WAIT, "the gateway serves again", || async {
        try_get(addr, "/again").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    let (status, metrics) = try_get(admin, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let errors = metric(
        &metrics,
        "jwtgate_accept_errors_total",
        &[("listener", "traffic")],
    )
    .expect("the accept error counter");
    assert!(errors >= 1.0, "accept errors were counted: {errors}");
    // Logged at most once per 10 s, not once per attempt.
    let logs = common::output_of(&out, &err);
    let lines = logs.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=3).contains(&lines),
        "accept failures are logged, rate-limited ({lines} lines):\n{logs}"
    );
}

// ---------------------------------------------------------------------------------------------
// The new limits are validated like the others

#[test]
fn connection_limits_out_of_range_are_located_errors() {
    for (line, key) in [
        ("max_connections = 0", "max_connections"),
        ("max_connections = -1", "max_connections"),
        ("max_concurrent_streams = 0", "max_concurrent_streams"),
        ("max_concurrent_streams = 100000", "max_concurrent_streams"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        common::write_keys(dir.path());
        let text = config_text(
            "127.0.0.1:9".parse().expect("addr"),
            false,
            DEADLINE,
            line,
            "127.0.0.1:0",
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).expect("write");
        let err = jwtgate::Config::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{line:?} was accepted"))
            .to_string();
        let first = err.lines().next().unwrap_or_default();
        assert!(common::is_located(first, &path), "{line}: {err}");
        assert!(first.contains(key), "{line}: {err}");
    }
}

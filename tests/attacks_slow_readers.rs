//! Attacks on the phase in which the gateway owes bytes: a client that takes none of the
//! response (an HTTP/2 zero window, an HTTP/1 socket never read) is closed after
//! `send_timeout` (1 s here), so a handful of them cannot hold `max_connections`. Waiting on the
//! upstream never counts: a slow streamed response, an idle WebSocket tunnel and a client that
//! reads slowly but steadily all run on.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::default_issuer;
use common::tls::CERTS;

/// How long a stalled connection may take to be closed after its 1 s deadline: the deadline
/// plus a wide margin for a busy machine (such connections were held forever before).
const CLOSED_WITHIN: Duration = Duration::from_secs(5);
/// Bound on any single network step that should succeed.
const IO: Duration = Duration::from_secs(10);
/// A response larger than every socket buffer between the gateway and the client.
const BIG: usize = 8 << 20;
const TRAFFIC_GAUGE: &str = "jwtgate_open_connections{listener=\"traffic\"}";

// ---------------------------------------------------------------------------------------------
// The gateway and its upstream

/// A running gateway (traffic and admin listeners) with `send_timeout = "1s"` and
/// `header_read_timeout = "1s"` in front of [`upstream`], through one open route.
struct Gw {
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Gw {
    async fn start(tls: bool, limits: &str) -> Gw {
        let dir = tempfile::tempdir().expect("tempdir");
        common::write_keys(dir.path());
        let up = upstream().await;
        let tls_line = if tls {
            format!("tls = {{ cert = \"{CERTS}/server.crt\", key = \"{CERTS}/server.key\" }}\n")
        } else {
            String::new()
        };
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{tls_line}\n[admin]\naddr = \"127.0.0.1:0\"\n\n[limits]\nheader_read_timeout = \"1s\"\nsend_timeout = \"1s\"\n{limits}\n{}\n[[route]]\nname = \"open\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"none\"\n",
            default_issuer()
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).expect("write config");
        let (addr, admin_addr, stop) = common::run_with_admin(&path).await;
        Gw {
            addr,
            admin: admin_addr,
            _dir: dir,
            _stop: stop,
        }
    }

    /// The body of an admin GET of `path`.
    async fn admin_get(&self, path: &str) -> Bytes {
        let s = TcpStream::connect(self.admin).await.expect("connect admin");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .expect("admin handshake");
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "admin")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let res = send.send_request(req).await.expect("admin answer");
        res.into_body().collect().await.expect("body").to_bytes()
    }

    /// The open traffic connections, from the admin listener's `/metrics`.
    async fn open_connections(&self) -> f64 {
        let body = self.admin_get("/metrics").await;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(TRAFFIC_GAUGE)?.trim().parse().ok())
            .expect("the open-connection gauge")
    }

    /// Waits (within [`CLOSED_WITHIN`]) until the gateway holds `n` traffic connections.
    async fn wait_open(&self, n: f64, what: &str) {
        let deadline = Instant::now() + CLOSED_WITHIN;
        loop {
            let open = self.open_connections().await;
            if open == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {open} open connections, not {n}, {CLOSED_WITHIN:?} after a 1 s deadline"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads a request head; `None` when the peer closes first.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.ok()?;
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An upstream for these tests: `/big` answers [`BIG`] bytes, `/drip` six chunks 0.5 s apart,
/// `/ws` a 101 and then echoes the tunnel, anything else `ok`.
async fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                match path.as_str() {
                    "/big" => {
                        let h = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\nconnection: close\r\n\r\n"
                        );
                        if s.write_all(h.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = vec![b'a'; 64 << 10];
                        for _ in 0..BIG / chunk.len() {
                            if s.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    }
                    "/drip" => {
                        let h = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                        if s.write_all(h.as_bytes()).await.is_err() {
                            return;
                        }
                        for _ in 0..6 {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            if s.write_all(b"5\r\ndrop.\r\n").await.is_err() {
                                return;
                            }
                        }
                        let _ = s.write_all(b"0\r\n\r\n").await;
                    }
                    "/ws" => {
                        let res = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                        if s.write_all(res.as_bytes()).await.is_err() {
                            return;
                        }
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                    _ => {
                        let res =
                            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                        let _ = s.write_all(res.as_bytes()).await;
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A TLS connection trusting the dev CA, offering h2 only.
async fn tls_h2(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    common::tls::connect(addr, common::tls::dev_client(&[b"h2"], false)).await
}

/// A GET of `path` on a new HTTP/2 connection whose streams advertise `window` bytes of
/// flow-control window: the response (its body waits for the client to read it) and the
/// connection, which stays open until the gateway closes it.
async fn h2_get<S>(io: S, window: u32, path: &str) -> (hyper::Response<Incoming>, H2Conn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(window)
        .handshake(TokioIo::new(io))
        .await
        .expect("h2 handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(format!("http://gw.test{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let res = tokio::time::timeout(IO, send.send_request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    (
        res,
        H2Conn {
            task: conn,
            _send: send,
        },
    )
}

/// A client HTTP/2 connection: hyper ends it when its sender is dropped, so the sender is kept.
struct H2Conn {
    task: JoinHandle<()>,
    _send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
}

impl H2Conn {
    /// Asserts the gateway closes the connection within [`CLOSED_WITHIN`].
    async fn assert_closed(self, what: &str) {
        tokio::time::timeout(CLOSED_WITHIN, self.task)
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection is still open"))
            .expect("connection task");
    }
}

/// An HTTP/1.1 GET of `path` on a socket whose receive buffer is `rcvbuf` bytes.
async fn h1_get_small_buffer(addr: SocketAddr, rcvbuf: u32, path: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    let mut s = sock.connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s
}

/// Reads until the peer closes (EOF or an error), within `limit`; the bytes read.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<usize> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .ok()
}

// ---------------------------------------------------------------------------------------------
// Clients that take nothing are closed

#[tokio::test]
async fn an_http2_client_with_a_zero_window_is_closed_plain_and_tls() {
    for tls in [false, true] {
        let gw = Gw::start(tls, "").await;
        let (res, conn) = if tls {
            h2_get(tls_h2(gw.addr).await, 0, "/small").await
        } else {
            h2_get(
                TcpStream::connect(gw.addr).await.expect("connect"),
                0,
                "/small",
            )
            .await
        };
        assert_eq!(res.status(), 200, "tls: {tls}");
        // The body never fits a zero window; the client keeps the stream and answers pings.
        conn.assert_closed(&format!("tls: {tls}: a zero-window client"))
            .await;
        drop(res);
        gw.wait_open(0.0, &format!("tls: {tls}: after the zero-window client"))
            .await;
    }
}

#[tokio::test]
async fn an_http1_client_that_never_reads_a_large_response_is_closed() {
    let gw = Gw::start(false, "").await;
    let mut s = h1_get_small_buffer(gw.addr, 4096, "/big").await;
    // Nothing is read until the gateway gave up: it closes its end and the count drops.
    gw.wait_open(0.0, "a client that never reads").await;
    let read = read_to_close(&mut s, IO)
        .await
        .expect("the connection ends once what was buffered is read");
    assert!(read < BIG, "the whole response arrived ({read} bytes)");
}

#[tokio::test]
async fn max_connections_recovers_from_clients_that_take_nothing() {
    let gw = Gw::start(false, "max_connections = 2").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let io = TcpStream::connect(gw.addr).await.expect("connect");
        held.push(h2_get(io, 0, "/small").await);
    }
    let h1 = h1_get_small_buffer(gw.addr, 4096, "/big").await;
    // The cap is reached; a third client waits in the backlog until the stalled ones close.
    let io = TcpStream::connect(gw.addr).await.expect("connect");
    let (res, _conn) = h2_get(io, 65_535, "/small").await;
    assert_eq!(res.status(), 200);
    let body = tokio::time::timeout(IO, res.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"ok");
    for (_, conn) in held {
        conn.assert_closed("a zero-window client at the cap").await;
    }
    drop(h1);
    gw.wait_open(0.0, "after the stalled clients").await;
}

// ---------------------------------------------------------------------------------------------
// Waiting on the upstream, or a client that reads, is never cut

#[tokio::test]
async fn a_slow_streamed_response_to_a_reading_client_is_not_cut() {
    let gw = Gw::start(false, "").await;
    // HTTP/1.1: six chunks over 3 s, three send deadlines.
    let s = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/drip")
        .header("host", "gw.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let res = send.send_request(req).await.expect("answered");
    assert_eq!(res.status(), 200);
    let body = tokio::time::timeout(IO, res.into_body().collect())
        .await
        .expect("body in time")
        .expect("the whole body")
        .to_bytes();
    assert_eq!(&body[..], "drop.".repeat(6).as_bytes(), "HTTP/1.1");
    // HTTP/2, the same.
    let io = TcpStream::connect(gw.addr).await.expect("connect");
    let (res, _conn) = h2_get(io, 65_535, "/drip").await;
    let body = tokio::time::timeout(IO, res.into_body().collect())
        .await
        .expect("body in time")
        .expect("the whole body")
        .to_bytes();
    assert_eq!(&body[..], "drop.".repeat(6).as_bytes(), "HTTP/2");
}

#[tokio::test]
async fn a_websocket_tunnel_idle_past_the_send_deadline_stays_open() {
    let gw = Gw::start(false, "").await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let head = tokio::time::timeout(IO, read_head(&mut s))
        .await
        .expect("answer in time")
        .expect("answer");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.write_all(b"still here").await.expect("write");
    let mut echoed = [0u8; 10];
    tokio::time::timeout(IO, s.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("the tunnel is still open");
    assert_eq!(&echoed, b"still here");
}

#[tokio::test]
async fn a_client_that_reads_slowly_but_steadily_is_not_cut() {
    let gw = Gw::start(false, "").await;
    // HTTP/1.1: a small socket buffer, 16 KiB taken every 0.3 s for 4 s (four deadlines).
    let mut s = h1_get_small_buffer(gw.addr, 16 << 10, "/big").await;
    let mut buf = vec![0u8; 16 << 10];
    let mut total = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = tokio::time::timeout(IO, s.read(&mut buf))
            .await
            .expect("data in time")
            .expect("the connection is still open");
        assert!(n > 0, "closed after {total} bytes read steadily");
        total += n;
    }
    // HTTP/2: a 16 KiB window, the same pace.
    let io = TcpStream::connect(gw.addr).await.expect("connect");
    let (res, conn) = h2_get(io, 16 << 10, "/big").await;
    let mut body = res.into_body();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let frame = tokio::time::timeout(IO, body.frame())
            .await
            .expect("data in time")
            .expect("the stream is still open")
            .expect("a frame");
        assert!(frame.is_data());
    }
    assert!(
        !conn.task.is_finished(),
        "the steady HTTP/2 reader was closed"
    );
}

// ---------------------------------------------------------------------------------------------
// The key

#[tokio::test]
async fn send_timeout_is_validated_and_shown_in_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    for bad in ["0s", "soon"] {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n[limits]\nsend_timeout = \"{bad}\"\n{}\n[[route]]\nname = \"open\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"none\"\n",
            default_issuer()
        );
        std::fs::write(&path, text).expect("write config");
        let err = jwtgate::App::load(&path)
            .err()
            .unwrap_or_else(|| panic!("send_timeout = {bad:?} accepted"))
            .to_string();
        assert!(err.contains("send_timeout"), "{err}");
    }
    let gw = Gw::start(false, "").await;
    let body = gw.admin_get("/config").await;
    let config: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(config["limits"]["send_timeout"], "1s", "{config}");
}

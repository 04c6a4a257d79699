//! The listeners: accept under a connection cap, TLS handshake, protocol sniff, HTTP/1.1 and
//! HTTP/2 on one port, a deadline on every phase in which the client owes bytes, drain on
//! shutdown.
//!
//! Every deadline is `header_read_timeout` (T), read from the live config for each new
//! connection, so a reload applies it to the connections that follow:
//! - the TLS handshake: T from accept;
//! - the first request: its head (or, on HTTP/2, the preface and the first stream's headers)
//!   within T of accept, or of the end of the handshake with TLS. A silent connection or a
//!   partial preface is closed then;
//! - HTTP/1 between requests: hyper's header timer, T from the end of one response until the
//!   next head is whole (a head dribbled byte by byte ends at that deadline, not per byte);
//! - HTTP/2: a connection with no open stream for T gets a GOAWAY, and is dropped if it is still
//!   there another T later; after T of silence the gateway pings, and a peer that does not
//!   answer within T is dropped.
//!
//! The phase in which the gateway owes bytes has its own deadline, `send_timeout` (S): while
//! the connection holds response bytes the client does not take (a socket write that stays
//! blocked, an HTTP/2 body frame waiting for flow-control window), and none has been taken for
//! S, the connection is closed. Waiting on the upstream holds nothing, so it never counts.
//!
//! Nothing else bounds a request in progress: a slow upstream, a streamed response or a
//! WebSocket tunnel runs for as long as the proxy's own timeouts allow.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::tls::TlsState;

/// Header count limit: beyond it hyper answers 431 on HTTP/1, and [`too_many_headers`] does
/// on HTTP/2 (hyper's HTTP/2 server has no count limit of its own).
pub const MAX_HEADERS: usize = 100;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first pause after a failed accept; it doubles up to [`ACCEPT_BACKOFF_MAX`], so a
/// process out of file descriptors waits for some to close instead of spinning.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per listener this often about failed accepts; the rest are counted.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the request path knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP address as text, formatted once per connection for `X-Forwarded-For`
    /// and the access log.
    pub peer_ip: http::HeaderValue,
    /// True when the connection is TLS.
    pub tls: bool,
    /// The client certificate, verified against `client_ca` during the handshake (mTLS).
    pub client_cert: Option<CertificateDer<'static>>,
    /// `X-Forwarded-Client-Cert` for that certificate, built once per connection (hash, PEM,
    /// subject) instead of on every request.
    pub client_cert_header: Option<http::HeaderValue>,
    /// SHA-256 of that certificate's DER, hashed once per connection, for certificate-bound
    /// tokens (RFC 8705 §3: `cnf.x5t#S256`).
    pub client_cert_sha256: Option<[u8; 32]>,
}

impl ConnInfo {
    /// What a connection from `peer` carries to each of its requests.
    pub fn new(
        peer: SocketAddr,
        tls: bool,
        client_cert: Option<CertificateDer<'static>>,
    ) -> ConnInfo {
        // An IP address's text is always a valid header value.
        let peer_ip = http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        let client_cert_header = client_cert
            .as_ref()
            .and_then(crate::proxy::headers::client_cert_value);
        let client_cert_sha256 = client_cert
            .as_ref()
            .map(|c| crate::auth::binding::cert_thumbprint(c.as_ref()));
        ConnInfo {
            peer,
            peer_ip,
            tls,
            client_cert,
            client_cert_header,
            client_cert_sha256,
        }
    }
}

/// What a listener applies to a new connection, read from the live config when it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
}

impl From<&Limits> for ConnLimits {
    fn from(l: &Limits) -> ConnLimits {
        ConnLimits {
            header_read_timeout: l.header_read_timeout,
            send_timeout: l.send_timeout,
            max_header_bytes: l.max_header_bytes,
            max_connections: l.max_connections,
            max_concurrent_streams: l.max_concurrent_streams,
        }
    }
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits::from(&Limits::default())
    }
}

/// Serves the traffic listener until `shutdown` yields a grace period, then closes the
/// listener and lets in-flight requests finish for at most that long.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<TlsState>>,
    shutdown: impl Future<Output = Duration>,
) {
    let state = gateway.state.clone();
    let metrics = gateway.metrics.clone();
    let make = move |info: ConnInfo| {
        let (gw, info) = (gateway.clone(), Arc::new(info));
        move |req| {
            let (gw, info) = (gw.clone(), info.clone());
            // Boxed: hyper keeps the slot for this future for the connection's whole life, so
            // an idle keep-alive connection then holds a pointer instead of the request state.
            Box::pin(async move { gw.handle(req, &info).await })
        }
    };
    let listen = Listen {
        name: "traffic",
        limits: move || ConnLimits::from(&state.load().config.limits),
        metrics: Some(&metrics),
        tls,
    };
    listen.serve(listener, shutdown, make).await;
}

/// Serves a small HTTP service (the admin endpoints, the demo echo upstream) on `listener`
/// until `shutdown`: HTTP/1.1 and h2c, no TLS, no drain, with the limits `limits` reads for
/// each connection and, with `metrics`, the connection metrics labelled `name`.
pub async fn serve_small<F, Fut, L>(
    listener: TcpListener,
    name: &'static str,
    limits: L,
    metrics: Option<&Metrics>,
    shutdown: impl Future<Output = ()>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    L: Fn() -> ConnLimits,
{
    let listen = Listen {
        name,
        limits,
        metrics,
        tls: None,
    };
    let shutdown = async move {
        shutdown.await;
        Duration::ZERO
    };
    listen
        .serve(listener, shutdown, move |_info| handler.clone())
        .await;
}

/// One listener: its name in metrics, where its limits come from, and TLS if any.
struct Listen<'a, L> {
    name: &'static str,
    limits: L,
    metrics: Option<&'a Metrics>,
    tls: Option<Arc<TlsState>>,
}

impl<L: Fn() -> ConnLimits> Listen<'_, L> {
    /// The accept loop: waits below `max_connections` before each accept, pauses after a
    /// failed one, and spawns a task per connection that `make` gives its request handler.
    async fn serve<M, H, Fut, B>(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = Duration>,
        make: M,
    ) where
        M: Fn(ConnInfo) -> H + Send + Sync + 'static,
        H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let name = self.name;
        let open = Arc::new(Open {
            count: AtomicUsize::new(0),
            closed: Notify::new(),
            gauge: self
                .metrics
                .map(|m| m.open_connections.with_label_values(&[name])),
        });
        let accept_errors: Option<IntCounter> = self
            .metrics
            .map(|m| m.accept_errors.with_label_values(&[name]));
        let make = Arc::new(make);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut builders = Arc::new(Builders::new((self.limits)()));
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut log = AcceptLog::default();
        tokio::pin!(shutdown);
        let grace = loop {
            let accepted = tokio::select! {
                grace = &mut shutdown => break grace,
                a = async {
                    open.below(|| (self.limits)().max_connections).await;
                    listener.accept().await
                } => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    a
                }
                Err(e) => {
                    if let Some(c) = &accept_errors {
                        c.inc();
                    }
                    // A client that gave up before its accept costs nothing; anything else
                    // (EMFILE, ENFILE, ENOBUFS) needs time for resources to come back.
                    if is_connection_error(&e) {
                        tracing::debug!(listener = name, error = %e, "accept failed");
                        continue;
                    }
                    log.failed(name, &e);
                    tokio::select! {
                        grace = &mut shutdown => break grace,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let guard = open.admit();
            let limits = (self.limits)();
            if limits != builders.limits {
                builders = Arc::new(Builders::new(limits));
            }
            let conn = Conn {
                builders: builders.clone(),
                make: make.clone(),
                stop: stop_rx.clone(),
            };
            let tls = self.tls.clone();
            tokio::spawn(conn.run(stream, peer, guard, tls));
        };
        drop(listener);
        let _ = stop_tx.send(true);
        if grace.is_zero() {
            return;
        }
        tokio::select! {
            () = open.below(|| 1) => tracing::info!(listener = name, "all connections drained"),
            () = tokio::time::sleep(grace) => tracing::warn!(listener = name, "shutdown grace period over; closing remaining connections"),
        }
    }
}

/// Errors of one connection that the accept call reports: nothing to wait for.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Rate-limits the accept failure log: a process out of file descriptors would otherwise
/// write a line per attempt.
#[derive(Default)]
struct AcceptLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptLog {
    fn failed(&mut self, listener: &'static str, e: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < ACCEPT_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            listener,
            error = %e,
            suppressed = self.suppressed,
            "accept failed; pausing before the next one (out of file descriptors? raise the \
             limit or lower [limits] max_connections; jwtgate_accept_errors_total counts these)"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// A listener's open connections: the count `max_connections` is checked against, and its
/// gauge.
struct Open {
    count: AtomicUsize,
    /// Woken whenever a connection closes: the accept loop waits on it at the cap, the drain
    /// waits on it for zero.
    closed: Notify,
    gauge: Option<IntGauge>,
}

impl Open {
    fn admit(self: &Arc<Self>) -> OpenGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        if let Some(g) = &self.gauge {
            g.inc();
        }
        OpenGuard(self.clone())
    }

    /// Returns once fewer than `max()` connections are open (re-read after each close, so a
    /// reload that raises the cap applies at the next close).
    async fn below(&self, max: impl Fn() -> usize) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.count.load(Ordering::Acquire) < max() {
                return;
            }
            closed.await;
        }
    }
}

/// A connection's place under the cap. Its socket holds it for its whole life, through a
/// WebSocket upgrade too, so the count is of open sockets rather than of hyper connections.
struct OpenGuard(Arc<Open>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.0.gauge {
            g.dec();
        }
        self.0.closed.notify_waiters();
    }
}

/// hyper's builders for one set of limits, rebuilt by the accept loop only when they change.
struct Builders {
    limits: ConnLimits,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: ConnLimits) -> Builders {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // hyper refuses a buffer limit under 8 KiB; the config's minimum is that too.
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(MAX_HEADERS);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.max_concurrent_streams)
            // A ping after T without a frame from the peer; no answer within T drops it. Only
            // silence triggers it: a client reading a download sends WINDOW_UPDATEs.
            .keep_alive_interval(limits.header_read_timeout)
            .keep_alive_timeout(limits.header_read_timeout);
        Builders { limits, h1, h2 }
    }
}

/// What a connection's task needs besides its socket.
struct Conn<M> {
    builders: Arc<Builders>,
    make: Arc<M>,
    /// Turns true when the listener shuts down: finish what is in flight, then close.
    stop: watch::Receiver<bool>,
}

impl<M> Conn<M> {
    async fn run<H, Fut, B>(
        mut self,
        stream: TcpStream,
        peer: SocketAddr,
        open: OpenGuard,
        tls: Option<Arc<TlsState>>,
    ) where
        M: Fn(ConnInfo) -> H,
        H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _ = stream.set_nodelay(true);
        let timeout = self.builders.limits.header_read_timeout;
        match tls {
            None => {
                let info = ConnInfo::new(peer, false, None);
                let deadline = Instant::now() + timeout;
                self.serve(stream, info, open, deadline).await;
            }
            // Boxed: a task is as large as its largest state, and the TLS states (the
            // handshake, the rustls connection) are several KiB that a plain connection,
            // idle for most of its life, should not carry.
            Some(tls) => {
                Box::pin(async move {
                    let handshake = accept_tls(stream, peer, tls, Instant::now() + timeout);
                    let accepted = tokio::select! {
                        a = handshake => a,
                        _ = self.stop.changed() => None,
                    };
                    if let Some((stream, info)) = accepted {
                        let deadline = Instant::now() + timeout;
                        self.serve(stream, info, open, deadline).await;
                    }
                })
                .await;
            }
        }
    }

    /// Reads enough to tell HTTP/2 from HTTP/1 and serves the connection with the right one;
    /// the first request must arrive by `deadline`.
    async fn serve<S, H, Fut, B>(
        &mut self,
        io: S,
        info: ConnInfo,
        open: OpenGuard,
        deadline: Instant,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        M: Fn(ConnInfo) -> H,
        H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let peer = info.peer;
        // hyper-util's automatic builder reads the preface with no deadline: a client that
        // sends nothing, or only part of `PRI * HTTP/2.0`, would be held forever.
        let sniffed = tokio::select! {
            s = tokio::time::timeout_at(deadline, sniff(io)) => s,
            _ = self.stop.changed() => return,
        };
        let (io, prefix, h2) = match sniffed {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "connection failed before a request");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %peer, "no request within header_read_timeout; closing");
                return;
            }
        };
        let sends = Arc::new(Sends::new());
        let io = TokioIo::new(ConnIo {
            io,
            prefix,
            sends: sends.clone(),
            write_held: false,
            _open: open,
        });
        let handler = (self.make)(info);
        let result = if h2 {
            // Boxed: a task is as large as its largest state, and an HTTP/2 connection's is
            // several KiB that every idle HTTP/1 keep-alive connection would otherwise carry.
            Box::pin(self.serve_h2(io, handler, deadline, sends)).await
        } else {
            self.serve_h1(io, handler, deadline, sends).await
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, client = %peer, "connection ended with an error");
        }
    }

    async fn serve_h1<S, H, Fut, B>(
        &mut self,
        io: TokioIo<ConnIo<S>>,
        handler: H,
        deadline: Instant,
        sends: Arc<Sends>,
    ) -> Result<(), hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // hyper's header timer starts when it begins reading a head, which is after the sniff:
        // the first request's deadline counts from accept, so it is kept here.
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let service = service_fn(move |req| {
            flag.store(true, Ordering::Relaxed);
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = self
            .builders
            .h1
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        let first = tokio::time::sleep_until(deadline);
        tokio::pin!(first);
        let stalled = send_stalled(&sends, self.builders.limits.send_timeout);
        tokio::pin!(stalled);
        let (mut awaiting_first, mut stopping) = (true, false);
        loop {
            tokio::select! {
                r = conn.as_mut() => return r,
                () = stalled.as_mut() => {
                    tracing::debug!("the client took no response bytes within send_timeout; closing");
                    return Ok(());
                }
                () = &mut first, if awaiting_first => {
                    if !started.load(Ordering::Relaxed) {
                        tracing::debug!("no request within header_read_timeout; closing");
                        return Ok(());
                    }
                    awaiting_first = false;
                }
                _ = self.stop.changed(), if !stopping => {
                    conn.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
        }
    }

    async fn serve_h2<S, H, Fut, B>(
        &mut self,
        io: TokioIo<ConnIo<S>>,
        handler: H,
        deadline: Instant,
        sends: Arc<Sends>,
    ) -> Result<(), hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let timeout = self.builders.limits.header_read_timeout;
        let streams = Arc::new(Streams::default());
        let (tracked, held) = (streams.clone(), sends.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let stream = StreamGuard::open(tracked.clone());
            let sends = held.clone();
            let fut = (!too_many_headers(req.headers())).then(|| handler(req));
            async move {
                let res = match fut {
                    Some(fut) => fut.await.map(Either::Right),
                    None => headers_too_many().map(Either::Left),
                };
                // The stream counts as open until its response body is sent or dropped.
                Ok::<_, Infallible>(res.map(|body| Tracked::new(body, sends, stream)))
            }
        });
        let conn = self.builders.h2.serve_connection(io, service);
        tokio::pin!(conn);
        let idle = idle_for(&streams, timeout, deadline);
        tokio::pin!(idle);
        // Also ends a stream that keeps the connection from counting as idle only because its
        // body waits for window the client never gives.
        let stalled = send_stalled(&sends, self.builders.limits.send_timeout);
        tokio::pin!(stalled);
        let (mut goaway, mut stopping) = (false, false);
        loop {
            tokio::select! {
                r = conn.as_mut() => return r,
                () = stalled.as_mut() => {
                    tracing::debug!("the client took no response bytes within send_timeout; closing");
                    return Ok(());
                }
                () = idle.as_mut() => {
                    if goaway {
                        tracing::debug!("idle HTTP/2 connection still open after GOAWAY; closing");
                        return Ok(());
                    }
                    conn.as_mut().graceful_shutdown();
                    goaway = true;
                    idle.set(idle_for(&streams, timeout, Instant::now() + timeout));
                }
                _ = self.stop.changed(), if !stopping => {
                    conn.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
        }
    }
}

/// The TLS handshake, by `deadline`; `None` when it fails or times out.
async fn accept_tls(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Arc<TlsState>,
    deadline: Instant,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, ConnInfo)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().server.clone());
    let Ok(Ok(stream)) = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await else {
        tracing::debug!(client = %peer, "TLS handshake failed or timed out");
        return None;
    };
    let client_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let info = ConnInfo::new(peer, true, client_cert);
    Some((stream, info))
}

/// Reads until the bytes either differ from the HTTP/2 preface (HTTP/1) or are all of it
/// (HTTP/2); `None` when the client closes first. What was read is handed back to be read again.
async fn sniff<S: AsyncRead + Unpin>(mut io: S) -> io::Result<Option<(S, Prefix, bool)>> {
    let mut prefix = Prefix {
        buf: [0; 24],
        pos: 0,
        len: 0,
    };
    loop {
        let len = usize::from(prefix.len);
        let n = io.read(&mut prefix.buf[len..]).await?;
        if n == 0 {
            return Ok(None);
        }
        let len = len + n;
        // At most 24: the read fills at most the rest of the buffer.
        prefix.len = len as u8;
        if prefix.buf[..len] != H2_PREFACE[..len] {
            return Ok(Some((io, prefix, false)));
        }
        if len == H2_PREFACE.len() {
            return Ok(Some((io, prefix, true)));
        }
    }
}

/// The bytes the sniff read, inline (an idle connection holds no buffer for them).
struct Prefix {
    buf: [u8; 24],
    pos: u8,
    len: u8,
}

/// A connection's socket: the sniffed bytes first, then the stream; holds the connection's
/// place under `max_connections` until dropped. A write that stays blocked (the client reads
/// nothing) holds response bytes for the send deadline until some are taken.
struct ConnIo<S> {
    io: S,
    prefix: Prefix,
    sends: Arc<Sends>,
    /// True while the last write or flush returned `Pending`.
    write_held: bool,
    _open: OpenGuard,
}

impl<S> ConnIo<S> {
    /// Records a blocked write as held bytes and the next completed one as bytes taken.
    fn track<T>(&mut self, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match (&p, self.write_held) {
            (Poll::Pending, false) => {
                self.write_held = true;
                self.sends.hold();
            }
            (Poll::Ready(_), true) => {
                self.write_held = false;
                self.sends.release();
            }
            _ => {}
        }
        p
    }
}

impl<S> Drop for ConnIo<S> {
    fn drop(&mut self) {
        if self.write_held {
            self.sends.release();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = &mut this.prefix;
        if p.pos < p.len {
            let rest = &p.buf[usize::from(p.pos)..usize::from(p.len)];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            // n <= 24.
            p.pos += n as u8;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.io).poll_write(cx, buf);
        this.track(p)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track(p)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.io).poll_flush(cx);
        this.track(p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.io).poll_shutdown(cx);
        this.track(p)
    }
}

/// The open streams of one HTTP/2 connection, for its idle deadline.
#[derive(Default)]
struct Streams {
    open: AtomicUsize,
    /// Woken when the count leaves or reaches zero (not on every stream under load).
    changed: Notify,
}

/// One open stream: from the request's headers until its response body is sent or dropped.
struct StreamGuard(Arc<Streams>);

impl StreamGuard {
    fn open(streams: Arc<Streams>) -> StreamGuard {
        if streams.open.fetch_add(1, Ordering::AcqRel) == 0 {
            streams.changed.notify_one();
        }
        StreamGuard(streams)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_one();
        }
    }
}

/// Returns once the connection has had no open stream for `timeout`, or none at all by
/// `first` (the connection's first deadline).
async fn idle_for(streams: &Streams, timeout: Duration, first: Instant) {
    let mut deadline = first;
    loop {
        let changed = streams.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if streams.open.load(Ordering::Acquire) == 0 {
            tokio::select! {
                // A stream that opened just as the deadline passed wins: it is activity.
                biased;
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        } else {
            changed.await;
        }
        // Woken by a change: a stream opened or the last one closed just now.
        deadline = Instant::now() + timeout;
    }
}

/// What one connection holds for its client, for the send deadline: how many places hold
/// response bytes the client has not taken, and since when none was taken.
struct Sends {
    /// What `since_ms` counts from.
    base: Instant,
    /// Blocked socket writes and HTTP/2 body frames waiting for window.
    held: AtomicUsize,
    /// Milliseconds from `base` to the last time held bytes were taken, or the count left zero.
    since_ms: AtomicU64,
    /// Woken when the count leaves zero, so no timer runs while nothing is held.
    began: Notify,
}

impl Sends {
    fn new() -> Sends {
        Sends {
            base: Instant::now(),
            held: AtomicUsize::new(0),
            since_ms: AtomicU64::new(0),
            began: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes are now held for the client.
    fn hold(&self) {
        // The start is written before the count leaves zero: the deadline never reads a count
        // above zero with the time of an earlier hold.
        if self.held.load(Ordering::Acquire) == 0 {
            self.since_ms.store(self.now_ms(), Ordering::Release);
        }
        if self.held.fetch_add(1, Ordering::AcqRel) == 0 {
            self.began.notify_one();
        }
    }

    /// Held bytes were taken (or given up with their stream): progress.
    fn release(&self) {
        self.since_ms.store(self.now_ms(), Ordering::Release);
        self.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Returns once the connection has held response bytes for `timeout` without the client
/// taking any of them.
async fn send_stalled(sends: &Sends, timeout: Duration) {
    loop {
        let began = sends.began.notified();
        tokio::pin!(began);
        began.as_mut().enable();
        if sends.held.load(Ordering::Acquire) == 0 {
            began.await;
            continue;
        }
        let since = Duration::from_millis(sends.since_ms.load(Ordering::Acquire));
        let deadline = sends.base + since + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// The largest data frame an HTTP/2 response body hands to hyper at once (h2's default
/// SETTINGS_MAX_FRAME_SIZE). Larger upstream chunks are cut, so a client reading through a
/// small window shows progress at least once per this many bytes.
const SEND_PIECE_BYTES: usize = 16 * 1024;

/// An HTTP/2 response body: keeps its stream counted as open while it is being sent, and holds
/// each data frame it hands to hyper for the send deadline until hyper asks for the next one
/// (which hyper does only once the frame had window to go).
struct Tracked<B> {
    body: B,
    /// What is left of an upstream chunk longer than [`SEND_PIECE_BYTES`].
    rest: Bytes,
    sends: Arc<Sends>,
    /// True from a data frame until the next poll.
    held: bool,
    _stream: StreamGuard,
}

impl<B> Tracked<B> {
    fn new(body: B, sends: Arc<Sends>, stream: StreamGuard) -> Tracked<B> {
        Tracked {
            body,
            rest: Bytes::new(),
            sends,
            held: false,
            _stream: stream,
        }
    }

    /// The next piece of `data` (the rest stays in `rest`), held until hyper polls again.
    fn piece(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > SEND_PIECE_BYTES {
            self.rest = data.split_off(SEND_PIECE_BYTES);
        }
        if !data.is_empty() {
            self.held = true;
            self.sends.hold();
        }
        data
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.held {
            self.sends.release();
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.held {
            this.held = false;
            this.sends.release();
        }
        if !this.rest.is_empty() {
            let rest = std::mem::take(&mut this.rest);
            return Poll::Ready(Some(Ok(Frame::data(this.piece(rest)))));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(this.piece(data))))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            p => p,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut out = SizeHint::new();
        out.set_lower(hint.lower().saturating_add(rest));
        if let Some(upper) = hint.upper() {
            out.set_upper(upper.saturating_add(rest));
        }
        out
    }
}

/// True when a request has more header fields than HTTP/1 admits ([`MAX_HEADERS`]). The
/// crumbs of a split `Cookie` (RFC 9113 §8.2.3) count as the one field HTTP/1 would send.
pub fn too_many_headers(headers: &http::HeaderMap) -> bool {
    let n = headers.len();
    if n <= MAX_HEADERS {
        return false;
    }
    let cookies = headers.get_all(http::header::COOKIE).iter().count();
    n - cookies + usize::from(cookies > 0) > MAX_HEADERS
}

/// The 431 for a request over [`MAX_HEADERS`], as the gateway's other answers look.
fn headers_too_many() -> Response<Full<Bytes>> {
    crate::proxy::answer::json_answer(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request_header_fields_too_large",
        &format!("the request has more than {MAX_HEADERS} header fields"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `idle_for` in its own task, as the connection task would, driven as time moves.
    fn watch(streams: &Arc<Streams>, t: Duration, first: Instant) -> tokio::task::JoinHandle<()> {
        let s = streams.clone();
        tokio::spawn(async move { idle_for(&s, t, first).await })
    }

    /// Whether the task has finished once everything runnable has run (the clock is paused).
    async fn finished(h: &tokio::task::JoinHandle<()>) -> bool {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        h.is_finished()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_for_counts_from_the_last_stream_and_never_while_one_is_open() {
        let t = Duration::from_secs(10);
        let streams = Arc::new(Streams::default());
        // No stream by the first deadline: idle.
        let idle = watch(&streams, t, Instant::now() + Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(2999)).await;
        assert!(!finished(&idle).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(finished(&idle).await);

        // A stream open for 25 s (longer than T) keeps the connection; T after it ends, idle.
        let idle = watch(&streams, t, Instant::now() + t);
        let stream = StreamGuard::open(streams.clone());
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(!finished(&idle).await);
        drop(stream);
        tokio::time::sleep(Duration::from_millis(9999)).await;
        assert!(!finished(&idle).await);
        // A short stream in between starts the count again.
        drop(StreamGuard::open(streams.clone()));
        tokio::time::sleep(Duration::from_millis(9999)).await;
        assert!(!finished(&idle).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(finished(&idle).await);
    }

    #[tokio::test(start_paused = true)]
    async fn send_stalled_counts_from_the_last_bytes_taken_and_only_while_some_are_held() {
        let t = Duration::from_secs(10);
        let sends = Arc::new(Sends::new());
        let s = sends.clone();
        let stalled = tokio::spawn(async move { send_stalled(&s, t).await });
        // Nothing held: no deadline, however long.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!finished(&stalled).await);
        // Held, then taken just before T: the count starts again from the taking.
        sends.hold();
        tokio::time::sleep(Duration::from_millis(9999)).await;
        sends.release();
        sends.hold();
        tokio::time::sleep(Duration::from_millis(9999)).await;
        assert!(!finished(&stalled).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(finished(&stalled).await);
    }

    #[test]
    fn header_count_counts_cookie_crumbs_once() {
        let mut h = http::HeaderMap::new();
        for i in 0..MAX_HEADERS {
            h.append(
                http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).expect("name"),
                http::HeaderValue::from_static("v"),
            );
        }
        assert!(!too_many_headers(&h));
        for _ in 0..50 {
            h.append(http::header::COOKIE, http::HeaderValue::from_static("a=b"));
        }
        // 100 fields and one Cookie field: one too many.
        assert!(too_many_headers(&h));
        h.remove("x-h0");
        assert!(!too_many_headers(&h));
        h.append("x-h0", http::HeaderValue::from_static("v"));
        h.append("x-h0", http::HeaderValue::from_static("w"));
        assert!(too_many_headers(&h));
    }
}

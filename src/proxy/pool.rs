//! The HTTP/1 upstream connection pool: one per route target (scheme, authority, TLS
//! settings), found by the route's index, so a request costs no hashing of its authority, no
//! spawned task and no channel of its own (hyper-util's legacy client hashed the pool key three
//! times and spawned a task per request). Each connection has one task, which drives it and
//! closes it once it has been idle for [`PoolSettings::idle_timeout`].
//!
//! A request goes out on the most recently returned idle connection (LIFO: the others age out),
//! or on a new one. A connection goes back to the pool when its response body has been read to
//! the end ([`ResponseBody`]'s drop), never after a `101` (the socket now belongs to the tunnel)
//! and never beyond [`PoolSettings::max_idle`]. A request is retried only when hyper hands it
//! back unsent (the upstream had closed the idle connection before any byte of it was written):
//! bodies are streamed, so a request that started going out is never sent twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::answer::UpstreamKind;
use super::body::IdleTimeout;

/// How the pool of one upstream behaves.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// A connection idle this long is closed (checked at most a quarter of it late).
    pub idle_timeout: Duration,
    /// Idle connections kept; a connection returned to a full pool is closed.
    pub max_idle: usize,
    /// The bound on opening the TCP connection (`[limits] upstream_connect_timeout`).
    pub connect_timeout: Duration,
}

/// Why a request did not get an upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no TCP connection to the upstream within {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS handshake with the upstream failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("the upstream exchange failed: {0}")]
    Http(#[source] hyper::Error),
    /// From the HTTP/2 client (hyper-util's multiplexed one).
    #[error("the upstream exchange failed: {0}")]
    Http2(#[source] hyper_util::client::legacy::Error),
}

impl UpstreamError {
    /// The answer's and the `kind` label's classification. A connect timeout is `timeout`
    /// (504), as it was with hyper-util's connector.
    pub fn kind(&self) -> UpstreamKind {
        match self {
            UpstreamError::Connect(_) => UpstreamKind::Connect,
            UpstreamError::ConnectTimeout(_) => UpstreamKind::Timeout,
            UpstreamError::Tls(_) => UpstreamKind::Tls,
            UpstreamError::Http(e) => match super::upstream::kind_in_chain(e) {
                Some(kind) => kind,
                None => UpstreamKind::Reset,
            },
            UpstreamError::Http2(e) => super::upstream::classify(e),
        }
    }
}

/// `idle_since` values that are not times.
const BUSY: u64 = u64::MAX;
const CLOSED: u64 = u64::MAX - 1;

/// One pooled connection: its sender and the state its task watches.
struct Conn<B> {
    sender: http1::SendRequest<B>,
    /// Milliseconds since the pool's epoch at which it went idle, or [`BUSY`] / [`CLOSED`].
    /// Taking a connection and expiring it are compare-exchanges on it, so exactly one wins.
    idle_since: Arc<AtomicU64>,
}

/// Where a pool connects.
struct Target {
    /// The host as `TcpStream::connect` wants it (an IPv6 literal without brackets).
    host: String,
    port: u16,
    /// The `Host` header for requests that arrive without one (HTTP/1.0).
    host_header: HeaderValue,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// The connections to one upstream. `B` is the request body: the client's, streamed
/// ([`IdleTimeout`]); tests send their own.
pub struct Pool<B = IdleTimeout> {
    target: Target,
    settings: PoolSettings,
    epoch: Instant,
    /// Idle connections, newest last. Held for one push or pop, never across an await.
    idle: Mutex<Vec<Conn<B>>>,
}

impl<B> std::fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .field("tls", &self.target.tls.is_some())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A pool cannot be made for this upstream.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the upstream scheme {0} is neither http nor https")]
    Scheme(String),
    #[error("the upstream host {0:?} is not a valid TLS server name")]
    ServerName(String),
}

impl<B> Pool<B> {
    /// The number of idle connections held (for tests and the debugger).
    pub fn idle_len(&self) -> usize {
        self.idle.lock().map_or(0, |v| v.len())
    }

    /// Returns a connection whose exchange completed.
    fn put(&self, conn: Conn<B>) {
        if conn.sender.is_closed() {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        conn.idle_since.store(now, Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.settings.max_idle {
                idle.push(conn);
            }
        }
    }
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A pool for `scheme://authority`; `tls` is the client config for https (its ALPN is set
    /// to `http/1.1` here) and unused for http.
    pub fn new(
        scheme: &Scheme,
        authority: &Authority,
        tls: Option<Arc<ClientConfig>>,
        settings: PoolSettings,
    ) -> Result<Pool<B>, PoolError> {
        let https = if *scheme == Scheme::HTTPS {
            true
        } else if *scheme == Scheme::HTTP {
            false
        } else {
            return Err(PoolError::Scheme(scheme.to_string()));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, tls) {
            (true, Some(config)) => {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| PoolError::ServerName(host.clone()))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| PoolError::ServerName(authority.to_string()))?;
        Ok(Pool {
            target: Target {
                host,
                port,
                host_header,
                tls,
            },
            settings,
            epoch: Instant::now(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` (absolute-form or origin-form target) on an idle connection or a new one.
    pub async fn request(
        self: &Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<ResponseBody<B>>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        // HTTP/1 wants origin-form; the Host header is the route's (set by the header plan)
        // or, for an HTTP/1.0 request without one, the upstream's authority.
        if parts.uri.authority().is_some() {
            parts.uri = match parts.uri.path_and_query() {
                Some(pq) => Uri::from(pq.clone()),
                None => Uri::from_static("/"),
            };
        }
        if !parts.headers.contains_key(header::HOST) {
            parts
                .headers
                .insert(header::HOST, self.target.host_header.clone());
        }
        let mut req = Request::from_parts(parts, body);
        loop {
            let (mut conn, reused) = match self.checkout().await {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            match conn.sender.try_send_request(req).await {
                Ok(res) => {
                    let back = (res.status() != http::StatusCode::SWITCHING_PROTOCOLS)
                        .then(|| (self.clone(), conn));
                    return Ok(res.map(|inner| ResponseBody::new(inner, back)));
                }
                Err(mut e) => match e.take_message() {
                    // Not a byte of it was written: the upstream had closed this idle
                    // connection. Another idle one or a new one gets it.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    /// The newest idle connection that is still open and ready.
    async fn checkout(&self) -> Option<Conn<B>> {
        loop {
            let mut conn = self.idle.lock().ok()?.pop()?;
            let since = conn.idle_since.load(Ordering::Acquire);
            if since == CLOSED
                || conn
                    .idle_since
                    .compare_exchange(since, BUSY, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue; // expired by its task meanwhile
            }
            if conn.sender.is_closed() {
                continue;
            }
            // Usually ready at once; right after the previous response's last byte the
            // connection's task may not have marked it ready yet.
            if conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Opens a connection and starts its task.
    async fn connect(&self) -> Result<Conn<B>, UpstreamError> {
        let t = &self.target;
        let tcp = match tokio::time::timeout(
            self.settings.connect_timeout,
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        {
            Err(_) => return Err(UpstreamError::ConnectTimeout(self.settings.connect_timeout)),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Ok(Ok(tcp)) => tcp,
        };
        // Small request heads must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        match &t.tls {
            None => self.handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                    match super::upstream::kind_in_chain(&e) {
                        Some(UpstreamKind::Tls) => UpstreamError::Tls(e),
                        _ => UpstreamError::Connect(e),
                    }
                })?;
                self.handshake(TokioIo::new(tls)).await
            }
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<Conn<B>, UpstreamError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Http)?;
        let idle_since = Arc::new(AtomicU64::new(BUSY));
        let expiry = expire(idle_since.clone(), self.epoch, self.settings.idle_timeout);
        tokio::spawn(async move {
            tokio::select! {
                r = conn.with_upgrades() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "upstream connection closed with an error");
                    }
                }
                () = expiry => {}
            }
        });
        Ok(Conn { sender, idle_since })
    }
}

/// Resolves once the connection has been idle for `idle` and was marked closed (so no
/// checkout can take it any more); the connection's task then drops it, closing the socket.
async fn expire(idle_since: Arc<AtomicU64>, epoch: Instant, idle: Duration) {
    loop {
        let since = idle_since.load(Ordering::Acquire);
        let wake = if since == BUSY {
            Instant::now() + idle / 4
        } else {
            let deadline = epoch + Duration::from_millis(since) + idle;
            if Instant::now() >= deadline {
                if idle_since
                    .compare_exchange(since, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
                continue; // taken meanwhile
            }
            deadline
        };
        tokio::time::sleep_until(wake).await;
    }
}

/// An upstream response body; an HTTP/1 connection goes back to its pool when the body has
/// been read to its end and is dropped.
pub struct ResponseBody<B = IdleTimeout> {
    inner: Incoming,
    back: Option<(Arc<Pool<B>>, Conn<B>)>,
    done: bool,
}

impl<B> ResponseBody<B> {
    fn new(inner: Incoming, back: Option<(Arc<Pool<B>>, Conn<B>)>) -> ResponseBody<B> {
        ResponseBody {
            inner,
            back,
            done: false,
        }
    }

    /// A body that returns no connection (the HTTP/2 client's).
    pub fn unpooled(inner: Incoming) -> ResponseBody<B> {
        ResponseBody::new(inner, None)
    }
}

impl<B> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.done = true,
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ResponseBody<B> {
    fn drop(&mut self) {
        if let Some((pool, conn)) = self.back.take() {
            // A body dropped before its end leaves unread bytes on the connection: hyper
            // closes it when its sender goes, which dropping `conn` does.
            if self.done || self.inner.is_end_stream() {
                pool.put(conn);
            }
        }
    }
}

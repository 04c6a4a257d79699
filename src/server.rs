//! The traffic listener: accept, TLS handshake, HTTP/1.1 and HTTP/2 on one port, drain on
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

use crate::proxy::Gateway;
use crate::tls::TlsState;

/// Header count limit; beyond it hyper answers 431.
const MAX_HEADERS: usize = 100;

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
        ConnInfo {
            peer,
            peer_ip,
            tls,
            client_cert,
        }
    }
}

/// Serves `listener` until `shutdown` yields a grace period, then closes the listener and lets
/// in-flight requests finish for at most that long.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<TlsState>>,
    shutdown: impl Future<Output = Duration>,
) {
    let limits = gateway.state.load().config.limits.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let grace = loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            grace = &mut shutdown => break grace,
        };
        let _ = stream.set_nodelay(true);
        let (gw, builder, watcher, tls) = (
            gateway.clone(),
            builder.clone(),
            graceful.watcher(),
            tls.clone(),
        );
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => {
                    let info = ConnInfo::new(peer, false, None);
                    serve_conn(TokioIo::new(stream), info, gw, &builder, watcher).await;
                }
                // Boxed: a task is as large as its largest state, and the TLS states (the
                // handshake, the rustls connection) are several KiB that a plain connection,
                // idle for most of its life, should not carry.
                Some(tls) => {
                    let conn = accept_tls(stream, peer, tls, handshake_timeout);
                    Box::pin(async move {
                        if let Some((stream, info)) = conn.await {
                            serve_conn(TokioIo::new(stream), info, gw, &builder, watcher).await;
                        }
                    })
                    .await
                }
            }
        });
    };
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// The TLS handshake, within `timeout`; `None` when it fails or times out.
async fn accept_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Arc<TlsState>,
    timeout: Duration,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ConnInfo,
)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.load_full());
    let Ok(Ok(stream)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await else {
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

async fn serve_conn<S>(
    io: TokioIo<S>,
    info: ConnInfo,
    gw: Arc<Gateway>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let peer = info.peer;
    let service = service_fn(move |req| {
        let (gw, info) = (gw.clone(), info.clone());
        // Boxed: hyper keeps the slot for this future for the connection's whole life, so an
        // idle keep-alive connection then holds a pointer instead of the whole request state.
        Box::pin(async move { Ok::<_, std::convert::Infallible>(gw.handle(req, &info).await) })
    });
    let conn = watcher.watch(
        builder
            .serve_connection_with_upgrades(io, service)
            .into_owned(),
    );
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, client = %peer, "connection ended with an error");
    }
}

/// Serves a small HTTP service (the admin endpoints, the demo echo upstream) on `listener`
/// until `shutdown`: HTTP/1.1 and h2c, no TLS, no drain.
pub async fn serve_plain<F, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    handler: F,
) where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            s = listener.accept() => match s {
                Ok((s, _)) => s,
                Err(_) => {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! jwtgate: a reverse proxy that verifies a JWT on every protected request and forwards its
//! claims to the upstream as plain headers.
#![forbid(unsafe_code)]

pub mod alg;
pub mod auth;
pub mod check;
pub mod config;
pub mod devtoken;
pub mod echo;
pub mod keys;
pub mod path;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod state;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

pub use config::Config;
pub use state::Snapshot;

/// Serves traffic on `listener` with `snapshot` until `shutdown` completes, then drains.
/// The caller binds, so tests can listen on port 0.
pub async fn run(
    listener: TcpListener,
    snapshot: Snapshot,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tls::TlsError> {
    let tls = tls::TlsState::new(&snapshot.config.listen)?.map(Arc::new);
    serve_shared(
        listener,
        Arc::new(ArcSwap::from_pointee(snapshot)),
        tls,
        shutdown,
    )
    .await;
    Ok(())
}

/// Like [`run`], with a snapshot and TLS state the caller keeps to reload them.
pub async fn serve_shared(
    listener: TcpListener,
    state: state::Shared,
    tls: Option<Arc<tls::TlsState>>,
    shutdown: impl Future<Output = ()>,
) {
    let gateway = Arc::new(proxy::Gateway::new(state));
    server::serve(listener, gateway, tls, shutdown).await;
}

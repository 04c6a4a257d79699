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

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

pub use config::Config;
pub use state::Snapshot;

/// Serves traffic on `listener` with `snapshot` until `shutdown` completes, then drains.
/// The caller binds, so tests can listen on port 0.
pub async fn run(listener: TcpListener, snapshot: Snapshot, shutdown: impl Future<Output = ()>) {
    serve_shared(
        listener,
        Arc::new(ArcSwap::from_pointee(snapshot)),
        shutdown,
    )
    .await;
}

/// Like [`run`], with a snapshot the caller can replace (config reload).
pub async fn serve_shared(
    listener: TcpListener,
    state: state::Shared,
    shutdown: impl Future<Output = ()>,
) {
    let proto = if state.load().config.listen.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let gateway = Arc::new(proxy::Gateway::new(state, proto));
    server::serve(listener, gateway, shutdown).await;
}

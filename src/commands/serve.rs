//! `jwtgate run` and `jwtgate demo`: bind, serve, reload on SIGHUP, drain on SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use super::{runtime, CommandError};
use crate::App;

/// The target of this module's events: the binary's, as when this code lived in `main.rs`, so
/// `JWTGATE_LOG` filters written for it keep working.
const TARGET: &str = "jwtgate";

/// SIGINT drains too, but for at most this long: someone is waiting at a terminal.
const SIGINT_GRACE: Duration = Duration::from_secs(2);

/// Serves the config at `config` until SIGTERM or SIGINT; with `demo`, also starts the echo
/// upstream and prints commands to try.
pub fn serve(config: &Path, demo: bool) -> Result<(), CommandError> {
    let rt = runtime()?;
    rt.block_on(serve_async(config, demo))?;
    Ok(())
}

async fn serve_async(config_path: &Path, demo: bool) -> anyhow::Result<()> {
    // SIGHUP's default action kills the process: take it over before anything else.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let app = App::load(config_path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let app = Arc::new(app);
    let snapshot = app.state.load_full();
    let addr = snapshot.config.listen.addr;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the traffic listener on {addr}"))?;
    let admin = match &snapshot.config.admin {
        Some(a) => Some(
            TcpListener::bind(a.addr)
                .await
                .with_context(|| format!("binding the admin listener on {}", a.addr))?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if demo {
        let local = listener.local_addr()?;
        super::demo::start(&snapshot, config_path, local, stop_rx.clone()).await?;
    }
    let reloader = app.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(target: TARGET, "SIGHUP: reloading");
            reloader.request_reload();
        }
    });
    let tls = snapshot.config.listen.tls.is_some();
    tracing::info!(target: TARGET, %addr, tls, "jwtgate serving");
    drop(snapshot);
    let state = app.state.clone();
    let shutdown = async move {
        let sigint = tokio::select! {
            _ = term.recv() => { tracing::info!(target: TARGET, "SIGTERM: draining"); false }
            _ = int.recv() => { tracing::info!(target: TARGET, "SIGINT: draining"); true }
        };
        let _ = stop_tx.send(true);
        // The grace period of the config in effect now: a reload may have changed it.
        let grace = state.load().config.limits.shutdown_grace;
        if sigint {
            grace.min(SIGINT_GRACE)
        } else {
            grace
        }
    };
    let listeners = crate::Listeners {
        traffic: listener,
        admin,
    };
    crate::run(listeners, app, shutdown).await;
    tracing::info!(target: TARGET, "stopped");
    Ok(())
}

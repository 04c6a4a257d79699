//! jwtgate: a reverse proxy that verifies a JWT on every protected request and forwards its
//! claims to the upstream as plain headers.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alg;
pub mod anomaly;
pub mod assertion;
pub mod auth;
pub mod check;
pub mod commands;
pub mod config;
pub mod denylist;
pub mod devtoken;
pub mod echo;
pub mod explain;
pub mod files;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod replay;
pub mod routes;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod tls;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::Config;
pub use state::Snapshot;

use admin::Health;
use config::ConfigErrors;
use metrics::Metrics;
use tls::TlsState;

/// How long startup waits for remote issuers' first fetch before serving anyway (their routes
/// answer 503 until keys arrive, and `/readyz` stays 503).
const FIRST_FETCH_WAIT: Duration = Duration::from_secs(10);

/// The sockets a gateway serves, bound by the caller (so tests can listen on port 0).
#[derive(Debug)]
pub struct Listeners {
    /// The traffic listener.
    pub traffic: TcpListener,
    /// The admin listener (`/healthz`, `/readyz`, `/config`, `/metrics`), if any.
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(traffic: TcpListener) -> Listeners {
        Listeners {
            traffic,
            admin: None,
        }
    }
}

/// How long a shutdown lets in-flight requests finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// `[limits] shutdown_grace` of the config in effect when the shutdown starts.
    Configured,
    /// Exactly this long.
    Grace(Duration),
}

impl From<()> for Drain {
    fn from((): ()) -> Drain {
        Drain::Configured
    }
}

impl From<Duration> for Drain {
    fn from(grace: Duration) -> Drain {
        Drain::Grace(grace)
    }
}

/// Serves `app` on `listeners` until `shutdown` completes, then drains for the grace period it
/// yields (`()` for the configured `shutdown_grace`). The caller binds, so tests can listen on
/// port 0, and keeps `app` to reload it, swap certificates or read its metrics.
pub async fn run<D: Into<Drain>>(
    listeners: impl Into<Listeners>,
    app: Arc<App>,
    shutdown: impl Future<Output = D>,
) {
    let Listeners { traffic, admin } = listeners.into();
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(l) = admin {
        let a = admin::Admin {
            state: app.state.clone(),
            metrics: app.metrics.clone(),
            health: app.health.clone(),
            running: app.running.clone(),
        };
        tokio::spawn(admin::serve(l, a, async move {
            let _ = admin_stopped.await;
        }));
    }
    let ready = app.clone();
    let ready_task = tokio::spawn(async move { ready.become_ready().await });
    let watcher = app.clone();
    let watch_task = tokio::spawn(async move { reload::watch(watcher).await });
    let denylist_task = tokio::spawn(app.denylist.clone().run());
    let gateway = Arc::new(
        proxy::Gateway::new(app.state.clone(), app.metrics.clone(), app.store.clone())
            .with_denylist(app.denylist.clone()),
    );
    let (health, state) = (app.health.clone(), app.state.clone());
    server::serve(traffic, gateway, app.tls.clone(), async move {
        let grace = match shutdown.await.into() {
            Drain::Configured => state.load().config.limits.shutdown_grace,
            Drain::Grace(grace) => grace,
        };
        health.set_draining();
        grace
    })
    .await;
    ready_task.abort();
    watch_task.abort();
    denylist_task.abort();
    let _ = stop_admin.send(());
}

/// Why a loaded config could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("[redis]: {0}")]
    Store(#[from] store::StoreError),
}

/// Everything a running gateway holds: the live snapshot, certificates, metrics, readiness.
pub struct App {
    /// The config file, re-read by path on every reload.
    pub config_path: Option<PathBuf>,
    pub state: state::Shared,
    pub metrics: Metrics,
    pub tls: Option<Arc<TlsState>>,
    /// The shared Redis from `[redis]`, opened once at start (a changed URL waits for a restart).
    pub store: Option<Arc<store::Store>>,
    pub health: Arc<Health>,
    /// The settings only a restart applies, as they were when this process started.
    pub running: admin::RestartOnly,
    pub(crate) reload_now: Notify,
    /// A hash of the files the running config was loaded from, taken before reading them, so
    /// a change made while loading (or before the watcher starts) is still seen.
    pub(crate) loaded_files: std::sync::atomic::AtomicU64,
    /// Revoked tokens, subjects and sessions (the file's and Redis's), followed while serving.
    pub denylist: Arc<denylist::Denylist>,
}

impl App {
    /// Wraps a built snapshot; loads the listener's certificates.
    pub fn new(
        snapshot: Snapshot,
        metrics: Metrics,
        config_path: Option<PathBuf>,
    ) -> Result<App, AppError> {
        let tls = TlsState::new(&snapshot.config.listen)?.map(Arc::new);
        let store = match &snapshot.config.redis {
            Some(r) => Some(store::Store::open(r, &metrics)?),
            None => None,
        };
        let state: state::Shared = Arc::new(ArcSwap::from_pointee(snapshot));
        let app = App {
            config_path,
            running: admin::RestartOnly::of(&state.load().config),
            denylist: Arc::new(
                denylist::Denylist::new(state.clone(), metrics.clone()).with_store(store.clone()),
            ),
            store,
            state,
            metrics,
            tls,
            health: Arc::new(Health::default()),
            reload_now: Notify::new(),
            loaded_files: std::sync::atomic::AtomicU64::new(0),
        };
        app.metrics
            .config_last_reload_success
            .set(unix_now() as f64);
        app.state.load().publish_key_metrics(None, &app.metrics);
        app.record_cert_expiry();
        Ok(app)
    }

    /// Loads a config file whole: config, keys, certificates; every error located.
    pub fn load(path: &Path) -> Result<App, ConfigErrors> {
        let metrics = Metrics::new();
        let before = reload::files_fingerprint(path);
        let snapshot = Snapshot::build_from(Config::load(path)?, None, &metrics)?;
        let tls_loc = snapshot.config.listen.tls_loc;
        let located = |e: AppError, snap: &Config| match e {
            AppError::Tls(e) => {
                ConfigErrors(vec![snap.error(tls_loc, format!("[listen] tls: {e}"))])
            }
            AppError::Store(e) => ConfigErrors(vec![
                snap.error(config::Loc { line: 1, col: 1 }, format!("[redis]: {e}"))
            ]),
        };
        let config = snapshot.config.clone();
        let app =
            App::new(snapshot, metrics, Some(path.to_owned())).map_err(|e| located(e, &config))?;
        app.loaded_files
            .store(before, std::sync::atomic::Ordering::SeqCst);
        Ok(app)
    }

    /// Asks the reload task to re-read everything now (SIGHUP).
    pub fn request_reload(&self) {
        self.reload_now.notify_one();
    }

    /// Re-reads the config and its key files; applied whole or not at all.
    pub fn reload_config(&self) -> Result<(), ConfigErrors> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let current = self.state.load_full();
        let result =
            Config::load(path).and_then(|c| Snapshot::build_from(c, Some(&current), &self.metrics));
        match result {
            Ok(s) => {
                // Everything else applies now (connection limits are read per connection,
                // `shutdown_grace` when the shutdown starts); these wait for a restart. One
                // warning per reload that changes any of them.
                let pending = self.running.pending(&s.config);
                if pending != self.running.pending(&current.config) && !pending.is_empty() {
                    let keys: Vec<_> = pending.iter().map(|(k, _, _)| *k).collect();
                    tracing::warn!(
                        keys = %keys.join(", "),
                        "these settings changed but apply only at the next start; /config shows them under restart_pending"
                    );
                }
                s.publish_key_metrics(Some(&current), &self.metrics);
                self.state.store(Arc::new(s));
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics
                    .config_last_reload_success
                    .set(unix_now() as f64);
                self.record_cert_expiry();
                tracing::info!(config = %path.display(), "config reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(config = %path.display(), errors = %e, "config reload refused; the previous config keeps serving");
                Err(e)
            }
        }
    }

    /// Re-reads certificate files when they changed; a bad pair keeps the last good one.
    pub fn reload_tls(&self) {
        let Some(tls) = &self.tls else { return };
        match tls.reload(&self.state.load().config.listen) {
            Ok(true) => {
                self.metrics
                    .tls_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.record_cert_expiry();
                tracing::info!("TLS certificates reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                self.metrics
                    .tls_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(error = %e, "TLS certificate reload refused; the previous certificates keep serving");
            }
        }
    }

    /// Sets the expiry gauge for the listener's certificates and for every CA bundle the
    /// config names (the listener's `client_ca`, the routes' `upstream_ca`): an expiring CA
    /// breaks mTLS or an upstream as surely as an expiring certificate.
    fn record_cert_expiry(&self) {
        let set = |path: &Path, not_after: i64| {
            self.metrics
                .tls_cert_expiry
                .with_label_values(&[&path.display().to_string()])
                .set(not_after as f64);
        };
        if let Some(tls) = &self.tls {
            for (path, not_after) in tls.current().certs.expiries() {
                set(path, not_after);
            }
        }
        let config = &self.state.load().config;
        let client_ca = config
            .listen
            .tls
            .as_ref()
            .and_then(|t| t.client_ca.as_deref());
        let upstream_cas = config
            .routes
            .iter()
            .filter_map(|r| r.upstream_ca.as_deref());
        let cas: std::collections::BTreeSet<&Path> =
            client_ca.into_iter().chain(upstream_cas).collect();
        for ca in cas {
            // Loading already refused an unreadable CA; one that breaks later keeps its last value.
            if let Ok(not_after) = tls::bundle_expiry(ca) {
                set(ca, not_after);
            }
        }
    }

    /// Releases the readiness latch once every issuer a route needs has keys.
    async fn become_ready(&self) {
        let first: Vec<_> = self.state.load().remote_keys().cloned().collect();
        for r in first {
            r.first_attempt(FIRST_FETCH_WAIT).await;
        }
        loop {
            // The denylist too: a replica that has not loaded every revocation once would let
            // revoked tokens through.
            if self.state.load().keys_ready() && self.denylist.ready() {
                self.health.set_ready();
                tracing::info!("ready");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The current Unix time in whole seconds (0 before 1970, saturating far in the future).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix seconds as the stores keep them (denylist, replay cache): a time before 1970 is 0.
pub fn unix_secs(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

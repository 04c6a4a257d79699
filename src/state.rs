//! The one immutable snapshot the request path reads: routes, issuers with their keys, and the
//! precomputed header plan. Built and validated whole, then swapped in with one store.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::{Issuer, IssuerKeys};
use crate::config::{AuthMode, Config, ConfigErrors, RouteConfig};
use crate::keys::remote::RemoteKeys;
use crate::keys::{load_static, KeySet};
use crate::metrics::Metrics;
use crate::proxy::headers::HeaderPlan;
use crate::proxy::upstream::Clients;
use crate::routes::RouteTable;

/// Everything a request needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub issuers: Vec<Issuer>,
    pub table: RouteTable,
    pub headers: HeaderPlan,
    /// Pooled upstream clients, per route.
    pub clients: Clients,
    /// Unique per snapshot: cached verifications are only reused within the snapshot that
    /// made them, so a reload that changes an issuer's rules can never be bypassed by the cache.
    pub generation: u64,
    /// Entries of JWKS files that were left out, for `check` to print.
    pub skipped_keys: Vec<String>,
    /// `[session]`'s keyring, client credentials and derived issuers.
    pub session: Option<crate::session::Runtime>,
    /// `[assertion]`: the signer of identity assertions, with its JWKS.
    pub assertion: Option<Arc<crate::assertion::Signer>>,
    /// Per route index: its `[route.rate_limit]`, kept across reloads while unchanged.
    pub limiters: Vec<Option<Arc<crate::ratelimit::RouteLimiter>>>,
    /// The GCRA states of every route's limiter, one bounded store for the process.
    pub rate_store: crate::ratelimit::BoundedStore,
    /// Per route, its metric series resolved once (index = route index).
    pub route_metrics: Vec<RouteMetrics>,
}

/// A route's per-request series, resolved when the snapshot is built, so recording a request
/// hashes no label values (a `with_label_values` lookup hashes every label and takes a lock).
#[derive(Debug)]
pub struct RouteMetrics {
    pub duration: prometheus::Histogram,
    /// `jwtgate_requests_total` for the codes answered most: the gateway's own and the
    /// upstream's common successes, each created on its first answer (an upstream's codes
    /// appear only once answered).
    codes: [(u16, std::sync::OnceLock<prometheus::IntCounter>); 14],
    /// `jwtgate_rate_limited_total` of a route with `[route.rate_limit]`.
    pub rate_limited: Option<prometheus::IntCounter>,
}

/// The status codes whose series [`RouteMetrics`] keeps a handle to.
const HOT_CODES: [u16; 14] = [
    200, 201, 204, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504, 302,
];

impl RouteMetrics {
    fn new(route: &RouteConfig, metrics: &Metrics) -> RouteMetrics {
        let name = route.name.as_str();
        RouteMetrics {
            duration: metrics.request_duration.with_label_values(&[name]),
            codes: HOT_CODES.map(|c| (c, std::sync::OnceLock::new())),
            // Created with the route, so a limited route's series exists from the first scrape.
            rate_limited: route
                .rate_limit
                .is_some()
                .then(|| metrics.rate_limited.with_label_values(&[name])),
        }
    }

    /// Counts one answer of `route` with `status`.
    pub fn count(&self, metrics: &Metrics, route: &str, status: http::StatusCode) {
        let code = status.as_u16();
        match self.codes.iter().find(|(c, _)| *c == code) {
            Some((_, handle)) => handle
                .get_or_init(|| {
                    metrics
                        .requests
                        .with_label_values(&[route, status.as_str()])
                })
                .inc(),
            None => metrics
                .requests
                .with_label_values(&[route, status.as_str()])
                .inc(),
        }
    }
}

/// The `kind` label values of `jwtgate_upstream_errors_total`.
const UPSTREAM_KINDS: [&str; 4] = ["connect", "timeout", "reset", "tls"];

/// The status codes the gateway itself may answer on a route with `auth`: a malformed request
/// (400), an unreachable or slow upstream (502, 504), and where tokens are verified a refused
/// token (401), an unmet requirement (403) and keys not loaded yet (503); session routes also
/// send browsers to log in (302).
pub fn gateway_codes(auth: AuthMode) -> &'static [&'static str] {
    match auth {
        AuthMode::None => &["400", "502", "504"],
        AuthMode::Required | AuthMode::Optional => &["400", "401", "403", "502", "503", "504"],
        // A browser without a session is sent to log in (302).
        AuthMode::Session => &["302", "400", "401", "403", "502", "503", "504"],
    }
}

static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The live snapshot; requests `load()` it once each.
pub type Shared = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// Loads every local key, starts fetching remote ones, and compiles the routes; all
    /// errors at once. Needs a Tokio runtime (remote issuers spawn their refresh task).
    pub fn build(config: Config) -> Result<Snapshot, ConfigErrors> {
        Snapshot::build_from(config, None, &Metrics::new())
    }

    /// Like [`Snapshot::build`], keeping from `previous` whatever did not change: remote
    /// issuers' keys (no gap, no refetch storm) and warm upstream connection pools.
    pub fn build_from(
        config: Config,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Vec::new();
        let mut issuers = Vec::with_capacity(config.issuers.len());
        let mut skipped_keys = Vec::new();
        for ic in &config.issuers {
            let keys = match load_static(ic) {
                Ok(Some((keys, skipped))) => {
                    skipped_keys.extend(
                        skipped
                            .into_iter()
                            .map(|s| format!("issuer {:?}: {s}", ic.name)),
                    );
                    IssuerKeys::Static(Arc::new(keys))
                }
                Ok(None) => {
                    let reused = previous.and_then(|p| {
                        p.issuers.iter().find_map(|i| match &i.keys {
                            IssuerKeys::Remote(r) if r.serves(ic) => Some(r.clone()),
                            _ => None,
                        })
                    });
                    IssuerKeys::Remote(
                        reused.unwrap_or_else(|| Arc::new(RemoteKeys::start(ic, metrics.clone()))),
                    )
                }
                Err(e) => {
                    errors.push(config.error(ic.source_loc, format!("issuer {:?}: {e}", ic.name)));
                    IssuerKeys::Static(Arc::new(KeySet::default()))
                }
            };
            // Sender-constrained tokens: the DPoP settings and the nonce key, read once here.
            let mut dpop = crate::auth::dpop::IssuerDpop::new(ic);
            match crate::auth::dpop::nonce_key(ic) {
                Ok(key) => dpop.nonce = key,
                Err(e) => {
                    errors.push(config.error(ic.source_loc, format!("issuer {:?}: {e}", ic.name)))
                }
            }
            issuers.push(Issuer {
                config: ic.clone(),
                keys,
                dpop,
            });
        }
        let clients = match Clients::build(&config, previous.map(|p| &p.clients)) {
            Ok(c) => c,
            Err((route, e)) => {
                errors.push(config.error(
                    config.routes[route].loc,
                    format!("route {:?}: upstream TLS: {e}", config.routes[route].name),
                ));
                Clients::default()
            }
        };
        let session = match crate::session::Runtime::build(&config, &issuers) {
            Ok(s) => s,
            Err(e) => {
                let loc = config
                    .session
                    .as_ref()
                    .map_or(Default::default(), |s| s.loc);
                errors.push(config.error(loc, e.to_string()));
                None
            }
        };
        // Identity assertions and rate limits: keys loaded now (a bad key refuses the config),
        // limiters of unchanged routes kept with their states.
        let assertion = config.assertion.as_ref().and_then(|a| {
            crate::assertion::Signer::load(a)
                .map(Arc::new)
                .map_err(|e| errors.push(config.error(a.keys_loc, e.to_string())))
                .ok()
        });
        let rate_store = previous.map_or_else(
            || crate::ratelimit::BoundedStore::new(crate::ratelimit::MAX_KEYS),
            |p| p.rate_store.clone(),
        );
        let old_limiters: std::collections::HashMap<&str, &Arc<crate::ratelimit::RouteLimiter>> =
            previous.map_or_else(Default::default, |p| {
                p.config
                    .routes
                    .iter()
                    .zip(&p.limiters)
                    .filter_map(|(r, l)| Some((r.name.as_str(), l.as_ref()?)))
                    .collect()
            });
        let limiters = config
            .routes
            .iter()
            .map(|r| {
                let l = r.rate_limit.as_ref()?;
                Some(match old_limiters.get(r.name.as_str()) {
                    Some(old) if old.same(l) => Arc::clone(old),
                    _ => Arc::new(crate::ratelimit::RouteLimiter::new(&r.name, l, &rate_store)),
                })
            })
            .collect();
        drop(old_limiters);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let table = RouteTable::new(&config.routes);
        let headers = HeaderPlan::new(&config);
        let route_metrics = config
            .routes
            .iter()
            .map(|r| RouteMetrics::new(r, metrics))
            .collect();
        // With [anomaly], each issuer's theft-signal series exists from the first scrape.
        if config.anomaly.is_some() {
            for i in &config.issuers {
                metrics.token_anomalies.with_label_values(&[&i.name]);
            }
        }
        Ok(Snapshot {
            config,
            issuers,
            table,
            headers,
            clients,
            generation: NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            skipped_keys,
            session,
            assertion,
            limiters,
            rate_store,
            route_metrics,
        })
    }

    /// Publishes the per-issuer key gauges once this snapshot is the live one: static key
    /// counts are set, and issuers that `previous` had but this one has not are removed.
    /// Every series whose labels the config makes known exists from the first scrape (at 0
    /// until something happens): per issuer `jwtgate_keys_loaded`,
    /// `jwtgate_key_refresh_total{result=success|failure}` (static issuers too: they never
    /// fetch) and `jwtgate_key_refresh_last_success_timestamp_seconds` (a static issuer's is
    /// the time its keys were loaded); `jwtgate_config_reloads_total{result=success|failure}`
    /// (and `jwtgate_tls_reloads_total` with TLS);
    /// per route `jwtgate_request_duration_seconds`, `jwtgate_upstream_errors_total` for each
    /// kind and `jwtgate_requests_total` for each code the gateway itself answers on it
    /// ([`gateway_codes`]), and for routes that verify tokens `jwtgate_auth_failures_total`
    /// for each reason. Other codes (the upstream's) appear with their first answer. The
    /// per-route series of a route that `previous` had and this one has not are removed.
    pub fn publish_key_metrics(&self, previous: Option<&Snapshot>, metrics: &Metrics) {
        for i in &self.issuers {
            let name = i.config.name.as_str();
            for result in ["success", "failure"] {
                metrics.key_refresh.with_label_values(&[name, result]);
            }
            let loaded = metrics.keys_loaded.with_label_values(&[name]);
            let last_success = metrics.key_refresh_last_success.with_label_values(&[name]);
            if let IssuerKeys::Static(k) = &i.keys {
                loaded.set(k.len() as i64);
                last_success.set(crate::unix_now() as f64);
            }
        }
        for result in ["success", "failure"] {
            metrics.config_reloads.with_label_values(&[result]);
            if self.config.listen.tls.is_some() {
                metrics.tls_reloads.with_label_values(&[result]);
            }
        }
        // Theft signals (issue 20): per issuer from the first scrape once `[anomaly]` is set.
        if self.config.anomaly.is_some() {
            for i in &self.issuers {
                metrics.token_anomalies.with_label_values(&[&i.config.name]);
            }
        }
        for r in &self.config.routes {
            let route = r.name.as_str();
            metrics.request_duration.with_label_values(&[route]);
            for code in gateway_codes(r.auth) {
                metrics.requests.with_label_values(&[route, code]);
            }
            for kind in UPSTREAM_KINDS {
                metrics.upstream_errors.with_label_values(&[route, kind]);
            }
            if r.rate_limit.is_some() {
                metrics.rate_limited.with_label_values(&[route]);
            }
            if r.auth != AuthMode::None {
                for reason in crate::auth::Reason::ALL {
                    metrics
                        .auth_failures
                        .with_label_values(&[route, reason.as_str()]);
                }
            }
        }
        // A set, not a scan per old route: a reload of 100,000 routes stays linear.
        let current: std::collections::HashSet<&str> =
            self.config.routes.iter().map(|r| r.name.as_str()).collect();
        for old in previous.map_or(&[][..], |p| &p.config.routes[..]) {
            let route = old.name.as_str();
            if current.contains(route) {
                continue;
            }
            let _ = metrics.request_duration.remove_label_values(&[route]);
            let _ = metrics.rate_limited.remove_label_values(&[route]);
            for code in gateway_codes(old.auth) {
                let _ = metrics.requests.remove_label_values(&[route, code]);
            }
            for kind in UPSTREAM_KINDS {
                let _ = metrics.upstream_errors.remove_label_values(&[route, kind]);
            }
            for reason in crate::auth::Reason::ALL {
                let _ = metrics
                    .auth_failures
                    .remove_label_values(&[route, reason.as_str()]);
            }
        }
        for old in previous.map_or(&[][..], |p| &p.issuers[..]) {
            let name = old.config.name.as_str();
            if !self.issuers.iter().any(|i| i.config.name == name) {
                let _ = metrics.keys_loaded.remove_label_values(&[name]);
                let _ = metrics
                    .key_refresh_last_success
                    .remove_label_values(&[name]);
                let _ = metrics.token_anomalies.remove_label_values(&[name]);
                for result in ["success", "failure"] {
                    let _ = metrics.key_refresh.remove_label_values(&[name, result]);
                }
            }
        }
    }

    /// True when every issuer that a route needs has keys (the readiness condition).
    pub fn keys_ready(&self) -> bool {
        self.config
            .routes
            .iter()
            .filter(|r| r.auth != AuthMode::None)
            .flat_map(|r| r.issuers.iter())
            .all(|&i| self.issuers[i].keys.current().is_some())
    }

    /// Remote issuers, for waiting on their first fetch.
    pub fn remote_keys(&self) -> impl Iterator<Item = &Arc<RemoteKeys>> {
        self.issuers.iter().filter_map(|i| match &i.keys {
            IssuerKeys::Remote(r) => Some(r),
            IssuerKeys::Static(_) => None,
        })
    }
}

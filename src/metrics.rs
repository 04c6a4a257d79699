//! Prometheus metrics: an owned registry passed to whoever records, never a global.
//! Labels carry route names, issuer names, file paths from the config and fixed reason sets,
//! never a token, subject, kid or raw request path.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for a proxy: the gateway's own work is tens of microseconds, upstreams take
/// milliseconds to seconds.
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric jwtgate exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub auth_failures: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub keys_loaded: IntGaugeVec,
    pub key_refresh: IntCounterVec,
    pub key_refresh_last_success: GaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: Gauge,
    pub tls_cert_expiry: GaugeVec,
    pub tls_reloads: IntCounterVec,
    pub in_flight: IntGauge,
    pub token_cache: IntCounterVec,
    /// Open client connections, by listener (traffic, admin).
    pub open_connections: IntGaugeVec,
    /// Failed accepts (EMFILE and the like), by listener.
    pub accept_errors: IntCounterVec,
    /// `jwtgate_sessions_total{event}`: browser session events (login, refresh, logout, ...).
    pub sessions: IntCounterVec,
    /// Requests refused by a route's rate limit.
    pub rate_limited: IntCounterVec,
    /// Token-theft signals (`[anomaly]`), by issuer name.
    pub token_anomalies: IntCounterVec,
    /// The shared store's metrics, registered by [`Metrics::register_redis`] only where
    /// `[redis]` is set (a gateway without Redis shows no Redis series to alert on).
    pub redis: RedisMetrics,
    /// Denylist entries held, by kind (jti, sub, sid).
    pub denylist_entries: IntGaugeVec,
    /// Seconds since the last successful Redis read of the denylist (0 without Redis).
    pub denylist_staleness: Gauge,
    /// Lines of the `[denylist] file` skipped as invalid, as last read.
    pub denylist_skipped_lines: IntGauge,
}

/// `jwtgate_redis_up` and `jwtgate_redis_errors_total{op}`.
#[derive(Clone)]
pub struct RedisMetrics {
    pub up: IntGauge,
    pub errors: IntCounterVec,
    registered: std::sync::Arc<std::sync::Once>,
}

/// The listeners that connection metrics are labelled with.
pub const LISTENERS: [&str; 2] = ["traffic", "admin"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates every metric in a new registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let requests = counter(
            "jwtgate_requests_total",
            "Requests answered, by route and status code.",
            &["route", "code"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "jwtgate_request_duration_seconds",
                "Time from request to response headers, by route.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("unique metric");
        let auth_failures = counter(
            "jwtgate_auth_failures_total",
            "Requests refused by authentication or authorization, by route and reason.",
            &["route", "reason"],
        );
        let upstream_errors = counter(
            "jwtgate_upstream_errors_total",
            "Upstream failures, by route and kind (connect, timeout, reset, tls).",
            &["route", "kind"],
        );
        let keys_loaded = IntGaugeVec::new(
            Opts::new("jwtgate_keys_loaded", "Verification keys held, by issuer."),
            &["issuer"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(keys_loaded.clone()))
            .expect("unique metric");
        let key_refresh = counter(
            "jwtgate_key_refresh_total",
            "JWKS fetches, by issuer and result (success, failure).",
            &["issuer", "result"],
        );
        let key_refresh_last_success = gauge(
            "jwtgate_key_refresh_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS fetch, by issuer.",
            &["issuer"],
        );
        let config_reloads = counter(
            "jwtgate_config_reloads_total",
            "Config reloads, by result (success, failure).",
            &["result"],
        );
        let config_last_reload_success = Gauge::new(
            "jwtgate_config_last_reload_success_timestamp_seconds",
            "Unix time the running config was loaded.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(config_last_reload_success.clone()))
            .expect("unique metric");
        let tls_cert_expiry = gauge(
            "jwtgate_tls_cert_expiry_timestamp_seconds",
            "notAfter of each served certificate and the earliest of each CA bundle the config names (client_ca, upstream_ca), by configured file path.",
            &["cert"],
        );
        let tls_reloads = counter(
            "jwtgate_tls_reloads_total",
            "Certificate reloads, by result (success, failure).",
            &["result"],
        );
        let in_flight = IntGauge::new("jwtgate_requests_in_flight", "Requests being handled now.")
            .expect("valid metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric");
        let token_cache = counter(
            "jwtgate_token_cache_total",
            "Verified-token cache lookups, by result (hit, miss).",
            &["result"],
        );
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "jwtgate_open_connections",
                "Client connections open now, by listener (traffic, admin).",
            ),
            &["listener"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(open_connections.clone()))
            .expect("unique metric");
        let accept_errors = counter(
            "jwtgate_accept_errors_total",
            "Failed accepts (such as too many open files), by listener (traffic, admin).",
            &["listener"],
        );
        let rate_limited = counter(
            "jwtgate_rate_limited_total",
            "Requests answered 429 by a route's rate limit, by route.",
            &["route"],
        );
        let token_anomalies = counter(
            "jwtgate_token_anomalies_total",
            "Tokens seen from more client addresses than [anomaly] max_addresses within its window, by issuer.",
            &["issuer"],
        );
        // Both listeners' series exist from the first scrape.
        for l in LISTENERS {
            open_connections.with_label_values(&[l]).set(0);
            accept_errors.with_label_values(&[l]).reset();
        }
        let sessions = counter(
            "jwtgate_sessions_total",
            "Browser session events: login, refresh, refresh_failed, logout, backchannel_logout, too_large.",
            &["event"],
        );
        for e in crate::session::EVENTS {
            sessions.with_label_values(&[e]).reset();
        }
        let denylist_entries = IntGaugeVec::new(
            Opts::new(
                "jwtgate_denylist_entries",
                "Denylist entries held, by kind (jti, sub, sid).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(denylist_entries.clone()))
            .expect("unique metric");
        let denylist_staleness = Gauge::new(
            "jwtgate_denylist_staleness_seconds",
            "Seconds since the last successful Redis read of the denylist (0 without Redis).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(denylist_staleness.clone()))
            .expect("unique metric");
        let denylist_skipped_lines = IntGauge::new(
            "jwtgate_denylist_skipped_lines",
            "Lines of the [denylist] file skipped as invalid, as last read (each is logged with its number).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(denylist_skipped_lines.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "jwtgate_build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(build_info))
            .expect("unique metric");
        for drops in [
            &crate::logging::sink::ACCESS_DROPPED,
            &crate::logging::sink::EVENTS_DROPPED,
        ] {
            registry
                .register(Box::new(IntCounter::clone(drops)))
                .expect("unique metric");
        }
        // process_start_time_seconds (restarts), CPU, memory and open files, the series every
        // Prometheus user expects; read from /proc at scrape time (Linux only).
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Metrics {
            registry,
            requests,
            request_duration,
            auth_failures,
            upstream_errors,
            keys_loaded,
            key_refresh,
            key_refresh_last_success,
            config_reloads,
            config_last_reload_success,
            tls_cert_expiry,
            tls_reloads,
            in_flight,
            token_cache,
            open_connections,
            accept_errors,
            sessions,
            rate_limited,
            token_anomalies,
            denylist_entries,
            denylist_staleness,
            denylist_skipped_lines,
            redis: RedisMetrics {
                up: IntGauge::new(
                    "jwtgate_redis_up",
                    "1 while the last call to the shared Redis succeeded, else 0.",
                )
                .expect("valid metric"),
                errors: IntCounterVec::new(
                    Opts::new(
                        "jwtgate_redis_errors_total",
                        "Failed or timed-out Redis calls, by operation.",
                    ),
                    &["op"],
                )
                .expect("valid metric"),
                registered: std::sync::Arc::new(std::sync::Once::new()),
            },
        }
    }

    /// Adds the Redis series to the registry (once, however often it is called).
    pub fn register_redis(&self) {
        self.redis.registered.call_once(|| {
            for c in [
                Box::new(self.redis.up.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(self.redis.errors.clone()),
            ] {
                self.registry.register(c).expect("unique metric");
            }
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

//! The admin listener, separate from traffic: `/healthz`, `/readyz`, `/config`, `/metrics`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{Config, HostMatch, KeySource};
use crate::metrics::Metrics;
use crate::server::ConnLimits;
use crate::state::Shared;

/// Readiness: a latch released once the config is loaded, the listeners are bound and every
/// issuer a route needs has keys; it stays released on last-good keys, and draining ends it.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Releases the latch.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks the process as draining: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// What `/readyz` says.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }
}

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    pub state: Shared,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// The settings only a restart applies, as this process runs them.
    pub running: RestartOnly,
}

/// The settings a reload cannot apply, as a process started with them runs them: the
/// listeners are bound and the token cache sized once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartOnly {
    pub listen_addr: std::net::SocketAddr,
    pub tls: bool,
    pub admin_addr: Option<std::net::SocketAddr>,
    pub token_cache_entries: usize,
    /// `[redis]` URL, redacted: the store is opened once.
    pub redis: Option<String>,
}

impl RestartOnly {
    /// What a process started with `c` runs.
    pub fn of(c: &Config) -> RestartOnly {
        RestartOnly {
            listen_addr: c.listen.addr,
            tls: c.listen.tls.is_some(),
            admin_addr: c.admin.as_ref().map(|a| a.addr),
            token_cache_entries: c.limits.token_cache_entries,
            redis: c.redis.as_ref().map(|r| r.redacted()),
        }
    }

    /// The keys whose value in `c` differs from the running one: `(key, in effect, configured)`.
    pub fn pending(&self, c: &Config) -> Vec<(&'static str, serde_json::Value, serde_json::Value)> {
        let now = RestartOnly::of(c);
        let addr = |a: Option<std::net::SocketAddr>| json!(a.map(|a| a.to_string()));
        let mut out = Vec::new();
        if now.listen_addr != self.listen_addr {
            out.push((
                "listen.addr",
                json!(self.listen_addr.to_string()),
                json!(now.listen_addr.to_string()),
            ));
        }
        if now.tls != self.tls {
            out.push(("listen.tls", json!(self.tls), json!(now.tls)));
        }
        if now.admin_addr != self.admin_addr {
            out.push(("admin.addr", addr(self.admin_addr), addr(now.admin_addr)));
        }
        if now.token_cache_entries != self.token_cache_entries {
            out.push((
                "limits.token_cache_entries",
                json!(self.token_cache_entries),
                json!(now.token_cache_entries),
            ));
        }
        if now.redis != self.redis {
            out.push(("redis.url", json!(self.redis), json!(now.redis)));
        }
        out
    }
}

/// Serves the admin endpoints until `shutdown` completes, under the traffic listener's
/// connection limits (header timeout, header size, `max_connections`) read from the live config.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()>) {
    let state = admin.state.clone();
    let metrics = admin.metrics.clone();
    crate::server::serve_small(
        listener,
        "admin",
        move || ConnLimits::from(&state.load().config.limits),
        Some(&metrics),
        shutdown,
        move |req| {
            let res = admin.answer(&req);
            async move { res }
        },
    )
    .await;
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => {
                if self.health.is_ready() {
                    text(StatusCode::OK, "text/plain", "ready\n".into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "not ready\n".into(),
                    )
                }
            }
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            // The identity-assertion keys, for backends to verify what the gateway signs.
            "/.well-known/jwks.json" => match &self.state.load().assertion {
                Some(signer) => {
                    let mut res = text(StatusCode::OK, "application/jwk-set+json", String::new());
                    *res.body_mut() = Full::new(signer.jwks());
                    res
                }
                None => text(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "no [assertion] is configured\n".into(),
                ),
            },
            "/config" => text(
                StatusCode::OK,
                "application/json",
                effective_config(&self.state.load().config, &self.running).to_string(),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "try /healthz /readyz /config /metrics\n".into(),
            ),
        }
    }
}

/// The running config as JSON: the last config loaded, and under `restart_pending` each
/// setting whose new value waits for a restart, with the value `in_effect`. It holds no
/// secret: HMAC secrets are named by their variable or file, never read into the config, and
/// that is all this shows.
pub fn effective_config(c: &Config, running: &RestartOnly) -> serde_json::Value {
    let issuers: Vec<_> = c
        .issuers
        .iter()
        .map(|i| {
            let (kind, value) = match &i.source {
                KeySource::JwksUrl(u) => ("jwks_url", json!(u)),
                KeySource::DiscoveryUrl(u) => ("discovery_url", json!(u)),
                KeySource::JwksFile(f) => ("jwks_file", json!(f)),
                KeySource::PemFiles(fs) => ("keys", json!(fs)),
                KeySource::HmacEnv(v) => ("hmac_secret_env", json!(v)),
                KeySource::HmacFile(f) => ("hmac_secret_file", json!(f)),
            };
            json!({
                "name": i.name,
                "issuer": i.issuer,
                "audiences": i.audiences,
                "algorithms": i.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                kind: value,
                "leeway": humantime::format_duration(i.leeway).to_string(),
                "refresh": humantime::format_duration(i.refresh).to_string(),
                "typ": i.typ,
                // Sender-constrained tokens; the nonce key is named, never shown.
                "dpop_algorithms": i.dpop.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                "dpop_max_age": humantime::format_duration(i.dpop.max_age).to_string(),
                "dpop_nonce": i.dpop.nonce,
                "dpop_nonce_key_env": i.dpop.nonce_key_env,
            })
        })
        .collect();
    let routes: Vec<_> = c
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "host": r.host.as_ref().map(|h| match h {
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Wildcard(s) => format!("*{s}"),
                }),
                "path_prefix": r.path_prefix,
                "methods": r.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                "upstream": r.upstream.url,
                "auth": r.auth.as_str(),
                "issuers": r.issuers.iter().map(|&i| c.issuers[i].name.as_str()).collect::<Vec<_>>(),
                "require": r.require.iter().map(|q| (q.claim.as_str().to_owned(), json!(q.values))).collect::<serde_json::Map<_, _>>(),
                "forward_token": r.forward_token,
                "websocket": r.websocket,
                "upstream_ca": r.upstream_ca,
                "upstream_http2": r.upstream_http2,
                "token_query": r.token_query,
                "token_cookie": r.token_cookie,
                "claim_headers": r.claim_headers.iter().map(|(h, p)| (h.as_str().to_owned(), json!(p.as_str()))).collect::<serde_json::Map<_, _>>(),
                "assertion": r.assertion.as_ref().map(|a| json!({"audience": a.audience, "claims": a.claims})),
                "cors": r.cors.as_ref().map(|c| json!({
                    "allow_origins": if c.any_origin { vec!["*".to_owned()] } else { c.allow_origins.clone() },
                    "allow_methods": c.allow_methods_value.as_ref().and_then(|v| v.to_str().ok()),
                    "allow_headers": c.allow_headers,
                    "allow_credentials": c.allow_credentials,
                    "max_age": c.max_age.as_ref().and_then(|v| v.to_str().ok()),
                })),
                "rate_limit": r.rate_limit.as_ref().map(|l| json!({"key": l.key.as_str(), "rate": l.rate, "burst": l.burst})),
                "max_auth_age": r.step_up.as_ref().and_then(|s| s.max_auth_age).map(|d| humantime::format_duration(d).to_string()),
                "acr_values": r.step_up.as_ref().map(|s| &s.acr_values).filter(|a| !a.is_empty()),
                "one_time": r.one_time,
                "response_headers": r.response_headers.iter().map(|(h, v)| (h.as_str().to_owned(), json!(String::from_utf8_lossy(v.as_bytes())))).collect::<serde_json::Map<_, _>>(),
                "require_binding": r.require_binding,
            })
        })
        .collect();
    let l = &c.limits;
    json!({
        "file": c.path,
        "listen": {
            "addr": c.listen.addr.to_string(),
            "tls": c.listen.tls.as_ref().map(|t| json!({"cert": t.cert, "key": t.key, "client_ca": t.client_ca, "client_auth": t.client_ca.as_ref().map(|_| if t.client_auth_optional { "optional" } else { "required" })})),
            "certificates": c.listen.certificates.iter().map(|x| json!({"cert": x.cert, "key": x.key})).collect::<Vec<_>>(),
            "trusted_proxies": c.listen.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "strip_headers": c.listen.strip_headers,
            "forward_client_cert": c.listen.forward_client_cert,
        },
        "admin": c.admin.as_ref().map(|a| json!({"addr": a.addr.to_string()})),
        "limits": {
            "max_token_bytes": l.max_token_bytes,
            "max_header_bytes": l.max_header_bytes,
            "header_read_timeout": humantime::format_duration(l.header_read_timeout).to_string(),
            "body_read_timeout": humantime::format_duration(l.body_read_timeout).to_string(),
            "send_timeout": humantime::format_duration(l.send_timeout).to_string(),
            "token_cache_entries": l.token_cache_entries,
            "upstream_connect_timeout": humantime::format_duration(l.upstream_connect_timeout).to_string(),
            "upstream_timeout": humantime::format_duration(l.upstream_timeout).to_string(),
            "shutdown_grace": humantime::format_duration(l.shutdown_grace).to_string(),
            "max_connections": l.max_connections,
            "max_concurrent_streams": l.max_concurrent_streams,
        },
        "redis": c.redis.as_ref().map(|r| json!({"url": r.redacted(), "url_env": r.url_env})),
        "restart_pending": running
            .pending(c)
            .into_iter()
            .map(|(k, in_effect, configured)| {
                (k.to_owned(), json!({"in_effect": in_effect, "configured": configured}))
            })
            .collect::<serde_json::Map<_, _>>(),
        "issuers": issuers,
        "routes": routes,
        "assertion": c.assertion.as_ref().map(|a| json!({
            "keys": a.keys,
            "issuer": a.issuer,
            "ttl": humantime::format_duration(a.ttl).to_string(),
            "header": a.header.as_str(),
        })),
        "anomaly": c.anomaly.as_ref().map(|a| json!({
            "max_addresses": a.max_addresses,
            "window": humantime::format_duration(a.window).to_string(),
            "action": a.action.as_str(),
        })),
        "denylist": c.denylist.as_ref().map(|d| json!({
            "file": d.file,
            "max_staleness": d.max_staleness.map(|m| humantime::format_duration(m).to_string()),
        })),
    })
}

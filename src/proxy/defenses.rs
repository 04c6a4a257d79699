//! The request path's part of SPEC "Step-up, one-time tokens, theft signals, security
//! headers": after a token is verified, the theft signal; after the route's requirements, the
//! step-up check and the one-time use of its `jti`; on every answer of a route, its
//! `response_headers`.

use http::HeaderMap;
use serde_json::Value;

use super::{Gateway, ProxyError};
use crate::anomaly::{Sighting, Verdict};
use crate::auth::{self, AuthError};
use crate::config::RouteConfig;
use crate::replay::WhenDown;
use crate::server::ConnInfo;
use crate::state::Snapshot;

impl Gateway {
    /// `[anomaly]`: records where a verified token was used from; with `action = "refuse"` a
    /// flagged token is refused. Runs on every route that verified a token, before its
    /// requirements, so a thief's refused attempts count too.
    pub(super) fn check_anomaly(
        &self,
        snap: &Snapshot,
        v: &auth::Verified,
        token: &str,
        conn: &ConnInfo,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<(), ProxyError> {
        let Some(cfg) = &snap.config.anomaly else {
            return Ok(());
        };
        let issuer = &snap.issuers[v.issuer].config;
        let sighting = Sighting {
            token,
            addr: snap.headers.client_addr(conn.peer.ip(), headers),
            until: exp_until(&v.claims, issuer.leeway.as_secs()),
            issuer: &issuer.name,
            jti: v.claims.get("jti").and_then(Value::as_str),
            sub: v.claims.get("sub").and_then(Value::as_str),
        };
        match self.anomalies.observe(cfg, &sighting, now) {
            Verdict::Pass => Ok(()),
            Verdict::Refuse => Err(AuthError::Anomaly.into()),
        }
    }

    /// The route's step-up requirements (RFC 9470), on every request (cache hits included).
    pub(super) fn check_step_up(
        &self,
        snap: &Snapshot,
        route: &RouteConfig,
        v: &auth::Verified,
        now: i64,
    ) -> Result<(), ProxyError> {
        if let Some(step_up) = &route.step_up {
            let leeway = snap.issuers[v.issuer].config.leeway;
            step_up
                .check(&v.claims, leeway, now)
                .map_err(|f| AuthError::StepUp(Box::new(f)))?;
        }
        Ok(())
    }

    /// `one_time`: the token's `jti` is used up. Last of all checks (after the rate limit),
    /// so a token refused for any other reason never uses up its `jti`.
    pub(super) async fn check_one_time(
        &self,
        snap: &Snapshot,
        route: &RouteConfig,
        v: &auth::Verified,
    ) -> Result<(), ProxyError> {
        if !route.one_time {
            return Ok(());
        }
        let issuer = &snap.issuers[v.issuer].config;
        let Some(jti) = v.claims.get("jti").and_then(Value::as_str) else {
            return Err(AuthError::NoJti.into());
        };
        let until = exp_until(&v.claims, issuer.leeway.as_secs());
        self.use_once(&issuer.issuer, jti, until).await
    }
}

/// The token's `exp` plus the issuer's leeway, in Unix seconds: until then a replay or a
/// flagged token must still be recognised. (`exp` is a checked number on a verified token.)
fn exp_until(claims: &serde_json::Map<String, Value>, leeway_secs: u64) -> i64 {
    let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
    (exp.ceil() as i64).saturating_add(leeway_secs as i64)
}

/// Sets the route's `response_headers` on an answer, replacing values of the same names.
pub(super) fn apply_response_headers(route: &RouteConfig, res: &mut HeaderMap) {
    for (name, value) in &route.response_headers {
        res.insert(name.clone(), value.clone());
    }
}

impl Gateway {
    /// Uses up `jti` of the issuer `iss` until `until` (Unix seconds): the first use passes, a
    /// replay is 401 `replayed`. The namespace is the issuer's `iss`, so every `one_time` route
    /// shares it (and every replica, through Redis) and a reload that renames the issuer
    /// forgets nothing. While Redis cannot answer, 503: a replay must never pass.
    async fn use_once(&self, iss: &str, jti: &str, until: i64) -> Result<(), ProxyError> {
        let namespace = format!("once:{iss}");
        let until = crate::unix_secs(until);
        match self
            .replay
            .first_use(&namespace, jti, until, WhenDown::Refuse)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthError::Replayed.into()),
            Err(e) => {
                // Debug: the store logs and counts its own outage (jwtgate_redis_up, errors).
                tracing::debug!(error = %e, "one_time route answered 503: the replay cache cannot decide");
                Err(ProxyError::ReplayUnavailable {
                    retry_after_secs: REPLAY_RETRY_AFTER_SECS,
                })
            }
        }
    }
}

/// `Retry-After` of a `one_time` route while the replay cache cannot decide: the store's
/// calls are bounded to half a second and it reconnects by itself, so a second is a fair
/// first retry.
pub(super) const REPLAY_RETRY_AFTER_SECS: u64 = 1;

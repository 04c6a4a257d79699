//! The seeds' remaining defenses (SPEC "Step-up, one-time tokens, theft signals, security
//! headers"): a route's `max_auth_age`, `acr_values`, `one_time` and `response_headers`, and
//! the `[anomaly]` section.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use toml::Spanned;

use super::Validator;
use crate::auth::stepup::StepUp;
use crate::config::raw::{RawAnomaly, RawRoute};
use crate::config::{AnomalyAction, AnomalyConfig, AuthMode};

/// Response headers a route may not set: they frame the message or the connection, carry the
/// gateway's own answer (its challenge, its request id, its retry hint), or are per-request
/// answers of other features (cookies, CORS, rate limits), which one fixed value would break.
/// Lower case.
const RESERVED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-type",
    "content-encoding",
    "content-range",
    "set-cookie",
    "www-authenticate",
    "x-request-id",
    "retry-after",
    "location",
    "ratelimit",
    "ratelimit-policy",
];

/// Defaults of `[anomaly]` (SPEC).
const DEFAULT_MAX_ADDRESSES: usize = 3;
const DEFAULT_ANOMALY_WINDOW: Duration = Duration::from_secs(600);
/// The most addresses per token `max_addresses` may allow: each tracked token holds up to
/// `max_addresses + 1` of them, and the tracker's memory bound counts on it.
pub const MAX_ANOMALY_ADDRESSES: usize = 16;

/// A route's step-up, one-time and response header settings, validated.
pub(super) struct RouteDefenses {
    pub step_up: Option<StepUp>,
    pub one_time: bool,
    pub response_headers: HeaderMap,
}

impl Validator<'_> {
    /// `max_auth_age`, `acr_values`, `one_time` and `response_headers` of route `name`.
    pub(super) fn route_defenses(
        &mut self,
        r: &RawRoute,
        name: &str,
        auth: AuthMode,
    ) -> RouteDefenses {
        let max_auth_age = r.max_auth_age.as_ref().map(|a| {
            let d = self.duration(&Some(a.clone()), "max_auth_age", Duration::from_secs(1));
            if d < Duration::from_secs(1) {
                self.error(a, format!("route {name:?}: max_auth_age must be at least 1s (auth_time and max_age count whole seconds)"));
            }
            d
        });
        let acr_values = r.acr_values.as_ref().map(|list| {
            if list.get_ref().is_empty() {
                self.error(list, format!("route {name:?}: acr_values must not be empty (leave it out to accept any acr)"));
            }
            for v in list.get_ref() {
                let s = v.get_ref();
                // Sent space-separated inside a quoted challenge parameter (RFC 9470 §3) and a
                // login URL: a space, quote, backslash or control character would change the list.
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
                    self.error(v, format!("route {name:?}: acr value {s:?} must be non-empty visible ASCII without spaces, quotes or backslashes"));
                }
            }
            list.get_ref().iter().map(|v| v.get_ref().clone()).collect::<Vec<_>>()
        });
        let one_time = r.one_time.as_ref().is_some_and(|o| *o.get_ref());
        if auth == AuthMode::None {
            for (key, set) in [
                ("max_auth_age", r.max_auth_age.as_ref().map(Spanned::span)),
                ("acr_values", r.acr_values.as_ref().map(Spanned::span)),
                (
                    "one_time",
                    r.one_time
                        .as_ref()
                        .filter(|o| *o.get_ref())
                        .map(Spanned::span),
                ),
            ] {
                if let Some(span) = set {
                    self.error_at(span.start, format!("route {name:?}: {key} has no effect with auth = \"none\" (no token is checked)"));
                }
            }
        }
        let mut response_headers = HeaderMap::new();
        if let Some(table) = &r.response_headers {
            for (header, value) in table.get_ref() {
                let Ok(h) = HeaderName::from_bytes(header.as_bytes()) else {
                    self.error(value, format!("route {name:?}: response_headers: {header:?} is not a valid header name"));
                    continue;
                };
                if RESERVED_RESPONSE_HEADERS.contains(&h.as_str()) {
                    self.error(value, format!("route {name:?}: response_headers cannot set {header:?}: it frames the answer or carries a per-request value (the gateway's challenge, cookies, retry hints, redirects)"));
                    continue;
                }
                if h.as_str().starts_with("access-control-") {
                    self.error(value, format!("route {name:?}: response_headers cannot set {header:?}: CORS headers depend on the request's Origin"));
                    continue;
                }
                if response_headers.contains_key(&h) {
                    self.error(value, format!("route {name:?}: response_headers names {header:?} twice (names are case-insensitive)"));
                    continue;
                }
                match HeaderValue::from_str(value.get_ref()) {
                    Ok(v) if !value.get_ref().trim().is_empty() => {
                        response_headers.insert(h, v);
                    }
                    Ok(_) => self.error(value, format!("route {name:?}: response_headers.{header} must not be empty")),
                    Err(_) => self.error(value, format!("route {name:?}: response_headers.{header} holds a character a header value cannot (a control character or non-ASCII)")),
                }
            }
        }
        RouteDefenses {
            step_up: StepUp::new(max_auth_age, acr_values.unwrap_or_default()),
            one_time,
            response_headers,
        }
    }

    /// `[anomaly]`, with the SPEC's defaults for what it leaves out.
    pub(super) fn anomaly(&mut self, a: &Spanned<RawAnomaly>) -> AnomalyConfig {
        let a = a.get_ref();
        let max_addresses = match &a.max_addresses {
            None => DEFAULT_MAX_ADDRESSES,
            Some(m) => {
                match usize::try_from(*m.get_ref()) {
                    Ok(n) if (1..=MAX_ANOMALY_ADDRESSES).contains(&n) => n,
                    _ => {
                        self.error(m, format!("anomaly.max_addresses must be between 1 and {MAX_ANOMALY_ADDRESSES}"));
                        DEFAULT_MAX_ADDRESSES
                    }
                }
            }
        };
        let window = self.duration(&a.window, "anomaly.window", DEFAULT_ANOMALY_WINDOW);
        let action = match a.action.as_ref().map(|x| x.get_ref().as_str()) {
            None | Some("log") => AnomalyAction::Log,
            Some("refuse") => AnomalyAction::Refuse,
            Some(other) => {
                if let Some(x) = &a.action {
                    self.error(
                        x,
                        format!("anomaly.action {other:?} must be \"log\" or \"refuse\""),
                    );
                }
                AnomalyAction::Log
            }
        };
        AnomalyConfig {
            max_addresses,
            window,
            action,
        }
    }
}

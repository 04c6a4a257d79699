//! The one place a failure becomes an answer: status, `WWW-Authenticate`, JSON body.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::auth::AuthError;

/// What went wrong with the upstream, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    Connect,
    Timeout,
    Reset,
    Tls,
}

impl UpstreamKind {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Connect => "connect",
            UpstreamKind::Timeout => "timeout",
            UpstreamKind::Reset => "reset",
            UpstreamKind::Tls => "tls",
        }
    }
}

/// Why the gateway answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no route matches this request")]
    NotFound,
    /// A request feature the gateway does not implement (RFC 9112 §6.1: an unknown transfer
    /// coding is a 501).
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the keys of issuer {issuer} are not loaded yet")]
    KeysNotLoaded {
        issuer: String,
        retry_after_secs: u64,
    },
    /// `[denylist] max_staleness` passed without a successful Redis read.
    #[error("the denylist could not be refreshed from Redis for longer than max_staleness: revoked tokens cannot be ruled out")]
    DenylistStale { retry_after_secs: u64 },
    #[error("the upstream could not be reached ({})", kind.as_str())]
    Upstream { kind: UpstreamKind },
    /// A reserved path asked with another method than the one it answers (its `Allow`).
    #[error("this path answers {0} only")]
    MethodNotAllowed(&'static str),
    /// Over the route's `[route.rate_limit]`; the values of `RateLimit-Policy` and `RateLimit`.
    #[error("too many requests: retry in {retry_after_secs} s")]
    RateLimited {
        retry_after_secs: u64,
        policy: HeaderValue,
        state: HeaderValue,
    },
    /// A `one_time` token or a DPoP proof cannot be checked for an earlier use (Redis down, or
    /// the memory cache full): a replay must never pass, so the request waits for the store.
    #[error("the replay cache is unavailable, so the gateway cannot check that the token or DPoP proof is used only once")]
    ReplayUnavailable { retry_after_secs: u64 },
    /// A refusal of a request that used the `DPoP` scheme or carried a DPoP-bound token:
    /// answered with a `DPoP` challenge (RFC 9449 §7.1).
    #[error("{}", .0.error)]
    Dpop(Box<DpopRefusal>),
}

impl From<crate::auth::SignatureError> for ProxyError {
    /// A refused token is a 401; keys not fetched yet are a 503.
    fn from(e: crate::auth::SignatureError) -> Self {
        match e {
            crate::auth::SignatureError::Auth(e) => ProxyError::Auth(e),
            crate::auth::SignatureError::NotLoaded {
                issuer,
                retry_after_secs,
            } => ProxyError::KeysNotLoaded {
                issuer,
                retry_after_secs,
            },
        }
    }
}

/// What a `DPoP` challenge says besides the error.
#[derive(Debug)]
pub struct DpopRefusal {
    pub error: AuthError,
    /// The accepted proof algorithms, space-separated (the challenge's `algs`).
    pub algs: String,
    /// A fresh `DPoP-Nonce` for a proof that lacked the current one (RFC 9449 §8).
    pub nonce: Option<String>,
}

impl DpopRefusal {
    /// The challenge's `error`: the proof's fault, the missing nonce, or the token's.
    fn code(&self) -> &'static str {
        match &self.error {
            AuthError::DpopNonce => "use_dpop_nonce",
            AuthError::DpopInvalid(_)
            | AuthError::DpopTime { .. }
            | AuthError::DpopReplay
            | AuthError::DpopKeyMismatch => "invalid_dpop_proof",
            AuthError::Insufficient(_) => "insufficient_scope",
            AuthError::StepUp(_) => "insufficient_user_authentication",
            _ => "invalid_token",
        }
    }
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: header::HeaderName =
    header::HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");

/// The shape of every answer the gateway writes itself: status, `{"error", "error_description"}`
/// as JSON, never cached. [`ProxyError::response`] and the connection layer's 431 share it.
pub fn json_answer(status: StatusCode, code: &str, description: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": code, "error_description": description });
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

impl ProxyError {
    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Auth(AuthError::Insufficient(_)) => StatusCode::FORBIDDEN,
            ProxyError::Auth(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Dpop(d) if matches!(d.error, AuthError::Insufficient(_)) => {
                StatusCode::FORBIDDEN
            }
            ProxyError::Dpop(_) => StatusCode::UNAUTHORIZED,
            ProxyError::KeysNotLoaded { .. }
            | ProxyError::DenylistStale { .. }
            | ProxyError::ReplayUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream {
                kind: UpstreamKind::Timeout,
            } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `error` member of the body (RFC 6750 codes for auth failures).
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "invalid_request",
            ProxyError::NotFound => "not_found",
            ProxyError::NotImplemented(_) => "not_implemented",
            ProxyError::Auth(AuthError::Missing) => "missing_token",
            ProxyError::Auth(AuthError::Insufficient(_)) => "insufficient_scope",
            ProxyError::Auth(AuthError::StepUp(_)) => "insufficient_user_authentication",
            ProxyError::Auth(_) => "invalid_token",
            ProxyError::Dpop(d) => d.code(),
            ProxyError::KeysNotLoaded { .. }
            | ProxyError::DenylistStale { .. }
            | ProxyError::ReplayUnavailable { .. } => "temporarily_unavailable",
            ProxyError::Upstream {
                kind: UpstreamKind::Timeout,
            } => "upstream_timeout",
            ProxyError::Upstream { .. } => "bad_gateway",
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::RateLimited { .. } => "rate_limited",
        }
    }

    /// The credential failure behind this answer, for the metrics reason.
    pub fn auth_error(&self) -> Option<&AuthError> {
        match self {
            ProxyError::Auth(a) => Some(a),
            ProxyError::Dpop(d) => Some(&d.error),
            _ => None,
        }
    }

    /// The answer, with `x-request-id` so a client can quote it when asking why.
    pub fn response(&self, request_id: &HeaderValue) -> Response<Full<Bytes>> {
        let mut res = json_answer(self.status(), self.code(), &self.to_string());
        let h = res.headers_mut();
        h.insert(super::headers::X_REQUEST_ID.clone(), request_id.clone());
        match self {
            // RFC 6750 §3.1: a request without credentials gets no error code.
            ProxyError::Auth(AuthError::Missing) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"jwtgate\""),
                );
            }
            // RFC 9470 §3: the challenge says what a new authentication must achieve.
            ProxyError::Auth(AuthError::StepUp(f)) => {
                let v = format!(
                    "Bearer realm=\"jwtgate\", error=\"insufficient_user_authentication\", error_description=\"{}\", {}",
                    quoted(&f.to_string()),
                    f.challenge()
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ProxyError::Auth(e) => {
                let v = format!(
                    "Bearer realm=\"jwtgate\", error=\"{}\", error_description=\"{}\"",
                    self.code(),
                    quoted(&e.to_string())
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ProxyError::BadRequest(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"jwtgate\", error=\"invalid_request\""),
                );
            }
            ProxyError::Dpop(d) => {
                // RFC 9470 §3 under the DPoP scheme: a step-up names what to achieve here too.
                let step_up = match &d.error {
                    AuthError::StepUp(f) => format!(", {}", f.challenge()),
                    _ => String::new(),
                };
                let v = format!(
                    "DPoP realm=\"jwtgate\", error=\"{}\", error_description=\"{}\", algs=\"{}\"{step_up}",
                    d.code(),
                    quoted(&d.error.to_string()),
                    quoted(&d.algs)
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
                if let Some(n) = d
                    .nonce
                    .as_deref()
                    .and_then(|n| HeaderValue::from_str(n).ok())
                {
                    h.insert(super::dpop::DPOP_NONCE.clone(), n);
                }
            }
            ProxyError::KeysNotLoaded {
                retry_after_secs, ..
            }
            | ProxyError::ReplayUnavailable { retry_after_secs }
            | ProxyError::DenylistStale { retry_after_secs } => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(*retry_after_secs.max(&1)),
                );
            }
            ProxyError::RateLimited {
                retry_after_secs,
                policy,
                state,
            } => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(*retry_after_secs.max(&1)),
                );
                h.insert(RATELIMIT_POLICY.clone(), policy.clone());
                h.insert(RATELIMIT.clone(), state.clone());
            }
            ProxyError::MethodNotAllowed(allow) => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        res
    }
}

/// RFC 6750 error_description allows %x20-21 / %x23-5B / %x5D-7E: no quote or backslash.
fn quoted(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .collect()
}

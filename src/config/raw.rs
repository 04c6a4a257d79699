//! The first stage of config parsing: the TOML file as written, with spans for error messages.
//! Unknown keys are collected with `serde_ignored` rather than refused by
//! `deny_unknown_fields`, which would stop at the first one and hide every other error.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `gateway.toml` exactly as written; validated into [`super::Config`].
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    pub listen: Spanned<RawListen>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub issuer: Vec<Spanned<RawIssuer>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    /// Browser sessions (OpenID Connect login).
    pub session: Option<Spanned<RawSession>>,
    /// `[assertion]`: identity assertions signed for upstreams.
    pub assertion: Option<Spanned<RawAssertion>>,
    /// `[anomaly]`: token-theft signals (issue 20).
    pub anomaly: Option<Spanned<RawAnomaly>>,
    pub redis: Option<Spanned<RawRedis>>,
    /// `[denylist]`: revoked tokens, subjects and sessions.
    pub denylist: Option<Spanned<RawDenylist>>,
}

/// `[redis]`: the store replicas share.
#[derive(Debug, Deserialize)]
pub struct RawRedis {
    /// The environment variable holding the URL (it may carry a password).
    pub url_env: Option<Spanned<String>>,
    /// The URL itself, for a Redis without a password.
    pub url: Option<Spanned<String>>,
}

/// `[denylist]`.
#[derive(Debug, Deserialize)]
pub struct RawDenylist {
    pub file: Option<Spanned<String>>,
    pub max_staleness: Option<Spanned<String>>,
}

/// `[listen]`.
#[derive(Debug, Deserialize)]
pub struct RawListen {
    pub addr: Spanned<String>,
    pub tls: Option<Spanned<RawTls>>,
    #[serde(default)]
    pub certificates: Vec<Spanned<RawCertificate>>,
    /// CIDRs (or single addresses) of proxies whose forwarding headers are believed.
    pub trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    /// Site-specific header names removed from every client request (`X-Internal-*` allowed).
    pub strip_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// With `client_ca`: send the verified client certificate as `X-Forwarded-Client-Cert`.
    pub forward_client_cert: Option<Spanned<bool>>,
}

/// `[listen] tls = { cert, key, client_ca }`.
#[derive(Debug, Deserialize)]
pub struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub client_ca: Option<Spanned<String>>,
    /// `"required"` (the default with `client_ca`) or `"optional"`.
    pub client_auth: Option<Spanned<String>>,
}

/// `[[listen.certificates]]`: more certificates chosen by SNI.
#[derive(Debug, Deserialize)]
pub struct RawCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
pub struct RawAdmin {
    pub addr: Spanned<String>,
}

/// `[limits]`; every key optional.
#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_token_bytes: Option<Spanned<i64>>,
    pub max_header_bytes: Option<Spanned<i64>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub body_read_timeout: Option<Spanned<String>>,
    pub send_timeout: Option<Spanned<String>>,
    pub upstream_connect_timeout: Option<Spanned<String>>,
    pub upstream_timeout: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub token_cache_entries: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
}

/// One `[[issuer]]`.
#[derive(Debug, Deserialize)]
pub struct RawIssuer {
    pub name: Spanned<String>,
    pub issuer: Spanned<String>,
    pub audiences: Spanned<Vec<Spanned<String>>>,
    pub algorithms: Spanned<Vec<Spanned<String>>>,
    pub jwks_url: Option<Spanned<String>>,
    pub discovery_url: Option<Spanned<String>>,
    pub jwks_file: Option<Spanned<String>>,
    pub keys: Option<Spanned<Vec<Spanned<String>>>>,
    pub hmac_secret_env: Option<Spanned<String>>,
    pub hmac_secret_file: Option<Spanned<String>>,
    pub leeway: Option<Spanned<String>>,
    pub refresh: Option<Spanned<String>>,
    pub typ: Option<Spanned<Vec<Spanned<String>>>>,
    // Sender-constrained tokens.
    pub dpop_algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub dpop_max_age: Option<Spanned<String>>,
    pub dpop_nonce: Option<Spanned<bool>>,
    pub dpop_nonce_key_env: Option<Spanned<String>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub name: Spanned<String>,
    pub path_prefix: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub upstream: Spanned<String>,
    pub auth: Spanned<String>,
    pub issuers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub require: BTreeMap<String, Spanned<RawRequirement>>,
    pub forward_token: Option<Spanned<bool>>,
    pub websocket: Option<Spanned<bool>>,
    pub upstream_ca: Option<Spanned<String>>,
    pub upstream_http2: Option<Spanned<bool>>,
    pub token_query: Option<Spanned<String>>,
    pub token_cookie: Option<Spanned<String>>,
    #[serde(default)]
    pub claim_headers: BTreeMap<String, Spanned<String>>,
    /// Identity assertions, CORS and rate limits (SPEC "Identity assertion for backends",
    /// "CORS and rate limits").
    pub assertion: Option<Spanned<bool>>,
    pub assertion_audience: Option<Spanned<String>>,
    pub cors: Option<Spanned<RawCors>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    // Step-up, one-time tokens, security headers (issue 20).
    /// RFC 9470: the token's `auth_time` must be at most this old.
    pub max_auth_age: Option<Spanned<String>>,
    /// RFC 9470: the token's `acr` must be one of these.
    pub acr_values: Option<Spanned<Vec<Spanned<String>>>>,
    /// Each `jti` passes once.
    pub one_time: Option<Spanned<bool>>,
    /// Headers set on every answer of the route.
    pub response_headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub require_binding: Option<Spanned<bool>>,
}

/// A claim requirement: one value or a list, every one required.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRequirement {
    One(String),
    All(Vec<String>),
    Bool(bool),
    Int(i64),
}

/// `[session]`.
#[derive(Debug, Deserialize)]
pub struct RawSession {
    pub issuer: Spanned<String>,
    pub client_id: Spanned<String>,
    pub client_secret_env: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<String>>,
    pub scopes: Option<Spanned<Vec<Spanned<String>>>>,
    pub cookie_keys_file: Spanned<String>,
    pub external_url: Option<Spanned<String>>,
    pub store: Option<Spanned<String>>,
    pub lifetime: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub post_logout_redirect: Option<Spanned<String>>,
    pub backchannel_logout: Option<Spanned<bool>>,
    pub token_auth: Option<Spanned<String>>,
}

/// `[assertion]`.
#[derive(Debug, Deserialize)]
pub struct RawAssertion {
    pub keys: Spanned<Vec<Spanned<String>>>,
    pub issuer: Spanned<String>,
    pub ttl: Option<Spanned<String>>,
    pub header: Option<Spanned<String>>,
}

/// `[route.cors]`.
#[derive(Debug, Deserialize)]
pub struct RawCors {
    pub allow_origins: Spanned<Vec<Spanned<String>>>,
    pub allow_methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub expose_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_credentials: Option<Spanned<bool>>,
    pub max_age: Option<Spanned<String>>,
}

/// `[route.rate_limit]`.
#[derive(Debug, Deserialize)]
pub struct RawRateLimit {
    pub key: Option<Spanned<String>>,
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<i64>>,
}

/// `[anomaly]`: distinct client addresses per token within a window; every key optional.
#[derive(Debug, Deserialize)]
pub struct RawAnomaly {
    pub max_addresses: Option<Spanned<i64>>,
    pub window: Option<Spanned<String>>,
    pub action: Option<Spanned<String>>,
}

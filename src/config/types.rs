//! The validated runtime configuration: what the rest of the gateway reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use http::Method;

use super::{ConfigError, Loc};
use crate::alg::Alg;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it resolve against its directory.
    pub path: PathBuf,
    pub listen: Listen,
    pub admin: Option<Admin>,
    pub limits: Limits,
    pub issuers: Vec<IssuerConfig>,
    pub routes: Vec<RouteConfig>,
    /// `[session]`: browser sessions through OpenID Connect login (`auth = "session"` routes).
    pub session: Option<SessionConfig>,
    /// `[assertion]`: the keys and issuer of identity assertions for upstreams.
    pub assertion: Option<AssertionConfig>,
    /// `[anomaly]`, when the section is present.
    pub anomaly: Option<AnomalyConfig>,
    /// `[redis]`: the store replicas share; `None` keeps every shared feature in memory.
    pub redis: Option<RedisConfig>,
    /// `[denylist]`; `None` when absent (revocation then lives in memory or Redis only).
    pub denylist: Option<DenylistConfig>,
}

/// `[redis]`, with the URL read from the environment when `url_env` names it.
#[derive(Clone)]
pub struct RedisConfig {
    /// The URL in effect. It may hold a password: print [`RedisConfig::redacted`] instead.
    pub url: String,
    /// The environment variable the URL came from, if any.
    pub url_env: Option<String>,
}

impl RedisConfig {
    /// The URL with any password replaced by `***`, for `/config` and logs.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

/// A URL with its userinfo password (`user:password@`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_owned();
    };
    let user = rest[..at].split(':').next().unwrap_or("");
    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted())
            .field("url_env", &self.url_env)
            .finish()
    }
}

/// `[denylist]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenylistConfig {
    /// The watched JSON-lines file, resolved against the config's directory.
    pub file: Option<PathBuf>,
    /// With `[redis]`: past this without a successful Redis read, protected routes answer 503.
    pub max_staleness: Option<Duration>,
}

/// `[listen]`.
#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub certificates: Vec<CertFiles>,
    /// Where `tls` is written, for certificate errors.
    pub tls_loc: Loc,
    /// Peers whose `X-Forwarded-For`/`-Proto`/`-Host`/`-Port` are kept (SPEC "Connections and
    /// trust"); empty: no peer is trusted.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Site-specific headers removed from every client request, lower case with `-` for `_`; a
    /// trailing `*` makes the entry a prefix.
    pub strip_headers: Vec<String>,
    /// Sets `X-Forwarded-Client-Cert` from the verified client certificate (mTLS only).
    pub forward_client_cert: bool,
}

/// The default certificate and optional client CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// `client_auth = "optional"`: with `client_ca`, a client may also connect without a
    /// certificate (certificate-bound and plain tokens share the port).
    pub client_auth_optional: bool,
}

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_token_bytes: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// Longest pause between request body data; a stalled upload is cut off.
    pub body_read_timeout: Duration,
    /// Longest time the client may take none of the response bytes the gateway holds for it;
    /// past it the connection is closed.
    pub send_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Verified tokens remembered (0 turns the cache off); read once at start.
    pub token_cache_entries: usize,
    /// Open client connections per listener; past it new ones wait in the backlog.
    pub max_connections: usize,
    /// Concurrent streams one HTTP/2 connection may open.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_token_bytes: 8192,
            max_header_bytes: 16384,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(25),
            token_cache_entries: 10_000,
            max_connections: 10_000,
            max_concurrent_streams: 100,
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    JwksUrl(String),
    DiscoveryUrl(String),
    JwksFile(PathBuf),
    PemFiles(Vec<PathBuf>),
    HmacEnv(String),
    HmacFile(PathBuf),
}

/// One `[[issuer]]`, validated.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub source: KeySource,
    /// Where the key source is written, for errors found while loading keys.
    pub source_loc: Loc,
    pub leeway: Duration,
    pub refresh: Duration,
    /// Accepted `typ` values, compared case-insensitively; an absent `typ` is always accepted.
    pub typ: Vec<String>,
    /// Sender-constrained tokens: how this issuer's DPoP proofs are checked.
    pub dpop: DpopConfig,
}

/// `dpop_*` keys of an `[[issuer]]` (SPEC "Sender-constrained tokens").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopConfig {
    /// Proof algorithms accepted (asymmetric only).
    pub algorithms: Vec<Alg>,
    /// The proof `iat` window, past and future, on top of the issuer's leeway.
    pub max_age: Duration,
    /// True: proofs must carry a server nonce (`DPoP-Nonce`).
    pub nonce: bool,
    /// The environment variable holding the nonce HMAC key.
    pub nonce_key_env: String,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            algorithms: vec![Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::PS256],
            max_age: Duration::from_secs(60),
            nonce: false,
            nonce_key_env: "JWTGATE_DPOP_NONCE_KEY".into(),
        }
    }
}

/// `auth = required | optional | none | session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Optional,
    None,
    /// A bearer token or a browser session cookie; without either, browsers are sent to log in.
    Session,
}

impl AuthMode {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Required => "required",
            AuthMode::Optional => "optional",
            AuthMode::None => "none",
            AuthMode::Session => "session",
        }
    }
}

/// A host pattern: exact, or `*.example.com` (one or more labels before the suffix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Exact(String),
    /// The suffix including its leading dot: `.example.com`.
    Wildcard(String),
}

/// Where a claim is read from: a top-level name or a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPath {
    Name(String),
    Pointer(String),
}

impl ClaimPath {
    pub(super) fn parse(s: &str) -> ClaimPath {
        if s.starts_with('/') {
            ClaimPath::Pointer(s.to_owned())
        } else {
            ClaimPath::Name(s.to_owned())
        }
    }

    /// Looks the claim up in a claims object.
    pub fn get<'a>(&self, claims: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        match self {
            ClaimPath::Name(n) => claims.get(n),
            ClaimPath::Pointer(p) => claims.pointer(p),
        }
    }

    /// The path as written in the config.
    pub fn as_str(&self) -> &str {
        match self {
            ClaimPath::Name(s) | ClaimPath::Pointer(s) => s,
        }
    }
}

/// A claim requirement of a route: every listed value must be present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub claim: ClaimPath,
    pub values: Vec<String>,
}

/// The upstream a route forwards to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// A base path prepended to the forwarded path; empty for none.
    pub base_path: String,
    /// The URL as written.
    pub url: String,
}

/// One `[[route]]`, validated.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    pub methods: Option<Vec<Method>>,
    pub upstream: Upstream,
    pub auth: AuthMode,
    /// Indices into [`Config::issuers`].
    pub issuers: Vec<usize>,
    pub require: Vec<Requirement>,
    pub forward_token: bool,
    pub websocket: bool,
    pub upstream_ca: Option<PathBuf>,
    pub upstream_http2: bool,
    pub token_query: Option<String>,
    pub token_cookie: Option<String>,
    pub claim_headers: Vec<(HeaderName, ClaimPath)>,
    /// True: tokens without `cnf` (neither DPoP- nor certificate-bound) are refused.
    pub require_binding: bool,
    /// Where the route is written, for warnings.
    pub loc: Loc,
    /// `assertion = true`: what the route's assertions carry.
    pub assertion: Option<RouteAssertion>,
    /// `[route.cors]`.
    pub cors: Option<Cors>,
    /// `[route.rate_limit]`.
    pub rate_limit: Option<RateLimit>,
    // Step-up, one-time tokens, security headers (SPEC "Step-up, one-time tokens, theft
    // signals, security headers").
    /// `max_auth_age` and `acr_values` (RFC 9470); `None` when the route sets neither.
    pub step_up: Option<crate::auth::stepup::StepUp>,
    /// `one_time = true`: each `jti` of an issuer passes once.
    pub one_time: bool,
    /// `response_headers`, built once: set on every answer of the route, replacing the
    /// upstream's values under those names.
    pub response_headers: http::HeaderMap,
}

/// `[assertion]`, validated.
#[derive(Debug, Clone)]
pub struct AssertionConfig {
    /// PEM private keys (EC P-256 or Ed25519): the first signs, all are published.
    pub keys: Vec<PathBuf>,
    /// The `iss` of every assertion.
    pub issuer: String,
    pub ttl: Duration,
    /// The header the upstream receives it in.
    pub header: HeaderName,
    /// Where `keys` is written, for errors found while loading them.
    pub keys_loc: Loc,
}

/// The default assertion header; always stripped from clients, whatever `header` says.
pub const DEFAULT_ASSERTION_HEADER: &str = "x-jwtgate-assertion";

/// A route's identity assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAssertion {
    /// `aud` (`assertion_audience`, default: the route name).
    pub audience: String,
    /// The top-level claims copied from the token: those the route's `claim_headers` read
    /// (for a JSON Pointer, the member it starts in), without the assertion's own claims.
    pub claims: Vec<String>,
}

/// `[route.cors]`, validated; header values precomputed.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins (`scheme://host[:port]`, lower case); empty with `any_origin`.
    pub allow_origins: Vec<String>,
    /// `"*"` was listed (only without credentials).
    pub any_origin: bool,
    pub allow_methods: Vec<Method>,
    /// `"*"` was listed in `allow_methods` (only without credentials).
    pub any_method: bool,
    /// Lower case.
    pub allow_headers: Vec<String>,
    /// `"*"` was listed in `allow_headers` (only without credentials; never covers
    /// `Authorization`, as the Fetch standard says).
    pub any_header: bool,
    /// `Access-Control-Expose-Headers` on actual answers, when set.
    pub expose_headers: Option<http::HeaderValue>,
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` in seconds, when set.
    pub max_age: Option<http::HeaderValue>,
    /// `Access-Control-Allow-Methods` on preflight answers.
    pub allow_methods_value: Option<http::HeaderValue>,
}

/// `[route.rate_limit]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The claim requests are keyed by; requests without a valid token (or without this
    /// claim) are keyed by the client address.
    pub key: ClaimPath,
    /// Time to earn one request back (the GCRA emission interval): the rate's period divided
    /// by its count.
    pub interval: Duration,
    /// Requests allowed at once.
    pub burst: u32,
    /// The rate as written, for `/config`.
    pub rate: String,
}

/// `[anomaly]`: the token-theft signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyConfig {
    /// A token seen from more distinct client addresses than this within `window` is a signal.
    pub max_addresses: usize,
    pub window: Duration,
    pub action: AnomalyAction,
}

/// What a theft signal does beyond counting and logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyAction {
    /// Count and log only.
    Log,
    /// Also refuse the token (401, reason `anomaly`) from the crossing request until its `exp`.
    Refuse,
}

impl AnomalyAction {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyAction::Log => "log",
            AnomalyAction::Refuse => "refuse",
        }
    }
}

/// HMAC secrets shorter than this are guessable offline from any token (RFC 7518 §3.2 asks for
/// at least the hash size; 32 bytes is the HS256 floor).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

impl Config {
    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(self.path.parent().unwrap_or(Path::new("")), p)
    }

    /// An error at `loc` in this config's file, for problems found while loading keys.
    pub fn error(&self, loc: Loc, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            loc,
            message: message.into(),
        }
    }
}

pub(super) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

// --- browser sessions (issue 15) ------------------------------------------------------------

/// Where a secret of the config comes from: never the file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStore {
    /// The whole session, encrypted, in the browser's cookie.
    Cookie,
    /// The session encrypted in Redis; the cookie holds its id and key.
    Redis,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// `client_secret_basic` (the default).
    Basic,
    /// `client_secret_post`.
    Post,
}

/// `[session]`, validated.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Index into [`Config::issuers`]: the OpenID provider (it has a `discovery_url`).
    pub issuer: usize,
    pub client_id: String,
    /// `None`: a public client (PKCE only).
    pub client_secret: Option<SecretSource>,
    pub scopes: Vec<String>,
    pub cookie_keys_file: PathBuf,
    /// The gateway's origin as browsers see it (`https://host[:port]`, no path); `None`: taken
    /// from each request's Host.
    pub external_url: Option<String>,
    pub store: SessionStore,
    pub lifetime: Duration,
    pub idle_timeout: Duration,
    pub post_logout_redirect: Option<String>,
    pub backchannel_logout: bool,
    pub token_auth: TokenAuth,
    /// Where `[session]` is written, for errors found while loading its files.
    pub loc: Loc,
}

//! Browser sessions (SPEC "Browser sessions: OpenID Connect login"): the login redirect, the
//! sealed session cookie, refresh ahead of expiry, and the reserved `/.jwtgate/` paths.
//!
//! Per snapshot, [`Runtime`] holds what the config yields (the cookie keyring, the client's
//! credentials, the provider as an issuer whose audience is the client, for ID tokens and
//! logout tokens). Per gateway, [`Sessions`] holds what outlives a reload: the discovery
//! document, refreshes in flight and their recent results, and the revocation seam.

pub mod cookie;
pub mod oidc;
pub mod refresh;
pub mod routes;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::auth::{Issuer, IssuerKeys};
use crate::config::{Config, KeySource, SecretSource, SessionConfig};
use crate::metrics::Metrics;
use cookie::{Keyring, Session, Transaction};
use oidc::{Discovery, LoginOptions, OidcError};
use refresh::{Failure, Refresher};

/// The `event` label values of `jwtgate_sessions_total`.
pub const EVENTS: [&str; 6] = [
    "login",
    "refresh",
    "refresh_failed",
    "logout",
    "backchannel_logout",
    "too_large",
];
/// How long a login attempt (its transaction cookie) may take.
pub const TX_LIFETIME_SECS: i64 = 600;
/// The reserved path prefix: never forwarded, on every host.
pub const RESERVED_PREFIX: &str = "/.jwtgate/";
/// The callback path (redirect_uri = origin + this).
pub const CALLBACK_PATH: &str = "/.jwtgate/callback";

/// Why `[session]` could not be set up from its files and environment.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Keys(#[from] cookie::KeyringError),
    #[error("[session] client_secret_env: ${0} is not set (or empty)")]
    SecretEnv(String),
    #[error("[session] client_secret_file {path}: {why}")]
    SecretFile { path: String, why: String },
}

/// What a snapshot's `[session]` yields.
#[derive(Debug)]
pub struct Runtime {
    pub keyring: Keyring,
    pub client: oidc::Client,
    /// The provider as an issuer whose audience is the client (ID tokens, logout tokens).
    pub id_issuer: Vec<Issuer>,
    pub logout_issuer: Vec<Issuer>,
    /// The `[[issuer]]` name (denylist entries are scoped by it).
    pub issuer_name: String,
    /// Its `iss`: the discovery document must name exactly this issuer.
    pub issuer: String,
    pub discovery_url: String,
}

/// True for `localhost`, `*.localhost` and loopback addresses: where plain http is allowed.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.to_ascii_lowercase().ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Runtime {
    /// Loads the keyring and the client secret; `None` without `[session]`.
    pub fn build(config: &Config, issuers: &[Issuer]) -> Result<Option<Runtime>, SetupError> {
        let Some(s) = &config.session else {
            return Ok(None);
        };
        let keyring = Keyring::load(&s.cookie_keys_file)?;
        let secret = match &s.client_secret {
            None => None,
            Some(SecretSource::Env(name)) => Some(
                std::env::var(name)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| SetupError::SecretEnv(name.clone()))?,
            ),
            Some(SecretSource::File(path)) => {
                let bytes = crate::files::read_capped(path, crate::files::MAX_KEY_FILE_BYTES)
                    .map_err(|e| SetupError::SecretFile {
                        path: path.display().to_string(),
                        why: e.to_string(),
                    })?;
                let text = String::from_utf8(bytes).map_err(|_| SetupError::SecretFile {
                    path: path.display().to_string(),
                    why: "not UTF-8 text".into(),
                })?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            }
        };
        let base = &issuers[s.issuer];
        let derived = |typ: &[&str]| {
            let mut c = base.config.clone();
            c.audiences = vec![s.client_id.clone()];
            c.typ = typ.iter().map(|t| (*t).to_owned()).collect();
            vec![Issuer {
                dpop: crate::auth::dpop::IssuerDpop::new(&c),
                config: c,
                keys: base.keys.clone(),
            }]
        };
        let discovery_url = match &base.config.source {
            KeySource::DiscoveryUrl(u) => u.clone(),
            // Validation requires a discovery_url; a key source without one finds no endpoints.
            _ => String::new(),
        };
        Ok(Some(Runtime {
            keyring,
            client: oidc::Client {
                id: s.client_id.clone(),
                secret,
                auth: s.token_auth,
            },
            id_issuer: derived(&["JWT"]),
            logout_issuer: derived(&["logout+jwt", "JWT"]),
            issuer_name: base.config.name.clone(),
            issuer: base.config.issuer.clone(),
            discovery_url,
        }))
    }

    /// Whether the provider's keys are those of a remote issuer (always, once validated).
    pub fn keys(&self) -> &IssuerKeys {
        &self.id_issuer[0].keys
    }
}

/// Session state that outlives a config reload; one per gateway.
#[derive(Debug, Default)]
pub struct Sessions {
    /// The shared Redis, for `store = "redis"`.
    pub store: Option<Arc<crate::store::Store>>,
    discovery: tokio::sync::Mutex<Option<(Arc<Discovery>, Instant, String)>>,
    pub refresher: Refresher,
}

/// A gateway answer built by the session layer (a redirect, a page, a 401 with cookies).
pub type Answer = Response<Full<Bytes>>;

/// A live session of a request: the token whose claims are forwarded, and cookies to send
/// back with the upstream's answer (a refreshed or touched session).
#[derive(Debug)]
pub struct Active {
    pub token: String,
    pub sub: String,
    /// The session's absolute expiry.
    pub exp: i64,
    /// True when `token` is the ID token (the access token is not a JWT): its audience is the
    /// client, so it is verified as an ID token.
    pub id_token: bool,
    pub set_cookies: Vec<HeaderValue>,
}

/// The session of a request, if it has a valid one.
#[derive(Debug, Default)]
pub struct Lookup {
    pub active: Option<Active>,
    /// Cookies to send with whatever answers the request (deletions of a dead session).
    pub set_cookies: Vec<HeaderValue>,
    /// The provider could not refresh an expired access token: answer 503.
    pub unavailable: bool,
}

impl Sessions {
    /// Sessions on `store` (for `store = "redis"`).
    pub fn new(store: Option<Arc<crate::store::Store>>) -> Sessions {
        Sessions {
            store,
            ..Sessions::default()
        }
    }

    /// The session a cookie value names: sealed in it (`store = "cookie"`), or in Redis under
    /// the handle sealed in it. `Err(())` when Redis cannot be read.
    pub async fn read(
        &self,
        rt: &Runtime,
        cfg: &SessionConfig,
        value: &str,
    ) -> Result<Option<(Session, Option<store::Handle>)>, ()> {
        let Some(plain) = rt.keyring.open(cookie::SESSION_COOKIE, value) else {
            return Ok(None);
        };
        match cfg.store {
            crate::config::SessionStore::Cookie => {
                Ok(serde_json::from_slice(&plain).ok().map(|s| (s, None)))
            }
            crate::config::SessionStore::Redis => {
                let (Some(db), Ok(h)) =
                    (&self.store, serde_json::from_slice::<store::Handle>(&plain))
                else {
                    return Ok(None);
                };
                match store::load(db, &h).await {
                    Ok(s) => Ok(s.map(|s| (s, Some(h)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a session from Redis failed");
                        Err(())
                    }
                }
            }
        }
    }

    /// The provider's discovery document, fetched at most once an hour (and again after a
    /// failure); only login, refresh and logout need it.
    pub async fn discovery(&self, rt: &Runtime) -> Result<Arc<Discovery>, OidcError> {
        let mut slot = self.discovery.lock().await;
        if let Some((d, at, url)) = slot.as_ref() {
            if *url == rt.discovery_url && at.elapsed() < oidc::DISCOVERY_TTL {
                return Ok(d.clone());
            }
        }
        let d = Arc::new(oidc::discover(&rt.discovery_url, &rt.issuer).await?);
        *slot = Some((d.clone(), Instant::now(), rt.discovery_url.clone()));
        Ok(d)
    }

    /// Reads, checks (expiry, idle time, the denylist's `sid` and `sub` entries), refreshes
    /// and touches the request's session.
    #[allow(clippy::too_many_arguments)]
    pub async fn lookup(
        &self,
        rt: &Runtime,
        cfg: &SessionConfig,
        config: &Config,
        metrics: &Metrics,
        denylist: &crate::denylist::Denylist,
        headers: &http::HeaderMap,
        now: i64,
    ) -> Lookup {
        let jar = cookie::jar(headers);
        let Some(value) = cookie::session_value(&jar) else {
            return Lookup::default();
        };
        let had_second = jar.session_2.is_some();
        let dead = || Lookup {
            set_cookies: cookie::clear_session().to_vec(),
            ..Lookup::default()
        };
        let (mut s, handle) = match self.read(rt, cfg, &value).await {
            Ok(Some(found)) => found,
            Ok(None) => return dead(),
            Err(()) => {
                return Lookup {
                    unavailable: true,
                    ..Lookup::default()
                }
            }
        };
        if now >= s.exp
            || now >= s.idle
            || denylist.session_revoked(
                &rt.issuer_name,
                s.sid.as_deref(),
                &s.sub,
                crate::unix_secs(s.iat),
            )
        {
            return dead();
        }
        let mut changed = false;
        if let Some(old_rt) = s.rt.clone() {
            if now >= refresh::refresh_at(s.at_iat, s.at_exp) {
                let current = Arc::new(s.clone());
                let outcome = self
                    .refresher
                    .refresh(&old_rt, || async {
                        match &handle {
                            Some(h) => self.refresh_shared(rt, config, metrics, current, h).await,
                            None => self.refresh(rt, config, metrics, current).await,
                        }
                    })
                    .await;
                match outcome {
                    Ok(new) => {
                        s = (*new).clone();
                        // In Redis the refresher saved it under the session's lock: a request
                        // that shared its result must not write its own copy.
                        changed = handle.is_none();
                    }
                    Err(Failure::Refused) if now >= s.at_exp => return dead(),
                    Err(Failure::Unavailable) if now >= s.at_exp => {
                        return Lookup {
                            unavailable: true,
                            ..Lookup::default()
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        // The idle expiry moves with use, re-sealed at most once per tenth of idle_timeout so
        // that most requests cost no encryption and no Set-Cookie.
        let idle = cfg.idle_timeout.as_secs() as i64;
        let touched = (now + idle).min(s.exp);
        let touch = touched - s.idle >= (idle / 10).max(1);
        if touch {
            s.idle = touched;
        }
        let mut set_cookies = Vec::new();
        if let (Some(h), Some(db)) = (&handle, &self.store) {
            // The cookie (id and key) never changes: the session is rewritten in Redis, under
            // its lock, so an older copy never overwrites a refresh.
            if touch {
                if let Err(e) = store::touch(db, h, &s, now).await {
                    tracing::warn!(error = %e, "writing a session to Redis failed");
                }
            }
        } else if changed || touch {
            match seal_session(rt, &s, now, had_second) {
                Ok(c) => set_cookies = c,
                // Refreshed tokens grew past two cookies: the session goes on from this
                // request's old cookie until it can no longer.
                Err(len) => {
                    metrics.sessions.with_label_values(&["too_large"]).inc();
                    tracing::warn!(
                        bytes = len,
                        "a refreshed session no longer fits two cookies; use store = \"redis\""
                    );
                }
            }
        }
        let (sub, exp) = (s.sub.clone(), s.exp);
        let (token, id_token) = match s.idt {
            Some(idt) if !oidc::is_jwt(&s.at) => (idt, true),
            _ => (s.at, false),
        };
        Lookup {
            active: Some(Active {
                token,
                sub,
                exp,
                id_token,
                set_cookies,
            }),
            ..Lookup::default()
        }
    }

    /// A refresh single-flight across replicas: the replica that takes the session's Redis
    /// lock refreshes and writes the result; the others wait for it to appear in Redis.
    async fn refresh_shared(
        &self,
        rt: &Runtime,
        config: &Config,
        metrics: &Metrics,
        s: Arc<Session>,
        h: &store::Handle,
    ) -> Result<Arc<Session>, Failure> {
        let db = self.store.as_ref().ok_or(Failure::Unavailable)?;
        let newer = |cur: &Session| cur.rt != s.rt;
        let deadline = tokio::time::Instant::now() + store::WAIT_FOR_REFRESH;
        loop {
            match store::lock(db, h).await {
                Ok(true) => {
                    // Another replica may have finished just before this one took the lock.
                    if let Ok(Some(cur)) = store::load(db, h).await {
                        if newer(&cur) {
                            store::unlock(db, h).await;
                            return Ok(Arc::new(cur));
                        }
                    }
                    let result = self.refresh(rt, config, metrics, s).await;
                    if let Ok(next) = &result {
                        if let Err(e) = store::save(db, h, next, crate::unix_now()).await {
                            tracing::warn!(error = %e, "writing a refreshed session to Redis failed");
                            store::unlock(db, h).await;
                            return Err(Failure::Unavailable);
                        }
                    }
                    store::unlock(db, h).await;
                    return result;
                }
                // Held by a refresh elsewhere (wait for its result) or by a short idle touch
                // (take the lock once it is free).
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "taking a session's refresh lock in Redis failed");
                    return Err(Failure::Unavailable);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::Unavailable);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            match store::load(db, h).await {
                Ok(Some(cur)) if newer(&cur) => return Ok(Arc::new(cur)),
                Ok(None) => return Err(Failure::Refused),
                _ => {}
            }
        }
    }

    /// One refresh at the provider (run by the single-flight in [`Refresher::refresh`]).
    async fn refresh(
        &self,
        rt: &Runtime,
        config: &Config,
        metrics: &Metrics,
        s: Arc<Session>,
    ) -> Result<Arc<Session>, Failure> {
        let result = async {
            let d = self.discovery(rt).await?;
            let old_rt = s.rt.as_deref().unwrap_or_default();
            let t = rt.client.refresh(&d, old_rt).await?;
            let now = crate::unix_now();
            if let Some(idt) = &t.id_token {
                let claims = oidc::verify_id_token(
                    idt,
                    &rt.id_issuer,
                    None,
                    config.limits.max_token_bytes,
                    now,
                )
                .await?;
                if claims.get("sub").and_then(|v| v.as_str()) != Some(s.sub.as_str()) {
                    return Err(OidcError::IdToken(
                        "the refreshed ID token names another subject".into(),
                    ));
                }
            }
            let mut next = (*s).clone();
            next.at_exp = token_exp(&t, now);
            next.at_iat = now;
            next.at = t.access_token;
            if t.refresh_token.is_some() {
                next.rt = t.refresh_token;
            }
            if t.id_token.is_some() {
                next.idt = t.id_token;
            }
            Ok::<_, OidcError>(Arc::new(next))
        }
        .await;
        match result {
            Ok(next) => {
                metrics.sessions.with_label_values(&["refresh"]).inc();
                Ok(next)
            }
            Err(e) => {
                metrics
                    .sessions
                    .with_label_values(&["refresh_failed"])
                    .inc();
                tracing::warn!(error = %e, "session refresh failed");
                Err(match e {
                    OidcError::Refused { .. } | OidcError::IdToken(_) => Failure::Refused,
                    _ => Failure::Unavailable,
                })
            }
        }
    }
}

/// When an access token expires: its JWT `exp`, else `expires_in`, else in 5 minutes (a
/// provider that says nothing gets refreshed early rather than late).
pub fn token_exp(t: &oidc::Tokens, now: i64) -> i64 {
    oidc::unverified_claims(&t.access_token)
        .and_then(|c| c.get("exp").and_then(|e| e.as_i64()))
        .or_else(|| {
            t.expires_in
                .filter(|e| e.is_finite() && *e > 0.0)
                .map(|e| now + e.min(1e9) as i64)
        })
        .unwrap_or(now + 300)
}

/// The session sealed in a cookie value.
pub fn open_session(rt: &Runtime, value: &str) -> Option<Session> {
    let plain = rt.keyring.open(cookie::SESSION_COOKIE, value)?;
    serde_json::from_slice(&plain).ok()
}

/// The `Set-Cookie` values of a session; `Err(bytes)` when it does not fit two cookies.
pub fn seal_session(
    rt: &Runtime,
    s: &Session,
    now: i64,
    had_second: bool,
) -> Result<Vec<HeaderValue>, usize> {
    seal_cookie(
        rt,
        &serde_json::to_vec(s).unwrap_or_default(),
        s.exp - now,
        had_second,
    )
}

/// The `Set-Cookie` values of a session cookie holding `plain` (a session, or a Redis handle).
pub fn seal_cookie(
    rt: &Runtime,
    plain: &[u8],
    max_age_secs: i64,
    had_second: bool,
) -> Result<Vec<HeaderValue>, usize> {
    let sealed = rt.keyring.seal(cookie::SESSION_COOKIE, plain);
    cookie::session_cookies(&sealed, max_age_secs, had_second)
}

/// `explain --cookie`: opens a session cookie (its value, or a whole Cookie header) with the
/// snapshot's keyring; returns a description of the session and the token a request would
/// verify, or why it does not open.
pub fn explain_cookie(
    snap: &crate::state::Snapshot,
    cookie_text: &str,
    now: i64,
) -> Result<(String, String), String> {
    let rt = snap
        .session
        .as_ref()
        .ok_or("the config has no [session]: no session cookie can be opened")?;
    let text = cookie_text.trim();
    let value = if text.contains('=') {
        let mut h = http::HeaderMap::new();
        let v = HeaderValue::from_str(text).map_err(|_| "the cookie text is not a header value")?;
        h.insert(header::COOKIE, v);
        let jar = cookie::jar(&h);
        cookie::session_value(&jar)
            .map(|v| v.into_owned())
            .ok_or("the Cookie header holds no __Host-jwtgate cookie")?
    } else {
        text.to_owned()
    };
    let s = open_session(rt, &value).ok_or(
        "the cookie does not open: tampered, sealed for another cookie name, or by a key not in cookie_keys_file",
    )?;
    let rel = |t: i64| {
        if t >= now {
            format!("{t} (in {}s)", t - now)
        } else {
            format!("{t} ({}s ago)", now - t)
        }
    };
    let mut detail = format!(
        "sub={} sid={} created {}; absolute expiry {}; idle expiry {}; access token expires {}, refresh due {}; refresh token: {}",
        s.sub,
        s.sid.as_deref().unwrap_or("(none)"),
        rel(s.iat),
        rel(s.exp),
        rel(s.idle),
        rel(s.at_exp),
        rel(refresh::refresh_at(s.at_iat, s.at_exp)),
        if s.rt.is_some() { "yes" } else { "no" },
    );
    if now >= s.exp || now >= s.idle {
        return Err(format!("the session has expired: {detail}"));
    }
    let token = match s.idt {
        Some(idt) if !oidc::is_jwt(&s.at) => {
            detail.push_str("; the access token is not a JWT: the ID token's claims are forwarded");
            idt
        }
        _ => s.at,
    };
    Ok((detail, token))
}

/// The origin browsers use for this gateway: `external_url`, else the request's scheme and
/// Host.
pub fn origin(cfg: &SessionConfig, host: Option<&HeaderValue>, tls: bool) -> Option<String> {
    if let Some(u) = &cfg.external_url {
        return Some(u.clone());
    }
    let host = host?.to_str().ok()?;
    Some(format!("{}://{host}", if tls { "https" } else { "http" }))
}

/// True for a browser navigation (GET or HEAD asking for HTML, and not a script's fetch):
/// those are sent to log in; everything else gets a 401.
pub fn is_navigation(method: &http::Method, headers: &http::HeaderMap) -> bool {
    if method != http::Method::GET && method != http::Method::HEAD {
        return false;
    }
    if let Some(mode) = headers.get("sec-fetch-mode") {
        if mode.as_bytes() != b"navigate" {
            return false;
        }
    }
    headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().starts_with("text/html")))
    })
}

/// A same-origin return path: the path and query the browser asked for, never a
/// scheme-relative or backslash form that a browser would read as another host.
pub fn return_path(path: &str, query: Option<&str>) -> String {
    let mut out = if !path.starts_with('/') || path.starts_with("//") || path.contains('\\') {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The 302 to the provider that starts a login, with its transaction cookie.
pub async fn login_redirect(
    sessions: &Sessions,
    rt: &Runtime,
    cfg: &SessionConfig,
    origin: &str,
    return_to: String,
    opts: &LoginOptions,
    now: i64,
) -> Result<Answer, OidcError> {
    let d = sessions.discovery(rt).await?;
    let state = oidc::random(16);
    let tx = Transaction {
        v: oidc::random(32),
        nonce: oidc::random(16),
        to: return_to,
        exp: now + TX_LIFETIME_SECS,
        max_age: opts.max_age,
        acr_values: opts.acr_values.clone(),
    };
    let redirect_uri = format!("{origin}{CALLBACK_PATH}");
    let location = oidc::authorize_url(&d, cfg, &redirect_uri, &state, &tx.nonce, &tx.v, opts);
    let name = format!("{}{state}", cookie::TX_COOKIE_PREFIX);
    let sealed = rt
        .keyring
        .seal(&name, &serde_json::to_vec(&tx).unwrap_or_default());
    let mut res = redirect(StatusCode::FOUND, &location);
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie::set_cookie(&name, &sealed, TX_LIFETIME_SECS),
    );
    Ok(res)
}

/// A redirect answer (never cached).
pub fn redirect(status: StatusCode, location: &str) -> Answer {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    if let Ok(l) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, l);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A small HTML page for browsers (login failures, a session too large).
pub fn page(status: StatusCode, title: &str, text: &str) -> Answer {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{x}</p></body></html>\n",
        t = html_escape(title),
        x = html_escape(text)
    );
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'"),
    );
    res
}

/// The 503 page of a provider that cannot be reached now, with `Retry-After`.
pub fn unavailable_page(text: &str) -> Answer {
    let mut a = page(StatusCode::SERVICE_UNAVAILABLE, "Try again shortly", text);
    a.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    a
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_this_origin() {
        assert_eq!(return_path("/a/b", Some("x=1")), "/a/b?x=1");
        assert_eq!(return_path("//evil.example/", None), "/");
        assert_eq!(return_path("/\\evil.example/", None), "/");
        assert_eq!(return_path("https://evil.example/", None), "/");
    }

    #[test]
    fn only_html_navigations_are_sent_to_log_in() {
        let mut h = http::HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        assert!(is_navigation(&http::Method::GET, &h));
        assert!(!is_navigation(&http::Method::POST, &h));
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        assert!(!is_navigation(&http::Method::GET, &h));
        let mut api = http::HeaderMap::new();
        api.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!is_navigation(&http::Method::GET, &api));
    }
}

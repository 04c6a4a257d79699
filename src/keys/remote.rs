//! Keys fetched from a JWKS URL (directly or through OIDC discovery): fetched before the
//! gateway is ready, refreshed every `refresh` (or sooner, by `Cache-Control: max-age`), refetched
//! at once (at most once a second) when a token names an unknown kid, and kept when a fetch
//! fails.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{oneshot, watch, Notify};
// tokio's clock rather than std's: the same instant in production, and the one a paused-clock
// test advances, so the schedule below can be tested exactly.
use tokio::time::Instant;

use super::{jwks, KeySet};
use crate::config::{IssuerConfig, KeySource};
use crate::metrics::Metrics;
use crate::unix_now;

/// A fetch (discovery and JWKS each) gives up after this long.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Never refresh more often than this, whatever `max-age` says.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// Unknown-kid refetches are at most this frequent per issuer.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// A request naming an unknown kid waits at most this long for the refetch.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(2);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A JWKS or discovery document larger than this is refused.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a fetch failed; logged and counted, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error("GET {url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: timed out after {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url}: {message}")]
    Document { url: String, message: String },
}

/// The client for every fetch towards an issuer (keys, and the session's token endpoint): it
/// never follows a redirect.
pub(crate) type FetchClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The one fetch client of the process.
pub(crate) fn client() -> &'static FetchClient {
    static CLIENT: OnceLock<FetchClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                // The aws-lc-rs provider always supports the default versions.
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new()).build(https)
    })
}

/// GETs a document; returns its body and its `max-age`, if any.
pub(crate) async fn get(url: &str) -> Result<(Bytes, Option<Duration>), FetchError> {
    let http_err = |message: String| FetchError::Http {
        url: url.to_owned(),
        message,
    };
    let uri: http::Uri = url.parse().map_err(|e| http_err(format!("{e}")))?;
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("jwtgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| http_err(e.to_string()))?;
    let work = async {
        let res = client()
            .request(req)
            .await
            .map_err(|e| http_err(error_chain(&e)))?;
        if res.status() != http::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: res.status().as_u16(),
            });
        }
        let max_age = max_age(res.headers());
        let body = Limited::new(res.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| http_err(format!("reading the body: {e}")))?
            .to_bytes();
        Ok((body, max_age))
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_owned(),
        })?
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// `max-age` from `Cache-Control`; `no-store`/`no-cache` count as zero.
fn max_age(h: &http::HeaderMap) -> Option<Duration> {
    let mut out = None;
    for v in h.get_all(http::header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for d in v.split(',').map(str::trim) {
            if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
                return Some(Duration::ZERO);
            }
            if let Some(n) = d
                .split_once('=')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("max-age"))
                .and_then(|(_, n)| n.trim().trim_matches('"').parse::<u64>().ok())
            {
                out = Some(Duration::from_secs(n));
            }
        }
    }
    out
}

/// What a discovery document yields: its `jwks_uri`, once the document is trusted. The
/// `issuer` must equal the configured one exactly (OpenID Connect Discovery §4.3), so a
/// document for another issuer (or a spoofed one) never supplies keys; the `jwks_uri` gets the
/// checks a configured `jwks_url` gets (an http(s) URL without credentials), and an https
/// discovery never leads to a plain-http key set (a downgrade anyone on the path could serve).
/// Messages never quote a URL that carries credentials.
/// Why a key URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlProblem {
    /// Not an absolute `http://` or `https://` URL.
    NotHttp,
    /// `user@host`: the credentials would show in logs and `/config`.
    Credentials,
}

/// The check every key URL passes, configured (`jwks_url`, `discovery_url`) or discovered
/// (`jwks_uri`): an absolute http(s) URL without credentials.
pub fn key_url_problem(uri: &http::Uri) -> Option<UrlProblem> {
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => Some(UrlProblem::Credentials),
        Some(_) if matches!(uri.scheme_str(), Some("http" | "https")) => None,
        _ => Some(UrlProblem::NotHttp),
    }
}

fn discovered_jwks_uri(
    discovery_url: &str,
    expected_iss: &str,
    doc: &[u8],
) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(doc)
        .map_err(|e| format!("the discovery document is not JSON: {e}"))?;
    match v.get("issuer") {
        Some(serde_json::Value::String(i)) if i == expected_iss => {}
        Some(serde_json::Value::String(i)) => {
            return Err(format!(
                "the discovery document's issuer {:?} does not equal the configured issuer {expected_iss:?} (OpenID Connect Discovery 4.3 requires them to be identical)",
                i.chars().take(200).collect::<String>()
            ))
        }
        _ => {
            return Err(
                "the discovery document has no issuer string (OpenID Connect Discovery 4.3 requires one equal to the configured issuer)"
                    .into(),
            )
        }
    }
    let Some(raw) = v.get("jwks_uri").and_then(serde_json::Value::as_str) else {
        return Err("the discovery document has no jwks_uri string".into());
    };
    let uri: http::Uri = raw
        .parse()
        .map_err(|_| "the discovery document's jwks_uri is not a URL".to_owned())?;
    match key_url_problem(&uri) {
        Some(UrlProblem::Credentials) => {
            return Err(
                "the discovery document's jwks_uri carries credentials (user@host); refused, as a configured jwks_url would be"
                    .into(),
            )
        }
        Some(UrlProblem::NotHttp) if uri.authority().is_none() => {
            return Err(
                "the discovery document's jwks_uri is not an absolute http(s) URL".into(),
            )
        }
        Some(UrlProblem::NotHttp) => {
            return Err(
                "the discovery document's jwks_uri must be an http:// or https:// URL".into(),
            )
        }
        None => {}
    }
    let https_discovery = discovery_url
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"));
    if https_discovery && uri.scheme_str() == Some("http") {
        return Err(
            "the discovery document's jwks_uri is http:// but discovery_url is https://; a downgrade is refused"
                .into(),
        );
    }
    Ok(raw.to_owned())
}

/// What one fetch yields: the keys, the entries skipped (with why), and the `max-age`.
pub type Fetched = (KeySet, Vec<String>, Option<Duration>);

/// Fetches the key set of an issuer once: its JWKS URL, or discovery then its `jwks_uri`.
pub async fn fetch(issuer: &IssuerConfig) -> Result<Fetched, FetchError> {
    let (source, algorithms) = (&issuer.source, &issuer.algorithms[..]);
    let jwks_url = match source {
        KeySource::JwksUrl(u) => u.clone(),
        KeySource::DiscoveryUrl(u) => {
            let (doc, _) = get(u).await?;
            discovered_jwks_uri(u, &issuer.issuer, &doc).map_err(|message| {
                FetchError::Document {
                    url: u.clone(),
                    message,
                }
            })?
        }
        other => {
            return Err(FetchError::Document {
                url: format!("{other:?}"),
                message: "not a remote key source".into(),
            })
        }
    };
    let (body, max_age) = get(&jwks_url).await?;
    // Symmetric keys are never taken from a URL: anyone who can serve that document (or see
    // it in transit) could mint tokens.
    let parsed = jwks::parse(&body, algorithms, false).map_err(|e| FetchError::Document {
        url: jwks_url.clone(),
        message: e.to_string(),
    })?;
    if parsed.keys.is_empty() {
        return Err(FetchError::Document {
            url: jwks_url,
            message: format!(
                "no usable key for this issuer's algorithms ({})",
                parsed.skipped.join("; ")
            ),
        });
    }
    Ok((KeySet::new(parsed.keys), parsed.skipped, max_age))
}

struct Inner {
    /// The issuer's `name`, for metrics and logs.
    issuer: String,
    /// The issuer's config as this refresher was started with it.
    config: IssuerConfig,
    current: ArcSwapOption<KeySet>,
    /// Counts started fetch attempts.
    started: std::sync::atomic::AtomicU64,
    /// Counts finished fetch attempts; a waiter waits for one that started after it asked.
    attempts: watch::Sender<u64>,
    wake: Notify,
    next_attempt_unix: AtomicI64,
    metrics: Metrics,
}

/// The live keys of one remote issuer, shared by every snapshot whose issuer has the same
/// source, so a config reload keeps them (no gap, no refetch storm). The refresh task stops
/// when the last snapshot holding this drops it.
pub struct RemoteKeys {
    inner: Arc<Inner>,
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("issuer", &self.inner.issuer)
            .field("loaded", &self.keys().map(|k| k.len()))
            .finish()
    }
}

impl RemoteKeys {
    /// Starts the refresh task for an issuer; the first fetch begins at once.
    pub fn start(issuer: &IssuerConfig, metrics: Metrics) -> RemoteKeys {
        RemoteKeys::start_with(
            issuer,
            metrics,
            |inner: Arc<Inner>| async move { fetch(&inner.config).await },
            jitter,
        )
    }

    /// [`RemoteKeys::start`] with the fetch and the jitter given, so tests can script the
    /// provider and check the schedule under a paused clock.
    fn start_with<F, Fut>(
        issuer: &IssuerConfig,
        metrics: Metrics,
        fetch: F,
        jitter: fn(Duration) -> Duration,
    ) -> RemoteKeys
    where
        F: FnMut(Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fetched, FetchError>> + Send + 'static,
    {
        let (attempts, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            issuer: issuer.name.clone(),
            config: issuer.clone(),
            current: ArcSwapOption::empty(),
            started: std::sync::atomic::AtomicU64::new(0),
            attempts,
            wake: Notify::new(),
            next_attempt_unix: AtomicI64::new(unix_now()),
            metrics,
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(refresh_loop(inner.clone(), stopped, fetch, jitter));
        RemoteKeys { inner, _stop: stop }
    }

    /// True when this fetches what `issuer` asks for (so a reload may keep it): the same
    /// name, source, algorithms, refresh and expected `iss` (discovery checks it).
    pub fn serves(&self, issuer: &IssuerConfig) -> bool {
        let c = &self.inner.config;
        c.name == issuer.name
            && c.source == issuer.source
            && c.algorithms == issuer.algorithms
            && c.refresh == issuer.refresh
            && c.issuer == issuer.issuer
    }

    /// The keys, once the first fetch has succeeded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.inner.current.load_full()
    }

    /// Whole seconds until the next fetch attempt, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        let next = self.inner.next_attempt_unix.load(Ordering::Relaxed);
        u64::try_from(next - unix_now()).unwrap_or(0).max(1)
    }

    /// Asks for a refetch because a token named an unknown kid, and waits (at most
    /// [`UNKNOWN_KID_WAIT`]) for the next fetch attempt to finish. Many callers share one fetch.
    pub async fn refetch(&self) -> Option<Arc<KeySet>> {
        let mut rx = self.inner.attempts.subscribe();
        // A fetch already in flight may have read the document before the rotation this
        // request depends on: wait for one that starts after now. Fetches run one at a time,
        // so that one has finished when the finished count passes the started count.
        let started = self.inner.started.load(Ordering::SeqCst);
        self.inner.wake.notify_one();
        let _ = tokio::time::timeout(UNKNOWN_KID_WAIT, rx.wait_for(|n| *n > started)).await;
        self.keys()
    }

    /// Waits until the first fetch attempt finished (successfully or not), at most `limit`.
    pub async fn first_attempt(&self, limit: Duration) {
        let mut rx = self.inner.attempts.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n > 0)).await;
    }
}

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut b);
    // 75% to 125% of `d`, so many gateways restarted together do not fetch in lockstep.
    let f = 0.75 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) * 0.5;
    d.mul_f64(f)
}

/// How long a successful fetch is trusted: `refresh`, or a shorter `max-age`, never below
/// [`MIN_REFRESH`].
fn refresh_wait(refresh: Duration, max_age: Option<Duration>) -> Duration {
    max_age.map_or(refresh, |m| m.min(refresh)).max(MIN_REFRESH)
}

async fn refresh_loop<F, Fut>(
    inner: Arc<Inner>,
    mut stopped: oneshot::Receiver<()>,
    mut fetch: F,
    jitter: fn(Duration) -> Duration,
) where
    F: FnMut(Arc<Inner>) -> Fut,
    Fut: Future<Output = Result<Fetched, FetchError>>,
{
    let mut backoff = BACKOFF_START;
    let labels = [inner.issuer.as_str()];
    // The last failure logged: the same failure again (every backoff step) is logged at debug
    // level only, so a broken provider gives one warning, not one every few seconds.
    let mut last_failure: Option<String> = None;
    let refresh = inner.config.refresh;
    loop {
        let started = Instant::now();
        inner.started.fetch_add(1, Ordering::SeqCst);
        let wait = match fetch(inner.clone()).await {
            Ok((keys, skipped, max_age)) => {
                if last_failure.take().is_some() {
                    tracing::info!(issuer = %inner.issuer, keys = keys.len(), "JWKS fetch succeeded again");
                }
                for s in &skipped {
                    tracing::debug!(issuer = %inner.issuer, "JWKS entry skipped: {s}");
                }
                inner
                    .metrics
                    .keys_loaded
                    .with_label_values(&labels)
                    .set(keys.len() as i64);
                inner
                    .metrics
                    .key_refresh
                    .with_label_values(&[inner.issuer.as_str(), "success"])
                    .inc();
                inner
                    .metrics
                    .key_refresh_last_success
                    .with_label_values(&labels)
                    .set(unix_now() as f64);
                inner.current.store(Some(Arc::new(keys)));
                backoff = BACKOFF_START;
                refresh_wait(refresh, max_age)
            }
            Err(e) => {
                inner
                    .metrics
                    .key_refresh
                    .with_label_values(&[inner.issuer.as_str(), "failure"])
                    .inc();
                let keeping = inner.current.load().is_some();
                let message = e.to_string();
                if last_failure.as_deref() == Some(message.as_str()) {
                    tracing::debug!(issuer = %inner.issuer, error = %message, keeping_last_good_keys = keeping, "JWKS fetch failed again");
                } else {
                    tracing::warn!(issuer = %inner.issuer, error = %message, keeping_last_good_keys = keeping, "JWKS fetch failed");
                    last_failure = Some(message);
                }
                let wait = jitter(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                wait
            }
        };
        inner.next_attempt_unix.store(
            unix_now() + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2),
            Ordering::Relaxed,
        );
        inner.attempts.send_modify(|n| *n += 1);
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(wait) => {}
            () = inner.wake.notified() => {
                // Rate limit: a flood of unknown kids costs at most one fetch a second.
                if let Some(rest) = MIN_REFETCH_INTERVAL.checked_sub(started.elapsed()) {
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(rest) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::discovered_jwks_uri;

    const ISS: &str = "https://idp.test/";

    fn doc(issuer: &str, jwks_uri: &str) -> Vec<u8> {
        serde_json::json!({ "issuer": issuer, "jwks_uri": jwks_uri })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_issuer_must_equal_the_configured_one_exactly() {
        let https = "https://idp.test/.well-known/openid-configuration";
        let ok = discovered_jwks_uri(https, ISS, &doc(ISS, "https://idp.test/keys"));
        assert_eq!(ok.as_deref(), Ok("https://idp.test/keys"));
        for other in [
            "https://idp.test",
            "https://IDP.test/",
            "https://evil.test/",
            "",
        ] {
            let e = discovered_jwks_uri(https, ISS, &doc(other, "https://idp.test/keys"));
            assert!(e.is_err_and(|e| e.contains("does not equal")), "{other:?}");
        }
        let missing = br#"{"jwks_uri":"https://idp.test/keys"}"#;
        assert!(discovered_jwks_uri(https, ISS, missing).is_err());
        let not_string = br#"{"issuer":null,"jwks_uri":"https://idp.test/keys"}"#;
        assert!(discovered_jwks_uri(https, ISS, not_string).is_err());
    }

    #[test]
    fn an_https_discovery_never_yields_an_http_or_credentialed_jwks_uri() {
        let https = "https://idp.test/.well-known/openid-configuration";
        let http = "http://idp.test/.well-known/openid-configuration";
        for uri in [
            "http://idp.test/keys",
            "HTTP://idp.test/keys",
            "http://127.0.0.1/keys",
        ] {
            for discovery in [https, "HTTPS://idp.test/.well-known/openid-configuration"] {
                let e = discovered_jwks_uri(discovery, ISS, &doc(ISS, uri));
                assert!(e.is_err_and(|e| e.contains("downgrade")), "{uri}");
            }
        }
        assert!(discovered_jwks_uri(http, ISS, &doc(ISS, "http://idp.test/keys")).is_ok());
        assert!(discovered_jwks_uri(http, ISS, &doc(ISS, "https://idp.test/keys")).is_ok());
        for uri in [
            "https://user:pw@idp.test/keys",
            "https://pw@idp.test/keys",
            "ftp://idp.test/keys",
            "file:///etc/passwd",
            "/keys",
            "idp.test/keys",
        ] {
            let e = discovered_jwks_uri(https, ISS, &doc(ISS, uri)).expect_err(uri);
            assert!(!e.contains("pw@"), "never quoted: {e}");
        }
    }
}

/// The refresh schedule under tokio's paused clock: a scripted provider (no sockets) records
/// when each fetch began, and time advances only when every task waits, so each instant is
/// exact and no test waits in real time.
#[cfg(test)]
mod schedule {
    use std::sync::Mutex;

    use super::*;
    use crate::config::Loc;

    /// What the scripted provider does on one fetch.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Keys, with this `max-age`.
        Keys(Option<Duration>),
        /// A failed fetch.
        Fail,
        /// Keys, after this long in flight.
        SlowKeys(Duration),
    }

    /// A provider answering `steps` in turn (the last one forever), recording start times.
    struct Provider {
        steps: Vec<Step>,
        began: Mutex<Vec<Instant>>,
    }

    impl Provider {
        /// The start of each fetch, relative to `t0`.
        fn offsets(&self, t0: Instant) -> Vec<Duration> {
            let began = self.began.lock().expect("lock");
            began.iter().map(|t| *t - t0).collect()
        }
    }

    fn issuer(refresh: Duration) -> IssuerConfig {
        IssuerConfig {
            name: "remote".into(),
            issuer: "https://idp.test/".into(),
            audiences: vec!["api".into()],
            algorithms: vec![],
            source: KeySource::JwksUrl("https://idp.test/keys".into()),
            source_loc: Loc::default(),
            leeway: Duration::ZERO,
            refresh,
            typ: vec![],
            dpop: Default::default(),
        }
    }

    /// Starts a refresher on a scripted provider; jitter off unless `jitter` says otherwise.
    fn start(
        refresh: Duration,
        steps: &[Step],
        jitter: fn(Duration) -> Duration,
    ) -> (RemoteKeys, Arc<Provider>) {
        let p = Arc::new(Provider {
            steps: steps.to_vec(),
            began: Mutex::new(Vec::new()),
        });
        let provider = p.clone();
        let fetch = move |_: Arc<Inner>| {
            let p = provider.clone();
            async move {
                let step = {
                    let mut began = p.began.lock().expect("lock");
                    began.push(Instant::now());
                    p.steps[(began.len() - 1).min(p.steps.len() - 1)]
                };
                match step {
                    Step::Keys(max_age) => Ok((KeySet::default(), Vec::new(), max_age)),
                    Step::SlowKeys(took) => {
                        tokio::time::sleep(took).await;
                        Ok((KeySet::default(), Vec::new(), None))
                    }
                    Step::Fail => Err(FetchError::Status {
                        url: "https://idp.test/keys".into(),
                        status: 503,
                    }),
                }
            }
        };
        let keys = RemoteKeys::start_with(&issuer(refresh), Metrics::new(), fetch, jitter);
        (keys, p)
    }

    fn no_jitter(d: Duration) -> Duration {
        d
    }

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    /// Lets the refresher run until the paused clock reaches `t0 + at`.
    async fn until(t0: Instant, at: u64) {
        tokio::time::sleep_until(t0 + Duration::from_secs(at)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_runs_every_refresh_period() {
        let t0 = Instant::now();
        let (_keys, p) = start(Duration::from_secs(5), &[Step::Keys(None)], no_jitter);
        until(t0, 16).await;
        assert_eq!(p.offsets(t0), secs(&[0, 5, 10, 15]));
        let t0 = Instant::now();
        let (_keys, p) = start(Duration::from_secs(60), &[Step::Keys(None)], no_jitter);
        until(t0, 130).await;
        assert_eq!(p.offsets(t0), secs(&[0, 60, 120]));
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_shortens_the_refresh_but_never_below_5s() {
        let cases: [(u64, Option<u64>, &[u64]); 5] = [
            // max-age=1 with refresh = 5 min: the 5 s floor, not sooner and not at refresh.
            (300, Some(1), &[0, 5, 10, 15, 20]),
            // no-store / no-cache count as max-age 0: the floor too.
            (300, Some(0), &[0, 5, 10, 15, 20]),
            (300, Some(7), &[0, 7, 14, 21]),
            // A max-age longer than refresh does not lengthen it.
            (10, Some(600), &[0, 10, 20]),
            (300, None, &[0]),
        ];
        for (refresh, max_age, want) in cases {
            let step = Step::Keys(max_age.map(Duration::from_secs));
            let t0 = Instant::now();
            let (keys, p) = start(Duration::from_secs(refresh), &[step], no_jitter);
            until(t0, 22).await;
            assert_eq!(
                p.offsets(t0),
                secs(want),
                "refresh {refresh}s, max-age {max_age:?}"
            );
            drop(keys);
        }
        assert_eq!(refresh_wait(Duration::from_secs(1), None), MIN_REFRESH);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_from_1s_doubling_to_10s_and_a_success_resets_it() {
        let t0 = Instant::now();
        let (keys, p) = start(Duration::from_secs(300), &[Step::Fail], no_jitter);
        until(t0, 60).await;
        // Gaps 1, 2, 4, 8, then 10 s for good.
        assert_eq!(
            p.offsets(t0),
            secs(&[0, 1, 3, 7, 15, 25, 35, 45, 55]),
            "backoff schedule"
        );
        assert!(keys.keys().is_none());

        let t0 = Instant::now();
        let steps = [Step::Fail, Step::Fail, Step::Keys(None), Step::Fail];
        let (keys, p) = start(Duration::from_secs(5), &steps, no_jitter);
        until(t0, 12).await;
        // 1 s, 2 s, then refresh (5 s) after the success, then 1 s again: the backoff restarted.
        assert_eq!(p.offsets(t0), secs(&[0, 1, 3, 8, 9, 11]));
        assert!(keys.keys().is_some(), "the last good keys are kept");
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_each_backoff_step_between_75_and_125_percent() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_secs(8));
            assert!(
                (Duration::from_secs(6)..=Duration::from_secs(10)).contains(&j),
                "{j:?}"
            );
        }
        // The schedule applies jitter to every failure wait, and to nothing else.
        fn longest(d: Duration) -> Duration {
            d.mul_f64(1.25)
        }
        let t0 = Instant::now();
        let steps = [Step::Fail, Step::Fail, Step::Keys(None)];
        let (_keys, p) = start(Duration::from_secs(5), &steps, longest);
        until(t0, 10).await;
        let want = [0, 1250, 3750, 8750].map(Duration::from_millis).to_vec();
        assert_eq!(p.offsets(t0), want);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kid_refetches_are_at_most_one_a_second() {
        let t0 = Instant::now();
        let (keys, p) = start(Duration::from_secs(300), &[Step::Keys(None)], no_jitter);
        let keys = Arc::new(keys);
        keys.first_attempt(Duration::from_secs(1)).await;
        // A flood: a refetch every 100 ms for 3.5 s.
        let mut flood = Vec::new();
        for i in 0..35u64 {
            let k = keys.clone();
            flood.push(tokio::spawn(async move {
                tokio::time::sleep_until(t0 + Duration::from_millis(100 * i)).await;
                let asked = Instant::now();
                let got = k.refetch().await;
                (asked, Instant::now(), got.is_some())
            }));
        }
        for task in flood {
            let (asked, answered, got) = task.await.expect("task");
            assert!(got, "keys after a refetch");
            // Each request waits for the next fetch, which is never more than 1 s away.
            assert!(
                answered - asked <= Duration::from_secs(1),
                "{:?}",
                answered - asked
            );
        }
        until(t0, 20).await;
        // One fetch a second while the flood lasts, and one more at 5 s for the wake-up the
        // last requests left (they were answered by the fetch at 4 s).
        assert_eq!(p.offsets(t0), secs(&[0, 1, 2, 3, 4, 5]));
        // A lone refetch long after the last fetch is served at once.
        let asked = Instant::now();
        keys.refetch().await;
        assert_eq!(
            Instant::now(),
            asked,
            "no wait when the last fetch is over 1 s old"
        );
        assert_eq!(p.offsets(t0), secs(&[0, 1, 2, 3, 4, 5, 20]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_at_most_2s_for_a_slow_refetch() {
        let t0 = Instant::now();
        let steps = [Step::Keys(None), Step::SlowKeys(Duration::from_secs(5))];
        let (keys, p) = start(Duration::from_secs(300), &steps, no_jitter);
        keys.first_attempt(Duration::from_secs(1)).await;
        let before = keys.keys().expect("first keys");
        until(t0, 3).await;
        let asked = Instant::now();
        let got = keys.refetch().await.expect("the last good keys");
        assert_eq!(Instant::now() - asked, UNKNOWN_KID_WAIT);
        assert!(
            Arc::ptr_eq(&got, &before),
            "the slow fetch has not finished"
        );
        assert_eq!(p.offsets(t0), secs(&[0, 3]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refetch_waits_for_a_fetch_that_began_after_it_asked() {
        let t0 = Instant::now();
        // The first refetch's fetch is in flight for 800 ms; a second request asks meanwhile.
        let steps = [
            Step::Keys(None),
            Step::SlowKeys(Duration::from_millis(800)),
            Step::Keys(None),
        ];
        let (keys, p) = start(Duration::from_secs(300), &steps, no_jitter);
        let keys = Arc::new(keys);
        keys.first_attempt(Duration::from_secs(1)).await;
        until(t0, 2).await;
        let k = keys.clone();
        let first = tokio::spawn(async move { k.refetch().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let asked = Instant::now();
        let got = keys.refetch().await.expect("keys");
        let in_flight = first.await.expect("task").expect("keys");
        assert!(!Arc::ptr_eq(&got, &in_flight), "answered by a later fetch");
        // The in-flight fetch ends at 2.8 s; the next may start 1 s after the last began (3 s).
        assert_eq!(
            p.offsets(t0),
            [0, 2000, 3000].map(Duration::from_millis).to_vec()
        );
        assert_eq!(Instant::now() - asked, Duration::from_millis(900));
    }
}

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
use http_body_util::{BodyExt, Empty, Limited};
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

type FetchClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn client() -> &'static FetchClient {
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
async fn get(url: &str) -> Result<(Bytes, Option<Duration>), FetchError> {
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
        .body(Empty::new())
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

fn error_chain(e: &dyn std::error::Error) -> String {
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
    let Some(authority) = uri.authority() else {
        return Err("the discovery document's jwks_uri is not an absolute http(s) URL".into());
    };
    if authority.as_str().contains('@') {
        return Err(
            "the discovery document's jwks_uri carries credentials (user@host); refused, as a configured jwks_url would be"
                .into(),
        );
    }
    let https_discovery = discovery_url
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"));
    match (uri.scheme_str(), https_discovery) {
        (Some("https"), _) | (Some("http"), false) => Ok(raw.to_owned()),
        (Some("http"), true) => Err(
            "the discovery document's jwks_uri is http:// but discovery_url is https://; a downgrade is refused"
                .into(),
        ),
        _ => Err("the discovery document's jwks_uri must be an http:// or https:// URL".into()),
    }
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

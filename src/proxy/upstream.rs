//! Pooled upstream clients (plain HTTP, HTTPS with a CA bundle or system roots, HTTP/2 where a
//! route asks for it) and the mapping of their failures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};

use super::answer::UpstreamKind;
use crate::config::{Config, RouteConfig};
use crate::tls::{provider, read_certs, TlsError};

/// A pooled client; one per distinct [`ClientKey`], shared by the routes that need it.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, super::body::IdleTimeout>;

/// How long an idle pooled connection is kept: below common upstream keep-alive timeouts
/// (nginx 75 s) so we rarely reuse a connection the upstream is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// What makes two routes need different clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    pub ca: Option<PathBuf>,
    /// A hash of the CA file's bytes, so a changed bundle gets a new client on reload.
    pub ca_hash: u64,
    pub http2: bool,
    pub connect_timeout: Duration,
}

impl ClientKey {
    /// The key for a route.
    pub fn for_route(route: &RouteConfig, config: &Config) -> ClientKey {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Some(ca) = &route.upstream_ca {
            crate::files::read_capped(ca, crate::files::MAX_CERT_FILE_BYTES)
                .ok()
                .hash(&mut h);
        }
        ClientKey {
            ca: route.upstream_ca.clone(),
            ca_hash: h.finish(),
            http2: route.upstream_http2,
            connect_timeout: config.limits.upstream_connect_timeout,
        }
    }
}

/// Builds a pooled client for `key`.
pub fn client(key: &ClientKey) -> Result<UpstreamClient, TlsError> {
    let mut roots = RootCertStore::empty();
    match &key.ca {
        Some(ca) => {
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| TlsError::Invalid {
                    path: ca.clone(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
        None => {
            // A machine without system roots still serves http:// upstreams; https ones then
            // fail with a TLS error (502) that says so.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let tls = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(key.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = if key.http2 {
        builder.enable_all_versions().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if key.http2 {
        // Over https ALPN picks h2; over http this means prior knowledge.
        b.http2_only(true);
    }
    Ok(b.build(connector))
}

/// The clients of a snapshot: one per distinct key, reused from the previous snapshot when
/// the key is unchanged so a reload keeps warm connections.
#[derive(Debug, Default)]
pub struct Clients {
    clients: Vec<(ClientKey, Arc<UpstreamClient>)>,
    /// For each route (by index), its client in `clients`.
    by_route: Vec<usize>,
}

impl Clients {
    /// Builds (or reuses from `previous`) a client for every route.
    pub fn build(
        config: &Config,
        previous: Option<&Clients>,
    ) -> Result<Clients, (usize, TlsError)> {
        let mut out = Clients::default();
        for (i, route) in config.routes.iter().enumerate() {
            let key = ClientKey::for_route(route, config);
            let idx = match out.clients.iter().position(|(k, _)| *k == key) {
                Some(idx) => idx,
                None => {
                    let reused = previous
                        .and_then(|p| p.clients.iter().find(|(k, _)| *k == key))
                        .map(|(_, c)| c.clone());
                    let c = match reused {
                        Some(c) => c,
                        None => Arc::new(client(&key).map_err(|e| (i, e))?),
                    };
                    out.clients.push((key, c));
                    out.clients.len() - 1
                }
            };
            out.by_route.push(idx);
        }
        Ok(out)
    }

    /// The client for the route at `route`.
    pub fn for_route(&self, route: usize) -> Option<&UpstreamClient> {
        self.by_route
            .get(route)
            .and_then(|&i| self.clients.get(i))
            .map(|(_, c)| c.as_ref())
    }
}

/// Classifies a client error for the answer and the `kind` label.
pub fn classify(err: &hyper_util::client::legacy::Error) -> UpstreamKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return UpstreamKind::Tls;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return UpstreamKind::Timeout;
            }
            // hyper-rustls wraps tokio-rustls's io::Error(rustls::Error) in another io::Error,
            // and `source()` skips the inner one: follow `get_ref()` down by hand.
            let mut inner = io.get_ref();
            while let Some(i) = inner {
                if i.downcast_ref::<rustls::Error>().is_some() {
                    return UpstreamKind::Tls;
                }
                inner = i
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref());
            }
        }
        source = e.source();
    }
    if err.is_connect() {
        UpstreamKind::Connect
    } else {
        UpstreamKind::Reset
    }
}

//! The upstream client of each route (the HTTP/1 [`Pool`] of its upstream, plain or HTTPS with
//! a CA bundle or the system roots; hyper-util's multiplexed client where a route asks for
//! HTTP/2) and the mapping of their failures.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};

use super::answer::UpstreamKind;
use super::body::IdleTimeout;
use super::pool::{Pool, PoolSettings, ResponseBody, UpstreamError};
use crate::config::Config;
use crate::tls::{ca_roots, provider, read_file, TlsError};

/// The HTTP/2 client; one per distinct [`ClientKey`], shared by the routes that need it.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, super::body::IdleTimeout>;

/// How long an idle pooled connection is kept: below common upstream keep-alive timeouts
/// (nginx 75 s) so we rarely reuse a connection the upstream is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// What makes two routes need different clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// The route's `upstream_ca`; `None` for the system roots.
    pub ca: Option<PathBuf>,
    /// A hash of the CA file's bytes (0 without one), so a changed bundle gets a new client
    /// on reload.
    pub ca_hash: u64,
    /// Whether the route sets `upstream_http2`.
    pub http2: bool,
    /// `[limits] upstream_connect_timeout`.
    pub connect_timeout: Duration,
    /// An HTTP/1 route's upstream scheme and authority (its pool serves only that upstream);
    /// `None` for HTTP/2.
    pub target: Option<(Scheme, Authority)>,
}

/// A CA bundle as read once per snapshot build. The key's hash and the client's roots both
/// come from these bytes, so a file rewritten during the build cannot give a client whose
/// key describes other certificates.
struct CaFile {
    bytes: Vec<u8>,
    hash: u64,
}

impl CaFile {
    fn read(path: &Path) -> Result<CaFile, TlsError> {
        let bytes = read_file(path)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        Ok(CaFile {
            hash: h.finish(),
            bytes,
        })
    }
}

/// The TLS client config trusting the CA bundle `ca` or, without one, the system roots.
fn tls_config(ca: Option<(&Path, &CaFile)>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some((path, file)) => ca_roots(path, &file.bytes)?,
        None => {
            // A machine without system roots still serves http:// upstreams; https ones then
            // fail with a TLS error (502) that says so.
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            roots
        }
    };
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Builds the multiplexed HTTP/2 client of an `upstream_http2` route.
fn http2_client(key: &ClientKey, tls: ClientConfig) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(key.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        // Over https ALPN picks h2; over http this means prior knowledge.
        .http2_only(true);
    b.build(connector)
}

/// How a route reaches its upstream.
#[derive(Debug, Clone)]
pub enum RouteClient {
    /// The project's HTTP/1 pool for the route's upstream.
    Http1(Arc<Pool>),
    /// hyper-util's client, one multiplexed connection per upstream.
    Http2(Arc<UpstreamClient>),
}

impl RouteClient {
    /// Sends `req` (absolute-form target) upstream.
    pub async fn request(
        &self,
        req: Request<IdleTimeout>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        match self {
            RouteClient::Http1(pool) => pool.request(req).await,
            RouteClient::Http2(client) => client
                .request(req)
                .await
                .map(|res| res.map(ResponseBody::unpooled))
                .map_err(UpstreamError::Http2),
        }
    }

    #[cfg(test)]
    fn ptr(&self) -> *const () {
        match self {
            RouteClient::Http1(p) => Arc::as_ptr(p).cast(),
            RouteClient::Http2(c) => Arc::as_ptr(c).cast(),
        }
    }
}

/// The clients of a snapshot: one per distinct key, reused from the previous snapshot when
/// the key is unchanged so a reload keeps warm connections.
#[derive(Debug, Default)]
pub struct Clients {
    by_key: HashMap<ClientKey, RouteClient>,
    /// For each route (by index), its client.
    by_route: Vec<RouteClient>,
}

impl Clients {
    /// Builds (or reuses from `previous`) a client for every route, reading each CA file
    /// once. The error names the first route whose client could not be built.
    pub fn build(
        config: &Config,
        previous: Option<&Clients>,
    ) -> Result<Clients, (usize, TlsError)> {
        let mut cas: HashMap<&Path, CaFile> = HashMap::new();
        let mut tls: HashMap<Option<&Path>, Arc<ClientConfig>> = HashMap::new();
        let mut out = Clients::default();
        for (i, route) in config.routes.iter().enumerate() {
            let ca = match route.upstream_ca.as_deref() {
                Some(path) => {
                    let file = match cas.entry(path) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => e.insert(CaFile::read(path).map_err(|e| (i, e))?),
                    };
                    Some((path, &*file))
                }
                None => None,
            };
            let up = &route.upstream;
            let key = ClientKey {
                ca: route.upstream_ca.clone(),
                ca_hash: ca.map_or(0, |(_, f)| f.hash),
                http2: route.upstream_http2,
                connect_timeout: config.limits.upstream_connect_timeout,
                // HTTP/1 pools are per upstream; the HTTP/2 client serves any.
                target: (!route.upstream_http2).then(|| (up.scheme.clone(), up.authority.clone())),
            };
            let c = match out.by_key.get(&key).or_else(|| previous?.by_key.get(&key)) {
                Some(c) => c.clone(),
                None => {
                    // Plain-HTTP/1 upstreams need no roots (reading the system's is slow).
                    let needs_tls = route.upstream_http2 || up.scheme == Scheme::HTTPS;
                    let config = if needs_tls {
                        Some(match tls.entry(route.upstream_ca.as_deref()) {
                            Entry::Occupied(e) => e.get().clone(),
                            Entry::Vacant(e) => {
                                e.insert(tls_config(ca).map_err(|e| (i, e))?).clone()
                            }
                        })
                    } else {
                        None
                    };
                    match config {
                        Some(tls) if route.upstream_http2 => {
                            RouteClient::Http2(Arc::new(http2_client(&key, (*tls).clone())))
                        }
                        config => {
                            let settings = PoolSettings {
                                idle_timeout: POOL_IDLE_TIMEOUT,
                                max_idle: POOL_MAX_IDLE_PER_HOST,
                                connect_timeout: key.connect_timeout,
                            };
                            RouteClient::Http1(Arc::new(
                                Pool::new(&up.scheme, &up.authority, config, settings)
                                    .map_err(|e| (i, TlsError::Setup(e.to_string())))?,
                            ))
                        }
                    }
                }
            };
            out.by_key.entry(key).or_insert_with(|| c.clone());
            out.by_route.push(c);
        }
        Ok(out)
    }

    /// The client for the route at `route`.
    pub fn for_route(&self, route: usize) -> Option<&RouteClient> {
        self.by_route.get(route)
    }
}

/// The classification an error chain's TLS or timeout error gives, if it holds one.
pub fn kind_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<UpstreamKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return Some(UpstreamKind::Tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Some(UpstreamKind::Timeout);
            }
            // hyper-rustls wraps tokio-rustls's io::Error(rustls::Error) in another io::Error,
            // and `source()` skips the inner one: follow `get_ref()` down by hand.
            let mut inner = io.get_ref();
            while let Some(i) = inner {
                if i.downcast_ref::<rustls::Error>().is_some() {
                    return Some(UpstreamKind::Tls);
                }
                inner = i
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref());
            }
        }
        source = e.source();
    }
    None
}

/// Classifies an HTTP/2 client error for the answer and the `kind` label.
pub fn classify(err: &hyper_util::client::legacy::Error) -> UpstreamKind {
    match kind_in_chain(err) {
        Some(kind) => kind,
        None if err.is_connect() => UpstreamKind::Connect,
        None => UpstreamKind::Reset,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Clients;
    use crate::config::Config;

    const DEV_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/dev-ca.crt");

    /// A config with one route per `(name, extra lines)`.
    fn config(routes: &[(&str, String)]) -> Config {
        let mut text = String::from("[listen]\naddr = \"127.0.0.1:0\"\n");
        for (name, extra) in routes {
            text.push_str(&format!(
                "[[route]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\n\
                 upstream = \"https://127.0.0.1:9\"\nauth = \"none\"\n{extra}\n"
            ));
        }
        Config::parse(Path::new("f.toml"), &text).unwrap_or_else(|e| panic!("config: {e}"))
    }

    fn same(c: &Clients, a: usize, b: usize) -> bool {
        match (c.for_route(a), c.for_route(b)) {
            (Some(a), Some(b)) => std::ptr::eq(a.ptr(), b.ptr()),
            _ => panic!("routes {a} and {b} have clients"),
        }
    }

    #[test]
    fn routes_with_the_same_settings_share_one_client() {
        let ca = format!("upstream_ca = {DEV_CA:?}");
        let c = config(&[
            ("a", ca.clone()),
            ("b", String::new()),
            ("c", ca.clone()),
            ("d", format!("{ca}\nupstream_http2 = true")),
            ("e", String::new()),
        ]);
        let clients = Clients::build(&c, None).unwrap_or_else(|(i, e)| panic!("route {i}: {e}"));
        assert!(same(&clients, 0, 2), "one CA, one client");
        assert!(same(&clients, 1, 4), "system roots, one client");
        assert!(!same(&clients, 0, 1));
        assert!(!same(&clients, 0, 3), "upstream_http2 needs its own client");
        assert_eq!(clients.by_key.len(), 3);
        assert!(clients.for_route(5).is_none());

        // A rebuild keeps every client whose settings did not change.
        let again = Clients::build(&c, Some(&clients)).unwrap_or_else(|(i, e)| panic!("{i}: {e}"));
        for i in 0..5 {
            assert!(std::ptr::eq(
                again.for_route(i).expect("client").ptr(),
                clients.for_route(i).expect("client").ptr()
            ));
        }
    }

    #[test]
    fn a_changed_ca_file_gets_a_new_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.crt");
        std::fs::copy(DEV_CA, &path).expect("copy");
        let c = config(&[("a", format!("upstream_ca = {path:?}"))]);
        let first = Clients::build(&c, None).unwrap_or_else(|(i, e)| panic!("{i}: {e}"));
        let bundle = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, format!("{bundle}{bundle}")).expect("write");
        let second = Clients::build(&c, Some(&first)).unwrap_or_else(|(i, e)| panic!("{i}: {e}"));
        assert!(!std::ptr::eq(
            first.for_route(0).expect("client").ptr(),
            second.for_route(0).expect("client").ptr()
        ));
    }

    #[test]
    fn a_bad_ca_file_is_a_located_error_on_the_first_route_using_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.crt");
        std::fs::write(&bad, "not PEM").expect("write");
        let missing = dir.path().join("missing.crt");
        for (path, message) in [
            (&bad, format!("{}: no PEM certificate found", bad.display())),
            (&missing, format!("cannot read {}: ", missing.display())),
        ] {
            let ca = format!("upstream_ca = {path:?}");
            let c = config(&[("ok", String::new()), ("bad", ca.clone()), ("also", ca)]);
            let at = c.routes[1].loc;
            let errors = match crate::state::Snapshot::build(c) {
                Ok(_) => panic!("{} is refused", path.display()),
                Err(e) => e.to_string(),
            };
            let want = format!(
                "f.toml:{}:{}: route \"bad\": upstream TLS: {message}",
                at.line, at.col
            );
            assert!(errors.starts_with(&want), "{errors}\nwanted {want}");
            assert_eq!(errors.lines().count(), 1, "{errors}");
        }
    }
}

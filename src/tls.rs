//! TLS termination: rustls with aws-lc-rs, TLS 1.2 and 1.3, ALPN h2 and http/1.1, optional
//! client certificates, certificates chosen by SNI, and reload without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Listen;

/// Why certificates or keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: crate::files::ReadError,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{cert} and {key} do not belong together: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The crypto provider for every TLS use in the process (server and upstream client).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a certificate, key or CA file, refusing one larger than the certificate file cap.
pub fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read_capped(path, crate::files::MAX_CERT_FILE_BYTES).map_err(|source| {
        TlsError::Read {
            path: path.to_owned(),
            source,
        }
    })
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(path, &read_file(path)?)
}

/// Every certificate of PEM `bytes` read from `path` (which errors name).
pub fn parse_certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The trust roots of the PEM CA bundle `bytes` read from `path`: every certificate in it.
pub fn ca_roots(path: &Path, bytes: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs(path, bytes)? {
        roots.add(c).map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// One certificate chain with its key, the names it serves and when it expires.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the leaf's subjectAltName, lower case; `*.x` for wildcards.
    pub names: Vec<String>,
    /// Unix time of the leaf's notAfter.
    pub not_after: i64,
    pub cert_path: PathBuf,
}

/// Loads a cert/key pair and checks that the key belongs to the leaf certificate.
pub fn load_pair(cert: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    let chain = read_certs(cert)?;
    let key_bytes = read_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Invalid {
        path: key.to_owned(),
        message: format!("not a PEM private key: {e}"),
    })?;
    let (names, not_after) = leaf_info(&chain[0]).map_err(|message| TlsError::Invalid {
        path: cert.to_owned(),
        message,
    })?;
    let certified =
        CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            message: e.to_string(),
        })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after,
        cert_path: cert.to_owned(),
    })
}

/// The earliest `notAfter` (Unix seconds) of the certificates in a PEM bundle (a CA file), so
/// the expiry gauge warns before the first certificate in it lapses.
pub fn bundle_expiry(path: &Path) -> Result<i64, TlsError> {
    let certs = read_certs(path)?;
    certs
        .iter()
        .map(|c| leaf_info(c).map(|(_, not_after)| not_after))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| TlsError::Invalid {
            path: path.to_owned(),
            message,
        })?
        .into_iter()
        .min()
        .ok_or_else(|| TlsError::NoCertificate {
            path: path.to_owned(),
        })
}

fn leaf_info(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// The certificates the listener serves.
#[derive(Debug)]
pub struct CertStore {
    pub default: LoadedCert,
    pub others: Vec<LoadedCert>,
}

impl CertStore {
    /// Loads `[listen] tls` and every `[[listen.certificates]]`; any failure fails the whole.
    pub fn load(listen: &Listen) -> Result<Option<CertStore>, TlsError> {
        let Some(tls) = &listen.tls else {
            return Ok(None);
        };
        let default = load_pair(&tls.cert, &tls.key)?;
        let others = listen
            .certificates
            .iter()
            .map(|c| load_pair(&c.cert, &c.key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(CertStore { default, others }))
    }

    /// The certificate for an SNI name: an exact SAN, then a wildcard SAN one label up, then
    /// the default.
    pub fn pick(&self, sni: Option<&str>) -> &LoadedCert {
        let Some(name) = sni.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        let all = || std::iter::once(&self.default).chain(self.others.iter());
        all()
            .find(|c| c.names.contains(&name))
            .or_else(|| {
                let w = wildcard.as_deref()?;
                all().find(|c| c.names.iter().any(|n| n == w))
            })
            .unwrap_or(&self.default)
    }

    /// Every certificate file with its expiry, for metrics.
    pub fn expiries(&self) -> impl Iterator<Item = (&Path, i64)> {
        std::iter::once(&self.default)
            .chain(self.others.iter())
            .map(|c| (c.cert_path.as_path(), c.not_after))
    }
}

/// Chooses the certificate per handshake from the store its config was built with.
#[derive(Debug)]
struct CertResolver {
    store: Arc<CertStore>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.store.pick(hello.server_name()).key.clone())
    }
}

/// Builds the server config serving `store`: TLS 1.2 and 1.3, ALPN h2 then http/1.1, and
/// client certificates from `client_ca` when set: required, or with `client_auth_optional`
/// verified when sent and not asked of clients that send none.
pub fn server_config(
    client_ca: Option<&Path>,
    client_auth_optional: bool,
    store: Arc<CertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = ca_roots(ca, &read_file(ca)?)?;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if client_auth_optional {
                // A certificate that is sent is still verified against the CA: only its
                // absence is allowed (RFC 8705 §3 binds tokens to verified certificates).
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(CertResolver { store }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One loaded TLS setup: the config new handshakes use and the certificates its resolver
/// serves. Never changed once built: a reload builds a new one and swaps it in whole.
#[derive(Debug)]
pub struct TlsConfig {
    /// The rustls config a handshake takes.
    pub server: Arc<ServerConfig>,
    /// The store `server` resolves certificates from, for expiry metrics.
    pub certs: Arc<CertStore>,
}

impl TlsConfig {
    /// Loads the certificates and builds the config around them; `Ok(None)` for plain HTTP.
    fn load(listen: &Listen) -> Result<Option<TlsConfig>, TlsError> {
        let Some(store) = CertStore::load(listen)? else {
            return Ok(None);
        };
        let certs = Arc::new(store);
        let client_ca = listen.tls.as_ref().and_then(|t| t.client_ca.as_deref());
        let optional = listen.tls.as_ref().is_some_and(|t| t.client_auth_optional);
        let server = server_config(client_ca, optional, certs.clone())?;
        Ok(Some(TlsConfig { server, certs }))
    }
}

/// The listener's live TLS state. One `ArcSwap` holds config and certificates together, so
/// a handshake never pairs the client-CA policy of one reload with certificates of another.
pub struct TlsState {
    live: ArcSwap<TlsConfig>,
    /// The fingerprint last tried, refused ones included, so a bad file is logged once and
    /// not on every poll. Locked only by the reload task and SIGHUP, never by a handshake.
    last_tried: std::sync::Mutex<u64>,
}

impl TlsState {
    /// Loads certificates and builds the config; `Ok(None)` for a plain-HTTP listener.
    pub fn new(listen: &Listen) -> Result<Option<TlsState>, TlsError> {
        // Unreadable now: loading fails below with the real error, or a later poll reloads.
        let now = fingerprint(listen).unwrap_or_default();
        Ok(TlsConfig::load(listen)?.map(|live| TlsState {
            live: ArcSwap::from_pointee(live),
            last_tried: std::sync::Mutex::new(now),
        }))
    }

    /// The setup serving now; a handshake takes one and keeps it to the end.
    pub fn current(&self) -> Arc<TlsConfig> {
        self.live.load_full()
    }

    /// Re-reads the files when their content changed; a bad file keeps the last good
    /// certificates. Returns `Ok(true)` when new ones were swapped in.
    pub fn reload(&self, listen: &Listen) -> Result<bool, TlsError> {
        // A file that cannot be read right now (out of file descriptors, ...) says nothing
        // about whether it changed: the next poll looks again, nothing is counted.
        let Ok(now) = fingerprint(listen) else {
            return Ok(false);
        };
        let mut last = self
            .last_tried
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == now {
            return Ok(false);
        }
        *last = now;
        let Some(live) = TlsConfig::load(listen)? else {
            return Ok(false);
        };
        self.live.store(Arc::new(live));
        Ok(true)
    }
}

/// A hash of every TLS file's bytes (read by path each time, so a symlink flip is seen), or
/// the error that kept a file from being read.
fn fingerprint(listen: &Listen) -> std::io::Result<u64> {
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Some(t) = &listen.tls {
        paths.extend([t.cert.clone(), t.key.clone()]);
        paths.extend(t.client_ca.clone());
    }
    for c in &listen.certificates {
        paths.extend([c.cert.clone(), c.key.clone()]);
    }
    // `client_auth` lives in the config, not in a file: folded in so a reload that changes
    // it builds a new TLS config too.
    let optional = listen.tls.as_ref().is_some_and(|t| t.client_auth_optional);
    crate::reload::known_fingerprint(&paths).map(|f| f ^ u64::from(optional))
}

//! TLS clients for the dev certificates in `certs/` (a dev CA, `server.crt` for `localhost`,
//! `client.crt` for mTLS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The dev certificates.
pub const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs");

/// A handshake not done within this long fails the test.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);

/// A file of the dev certificates.
pub fn cert_file(name: &str) -> PathBuf {
    Path::new(CERTS).join(name)
}

/// The aws-lc-rs crypto provider the gateway uses too.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate in a PEM file.
pub fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The private key in a PEM file.
pub fn pem_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("key {}: {e}", path.display()))
}

/// The dev CA as the only root.
pub fn dev_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in pem_certs(&cert_file("dev-ca.crt")) {
        roots.add(c).expect("dev CA is a usable root");
    }
    roots
}

/// A client trusting the dev CA, offering `alpn`, presenting the dev client certificate when
/// `identity`.
pub fn dev_client(alpn: &[&[u8]], identity: bool) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(dev_roots());
    let mut c = if identity {
        b.with_client_auth_cert(
            pem_certs(&cert_file("client.crt")),
            pem_key(&cert_file("client.key")),
        )
        .expect("client certificate")
    } else {
        b.with_no_client_auth()
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// Completes a TLS handshake to `localhost` over `tcp`.
pub async fn handshake(tcp: TcpStream, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(
        HANDSHAKE_WITHIN,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

/// Connects to `addr` and completes a TLS handshake to `localhost`.
pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    handshake(tcp, config).await
}

/// The DER of the (first) certificate in a PEM file.
pub fn der_of(path: &Path) -> Vec<u8> {
    pem_certs(path)[0].as_ref().to_vec()
}

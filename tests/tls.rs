//! TLS termination (versions, ALPN, mTLS, SNI, certificate reload), TLS and HTTP/2 towards
//! upstreams, WebSocket passthrough and `Upgrade: h2c`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use common::tls::{cert_file, der_of, dev_roots, pem_certs, pem_key, provider};
use common::{claims, default_config, default_issuer, free_port, is_located, token, Harness};

/// Bound on every single network step, so a broken gateway fails a test instead of hanging it.
const IO: Duration = Duration::from_secs(5);

const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

/// Accepts any server certificate (signatures are still checked), so a test can look at the
/// certificate a server name got even when that certificate does not cover the name.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a test client verifies the server.
#[derive(Clone, Copy)]
enum Trust {
    /// The dev CA, with the usual name check.
    DevCa,
    /// Anything (to inspect which certificate was presented).
    Any,
}

/// A client config: `versions`, ALPN `alpn`, trust, and an optional client certificate.
fn client_config(
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
    trust: Trust,
    identity: Option<(&Path, &Path)>,
) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("protocol versions");
    let b = match trust {
        Trust::DevCa => b.with_root_certificates(dev_roots()),
        Trust::Any => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider()))),
    };
    let mut c = match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(pem_certs(cert), pem_key(key))
            .expect("client certificate"),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// Connects and completes a TLS handshake; `name` is a DNS name (sent as SNI) or an IP address
/// (no SNI).
async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let server_name = ServerName::try_from(name.to_owned()).expect("server name");
    match tokio::time::timeout(IO, TlsConnector::from(config).connect(server_name, tcp)).await {
        Err(_) => Err("TLS handshake timed out".into()),
        Ok(r) => r.map_err(|e| format!("TLS handshake: {e}")),
    }
}

/// The leaf certificate the server presented on `s`.
fn peer_der(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server presented a certificate")
        .as_ref()
        .to_vec()
}

fn alpn_of(s: &TlsStream<TcpStream>) -> Option<String> {
    s.get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

fn version_of(s: &TlsStream<TcpStream>) -> Option<ProtocolVersion> {
    s.get_ref().1.protocol_version()
}

/// An answer, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// What the echo upstream received for header `name` (lower case).
    fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn read_reply(res: Response<Incoming>) -> Result<Reply, String> {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = tokio::time::timeout(IO, res.into_body().collect())
        .await
        .map_err(|_| "body timed out".to_string())?
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn get_request(uri: &str, host: Option<&str>, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method("GET").uri(uri);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

/// An HTTP/1.1 client connection over `io` (kept alive between requests).
struct H1Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl H1Conn {
    async fn new<S>(io: S) -> Result<H1Conn, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H1Conn(sender))
    }

    async fn get(&mut self, path: &str, token: Option<&str>) -> Result<Reply, String> {
        let req = get_request(path, Some("localhost"), token);
        let res = tokio::time::timeout(IO, async {
            self.0.ready().await?;
            self.0.send_request(req).await
        })
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| format!("request: {e}"))?;
        read_reply(res).await
    }
}

/// An HTTP/2 request on a fresh connection over `io`.
async fn h2_get<S>(io: S, path: &str, token: Option<&str>) -> Result<Reply, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = get_request(&format!("https://localhost{path}"), None, token);
    let res = tokio::time::timeout(IO, sender.send_request(req))
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    read_reply(res).await
}

/// Handshake then one HTTP/1.1 GET; any failure on the way comes back as `Err`.
async fn https_get(
    addr: SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> Result<Reply, String> {
    let s = tls_connect(addr, name, config).await?;
    H1Conn::new(s).await?.get(path, token).await
}

/// `[listen]` with the dev server certificate; `tls_extra` goes inside the `tls` table (e.g.
/// `, client_ca = "..."`), `more` after it (e.g. `[[listen.certificates]]`).
fn tls_listen(tls_extra: &str, more: &str) -> String {
    tls_listen_with("server", tls_extra, more)
}

/// Like [`tls_listen`] with `certs/{default}.crt` and `.key` as the default certificate.
fn tls_listen_with(default: &str, tls_extra: &str, more: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\"{tls_extra} }}\n{more}\n",
        cert_file(&format!("{default}.crt")).display(),
        cert_file(&format!("{default}.key")).display(),
    )
}

fn valid_token() -> String {
    token("ES256", &claims())
}

fn assert_echoed_ok(r: &Reply, path: &str) {
    assert_eq!(r.status, 200, "expected the echo's 200: {}", r.body);
    assert_eq!(r.json()["path"], path, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-sub"), ["alice"], "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// 1. HTTP/1.1 over TLS, TLS 1.2 and 1.3

#[tokio::test]
async fn http1_over_tls_with_valid_token_is_forwarded_with_proto_https() {
    let h = Harness::start(&(tls_listen("", "") + &default_config())).await;
    let t = valid_token();
    let s = tls_connect(
        h.addr,
        "localhost",
        client_config(BOTH, &[H1], Trust::DevCa, None),
    )
    .await
    .expect("handshake with the dev CA trusting client");
    assert_eq!(alpn_of(&s).as_deref(), Some("http/1.1"));
    let r = H1Conn::new(s)
        .await
        .expect("h1")
        .get("/hello", Some(&t))
        .await
        .expect("answer");
    assert_echoed_ok(&r, "/hello");
    assert_eq!(r.json()["version"], "HTTP/1.1", "{}", r.body);
    assert_eq!(
        r.upstream_header("x-forwarded-proto"),
        ["https"],
        "{}",
        r.body
    );
    assert!(r.upstream_header("authorization").is_empty(), "{}", r.body);

    // Without a token the TLS listener answers like the plain one.
    let r = https_get(
        h.addr,
        "localhost",
        client_config(BOTH, &[H1], Trust::DevCa, None),
        "/hello",
        None,
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"jwtgate\"")
    );
    assert_eq!(r.json()["error"], "missing_token", "{}", r.body);
}

#[tokio::test]
async fn tls12_only_and_tls13_only_clients_both_work() {
    let h = Harness::start(&(tls_listen("", "") + &default_config())).await;
    let t = valid_token();
    for (versions, expected) in [
        (TLS12, ProtocolVersion::TLSv1_2),
        (TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let s = tls_connect(
            h.addr,
            "localhost",
            client_config(versions, &[H1], Trust::DevCa, None),
        )
        .await
        .unwrap_or_else(|e| panic!("{expected:?}-only client: {e}"));
        assert_eq!(version_of(&s), Some(expected));
        let r = H1Conn::new(s)
            .await
            .expect("h1")
            .get("/v", Some(&t))
            .await
            .unwrap_or_else(|e| panic!("{expected:?}: {e}"));
        assert_echoed_ok(&r, "/v");
        assert_eq!(
            r.upstream_header("x-forwarded-proto"),
            ["https"],
            "{}",
            r.body
        );
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let h = Harness::start(&(tls_listen("", "") + &default_config())).await;
    let out = h
        .raw(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            IO,
        )
        .await;
    assert!(
        !out.starts_with("HTTP/"),
        "a plaintext request on the TLS port must not be served: {out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. HTTP/2 over TLS, ALPN

#[tokio::test]
async fn http2_over_tls_negotiates_h2_and_is_forwarded() {
    let h = Harness::start(&(tls_listen("", "") + &default_config())).await;
    let t = valid_token();
    let s = tls_connect(
        h.addr,
        "localhost",
        client_config(BOTH, &[H2, H1], Trust::DevCa, None),
    )
    .await
    .expect("handshake");
    assert_eq!(alpn_of(&s).as_deref(), Some("h2"));
    let r = h2_get(s, "/api/x?a=1", Some(&t)).await.expect("h2 answer");
    assert_echoed_ok(&r, "/api/x");
    let echo = r.json();
    assert_eq!(echo["method"], "GET", "{}", r.body);
    assert_eq!(echo["query"], "a=1", "{}", r.body);
    assert_eq!(
        r.upstream_header("x-forwarded-proto"),
        ["https"],
        "{}",
        r.body
    );
    assert_eq!(r.upstream_header("host"), ["localhost"], "{}", r.body);
}

#[tokio::test]
async fn client_offering_only_http11_gets_http11() {
    let h = Harness::start(&(tls_listen("", "") + &default_config())).await;
    let s = tls_connect(
        h.addr,
        "localhost",
        client_config(BOTH, &[H1], Trust::DevCa, None),
    )
    .await
    .expect("handshake");
    assert_eq!(alpn_of(&s).as_deref(), Some("http/1.1"));
    let r = H1Conn::new(s)
        .await
        .expect("h1")
        .get("/one", Some(&valid_token()))
        .await
        .expect("answer");
    assert_echoed_ok(&r, "/one");

    // No ALPN at all: HTTP/1.1 still works on the same port.
    let s = tls_connect(
        h.addr,
        "localhost",
        client_config(BOTH, &[], Trust::DevCa, None),
    )
    .await
    .expect("handshake");
    assert_eq!(alpn_of(&s), None);
    let r = H1Conn::new(s)
        .await
        .expect("h1")
        .get("/two", Some(&valid_token()))
        .await
        .expect("answer");
    assert_echoed_ok(&r, "/two");
}

// ---------------------------------------------------------------------------------------------
// 3. mTLS

/// Writes a CA and a clientAuth certificate signed by it into `dir`; `None` without openssl.
fn rogue_client_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    if Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        return None;
    }
    let script = r#"
set -e
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=rogue CA" \
  -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out client.key
openssl req -new -key client.key -subj "/CN=dev-client" -out client.csr
printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 -extfile client.ext -out client.crt
"#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "openssl failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((dir.join("client.crt"), dir.join("client.key")))
}

fn mtls_config() -> String {
    tls_listen(
        &format!(", client_ca = \"{}\"", cert_file("dev-ca.crt").display()),
        "",
    ) + &default_config()
}

#[tokio::test]
async fn mtls_client_with_dev_ca_certificate_is_served() {
    let h = Harness::start(&mtls_config()).await;
    let t = valid_token();
    let identity = (cert_file("client.crt"), cert_file("client.key"));
    for versions in [TLS12, TLS13] {
        let config = client_config(
            versions,
            &[H1],
            Trust::DevCa,
            Some((&identity.0, &identity.1)),
        );
        let r = https_get(h.addr, "localhost", config, "/m", Some(&t))
            .await
            .unwrap_or_else(|e| panic!("mTLS client with the dev client cert: {e}"));
        assert_echoed_ok(&r, "/m");
        assert_eq!(
            r.upstream_header("x-forwarded-proto"),
            ["https"],
            "{}",
            r.body
        );
    }
}

#[tokio::test]
async fn mtls_client_without_certificate_fails() {
    let h = Harness::start(&mtls_config()).await;
    let t = valid_token();
    for (label, versions) in [("TLS 1.2", TLS12), ("TLS 1.3", TLS13)] {
        let r = https_get(
            h.addr,
            "localhost",
            client_config(versions, &[H1], Trust::DevCa, None),
            "/m",
            Some(&t),
        )
        .await;
        // TLS 1.2 fails the handshake; with TLS 1.3 the client may finish first and then
        // reads the server's certificate_required alert.
        assert!(
            r.is_err(),
            "{label}: a client without a certificate must not be served: {r:?}"
        );
    }
}

#[tokio::test]
async fn mtls_client_with_certificate_from_another_ca_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((cert, key)) = rogue_client_cert(dir.path()) else {
        eprintln!("NOTE: openssl not found; skipping the foreign-CA client certificate case");
        return;
    };
    let h = Harness::start(&mtls_config()).await;
    let t = valid_token();
    for (label, versions) in [("TLS 1.2", TLS12), ("TLS 1.3", TLS13)] {
        let r = https_get(
            h.addr,
            "localhost",
            client_config(versions, &[H1], Trust::DevCa, Some((&cert, &key))),
            "/m",
            Some(&t),
        )
        .await;
        assert!(
            r.is_err(),
            "{label}: a client certificate from another CA must not be accepted: {r:?}"
        );
    }
    // Control: the same listener serves the dev client certificate.
    let ok = https_get(
        h.addr,
        "localhost",
        client_config(
            BOTH,
            &[H1],
            Trust::DevCa,
            Some((&cert_file("client.crt"), &cert_file("client.key"))),
        ),
        "/m",
        Some(&t),
    )
    .await
    .expect("dev client cert");
    assert_eq!(ok.status, 200, "{}", ok.body);
}

// ---------------------------------------------------------------------------------------------
// 4. SNI

#[tokio::test]
async fn sni_chooses_the_certificate_by_san() {
    let more = format!(
        "[[listen.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_file("other.crt").display(),
        cert_file("other.key").display()
    );
    let h = Harness::start(&(tls_listen("", &more) + &default_config())).await;
    let server = der_of(&cert_file("server.crt"));
    let other = der_of(&cert_file("other.crt"));
    let any = client_config(BOTH, &[H1], Trust::Any, None);
    for (name, want, label) in [
        // Exact SAN of the extra certificate beats the default's `*.localhost`.
        ("other.localhost", &other, "other.crt"),
        ("OTHER.localhost", &other, "other.crt"),
        ("localhost", &server, "server.crt"),
        // Wildcard `*.localhost` of the default certificate.
        ("foo.localhost", &server, "server.crt"),
        // Unknown name: the default.
        ("unknown.example", &server, "server.crt"),
        // An IP address: rustls sends no SNI, so the default.
        ("127.0.0.1", &server, "server.crt"),
    ] {
        let s = tls_connect(h.addr, name, any.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            peer_der(&s) == *want,
            "server name {name:?} should get {label}"
        );
    }
    // And the certificates verify for the names they were chosen for, end to end.
    let t = valid_token();
    for name in ["other.localhost", "localhost", "127.0.0.1"] {
        let r = https_get(
            h.addr,
            name,
            client_config(BOTH, &[H1], Trust::DevCa, None),
            "/sni",
            Some(&t),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} with dev CA verification: {e}"));
        assert_echoed_ok(&r, "/sni");
    }
}

#[tokio::test]
async fn sni_wildcard_of_an_extra_certificate_covers_one_label_only() {
    // Default other.crt (other.localhost); extra server.crt (localhost, *.localhost).
    let more = format!(
        "[[listen.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_file("server.crt").display(),
        cert_file("server.key").display()
    );
    let h = Harness::start(&(tls_listen_with("other", "", &more) + &default_config())).await;
    let server = der_of(&cert_file("server.crt"));
    let other = der_of(&cert_file("other.crt"));
    let any = client_config(BOTH, &[H1], Trust::Any, None);
    for (name, want, label) in [
        (
            "localhost",
            &server,
            "server.crt (exact SAN of the extra certificate)",
        ),
        ("foo.localhost", &server, "server.crt (*.localhost)"),
        (
            "a.b.localhost",
            &other,
            "the default: *.localhost covers one label",
        ),
        (
            "other.localhost",
            &other,
            "other.crt (exact SAN beats *.localhost)",
        ),
        ("127.0.0.1", &other, "the default (no SNI)"),
    ] {
        let s = tls_connect(h.addr, name, any.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            peer_der(&s) == *want,
            "server name {name:?} should get {label}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake limits

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_and_does_not_block_others() {
    let config = tls_listen("", "[limits]\nheader_read_timeout = \"300ms\"\n") + &default_config();
    let h = Harness::start(&config).await;
    // A client that connects and never says hello.
    let mut stalled = TcpStream::connect(h.addr).await.expect("connect");
    // Meanwhile a normal client is served.
    let r = https_get(
        h.addr,
        "localhost",
        client_config(BOTH, &[H1], Trust::DevCa, None),
        "/ok",
        Some(&valid_token()),
    )
    .await
    .expect("served while another handshake is stalled");
    assert_echoed_ok(&r, "/ok");
    // The stalled connection is closed (well before this bound) rather than held open.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(IO, stalled.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "a connection that never completes the handshake is closed after header_read_timeout"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Certificate reload through the library

fn copy_cert(from: &str, to: &Path) {
    std::fs::copy(cert_file(from), to).unwrap_or_else(|e| panic!("copy {from}: {e}"));
}

#[tokio::test]
async fn library_reload_swaps_certificates_and_keeps_the_last_good_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    copy_cert("server.crt", &crt);
    copy_cert("server.key", &key);
    let echo_l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let echo_addr = echo_l.local_addr().expect("addr");
    tokio::spawn(jwtgate::echo::serve(echo_l, std::future::pending()));
    // Relative paths: they resolve against the config file's directory.
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"tls.crt\", key = \"tls.key\" }}\n{}",
        default_config().replace("{upstream}", &format!("http://{echo_addr}"))
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    let config = jwtgate::Config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
    let snapshot = jwtgate::Snapshot::build(config).unwrap_or_else(|e| panic!("snapshot: {e}"));
    let listen = snapshot.config.listen.clone();
    // Built from an in-memory snapshot (no config path), so no file watcher races with the
    // explicit reloads below.
    let app = Arc::new(
        jwtgate::App::new(snapshot, jwtgate::metrics::Metrics::new(), None)
            .expect("certificates load"),
    );
    let tls = app.tls.clone().expect("TLS is configured");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(jwtgate::run(listener, app, async move {
        let _ = stop_rx.await;
        Duration::from_secs(1)
    }));

    let server = der_of(&cert_file("server.crt"));
    let other = der_of(&cert_file("other.crt"));
    let any = client_config(BOTH, &[H1], Trust::Any, None);
    let t = valid_token();
    let presented = |name: &'static str| {
        let any = any.clone();
        async move {
            peer_der(
                &tls_connect(addr, name, any)
                    .await
                    .unwrap_or_else(|e| panic!("handshake: {e}")),
            )
        }
    };

    // A keep-alive connection opened before the swap.
    let old = tls_connect(addr, "localhost", any.clone())
        .await
        .expect("handshake");
    assert!(peer_der(&old) == server, "starts with server.crt");
    let mut old = H1Conn::new(old).await.expect("h1");
    assert_echoed_ok(
        &old.get("/before", Some(&t)).await.expect("answer"),
        "/before",
    );

    // Nothing changed: nothing to do.
    assert!(
        matches!(tls.reload(&listen), Ok(false)),
        "unchanged files are not a reload"
    );

    // Swap to other.crt/key.
    copy_cert("other.crt", &crt);
    copy_cert("other.key", &key);
    let r = tls.reload(&listen);
    assert!(matches!(r, Ok(true)), "a good new pair reloads: {r:?}");
    assert!(
        presented("localhost").await == other,
        "new handshakes get other.crt"
    );
    let fresh = https_get(
        addr,
        "other.localhost",
        client_config(BOTH, &[H1], Trust::DevCa, None),
        "/new",
        Some(&t),
    )
    .await
    .expect("other.localhost verifies against the dev CA with the new certificate");
    assert_echoed_ok(&fresh, "/new");
    // The connection from before the swap keeps working.
    assert_echoed_ok(
        &old.get("/after", Some(&t)).await.expect("old conn"),
        "/after",
    );

    // A mismatched pair (server.crt with other.key): refused, last good kept.
    copy_cert("server.crt", &crt);
    let r = tls.reload(&listen);
    assert!(
        matches!(r, Err(jwtgate::tls::TlsError::Mismatch { .. })),
        "a mismatched pair is refused: {r:?}"
    );
    assert!(
        presented("localhost").await == other,
        "mismatch keeps other.crt"
    );
    assert_echoed_ok(
        &old.get("/mismatch", Some(&t)).await.expect("old conn"),
        "/mismatch",
    );

    // A certificate file that does not parse: refused, last good kept.
    std::fs::write(
        &crt,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .expect("write garbage");
    let r = tls.reload(&listen);
    assert!(r.is_err(), "a garbage certificate is refused: {r:?}");
    assert!(
        presented("localhost").await == other,
        "garbage keeps other.crt"
    );
    std::fs::write(&crt, "this is not PEM at all\n").expect("write garbage");
    let r = tls.reload(&listen);
    assert!(r.is_err(), "a file without PEM is refused: {r:?}");
    assert!(
        presented("localhost").await == other,
        "garbage keeps other.crt"
    );

    // Back to a good pair: it is picked up again.
    copy_cert("server.crt", &crt);
    copy_cert("server.key", &key);
    let r = tls.reload(&listen);
    assert!(
        matches!(r, Ok(true)),
        "a good pair after bad ones reloads: {r:?}"
    );
    assert!(presented("localhost").await == server, "back to server.crt");
    assert_echoed_ok(&old.get("/end", Some(&t)).await.expect("old conn"), "/end");
    let _ = stop_tx.send(());
}

// ---------------------------------------------------------------------------------------------
// 6. Certificate reload through the binary

/// A `jwtgate run` child, killed (by its PID, through `Child::kill`) when dropped.
struct Running {
    child: common::ChildGuard,
    dir: tempfile::TempDir,
}

impl Running {
    fn output(&self) -> String {
        let d = self.dir.path();
        common::output_of(&d.join("stdout.log"), &d.join("stderr.log"))
    }
}

#[tokio::test]
async fn binary_reloads_an_overwritten_certificate_without_dropping_connections() {
    let echo_l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let echo_addr = echo_l.local_addr().expect("addr");
    tokio::spawn(jwtgate::echo::serve(echo_l, std::future::pending()));

    let mut running = None;
    let mut addr = None;
    'attempts: for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        common::write_keys(dir.path());
        copy_cert("server.crt", &dir.path().join("server.crt"));
        copy_cert("server.key", &dir.path().join("server.key"));
        let port = free_port();
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:{port}\"\ntls = {{ cert = \"server.crt\", key = \"server.key\" }}\n[limits]\nshutdown_grace = \"1s\"\n{}",
            default_config().replace("{upstream}", &format!("http://{echo_addr}"))
        );
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, text).expect("write config");
        let child = common::spawn_run(
            dir.path(),
            &config,
            &dir.path().join("stdout.log"),
            &dir.path().join("stderr.log"),
            |_| {},
        );
        let mut r = Running { child, dir };
        let a = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(a).await.is_ok() {
                running = Some(r);
                addr = Some(a);
                break 'attempts;
            }
            if !matches!(r.child.try_wait(), Ok(None)) {
                if r.output().contains("binding the traffic listener") {
                    continue 'attempts; // lost a port race
                }
                panic!("jwtgate run exited at start:\n{}", r.output());
            }
            assert!(
                Instant::now() < deadline,
                "jwtgate run did not listen within 10 s:\n{}",
                r.output()
            );
            // Readiness poll of a child process: there is nothing to wait on instead.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let running = running.expect("jwtgate run started");
    let addr = addr.expect("addr");
    let dir = running.dir.path().to_owned();
    let server = der_of(&cert_file("server.crt"));
    let other = der_of(&cert_file("other.crt"));
    let any = client_config(BOTH, &[H1], Trust::Any, None);
    let t = valid_token();

    let old = tls_connect(addr, "localhost", any.clone())
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}", running.output()));
    assert!(peer_der(&old) == server, "starts with server.crt");
    let mut old = H1Conn::new(old).await.expect("h1");
    let r = old.get("/before", Some(&t)).await.expect("answer");
    assert_echoed_ok(&r, "/before");
    assert_eq!(
        r.upstream_header("x-forwarded-proto"),
        ["https"],
        "{}",
        r.body
    );

    // Overwrite the files in place.
    std::fs::write(
        dir.join("server.key"),
        std::fs::read(cert_file("other.key")).expect("read"),
    )
    .expect("overwrite key");
    std::fs::write(
        dir.join("server.crt"),
        std::fs::read(cert_file("other.crt")).expect("read"),
    )
    .expect("overwrite cert");

    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let s = tls_connect(addr, "localhost", any.clone())
            .await
            .unwrap_or_else(|e| panic!("handshake during reload: {e}\n{}", running.output()));
        if peer_der(&s) == other {
            let r = H1Conn::new(s)
                .await
                .expect("h1")
                .get("/new", Some(&t))
                .await
                .expect("answer on the new certificate");
            assert_echoed_ok(&r, "/new");
            break;
        }
        assert!(
            peer_der(&s) == server,
            "during the reload only the old or the new certificate is served"
        );
        assert!(
            Instant::now() < deadline,
            "the overwritten certificate was not picked up within 8 s:\n{}",
            running.output()
        );
        // Polling an external process's file watcher: no event to wait on.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the swap still serves requests.
    assert_echoed_ok(
        &old.get("/after", Some(&t))
            .await
            .unwrap_or_else(|e| panic!("old connection after reload: {e}\n{}", running.output())),
        "/after",
    );
}

// ---------------------------------------------------------------------------------------------
// 7. `jwtgate check` / `run` refuse a bad pair

#[test]
fn check_and_run_refuse_a_mismatched_or_unparsable_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let cases = [
        (
            "mismatched",
            cert_file("server.crt"),
            cert_file("other.key"),
        ),
        ("unparsable", garbage.clone(), cert_file("server.key")),
    ];
    for (label, crt, key) in cases {
        let config = dir.path().join(format!("{label}.toml"));
        std::fs::write(
            &config,
            format!(
                "[listen]\naddr = \"127.0.0.1:{}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n{}",
                free_port(),
                crt.display(),
                key.display(),
                default_config().replace("{upstream}", "http://127.0.0.1:9")
            ),
        )
        .expect("write config");
        for cmd in ["check", "run"] {
            let mut child = Command::new(common::binary())
                .current_dir(dir.path())
                .env_remove("JWTGATE_CONFIG")
                .arg(cmd)
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn jwtgate");
            // `run` must refuse at start; if it starts serving instead, do not hang the test.
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{label}: jwtgate {cmd} kept running with a bad certificate pair");
            }
            let o = child.wait_with_output().expect("output");
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            let show = format!(
                "{label}: jwtgate {cmd}\n--- stdout:\n{}\n--- stderr:\n{stderr}",
                String::from_utf8_lossy(&o.stdout)
            );
            assert_eq!(o.status.code(), Some(1), "{show}");
            let line = stderr
                .lines()
                .map(|l| l.trim_start_matches("invalid config:").trim_start())
                .find(|l| is_located(l, &config))
                .unwrap_or_else(|| panic!("no `file:line:col:` error line:\n{show}"));
            let crt_name = crt
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                line.contains(&crt_name),
                "the error names {crt_name}:\n{show}"
            );
            if label == "mismatched" {
                assert!(
                    line.contains("other.key"),
                    "the error names the key:\n{show}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. https upstreams

/// Echo upstream behind TLS (certs/server.crt, ALPN h2 and http/1.1). Answers
/// `{"version","path","authority","alpn","headers"}`; counts the requests it served.
async fn tls_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    tls_echo_with("server").await
}

/// Like [`tls_echo`] with `certs/{name}.crt` and `.key`.
async fn tls_echo_with(name: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut sc = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(BOTH)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            pem_certs(&cert_file(&format!("{name}.crt"))),
            pem_key(&cert_file(&format!("{name}.key"))),
        )
        .expect("server cert");
    sc.alpn_protocols = vec![H2.to_vec(), H1.to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(sc));
    let count = Arc::new(AtomicUsize::new(0));
    let served = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let (acceptor, served) = (acceptor.clone(), served.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (alpn, served) = (alpn.clone(), served.clone());
                    async move {
                        served.fetch_add(1, Ordering::SeqCst);
                        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                        for (n, v) in req.headers() {
                            headers
                                .entry(n.as_str().to_owned())
                                .or_default()
                                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                        }
                        let doc = serde_json::json!({
                            "version": format!("{:?}", req.version()),
                            "path": req.uri().path(),
                            "authority": req.uri().authority().map(|a| a.to_string()),
                            "alpn": alpn,
                            "headers": headers,
                        });
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            doc.to_string(),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

fn https_upstream_config(port: u16, extra: &str) -> String {
    format!(
        r#"{}
[[route]]
name = "tls-up"
path_prefix = "/"
upstream = "https://localhost:{port}"
auth = "required"
{extra}
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#,
        default_issuer()
    )
}

fn upstream_ca() -> String {
    format!("upstream_ca = \"{}\"", cert_file("dev-ca.crt").display())
}

#[tokio::test]
async fn https_upstream_with_upstream_ca_is_reached_over_http1() {
    let (port, count) = tls_echo().await;
    let h = Harness::start(&https_upstream_config(port.port(), &upstream_ca())).await;
    let a = h.get_with_token("/secure", &valid_token()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["path"], "/secure", "{}", a.body);
    assert_eq!(j["version"], "HTTP/1.1", "{}", a.body);
    // HTTP/1.1 only: the gateway offers no h2 (it may offer http/1.1 or no ALPN at all).
    assert_ne!(j["alpn"], "h2", "{}", a.body);
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"], "{}", a.body);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_upstream_not_trusted_by_system_roots_is_502_bad_gateway() {
    let (port, count) = tls_echo().await;
    let h = Harness::start(&https_upstream_config(port.port(), "")).await;
    let t = valid_token();
    let a = h.get_with_token("/secure", &t).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.json()["error"], "bad_gateway", "{}", a.body);
    assert!(!a.body.contains(&t), "the token never appears: {}", a.body);
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "no request reached the untrusted upstream"
    );
}

#[tokio::test]
async fn https_upstream_with_a_certificate_for_another_name_is_502_bad_gateway() {
    // Signed by the trusted dev CA, but for other.localhost, not localhost.
    let (port, count) = tls_echo_with("other").await;
    let h = Harness::start(&https_upstream_config(port.port(), &upstream_ca())).await;
    let a = h.get_with_token("/secure", &valid_token()).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.json()["error"], "bad_gateway", "{}", a.body);
    assert_eq!(count.load(Ordering::SeqCst), 0, "no request was sent");
}

/// Runs the gateway in process from `config` (TOML; key files written next to it) and
/// returns its plain-HTTP address and the app (for its metrics).
async fn start_app(config: &str) -> (SocketAddr, Arc<jwtgate::App>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, format!("[listen]\naddr = \"127.0.0.1:0\"\n{config}"))
        .expect("write config");
    let config = jwtgate::Config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
    let snapshot = jwtgate::Snapshot::build(config).unwrap_or_else(|e| panic!("snapshot: {e}"));
    let app =
        Arc::new(jwtgate::App::new(snapshot, jwtgate::metrics::Metrics::new(), None).expect("app"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(jwtgate::run(listener, app.clone(), async {
        std::future::pending::<()>().await;
        Duration::from_secs(1)
    }));
    (addr, app, dir)
}

#[tokio::test]
async fn upstream_tls_failure_is_counted_as_kind_tls() {
    let (port, count) = tls_echo().await;
    // No upstream_ca: the system roots do not trust the dev CA.
    let (addr, app, _dir) = start_app(&https_upstream_config(port.port(), "")).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let r = H1Conn::new(tcp)
        .await
        .expect("h1")
        .get("/secure", Some(&valid_token()))
        .await
        .expect("answer");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"], "bad_gateway", "{}", r.body);
    assert_eq!(count.load(Ordering::SeqCst), 0);
    let metrics = app.metrics.render();
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("jwtgate_upstream_errors_total{"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("kind=\"tls\"")
            && l.contains("route=\"tls-up\"")
            && l.ends_with(" 1")),
        "SPEC: a TLS failure towards an upstream counts kind tls; got {lines:?} (answer {})",
        r.body
    );
    assert!(
        !r.body.contains("(connect)"),
        "the description does not call a TLS failure a connect failure: {}",
        r.body
    );
}

#[tokio::test]
async fn https_upstream_by_ip_address_verifies_the_ip_san() {
    // server.crt lists IP:127.0.0.1.
    let (port, count) = tls_echo().await;
    let h = Harness::start(&https_upstream_config(port.port(), &upstream_ca()).replace(
        &format!("https://localhost:{}", port.port()),
        &format!("https://127.0.0.1:{}", port.port()),
    ))
    .await;
    let a = h.get_with_token("/ip", &valid_token()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["path"], "/ip", "{}", a.body);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_upstream_with_upstream_http2_speaks_h2() {
    let (port, _count) = tls_echo().await;
    let h = Harness::start(&https_upstream_config(
        port.port(),
        &format!("{}\nupstream_http2 = true", upstream_ca()),
    ))
    .await;
    let a = h.get_with_token("/two", &valid_token()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["version"], "HTTP/2.0", "{}", a.body);
    assert_eq!(j["alpn"], "h2", "{}", a.body);
    assert_eq!(j["path"], "/two", "{}", a.body);
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"], "{}", a.body);
}

#[tokio::test]
async fn http2_upstream_gets_no_host_header_that_differs_from_authority() {
    let (port, _count) = tls_echo().await;
    let h = Harness::start(&https_upstream_config(
        port.port(),
        &format!("{}\nupstream_http2 = true", upstream_ca()),
    ))
    .await;
    let auth = format!("Bearer {}", valid_token());
    let a = h
        .get(
            "/two",
            &[("authorization", auth.as_str()), ("host", "public.example")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["version"], "HTTP/2.0", "{}", a.body);
    let authority = j["authority"].as_str().unwrap_or_default().to_owned();
    let host = a.upstream_header("host");
    // RFC 9113 8.3.1: a client MUST NOT generate a Host header field that differs from
    // :authority (servers may treat such a request as malformed).
    assert!(
        host.is_empty() || host == [authority.clone()],
        "upstream saw :authority {authority:?} and Host {host:?}: {}",
        a.body
    );
    // The client's host still reaches the upstream as X-Forwarded-Host.
    assert_eq!(
        a.upstream_header("x-forwarded-host"),
        ["public.example"],
        "{}",
        a.body
    );
}

// ---------------------------------------------------------------------------------------------
// 9. h2c prior knowledge

#[tokio::test]
async fn upstream_http2_over_http_uses_prior_knowledge() {
    let config = format!(
        r#"{}
[[route]]
name = "h2c"
path_prefix = "/h2c"
upstream = "{{upstream}}"
auth = "required"
upstream_http2 = true
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "h1"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#,
        default_issuer()
    );
    let h = Harness::start(&config).await;
    let t = valid_token();
    let a = h.get_with_token("/h2c/x", &t).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["version"], "HTTP/2.0", "{}", a.body);
    assert_eq!(a.json()["path"], "/h2c/x", "{}", a.body);
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"], "{}", a.body);
    let a = h.get_with_token("/plain", &t).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["version"], "HTTP/1.1", "{}", a.body);
}

// ---------------------------------------------------------------------------------------------
// 10. WebSocket and Upgrade: h2c

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn ws_accept(key: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{WS_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

/// One WebSocket frame: (FIN+opcode byte, payload, was it masked).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>, bool)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await?;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; usize::try_from(len).expect("len")];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((h[0], payload, masked))
}

fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![
        first,
        payload.len() as u8 | if mask.is_some() { 0x80 } else { 0 },
    ];
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads an HTTP/1.1 head (through the blank line) from `r`.
async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed inside the head: {head:?}"),
            ));
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
    }
}

fn head_headers<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A raw upstream: a request carrying any `Upgrade` header gets a 101 at once (with the
/// WebSocket accept when a key came) and then its frames echoed; anything else gets 200 with
/// the request head as JSON `{"head": ...}`. Records every head it received.
async fn ws_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(tcp);
                let Ok(head) = read_head(&mut r).await else {
                    return;
                };
                seen.lock().expect("lock").push(head.clone());
                if let Some(up) = head_header(&head, "upgrade") {
                    let mut res = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {up}\r\n"
                    );
                    if let Some(k) = head_header(&head, "sec-websocket-key") {
                        res.push_str(&format!("Sec-WebSocket-Accept: {}\r\n", ws_accept(k)));
                    }
                    res.push_str("\r\n");
                    if r.get_mut().write_all(res.as_bytes()).await.is_err() {
                        return;
                    }
                    while let Ok((first, payload, _)) = read_frame(&mut r).await {
                        if first & 0x0f == 0x8 {
                            return;
                        }
                        if r.get_mut()
                            .write_all(&frame(first, &payload, None))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                } else {
                    let body = serde_json::json!({ "head": head }).to_string();
                    let res = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = r.get_mut().write_all(res.as_bytes()).await;
                }
            });
        }
    });
    (addr, heads)
}

fn ws_config(upstream: SocketAddr) -> String {
    format!(
        r#"{}
[[route]]
name = "nows"
path_prefix = "/nows"
upstream = "http://{upstream}"
auth = "required"
websocket = false
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "ws"
path_prefix = "/"
upstream = "http://{upstream}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#,
        default_issuer()
    )
}

fn ws_handshake(path: &str, token: Option<&str>) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\nX-Auth-Sub: mallory\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Sends `request` on `io`, reads the answer head; on 101 exchanges one text frame "hello".
/// Returns (head, echoed frame if any).
async fn ws_exchange<S>(io: S, request: &str) -> (String, Option<(u8, Vec<u8>, bool)>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut r = BufReader::new(io);
    tokio::time::timeout(IO, r.get_mut().write_all(request.as_bytes()))
        .await
        .expect("write in time")
        .expect("write");
    let head = tokio::time::timeout(IO, read_head(&mut r))
        .await
        .expect("answer head in time")
        .expect("answer head");
    if !head.starts_with("HTTP/1.1 101") {
        return (head, None);
    }
    r.get_mut()
        .write_all(&frame(0x81, b"hello", Some([0x37, 0xfa, 0x21, 0x3d])))
        .await
        .expect("write frame");
    let f = tokio::time::timeout(IO, read_frame(&mut r))
        .await
        .expect("echoed frame in time")
        .expect("echoed frame");
    (head, Some(f))
}

fn assert_ws_echo(head: &str, f: Option<(u8, Vec<u8>, bool)>) {
    assert!(head.starts_with("HTTP/1.1 101"), "expected 101: {head}");
    assert_eq!(
        head_header(head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(
        head_header(head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head}"
    );
    let (first, payload, masked) = f.expect("a frame came back");
    assert_eq!(first, 0x81, "FIN + text opcode");
    assert_eq!(payload, b"hello");
    assert!(!masked, "server-to-client frames are not masked");
}

#[test]
fn ws_accept_matches_rfc6455_example() {
    assert_eq!(ws_accept(WS_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[tokio::test]
async fn websocket_with_valid_token_is_tunnelled() {
    let (up, heads) = ws_upstream().await;
    let h = Harness::start(&ws_config(up)).await;
    let t = valid_token();
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let (head, f) = ws_exchange(tcp, &ws_handshake("/chat", Some(&t))).await;
    assert_ws_echo(&head, f);
    let heads = heads.lock().expect("lock").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let up_head = &heads[0];
    assert!(up_head.starts_with("GET /chat HTTP/1.1\r\n"), "{up_head}");
    assert_eq!(
        head_headers(up_head, "x-auth-sub"),
        ["alice"],
        "the client's X-Auth-Sub is replaced by the claim: {up_head}"
    );
    assert_eq!(
        head_header(up_head, "sec-websocket-key"),
        Some(WS_KEY),
        "{up_head}"
    );
    assert!(head_header(up_head, "authorization").is_none(), "{up_head}");
}

#[tokio::test]
async fn websocket_over_tls_listener_is_tunnelled() {
    let (up, _heads) = ws_upstream().await;
    let h = Harness::start(&(tls_listen("", "") + &ws_config(up))).await;
    let s = tls_connect(
        h.addr,
        "localhost",
        client_config(BOTH, &[H1], Trust::DevCa, None),
    )
    .await
    .expect("handshake");
    let (head, f) = ws_exchange(s, &ws_handshake("/chat", Some(&valid_token()))).await;
    assert_ws_echo(&head, f);
}

#[tokio::test]
async fn websocket_without_token_is_401_and_never_upgraded() {
    let (up, heads) = ws_upstream().await;
    let h = Harness::start(&ws_config(up)).await;
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let (head, f) = ws_exchange(tcp, &ws_handshake("/chat", None)).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(f.is_none());
    assert_eq!(
        head_header(&head, "www-authenticate"),
        Some("Bearer realm=\"jwtgate\""),
        "{head}"
    );
    assert!(
        head_header(&head, "sec-websocket-accept").is_none(),
        "{head}"
    );
    assert!(
        heads.lock().expect("lock").is_empty(),
        "the upstream was never reached"
    );
}

#[tokio::test]
async fn websocket_on_route_with_websocket_false_is_a_plain_request() {
    let (up, heads) = ws_upstream().await;
    let h = Harness::start(&ws_config(up)).await;
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let (head, f) = ws_exchange(tcp, &ws_handshake("/nows/chat", Some(&valid_token()))).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "expected the upstream's 200: {head}"
    );
    assert!(f.is_none());
    let heads = heads.lock().expect("lock").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let up_head = &heads[0];
    assert!(
        up_head.starts_with("GET /nows/chat HTTP/1.1\r\n"),
        "{up_head}"
    );
    assert!(head_header(up_head, "upgrade").is_none(), "{up_head}");
    assert!(
        !head_header(up_head, "connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{up_head}"
    );
    assert_eq!(
        head_headers(up_head, "x-auth-sub"),
        ["alice"],
        "the client's X-Auth-Sub is replaced by the claim: {up_head}"
    );
}

#[tokio::test]
async fn upgrade_h2c_never_opens_a_tunnel() {
    let (up, heads) = ws_upstream().await;
    let h = Harness::start(&ws_config(up)).await;
    let t = valid_token();
    let req = format!(
        "GET /h2c HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nAuthorization: Bearer {t}\r\n\r\n"
    );
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let (head, f) = ws_exchange(tcp, &req).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "expected the upstream's 200: {head}"
    );
    assert!(f.is_none());
    let heads = heads.lock().expect("lock").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let up_head = &heads[0];
    assert!(head_header(up_head, "upgrade").is_none(), "{up_head}");
    assert!(
        head_header(up_head, "http2-settings").is_none(),
        "{up_head}"
    );
    assert!(
        !head_header(up_head, "connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{up_head}"
    );
}

#[tokio::test]
async fn upgrade_h2c_over_tls_never_opens_a_tunnel() {
    let (up, heads) = ws_upstream().await;
    let h = Harness::start(&(tls_listen("", "") + &ws_config(up))).await;
    let t = valid_token();
    let req = format!(
        "GET /h2c HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nAuthorization: Bearer {t}\r\n\r\n"
    );
    let s = tls_connect(
        h.addr,
        "localhost",
        client_config(BOTH, &[H1], Trust::DevCa, None),
    )
    .await
    .expect("handshake");
    let (head, f) = ws_exchange(s, &req).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "expected the upstream's 200: {head}"
    );
    assert!(f.is_none());
    let heads = heads.lock().expect("lock").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(head_header(&heads[0], "upgrade").is_none(), "{}", heads[0]);
}

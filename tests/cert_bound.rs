//! Certificate-bound tokens (RFC 8705 §3) over a real mTLS listener with
//! `client_auth = "optional"`: a real provider (oidc-provider, mTLS feature) binds a token to
//! the client certificate presented at its token endpoint, a real client (openid-client over
//! node's TLS) calls the gateway with it; the same token without the certificate, or with the
//! wrong one, is refused; plain tokens share the port with and without a certificate.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use common::bound::{echo, Gateway as Gw, ROUTES};
use common::tls::{cert_file, dev_client, dev_roots, pem_certs, pem_key, provider as crypto};
use common::*;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const IO: Duration = Duration::from_secs(10);

/// The gateway on TLS with the dev CA as `client_ca` and `client_auth` as given.
async fn start(issuers: &str, client_auth: &str) -> Gw {
    let auth = if client_auth.is_empty() {
        String::new()
    } else {
        format!(", client_auth = \"{client_auth}\"")
    };
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\"{auth} }}\n{issuers}{ROUTES}",
        cert_file("server.crt").display(),
        cert_file("server.key").display(),
        cert_file("dev-ca.crt").display(),
    )
    .replace("{upstream}", &echo().await);
    Gw::start(&text).await
}

/// A client trusting the dev CA presenting `identity` (`certs/NAME.crt` and `.key`).
fn client_with(identity: Option<&str>) -> Arc<ClientConfig> {
    match identity {
        None => dev_client(&[b"http/1.1"], false),
        Some("client") => dev_client(&[b"http/1.1"], true),
        Some(name) => {
            let mut c = ClientConfig::builder_with_provider(crypto())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(dev_roots())
                .with_client_auth_cert(
                    pem_certs(&cert_file(&format!("{name}.crt"))),
                    pem_key(&cert_file(&format!("{name}.key"))),
                )
                .expect("client certificate");
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        }
    }
}

/// One HTTPS request; `Err` when the handshake or the exchange fails.
async fn send(
    addr: SocketAddr,
    identity: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(
        IO,
        TlsConnector::from(client_with(identity)).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(conn);
    let mut b = http::Request::get(path).header("host", format!("localhost:{}", addr.port()));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).expect("request");
    let res = tokio::time::timeout(IO, sender.send_request(req))
        .await
        .map_err(|_| "request timed out".to_owned())?
        .map_err(|e| format!("request: {e}"))?;
    // With TLS 1.3 the handshake completes before the server has checked the certificate: a
    // refused one shows up as a failed request rather than a failed handshake.
    client::read_answer(res, path).await
}

async fn bearer(
    addr: SocketAddr,
    identity: Option<&str>,
    path: &str,
    token: &str,
) -> Result<Answer, String> {
    let auth = format!("Bearer {token}");
    send(addr, identity, path, &[("authorization", &auth)]).await
}

/// `x5t#S256` of a dev certificate.
fn x5t(name: &str) -> String {
    let der = common::tls::der_of(&cert_file(&format!("{name}.crt")));
    b64(digest::digest(&digest::SHA256, &der).as_ref())
}

fn bound_to(name: &str) -> String {
    token(
        "ES256",
        &with(claims(), "cnf", json!({ "x5t#S256": x5t(name) })),
    )
}

#[tokio::test]
async fn a_real_provider_binds_a_token_to_the_client_certificate_and_the_gateway_checks_it() {
    let provider = common::bound::BoundProvider::start();
    let gw = start(&provider.issuer_block(""), "optional").await;
    let url = format!("https://127.0.0.1:{}/cb", gw.addr.port());
    let out = provider.client("mtls", &url).await;
    assert_eq!(
        out["cnf"]["x5t#S256"],
        Value::String(x5t("client")),
        "the provider bound the token to another certificate: {out}"
    );
    let a = &out["answers"][0];
    assert_eq!(a["status"], 200, "openid-client through the gateway: {out}");
    let tok = out["token"].as_str().expect("token");
    // The same token from a connection without a certificate, or as DPoP: refused.
    let r = bearer(gw.addr, None, "/cb", tok).await.expect("request");
    assert_invalid(&r, tok, "certificate-bound token without a certificate");
    assert_eq!(gw.failures("main", "binding_mismatch"), 1);
    let auth = format!("DPoP {tok}");
    let r = send(gw.addr, Some("client"), "/cb", &[("authorization", &auth)])
        .await
        .expect("request");
    assert_eq!(
        r.status, 401,
        "certificate-bound token with the DPoP scheme: {}",
        r.body
    );
    assert_eq!(gw.failures("main", "binding_mismatch"), 2);
    // With the certificate, from Rust too.
    let r = bearer(gw.addr, Some("client"), "/cb", tok)
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn certificate_bound_and_plain_tokens_share_an_optional_port() {
    let gw = start(&default_issuer(), "optional").await;
    let plain = token("ES256", &claims());
    for identity in [None, Some("client")] {
        let r = bearer(gw.addr, identity, "/p", &plain)
            .await
            .expect("request");
        assert_eq!(
            r.status, 200,
            "plain token, certificate {identity:?}: {}",
            r.body
        );
        assert_eq!(r.json()["headers"]["x-auth-sub"][0], "alice");
    }
    let bound = bound_to("client");
    let r = bearer(gw.addr, Some("client"), "/p", &bound)
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = bearer(gw.addr, None, "/p", &bound).await.expect("request");
    assert_invalid(&r, &bound, "bound token, no certificate");
    // Bound to another certificate than the one presented.
    let elsewhere = bound_to("other");
    let r = bearer(gw.addr, Some("client"), "/p", &elsewhere)
        .await
        .expect("request");
    assert_invalid(&r, &elsewhere, "token bound to another certificate");
    assert_eq!(gw.failures("main", "binding_mismatch"), 2);
    // require_binding: the bound token passes, the plain one does not.
    let r = bearer(gw.addr, Some("client"), "/strict", &bound)
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = bearer(gw.addr, Some("client"), "/strict", &plain)
        .await
        .expect("request");
    assert_invalid(&r, &plain, "plain token on require_binding");
    assert_eq!(gw.failures("strict", "binding_mismatch"), 1);
    // Optional is not "anything goes": a certificate that is sent is still verified (this
    // one is the dev CA's server certificate, not made for client authentication).
    let r = bearer(gw.addr, Some("other"), "/p", &plain).await;
    assert!(
        r.is_err(),
        "a certificate unfit for client auth was accepted: {r:?}"
    );
}

#[tokio::test]
async fn client_auth_required_still_refuses_connections_without_a_certificate() {
    let gw = start(&default_issuer(), "").await;
    let plain = token("ES256", &claims());
    let r = bearer(gw.addr, None, "/p", &plain).await;
    assert!(
        r.is_err(),
        "no certificate was accepted with client_auth required: {r:?}"
    );
    let r = bearer(gw.addr, Some("client"), "/p", &plain)
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let gw = start(&default_issuer(), "required").await;
    assert!(bearer(gw.addr, None, "/p", &plain).await.is_err());
}

#[tokio::test]
async fn client_auth_needs_client_ca_and_a_known_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    for (tls_extra, expect) in [
        (", client_auth = \"optional\"".to_owned(), "needs client_ca"),
        (
            format!(
                ", client_ca = \"{}\", client_auth = \"sometimes\"",
                cert_file("dev-ca.crt").display()
            ),
            "neither",
        ),
    ] {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\"{tls_extra} }}\n{}{ROUTES}",
            cert_file("server.crt").display(),
            cert_file("server.key").display(),
            default_issuer(),
        )
        .replace("{upstream}", "http://127.0.0.1:9");
        std::fs::write(&path, text).expect("write");
        let err = match jwtgate::Config::load(&path) {
            Ok(_) => panic!("{tls_extra} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("client_auth") && err.contains(expect), "{err}");
    }
}

//! Identity assertions (SPEC "Identity assertion for backends"), verified by verifiers nobody
//! here wrote: PyJWT (a venv under target/, made by scripts/test.sh) and npm `jose`
//! (tests/oidc/node_modules), each reading the gateway's admin `/.well-known/jwks.json`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use common::edge::EdgeGateway;
use serde_json::{json, Value};

const ASSERTION_ISS: &str = "https://jwtgate.test";

/// Writes a new EC P-256 (`ec`) or Ed25519 (`ed`) PKCS#8 v1 private key, as OpenSSL writes
/// them, to `dir/name`.
fn write_private_key(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let der = match kind {
        "ec" => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("ec keygen")
            .to_pkcs8v1()
            .expect("pkcs8")
            .as_ref()
            .to_vec(),
        "ed" => Ed25519KeyPair::generate()
            .expect("ed keygen")
            .to_pkcs8v1()
            .expect("pkcs8")
            .as_ref()
            .to_vec(),
        other => panic!("no key kind {other}"),
    };
    let path = dir.join(name);
    std::fs::write(&path, pem::encode(&pem::Pem::new("PRIVATE KEY", der))).expect("write key");
    path
}

fn config(keys: &[&str], ttl: &str, header: Option<&str>) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    let header = header.map_or(String::new(), |h| format!("header = {h:?}"));
    format!(
        r#"[admin]
addr = "127.0.0.1:0"
{issuer}
[assertion]
keys = [{keys}]
issuer = "{ASSERTION_ISS}"
ttl = "{ttl}"
{header}

[[route]]
name = "orders"
path_prefix = "/orders"
upstream = "{{upstream}}"
auth = "required"
assertion = true
assertion_audience = "orders-backend"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Roles" = "/realm_access/roles"
"X-Auth-Iss" = "iss"

[[route]]
name = "billing"
path_prefix = "/billing"
upstream = "{{upstream}}"
auth = "optional"
assertion = true

[[route]]
name = "public"
path_prefix = "/public"
upstream = "{{upstream}}"
auth = "none"
"#,
        issuer = common::default_issuer(),
        keys = keys.join(", "),
    )
}

fn user_token(sub: &str) -> String {
    let mut c = common::claims();
    c["sub"] = json!(sub);
    c["email"] = json!(format!("{sub}@example.com"));
    c["realm_access"] = json!({ "roles": ["admin", "ops"] });
    c["secret_claim"] = json!("not for the backend");
    common::token("ES256", &c)
}

async fn assertion_of(gw: &EdgeGateway, path: &str, token: &str) -> String {
    let a = gw
        .request(
            "GET",
            path,
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let got = a.upstream_header("x-jwtgate-assertion");
    assert_eq!(got.len(), 1, "one assertion reaches the upstream: {got:?}");
    got[0].clone()
}

/// The PyJWT interpreter: target/pyjwt-venv, made by scripts/test.sh.
fn pyjwt_python() -> PathBuf {
    let python = common::repo("target/pyjwt-venv/bin/python");
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is missing: tests/assertion.rs verifies assertions with PyJWT; install the python3 and python3-venv packages, then run scripts/test.sh");
    }
    let ok = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "PyJWT is not installed in {}: run scripts/test.sh (it runs `python3 -m venv` there and `pip install pyjwt[crypto]`)",
        python.display()
    );
    python
}

/// Verifies `token` with PyJWT against the JWKS at `jwks_url`; the claims, or the error.
fn verify_pyjwt(jwks_url: &str, token: &str, audience: &str) -> Result<Value, String> {
    let script = r#"
import json, sys, jwt
url, token, iss, aud = sys.argv[1:5]
header = jwt.get_unverified_header(token)
if header.get("typ") != "jwtgate-id+jwt":
    sys.exit("wrong typ: %r" % header.get("typ"))
key = jwt.PyJWKClient(url).get_signing_key_from_jwt(token)
claims = jwt.decode(token, key.key, algorithms=["ES256", "EdDSA"], audience=aud, issuer=iss,
                    options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]})
print(json.dumps(claims))
"#;
    let out = Command::new(pyjwt_python())
        .args(["-c", script, jwks_url, token, ASSERTION_ISS, audience])
        .output()
        .expect("run python");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("claims JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Verifies `token` with npm `jose` (jwtVerify over createRemoteJWKSet).
fn verify_jose(jwks_url: &str, token: &str, audience: &str) -> Result<Value, String> {
    let dir = common::repo("tests/oidc");
    assert!(
        dir.join("node_modules/jose").is_dir(),
        "npm jose is not installed in tests/oidc/node_modules: run scripts/test.sh (npm ci --prefix tests/oidc; needs the nodejs and npm packages)"
    );
    let script = r#"
import { createRemoteJWKSet, jwtVerify } from 'jose';
const [url, token, issuer, audience] = process.argv.slice(1);
const jwks = createRemoteJWKSet(new URL(url));
const { payload } = await jwtVerify(token, jwks, {
  issuer, audience, typ: 'jwtgate-id+jwt', algorithms: ['ES256', 'EdDSA'],
  requiredClaims: ['sub', 'iat', 'exp', 'jti'],
});
console.log(JSON.stringify(payload));
"#;
    let out = Command::new("node")
        .current_dir(&dir)
        .args([
            "--input-type=module",
            "-e",
            script,
            jwks_url,
            token,
            ASSERTION_ISS,
            audience,
        ])
        .output()
        .unwrap_or_else(|e| panic!("node is missing ({e}): install the nodejs package"));
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("claims JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn header_of(jwt: &str) -> Value {
    use base64::Engine;
    let h = jwt.split('.').next().expect("header");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .expect("b64"),
    )
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_and_jose_verify_es256_and_eddsa_assertions_from_the_admin_jwks() {
    for kind in ["ec", "ed"] {
        let dir = tempfile::tempdir().expect("tempdir");
        common::write_keys(dir.path());
        write_private_key(dir.path(), "assertion.pem", kind);
        let gw = EdgeGateway::start(dir.path(), &config(&["assertion.pem"], "60s", None)).await;
        let jwks_url = gw.admin_url("/.well-known/jwks.json");
        let assertion = assertion_of(&gw, "/orders/1", &user_token("alice")).await;
        let header = header_of(&assertion);
        assert_eq!(header["alg"], if kind == "ec" { "ES256" } else { "EdDSA" });
        assert_eq!(header["typ"], "jwtgate-id+jwt");

        let py = verify_pyjwt(&jwks_url, &assertion, "orders-backend")
            .unwrap_or_else(|e| panic!("PyJWT refused the {kind} assertion: {e}"));
        let js = verify_jose(&jwks_url, &assertion, "orders-backend")
            .unwrap_or_else(|e| panic!("jose refused the {kind} assertion: {e}"));
        for claims in [&py, &js] {
            assert_eq!(claims["iss"], ASSERTION_ISS);
            assert_eq!(claims["aud"], "orders-backend");
            assert_eq!(claims["sub"], "alice");
            assert_eq!(claims["email"], "alice@example.com");
            assert_eq!(claims["realm_access"]["roles"], json!(["admin", "ops"]));
            assert!(
                claims.get("secret_claim").is_none(),
                "only claims the route reads: {claims}"
            );
            let (iat, exp) = (
                claims["iat"].as_i64().unwrap(),
                claims["exp"].as_i64().unwrap(),
            );
            assert_eq!(exp - iat, 60);
            assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
        }
        // The wrong audience is refused by both: a backend checks its own.
        assert!(verify_pyjwt(&jwks_url, &assertion, "billing").is_err());
        assert!(verify_jose(&jwks_url, &assertion, "billing").is_err());

        // The default audience is the route name.
        let billing = assertion_of(&gw, "/billing", &user_token("bob")).await;
        let claims = verify_jose(&jwks_url, &billing, "billing").expect("jose");
        assert_eq!(claims["sub"], "bob");

        // `jwtgate assertion-jwks` prints what the admin listener serves.
        let out = Command::new(common::binary())
            .args(["assertion-jwks", "--config"])
            .arg(&gw.config)
            .output()
            .expect("run assertion-jwks");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Value = serde_json::from_slice(&out.stdout).expect("JWKS JSON");
        let served: Value = common::client::request("GET", &jwks_url, &[], bytes::Bytes::new())
            .await
            .json();
        assert_eq!(printed, served);
        assert_eq!(served["keys"][0]["kid"], header["kid"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_are_reused_per_token_and_route_until_ten_percent_of_ttl_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    write_private_key(dir.path(), "a.pem", "ec");
    let gw = EdgeGateway::start(dir.path(), &config(&["a.pem"], "2s", None)).await;
    let alice = user_token("alice");
    let first = assertion_of(&gw, "/orders/1", &alice).await;
    assert_eq!(
        assertion_of(&gw, "/orders/2", &alice).await,
        first,
        "reused for the same token"
    );
    assert_ne!(
        assertion_of(&gw, "/orders/1", &user_token("bob")).await,
        first,
        "another token gets its own"
    );
    assert_ne!(
        assertion_of(&gw, "/billing", &alice).await,
        first,
        "another route its own"
    );
    // With 2 s of ttl, a new one is made once less than 10% (rounded up to 1 s) is left.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_ne!(
        assertion_of(&gw, "/orders/1", &alice).await,
        first,
        "renewed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_every_key_and_signs_with_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    write_private_key(dir.path(), "old.pem", "ec");
    write_private_key(dir.path(), "new.pem", "ed");
    let gw = EdgeGateway::start(dir.path(), &config(&["old.pem", "new.pem"], "60s", None)).await;
    let jwks_url = gw.admin_url("/.well-known/jwks.json");
    let jwks: Value = common::client::request("GET", &jwks_url, &[], bytes::Bytes::new())
        .await
        .json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid"))
        .collect();
    assert_eq!(kids.len(), 2, "both keys are published: {jwks}");
    let alice = user_token("alice");
    let before = assertion_of(&gw, "/orders/1", &alice).await;
    assert_eq!(header_of(&before)["kid"], kids[0], "the first key signs");

    // Step two of a rotation: the new key (published since step one) moves to the front.
    gw.reload(&config(&["new.pem", "old.pem"], "60s", None));
    let after = assertion_of(&gw, "/orders/1", &alice).await;
    assert_ne!(
        after, before,
        "a reload never reuses an assertion of the old key order"
    );
    assert_eq!(header_of(&after)["kid"], kids[1]);
    assert_eq!(header_of(&after)["alg"], "EdDSA");
    // Backends holding either assertion still verify it against the published set.
    for a in [&before, &after] {
        verify_jose(&jwks_url, a, "orders-backend").expect("jose");
        verify_pyjwt(&jwks_url, a, "orders-backend").expect("PyJWT");
    }
    // Step three: the old key is dropped and no longer verifies.
    gw.reload(&config(&["new.pem"], "60s", None));
    assert!(verify_jose(&jwks_url, &before, "orders-backend").is_err());
    verify_jose(&jwks_url, &after, "orders-backend").expect("jose");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_assertion_headers_are_stripped_on_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    write_private_key(dir.path(), "a.pem", "ed");
    let gw = EdgeGateway::start(
        dir.path(),
        &config(&["a.pem"], "60s", Some("X-Identity-Assertion")),
    )
    .await;
    let forged = [
        ("x-jwtgate-assertion", "forged"),
        ("x_jwtgate_assertion", "forged"),
        ("X-Identity-Assertion", "forged"),
        ("x_identity_assertion", "forged"),
    ];
    // A route without auth, an optional route without a token: nothing reaches the upstream.
    for path in ["/public", "/billing"] {
        let a = gw.request("GET", path, &forged).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let names = a.upstream_header_names();
        assert!(
            !names.iter().any(|n| n.contains("assertion")),
            "{path}: {names:?}"
        );
    }
    // On an assertion route, exactly the gateway's own, in the configured header.
    let token = user_token("alice");
    let auth = format!("Bearer {token}");
    let mut headers = forged.to_vec();
    headers.push(("authorization", &auth));
    let a = gw.request("GET", "/orders", &headers).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let ours = a.upstream_header("x-identity-assertion");
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_ne!(ours[0], "forged");
    assert!(a.upstream_header("x-jwtgate-assertion").is_empty());
    let names = a.upstream_header_names();
    assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_assertion_config_is_refused_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    std::fs::write(dir.path().join("rsa-private.pem"), "not a key").expect("write");
    let path = dir.path().join("gateway.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}\n[assertion]\nkeys = [\"rsa-private.pem\"]\nissuer = \"{ASSERTION_ISS}\"\n[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"none\"\nassertion = true\n",
        common::default_issuer()
    );
    std::fs::write(&path, text).expect("write");
    let errors = match jwtgate::App::load(&path) {
        Ok(_) => panic!("a config with a bad assertion key loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        errors.contains("no effect with auth = \"none\""),
        "{errors}"
    );
    let no_section = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}\n[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"required\"\nassertion = true\n",
        common::default_issuer()
    );
    std::fs::write(&path, no_section).expect("write");
    let errors = jwtgate::Config::load(&path)
        .expect_err("refused")
        .to_string();
    assert!(errors.contains("needs an [assertion] section"), "{errors}");
    let bad_key = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}\n[assertion]\nkeys = [\"rsa-private.pem\"]\nissuer = \"{ASSERTION_ISS}\"\n[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"required\"\nassertion = true\n",
        common::default_issuer()
    );
    std::fs::write(&path, bad_key).expect("write");
    let errors = match jwtgate::App::load(&path) {
        Ok(_) => panic!("a config with a bad assertion key loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        errors.contains("rsa-private.pem") && errors.contains("not a PEM"),
        "{errors}"
    );
    assert!(
        common::is_located(errors.lines().next().unwrap(), &path),
        "{errors}"
    );
}

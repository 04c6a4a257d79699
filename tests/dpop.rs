//! DPoP-bound tokens (RFC 9449) through a real gateway and echo upstream: every check of §4.3,
//! replay, clock skew, wrong key, method and URL, the nonce flow across two replicas, the
//! `Authorization: DPoP` scheme and its challenges, `require_binding`, the verified-token
//! cache (a hit still needs a fresh proof), `trusted_proxies` for `htu`, and `explain --dpop`.
//! Proofs are made here with aws-lc-rs keys; tests/dpop_oidc.rs does the same with a real
//! provider and client.

mod common;

use aws_lc_rs::digest;
use bytes::Bytes;
use common::bound::{echo, Gateway as Gw, ROUTES};
use common::jwks::Signer;
use common::*;
use serde_json::{json, Value};

/// The default issuer with `extra` issuer keys (dpop_*).
fn issuer(extra: &str) -> String {
    format!("{}{extra}\n", default_issuer())
}

async fn start(config: &str) -> Gw {
    start_on(config, &echo().await).await
}

async fn start_on(config: &str, upstream: &str) -> Gw {
    Gw::start(&config.replace("{upstream}", upstream)).await
}

async fn send(gw: &Gw, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    client::request(method, &gw.url(path), headers, Bytes::new()).await
}

/// `method path` with `Authorization: DPoP token` and, when given, the proof.
async fn dpop(gw: &Gw, method: &str, path: &str, token: &str, proof: Option<&str>) -> Answer {
    let auth = format!("DPoP {token}");
    let mut h = vec![("authorization", auth.as_str())];
    if let Some(p) = proof {
        h.push(("dpop", p));
    }
    send(gw, method, path, &h).await
}

async fn get_bearer(gw: &Gw, path: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    send(gw, "GET", path, &[("authorization", &auth)]).await
}

/// A DPoP client: an EC P-256 key it proves possession of.
struct DpopClient {
    key: Signer,
}

fn ath(token: &str) -> String {
    b64(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

fn jti() -> String {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::fill(&mut b).expect("rand");
    b64(&b)
}

impl DpopClient {
    fn new() -> DpopClient {
        DpopClient {
            key: Signer::new("dpop"),
        }
    }

    fn jwk(&self) -> Value {
        self.key.jwk_with(json!({}))
    }

    /// The RFC 7638 thumbprint, computed here independently of the gateway.
    fn jkt(&self) -> String {
        let j = self.jwk();
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            j["crv"].as_str().expect("crv"),
            j["x"].as_str().expect("x"),
            j["y"].as_str().expect("y")
        );
        b64(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }

    fn header(&self) -> Value {
        json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() })
    }

    fn claims(method: &str, htu: &str, token: &str) -> Value {
        json!({ "jti": jti(), "htm": method, "htu": htu, "iat": now(), "ath": ath(token) })
    }

    /// A valid proof for `method htu` with `token`.
    fn proof(&self, method: &str, htu: &str, token: &str) -> String {
        self.sign(&self.header(), &Self::claims(method, htu, token))
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        self.key.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// An access token bound to this client's key.
    fn token(&self) -> String {
        token(
            "ES256",
            &with(claims(), "cnf", json!({ "jkt": self.jkt() })),
        )
    }
}

fn assert_dpop_challenge(a: &Answer, error: &str, case: &str) {
    assert_eq!(a.status, 401, "{case}: {}", a.body);
    let www = a.header("www-authenticate").unwrap_or_default();
    assert!(
        www.starts_with(&format!("DPoP realm=\"jwtgate\", error=\"{error}\"")),
        "{case}: WWW-Authenticate {www:?}"
    );
    assert!(www.contains("algs=\""), "{case}: no algs in {www:?}");
    assert_eq!(a.json()["error"], error, "{case}: {}", a.body);
}

#[tokio::test]
async fn a_bound_token_passes_with_a_proof_and_the_proof_never_reaches_the_upstream() {
    let gw = start(&format!("{}{ROUTES}", issuer(""))).await;
    let c = DpopClient::new();
    let tok = c.token();
    let a = dpop(
        &gw,
        "GET",
        "/x?q=1",
        &tok,
        Some(&c.proof("GET", &gw.url("/x"), &tok)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
    assert!(
        a.upstream_header("dpop").is_empty(),
        "{:?}",
        a.upstream_header_names()
    );
    assert!(a.upstream_header("authorization").is_empty());
    // POST with its own proof.
    let a = dpop(
        &gw,
        "POST",
        "/x",
        &tok,
        Some(&c.proof("POST", &gw.url("/x"), &tok)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // On a route without auth the header is removed too.
    let a = send(&gw, "GET", "/open", &[("dpop", "anything")]).await;
    assert_eq!(a.status, 200);
    assert!(a.upstream_header("dpop").is_empty());
}

#[tokio::test]
async fn a_proof_is_used_once_and_the_cache_never_skips_it() {
    let gw = start(&format!("{}{ROUTES}", issuer(""))).await;
    let c = DpopClient::new();
    let tok = c.token();
    let htu = gw.url("/r");
    let proof = c.proof("GET", &htu, &tok);
    assert_eq!(dpop(&gw, "GET", "/r", &tok, Some(&proof)).await.status, 200);
    let hits = gw.app.metrics.token_cache.with_label_values(&["hit"]).get();
    let a = dpop(&gw, "GET", "/r", &tok, Some(&proof)).await;
    assert_dpop_challenge(&a, "invalid_dpop_proof", "replayed proof");
    assert_eq!(gw.failures("main", "dpop_replay"), 1);
    // The token itself came from the verified-token cache, and still needed its proof.
    assert!(gw.app.metrics.token_cache.with_label_values(&["hit"]).get() > hits);
    let a = dpop(&gw, "GET", "/r", &tok, None).await;
    assert_dpop_challenge(&a, "invalid_dpop_proof", "cached token without a proof");
    let a = get_bearer(&gw, "/r", &tok).await;
    assert_dpop_challenge(&a, "invalid_token", "cached bound token as Bearer");
    // A fresh proof passes again.
    let a = dpop(&gw, "GET", "/r", &tok, Some(&c.proof("GET", &htu, &tok))).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn every_proof_check_of_rfc_9449_section_4_3_refuses() {
    let gw = start(&format!(
        "{}{ROUTES}",
        issuer("dpop_algorithms = [\"ES256\"]\ndpop_max_age = \"60s\"")
    ))
    .await;
    let c = DpopClient::new();
    let other = DpopClient::new();
    let tok = c.token();
    let htu = gw.url("/p");
    let good_claims = || DpopClient::claims("GET", &htu, &tok);
    let edit = |mut v: Value, name: &str, value: Option<Value>| {
        match value {
            Some(x) => v[name] = x,
            None => {
                v.as_object_mut().expect("object").remove(name);
            }
        }
        v
    };
    let h = c.header();
    let mut jwk_with_d = c.jwk();
    jwk_with_d["d"] = json!("AAAA");
    let cases: Vec<(&str, String, &str)> = vec![
        ("not a JWS", "abc.def".into(), "dpop_invalid"),
        (
            "typ missing",
            c.sign(&edit(h.clone(), "typ", None), &good_claims()),
            "dpop_invalid",
        ),
        (
            "typ JWT",
            c.sign(&edit(h.clone(), "typ", Some(json!("JWT"))), &good_claims()),
            "dpop_invalid",
        ),
        (
            "alg not in dpop_algorithms",
            c.sign(
                &edit(h.clone(), "alg", Some(json!("ES384"))),
                &good_claims(),
            ),
            "dpop_invalid",
        ),
        (
            "alg HS256",
            c.sign(
                &edit(h.clone(), "alg", Some(json!("HS256"))),
                &good_claims(),
            ),
            "dpop_invalid",
        ),
        (
            "alg none",
            c.sign(&edit(h.clone(), "alg", Some(json!("none"))), &good_claims()),
            "dpop_invalid",
        ),
        (
            "no jwk",
            c.sign(&edit(h.clone(), "jwk", None), &good_claims()),
            "dpop_invalid",
        ),
        (
            "private jwk",
            c.sign(&edit(h.clone(), "jwk", Some(jwk_with_d)), &good_claims()),
            "dpop_invalid",
        ),
        (
            "bad signature",
            other.sign(&h, &good_claims()),
            "dpop_invalid",
        ),
        (
            "wrong key",
            other.proof("GET", &htu, &tok),
            "binding_mismatch",
        ),
        (
            "htm",
            c.sign(&h, &edit(good_claims(), "htm", Some(json!("POST")))),
            "dpop_invalid",
        ),
        (
            "htm case",
            c.sign(&h, &edit(good_claims(), "htm", Some(json!("get")))),
            "dpop_invalid",
        ),
        (
            "htm missing",
            c.sign(&h, &edit(good_claims(), "htm", None)),
            "dpop_invalid",
        ),
        (
            "htu path",
            c.sign(
                &h,
                &edit(good_claims(), "htu", Some(json!(gw.url("/other")))),
            ),
            "dpop_invalid",
        ),
        (
            "htu host",
            c.sign(
                &h,
                &edit(
                    good_claims(),
                    "htu",
                    Some(json!(format!("http://evil.example:{}/p", gw.addr.port()))),
                ),
            ),
            "dpop_invalid",
        ),
        (
            "htu scheme",
            c.sign(
                &h,
                &edit(
                    good_claims(),
                    "htu",
                    Some(json!(format!("https://{}/p", gw.addr))),
                ),
            ),
            "dpop_invalid",
        ),
        (
            "htu missing",
            c.sign(&h, &edit(good_claims(), "htu", None)),
            "dpop_invalid",
        ),
        (
            "iat missing",
            c.sign(&h, &edit(good_claims(), "iat", None)),
            "dpop_invalid",
        ),
        (
            "iat too old",
            c.sign(&h, &edit(good_claims(), "iat", Some(json!(now() - 200)))),
            "dpop_invalid",
        ),
        (
            "iat in the future",
            c.sign(&h, &edit(good_claims(), "iat", Some(json!(now() + 200)))),
            "dpop_invalid",
        ),
        (
            "iat a string",
            c.sign(&h, &edit(good_claims(), "iat", Some(json!("now")))),
            "dpop_invalid",
        ),
        (
            "ath missing",
            c.sign(&h, &edit(good_claims(), "ath", None)),
            "dpop_invalid",
        ),
        (
            "ath of another token",
            c.sign(&h, &edit(good_claims(), "ath", Some(json!(ath("other"))))),
            "dpop_invalid",
        ),
        (
            "jti missing",
            c.sign(&h, &edit(good_claims(), "jti", None)),
            "dpop_invalid",
        ),
        (
            "jti empty",
            c.sign(&h, &edit(good_claims(), "jti", Some(json!("")))),
            "dpop_invalid",
        ),
        (
            "crit",
            c.sign(&edit(h.clone(), "crit", Some(json!(["x"]))), &good_claims()),
            "dpop_invalid",
        ),
    ];
    for (case, proof, reason) in &cases {
        let before = gw.failures("main", reason);
        let a = dpop(&gw, "GET", "/p", &tok, Some(proof)).await;
        assert_dpop_challenge(&a, "invalid_dpop_proof", case);
        assert_eq!(
            gw.failures("main", reason),
            before + 1,
            "{case}: reason {reason}"
        );
        assert!(!a.body.contains(&tok), "{case}: the token is echoed");
    }
    // Within the window (60s + the issuer's 30s leeway) either way: accepted.
    for iat in [now() - 80, now() + 80] {
        let p = c.sign(&h, &edit(good_claims(), "iat", Some(json!(iat))));
        let a = dpop(&gw, "GET", "/p", &tok, Some(&p)).await;
        assert_eq!(a.status, 200, "iat {iat}: {}", a.body);
    }
}

#[tokio::test]
async fn htu_is_compared_after_rfc_3986_normalisation() {
    let gw = start(&format!("{}{ROUTES}", issuer(""))).await;
    let c = DpopClient::new();
    let tok = c.token();
    let port = gw.addr.port();
    for (htu, path) in [
        (format!("HTTP://127.0.0.1:{port}/a/b"), "/a/b"),
        (
            format!("http://127.0.0.1:{port}/a/./c/../b?x=1#frag"),
            "/a/b",
        ),
        (format!("http://127.0.0.1:{port}/%7Euser"), "/~user"),
        (format!("http://127.0.0.1:{port}/~user"), "/%7euser"),
        (format!("http://127.0.0.1:{port}"), "/"),
    ] {
        let a = dpop(&gw, "GET", path, &tok, Some(&c.proof("GET", &htu, &tok))).await;
        assert_eq!(a.status, 200, "htu {htu} for {path}: {}", a.body);
    }
}

#[tokio::test]
async fn schemes_and_bindings_that_do_not_match_are_refused() {
    let gw = start(&format!("{}{ROUTES}", issuer(""))).await;
    let c = DpopClient::new();
    let bound = c.token();
    let plain = token("ES256", &claims());
    // A DPoP-bound token as Bearer.
    let a = get_bearer(&gw, "/b", &bound).await;
    assert_dpop_challenge(&a, "invalid_token", "bound token as Bearer");
    assert_eq!(gw.failures("main", "binding_mismatch"), 1);
    // An unbound token with the DPoP scheme, even with a good proof.
    let a = dpop(
        &gw,
        "GET",
        "/b",
        &plain,
        Some(&c.proof("GET", &gw.url("/b"), &plain)),
    )
    .await;
    assert_dpop_challenge(&a, "invalid_token", "unbound token as DPoP");
    assert_eq!(gw.failures("main", "binding_mismatch"), 2);
    // A bound token without any proof.
    let a = dpop(&gw, "GET", "/b", &bound, None).await;
    assert_dpop_challenge(&a, "invalid_dpop_proof", "no proof");
    // A token refused for itself (expired) with the DPoP scheme: a DPoP challenge, invalid_token.
    let expired = token(
        "ES256",
        &with(
            with(claims(), "exp", json!(now() - 600)),
            "cnf",
            json!({"jkt": c.jkt()}),
        ),
    );
    let a = dpop(
        &gw,
        "GET",
        "/b",
        &expired,
        Some(&c.proof("GET", &gw.url("/b"), &expired)),
    )
    .await;
    assert_dpop_challenge(&a, "invalid_token", "expired bound token");
    // An unknown confirmation method is never ignored.
    let odd = token("ES256", &with(claims(), "cnf", json!({"kid": "k1"})));
    let a = get_bearer(&gw, "/b", &odd).await;
    assert_eq!(a.status, 401, "{}", a.body);
    // Plain tokens as Bearer still pass; a plain token on a require_binding route does not.
    assert_eq!(get_bearer(&gw, "/b", &plain).await.status, 200);
    let a = get_bearer(&gw, "/strict", &plain).await;
    assert_invalid(&a, &plain, "unbound token on require_binding");
    assert_eq!(gw.failures("strict", "binding_mismatch"), 1);
    let a = dpop(
        &gw,
        "GET",
        "/strict",
        &bound,
        Some(&c.proof("GET", &gw.url("/strict"), &bound)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // An unmet requirement with the DPoP scheme: 403 with a DPoP challenge.
    let a = dpop(
        &gw,
        "GET",
        "/scoped",
        &bound,
        Some(&c.proof("GET", &gw.url("/scoped"), &bound)),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("DPoP realm=\"jwtgate\", error=\"insufficient_scope\""));
}

#[tokio::test]
async fn two_dpop_headers_are_a_400() {
    let gw = start(&format!("{}{ROUTES}", issuer(""))).await;
    let c = DpopClient::new();
    let tok = c.token();
    let p1 = c.proof("GET", &gw.url("/t"), &tok);
    let p2 = c.proof("GET", &gw.url("/t"), &tok);
    let raw = format!(
        "GET /t HTTP/1.1\r\nHost: {}\r\nAuthorization: DPoP {tok}\r\nDPoP: {p1}\r\nDPoP: {p2}\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let (answer, _) =
        raw_exchange(gw.addr, raw.as_bytes(), std::time::Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Also on a route without auth.
    let raw = format!(
        "GET /open HTTP/1.1\r\nHost: {}\r\nDPoP: a\r\nDPoP: b\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let (answer, _) =
        raw_exchange(gw.addr, raw.as_bytes(), std::time::Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn nonces_are_demanded_issued_and_accepted_by_any_replica_with_the_key() {
    std::env::set_var(
        "JWTGATE_TEST_NONCE_KEY_A",
        "a-dpop-nonce-key-of-at-least-32-bytes!!",
    );
    let config = format!(
        "{}{ROUTES}",
        issuer("dpop_nonce = true\ndpop_nonce_key_env = \"JWTGATE_TEST_NONCE_KEY_A\"")
    );
    let upstream = echo().await;
    let one = start_on(&config, &upstream).await;
    let two = start_on(&config, &upstream).await;
    let c = DpopClient::new();
    let tok = c.token();
    // No nonce: use_dpop_nonce with one to use.
    let a = dpop(
        &one,
        "GET",
        "/n",
        &tok,
        Some(&c.proof("GET", &one.url("/n"), &tok)),
    )
    .await;
    assert_dpop_challenge(&a, "use_dpop_nonce", "no nonce");
    let nonce = a.header("dpop-nonce").expect("DPoP-Nonce").to_owned();
    // A made-up nonce: the same.
    let mut claims = DpopClient::claims("GET", &one.url("/n"), &tok);
    claims["nonce"] = json!("made-up");
    let a = dpop(&one, "GET", "/n", &tok, Some(&c.sign(&c.header(), &claims))).await;
    assert_dpop_challenge(&a, "use_dpop_nonce", "made-up nonce");
    // The nonce from replica one works on both replicas (no shared state).
    for gw in [&one, &two] {
        let mut claims = DpopClient::claims("GET", &gw.url("/n"), &tok);
        claims["nonce"] = json!(nonce);
        let a = dpop(gw, "GET", "/n", &tok, Some(&c.sign(&c.header(), &claims))).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // A replica with another key refuses it.
    std::env::set_var(
        "JWTGATE_TEST_NONCE_KEY_B",
        "another-dpop-nonce-key-of-32-bytes-or-more",
    );
    let other = start_on(
        &format!(
            "{}{ROUTES}",
            issuer("dpop_nonce = true\ndpop_nonce_key_env = \"JWTGATE_TEST_NONCE_KEY_B\"")
        ),
        &upstream,
    )
    .await;
    let mut claims = DpopClient::claims("GET", &other.url("/n"), &tok);
    claims["nonce"] = json!(nonce);
    let a = dpop(
        &other,
        "GET",
        "/n",
        &tok,
        Some(&c.sign(&c.header(), &claims)),
    )
    .await;
    assert_dpop_challenge(&a, "use_dpop_nonce", "nonce of another key");
}

#[tokio::test]
async fn a_missing_nonce_key_is_a_config_error_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}{ROUTES}",
        issuer("dpop_nonce = true\ndpop_nonce_key_env = \"JWTGATE_TEST_NONCE_KEY_UNSET\"")
    )
    .replace("{upstream}", "http://127.0.0.1:9");
    std::fs::write(&path, text).expect("write");
    let err = match jwtgate::App::load(&path) {
        Ok(_) => panic!("a config whose nonce key is unset was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("JWTGATE_TEST_NONCE_KEY_UNSET"), "{err}");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}{ROUTES}",
        issuer("dpop_algorithms = [\"HS256\"]\ndpop_max_age = \"1h\"")
    )
    .replace("{upstream}", "http://127.0.0.1:9");
    std::fs::write(&path, text).expect("write");
    let err = match jwtgate::App::load(&path) {
        Ok(_) => panic!("HS256 proofs and a 1h window were accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("dpop_algorithms") && err.contains("symmetric"),
        "{err}"
    );
    assert!(err.contains("dpop_max_age"), "{err}");
}

#[tokio::test]
async fn htu_uses_forwarded_scheme_and_host_only_from_trusted_proxies() {
    let routes = ROUTES;
    let trusted = start(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n{}{routes}",
        issuer("")
    ))
    .await;
    let untrusted = start(&format!("{}{routes}", issuer(""))).await;
    let c = DpopClient::new();
    let tok = c.token();
    let public = "https://api.example.com/f";
    let fwd = |gw: &Gw, proof: String| {
        let auth = format!("DPoP {tok}");
        let url = gw.url("/f");
        async move {
            client::request(
                "GET",
                &url,
                &[
                    ("authorization", auth.as_str()),
                    ("dpop", proof.as_str()),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "api.example.com"),
                ],
                Bytes::new(),
            )
            .await
        }
    };
    let a = fwd(&trusted, c.proof("GET", public, &tok)).await;
    assert_eq!(a.status, 200, "trusted proxy: {}", a.body);
    let a = fwd(&untrusted, c.proof("GET", public, &tok)).await;
    assert_dpop_challenge(
        &a,
        "invalid_dpop_proof",
        "forwarded host from an untrusted peer",
    );
    let a = fwd(&untrusted, c.proof("GET", &untrusted.url("/f"), &tok)).await;
    assert_eq!(a.status, 200, "untrusted peer, its own URL: {}", a.body);
}

#[tokio::test]
async fn explain_checks_a_proof_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:8080\"\n{}{ROUTES}",
        issuer("")
    )
    .replace("{upstream}", "http://127.0.0.1:9");
    std::fs::write(&path, text).expect("write");
    let c = DpopClient::new();
    let tok = c.token();
    let run = |proof: &str, method: &str| {
        std::process::Command::new(binary())
            .args(["explain", "--config"])
            .arg(&path)
            .args(["--token", &tok, "--dpop", proof, "--method", method])
            .args(["--host", "gw.example:8080", "/e"])
            .output()
            .expect("run explain")
    };
    let good = c.proof("GET", "http://gw.example:8080/e", &tok);
    let out = run(&good, "GET");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("dpop"), "{text}");
    let out = run(&good, "POST");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("htm"), "{text}");
    assert!(!text.contains(&tok), "explain printed the token");
}

#[tokio::test]
async fn a_real_provider_and_client_use_dpop_bound_tokens_through_the_gateway() {
    let provider = common::bound::BoundProvider::start();
    std::env::set_var(
        "JWTGATE_TEST_NONCE_KEY_OIDC",
        "the-oidc-test-nonce-key-is-long-enough!",
    );
    let with_nonce = start(&format!(
        "{}{ROUTES}",
        provider.issuer_block(
            "dpop_nonce = true\ndpop_nonce_key_env = \"JWTGATE_TEST_NONCE_KEY_OIDC\""
        )
    ))
    .await;
    // openid-client: token request with DPoP, then two resource requests through the gateway;
    // the first meets use_dpop_nonce and retries with the nonce, as RFC 9449 §8 says.
    let out = provider.client("dpop", &with_nonce.url("/oidc")).await;
    assert!(
        out["cnf"]["jkt"].is_string(),
        "the provider's token is not DPoP-bound: {out}"
    );
    for a in out["answers"].as_array().expect("answers") {
        assert_eq!(a["status"], 200, "{out}");
        let echoed: Value = serde_json::from_str(a["body"].as_str().unwrap_or("")).expect("echo");
        assert!(
            echoed["headers"].get("dpop").is_none(),
            "the proof reached the upstream"
        );
    }
    assert_eq!(
        with_nonce.failures("main", "dpop_invalid"),
        1,
        "one use_dpop_nonce, then none"
    );
    // An Ed25519 key: openid-client signs its proofs with alg "Ed25519" (RFC 9864).
    let out = provider
        .client("dpop-ed25519", &with_nonce.url("/oidc"))
        .await;
    for a in out["answers"].as_array().expect("answers") {
        assert_eq!(a["status"], 200, "Ed25519 proofs: {out}");
    }

    // Proofs from npm `dpop`, replayed and misused by hand.
    let gw = start(&format!("{}{ROUTES}", provider.issuer_block(""))).await;
    let url = gw.url("/oidc");
    let out = provider.client("dpop-token", &url).await;
    let tok = out["token"].as_str().expect("token");
    let proof = |name: &str| out[name].as_str().expect("proof").to_owned();
    let a = dpop(&gw, "GET", "/oidc", tok, Some(&proof("get"))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = dpop(&gw, "GET", "/oidc", tok, Some(&proof("get"))).await;
    assert_dpop_challenge(&a, "invalid_dpop_proof", "replayed provider proof");
    assert_eq!(gw.failures("main", "dpop_replay"), 1);
    let a = dpop(&gw, "GET", "/oidc", tok, Some(&proof("post"))).await;
    assert_dpop_challenge(&a, "invalid_dpop_proof", "wrong method");
    let a = dpop(&gw, "GET", "/oidc", tok, Some(&proof("other_url"))).await;
    assert_dpop_challenge(&a, "invalid_dpop_proof", "wrong URL");
    assert_eq!(gw.failures("main", "dpop_invalid"), 2);
    let a = dpop(&gw, "GET", "/oidc", tok, Some(&proof("other_key"))).await;
    assert_dpop_challenge(&a, "invalid_dpop_proof", "wrong key");
    let a = get_bearer(&gw, "/oidc", tok).await;
    assert_dpop_challenge(&a, "invalid_token", "provider's bound token as Bearer");
    assert_eq!(gw.failures("main", "binding_mismatch"), 2);
}

#[tokio::test]
async fn a_proof_replayed_to_another_replica_sharing_redis_is_refused() {
    let mut redis = common::redis_server::RedisServer::start();
    let upstream = echo().await;
    let shared = format!("[redis]\nurl = \"{}\"\n{}{ROUTES}", redis.url(), issuer(""));
    let a = start_on(&shared, &upstream).await;
    let b = start_on(&shared, &upstream).await;
    let c = DpopClient::new();
    let tok = c.token();
    // Both replicas sit behind one name, as behind a load balancer: the same htu.
    let host = a.addr.to_string();
    let via = |gw: &Gw, proof: &str| {
        let url = gw.url("/r");
        let (auth, proof, host) = (format!("DPoP {tok}"), proof.to_owned(), host.clone());
        async move {
            client::request(
                "GET",
                &url,
                &[
                    ("host", host.as_str()),
                    ("authorization", auth.as_str()),
                    ("dpop", proof.as_str()),
                ],
                Bytes::new(),
            )
            .await
        }
    };
    let htu = format!("http://{host}/r");
    let proof = c.proof("GET", &htu, &tok);
    assert_eq!(via(&a, &proof).await.status, 200, "first use on replica a");
    let replayed = via(&b, &proof).await;
    assert_dpop_challenge(&replayed, "invalid_dpop_proof", "replayed to replica b");
    assert_eq!(b.failures("main", "dpop_replay"), 1);
    // Without the shared store each replica only knows its own proofs.
    let alone_a = start_on(&format!("{}{ROUTES}", issuer("")), &upstream).await;
    let alone_b = start_on(&format!("{}{ROUTES}", issuer("")), &upstream).await;
    let host_alone = alone_a.addr.to_string();
    let proof = c.proof("GET", &format!("http://{host_alone}/r"), &tok);
    for gw in [&alone_a, &alone_b] {
        let auth = format!("DPoP {tok}");
        let a = client::request(
            "GET",
            &gw.url("/r"),
            &[
                ("host", host_alone.as_str()),
                ("authorization", auth.as_str()),
                ("dpop", proof.as_str()),
            ],
            Bytes::new(),
        )
        .await;
        assert_eq!(
            a.status, 200,
            "memory-only replicas do not share: {}",
            a.body
        );
    }
    // Redis down: DPoP traffic keeps flowing on each replica's memory, replays to the same
    // replica are still caught.
    redis.kill();
    let proof = c.proof("GET", &htu, &tok);
    assert_eq!(
        via(&a, &proof).await.status,
        200,
        "Redis down: a fresh proof passes"
    );
    let again = via(&a, &proof).await;
    assert_dpop_challenge(
        &again,
        "invalid_dpop_proof",
        "Redis down: a replay to the same replica",
    );
}

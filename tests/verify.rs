//! Every token verification rule of SPEC.md "What every request gets", exercised through the
//! running gateway: real HTTP requests, a real echo upstream, keys generated at test time.

mod common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rsa;
use aws_lc_rs::signature::KeyPair;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};

use common::*;

const ALL_ALGS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];
const ASYMMETRIC_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
const HMAC_ALGS: [&str; 3] = ["HS256", "HS384", "HS512"];

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// A config with `issuer_block` and one `required` route `/` named `main` forwarding `sub` as
/// `X-Auth-Sub`.
fn config_with(issuer_block: &str) -> String {
    format!(
        r#"{issuer_block}
[[route]]
name = "main"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#
    )
}

/// The standard HS256 header of the harness (kid `hmac`, typ JWT).
fn hs_header() -> String {
    json!({ "alg": "HS256", "typ": "JWT", "kid": "hmac" }).to_string()
}

/// An HS256 token over `header` and `payload` (raw JSON text) with the harness secret.
fn hs256(header: &str, payload: &str) -> String {
    sign_raw("HS256", header, payload)
}

/// A valid HS256 token for `claims` with the standard header.
fn hs256_claims(claims: &Value) -> String {
    hs256(&hs_header(), &claims.to_string())
}

/// `input.signature` where the signature is HMAC-SHA256 with `key` over the exact text
/// `input`, whatever its segments look like: only the check under test can refuse it.
fn hmac_over(input: &str, key: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// [`hmac_over`] with the harness secret.
fn hs_over(input: &str) -> String {
    hmac_over(input, &keys().hmac_secret)
}

/// The attacker's RSA and P-256 public keys as JWKs.
fn attacker_rsa_jwk() -> Value {
    let c = rsa::PublicKeyComponents::<Vec<u8>>::from(keys().other_rsa.public_key());
    json!({ "kty": "RSA", "n": b64(&c.n), "e": b64(&c.e) })
}

fn attacker_ec_jwk() -> Value {
    let p = keys().other_ec256.public_key().as_ref().to_vec();
    json!({ "kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..]) })
}

/// The attacker's RSA public key as an x5c entry (standard base64 DER).
fn attacker_x5c() -> Value {
    let der = keys()
        .other_rsa
        .public_key()
        .as_der()
        .expect("spki")
        .as_ref()
        .to_vec();
    json!([STANDARD.encode(der)])
}

/// Asserts a 200 that reached the echo upstream with `X-Auth-Sub: alice`.
async fn expect_200(h: &Harness, token: &str, case: &str) {
    let a = h.get_with_token("/check", token).await;
    assert_eq!(a.status, 200, "{case}: expected 200, got body {}", a.body);
    assert_eq!(
        a.json()["path"],
        "/check",
        "{case}: not the echo upstream's answer: {}",
        a.body
    );
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"], "{case}");
    assert!(
        a.upstream_header("authorization").is_empty(),
        "{case}: the token was forwarded: {}",
        a.body
    );
}

// ---------------------------------------------------------------------------------------------
// Algorithms and key sources
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_algorithm_is_accepted_from_a_jwks_file() {
    let h = Harness::start(&default_config()).await;
    for alg in ALL_ALGS {
        expect_200(&h, &token(alg, &claims()), &format!("jwks_file {alg}")).await;
    }
}

#[tokio::test]
async fn every_asymmetric_algorithm_is_accepted_from_pem_keys_with_kid_from_file_stem() {
    let h = Harness::start(&config_with(&format!(
        r#"
[[issuer]]
name = "pem"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["RS256","RS384","RS512","PS256","PS384","PS512","ES256","ES384","EdDSA"]
keys = ["rsa.pem", "ec256.pem", "ec384.pem", "ed25519.pem"]
"#
    )))
    .await;
    for alg in ASYMMETRIC_ALGS {
        // token() names the kid the file stem gives: rsa, ec256, ec384, ed25519.
        expect_200(&h, &token(alg, &claims()), &format!("PEM {alg}")).await;
        // Without a kid the issuer's keys of the right type are tried.
        let header = json!({ "alg": alg, "typ": "JWT" }).to_string();
        expect_200(
            &h,
            &sign_raw(alg, &header, &claims().to_string()),
            &format!("PEM {alg} without kid"),
        )
        .await;
    }
}

#[tokio::test]
async fn every_hmac_algorithm_is_accepted_from_hmac_secret_file() {
    let h = Harness::start(&config_with(&format!(
        r#"
[[issuer]]
name = "hs"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["HS256","HS384","HS512"]
hmac_secret_file = "hmac.secret"
"#
    )))
    .await;
    for alg in HMAC_ALGS {
        expect_200(&h, &token(alg, &claims()), &format!("hmac file {alg}")).await;
        let header = json!({ "alg": alg }).to_string();
        expect_200(
            &h,
            &sign_raw(alg, &header, &claims().to_string()),
            &format!("hmac file {alg} without kid or typ"),
        )
        .await;
    }
}

#[tokio::test]
async fn every_hmac_algorithm_is_accepted_from_hmac_secret_env() {
    const VAR: &str = "JWTGATE_TESTS_VERIFY_RS_HMAC_SECRET";
    let secret = String::from_utf8(keys().hmac_secret.clone()).expect("printable secret");
    std::env::set_var(VAR, secret);
    let h = Harness::start(&config_with(&format!(
        r#"
[[issuer]]
name = "hs-env"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["HS256","HS384","HS512"]
hmac_secret_env = "{VAR}"
"#
    )))
    .await;
    for alg in HMAC_ALGS {
        expect_200(&h, &token(alg, &claims()), &format!("hmac env {alg}")).await;
    }
    // And a token signed with another secret is not.
    let forged = hmac_over(
        &format!(
            "{}.{}",
            b64(hs_header().as_bytes()),
            b64(claims().to_string().as_bytes())
        ),
        b"a-completely-different-secret-of-enough-length!!",
    );
    expect_401_saying(
        &h,
        "/check",
        &forged,
        &["signature"],
        "hmac env, other secret",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Algorithm rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_in_any_casing_is_refused_with_or_without_signature() {
    let h = Harness::start(&default_config()).await;
    let payload = b64(claims().to_string().as_bytes());
    for none in ["none", "None", "NONE", "nOnE"] {
        for header in [
            json!({ "alg": none, "typ": "JWT" }),
            json!({ "alg": none, "typ": "JWT", "kid": "hmac" }),
        ] {
            let input = format!("{}.{payload}", b64(header.to_string().as_bytes()));
            let case = format!("alg {none}, header {header}");
            // Empty signature, the classic form.
            expect_401(
                &h,
                "/check",
                &format!("{input}."),
                &format!("{case}, empty sig"),
            )
            .await;
            // A real HMAC over the same input, and arbitrary bytes.
            expect_401(&h, "/check", &hs_over(&input), &format!("{case}, HMAC sig")).await;
            expect_401(
                &h,
                "/check",
                &format!("{input}.{}", b64(b"not a signature at all")),
                &format!("{case}, junk sig"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn algorithm_not_in_the_issuers_list_is_refused() {
    let h = Harness::start(&config_with(&format!(
        r#"
[[issuer]]
name = "es-only"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
jwks_file = "jwks.json"
"#
    )))
    .await;
    expect_200(
        &h,
        &token("ES256", &claims()),
        "ES256 on an ES256-only issuer",
    )
    .await;
    for alg in ["RS256", "PS256", "ES384", "EdDSA", "HS256"] {
        expect_401(
            &h,
            "/check",
            &token(alg, &claims()),
            &format!("{alg} on an ES256-only issuer"),
        )
        .await;
    }

    // Names that are not exactly a supported algorithm, on an issuer allowing everything.
    let h = Harness::start(&default_config()).await;
    for alg in ["hs256", "Hs256", "HS256 ", "ES512", "RS1", "", "EDDSA"] {
        let header = json!({ "alg": alg, "kid": "hmac" }).to_string();
        expect_401(
            &h,
            "/check",
            &hs256(&header, &claims().to_string()),
            &format!("alg {alg:?} (HMAC-signed)"),
        )
        .await;
    }
    // alg that is not a string, or missing.
    for header in [
        r#"{"alg":256,"kid":"hmac"}"#,
        r#"{"alg":["HS256"],"kid":"hmac"}"#,
        r#"{"alg":null,"kid":"hmac"}"#,
        r#"{"kid":"hmac"}"#,
    ] {
        expect_401(
            &h,
            "/check",
            &hs256(header, &claims().to_string()),
            &format!("header {header}"),
        )
        .await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let h = Harness::start(&default_config()).await;
    let pem_text = std::fs::read(h.path("rsa.pem")).expect("read rsa.pem");
    let pem_trimmed = String::from_utf8(pem_text.clone())
        .expect("utf8")
        .trim_end()
        .as_bytes()
        .to_vec();
    let der = keys().rsa_spki.clone();
    // The modulus and exponent as the JWKS publishes them, concatenated.
    let n_e = {
        let c = rsa::PublicKeyComponents::<Vec<u8>>::from(keys().rsa.public_key());
        [c.n, c.e].concat()
    };
    let payload = b64(claims().to_string().as_bytes());
    for (what, key) in [
        ("PEM text", &pem_text),
        ("PEM text without final newline", &pem_trimmed),
        ("SPKI DER", &der),
        ("raw n||e", &n_e),
    ] {
        for header in [
            json!({ "alg": "HS256", "typ": "JWT", "kid": "rsa" }),
            json!({ "alg": "HS256", "typ": "JWT" }),
        ] {
            let input = format!("{}.{payload}", b64(header.to_string().as_bytes()));
            expect_401(
                &h,
                "/check",
                &hmac_over(&input, key),
                &format!("HS256 keyed with the RSA public key as {what}, header {header}"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn key_of_the_wrong_type_for_the_alg_is_refused() {
    let h = Harness::start(&default_config()).await;
    // (alg the token is signed with, kid of a key of another type)
    for (alg, kid) in [
        ("RS256", "ec256"),
        ("RS256", "ed25519"),
        ("RS256", "hmac"),
        ("PS256", "ec384"),
        ("ES256", "rsa"),
        ("ES256", "ec384"),
        ("ES384", "ec256"),
        ("EdDSA", "ec256"),
        ("HS256", "ed25519"),
    ] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid }).to_string();
        expect_401(
            &h,
            "/check",
            &sign_raw(alg, &header, &claims().to_string()),
            &format!("alg {alg} with kid {kid}"),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Keys: kid, attacker keys, embedded key headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn trusted_kid_with_an_attackers_key_is_a_bad_signature() {
    let h = Harness::start(&default_config()).await;
    for (alg, kid) in [
        ("RS256", "rsa"),
        ("RS512", "rsa"),
        ("PS256", "rsa"),
        ("ES256", "ec256"),
    ] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid }).to_string();
        let t = sign_raw_other(alg, &header, &claims().to_string());
        expect_401_saying(
            &h,
            "/check",
            &t,
            &["signature"],
            &format!("{alg} kid {kid}, attacker key"),
        )
        .await;
        // And without a kid: every key of the type is tried, none verifies.
        let header = json!({ "alg": alg, "typ": "JWT" }).to_string();
        let t = sign_raw_other(alg, &header, &claims().to_string());
        expect_401_saying(
            &h,
            "/check",
            &t,
            &["signature"],
            &format!("{alg} no kid, attacker key"),
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let h = Harness::start(&default_config()).await;
    for (alg, kid) in [
        ("RS256", "rsa2"),
        ("ES256", "attacker"),
        ("HS256", "HMAC"),
        ("RS256", ""),
        ("RS256", "../rsa"),
    ] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid }).to_string();
        expect_401_saying(
            &h,
            "/check",
            &sign_raw(alg, &header, &claims().to_string()),
            &["kid", "key"],
            &format!("{alg} kid {kid:?}"),
        )
        .await;
    }
}

#[tokio::test]
async fn embedded_jwk_jku_x5u_x5c_never_supply_a_key() {
    let h = Harness::start(&default_config()).await;
    // jku/x5u point at a listener of ours: nothing may ever connect to it.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("bind trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().expect("addr"));
    let payload = claims().to_string();
    for (alg, jwk) in [("RS256", attacker_rsa_jwk()), ("ES256", attacker_ec_jwk())] {
        let trusted_kid = kid_for(alg);
        let headers = [
            json!({ "alg": alg, "jwk": jwk }),
            json!({ "alg": alg, "kid": trusted_kid, "jwk": jwk }),
            json!({ "alg": alg, "kid": "attacker", "jwk": with(jwk.clone(), "kid", json!("attacker")) }),
            json!({ "alg": alg, "jku": trap_url }),
            json!({ "alg": alg, "kid": trusted_kid, "jku": trap_url }),
            json!({ "alg": alg, "kid": "attacker", "jku": trap_url }),
            json!({ "alg": alg, "x5u": trap_url }),
            json!({ "alg": alg, "kid": "attacker", "x5u": trap_url }),
            json!({ "alg": alg, "x5c": attacker_x5c() }),
            json!({ "alg": alg, "kid": trusted_kid, "x5c": attacker_x5c() }),
            json!({ "alg": alg, "kid": "attacker", "jwk": jwk, "jku": trap_url, "x5u": trap_url, "x5c": attacker_x5c() }),
        ];
        for header in headers {
            let t = sign_raw_other(alg, &header.to_string(), &payload);
            expect_401(
                &h,
                "/check",
                &t,
                &format!("attacker-signed, header {header}"),
            )
            .await;
        }
    }
    // Each answer above was complete before the next request: a fetch would have connected.
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the gateway fetched a key from a token's jku/x5u ({peer})"),
        Err(e) => panic!("trap listener: {e}"),
    }
}

#[tokio::test]
async fn ignored_key_headers_do_not_break_a_valid_token() {
    let h = Harness::start(&default_config()).await;
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("bind trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().expect("addr"));
    for alg in ["RS256", "ES256", "HS256", "EdDSA"] {
        let header = json!({
            "alg": alg, "typ": "JWT", "kid": kid_for(alg),
            "jwk": attacker_rsa_jwk(), "jku": trap_url, "x5u": trap_url, "x5c": attacker_x5c(),
            "x5t": "AAAA", "x-custom": {"a": 1}
        });
        expect_200(
            &h,
            &sign_raw(alg, &header.to_string(), &claims().to_string()),
            &format!("{alg} with ignored headers"),
        )
        .await;
    }
    assert!(
        trap.accept().is_err(),
        "the gateway connected to a token's jku/x5u"
    );
}

// ---------------------------------------------------------------------------------------------
// Header members
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn crit_header_is_refused() {
    let h = Harness::start(&default_config()).await;
    for crit in [
        r#"["exp"]"#,
        r#"["b64"]"#,
        r#"[]"#,
        r#""exp""#,
        r#"null"#,
        r#"{}"#,
    ] {
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"hmac","crit":{crit},"exp":1}}"#);
        expect_401(
            &h,
            "/check",
            &hs256(&header, &claims().to_string()),
            &format!("crit {crit}"),
        )
        .await;
    }
}

#[tokio::test]
async fn b64_false_header_is_refused() {
    let h = Harness::start(&default_config()).await;
    // Signed over the encoded payload: only the b64 member can refuse it.
    let header = r#"{"alg":"HS256","kid":"hmac","b64":false}"#;
    expect_401(
        &h,
        "/check",
        &hs256(header, &claims().to_string()),
        "b64 false",
    )
    .await;
    let header = r#"{"alg":"HS256","kid":"hmac","b64":false,"crit":["b64"]}"#;
    expect_401(
        &h,
        "/check",
        &hs256(header, &claims().to_string()),
        "b64 false with crit",
    )
    .await;
    // RFC 7797 form: the signature over the raw payload.
    let raw_payload = claims().to_string();
    let input = format!("{}.{raw_payload}", b64(header.as_bytes()));
    let sig = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &keys().hmac_secret),
        input.as_bytes(),
    );
    let detached = format!("{}..{}", b64(header.as_bytes()), b64(sig.as_ref()));
    expect_401(&h, "/check", &detached, "b64 false, detached payload").await;
}

#[tokio::test]
async fn kid_that_is_not_a_string_is_refused() {
    let h = Harness::start(&default_config()).await;
    for kid in ["1", "0", "null", r#"{"kid":"hmac"}"#, r#"["hmac"]"#, "true"] {
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":{kid}}}"#);
        expect_401(
            &h,
            "/check",
            &hs256(&header, &claims().to_string()),
            &format!("kid {kid}"),
        )
        .await;
    }
}

#[tokio::test]
async fn iss_that_is_not_a_string_is_refused() {
    let h = Harness::start(&default_config()).await;
    for iss in [
        json!(1),
        json!([ISS]),
        json!({ "iss": ISS }),
        json!(null),
        json!(true),
    ] {
        let c = with(claims(), "iss", iss.clone());
        expect_401(&h, "/check", &hs256_claims(&c), &format!("iss {iss}")).await;
    }
}

#[tokio::test]
async fn typ_outside_the_issuers_list_is_refused() {
    let h = Harness::start(&default_config()).await;
    for typ in [
        "JOSE",
        "JWS",
        "JWE",
        "at+jwt2",
        "application/json",
        "",
        "JWT ",
        "dpop+jwt",
    ] {
        let header = json!({ "alg": "HS256", "kid": "hmac", "typ": typ }).to_string();
        expect_401_saying(
            &h,
            "/check",
            &hs256(&header, &claims().to_string()),
            &["typ"],
            &format!("typ {typ:?}"),
        )
        .await;
    }
    for typ in ["1", "null", r#"["JWT"]"#] {
        let header = format!(r#"{{"alg":"HS256","kid":"hmac","typ":{typ}}}"#);
        expect_401(
            &h,
            "/check",
            &hs256(&header, &claims().to_string()),
            &format!("typ {typ}"),
        )
        .await;
    }
}

#[tokio::test]
async fn default_typ_values_and_absent_typ_are_accepted() {
    let h = Harness::start(&default_config()).await;
    for typ in ["JWT", "jwt", "at+jwt", "application/at+jwt", "AT+JWT"] {
        let header = json!({ "alg": "HS256", "kid": "hmac", "typ": typ }).to_string();
        expect_200(
            &h,
            &hs256(&header, &claims().to_string()),
            &format!("typ {typ:?}"),
        )
        .await;
    }
    let header = json!({ "alg": "HS256", "kid": "hmac" }).to_string();
    expect_200(&h, &hs256(&header, &claims().to_string()), "absent typ").await;
}

#[tokio::test]
async fn custom_typ_list_refuses_jwt() {
    let issuer = format!("{}typ = [\"at+jwt\"]\n", default_issuer());
    let h = Harness::start(&config_with(&issuer)).await;
    for typ in ["JWT", "jwt", "JOSE"] {
        let header = json!({ "alg": "ES256", "kid": "ec256", "typ": typ }).to_string();
        expect_401_saying(
            &h,
            "/check",
            &sign_raw("ES256", &header, &claims().to_string()),
            &["typ"],
            &format!("typ {typ:?} on an at+jwt issuer"),
        )
        .await;
    }
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let header = json!({ "alg": "ES256", "kid": "ec256", "typ": typ }).to_string();
        expect_200(
            &h,
            &sign_raw("ES256", &header, &claims().to_string()),
            &format!("typ {typ:?} on an at+jwt issuer"),
        )
        .await;
    }
    let header = json!({ "alg": "ES256", "kid": "ec256" }).to_string();
    expect_200(
        &h,
        &sign_raw("ES256", &header, &claims().to_string()),
        "absent typ on an at+jwt issuer",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Token length
// ---------------------------------------------------------------------------------------------

/// An otherwise valid HS256 token of exactly `len` bytes, padded with a `pad` claim and, for
/// lengths base64 cannot reach with the payload alone, a header member.
fn hs256_token_of_len(len: usize) -> String {
    const SIG_LEN: usize = 43; // 32 bytes, unpadded base64url
    let b64_len = |n: usize| n.div_ceil(3) * 4 - (3 - n % 3) % 3;
    for q in 0..4 {
        let header = if q == 0 {
            hs_header()
        } else {
            json!({ "alg": "HS256", "typ": "JWT", "kid": "hmac", "x": "h".repeat(q) }).to_string()
        };
        let base = claims();
        // "p" needs no escaping: each one adds exactly one byte to the payload.
        let len0 = with(base.clone(), "pad", json!("")).to_string().len();
        for p in 0..len {
            let total = b64_len(header.len()) + 1 + b64_len(len0 + p) + 1 + SIG_LEN;
            if total == len {
                let payload = with(base, "pad", json!("p".repeat(p))).to_string();
                let t = hs256(&header, &payload);
                assert_eq!(t.len(), len, "length arithmetic");
                return t;
            }
            if total > len {
                break;
            }
        }
    }
    panic!("no token of exactly {len} bytes");
}

#[tokio::test]
async fn token_of_exactly_max_token_bytes_passes_and_one_more_is_refused() {
    let h = Harness::start(&format!(
        "[limits]\nmax_token_bytes = 1024\n{}",
        default_config()
    ))
    .await;
    expect_200(&h, &hs256_token_of_len(1024), "1024-byte token, limit 1024").await;
    expect_200(&h, &hs256_token_of_len(1000), "1000-byte token, limit 1024").await;
    for len in [1025, 1026, 4000] {
        expect_401_saying(
            &h,
            "/check",
            &hs256_token_of_len(len),
            &["max_token_bytes"],
            &format!("{len}-byte token, limit 1024"),
        )
        .await;
    }
}

#[tokio::test]
async fn default_max_token_bytes_is_8192() {
    let h = Harness::start(&default_config()).await;
    expect_200(
        &h,
        &hs256_token_of_len(8192),
        "8192-byte token, default limit",
    )
    .await;
    expect_401_saying(
        &h,
        "/check",
        &hs256_token_of_len(8193),
        &["max_token_bytes"],
        "8193-byte token, default limit",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Time claims (default issuer leeway: 30 s)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_exp_is_refused() {
    let h = Harness::start(&default_config()).await;
    expect_401_saying(
        &h,
        "/check",
        &hs256_claims(&without(claims(), "exp")),
        &["exp"],
        "no exp",
    )
    .await;
    // Also without iat, so nothing else could carry the lifetime.
    let c = without(without(claims(), "exp"), "iat");
    expect_401_saying(&h, "/check", &hs256_claims(&c), &["exp"], "no exp, no iat").await;
}

#[tokio::test]
async fn expired_beyond_leeway_is_refused_and_within_leeway_accepted() {
    let h = Harness::start(&default_config()).await;
    for ago in [60, 3600, 10_000_000] {
        let c = with(claims(), "exp", json!(now() - ago));
        let c = with(c, "iat", json!(now() - ago - 300));
        expect_401_saying(
            &h,
            "/check",
            &hs256_claims(&c),
            &["expired"],
            &format!("expired {ago}s ago"),
        )
        .await;
    }
    for alg in ["HS256", "RS256", "ES256"] {
        let c = with(claims(), "exp", json!(now() - 10));
        expect_200(
            &h,
            &token(alg, &c),
            &format!("{alg} expired 10s ago, leeway 30s"),
        )
        .await;
    }
}

#[tokio::test]
async fn exp_nbf_iat_that_are_not_numbers_are_refused() {
    let h = Harness::start(&default_config()).await;
    let later = now() + 300;
    for (name, v) in [
        ("exp", json!("123")),
        ("exp", json!(later.to_string())),
        ("exp", json!(true)),
        ("exp", json!(null)),
        ("exp", json!([later])),
        ("exp", json!({ "t": later })),
        ("nbf", json!(now().to_string())),
        ("nbf", json!(false)),
        ("iat", json!(now().to_string())),
        ("iat", json!(null)),
    ] {
        let c = with(claims(), name, v.clone());
        expect_401(&h, "/check", &hs256_claims(&c), &format!("{name} = {v}")).await;
    }
}

#[tokio::test]
async fn nbf_in_the_future_beyond_leeway_is_refused_and_within_leeway_accepted() {
    let h = Harness::start(&default_config()).await;
    for ahead in [120, 3600] {
        let c = with(claims(), "nbf", json!(now() + ahead));
        expect_401(
            &h,
            "/check",
            &hs256_claims(&c),
            &format!("nbf {ahead}s ahead"),
        )
        .await;
    }
    let c = with(claims(), "nbf", json!(now() + 10));
    expect_200(&h, &hs256_claims(&c), "nbf 10s ahead, leeway 30s").await;
    let c = with(claims(), "nbf", json!(now() - 10));
    expect_200(&h, &hs256_claims(&c), "nbf in the past").await;
}

#[tokio::test]
async fn iat_in_the_future_beyond_leeway_is_refused() {
    let h = Harness::start(&default_config()).await;
    for ahead in [120, 3600] {
        let c = with(claims(), "iat", json!(now() + ahead));
        let c = with(c, "exp", json!(now() + ahead + 300));
        expect_401(
            &h,
            "/check",
            &hs256_claims(&c),
            &format!("iat {ahead}s ahead"),
        )
        .await;
    }
    let c = with(claims(), "iat", json!(now() + 10));
    expect_200(&h, &hs256_claims(&c), "iat 10s ahead, leeway 30s").await;
    expect_200(&h, &hs256_claims(&without(claims(), "iat")), "no iat").await;
}

#[tokio::test]
async fn fractional_numeric_dates_are_accepted() {
    let h = Harness::start(&default_config()).await;
    let t = now() as f64;
    let c = with(claims(), "exp", json!(t + 300.5));
    expect_200(&h, &hs256_claims(&c), "exp now+300.5").await;
    let c = with(c, "iat", json!(t - 0.25));
    let c = with(c, "nbf", json!(t - 1.5));
    expect_200(&h, &hs256_claims(&c), "fractional exp, iat, nbf").await;
    let c = with(claims(), "exp", json!(t - 3600.5));
    expect_401_saying(
        &h,
        "/check",
        &hs256_claims(&c),
        &["expired"],
        "exp now-3600.5",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// iss, aud, sub
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_and_look_alike_iss_are_refused() {
    let h = Harness::start(&default_config()).await;
    assert_eq!(
        ISS, "https://issuer.test/",
        "the cases below assume this ISS"
    );
    for iss in [
        "https://evil.test/",
        "https://issuer.test",
        "https://ISSUER.test/",
        "HTTPS://issuer.test/",
        "https://Issuer.Test/",
        "https://issuer.tes",
        "https://issuer.test/evil",
        "https://issuer.test/.evil.example",
        "https://issuer.test//",
        "https://issuer.test.evil.example/",
        "xhttps://issuer.test/",
        " https://issuer.test/",
        "https://issuer.test/ ",
        "http://issuer.test/",
        "",
    ] {
        let c = with(claims(), "iss", json!(iss));
        expect_401_saying(
            &h,
            "/check",
            &hs256_claims(&c),
            &["issuer"],
            &format!("iss {iss:?}"),
        )
        .await;
    }
    expect_401_saying(
        &h,
        "/check",
        &hs256_claims(&without(claims(), "iss")),
        &["issuer", "iss"],
        "no iss",
    )
    .await;
}

#[tokio::test]
async fn aud_must_contain_an_accepted_audience() {
    let h = Harness::start(&default_config()).await;
    for (aud, ok) in [
        (json!(AUD), true),
        (json!([AUD]), true),
        (json!(["other", AUD]), true),
        (json!([AUD, "other"]), true),
        (json!("other-api"), false),
        (json!("test-api "), false),
        (json!("TEST-API"), false),
        (json!("test"), false),
        (json!(["other", "another"]), false),
        (json!([]), false),
        (json!(""), false),
        (json!([1]), false),
        (json!([AUD, 1]), false),
        (json!([AUD, null]), false),
        (json!([[AUD]]), false),
        (json!(1), false),
        (json!({ "aud": AUD }), false),
        (json!(null), false),
    ] {
        let c = with(claims(), "aud", aud.clone());
        if ok {
            expect_200(&h, &hs256_claims(&c), &format!("aud {aud}")).await;
        } else {
            expect_401(&h, "/check", &hs256_claims(&c), &format!("aud {aud}")).await;
        }
    }
    let d = expect_401(
        &h,
        "/check",
        &hs256_claims(&with(claims(), "aud", json!("other-api"))),
        "aud other-api",
    )
    .await;
    assert!(d.contains("aud"), "wrong-audience description: {d:?}");
    expect_401(
        &h,
        "/check",
        &hs256_claims(&without(claims(), "aud")),
        "no aud",
    )
    .await;
}

#[tokio::test]
async fn sub_must_be_a_non_empty_string() {
    let h = Harness::start(&default_config()).await;
    expect_401_saying(
        &h,
        "/check",
        &hs256_claims(&without(claims(), "sub")),
        &["sub"],
        "no sub",
    )
    .await;
    for sub in [
        json!(""),
        json!(42),
        json!(0),
        json!(null),
        json!(true),
        json!(["alice"]),
        json!({ "id": "alice" }),
    ] {
        let c = with(claims(), "sub", sub.clone());
        expect_401_saying(
            &h,
            "/check",
            &hs256_claims(&c),
            &["sub"],
            &format!("sub {sub}"),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Duplicate members, malformed tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn duplicate_json_members_are_refused() {
    let h = Harness::start(&default_config()).await;
    let (iat, exp) = (now(), now() + 300);
    let payload =
        format!(r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","iat":{iat},"exp":{exp}}}"#);
    // Sanity: the hand-written payload is valid as it is.
    expect_200(&h, &hs256(&hs_header(), &payload), "hand-written payload").await;
    for (header, payload, case) in [
        (
            r#"{"alg":"HS256","alg":"none","kid":"hmac"}"#.to_owned(),
            payload.clone(),
            "header alg twice (HS256, none)",
        ),
        (
            r#"{"alg":"none","alg":"HS256","kid":"hmac"}"#.to_owned(),
            payload.clone(),
            "header alg twice (none, HS256)",
        ),
        (
            r#"{"alg":"HS256","kid":"hmac","kid":"hmac"}"#.to_owned(),
            payload.clone(),
            "header kid twice, same value",
        ),
        (
            r#"{"alg":"HS256","kid":"rsa","kid":"hmac"}"#.to_owned(),
            payload.clone(),
            "header kid twice, different values",
        ),
        (
            hs_header(),
            format!(
                r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","sub":"admin","iat":{iat},"exp":{exp}}}"#
            ),
            "payload sub twice",
        ),
        (
            hs_header(),
            format!(
                r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","iat":{iat},"exp":{exp},"exp":9999999999}}"#
            ),
            "payload exp twice",
        ),
        (
            hs_header(),
            format!(
                r#"{{"iss":"https://evil.test/","iss":"{ISS}","aud":"{AUD}","sub":"alice","iat":{iat},"exp":{exp}}}"#
            ),
            "payload iss twice",
        ),
        (
            hs_header(),
            format!(
                r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","iat":{iat},"exp":{exp},"realm_access":{{"roles":["a"],"roles":["admin"]}}}}"#
            ),
            "nested member twice",
        ),
    ] {
        expect_401(&h, "/check", &hs256(&header, &payload), case).await;
    }
}

#[tokio::test]
async fn tokens_without_three_segments_are_refused() {
    let h = Harness::start(&default_config()).await;
    let valid = hs256_claims(&claims());
    let parts: Vec<&str> = valid.split('.').collect();
    let (hd, pl, sg) = (parts[0], parts[1], parts[2]);
    for (t, case) in [
        (hd.to_owned(), "one segment"),
        (format!("{hd}.{pl}"), "two segments"),
        (format!("{hd}.{pl}.{sg}.{sg}"), "four segments"),
        (format!("{valid}."), "four segments, empty last"),
        (format!(".{valid}"), "four segments, empty first"),
        (format!("{hd}.{pl}.{sg}.."), "five segments, two empty"),
        (format!("{valid}.x.y.z"), "six segments"),
    ] {
        expect_401(&h, "/check", &t, case).await;
    }
    // A JWE in compact form: five segments, named as such.
    let jwe = [
        b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa"}"#),
        b64(&[7u8; 256]),
        b64(&[1u8; 12]),
        b64(claims().to_string().as_bytes()),
        b64(&[9u8; 16]),
    ]
    .join(".");
    expect_401_saying(
        &h,
        "/check",
        &jwe,
        &["JWE", "encrypted"],
        "five segments (JWE-shaped)",
    )
    .await;
    let d = expect_401(
        &h,
        "/check",
        &format!("{hd}.{pl}.{sg}.{sg}.{sg}"),
        "five segments (JWS parts)",
    )
    .await;
    assert!(d.contains("JWE"), "five-segment description: {d:?}");
}

#[tokio::test]
async fn segments_that_are_not_strict_base64url_are_refused() {
    let h = Harness::start(&default_config()).await;
    // A valid token whose payload needs base64 padding and whose signature uses `-` or `_`,
    // so that each alteration below really changes the text.
    let valid = (0..200)
        .map(|i| hs256_claims(&with(claims(), "n", json!("a".repeat(i)))))
        .find(|t| {
            let p: Vec<&str> = t.split('.').collect();
            !p[1].len().is_multiple_of(4) && p[2].contains(['-', '_'])
        })
        .expect("a suitable token");
    let parts: Vec<&str> = valid.split('.').collect();
    let (hd, pl, sg) = (parts[0], parts[1], parts[2]);
    let pad = |s: &str| format!("{s}{}", "=".repeat((4 - s.len() % 4) % 4));
    assert!(
        !sg.len().is_multiple_of(4),
        "an HS256 signature needs padding"
    );

    // A payload whose base64 uses both alphabet-specific characters.
    let (std_pl, url_pl) = (0..3)
        .map(|i| {
            let c = with(
                claims(),
                "x",
                json!(format!("{}~~~???~~~???", "a".repeat(i))),
            );
            let text = c.to_string();
            (STANDARD_NO_PAD.encode(&text), b64(text.as_bytes()))
        })
        .find(|(s, _)| s.contains('+') && s.contains('/'))
        .expect("a payload whose base64 has + and /");
    assert!(url_pl.contains('-') && url_pl.contains('_'));
    // A header that needs padding, padded (signed over that exact text).
    let padded_hd = [
        hs_header(),
        r#"{"alg":"HS256","kid":"hmac"}"#.to_owned(),
        r#"{"alg":"HS256","kid":"hmac","x":""}"#.to_owned(),
    ]
    .into_iter()
    .find(|h| !h.len().is_multiple_of(3))
    .map(|h| URL_SAFE.encode(h))
    .expect("a header that needs padding");
    assert!(padded_hd.ends_with('='));

    let mut cases = vec![
        (format!("{hd}.{pl}.{}", pad(sg)), "padded signature"),
        (format!("{hd}.{pl}.{sg}="), "one = after the signature"),
        (
            hs_over(&format!("{hd}.{}", pad(pl))),
            "padded payload, signed as sent",
        ),
        (hs_over(&format!("{hd}.{pl}=")), "payload with a stray ="),
        (
            hs_over(&format!("{}.{pl}", padded_hd)),
            "padded header, signed as sent",
        ),
        (
            hs_over(&format!("{hd}.{std_pl}")),
            "payload in the standard alphabet (+ and /), signed as sent",
        ),
        (
            format!("{hd}.{pl}.{}", sg.replace('-', "+").replace('_', "/")),
            "signature in the standard alphabet",
        ),
        (hs_over(&format!("{hd}*.{pl}")), "* in the header"),
        (hs_over(&format!("{hd}.{pl}!")), "! in the payload"),
        (format!("{hd}.{pl}.{sg}%"), "% in the signature"),
        (
            format!("{hd}.{pl}.{}", &sg[..sg.len() - 1]),
            "signature one char short",
        ),
        (hs_over(&format!("{hd}.{pl} ")), "space in the payload"),
        (
            hs_over(&format!("{hd}.{}", &pl[..pl.len() - 1])),
            "payload cut mid-quantum",
        ),
    ];
    // A second spelling of the signature: same bytes, non-zero trailing bits.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = sg.as_bytes()[sg.len() - 1];
    let idx = alphabet.iter().position(|c| *c == last).expect("b64 char");
    assert_eq!(idx & 3, 0, "canonical last char of a 32-byte signature");
    let respelled = format!(
        "{hd}.{pl}.{}{}",
        &sg[..sg.len() - 1],
        char::from(alphabet[idx | 1])
    );
    cases.push((respelled, "signature with non-zero trailing bits"));
    for (t, case) in cases {
        expect_401(&h, "/check", &t, case).await;
    }
    // Sanity: the unaltered token passes.
    expect_200(&h, &valid, "the unaltered token").await;
}

#[tokio::test]
async fn empty_segments_are_refused() {
    let h = Harness::start(&default_config()).await;
    let valid = hs256_claims(&claims());
    let parts: Vec<&str> = valid.split('.').collect();
    let (hd, pl, sg) = (parts[0], parts[1], parts[2]);
    for (t, case) in [
        ("..".to_owned(), "all empty"),
        (format!(".{pl}.{sg}"), "empty header"),
        (format!("{hd}..{sg}"), "empty payload"),
        (hs_over(&format!("{hd}.")), "empty payload, signed as sent"),
        (format!("{hd}.{pl}."), "empty signature"),
        (format!("..{sg}"), "empty header and payload"),
    ] {
        expect_401(&h, "/check", &t, case).await;
    }
    // An empty bearer token is no token at all, or an invalid one: never a pass.
    let a = h.get("/check", &[("authorization", "Bearer ")]).await;
    assert_eq!(a.status, 401, "empty bearer token: {}", a.body);
}

#[tokio::test]
async fn header_and_payload_must_be_single_json_objects() {
    let h = Harness::start(&default_config()).await;
    let hd = b64(hs_header().as_bytes());
    let claims_text = claims().to_string();
    let pl = b64(claims_text.as_bytes());
    let cases: Vec<(String, String, &str)> = vec![
        (b64(b"not json"), pl.clone(), "header not JSON"),
        (b64(br#"["HS256"]"#), pl.clone(), "header a JSON array"),
        (
            b64(br#"[{"alg":"HS256","kid":"hmac"}]"#),
            pl.clone(),
            "header an array holding the object",
        ),
        (b64(br#""HS256""#), pl.clone(), "header a JSON string"),
        (b64(b"null"), pl.clone(), "header null"),
        (b64(b"{}"), pl.clone(), "header an empty object"),
        (
            b64(&[0xff, 0xfe, 0x7b, 0x7d]),
            pl.clone(),
            "header not UTF-8",
        ),
        (
            b64(format!("{}x", hs_header()).as_bytes()),
            pl.clone(),
            "garbage after the header JSON",
        ),
        (
            b64(format!("{}{}", hs_header(), hs_header()).as_bytes()),
            pl.clone(),
            "two header objects",
        ),
        (
            b64(br#"{"alg":"HS256","kid":"hmac""#),
            pl.clone(),
            "header JSON cut short",
        ),
        (hd.clone(), b64(b"not json"), "payload not JSON"),
        (hd.clone(), b64(b"[]"), "payload an array"),
        (
            hd.clone(),
            b64(format!("[{claims_text}]").as_bytes()),
            "payload an array holding the claims",
        ),
        (hd.clone(), b64(br#""alice""#), "payload a string"),
        (hd.clone(), b64(b"42"), "payload a number"),
        (hd.clone(), b64(b"null"), "payload null"),
        (
            hd.clone(),
            b64(format!("{claims_text}garbage").as_bytes()),
            "garbage after the payload JSON",
        ),
        (
            hd.clone(),
            b64(format!("{claims_text}{claims_text}").as_bytes()),
            "two payload objects",
        ),
        (
            hd.clone(),
            b64(format!("{claims_text},").as_bytes()),
            "trailing comma after the payload",
        ),
        (
            hd.clone(),
            b64(&claims_text.as_bytes()[..claims_text.len() - 1]),
            "payload JSON cut short",
        ),
    ];
    for (header, payload, case) in cases {
        expect_401(&h, "/check", &hs_over(&format!("{header}.{payload}")), case).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Route issuers restriction
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn route_issuers_list_refuses_other_issuers_tokens() {
    const ISS2: &str = "https://second.test/";
    // The second issuer's own key, in a file of its own (kid "second").
    let keydir = tempfile::tempdir().expect("tempdir");
    let second_der = keys()
        .other_ec256
        .public_key()
        .as_der()
        .expect("der")
        .as_ref()
        .to_vec();
    let second_pem = keydir.path().join("second.pem");
    std::fs::write(
        &second_pem,
        pem::encode(&pem::Pem::new("PUBLIC KEY", second_der)),
    )
    .expect("write second.pem");
    let config = format!(
        r#"
[[issuer]]
name = "first"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["RS256", "ES256"]
keys = ["rsa.pem", "ec256.pem"]

[[issuer]]
name = "second"
issuer = "{ISS2}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
keys = ["{second}"]

[[route]]
name = "second-only"
path_prefix = "/second"
upstream = "{{upstream}}"
auth = "required"
issuers = ["second"]
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "first-only"
path_prefix = "/first"
upstream = "{{upstream}}"
auth = "required"
issuers = ["first"]
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "both"
path_prefix = "/both"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#,
        second = second_pem.display()
    );
    let h = Harness::start(&config).await;

    let first_rs = token("RS256", &claims());
    let first_es = token("ES256", &claims());
    let second_claims = with(claims(), "iss", json!(ISS2));
    let second = sign_raw_other(
        "ES256",
        &json!({ "alg": "ES256", "typ": "JWT", "kid": "second" }).to_string(),
        &second_claims.to_string(),
    );

    let ok = |a: &Answer, case: &str| {
        assert_eq!(a.status, 200, "{case}: {}", a.body);
        assert_eq!(a.upstream_header("x-auth-sub"), ["alice"], "{case}");
    };
    for (path, tok, case) in [
        ("/first/x", &first_rs, "first RS256 on first-only"),
        ("/first/x", &first_es, "first ES256 on first-only"),
        ("/both/x", &first_rs, "first RS256 on both"),
        ("/both/x", &second, "second on both"),
        ("/second/x", &second, "second on second-only"),
    ] {
        ok(&h.get_with_token(path, tok).await, case);
    }
    for (path, tok, case) in [
        ("/second/x", &first_rs, "first RS256 on second-only"),
        ("/second/x", &first_es, "first ES256 on second-only"),
        ("/first/x", &second, "second on first-only"),
    ] {
        let a = h.get_with_token(path, tok).await;
        let d = assert_invalid(&a, tok, case);
        assert!(
            d.to_ascii_lowercase().contains("issuer"),
            "{case}: description {d:?} should say wrong issuer"
        );
    }
    // Keys do not cross issuers: iss of the second, signed with the first's P-256 key.
    let crossed = sign_raw(
        "ES256",
        &json!({ "alg": "ES256", "kid": "ec256" }).to_string(),
        &second_claims.to_string(),
    );
    for path in ["/second/x", "/both/x"] {
        let a = h.get_with_token(path, &crossed).await;
        assert_invalid(
            &a,
            &crossed,
            &format!("second's iss, first's key, on {path}"),
        );
    }
    let crossed = sign_raw(
        "ES256",
        &json!({ "alg": "ES256" }).to_string(),
        &second_claims.to_string(),
    );
    let a = h.get_with_token("/second/x", &crossed).await;
    assert_invalid(&a, &crossed, "second's iss, first's key, no kid");
    // And the other way round.
    let crossed = sign_raw_other(
        "ES256",
        &json!({ "alg": "ES256", "kid": "second" }).to_string(),
        &claims().to_string(),
    );
    for path in ["/first/x", "/both/x"] {
        let a = h.get_with_token(path, &crossed).await;
        assert_invalid(
            &a,
            &crossed,
            &format!("first's iss, second's key, on {path}"),
        );
    }
    drop(keydir);
}

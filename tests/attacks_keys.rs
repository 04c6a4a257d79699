//! Attack classes on key sources, token rules, config size and reload (issue 13):
//! - token rules: `cty` in any form, time claims outside a signed 64-bit count of seconds,
//!   `jti`/`sid` of the wrong type; over HTTP/1.1 and HTTP/2 and through `explain`;
//! - JWKS rules: `use`/`key_ops` that do not allow verifying, duplicate kids, too many keys per
//!   issuer (a file and a live JWKS server), too many candidate keys per token, bounded logs;
//! - OIDC discovery: issuer mismatch or missing, credentials in `jwks_uri` (never logged);
//! - every file read is capped: `/dev/zero`, FIFOs, oversized files as keys, JWKS, secrets,
//!   certificates and the config itself, at start and on reload;
//! - config: duplicate issuer strings; 100,000 routes validate; a 10,000-route reload while
//!   requests are answered;
//! - metrics that exist from the first scrape.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::try_get;
use common::jwks::{Provider, Signer};
use common::metrics::metric;
use common::tls::CERTS;
use common::*;
use jwtgate::App;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------------
// Helpers

/// An issuer `test` for the default iss/aud, ES256, with `source` (one TOML line).
fn es_issuer(source: &str) -> String {
    format!(
        "[[issuer]]\nname = \"test\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"ES256\"]\n{source}\n"
    )
}

const MAIN_ROUTE: &str = r#"
[[route]]
name = "main"
path_prefix = "/"
upstream = "{upstream}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#;

/// GET `/` with a bearer token over HTTP/2 (prior knowledge) to `addr`.
async fn get_h2(addr: SocketAddr, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    client::get_h2(&format!("http://{addr}/"), &[("authorization", &auth)]).await
}

/// Asserts a 401 `invalid_token` from the gateway (not the upstream), the token not echoed.
fn assert_401(a: &Answer, token: &str, what: &str) {
    assert_eq!(a.status, 401, "{what}: {}", a.body);
    assert_eq!(a.json()["error"], "invalid_token", "{what}: {}", a.body);
    assert!(!a.body.contains(token), "{what}: token echoed");
}

/// The default claims with `name` written as the raw JSON text `raw`.
fn claims_with_raw(name: &str, raw: &str) -> String {
    let mut c = claims();
    c.as_object_mut().expect("object").remove(name);
    let text = c.to_string();
    format!("{},\"{name}\":{raw}}}", &text[..text.len() - 1])
}

/// Runs every `(label, token)` through HTTP/1.1, HTTP/2 and `explain`, expecting a refusal;
/// `explain_step` is the step `explain` must report as failed.
async fn refused_everywhere(cases: &[(String, String)], explain_step: &str) {
    let h = Harness::start(&format!("{}{MAIN_ROUTE}", default_issuer())).await;
    let snap =
        jwtgate::Snapshot::build(jwtgate::Config::load(&h.path("gateway.toml")).expect("config"))
            .expect("snapshot");
    for (label, t) in cases {
        assert_401(&h.get_with_token("/", t).await, t, &format!("{label} (h1)"));
        assert_401(&get_h2(h.addr, t).await, t, &format!("{label} (h2)"));
        let r = jwtgate::explain::explain(&snap, Some(t), &http::Method::GET, "x", "/").await;
        assert_eq!(r.status, 401, "{label} (explain): {r:#?}");
        let step = r
            .steps
            .iter()
            .find(|s| s.result == "fail")
            .unwrap_or_else(|| panic!("{label}: no failed step: {r:#?}"));
        // Numbers past the f64 range do not even parse: a structure failure.
        let want = if label.contains("e400") || label.contains("1.8e308") {
            "structure"
        } else {
            explain_step
        };
        assert_eq!(step.step, want, "{label}: {r:#?}");
    }
    h.stop().await;
}

/// A gateway through the library (App::load + serve) with its own listeners.
struct Gw {
    app: Arc<App>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
    _up: oneshot::Sender<()>,
}

async fn start_app(body: &str) -> Gw {
    let (up, up_stop) = echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, render(up, body)).expect("write");
    let app = Arc::new(App::load(&config).unwrap_or_else(|e| panic!("refused:\n{e}")));
    let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = traffic.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(jwtgate::run(traffic, app.clone(), async move {
        let _ = stopped.await;
        Duration::from_secs(5)
    }));
    Gw {
        app,
        addr,
        dir,
        _stop: stop,
        _up: up_stop,
    }
}

fn render(up: SocketAddr, body: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}",
        body.replace("{upstream}", &format!("http://{up}"))
    )
}

/// Runs `jwtgate check --config PATH` (bounded: a hang fails the test) and returns its exit
/// code and combined output.
async fn check(dir: &Path, config: &Path) -> (i32, String) {
    let (out, err) = (dir.join("check.out"), dir.join("check.err"));
    let child = std::process::Command::new(binary())
        .current_dir(dir)
        .env_remove("JWTGATE_CONFIG")
        .args(["check", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("spawn check");
    let mut child = ChildGuard(child);
    let status = wait_exit(&mut child, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("check hung: {}", output_of(&out, &err)));
    (status.code().unwrap_or(-1), output_of(&out, &err))
}

// ---------------------------------------------------------------------------------------------
// Token rules

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cty_header_in_any_form_is_refused() {
    let c = claims().to_string();
    let cases: Vec<(String, String)> = [
        r#""JWT""#,
        r#""jwt""#,
        r#""application/jwt""#,
        r#""Application/JWT""#,
        r#""JOSE""#,
        r#""""#,
        "null",
        "1",
        "{}",
    ]
    .iter()
    .map(|v| {
        let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"ec256","cty":{v}}}"#);
        (format!("cty {v}"), sign_raw("ES256", &header, &c))
    })
    .collect();
    refused_everywhere(&cases, "header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_outside_a_signed_64_bit_range_are_refused() {
    let header = r#"{"alg":"ES256","typ":"JWT","kid":"ec256"}"#;
    let mut cases = Vec::new();
    for raw in [
        "1e300",
        "9223372036854775808",
        "18446744073709551615",
        "9.3e18",
        "1.8e308",
        "1e400",
        "9223372036854775807.5e3",
    ] {
        cases.push((
            format!("exp {raw}"),
            sign_raw("ES256", header, &claims_with_raw("exp", raw)),
        ));
    }
    for (name, raw) in [
        ("nbf", "-1e300"),
        ("nbf", "-9223372036854775809"),
        ("nbf", "-9.3e18"),
        ("iat", "-9223372036854775809"),
        ("iat", "-1e300"),
        ("iat", "9223372036854775808"),
        ("auth_time", "1e300"),
        ("auth_time", "\"yesterday\""),
    ] {
        cases.push((
            format!("{name} {raw}"),
            sign_raw("ES256", header, &claims_with_raw(name, raw)),
        ));
    }
    refused_everywhere(&cases, "time").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_at_the_edges_of_the_range_never_overflow() {
    let h = Harness::start(&format!("{}{MAIN_ROUTE}", default_issuer())).await;
    let header = r#"{"alg":"ES256","typ":"JWT","kid":"ec256"}"#;
    // exp at i64::MAX and nbf/iat at i64::MIN are in range: valid, and the leeway arithmetic
    // must not overflow.
    let mut c = claims();
    c["exp"] = json!(i64::MAX);
    c["nbf"] = json!(i64::MIN);
    c["iat"] = json!(i64::MIN);
    let t = sign_raw("ES256", header, &c.to_string());
    let a = h.get_with_token("/", &t).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(get_h2(h.addr, &t).await.status, 200);
    // exp at i64::MIN is expired, nbf at i64::MAX not yet valid.
    for (name, v, reason) in [
        ("exp", i64::MIN, "expired"),
        ("nbf", i64::MAX, "not valid before"),
        ("iat", i64::MAX, "issued in the future"),
    ] {
        let mut c = claims();
        c[name] = json!(v);
        let t = sign_raw("ES256", header, &c.to_string());
        let a = h.get_with_token("/", &t).await;
        assert_401(&a, &t, name);
        assert!(
            a.json()["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{name}: {}",
            a.body
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jti_and_sid_that_are_not_strings_are_refused() {
    let header = r#"{"alg":"ES256","typ":"JWT","kid":"ec256"}"#;
    let mut cases = Vec::new();
    for name in ["jti", "sid"] {
        for raw in ["1", "1.5", "[\"a\"]", "{\"a\":1}", "null", "true", "false"] {
            cases.push((
                format!("{name} {raw}"),
                sign_raw("ES256", header, &claims_with_raw(name, raw)),
            ));
        }
    }
    refused_everywhere(&cases, "structure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_claims_of_the_wrong_type_stay_refused_and_strings_pass() {
    let h = Harness::start(&format!("{}{MAIN_ROUTE}", default_issuer())).await;
    let header = r#"{"alg":"ES256","typ":"JWT","kid":"ec256"}"#;
    for (name, raw) in [
        ("iss", "1"),
        ("iss", "[\"https://issuer.test/\"]"),
        ("aud", "1"),
        ("aud", "[\"test-api\",1]"),
        ("aud", "{\"a\":1}"),
        ("sub", "1"),
        ("sub", "\"\""),
        ("sub", "null"),
        ("sub", "[\"alice\"]"),
    ] {
        let t = sign_raw("ES256", header, &claims_with_raw(name, raw));
        assert_401(
            &h.get_with_token("/", &t).await,
            &t,
            &format!("{name} {raw}"),
        );
    }
    let ok = sign_raw(
        "ES256",
        header,
        &claims_with_raw("jti", "\"abc\"").replace("}", ",\"sid\":\"s1\"}"),
    );
    let a = h.get_with_token("/", &ok).await;
    assert_eq!(a.status, 200, "string jti and sid pass: {}", a.body);
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// JWKS rules

/// Starts a harness whose issuer reads `jwks` from a file.
async fn jwks_file_harness(jwks: &Value) -> Result<Harness, jwtgate::config::ConfigErrors> {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("set.json");
    std::fs::write(&f, jwks.to_string()).expect("write");
    let h = Harness::try_start(&format!(
        "{}{MAIN_ROUTE}",
        es_issuer(&format!("jwks_file = {:?}", f.display().to_string()))
    ))
    .await;
    // The file was read at start; the directory may go.
    drop(dir);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_whose_use_or_key_ops_do_not_allow_verifying_are_skipped() {
    let good = Signer::new("ec");
    let cases = [
        ("use enc", json!({ "use": "enc" })),
        ("use SIG", json!({ "use": "SIG" })),
        ("use null", json!({ "use": null })),
        ("key_ops sign", json!({ "key_ops": ["sign"] })),
        (
            "key_ops encrypt",
            json!({ "key_ops": ["encrypt", "wrapKey"] }),
        ),
        ("key_ops empty", json!({ "key_ops": [] })),
        ("key_ops a string", json!({ "key_ops": "verify" })),
        (
            "use sig but key_ops sign",
            json!({ "use": "sig", "key_ops": ["sign"] }),
        ),
    ];
    for (label, extra) in cases {
        let bad = Signer::new("ec");
        let mut member = extra.clone();
        member["kid"] = json!("bad");
        let jwks =
            json!({ "keys": [good.jwk_with(json!({ "kid": "good" })), bad.jwk_with(member)] });
        let h = jwks_file_harness(&jwks).await.expect("config");
        let t = bad.sign_header(r#"{"alg":"ES256","kid":"bad"}"#);
        let a = h.get_with_token("/", &t).await;
        assert_401(&a, &t, label);
        assert!(
            a.body.contains("kid"),
            "{label}: refused as an unknown key: {}",
            a.body
        );
        let ok = good.sign_header(r#"{"alg":"ES256","kid":"good"}"#);
        assert_eq!(h.get_with_token("/", &ok).await.status, 200, "{label}");
        h.stop().await;
    }
    // `key_ops` with verify (alone or among others) is a signature key.
    for ops in [json!(["verify"]), json!(["sign", "verify"])] {
        let k = Signer::new("ec");
        let jwks =
            json!({ "keys": [k.jwk_with(json!({ "kid": "k", "use": "sig", "key_ops": ops }))] });
        let h = jwks_file_harness(&jwks).await.expect("config");
        let t = k.sign_header(r#"{"alg":"ES256","kid":"k"}"#);
        assert_eq!(h.get_with_token("/", &t).await.status, 200, "{ops}");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_of_two_keys_with_one_kid_is_used_and_the_later_ignored() {
    let (first, second, third) = (Signer::new("ec"), Signer::new("ec"), Signer::new("ec"));
    let jwks = json!({ "keys": [
        first.jwk_with(json!({ "kid": "k" })),
        second.jwk_with(json!({ "kid": "k" })),
        third.jwk_with(json!({ "kid": "k", "use": "sig" })),
    ]});
    let h = jwks_file_harness(&jwks).await.expect("config");
    let ok = first.sign_header(r#"{"alg":"ES256","kid":"k"}"#);
    assert_eq!(h.get_with_token("/", &ok).await.status, 200);
    for (label, k) in [("second", &second), ("third", &third)] {
        let t = k.sign_header(r#"{"alg":"ES256","kid":"k"}"#);
        let a = h.get_with_token("/", &t).await;
        assert_401(&a, &t, label);
        assert_eq!(get_h2(h.addr, &t).await.status, 401, "{label} (h2)");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_usable_keys_refuse_the_key_set_and_pem_lists_too() {
    let keys: Vec<Signer> = (0..101).map(|_| Signer::new("ec")).collect();
    let set = |n: usize| {
        json!({ "keys": keys[..n].iter().enumerate()
            .map(|(i, k)| k.jwk_with(json!({ "kid": format!("k{i}") }))).collect::<Vec<_>>() })
    };
    let h = jwks_file_harness(&set(100))
        .await
        .expect("100 keys are fine");
    let t = keys[99].sign_header(r#"{"alg":"ES256","kid":"k99"}"#);
    assert_eq!(h.get_with_token("/", &t).await.status, 200);
    h.stop().await;
    let e = jwks_file_harness(&set(101))
        .await
        .err()
        .expect("101 keys are refused");
    assert!(e.to_string().contains("more than 100"), "{e}");
    // Skipped entries (here: encryption keys) do not count, but are not listed one by one.
    let mut many = set(3);
    for i in 0..500 {
        many["keys"]
            .as_array_mut()
            .expect("keys")
            .push(keys[0].jwk_with(json!({ "kid": format!("enc{i}"), "use": "enc" })));
    }
    let h = jwks_file_harness(&many)
        .await
        .expect("skipped entries do not count");
    h.stop().await;
    // A `keys` list of PEM files over the cap, and two files with one stem (one kid).
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let list: Vec<String> = (0..101).map(|_| "ec256.pem".to_owned()).collect();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        render(
            "127.0.0.1:9".parse().expect("addr"),
            &format!("{}{MAIN_ROUTE}", es_issuer(&format!("keys = {list:?}"))),
        ),
    )
    .expect("write");
    let (code, out) = check(dir.path(), &config).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("at most 100"), "{out}");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::copy(dir.path().join("rsa.pem"), dir.path().join("sub/ec256.pem")).expect("copy");
    std::fs::write(
        &config,
        render(
            "127.0.0.1:9".parse().expect("addr"),
            &format!(
                "{}{MAIN_ROUTE}",
                es_issuer("keys = [\"ec256.pem\", \"sub/ec256.pem\"]")
                    .replace("[\"ES256\"]", "[\"ES256\", \"RS256\"]")
            ),
        ),
    )
    .expect("write");
    let (code, out) = check(dir.path(), &config).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("same name"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_usable_kid_is_tried_against_at_most_four_keys() {
    // Kid-less keys: a token without a kid (or with an unknown one) may use any of them.
    let keys: Vec<Signer> = (0..12).map(|_| Signer::new("ec")).collect();
    let set = |n: usize| json!({ "keys": keys[..n].iter().map(|k| k.jwk_with(json!({}))).collect::<Vec<_>>() });
    let h = jwks_file_harness(&set(4)).await.expect("config");
    for header in [r#"{"alg":"ES256"}"#, r#"{"alg":"ES256","kid":"nope"}"#] {
        let t = keys[3].sign_header(header);
        assert_eq!(
            h.get_with_token("/", &t).await.status,
            200,
            "4 keys: {header}"
        );
    }
    h.stop().await;
    let h = jwks_file_harness(&set(12)).await.expect("config");
    for (i, header) in [
        (11, r#"{"alg":"ES256"}"#),
        (0, r#"{"alg":"ES256"}"#),
        (5, r#"{"alg":"ES256","kid":"unknown"}"#),
    ] {
        let t = keys[i].sign_header(header);
        for a in [h.get_with_token("/", &t).await, get_h2(h.addr, &t).await] {
            assert_401(&a, &t, header);
            assert!(
                a.body.contains("must name its key"),
                "refused before any signature check: {}",
                a.body
            );
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_jwks_too_large_in_keys_or_without_usable_keys_is_a_failed_refresh_logged_briefly() {
    let p = Provider::start().await;
    let paddr = p.addr;
    // 150 usable keys: refused whole (a failed refresh), no key from it is ever used.
    let keys: Vec<Signer> = (0..150).map(|_| Signer::new("ec")).collect();
    p.set(
        "/many.json",
        json!({ "keys": keys.iter().enumerate()
            .map(|(i, k)| k.jwk_with(json!({ "kid": format!("k{i}") }))).collect::<Vec<_>>() })
        .to_string(),
    );
    // 3,000 unusable entries with long kids: the failure log stays short.
    let junk: Vec<Value> = (0..3000)
        .map(|i| json!({ "kty": "RSA", "kid": format!("{i}-{}", "x".repeat(200)), "n": "AQAB", "e": "AQAB" }))
        .collect();
    p.set("/junk.json", json!({ "keys": junk }).to_string());
    for (path, what) in [
        ("/many.json", "more than 100"),
        ("/junk.json", "more entries skipped"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (up, _up) = echo_upstream().await;
        let (port, admin) = (free_port(), free_port());
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\naddr = \"127.0.0.1:{port}\"\n[admin]\naddr = \"127.0.0.1:{admin}\"\n{}{}",
                es_issuer(&format!("jwks_url = \"http://{paddr}{path}\"")),
                MAIN_ROUTE.replace("{upstream}", &format!("http://{up}"))
            ),
        )
        .expect("write");
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let _child = spawn_run(dir.path(), &config, &out, &err, |_| {});
        let metrics_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(a) = try_get(metrics_addr, "/metrics", None).await {
                let failures = metric(
                    &a.body,
                    "jwtgate_key_refresh_total",
                    &[("issuer", "test"), ("result", "failure")],
                );
                if failures.unwrap_or(0.0) >= 1.0 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{path}: no failed refresh: {}",
                output_of(&out, &err)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let gw: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let t = keys[0].sign_header(r#"{"alg":"ES256","kid":"k0"}"#);
        let a = try_get(gw, "/", Some(&t)).await.expect("answer");
        assert_eq!(a.status, 503, "{path}: no keys loaded: {}", a.body);
        let ready = try_get(metrics_addr, "/readyz", None)
            .await
            .expect("readyz");
        assert_eq!(ready.status, 503, "{path}");
        let logs = output_of(&out, &err);
        assert!(logs.contains(what), "{path}: {logs}");
        let longest = logs.lines().map(str::len).max().unwrap_or(0);
        assert!(longest < 4096, "{path}: a log line of {longest} bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// OIDC discovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_for_another_issuer_or_with_credentials_give_no_keys() {
    let k = Signer::new("ec");
    let p = Provider::start().await;
    let paddr = p.addr;
    p.set(
        "/keys",
        json!({ "keys": [k.jwk_with(json!({ "kid": "k" }))] }).to_string(),
    );
    let jwks_uri = format!("http://{paddr}/keys");
    let cases = [
        (
            "other issuer",
            json!({ "issuer": "https://evil.test/", "jwks_uri": jwks_uri }),
        ),
        (
            "issuer without slash",
            json!({ "issuer": "https://issuer.test", "jwks_uri": jwks_uri }),
        ),
        (
            "issuer in another case",
            json!({ "issuer": "https://ISSUER.test/", "jwks_uri": jwks_uri }),
        ),
        ("no issuer", json!({ "jwks_uri": jwks_uri })),
        (
            "issuer not a string",
            json!({ "issuer": ["https://issuer.test/"], "jwks_uri": jwks_uri }),
        ),
        (
            "credentials",
            json!({ "issuer": ISS, "jwks_uri": format!("http://user:s3cretpw@{paddr}/keys") }),
        ),
        (
            "user only",
            json!({ "issuer": ISS, "jwks_uri": format!("http://s3cretpw@{paddr}/keys") }),
        ),
        (
            "file scheme",
            json!({ "issuer": ISS, "jwks_uri": "file:///etc/passwd" }),
        ),
        ("relative", json!({ "issuer": ISS, "jwks_uri": "/keys" })),
    ];
    for (i, (label, doc)) in cases.iter().enumerate() {
        let path = format!("/d{i}/.well-known/openid-configuration");
        p.set(&path, doc.to_string());
        let dir = tempfile::tempdir().expect("tempdir");
        let (up, _up) = echo_upstream().await;
        let (port, admin) = (free_port(), free_port());
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\naddr = \"127.0.0.1:{port}\"\n[admin]\naddr = \"127.0.0.1:{admin}\"\n{}{}",
                es_issuer(&format!("discovery_url = \"http://{paddr}{path}\"")),
                MAIN_ROUTE.replace("{upstream}", &format!("http://{up}"))
            ),
        )
        .expect("write");
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let _child = spawn_run(dir.path(), &config, &out, &err, |_| {});
        let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(a) = try_get(admin, "/metrics", None).await {
                if metric(
                    &a.body,
                    "jwtgate_key_refresh_total",
                    &[("issuer", "test"), ("result", "failure")],
                )
                .unwrap_or(0.0)
                    >= 1.0
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{label}: no failed refresh: {}",
                output_of(&out, &err)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let gw: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let t = k.sign_header(r#"{"alg":"ES256","kid":"k"}"#);
        let a = try_get(gw, "/", Some(&t)).await.expect("answer");
        assert_eq!(a.status, 503, "{label}: no keys: {}", a.body);
        // Log lines reach the files through the background writer: wait for the message.
        let logs = eventually(
            Duration::from_secs(5),
            &format!("{label}: a clear message"),
            || {
                let logs = output_of(&out, &err);
                std::future::ready(if logs.contains("discovery") || logs.contains("jwks_uri") {
                    Ok(logs)
                } else {
                    Err(logs)
                })
            },
        )
        .await;
        assert!(
            !logs.contains("s3cretpw"),
            "{label}: credentials logged: {logs}"
        );
    }
    // The good document works, and only then.
    p.set(
        "/ok/.well-known/openid-configuration",
        json!({ "issuer": ISS, "jwks_uri": jwks_uri }).to_string(),
    );
    let gw = start_app(&format!(
        "{}{MAIN_ROUTE}",
        es_issuer(&format!(
            "discovery_url = \"http://{paddr}/ok/.well-known/openid-configuration\""
        ))
    ))
    .await;
    let t = k.sign_header(r#"{"alg":"ES256","kid":"k"}"#);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = try_get(gw.addr, "/", Some(&t)).await.expect("answer");
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "good discovery: {}", a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// File size caps

fn mkfifo(path: &Path) -> bool {
    std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_fifos_and_oversized_files_are_refused_quickly_wherever_a_file_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let fifo = dir.path().join("fifo");
    let have_fifo = mkfifo(&fifo);
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'A'; 5 << 20]).expect("big");
    let fifo_s = fifo.display().to_string();
    let big_s = big.display().to_string();
    let mut cases: Vec<(String, String)> = Vec::new();
    let mut sources = vec![
        (
            "keys /dev/zero",
            "keys = [\"/dev/zero\"]".to_owned(),
            "ES256",
        ),
        ("keys big", format!("keys = [{big_s:?}]"), "ES256"),
        (
            "jwks_file /dev/zero",
            "jwks_file = \"/dev/zero\"".to_owned(),
            "ES256",
        ),
        ("jwks_file big", format!("jwks_file = {big_s:?}"), "ES256"),
        (
            "jwks_file /dev/urandom",
            "jwks_file = \"/dev/urandom\"".to_owned(),
            "ES256",
        ),
        (
            "hmac_secret_file /dev/zero",
            "hmac_secret_file = \"/dev/zero\"".to_owned(),
            "HS256",
        ),
        (
            "hmac_secret_file big",
            format!("hmac_secret_file = {big_s:?}"),
            "HS256",
        ),
        ("keys a directory", "keys = [\"/tmp\"]".to_owned(), "ES256"),
    ];
    if have_fifo {
        sources.push(("keys fifo", format!("keys = [{fifo_s:?}]"), "ES256"));
        sources.push(("jwks_file fifo", format!("jwks_file = {fifo_s:?}"), "ES256"));
        sources.push((
            "hmac_secret_file fifo",
            format!("hmac_secret_file = {fifo_s:?}"),
            "HS256",
        ));
    }
    for (label, source, alg) in sources {
        cases.push((
            label.to_owned(),
            es_issuer(&source).replace("\"ES256\"", &format!("\"{alg}\"")) + MAIN_ROUTE,
        ));
    }
    let (crt, key) = (format!("{CERTS}/server.crt"), format!("{CERTS}/server.key"));
    for (label, tls) in [
        (
            "cert /dev/zero",
            format!("tls = {{ cert = \"/dev/zero\", key = {key:?} }}"),
        ),
        (
            "key /dev/zero",
            format!("tls = {{ cert = {crt:?}, key = \"/dev/zero\" }}"),
        ),
        (
            "cert big",
            format!("tls = {{ cert = {big_s:?}, key = {key:?} }}"),
        ),
        (
            "key big",
            format!("tls = {{ cert = {crt:?}, key = {big_s:?} }}"),
        ),
        (
            "client_ca /dev/zero",
            format!("tls = {{ cert = {crt:?}, key = {key:?}, client_ca = \"/dev/zero\" }}"),
        ),
        (
            "client_ca big",
            format!("tls = {{ cert = {crt:?}, key = {key:?}, client_ca = {big_s:?} }}"),
        ),
    ] {
        cases.push((
            label.to_owned(),
            format!("__TLS__{tls}\n{}{MAIN_ROUTE}", default_issuer()),
        ));
    }
    cases.push((
        "upstream_ca /dev/zero".to_owned(),
        format!(
            "{}{}upstream_ca = \"/dev/zero\"\n",
            default_issuer(),
            MAIN_ROUTE.replace("[route.claim_headers]\n\"X-Auth-Sub\" = \"sub\"\n", "")
        ),
    ));
    let config = dir.path().join("gateway.toml");
    for (label, body) in &cases {
        let text = match body.strip_prefix("__TLS__") {
            Some(rest) => {
                let (tls, rest) = rest.split_once('\n').expect("tls line");
                format!("[listen]\naddr = \"127.0.0.1:0\"\n{tls}\n{rest}")
            }
            None => format!("[listen]\naddr = \"127.0.0.1:0\"\n{body}"),
        }
        .replace("{upstream}", "https://127.0.0.1:9");
        std::fs::write(&config, text).expect("write");
        let started = Instant::now();
        let (code, out) = check(dir.path(), &config).await;
        assert_eq!(code, 1, "{label}: refused: {out}");
        assert!(
            out.contains("not a regular file") || out.contains("larger than"),
            "{label}: a clear message: {out}"
        );
        assert!(started.elapsed() < Duration::from_secs(15), "{label}");
    }
    // The config itself (its cap is 16 MiB).
    let huge = dir.path().join("huge.toml");
    std::fs::write(&huge, vec![b'#'; 17 << 20]).expect("huge");
    for (label, path) in [
        ("config /dev/zero", PathBuf::from("/dev/zero")),
        ("config huge", huge),
    ] {
        let (code, out) = check(dir.path(), &path).await;
        assert_eq!(code, 1, "{label}: {out}");
        assert!(
            out.contains("not a regular file") || out.contains("larger than"),
            "{label}: {out}"
        );
    }
    if have_fifo {
        let (code, out) = check(dir.path(), &fifo).await;
        assert_eq!(code, 1, "config fifo: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_dev_zero_or_a_fifo_is_refused_without_hanging_and_serving_goes_on() {
    let gw = start_app(&format!(
        "{}{MAIN_ROUTE}",
        es_issuer("jwks_file = \"jwks.json\"")
    ))
    .await;
    let t = token("ES256", &claims());
    assert_eq!(
        try_get(gw.addr, "/", Some(&t))
            .await
            .expect("answer")
            .status,
        200
    );
    let fifo = gw.dir.path().join("fifo");
    let mut sources = vec![
        "keys = [\"/dev/zero\"]".to_owned(),
        "jwks_file = \"/dev/zero\"".to_owned(),
    ];
    if mkfifo(&fifo) {
        sources.push(format!("keys = [{:?}]", fifo.display().to_string()));
    }
    let config = gw.dir.path().join("gateway.toml");
    let good = std::fs::read_to_string(&config).expect("config");
    for source in sources {
        std::fs::write(&config, good.replace("jwks_file = \"jwks.json\"", &source)).expect("write");
        let failures = || {
            metric(
                &gw.app.metrics.render(),
                "jwtgate_config_reloads_total",
                &[("result", "failure")],
            )
            .unwrap_or(0.0)
        };
        let before = failures();
        gw.app.request_reload();
        eventually(
            Duration::from_secs(10),
            &format!("{source}: reload refused"),
            || std::future::ready(failures() > before),
        )
        .await;
        let a = try_get(gw.addr, "/", Some(&t)).await.expect("answer");
        assert_eq!(a.status, 200, "{source}: the last good config serves");
    }
}

// ---------------------------------------------------------------------------------------------
// Config

#[test]
fn two_issuers_with_one_iss_string_or_a_trailing_slash_apart_are_refused() {
    let path = Path::new("/tmp/gateway.toml");
    let issuer = |name: &str, iss: &str| {
        format!("[[issuer]]\nname = \"{name}\"\nissuer = \"{iss}\"\naudiences = [\"a\"]\nalgorithms = [\"HS256\"]\nhmac_secret_env = \"X\"\n")
    };
    let route = "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"required\"\n";
    for (a, b, expect) in [
        (
            "https://idp.test/",
            "https://idp.test/",
            "already the issuer",
        ),
        ("https://idp.test", "https://idp.test", "already the issuer"),
        ("https://idp.test/", "https://idp.test", "trailing slash"),
        ("https://idp.test", "https://idp.test/", "trailing slash"),
        ("https://idp.test//", "https://idp.test", "trailing slash"),
    ] {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}{}{route}",
            issuer("one", a),
            issuer("two", b)
        );
        let e = jwtgate::Config::parse(path, &text)
            .err()
            .unwrap_or_else(|| panic!("{a} / {b}: accepted"));
        let s = e.to_string();
        assert!(s.contains(expect), "{a} / {b}: {s}");
        assert!(
            s.contains(":11:"),
            "located at the second issuer's iss: {s}"
        );
    }
    // Distinct issuers (a different path or case is a different iss) stay fine.
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}{}{route}",
        issuer("one", "https://idp.test/a"),
        issuer("two", "https://idp.test/b")
    );
    assert!(jwtgate::Config::parse(path, &text).is_ok());
}

fn many_routes(n: usize, upstream: &str) -> String {
    let mut text = String::with_capacity(n * 120);
    for i in 0..n {
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\npath_prefix = \"/r{i}\"\nupstream = \"{upstream}\"\nauth = \"none\"\n"
        ));
    }
    text
}

#[test]
fn a_config_of_100000_routes_validates_in_linear_time() {
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}{}",
        many_routes(100_000, "http://127.0.0.1:9"),
        // An error at the very end is located in the last line, without a scan per route.
        "[[route]]\nname = \"bad\"\npath_prefix = \"/bad\"\nupstream = \"ftp://x\"\nauth = \"none\"\n"
    );
    let e = jwtgate::Config::parse(Path::new("/tmp/gateway.toml"), &text)
        .expect_err("the last route is invalid");
    assert!(e.to_string().contains(":500006:"), "{e}");
    let ok = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}",
        many_routes(100_000, "http://127.0.0.1:9")
    );
    let c = jwtgate::Config::parse(Path::new("/tmp/gateway.toml"), &ok).expect("valid");
    assert_eq!(c.routes.len(), 100_000);
    let line = c.routes[99_999].loc.line;
    assert!((3 + 5 * 99_999..=4 + 5 * 99_999).contains(&line), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_route_reload_completes_while_requests_keep_being_answered() {
    let body = format!(
        "{}{MAIN_ROUTE}{}",
        default_issuer(),
        many_routes(10_000, "{upstream}")
    );
    let gw = start_app(&body).await;
    let t = token("ES256", &claims());
    assert_eq!(
        try_get(gw.addr, "/r7", None).await.expect("answer").status,
        200
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let requester = {
        let (stop, answered, addr, t) = (stop.clone(), answered.clone(), gw.addr, t.clone());
        tokio::spawn(async move {
            while !stop.load(SeqCst) {
                let a = try_get(addr, "/", Some(&t)).await?;
                if a.status != 200 {
                    return Err(format!("status {} during the reload: {}", a.status, a.body));
                }
                let a = try_get(addr, "/r9999/x", None).await?;
                if a.status != 200 {
                    return Err(format!("status {} during the reload", a.status));
                }
                answered.fetch_add(1, SeqCst);
            }
            Ok::<(), String>(())
        })
    };
    // A new route in front; the reload is seen when it answers.
    let config = gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen(
            "[[route]]",
            "[[route]]\nname = \"added\"\npath_prefix = \"/added\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"none\"\n\n[[route]]",
            1,
        ),
    )
    .expect("write");
    gw.app.request_reload();
    let before = answered.load(SeqCst);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = try_get(gw.addr, "/added", None).await.expect("answer");
        if a.status == 502 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reload did not apply: {}",
            a.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, SeqCst);
    requester
        .await
        .expect("requester")
        .expect("every request answered");
    assert!(
        answered.load(SeqCst) > before,
        "requests were answered during the reload"
    );
    let m = gw.app.metrics.render();
    assert!(metric(&m, "jwtgate_config_reloads_total", &[("result", "success")]) >= Some(1.0));
}

// ---------------------------------------------------------------------------------------------
// Metrics from the first scrape

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_config_makes_known_exists_from_the_first_scrape() {
    let p = Provider::start().await;
    let paddr = p.addr;
    // A remote issuer whose provider never answers with keys (404), and a static one.
    let _ = &p;
    let body = format!(
        "{}{}{}\n[[route]]\nname = \"open\"\npath_prefix = \"/open\"\nupstream = \"{{upstream}}\"\nauth = \"none\"\n",
        default_issuer(),
        "[[issuer]]\nname = \"remote\"\nissuer = \"https://remote.test/\"\naudiences = [\"a\"]\nalgorithms = [\"ES256\"]\n".to_owned()
            + &format!("jwks_url = \"http://{paddr}/none.json\"\n"),
        MAIN_ROUTE
    );
    let gw = start_app(&body).await;
    let m = gw.app.metrics.render();
    for issuer in ["test", "remote"] {
        for result in ["success", "failure"] {
            assert!(
                metric(
                    &m,
                    "jwtgate_key_refresh_total",
                    &[("issuer", issuer), ("result", result)]
                )
                .is_some(),
                "key_refresh_total {issuer} {result}:\n{m}"
            );
        }
        assert!(
            metric(&m, "jwtgate_keys_loaded", &[("issuer", issuer)]).is_some(),
            "{issuer}:\n{m}"
        );
        assert!(
            metric(
                &m,
                "jwtgate_key_refresh_last_success_timestamp_seconds",
                &[("issuer", issuer)]
            )
            .is_some(),
            "{issuer}:\n{m}"
        );
    }
    assert_eq!(
        metric(
            &m,
            "jwtgate_key_refresh_total",
            &[("issuer", "test"), ("result", "success")]
        ),
        Some(0.0)
    );
    assert!(metric(&m, "jwtgate_keys_loaded", &[("issuer", "test")]).unwrap_or(0.0) >= 4.0);
    for result in ["success", "failure"] {
        assert_eq!(
            metric(&m, "jwtgate_config_reloads_total", &[("result", result)]),
            Some(0.0),
            "{m}"
        );
    }
    for kind in ["connect", "timeout", "reset", "tls"] {
        for route in ["main", "open"] {
            assert_eq!(
                metric(
                    &m,
                    "jwtgate_upstream_errors_total",
                    &[("route", route), ("kind", kind)]
                ),
                Some(0.0),
                "{route} {kind}"
            );
        }
    }
    for reason in [
        "missing",
        "malformed",
        "bad_signature",
        "expired",
        "unknown_key",
        "wrong_audience",
    ] {
        assert_eq!(
            metric(
                &m,
                "jwtgate_auth_failures_total",
                &[("route", "main"), ("reason", reason)]
            ),
            Some(0.0),
            "{reason}"
        );
        assert_eq!(
            metric(
                &m,
                "jwtgate_auth_failures_total",
                &[("route", "open"), ("reason", reason)]
            ),
            None,
            "a route without auth has no auth failures"
        );
    }
    // A reload adds the series of what it adds.
    let config = gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text + "\n[[route]]\nname = \"later\"\npath_prefix = \"/later\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"required\"\n",
    )
    .expect("write");
    gw.app.reload_config().expect("reload");
    let m = gw.app.metrics.render();
    assert_eq!(
        metric(
            &m,
            "jwtgate_auth_failures_total",
            &[("route", "later"), ("reason", "expired")]
        ),
        Some(0.0)
    );
    assert!(metric(&m, "jwtgate_config_reloads_total", &[("result", "success")]) >= Some(1.0));
}

//! `jwtgate explain`: a pass, each failure class, and route choice with a shadowed route.

mod common;

use common::*;
use http::Method;
use serde_json::json;

const ROUTES: &str = r#"
[[route]]
name = "orders"
path_prefix = "/api/orders"
upstream = "{upstream}"
auth = "required"
require = { scope = "orders:read" }
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"

[[route]]
name = "orders-again"
path_prefix = "/api/orders"
upstream = "{upstream}"
auth = "none"

[[route]]
name = "public"
path_prefix = "/"
upstream = "{upstream}"
auth = "none"
"#;

async fn snapshot() -> (jwtgate::Snapshot, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}{}",
        default_issuer(),
        ROUTES.replace("{upstream}", "http://127.0.0.1:9")
    );
    std::fs::write(&path, text).expect("write");
    let snap =
        jwtgate::Snapshot::build(jwtgate::Config::load(&path).expect("config")).expect("keys");
    (snap, dir)
}

async fn explain(token: Option<&str>, path: &str) -> jwtgate::explain::Report {
    let (snap, _dir) = snapshot().await;
    jwtgate::explain::explain(&snap, token, &Method::GET, "api.example.com", path).await
}

fn step<'a>(r: &'a jwtgate::explain::Report, name: &str) -> &'a jwtgate::explain::Step {
    r.steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no step {name}: {:#?}", r.steps))
}

fn good() -> serde_json::Value {
    let mut c = claims();
    c["scope"] = "orders:read".into();
    c["email"] = "alice@example.com".into();
    c
}

#[tokio::test]
async fn a_pass_shows_every_step_and_the_upstream_headers() {
    let t = token("ES256", &good());
    let r = explain(Some(&t), "/api/orders/../orders/7?x=1").await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.route.as_deref(), Some("orders"));
    assert_eq!(r.normalized_path.as_deref(), Some("/api/orders/7"));
    for s in [
        "structure",
        "header",
        "issuer",
        "algorithm",
        "typ",
        "key",
        "signature",
        "time",
        "audience",
        "subject",
        "requirements",
        "claim headers",
    ] {
        assert_eq!(step(&r, s).result, "pass", "{s}: {r:#?}");
    }
    assert!(step(&r, "key").detail.contains("ec256"), "{r:#?}");
    let h: std::collections::HashMap<_, _> = r.upstream_headers.iter().cloned().collect();
    assert_eq!(h["x-auth-sub"], "alice");
    assert_eq!(h["x-auth-email"], "alice@example.com");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["host"], "api.example.com");
    assert!(
        !h.contains_key("authorization"),
        "the token is removed before forwarding"
    );
    assert_eq!(
        r.upstream_url.as_deref(),
        Some("http://127.0.0.1:9/api/orders/7?x=1")
    );
    // The report never carries the token.
    assert!(!serde_json::to_string(&r).expect("json").contains(&t));
}

#[tokio::test]
async fn each_failure_class_names_its_step() {
    let mut expired = good();
    expired["exp"] = (now() - 3600).into();
    let mut future = good();
    future["nbf"] = (now() + 3600).into();
    let mut wrong_iss = good();
    wrong_iss["iss"] = "https://other.test/".into();
    let mut wrong_aud = good();
    wrong_aud["aud"] = "someone-else".into();
    let mut no_scope = good();
    no_scope["scope"] = "orders:write".into();
    let mut bad_claim = good();
    bad_claim["email"] = "a\r\nX-Evil: 1".into();
    let cases: Vec<(String, &str, &str, u16)> = vec![
        ("not-a-token".into(), "structure", "malformed", 401),
        (
            sign_raw(
                "ES256",
                r#"{"alg":"ES256","crit":["x"]}"#,
                &good().to_string(),
            ),
            "header",
            "malformed",
            401,
        ),
        (token("ES256", &wrong_iss), "issuer", "wrong_issuer", 401),
        (
            sign_raw("HS256", r#"{"alg":"none"}"#, &good().to_string()),
            "algorithm",
            "algorithm_not_allowed",
            401,
        ),
        (
            sign_raw(
                "ES256",
                &json!({"alg":"ES256","kid":"nope"}).to_string(),
                &good().to_string(),
            ),
            "key",
            "unknown_key",
            401,
        ),
        (
            sign_raw_other(
                "ES256",
                &json!({"alg":"ES256","kid":"ec256"}).to_string(),
                &good().to_string(),
            ),
            "signature",
            "bad_signature",
            401,
        ),
        (token("ES256", &expired), "time", "expired", 401),
        (token("ES256", &future), "time", "not_yet_valid", 401),
        (
            token("ES256", &wrong_aud),
            "audience",
            "wrong_audience",
            401,
        ),
        (
            token("ES256", &no_scope),
            "requirements",
            "insufficient_claims",
            403,
        ),
        (
            token("ES256", &bad_claim),
            "claim headers",
            "malformed",
            401,
        ),
    ];
    for (t, failed_step, reason, status) in cases {
        let r = explain(Some(&t), "/api/orders/1").await;
        assert_eq!(r.status, status, "{failed_step}: {r:#?}");
        assert_eq!(
            step(&r, failed_step).result,
            "fail",
            "{failed_step}: {r:#?}"
        );
        assert!(r.outcome.contains(reason), "{reason} in {}", r.outcome);
        assert!(
            r.upstream_headers.is_empty(),
            "refused requests show no upstream headers"
        );
        assert!(!r.outcome.contains(&t) || t.len() < 12);
    }
}

#[tokio::test]
async fn no_token_on_a_required_route_is_401_missing() {
    let r = explain(None, "/api/orders/1").await;
    assert_eq!(r.status, 401);
    assert!(r.outcome.contains("missing"), "{}", r.outcome);
}

#[tokio::test]
async fn routes_considered_say_why_and_the_shadowed_one_never_wins() {
    let t = token("RS256", &good());
    let r = explain(Some(&t), "/api/orders/1").await;
    let by_name = |n: &str| r.routes.iter().find(|c| c.name == n).expect("route");
    assert!(by_name("orders").matched);
    assert!(!by_name("orders-again").matched);
    assert!(
        by_name("orders-again")
            .why
            .contains("more specific or written earlier"),
        "{r:#?}"
    );
    assert!(!by_name("public").matched);
    let r = explain(Some(&t), "/elsewhere").await;
    assert_eq!(r.route.as_deref(), Some("public"));
    assert!(
        by_name_in(&r, "orders").why.contains("is not under"),
        "{r:#?}"
    );
    // check's warnings name the shadowed route too.
    let (snap, _dir) = snapshot().await;
    let w = jwtgate::check::warnings(&snap).join("\n");
    assert!(
        w.contains("\"orders-again\" is shadowed by route \"orders\""),
        "{w}"
    );
}

fn by_name_in<'a>(r: &'a jwtgate::explain::Report, n: &str) -> &'a jwtgate::explain::RouteCheck {
    r.routes.iter().find(|c| c.name == n).expect("route")
}

#[tokio::test]
async fn a_malformed_path_is_400_before_routing() {
    let r = explain(None, "/public/..%2Fadmin").await;
    assert_eq!(r.status, 400);
    assert!(r.routes.is_empty());
}

#[test]
fn the_binary_prints_text_and_json_and_exits_2_on_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}{}",
            default_issuer(),
            ROUTES.replace("{upstream}", "http://127.0.0.1:9")
        ),
    )
    .expect("write");
    let t = token("EdDSA", &good());
    let run = |args: &[&str]| {
        std::process::Command::new(binary())
            .arg("explain")
            .arg("--config")
            .arg(&path)
            .args(args)
            .output()
            .expect("run")
    };
    let ok = run(&["--token", &t, "/api/orders/1"]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{text}");
    assert!(
        text.contains("route: orders") && text.contains("x-auth-sub: alice"),
        "{text}"
    );
    assert!(!text.contains(&t));
    let bad = run(&["--json", "--token", "garbage", "/api/orders/1"]);
    assert_eq!(bad.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("json");
    assert_eq!(v["status"], 401);
}

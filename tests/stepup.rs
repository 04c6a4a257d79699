//! SPEC "Step-up, one-time tokens, theft signals, security headers", the step-up and
//! response-header parts: RFC 9470 challenges on fresh and cached tokens, and a route's
//! `response_headers` on every answer it gives (the gateway's own and the upstream's), and on
//! none before a route is chosen.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Starts an App on the default issuer and `config`, forwarding to `upstream`.
async fn app(config: &str, upstream: &str) -> (Arc<jwtgate::App>, SocketAddr, tempfile::TempDir) {
    let r =
        app::start(&format!("{}{config}", default_issuer()).replace("{upstream}", upstream)).await;
    (r.app, r.addr, r.dir)
}

async fn echo() -> String {
    app::echo_url().await
}

fn failures(app: &jwtgate::App, route: &str, reason: &str) -> u64 {
    app.metrics
        .auth_failures
        .with_label_values(&[route, reason])
        .get()
}

const STEP_UP: &str = r#"
[[route]]
name = "recent"
path_prefix = "/recent"
upstream = "{upstream}"
auth = "required"
max_auth_age = "5m"

[[route]]
name = "strong"
path_prefix = "/strong"
upstream = "{upstream}"
auth = "required"
acr_values = ["mfa", "phr"]

[[route]]
name = "both"
path_prefix = "/both"
upstream = "{upstream}"
auth = "required"
max_auth_age = "60s"
acr_values = ["mfa"]

[[route]]
name = "plain"
path_prefix = "/"
upstream = "{upstream}"
auth = "required"
"#;

fn with(extra: serde_json::Value) -> serde_json::Value {
    let mut c = claims();
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

#[tokio::test]
async fn max_auth_age_admits_recent_authentication_and_challenges_old_or_missing() {
    let (app, addr, _d) = app(STEP_UP, &echo().await).await;
    // The issuer's leeway (30 s) is added to max_auth_age (300 s).
    let fresh = token("ES256", &with(json!({"auth_time": now() - 320})));
    assert_eq!(client::get(addr, "/recent", Some(&fresh)).await.status, 200);

    let old = token("ES256", &with(json!({"auth_time": now() - 400})));
    let a = client::get(addr, "/recent", Some(&old)).await;
    assert_eq!(a.status, 401);
    let challenge = a.header("www-authenticate").expect("challenge");
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(r#"error="insufficient_user_authentication""#)
            && challenge.contains(r#"max_age="300""#)
            && challenge.contains("error_description=\"")
            && !challenge.contains("acr_values"),
        "{challenge}"
    );
    let body = a.json();
    assert_eq!(body["error"], "insufficient_user_authentication");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("ago")),
        "{body}"
    );

    let none = token("ES256", &claims());
    let a = client::get(addr, "/recent", Some(&none)).await;
    assert_eq!(a.status, 401);
    assert!(a
        .header("www-authenticate")
        .is_some_and(|c| c.contains(r#"max_age="300""#)));
    // Other routes do not care about auth_time.
    assert_eq!(client::get(addr, "/other", Some(&none)).await.status, 200);
    assert_eq!(
        failures(&app, "recent", "insufficient_user_authentication"),
        2
    );
}

#[tokio::test]
async fn acr_values_admit_listed_acr_and_challenge_others() {
    let (app, addr, _d) = app(STEP_UP, &echo().await).await;
    let mfa = token("ES256", &with(json!({"acr": "phr"})));
    assert_eq!(client::get(addr, "/strong", Some(&mfa)).await.status, 200);
    for c in [with(json!({"acr": "pwd"})), claims()] {
        let a = client::get(addr, "/strong", Some(&token("ES256", &c))).await;
        assert_eq!(a.status, 401);
        let challenge = a.header("www-authenticate").expect("challenge");
        assert!(
            challenge.contains(r#"error="insufficient_user_authentication""#)
                && challenge.contains(r#"acr_values="mfa phr""#)
                && !challenge.contains("max_age"),
            "{challenge}"
        );
    }
    assert_eq!(
        failures(&app, "strong", "insufficient_user_authentication"),
        2
    );
}

#[tokio::test]
async fn a_route_with_both_names_both_in_its_challenge() {
    let (_app, addr, _d) = app(STEP_UP, &echo().await).await;
    let ok = token("ES256", &with(json!({"acr": "mfa", "auth_time": now()})));
    assert_eq!(client::get(addr, "/both", Some(&ok)).await.status, 200);
    // Only acr falls short; the challenge still asks for everything the route needs, so one
    // new login is enough.
    let weak = token("ES256", &with(json!({"acr": "pwd", "auth_time": now()})));
    let a = client::get(addr, "/both", Some(&weak)).await;
    assert_eq!(a.status, 401);
    let challenge = a.header("www-authenticate").expect("challenge");
    assert!(
        challenge.contains(r#"max_age="60""#) && challenge.contains(r#"acr_values="mfa""#),
        "{challenge}"
    );
}

#[tokio::test]
async fn auth_time_ages_while_the_token_sits_in_the_verified_token_cache() {
    let (app, addr, _d) = app(
        r#"
[[route]]
name = "recent"
path_prefix = "/"
upstream = "{upstream}"
auth = "required"
max_auth_age = "1s"
"#,
        &echo().await,
    )
    .await;
    // auth_time such that the token passes now (1 s + 30 s leeway) and fails a few seconds
    // later, while it is still cached (exp is minutes away).
    let t = token("ES256", &with(json!({"auth_time": now() - 30})));
    assert_eq!(client::get(addr, "/", Some(&t)).await.status, 200);
    let mut refused = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let a = client::get(addr, "/", Some(&t)).await;
        if a.status == 401 {
            assert!(a
                .header("www-authenticate")
                .is_some_and(|c| c.contains("insufficient_user_authentication")));
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "the cached token was never refused as its auth_time aged"
    );
    assert!(
        app.metrics.token_cache.with_label_values(&["hit"]).get() >= 1,
        "the later requests were cache hits"
    );
}

#[tokio::test]
async fn step_up_settings_are_refused_on_routes_that_check_no_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        r#"
[listen]
addr = "127.0.0.1:0"

[[route]]
name = "open"
path_prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "none"
max_auth_age = "5m"
acr_values = []
one_time = true
response_headers = { "Set-Cookie" = "a=b", "X-Ok" = "yes", "Content-Length" = "3" }

[anomaly]
max_addresses = 0
action = "block"
"#,
    )
    .expect("write");
    let e = jwtgate::Config::load(&path)
        .expect_err("refused")
        .to_string();
    for needle in [
        "max_auth_age has no effect",
        "acr_values must not be empty",
        "one_time has no effect",
        "cannot set \"Set-Cookie\"",
        "cannot set \"Content-Length\"",
        "anomaly.max_addresses must be between 1",
        "anomaly.action \"block\"",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    assert!(!e.contains("X-Ok"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// response_headers

const SECURITY: &str = r#"
[[route]]
name = "app"
path_prefix = "/app"
upstream = "{upstream}"
auth = "required"
require = { scope = "app" }
[route.response_headers]
"Strict-Transport-Security" = "max-age=31536000"
"Content-Security-Policy" = "default-src 'self'"
"X-Content-Type-Options" = "nosniff"
"#;

/// An upstream that answers every request 200 with its own security headers, which the
/// route's `response_headers` must replace.
async fn opinionated_upstream() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\
                          strict-transport-security: max-age=0\r\n\
                          content-security-policy: default-src *\r\n\
                          content-security-policy: script-src 'unsafe-inline'\r\n\
                          x-upstream: kept\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn assert_security_headers(a: &Answer, what: &str) {
    assert_eq!(
        a.headers
            .get_all("strict-transport-security")
            .iter()
            .collect::<Vec<_>>(),
        ["max-age=31536000"],
        "{what}"
    );
    assert_eq!(
        a.headers
            .get_all("content-security-policy")
            .iter()
            .collect::<Vec<_>>(),
        ["default-src 'self'"],
        "{what}"
    );
    assert_eq!(
        a.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

#[tokio::test]
async fn response_headers_are_on_every_answer_of_the_route_and_on_no_other() {
    let (_app, addr, _d) = app(SECURITY, &echo().await).await;
    let ok = token("ES256", &with(json!({"scope": "app"})));
    let a = client::get(addr, "/app/x", Some(&ok)).await;
    assert_eq!(a.status, 200);
    assert_security_headers(&a, "200 from the upstream");
    let a = client::get(addr, "/app/x", None).await;
    assert_eq!(a.status, 401);
    assert_security_headers(&a, "the gateway's 401");
    let a = client::get(addr, "/app/x", Some(&token("ES256", &claims()))).await;
    assert_eq!(a.status, 403);
    assert_security_headers(&a, "the gateway's 403");
    // A request refused before a route is chosen gets none.
    let a = client::get(addr, "/elsewhere", Some(&ok)).await;
    assert_eq!(a.status, 404);
    for h in [
        "strict-transport-security",
        "content-security-policy",
        "x-content-type-options",
    ] {
        assert!(a.headers.get(h).is_none(), "404 carries {h}");
    }
    // The upstream never sees them: they are answer headers.
    let a = client::get(addr, "/app/x", Some(&ok)).await;
    assert!(a.upstream_header("strict-transport-security").is_empty());
}

#[tokio::test]
async fn response_headers_replace_the_upstreams_values() {
    let (_app, addr, _d) = app(SECURITY, &opinionated_upstream().await).await;
    let ok = token("ES256", &with(json!({"scope": "app"})));
    let a = client::get(addr, "/app/x", Some(&ok)).await;
    assert_eq!(a.status, 200);
    assert_security_headers(&a, "the upstream's answer");
    assert_eq!(a.header("x-upstream"), Some("kept"));
}

#[tokio::test]
async fn response_headers_are_on_the_step_up_challenge_and_the_upstream_errors() {
    let (_app, addr, _d) = app(
        r#"
[[route]]
name = "app"
path_prefix = "/app"
upstream = "http://127.0.0.1:9"
auth = "required"
max_auth_age = "5m"
response_headers = { "Strict-Transport-Security" = "max-age=31536000", "Content-Security-Policy" = "default-src 'self'", "X-Content-Type-Options" = "nosniff" }
"#,
        "",
    )
    .await;
    let a = client::get(addr, "/app", Some(&token("ES256", &claims()))).await;
    assert_eq!(a.status, 401);
    assert_security_headers(&a, "the step-up challenge");
    // Port 9 (discard) refuses: the gateway's own 502.
    let fresh = token("ES256", &with(json!({"auth_time": now()})));
    let a = client::get(addr, "/app", Some(&fresh)).await;
    assert_eq!(a.status, 502);
    assert_security_headers(&a, "the gateway's 502");
}

#[tokio::test]
async fn explain_and_config_show_the_settings() {
    let up = echo().await;
    let (app, _addr, dir) = app(
        &format!(
            "{STEP_UP}{}\n[anomaly]\nmax_addresses = 2\naction = \"refuse\"\n",
            SECURITY.replace("name = \"app\"", "name = \"app\"\none_time = true")
        ),
        &up,
    )
    .await;
    let snap = app.state.load();
    let running = jwtgate::admin::RestartOnly::of(&snap.config);
    let cfg = jwtgate::admin::effective_config(&snap.config, &running);
    let route = |name: &str| {
        cfg["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .cloned()
            .expect("route")
    };
    assert_eq!(route("recent")["max_auth_age"], "5m");
    assert_eq!(route("strong")["acr_values"], json!(["mfa", "phr"]));
    assert_eq!(route("app")["one_time"], true);
    assert_eq!(
        route("app")["response_headers"]["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(
        cfg["anomaly"],
        json!({"max_addresses": 2, "window": "10m", "action": "refuse"})
    );

    let old = token("ES256", &with(json!({"auth_time": now() - 3600})));
    let r = jwtgate::explain::explain(&snap, Some(&old), &http::Method::GET, "gw.test", "/recent")
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.outcome.contains("insufficient_user_authentication"),
        "{}",
        r.outcome
    );
    let step = r.steps.iter().find(|s| s.step == "step-up").expect("step");
    assert_eq!(step.result, "fail");
    assert!(step.detail.contains("auth_time"), "{}", step.detail);
    assert!(r
        .steps
        .iter()
        .any(|s| s.step == "anomaly" && s.detail.contains("max_addresses = 2")));

    let no_jti = token("ES256", &with(json!({"scope": "app"})));
    let r = jwtgate::explain::explain(&snap, Some(&no_jti), &http::Method::GET, "gw.test", "/app")
        .await;
    assert_eq!(r.status, 401);
    assert!(r.outcome.contains("insufficient_claims"), "{}", r.outcome);
    assert!(r
        .response_headers
        .iter()
        .any(|(n, v)| n == "x-content-type-options" && v == "nosniff"));
    let text = jwtgate::explain::render_text(&r);
    assert!(text.contains("response headers"), "{text}");
    drop(dir);
}

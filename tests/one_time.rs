//! SPEC "Step-up, one-time tokens, theft signals, security headers", the `one_time` part: each
//! `jti` of an issuer passes once, on any `one_time` route, in memory on one gateway and
//! through a real redis-server across two replicas; a token without `jti` is refused; while
//! Redis is down `one_time` routes answer 503 and others keep serving.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A second issuer with the same keys: the same `jti` from it is another token.
const OTHER_ISS: &str = "https://other.test/";

fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"{extra}
{}
[[issuer]]
name = "other"
issuer = "{OTHER_ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
jwks_file = "jwks.json"

[[route]]
name = "approve"
path_prefix = "/approve"
upstream = "{upstream}"
auth = "required"
one_time = true

[[route]]
name = "pay"
path_prefix = "/pay"
upstream = "{upstream}"
auth = "required"
one_time = true
max_auth_age = "5m"

[[route]]
name = "read"
path_prefix = "/"
upstream = "{upstream}"
auth = "required"
"#,
        default_issuer()
    )
}

fn with_jti(jti: &str) -> String {
    let mut c = claims();
    c["jti"] = json!(jti);
    c["auth_time"] = json!(now());
    token("ES256", &c)
}

fn failures(app: &jwtgate::App, route: &str, reason: &str) -> u64 {
    app.metrics
        .auth_failures
        .with_label_values(&[route, reason])
        .get()
}

#[tokio::test]
async fn each_jti_passes_once_on_any_one_time_route() {
    let up = app::echo_url().await;
    let gw = app::start(&config(&up, "")).await;
    let t = with_jti("approval-1");
    // A plain route does not use the token up.
    assert_eq!(client::get(gw.addr, "/read", Some(&t)).await.status, 200);
    assert_eq!(client::get(gw.addr, "/approve", Some(&t)).await.status, 200);
    let again = client::get(gw.addr, "/approve", Some(&t)).await;
    assert_eq!(again.status, 401);
    assert!(again
        .header("www-authenticate")
        .is_some_and(|c| c.contains(r#"error="invalid_token""#) && c.contains("used before")));
    // Another one_time route of the same issuer knows it too.
    assert_eq!(client::get(gw.addr, "/pay", Some(&t)).await.status, 401);
    assert_eq!(failures(&gw.app, "approve", "replayed"), 1);
    assert_eq!(failures(&gw.app, "pay", "replayed"), 1);
    // The same jti from another issuer is another token.
    let mut c = claims();
    c["iss"] = json!(OTHER_ISS);
    c["jti"] = json!("approval-1");
    let other = token("ES256", &c);
    assert_eq!(
        client::get(gw.addr, "/approve", Some(&other)).await.status,
        200
    );
}

#[tokio::test]
async fn a_token_without_jti_is_refused_and_a_refused_token_keeps_its_jti() {
    let up = app::echo_url().await;
    let gw = app::start(&config(&up, "")).await;
    let a = client::get(gw.addr, "/approve", Some(&token("ES256", &claims()))).await;
    assert_eq!(a.status, 401);
    assert!(a.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("no jti")));
    assert_eq!(failures(&gw.app, "approve", "insufficient_claims"), 1);
    // Refused by step-up, which runs first: the jti is not used up, so the same token still
    // passes once on a one_time route without step-up.
    let mut c = claims();
    c["jti"] = json!("old-login");
    c["auth_time"] = json!(now() - 3600);
    let old = token("ES256", &c);
    assert_eq!(client::get(gw.addr, "/pay", Some(&old)).await.status, 401);
    assert_eq!(
        failures(&gw.app, "pay", "insufficient_user_authentication"),
        1
    );
    assert_eq!(
        client::get(gw.addr, "/approve", Some(&old)).await.status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Two replicas on one real Redis

/// Polls `f` until it returns true, for at most 10 s.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn replicas_share_used_jtis_through_redis_and_refuse_while_it_is_down() {
    let mut redis = redis_server::RedisServer::start();
    let up = app::echo_url().await;
    let extra = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let a = app::start(&config(&up, &extra)).await;
    let b = app::start(&config(&up, &extra)).await;

    let t = with_jti("shared-approval");
    assert_eq!(client::get(a.addr, "/approve", Some(&t)).await.status, 200);
    // Replica b never saw it, and refuses it all the same.
    assert_eq!(client::get(b.addr, "/approve", Some(&t)).await.status, 401);
    assert_eq!(failures(&b.app, "approve", "replayed"), 1);
    let t2 = with_jti("second");
    assert_eq!(client::get(b.addr, "/pay", Some(&t2)).await.status, 200);
    assert_eq!(client::get(a.addr, "/approve", Some(&t2)).await.status, 401);

    redis.kill();
    let t3 = with_jti("while-down");
    let down = client::get(a.addr, "/approve", Some(&t3)).await;
    assert_eq!(down.status, 503, "{}", down.body);
    let retry: u64 = down
        .header("retry-after")
        .and_then(|r| r.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(retry >= 1);
    assert_eq!(down.json()["error"], "temporarily_unavailable");
    // Routes that do not need Redis keep serving.
    assert_eq!(client::get(a.addr, "/read", Some(&t3)).await.status, 200);
    // Nor may the token pass on the other replica.
    assert_eq!(client::get(b.addr, "/approve", Some(&t3)).await.status, 503);

    redis.restart();
    // Back: the token that could not be checked passes once, and the ones used before the
    // outage are still used (Redis persisted them).
    until("the replica using Redis again", async || {
        client::get(a.addr, "/approve", Some(&t3)).await.status == 200
    })
    .await;
    assert_eq!(client::get(b.addr, "/approve", Some(&t3)).await.status, 401);
    assert_eq!(client::get(b.addr, "/approve", Some(&t)).await.status, 401);
}

//! `[route.rate_limit]` (SPEC "CORS and rate limits"): GCRA per claim or JSON Pointer, by
//! client address without a valid token (forwarded only from trusted proxies), 429 with
//! `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` headers, the metric.

mod common;

use common::edge::EdgeGateway;
use serde_json::json;

/// One route `api` limited by `key` to `burst` at once, refilled once an hour (so nothing
/// refills during a test); `trusted` adds `trusted_proxies`.
fn config(key: &str, burst: u32, trusted: bool) -> String {
    let trusted = if trusted {
        "trusted_proxies = [\"127.0.0.1/32\"]\n"
    } else {
        ""
    };
    format!(
        r#"{trusted}[admin]
addr = "127.0.0.1:0"
{issuer}
[[route]]
name = "api"
path_prefix = "/api"
upstream = "{{upstream}}"
auth = "optional"
[route.rate_limit]
key = "{key}"
rate = "1/h"
burst = {burst}

[[route]]
name = "free"
path_prefix = "/free"
upstream = "{{upstream}}"
auth = "none"
"#,
        issuer = common::default_issuer()
    )
}

async fn gateway(key: &str, burst: u32, trusted: bool) -> (tempfile::TempDir, EdgeGateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let gw = EdgeGateway::start(dir.path(), &config(key, burst, trusted)).await;
    (dir, gw)
}

fn token_for(sub: &str, tenant: &str) -> String {
    let mut c = common::claims();
    c["sub"] = json!(sub);
    c["tenant"] = json!({ "id": tenant });
    common::token("ES256", &c)
}

async fn get(gw: &EdgeGateway, token: Option<&str>, extra: &[(&str, &str)]) -> common::Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        h.push(("authorization", a));
    }
    gw.request("GET", "/api/x", &h).await
}

#[tokio::test]
async fn a_subject_gets_burst_requests_then_429_with_the_ietf_headers() {
    let (_dir, gw) = gateway("sub", 3, false).await;
    let alice = token_for("alice", "t1");
    for _ in 0..3 {
        assert_eq!(get(&gw, Some(&alice), &[]).await.status, 200);
    }
    let limited = get(&gw, Some(&alice), &[]).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"], "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|r| r.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"api\";q=3;w=10800")
    );
    assert_eq!(
        limited.header("ratelimit"),
        Some(format!("\"api\";r=0;t={retry}").as_str())
    );
    // Another subject has its own bucket; a route without a limit is not limited.
    assert_eq!(
        get(&gw, Some(&token_for("bob", "t1")), &[]).await.status,
        200
    );
    for _ in 0..5 {
        assert_eq!(gw.request("GET", "/free", &[]).await.status, 200);
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        common::metrics::metric(&metrics, "jwtgate_rate_limited_total", &[("route", "api")]),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_json_pointer_key_shares_a_bucket_across_subjects() {
    let (_dir, gw) = gateway("/tenant/id", 2, false).await;
    assert_eq!(
        get(&gw, Some(&token_for("alice", "acme")), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&gw, Some(&token_for("bob", "acme")), &[]).await.status,
        200
    );
    assert_eq!(
        get(&gw, Some(&token_for("carol", "acme")), &[])
            .await
            .status,
        429
    );
    assert_eq!(
        get(&gw, Some(&token_for("dave", "globex")), &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn without_a_valid_token_requests_are_limited_by_client_address() {
    let (_dir, gw) = gateway("sub", 2, false).await;
    // Failed attempts count: a bad token is limited by address, then 429 instead of 401.
    assert_eq!(get(&gw, None, &[]).await.status, 200);
    assert_eq!(get(&gw, Some("not-a-token"), &[]).await.status, 401);
    let limited = get(&gw, Some("not-a-token"), &[]).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    // The client's X-Forwarded-For is not believed from an untrusted peer.
    assert_eq!(
        get(&gw, None, &[("x-forwarded-for", "203.0.113.9")])
            .await
            .status,
        429
    );
    // A valid token is keyed by its subject, not by the address.
    assert_eq!(
        get(&gw, Some(&token_for("alice", "t")), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_key() {
    let (_dir, gw) = gateway("sub", 1, true).await;
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(get(&gw, None, &a).await.status, 200);
    assert_eq!(get(&gw, None, &a).await.status, 429);
    assert_eq!(get(&gw, None, &b).await.status, 200);
}

#[tokio::test]
async fn a_reload_keeps_the_buckets_of_an_unchanged_limit() {
    let (_dir, gw) = gateway("sub", 1, false).await;
    let alice = token_for("alice", "t");
    assert_eq!(get(&gw, Some(&alice), &[]).await.status, 200);
    assert_eq!(get(&gw, Some(&alice), &[]).await.status, 429);
    gw.reload(&config("sub", 1, false));
    assert_eq!(get(&gw, Some(&alice), &[]).await.status, 429, "state kept");
    gw.reload(&config("sub", 2, false));
    assert_eq!(
        get(&gw, Some(&alice), &[]).await.status,
        200,
        "a new limit starts afresh"
    );
}

#[tokio::test]
async fn bad_rate_limit_and_cors_config_is_refused_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let text = format!(
        r#"[listen]
addr = "127.0.0.1:0"
{}
[[route]]
name = "a"
path_prefix = "/"
upstream = "http://127.0.0.1:1"
auth = "required"
[route.rate_limit]
rate = "100/d"
burst = 0
[route.cors]
allow_origins = ["*", "https://app.example.com/"]
allow_credentials = true
"#,
        common::default_issuer()
    );
    std::fs::write(&path, text).expect("write");
    let errors = jwtgate::Config::load(&path)
        .expect_err("refused")
        .to_string();
    for needle in [
        "rate_limit.rate \"100/d\"",
        "cannot be used with allow_credentials",
        "must not have a path",
    ] {
        assert!(errors.contains(needle), "{needle}: {errors}");
    }
    assert!(
        errors.lines().all(|l| common::is_located(l, &path)),
        "{errors}"
    );
}

/// Two replicas' config: `api` limited by `sub` to `burst`, state in the Redis at `url`.
fn shared_config(url: &str, burst: u32) -> String {
    format!("[redis]\nurl = \"{url}\"\n{}", config("sub", burst, false))
}

async fn replica(dir: &std::path::Path, url: &str, burst: u32) -> EdgeGateway {
    common::write_keys(dir);
    EdgeGateway::start(dir, &shared_config(url, burst)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_limit_through_redis() {
    let redis = common::redis_server::RedisServer::start();
    let (d1, d2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let one = replica(d1.path(), &redis.url(), 3).await;
    let two = replica(d2.path(), &redis.url(), 3).await;
    let alice = token_for("alice", "t");
    assert_eq!(get(&one, Some(&alice), &[]).await.status, 200);
    assert_eq!(get(&two, Some(&alice), &[]).await.status, 200);
    assert_eq!(get(&one, Some(&alice), &[]).await.status, 200);
    // The burst of 3 is spent across both replicas.
    for gw in [&two, &one] {
        let limited = get(gw, Some(&alice), &[]).await;
        assert_eq!(limited.status, 429, "{}", limited.body);
        assert_eq!(
            limited.header("ratelimit-policy"),
            Some("\"api\";q=3;w=10800")
        );
        assert!(limited.header("retry-after").is_some());
    }
    assert_eq!(
        get(&two, Some(&token_for("bob", "t")), &[]).await.status,
        200
    );
    let mut c = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("jwtgate:ratelimit:*")
        .query(&mut c)
        .expect("KEYS");
    assert!(
        keys.contains(&"jwtgate:ratelimit:api:c:alice".to_owned()),
        "{keys:?}"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg("jwtgate:ratelimit:api:c:alice")
        .query(&mut c)
        .expect("PTTL");
    assert!(ttl > 0, "a bucket expires once full again: {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_replica_falls_back_to_its_own_limit() {
    let mut redis = common::redis_server::RedisServer::start();
    let (d1, d2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let one = replica(d1.path(), &redis.url(), 2).await;
    let two = replica(d2.path(), &redis.url(), 2).await;
    let alice = token_for("alice", "t");
    assert_eq!(get(&one, Some(&alice), &[]).await.status, 200);
    redis.kill();
    // Each replica now counts alone: alice gets a burst of 2 on each (one already spent on
    // `one` went to Redis, not to its memory).
    for gw in [&one, &two] {
        assert_eq!(get(gw, Some(&alice), &[]).await.status, 200);
        assert_eq!(get(gw, Some(&alice), &[]).await.status, 200);
        assert_eq!(get(gw, Some(&alice), &[]).await.status, 429);
    }
    let metrics = one.metrics().await;
    assert!(
        common::metrics::metric_or_zero(
            &metrics,
            "jwtgate_redis_errors_total",
            &[("op", "ratelimit")]
        ) >= 3.0,
        "{metrics}"
    );
}

/// The rate limit is decided before `one_time` uses up a `jti`: a token refused with 429
/// keeps its one use (SPEC: "Step-up, one-time tokens" and "CORS and rate limits").
#[tokio::test]
async fn a_rate_limited_one_time_token_keeps_its_single_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let config = format!(
        r#"[admin]
addr = "127.0.0.1:0"
{issuer}
[[route]]
name = "limited"
path_prefix = "/limited"
upstream = "{{upstream}}"
auth = "required"
one_time = true
[route.rate_limit]
key = "sub"
rate = "1/h"
burst = 1

[[route]]
name = "once"
path_prefix = "/once"
upstream = "{{upstream}}"
auth = "required"
one_time = true
"#,
        issuer = common::default_issuer()
    );
    let gw = EdgeGateway::start(dir.path(), &config).await;
    let with_jti = |jti: &str| {
        let mut c = common::claims();
        c["sub"] = json!("alice");
        c["jti"] = json!(jti);
        format!("Bearer {}", common::token("ES256", &c))
    };
    let (first, second) = (with_jti("jti-1"), with_jti("jti-2"));
    let send = |path: &'static str, auth: String| {
        let gw = &gw;
        async move { gw.request("GET", path, &[("authorization", &auth)]).await }
    };
    assert_eq!(send("/limited/x", first.clone()).await.status, 200);
    let limited = send("/limited/x", second.clone()).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    // Its jti was not used up by the 429: it passes once on the other one_time route.
    assert_eq!(send("/once/x", second.clone()).await.status, 200);
    let replay = send("/once/x", second).await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert!(replay.body.contains("used before"), "{}", replay.body);
    // The first token's use on /limited counted.
    assert_eq!(send("/once/x", first).await.status, 401);
}

//! The shared store (`[redis]`) against a real redis-server: its state in metrics, a password
//! never shown, and the replay cache shared by two replicas, with each "Redis is down" rule.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::metrics::metric;
use common::redis_server::RedisServer;
use jwtgate::metrics::Metrics;
use jwtgate::replay::{ReplayCache, ReplayUnavailable, WhenDown};
use jwtgate::store::Store;

/// The smallest valid config, before its `[redis]` table.
const ROUTE: &str = "[listen]\naddr = \"127.0.0.1:0\"\n[[route]]\nname = \"open\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"none\"\n";

fn redis_config(url: &str) -> jwtgate::config::RedisConfig {
    let text = format!("{ROUTE}[redis]\nurl = \"{url}\"\n");
    jwtgate::Config::parse(std::path::Path::new("gateway.toml"), &text)
        .unwrap_or_else(|e| panic!("config refused:\n{e}"))
        .redis
        .expect("[redis] parsed")
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_up_follows_the_server_and_a_replay_is_caught_by_the_other_replica() {
    let mut redis = RedisServer::start();
    let config = redis_config(&redis.url());
    let (m1, m2) = (Metrics::new(), Metrics::new());
    let (s1, s2) = (
        Store::open(&config, &m1).expect("open"),
        Store::open(&config, &m2).expect("open"),
    );
    let up = |m: &Metrics| metric(&m.render(), "jwtgate_redis_up", &[]);
    eventually("redis up", || up(&m1) == Some(1.0)).await;

    let (r1, r2) = (
        ReplayCache::new(Some(s1.clone())),
        ReplayCache::new(Some(s2.clone())),
    );
    let until = jwtgate::unix_now() as u64 + 60;
    assert!(r1
        .first_use("once:corp", "jti-1", until, WhenDown::Refuse)
        .await
        .expect("redis"));
    assert!(
        !r2.first_use("once:corp", "jti-1", until, WhenDown::Refuse)
            .await
            .expect("redis"),
        "the other replica must see the replay"
    );
    assert!(
        r2.first_use("dpop:corp", "jti-1", until, WhenDown::Local)
            .await
            .expect("redis"),
        "namespaces are separate"
    );
    // Kept in Redis until the id's expiry, under the gateway's prefix.
    let mut c = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("jwtgate:replay:*")
        .query(&mut c)
        .expect("keys");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query(&mut c).expect("ttl");
    assert!((50..=61).contains(&ttl), "ttl {ttl}");

    // Redis down: Refuse fails (503 for the caller), Local decides on memory; errors counted.
    redis.kill();
    let e = r1
        .first_use("once:corp", "jti-2", until, WhenDown::Refuse)
        .await;
    assert!(matches!(e, Err(ReplayUnavailable::Store(_))), "{e:?}");
    assert!(r1
        .first_use("dpop:corp", "jti-3", until, WhenDown::Local)
        .await
        .expect("local"));
    assert!(!r1
        .first_use("dpop:corp", "jti-3", until, WhenDown::Local)
        .await
        .expect("local"));
    eventually("redis down", || up(&m1) == Some(0.0)).await;
    let errors = metric(
        &m1.render(),
        "jwtgate_redis_errors_total",
        &[("op", "replay")],
    );
    assert!(errors.unwrap_or(0.0) >= 1.0, "{}", m1.render());

    // Back with its data (append-only file): the id used before the outage stays used.
    redis.restart();
    eventually("redis up again", || up(&m2) == Some(1.0)).await;
    assert!(!r2
        .first_use("once:corp", "jti-1", until, WhenDown::Refuse)
        .await
        .expect("redis"));
    drop((s1, s2));
}

#[tokio::test]
async fn a_gateway_without_redis_shows_no_redis_series_and_one_with_it_never_shows_the_password() {
    let none = Metrics::new();
    assert!(
        !none.render().contains("jwtgate_redis"),
        "{}",
        none.render()
    );

    let config = redis_config("redis://:s3cret-pass@127.0.0.1:1/0");
    assert!(!format!("{config:?}").contains("s3cret"));
    assert_eq!(config.redacted(), "redis://:***@127.0.0.1:1/0");
    let m = Metrics::new();
    let store: Arc<Store> = Store::open(&config, &m).expect("open is lazy");
    let e = store
        .call::<String>("ping", &redis::cmd("PING"))
        .await
        .expect_err("nothing listens on port 1");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(m.render().contains("jwtgate_redis_up 0"), "{}", m.render());
}

#[test]
fn redis_config_errors_say_what_to_write() {
    let parse = |redis: &str| {
        let text = format!("{ROUTE}[redis]\n{redis}\n");
        jwtgate::Config::parse(std::path::Path::new("gateway.toml"), &text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(parse("url_env = \"JWTGATE_TEST_UNSET_VARIABLE\"")
        .contains("JWTGATE_TEST_UNSET_VARIABLE is not set"));
    assert!(parse("url = \"http://127.0.0.1:6379\"").contains("not a Redis URL"));
    assert!(parse("url = \"redis://a\"\nurl_env = \"X\"").contains("keep one"));
    assert!(parse("").contains("needs url_env"));
    let secret = parse("url = \"https://u:hunter2@h\"");
    assert!(!secret.contains("hunter2"), "{secret}");
}

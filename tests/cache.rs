//! The verified-token cache: hits are counted, and a hit never skips a check that depends on
//! time, the route, or the issuer's current keys.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::net::TcpListener;

const ROUTES: &str = r#"
[[route]]
name = "open"
path_prefix = "/open"
upstream = "{upstream}"
auth = "required"

[[route]]
name = "strict"
path_prefix = "/strict"
upstream = "{upstream}"
auth = "required"
require = { scope = "admin" }
"#;

/// Starts an App on a config file (so reloads and metrics are reachable).
async fn app(
    config: &str,
    upstream: &str,
) -> (Arc<jwtgate::App>, std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    let text =
        format!("[listen]\naddr = \"127.0.0.1:0\"\n{config}").replace("{upstream}", upstream);
    std::fs::write(&path, text).expect("write");
    let app = Arc::new(jwtgate::App::load(&path).expect("config"));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(jwtgate::run(l, app.clone(), std::future::pending::<()>()));
    (app, addr, dir)
}

/// The status of GET `path` with `token`.
async fn status(addr: std::net::SocketAddr, path: &str, token: &str) -> u16 {
    client::get(addr, path, Some(token)).await.status
}

fn counter(app: &jwtgate::App, result: &str) -> u64 {
    app.metrics.token_cache.with_label_values(&[result]).get()
}

async fn echo() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(jwtgate::echo::serve(l, std::future::pending()));
    format!("http://{addr}")
}

#[tokio::test]
async fn a_repeated_token_hits_the_cache() {
    let up = echo().await;
    let (app, addr, _dir) = app(&format!("{}{ROUTES}", default_issuer()), &up).await;
    let t = token("ES256", &claims());
    for _ in 0..3 {
        assert_eq!(status(addr, "/open", &t).await, 200);
    }
    assert_eq!(counter(&app, "miss"), 1);
    assert_eq!(counter(&app, "hit"), 2);
}

#[tokio::test]
async fn a_hit_still_checks_the_routes_requirements() {
    let up = echo().await;
    let (app, addr, _dir) = app(&format!("{}{ROUTES}", default_issuer()), &up).await;
    let t = token("RS256", &claims());
    assert_eq!(status(addr, "/open", &t).await, 200);
    assert_eq!(
        status(addr, "/strict", &t).await,
        403,
        "cached signature, unmet scope"
    );
    assert!(counter(&app, "hit") >= 1);
}

#[tokio::test]
async fn a_hit_never_outlives_the_tokens_exp() {
    let up = echo().await;
    // No leeway, so the token is dead as soon as exp passes.
    let issuer = default_issuer().replace("leeway = \"30s\"", "leeway = \"1s\"");
    let (_app, addr, _dir) = app(&format!("{issuer}{ROUTES}"), &up).await;
    let mut c = claims();
    c["exp"] = (now() + 2).into();
    let t = token("EdDSA", &c);
    assert_eq!(status(addr, "/open", &t).await, 200);
    tokio::time::sleep(Duration::from_millis(3600)).await;
    assert_eq!(status(addr, "/open", &t).await, 401, "expired while cached");
}

#[tokio::test]
async fn a_reload_that_drops_the_key_drops_the_entry() {
    let up = echo().await;
    let config = format!("{}{ROUTES}", default_issuer());
    let (app, addr, dir) = app(&config, &up).await;
    let t = token("HS256", &claims());
    assert_eq!(status(addr, "/open", &t).await, 200);
    assert_eq!(status(addr, "/open", &t).await, 200);
    // Replace the JWKS with one that lacks the HMAC key, then reload.
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("jwks.json")).expect("read"))
            .expect("json");
    let keys: Vec<_> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["kty"] != "oct")
        .cloned()
        .collect();
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::json!({ "keys": keys }).to_string(),
    )
    .expect("write");
    app.reload_config().expect("reload");
    assert_eq!(
        status(addr, "/open", &t).await,
        401,
        "the key that verified it is gone"
    );
}

#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let up = echo().await;
    let config = format!(
        "[limits]\ntoken_cache_entries = 0\n{}{ROUTES}",
        default_issuer()
    );
    let (app, addr, _dir) = app(&config, &up).await;
    let t = token("ES384", &claims());
    assert_eq!(status(addr, "/open", &t).await, 200);
    assert_eq!(status(addr, "/open", &t).await, 200);
    assert_eq!(counter(&app, "hit") + counter(&app, "miss"), 0);
}

//! SPEC "Step-up, one-time tokens, theft signals, security headers", the `[anomaly]` part: a
//! token used from more distinct client addresses than `max_addresses` within the window is
//! counted per issuer, logged once with its `jti` and `sub` (never the token), and refused with
//! `action = "refuse"` from the crossing request on. Clients connect from 127.0.0.2, .3, ...
//! (the whole 127.0.0.0/8 is loopback on Linux), or through a trusted proxy.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

/// Starts an App on the default issuer, `listen_extra` in `[listen]` and `config`, before an
/// echo upstream.
async fn app(
    listen_extra: &str,
    config: &str,
) -> (Arc<jwtgate::App>, SocketAddr, tempfile::TempDir) {
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{listen_extra}\n{}{config}",
        default_issuer()
    );
    let r = app::start(&text.replace("{upstream}", &app::echo_url().await)).await;
    (r.app, r.addr, r.dir)
}

/// GET `path` with `token`, from the local address `from`, with extra `headers`.
async fn get_from(
    addr: SocketAddr,
    from: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(from.parse::<IpAddr>().expect("address")));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut b = http::Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let res = tokio::time::timeout(
        client::ANSWER_WITHIN,
        client.request(b.body(Empty::new()).expect("request")),
    )
    .await
    .expect("answer in time")
    .unwrap_or_else(|e| panic!("GET from {from}: {e:?}"));
    client::read_answer(res, "GET").await.expect("answer")
}

const ROUTES: &str = r#"
[[route]]
name = "api"
path_prefix = "/"
upstream = "{upstream}"
auth = "required"
"#;

fn token_with_jti(jti: &str) -> String {
    let mut c = claims();
    c["jti"] = json!(jti);
    token("ES256", &c)
}

fn anomalies(app: &jwtgate::App) -> u64 {
    app.metrics
        .token_anomalies
        .with_label_values(&["test"])
        .get()
}

#[tokio::test]
async fn refuse_stops_a_token_from_the_crossing_request_on() {
    let (app, addr, _d) = app(
        "",
        &format!("{ROUTES}\n[anomaly]\nmax_addresses = 2\nwindow = \"10m\"\naction = \"refuse\"\n"),
    )
    .await;
    assert_eq!(anomalies(&app), 0, "the series exists from the start");
    let t = token_with_jti("stolen-1");
    assert_eq!(get_from(addr, "127.0.0.2", "/", &t, &[]).await.status, 200);
    assert_eq!(get_from(addr, "127.0.0.3", "/", &t, &[]).await.status, 200);
    assert_eq!(get_from(addr, "127.0.0.2", "/", &t, &[]).await.status, 200);
    let a = get_from(addr, "127.0.0.4", "/", &t, &[]).await;
    assert_eq!(a.status, 401, "the third address crosses max_addresses = 2");
    assert!(a
        .header("www-authenticate")
        .is_some_and(|c| c.contains(r#"error="invalid_token""#)));
    // From then on the token is refused everywhere, its first address included.
    assert_eq!(get_from(addr, "127.0.0.2", "/", &t, &[]).await.status, 401);
    assert_eq!(anomalies(&app), 1, "one signal per token");
    assert_eq!(
        app.metrics
            .auth_failures
            .with_label_values(&["api", "anomaly"])
            .get(),
        2
    );
    // Another token of the same user, from one place, is not affected.
    let other = token_with_jti("fresh-2");
    assert_eq!(
        get_from(addr, "127.0.0.2", "/", &other, &[]).await.status,
        200
    );
}

#[tokio::test]
async fn log_counts_once_and_lets_the_token_pass() {
    let (app, addr, _d) = app("", &format!("{ROUTES}\n[anomaly]\nmax_addresses = 1\n")).await;
    let t = token_with_jti("shared");
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        assert_eq!(get_from(addr, from, "/", &t, &[]).await.status, 200);
    }
    assert_eq!(anomalies(&app), 1);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let (app, addr, _d) = app(
        "trusted_proxies = [\"127.0.0.10\"]",
        &format!("{ROUTES}\n[anomaly]\nmax_addresses = 2\naction = \"refuse\"\n"),
    )
    .await;
    // An untrusted client's X-Forwarded-For is ignored: one address, however many it claims.
    let t = token_with_jti("direct");
    for fake in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let a = get_from(addr, "127.0.0.2", "/", &t, &[("x-forwarded-for", fake)]).await;
        assert_eq!(a.status, 200);
    }
    // Through the trusted proxy, the forwarded client address is the one that counts.
    let t = token_with_jti("proxied");
    for fake in ["203.0.113.1", "203.0.113.2"] {
        let a = get_from(addr, "127.0.0.10", "/", &t, &[("x-forwarded-for", fake)]).await;
        assert_eq!(a.status, 200);
    }
    let a = get_from(
        addr,
        "127.0.0.10",
        "/",
        &t,
        &[("x-forwarded-for", "203.0.113.3")],
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(anomalies(&app), 1);
}

#[tokio::test]
async fn the_signal_is_logged_once_with_jti_and_sub_and_never_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let (upstream, _stop) = echo_upstream().await;
    let (stdout, stderr) = (dir.path().join("out.log"), dir.path().join("err.log"));
    let mut started = None;
    for _attempt in 0..5 {
        let port = free_port();
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\naddr = \"127.0.0.1:{port}\"\n{}{}\n[anomaly]\nmax_addresses = 2\n",
                default_issuer(),
                ROUTES.replace("{upstream}", &format!("http://{upstream}"))
            ),
        )
        .expect("write");
        let child = spawn_run(dir.path(), &config, &stdout, &stderr, |c| {
            c.env_remove("JWTGATE_LOG").env_remove("JWTGATE_LOG_FORMAT");
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && client::try_get(addr, "/", None).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if client::try_get(addr, "/", None).await.is_ok() {
            started = Some((child, addr));
            break;
        }
    }
    let (_child, addr) = started.unwrap_or_else(|| {
        panic!(
            "jwtgate run did not start:\n{}",
            output_of(&stdout, &stderr)
        )
    });
    let mut c = claims();
    c["jti"] = json!("jti-of-the-stolen-token");
    c["sub"] = json!("mallory-victim");
    let t = token("ES256", &c);
    for from in [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ] {
        assert_eq!(get_from(addr, from, "/", &t, &[]).await.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let signal = |out: &str| {
        out.lines()
            .filter(|l| l.contains("jti-of-the-stolen-token") && l.contains("max_addresses"))
            .count()
    };
    let mut out = output_of(&stdout, &stderr);
    while signal(&out) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        out = output_of(&stdout, &stderr);
    }
    assert_eq!(signal(&out), 1, "logged once per token:\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains("jti-of-the-stolen-token"))
        .unwrap_or_default();
    assert!(line.contains("mallory-victim"), "{line}");
    assert!(
        line.contains("127.0.0.4"),
        "the addresses are listed: {line}"
    );
    assert!(!out.contains(&t), "the token appears in the output");
    let sig = t.rsplit('.').next().unwrap_or_default();
    assert!(
        !out.contains(sig),
        "the token's signature appears in the output"
    );
}

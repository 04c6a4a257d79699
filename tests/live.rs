//! Live keys and live config: remote JWKS issuers (fetch at start, rotation on an unknown kid,
//! refresh and `max-age`, outages at start and later, bogus-kid floods, discovery, `oct` keys),
//! config reloads (in place, by rename, Kubernetes `..data` symlink flip, invalid files, on
//! request, remote keys kept), a bounded load test with rotation and reloads running together,
//! and draining (through the library and through the binary's signals).
//!
//! A full gateway is run through `jwtgate::App` with its own listeners on 127.0.0.1:0, so the
//! admin endpoints (`/readyz`) and the file watcher are live. The JWKS provider of
//! `tests/common/jwks.rs` serves a key set that tests swap at runtime, counts fetches, can fail
//! (503), answer slowly, and set `Cache-Control`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{try_get_url, HttpClient};
use common::jwks::{jwks_of, jwks_url, Provider, Signer};
use common::metrics::metric_or_zero;
use common::{b64, claims, eventually, free_port, write_keys, Answer, AUD, ISS};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jwtgate::App;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// A full gateway through the library: App::load + serve with our own listeners

/// The echo upstream.
struct Upstream {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn upstream() -> Upstream {
    let (addr, stop) = common::echo_upstream().await;
    Upstream { addr, _stop: stop }
}

/// A config file's text: `[listen]` added, `{upstream}` replaced.
fn render(upstream: SocketAddr, body: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n{}",
        body.replace("{upstream}", &format!("http://{upstream}"))
    )
}

/// An issuer named `remote` for the default `iss`/`aud`, ES256 only, with `source` (a
/// `jwks_url = ...` or `discovery_url = ...` line) and `extra` lines (refresh, ...).
fn remote_issuer(source: &str, extra: &str) -> String {
    format!(
        r#"
[[issuer]]
name = "remote"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
{source}
{extra}
"#
    )
}

/// A `required` route `/` named `main` to the echo upstream, forwarding `sub` as `header`.
fn main_route(header: &str) -> String {
    format!(
        r#"
[[route]]
name = "main"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"{header}" = "sub"
"#
    )
}

/// A running gateway with its admin listener and an echo upstream.
struct Gw {
    dir: tempfile::TempDir,
    config: PathBuf,
    app: Arc<App>,
    addr: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    client: HttpClient,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
    _upstream: Upstream,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a gateway on `body` (see [`render`]) in a temp dir that also holds the harness's key
/// files (`jwks.json`, `rsa.pem`, ...).
async fn start_gw(body: &str) -> Gw {
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, render(up.addr, body)).expect("write config");
    launch(dir, config, up).await
}

/// Loads `config` (already written) with `App::load` and serves it.
async fn launch(dir: tempfile::TempDir, config: PathBuf, up: Upstream) -> Gw {
    let app = match App::load(&config) {
        Ok(app) => Arc::new(app),
        Err(e) => panic!("config refused:\n{e}"),
    };
    let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (addr, admin_addr) = (
        traffic.local_addr().expect("addr"),
        admin.local_addr().expect("addr"),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(jwtgate::run(
        jwtgate::Listeners {
            traffic,
            admin: Some(admin),
        },
        app.clone(),
        async move {
            let _ = stopped.await;
            Duration::from_secs(10)
        },
    ));
    Gw {
        dir,
        config,
        app,
        addr,
        admin: admin_addr,
        upstream: up.addr,
        client: common::client::new(),
        stop: Some(stop),
        served: Some(served),
        _upstream: up,
    }
}

impl Gw {
    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        try_get_url(&self.client, &format!("http://{}{path}", self.addr), token)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn readyz(&self) -> u16 {
        try_get_url(&self.client, &format!("http://{}/readyz", self.admin), None)
            .await
            .unwrap_or_else(|e| panic!("admin: {e}"))
            .status
    }

    fn metrics(&self) -> String {
        self.app.metrics.render()
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_or_zero(&self.metrics(), name, labels)
    }

    async fn wait_ready(&self, limit: Duration) {
        eventually(limit, "/readyz 200", move || async move {
            match self.readyz().await {
                200 => Ok(()),
                s => Err(format!("/readyz {s}")),
            }
        })
        .await;
    }

    /// Rewrites the config file in place with `body`.
    fn write_config(&self, body: &str) {
        std::fs::write(&self.config, render(self.upstream, body)).expect("rewrite config");
    }

    /// Replaces the config file by writing a temporary file and renaming it over.
    fn replace_config(&self, body: &str) {
        let tmp = self.dir.path().join(".gateway.toml.tmp");
        std::fs::write(&tmp, render(self.upstream, body)).expect("write tmp");
        std::fs::rename(&tmp, &self.config).expect("rename over config");
    }

    /// Polls with `token` until the upstream receives `header: alice`; every answer is a 200.
    async fn wait_header(&self, token: &str, header: &str, limit: Duration) -> Answer {
        eventually(
            limit,
            &format!("claim header {header}"),
            move || async move {
                let a = self.get("/", Some(token)).await;
                assert_eq!(
                    a.status, 200,
                    "every answer during a reload is 200: {}",
                    a.body
                );
                if a.upstream_header(header) == ["alice"] {
                    Ok(a)
                } else {
                    Err(a.body)
                }
            },
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Asserts a gateway error answer: status, JSON `error`, and that the token is not echoed.
fn assert_error(a: &Answer, status: u16, error: &str, token: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.json()["error"], error, "{}", a.body);
    assert!(
        !a.body.contains(token),
        "the token is never echoed: {}",
        a.body
    );
    assert!(
        a.json().get("headers").is_none(),
        "the gateway answered, not the upstream: {}",
        a.body
    );
}

fn retry_after(a: &Answer) -> u64 {
    a.header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {:?} {}", a.headers, a.body))
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After is not whole seconds ({e}): {:?}", a.headers))
}

// ---------------------------------------------------------------------------------------------
// 1. JWKS URL issuer, provider up at start

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_keys_are_fetched_at_start_and_a_valid_token_passes() {
    let a = Signer::new("a");
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), ""),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    assert!(p.fetches() >= 1, "the provider was asked for its keys");

    let r = gw.get("/hello", Some(&a.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-sub"), ["alice"], "{}", r.body);
    assert!(r.upstream_header("authorization").is_empty(), "{}", r.body);

    let r = gw.get("/hello", None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"jwtgate\"")
    );

    let m = gw.metrics();
    assert_eq!(
        metric_or_zero(&m, "jwtgate_keys_loaded", &[("issuer", "remote")]),
        1.0,
        "{m}"
    );
    assert!(
        metric_or_zero(
            &m,
            "jwtgate_key_refresh_total",
            &[("issuer", "remote"), ("result", "success")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_or_zero(
            &m,
            "jwtgate_key_refresh_last_success_timestamp_seconds",
            &[("issuer", "remote")]
        ) > 0.0,
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Rotation picked up on an unknown kid

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_to_a_new_kid_is_answered_200_on_first_try_with_one_fetch() {
    let (a, b) = (Signer::new("a"), Signer::new("b"));
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), ""),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let r = gw.get("/", Some(&a.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let before = p.fetches();
    p.set_jwks(jwks_of(&[&a, &b]));
    // The first request with the new kid waits for the refetch instead of failing.
    let r = gw.get("/", Some(&b.token())).await;
    assert_eq!(r.status, 200, "a rotation never costs a 401: {}", r.body);
    assert_eq!(r.upstream_header("x-auth-sub"), ["alice"], "{}", r.body);
    assert_eq!(
        p.fetches(),
        before + 1,
        "exactly one refetch for the unknown kid"
    );
    // Now known: no further fetch, and the old key still works.
    let r = gw.get("/", Some(&b.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw.get("/", Some(&a.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(p.fetches(), before + 1, "known kids cost no fetch");
    assert_eq!(
        gw.metric("jwtgate_auth_failures_total", &[("reason", "unknown_key")]),
        0.0
    );
}

/// The refetch a request waits for must be one that began after the request: a fetch already
/// in flight (which read the provider's old key set) must not answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_during_an_in_flight_fetch_still_costs_no_401() {
    let (a, b) = (Signer::new("a"), Signer::new("b"));
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), ""),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let before = p.fetches();

    // A slow provider: a fetch starts (triggered by some bogus kid) and reads the old set.
    p.s.delay_ms.store(800, SeqCst);
    let bogus = a.token_with_kid("bogus");
    let (client, addr) = (gw.client.clone(), gw.addr);
    let slow = tokio::spawn(async move {
        try_get_url(&client, &format!("http://{addr}/"), Some(&bogus)).await
    });
    let p_ref = &p;
    eventually(
        Duration::from_secs(3),
        "the refetch reaching the provider",
        move || async move {
            if p_ref.fetches() > before {
                Ok(())
            } else {
                Err(format!("{} fetches", p_ref.fetches()))
            }
        },
    )
    .await;

    // The provider rotates while that fetch is still in flight; a token for the new key comes.
    p.set_jwks(jwks_of(&[&a, &b]));
    p.s.delay_ms.store(0, SeqCst);
    let r = gw.get("/", Some(&b.token())).await;
    assert_eq!(
        r.status, 200,
        "the new kid must wait for a fetch that starts after it: {}",
        r.body
    );
    let s = slow.await.expect("task").expect("answered");
    assert_eq!(s.status, 401, "{}", s.body);
}

// ---------------------------------------------------------------------------------------------
// 3. Rotation on refresh, and the refresh floor

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_every_5s_picks_up_a_new_key_without_an_unknown_kid() {
    let (a, b) = (Signer::new("a"), Signer::new("b"));
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), "refresh = \"5s\""),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    assert_eq!(p.fetches(), 1, "one fetch at start");
    p.set_jwks(jwks_of(&[&a, &b]));

    // The gateway's snapshot holds both keys once the refresh ran (no request asked for it).
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(9),
        "the refresh loading key b",
        move || async move {
            let snap = gw_ref.app.state.load_full();
            let n = snap.issuers[0].keys.current().map_or(0, |k| k.len());
            if n == 2 {
                Ok(())
            } else {
                Err(format!("{n} keys loaded"))
            }
        },
    )
    .await;
    // The exact schedule is held by the paused-clock tests in src/keys/remote.rs; this checks
    // the wiring, with only a lower bound (a busy machine can make it later, never sooner).
    let times = p.fetch_times();
    assert_eq!(times.len(), 2, "exactly one refresh so far");
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(4500),
        "the refresh came {gap:?} after the first fetch; refresh = 5s"
    );
    let r = gw.get("/", Some(&b.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(p.fetches(), 2, "the new kid was already known: no refetch");
    assert_eq!(
        gw.metric("jwtgate_auth_failures_total", &[("reason", "unknown_key")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_below_the_floor_refreshes_after_5s_not_sooner_and_not_at_refresh() {
    let a = Signer::new("a");
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    *p.s.cache_control.lock().expect("lock") = Some("public, max-age=1".into());
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), "refresh = \"5m\""),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let p_ref = &p;
    eventually(
        Duration::from_secs(10),
        "a second fetch",
        move || async move {
            match p_ref.fetches() {
                n if n >= 2 => Ok(()),
                n => Err(format!("{n} fetches")),
            }
        },
    )
    .await;
    // The wiring of `Cache-Control` (refresh = 5m would not fetch again within the wait above);
    // the exact schedule is held by the paused-clock tests in src/keys/remote.rs.
    let times = p.fetch_times();
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(4500),
        "max-age=1 with refresh=5m: the next fetch came {gap:?} after the first (floor is 5 s)"
    );
    let r = gw.get("/", Some(&a.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// 4. Provider down at start

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_503_at_start_gives_503_retry_after_then_recovers() {
    let a = Signer::new("a");
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    p.set_down(true);
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), ""),
        main_route("X-Auth-Sub")
    ))
    .await;
    let token = a.token();
    let r = gw.get("/x", Some(&token)).await;
    assert_error(&r, 503, "temporarily_unavailable", &token);
    assert!(retry_after(&r) >= 1, "{:?}", r.headers);
    assert!(retry_after(&r) <= 11, "{:?}", r.headers);
    assert_eq!(gw.readyz().await, 503, "not ready without keys");

    // Failures are retried (backoff from 1 s): wait for a retry, still 503 meanwhile.
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "a retried fetch",
        move || async move {
            let f = gw_ref.metric(
                "jwtgate_key_refresh_total",
                &[("issuer", "remote"), ("result", "failure")],
            );
            if f >= 2.0 {
                Ok(())
            } else {
                Err(format!("{f} failures"))
            }
        },
    )
    .await;
    let r = gw.get("/x", Some(&token)).await;
    assert_error(&r, 503, "temporarily_unavailable", &token);
    assert!(retry_after(&r) >= 1, "{:?}", r.headers);
    assert_eq!(gw.readyz().await, 503);

    p.set_down(false);
    let t = &token;
    eventually(
        Duration::from_secs(15),
        "the route answering 200",
        move || async move {
            let r = gw_ref.get("/x", Some(t)).await;
            match r.status {
                200 => Ok(()),
                503 => Err(r.body),
                s => panic!("only 503 then 200 are right here, got {s}: {}", r.body),
            }
        },
    )
    .await;
    gw.wait_ready(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_not_listening_at_start_gives_503_then_recovers_when_it_listens() {
    let a = Signer::new("a");
    // Bound but not listening: connections are refused until listen() is called.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", jwks_url(addr)), ""),
        main_route("X-Auth-Sub")
    ))
    .await;
    let token = a.token();
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "two failed fetches",
        move || async move {
            let f = gw_ref.metric(
                "jwtgate_key_refresh_total",
                &[("issuer", "remote"), ("result", "failure")],
            );
            if f >= 2.0 {
                Ok(())
            } else {
                Err(format!("{f} failures"))
            }
        },
    )
    .await;
    let r = gw.get("/x", Some(&token)).await;
    assert_error(&r, 503, "temporarily_unavailable", &token);
    let ra = retry_after(&r);
    assert!((1..=11).contains(&ra), "Retry-After {ra}");
    assert_eq!(gw.readyz().await, 503);
    assert_eq!(
        gw.metric("jwtgate_keys_loaded", &[("issuer", "remote")]),
        0.0
    );

    let listener = socket.listen(64).expect("listen");
    let p = Provider::serve_on(listener);
    p.set_jwks(jwks_of(&[&a]));
    let t = &token;
    eventually(
        Duration::from_secs(15),
        "the route answering 200",
        move || async move {
            let r = gw_ref.get("/x", Some(t)).await;
            match r.status {
                200 => Ok(()),
                503 => Err(r.body),
                s => panic!("only 503 then 200 are right here, got {s}: {}", r.body),
            }
        },
    )
    .await;
    gw.wait_ready(Duration::from_secs(2)).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Provider goes down later

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_later_keeps_last_good_keys_and_readiness() {
    let a = Signer::new("a");
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), "refresh = \"5s\""),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    p.set_down(true);
    let token = a.token();
    let (gw_ref, t) = (&gw, &token);
    eventually(
        Duration::from_secs(10),
        "a failed refresh",
        move || async move {
            // Meanwhile every request passes on the last good keys, and the gateway stays ready.
            let r = gw_ref.get("/", Some(t)).await;
            assert_eq!(r.status, 200, "last good keys keep serving: {}", r.body);
            assert_eq!(gw_ref.readyz().await, 200, "readiness is a latch");
            let f = gw_ref.metric(
                "jwtgate_key_refresh_total",
                &[("issuer", "remote"), ("result", "failure")],
            );
            if f >= 1.0 {
                Ok(())
            } else {
                Err(format!("{f} failures"))
            }
        },
    )
    .await;
    let r = gw.get("/", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(gw.readyz().await, 200);
    assert_eq!(
        gw.metric("jwtgate_keys_loaded", &[("issuer", "remote")]),
        1.0
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Bogus-kid flood

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_kid_flood_is_401_and_costs_at_most_one_fetch_a_second() {
    let a = Signer::new("a");
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), ""),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let before = p.fetches();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        // 200 requests spread over 1 s, many in flight at once (each waits for a refetch). The
        // one-a-second schedule itself is held by a paused-clock test in src/keys/remote.rs.
        let at = start + Duration::from_millis(5 * u64::from(i));
        let mut rnd = [0u8; 8];
        aws_lc_rs::rand::fill(&mut rnd).expect("rand");
        let token = a.token_with_kid(&format!("bogus-{i}-{}", b64(&rnd)));
        let (client, url) = (gw.client.clone(), format!("http://{}/", gw.addr));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let r = try_get_url(&client, &url, Some(&token)).await;
            (token, r)
        }));
    }
    for t in tasks {
        let (token, r) = t.await.expect("task");
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert_error(&r, 401, "invalid_token", &token);
        assert!(
            r.json()["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("kid")),
            "{}",
            r.body
        );
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.contains("error=\"invalid_token\""), "{www}");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let fetched = p.fetches() - before;
    println!("bogus-kid flood: 200 requests in {elapsed:.2} s cost {fetched} fetches");
    assert!(
        fetched as f64 <= elapsed + 2.0,
        "{fetched} fetches in {elapsed:.2} s: at most one a second"
    );
    assert_eq!(
        gw.metric(
            "jwtgate_auth_failures_total",
            &[("route", "main"), ("reason", "unknown_key")]
        ),
        200.0
    );
    // The keys survived the flood.
    let r = gw.get("/", Some(&a.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// 7. Discovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_url_leads_to_the_jwks_uri() {
    let a = Signer::new("a");
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    p.set_discovery(
        json!({ "issuer": ISS, "jwks_uri": format!("http://{}/keys", p.addr) }).to_string(),
    );
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(
            &format!(
                "discovery_url = \"http://{}/.well-known/openid-configuration\"",
                p.addr
            ),
            ""
        ),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let r = gw.get("/", Some(&a.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-sub"), ["alice"], "{}", r.body);
    assert!(p.s.discovery_fetches.load(SeqCst) >= 1);
    assert!(p.fetches() >= 1, "the jwks_uri was fetched");
}

// ---------------------------------------------------------------------------------------------
// 8. `oct` keys never come from a URL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oct_key_in_a_remote_jwks_is_never_used() {
    let a = Signer::new("a");
    let secret = &common::keys().hmac_secret;
    let with_oct = json!({ "keys": [
        a.jwk(),
        { "kty": "oct", "kid": "hmac", "k": b64(secret) },
    ]})
    .to_string();
    let p = Provider::with_jwks(with_oct).await;

    // An HS* algorithm on a URL issuer is refused outright.
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let refused = remote_issuer(&format!("jwks_url = \"{}\"", p.url()), "")
        .replace("[\"ES256\"]", "[\"ES256\", \"HS256\"]");
    std::fs::write(
        &path,
        render(up.addr, &format!("{refused}{}", main_route("X-Auth-Sub"))),
    )
    .expect("write");
    match App::load(&path) {
        Ok(_) => panic!("HS256 with a jwks_url must be refused"),
        Err(e) => assert!(e.to_string().contains("HS256"), "{e}"),
    }

    // With ES256 only, the oct entry is skipped: one key loaded, HS256 tokens refused.
    let gw = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", p.url()), ""),
        main_route("X-Auth-Sub")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(5)).await;
    assert_eq!(
        gw.metric("jwtgate_keys_loaded", &[("issuer", "remote")]),
        1.0
    );
    let hs = common::sign_raw(
        "HS256",
        r#"{"alg":"HS256","typ":"JWT","kid":"hmac"}"#,
        &claims().to_string(),
    );
    let r = gw.get("/", Some(&hs)).await;
    assert_error(&r, 401, "invalid_token", &hs);
    let r = gw.get("/", Some(&a.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A remote JWKS holding only an oct key gives no keys at all.
    let only_oct = Provider::with_jwks(
        json!({ "keys": [{ "kty": "oct", "kid": "hmac", "k": b64(secret) }] }).to_string(),
    )
    .await;
    let gw2 = start_gw(&format!(
        "{}{}",
        remote_issuer(&format!("jwks_url = \"{}\"", only_oct.url()), ""),
        main_route("X-Auth-Sub")
    ))
    .await;
    let gw2_ref = &gw2;
    eventually(
        Duration::from_secs(5),
        "a refused fetch",
        move || async move {
            let f = gw2_ref.metric(
                "jwtgate_key_refresh_total",
                &[("issuer", "remote"), ("result", "failure")],
            );
            if f >= 1.0 {
                Ok(())
            } else {
                Err(format!("{f} failures"))
            }
        },
    )
    .await;
    let r = gw2.get("/", Some(&hs)).await;
    assert_error(&r, 401, "invalid_token", &hs);
    let t = a.token();
    let r = gw2.get("/", Some(&t)).await;
    assert_error(&r, 503, "temporarily_unavailable", &t);
    assert_eq!(gw2.readyz().await, 503);
}

// ---------------------------------------------------------------------------------------------
// 9. Config reload

fn static_config(header: &str) -> String {
    format!("{}{}", common::default_issuer(), main_route(header))
}

fn es256_token() -> String {
    common::token("ES256", &claims())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edited_in_place_applies_within_5s() {
    let gw = start_gw(&static_config("X-Auth-Sub")).await;
    let token = es256_token();
    gw.wait_ready(Duration::from_secs(5)).await;
    gw.wait_header(&token, "x-auth-sub", Duration::from_secs(1))
        .await;
    gw.write_config(&static_config("X-User"));
    let r = gw
        .wait_header(&token, "x-user", Duration::from_secs(5))
        .await;
    assert!(r.upstream_header("x-auth-sub").is_empty(), "{}", r.body);
    assert!(gw.metric("jwtgate_config_reloads_total", &[("result", "success")]) >= 1.0);
    assert!(gw.metric("jwtgate_config_last_reload_success_timestamp_seconds", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_replaced_by_rename_applies_within_5s() {
    let gw = start_gw(&static_config("X-Auth-Sub")).await;
    let token = es256_token();
    gw.wait_ready(Duration::from_secs(5)).await;
    gw.wait_header(&token, "x-auth-sub", Duration::from_secs(1))
        .await;
    gw.replace_config(&static_config("X-User"));
    let r = gw
        .wait_header(&token, "x-user", Duration::from_secs(5))
        .await;
    assert!(r.upstream_header("x-auth-sub").is_empty(), "{}", r.body);
    // And a second replacement (the watch survives the first rename).
    gw.replace_config(&static_config("X-Who"));
    gw.wait_header(&token, "x-who", Duration::from_secs(5))
        .await;
}

/// A change made after `App::load` read the file but before `serve` started watching it must
/// still be applied: the watcher's baseline has to be what was loaded, not what it first sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changed_between_load_and_serve_is_applied() {
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, render(up.addr, &static_config("X-Auth-Sub"))).expect("write");
    let app = match App::load(&config) {
        Ok(app) => Arc::new(app),
        Err(e) => panic!("config refused:\n{e}"),
    };
    // The file changes right after it was loaded (an editor, a ConfigMap update at start).
    std::fs::write(&config, render(up.addr, &static_config("X-User"))).expect("rewrite");
    let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = traffic.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(jwtgate::run(traffic, app.clone(), async move {
        let _ = stopped.await;
        Duration::from_secs(1)
    }));
    let (client, token) = (common::client::new(), es256_token());
    let (c, t) = (&client, &token);
    eventually(
        Duration::from_secs(5),
        "the changed config applied",
        move || async move {
            let r = try_get_url(c, &format!("http://{addr}/"), Some(t)).await?;
            assert_eq!(r.status, 200, "{}", r.body);
            if r.upstream_header("x-user") == ["alice"] {
                Ok(())
            } else {
                Err(r.body)
            }
        },
    )
    .await;
    let _ = stop.send(());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_data_symlink_flip_applies_within_5s() {
    use std::os::unix::fs::symlink;
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // What the kubelet makes of a ConfigMap with gateway.toml and jwks.json.
    let v1 = d.join("..2026_01");
    std::fs::create_dir(&v1).expect("mkdir");
    write_keys(&v1);
    std::fs::write(
        v1.join("gateway.toml"),
        render(up.addr, &static_config("X-Auth-Sub")),
    )
    .expect("write");
    symlink("..2026_01", d.join("..data")).expect("symlink ..data");
    symlink("..data/gateway.toml", d.join("gateway.toml")).expect("symlink");
    symlink("..data/jwks.json", d.join("jwks.json")).expect("symlink");
    let config = d.join("gateway.toml");
    let gw = launch(dir, config, up).await;
    let d = gw.dir.path();
    let token = es256_token();
    gw.wait_header(&token, "x-auth-sub", Duration::from_secs(1))
        .await;

    // The kubelet's update: a new timestamped directory, then an atomic flip of ..data.
    let v2 = d.join("..2026_02");
    std::fs::create_dir(&v2).expect("mkdir");
    write_keys(&v2);
    std::fs::write(
        v2.join("gateway.toml"),
        render(gw.upstream, &static_config("X-User")),
    )
    .expect("write");
    symlink("..2026_02", d.join("..data_tmp")).expect("symlink ..data_tmp");
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("flip ..data");
    std::fs::remove_dir_all(d.join("..2026_01")).expect("remove old version");
    let r = gw
        .wait_header(&token, "x-user", Duration::from_secs(5))
        .await;
    assert!(r.upstream_header("x-auth-sub").is_empty(), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_kept_out_and_a_fix_applies() {
    let gw = start_gw(&static_config("X-Auth-Sub")).await;
    let token = es256_token();
    gw.wait_ready(Duration::from_secs(5)).await;
    gw.wait_header(&token, "x-auth-sub", Duration::from_secs(1))
        .await;
    gw.write_config(&static_config("X-User").replace("auth = \"required\"", "auth = \"maybe\""));
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(5),
        "a refused reload",
        move || async move {
            let f = gw_ref.metric("jwtgate_config_reloads_total", &[("result", "failure")]);
            if f >= 1.0 {
                Ok(())
            } else {
                Err(gw_ref.metrics())
            }
        },
    )
    .await;
    // The old config keeps serving, whole.
    let r = gw.get("/", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-sub"), ["alice"], "{}", r.body);
    assert!(r.upstream_header("x-user").is_empty(), "{}", r.body);
    let r = gw.get("/", None).await;
    assert_eq!(r.status, 401, "auth stays required: {}", r.body);
    assert_eq!(gw.readyz().await, 200);

    gw.write_config(&static_config("X-User"));
    gw.wait_header(&token, "x-user", Duration::from_secs(5))
        .await;
    assert!(gw.metric("jwtgate_config_reloads_total", &[("result", "success")]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reload_applies_a_changed_pem_key_at_once() {
    let (old, new) = (Signer::new("k"), Signer::new("k"));
    let body = format!(
        r#"
[[issuer]]
name = "pem"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
keys = ["k.pem"]
{}"#,
        main_route("X-Auth-Sub")
    );
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("k.pem"), old.pem()).expect("write pem");
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, render(up.addr, &body)).expect("write");
    let gw = launch(dir, config, up).await;
    let token = new.token();
    let r = gw.get("/", Some(&token)).await;
    assert_error(&r, 401, "invalid_token", &token);
    let r = gw.get("/", Some(&old.token())).await;
    assert_eq!(r.status, 200, "{}", r.body);

    std::fs::write(gw.dir.path().join("k.pem"), new.pem()).expect("rewrite pem");
    gw.app.request_reload();
    let t = &token;
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(1),
        "the new key in use",
        move || async move {
            let r = gw_ref.get("/", Some(t)).await;
            if r.status == 200 {
                Ok(())
            } else {
                Err(r.body)
            }
        },
    )
    .await;
    let r = gw.get("/", Some(&old.token())).await;
    assert_eq!(r.status, 401, "the replaced key is gone: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_remote_keys_without_refetch_or_gap() {
    let a = Signer::new("a");
    let p = Provider::with_jwks(jwks_of(&[&a])).await;
    let config = |header: &str| {
        format!(
            "{}{}",
            remote_issuer(&format!("jwks_url = \"{}\"", p.url()), ""),
            main_route(header)
        )
    };
    let gw = start_gw(&config("X-Auth-Sub")).await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let fetched = p.fetches();

    // Hammer the gateway while it reloads five times.
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (client, url, token, stop) = (
            gw.client.clone(),
            format!("http://{}/", gw.addr),
            a.token(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let (mut ok, mut bad) = (0u32, Vec::new());
            while !stop.load(SeqCst) {
                match try_get_url(&client, &url, Some(&token)).await {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => bad.push(format!("{} {}", r.status, r.body)),
                    Err(e) => bad.push(e),
                }
            }
            (ok, bad)
        })
    };
    let token = a.token();
    for i in 0..5 {
        let header = format!("X-Gen-{i}");
        gw.write_config(&config(&header));
        gw.app.request_reload();
        gw.wait_header(&token, &header.to_ascii_lowercase(), Duration::from_secs(5))
            .await;
        assert_eq!(
            p.fetches(),
            fetched,
            "reload {i} kept the issuer's keys: no refetch"
        );
    }
    stop.store(true, SeqCst);
    let (ok, bad) = hammer.await.expect("hammer");
    assert!(
        bad.is_empty(),
        "{} non-200 answers during reloads: {:?}",
        bad.len(),
        bad
    );
    assert!(ok > 0, "the hammer ran");
    assert_eq!(gw.readyz().await, 200);
    assert_eq!(p.fetches(), fetched, "no refetch at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_added_by_reload_answers_503_until_its_keys_arrive_and_readyz_stays_200() {
    const LATE_ISS: &str = "https://late.test/";
    let late = Signer::new("late");
    let p = Provider::with_jwks(jwks_of(&[&late])).await;
    p.set_down(true);
    let gw = start_gw(&static_config("X-Auth-Sub")).await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let added = format!(
        r#"{}
[[issuer]]
name = "late"
issuer = "{LATE_ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
jwks_url = "{}"

[[route]]
name = "late"
path_prefix = "/late"
upstream = "{{upstream}}"
auth = "required"
issuers = ["late"]
"#,
        static_config("X-Auth-Sub"),
        p.url()
    );
    gw.write_config(&added);
    gw.app.request_reload();
    let mut c = claims();
    c["iss"] = LATE_ISS.into();
    let token = late.sign_raw(
        &json!({ "alg": "ES256", "typ": "JWT", "kid": "late" }).to_string(),
        &c.to_string(),
    );
    let (gw_ref, t) = (&gw, &token);
    eventually(
        Duration::from_secs(5),
        "the reload applied",
        move || async move {
            let n = gw_ref.metric("jwtgate_config_reloads_total", &[("result", "success")]);
            if n >= 1.0 {
                Ok(())
            } else {
                Err(gw_ref.metrics())
            }
        },
    )
    .await;
    let r = gw.get("/late", Some(&token)).await;
    assert_error(&r, 503, "temporarily_unavailable", &token);
    assert!(retry_after(&r) >= 1);
    assert_eq!(gw.readyz().await, 200, "readiness is a latch");
    let r = gw.get("/", Some(&es256_token())).await;
    assert_eq!(r.status, 200, "the old route is unaffected: {}", r.body);

    p.set_down(false);
    eventually(
        Duration::from_secs(15),
        "the new issuer's keys",
        move || async move {
            let r = gw_ref.get("/late", Some(t)).await;
            match r.status {
                200 => Ok(()),
                503 => Err(r.body),
                s => panic!("only 503 then 200 are right here, got {s}: {}", r.body),
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 10. Load: rotation every second and a config rewrite every 300 ms, under traffic

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_key_rotation_and_config_rewrites_has_no_failures() {
    const RUN: Duration = Duration::from_secs(5);
    let signers: Arc<Vec<Signer>> =
        Arc::new((0..7).map(|i| Signer::new(&format!("k{i}"))).collect());
    let p = Provider::with_jwks(jwks_of(&[&signers[0]])).await;
    let config = |n: usize| {
        let header = if n.is_multiple_of(2) {
            "X-Auth-Sub"
        } else {
            "X-User"
        };
        let leeway = if n.is_multiple_of(2) { "30s" } else { "31s" };
        format!(
            "{}{}",
            remote_issuer(
                &format!("jwks_url = \"{}\"", p.url()),
                &format!("leeway = \"{leeway}\"")
            ),
            main_route(header)
        )
    };
    let gw = start_gw(&config(0)).await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let current = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + RUN;

    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, signers, current) = (
                gw.client.clone(),
                format!("http://{}/api/x", gw.addr),
                signers.clone(),
                current.clone(),
            );
            tokio::spawn(async move {
                let (mut ok, mut bad) = (0usize, Vec::new());
                while Instant::now() < deadline {
                    let token = signers[current.load(SeqCst)].token();
                    match try_get_url(&client, &url, Some(&token)).await {
                        Ok(r) if r.status == 200 => {
                            let sub =
                                [r.upstream_header("x-auth-sub"), r.upstream_header("x-user")]
                                    .concat();
                            if sub == ["alice"] {
                                ok += 1;
                            } else {
                                bad.push(format!("200 with claim headers {sub:?}: {}", r.body));
                            }
                        }
                        Ok(r) => bad.push(format!("{} {}", r.status, r.body)),
                        Err(e) => bad.push(e),
                    }
                }
                (ok, bad)
            })
        })
        .collect();

    // The provider publishes each new key (keeping the previous one) shortly before it signs
    // with it, as an IdP does; the gateway learns it through the unknown-kid refetch.
    let mut rotations = 0;
    let mut rewrites = 0;
    let mut next_rotation = start + Duration::from_secs(1);
    let mut next_rewrite = start + Duration::from_millis(300);
    while Instant::now() < deadline {
        let at = next_rotation.min(next_rewrite);
        tokio::time::sleep_until(at.into()).await;
        if at == next_rewrite {
            rewrites += 1;
            gw.replace_config(&config(rewrites));
            next_rewrite += Duration::from_millis(300);
        } else if rotations + 1 < signers.len() {
            rotations += 1;
            p.set_jwks(jwks_of(&[&signers[rotations - 1], &signers[rotations]]));
            tokio::time::sleep(Duration::from_millis(200)).await;
            current.store(rotations, SeqCst);
            next_rotation += Duration::from_secs(1);
        } else {
            next_rotation += Duration::from_secs(1);
        }
    }
    let (mut ok, mut bad) = (0usize, Vec::new());
    for w in workers {
        let (o, b) = w.await.expect("worker");
        ok += o;
        bad.extend(b);
    }
    let reloads = gw.metric("jwtgate_config_reloads_total", &[("result", "success")]);
    println!(
        "load: {ok} requests answered 200 in {:?} by 8 clients; {rotations} key rotations, \
         {rewrites} config rewrites ({reloads} reloads applied), {} JWKS fetches",
        start.elapsed(),
        p.fetches()
    );
    assert!(
        bad.is_empty(),
        "{} failed requests out of {}; first: {:?}",
        bad.len(),
        ok + bad.len(),
        bad.iter().take(5).collect::<Vec<_>>()
    );
    assert!(ok >= 300, "only {ok} requests in {RUN:?}");
    assert!(rotations >= 3, "{rotations} rotations");
    assert!(reloads >= 3.0, "{reloads} reloads applied");
}

// ---------------------------------------------------------------------------------------------
// 11. Drain through the library

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_in_flight_request_closes_traffic_port_and_readyz_turns_503() {
    let mut gw = start_gw(&static_config("X-Auth-Sub")).await;
    gw.wait_ready(Duration::from_secs(5)).await;
    let token = es256_token();
    let slow = {
        let (client, url, token) = (
            gw.client.clone(),
            format!("http://{}/slow?delay_ms=1500", gw.addr),
            token.clone(),
        );
        tokio::spawn(async move { try_get_url(&client, &url, Some(&token)).await })
    };
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(2),
        "the slow request in flight",
        move || async move {
            match gw_ref.app.metrics.in_flight.get() {
                n if n >= 1 => Ok(()),
                n => Err(format!("{n} in flight")),
            }
        },
    )
    .await;

    let began = Instant::now();
    let stop = gw.stop.take().expect("stop");
    let served = gw.served.take().expect("serve task");
    let gw_ref = &gw;
    stop.send(()).expect("shutdown signal");
    eventually(
        Duration::from_secs(2),
        "/readyz 503 while draining",
        move || async move {
            match gw_ref.readyz().await {
                503 => Ok(()),
                s => Err(format!("/readyz {s}")),
            }
        },
    )
    .await;
    let addr = gw.addr;
    eventually(
        Duration::from_secs(2),
        "the traffic port refusing",
        move || async move {
            match TcpStream::connect(addr).await {
                Err(_) => Ok(()),
                Ok(_) => Err("still accepting".to_owned()),
            }
        },
    )
    .await;
    assert!(
        !served.is_finished() && !slow.is_finished(),
        "run() waits for the in-flight request"
    );
    let r = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the slow request finished")
        .expect("task")
        .unwrap_or_else(|e| panic!("the in-flight request was cut: {e}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/slow", "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-sub"), ["alice"], "{}", r.body);
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("run() returned after the request finished")
        .expect("serve task");
    println!("drained in {:?}", began.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 12. Signals on the binary, with the admin listener

/// A running `jwtgate run`; killed on drop.
struct Proc {
    child: common::ChildGuard,
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    err: PathBuf,
    client: HttpClient,
    _dir: tempfile::TempDir,
    _up: Upstream,
}

impl Proc {
    /// Starts the binary with an admin listener and `shutdown_grace = grace`, retrying when a
    /// port picked by bind-and-drop was taken in between; waits until /readyz answers.
    async fn start(grace: &str) -> Proc {
        for _ in 0..5 {
            let up = upstream().await;
            let dir = tempfile::tempdir().expect("tempdir");
            write_keys(dir.path());
            let (port, admin_port) = (free_port(), free_port());
            let text = format!(
                "[listen]\naddr = \"127.0.0.1:{port}\"\n[admin]\naddr = \"127.0.0.1:{admin_port}\"\n\
                 [limits]\nshutdown_grace = \"{grace}\"\n{}",
                static_config("X-Auth-Sub").replace("{upstream}", &format!("http://{}", up.addr))
            );
            let config = dir.path().join("gateway.toml");
            std::fs::write(&config, text).expect("write config");
            let (log, err) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
            let child = common::spawn_run(dir.path(), &config, &log, &err, |c| {
                c.env("JWTGATE_LOG", "info");
            });
            let mut p = Proc {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
                log,
                err,
                client: common::client::new(),
                _dir: dir,
                _up: up,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(p.admin).await.is_ok()
                    && TcpStream::connect(p.addr).await.is_ok()
                {
                    return p;
                }
                if !p.alive() {
                    if p.output().contains("binding the") {
                        break; // a port was taken in between: try others
                    }
                    panic!("jwtgate run exited at start:\n{}", p.output());
                }
                assert!(
                    Instant::now() < deadline,
                    "jwtgate run did not listen within 10 s:\n{}",
                    p.output()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("could not find free ports for jwtgate run");
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn output(&self) -> String {
        common::output_of(&self.log, &self.err)
    }

    fn signal(&self, sig: &str) {
        common::send_signal(&self.child, sig);
    }

    async fn admin_get(&self, path: &str) -> Result<Answer, String> {
        try_get_url(&self.client, &format!("http://{}{path}", self.admin), None).await
    }

    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        common::wait_exit(&mut self.child, limit).await
    }

    /// Starts a GET through the gateway on its own connection.
    fn spawn_get(&self, path: &str, token: &str) -> JoinHandle<Result<Answer, String>> {
        let (url, token) = (format!("http://{}{path}", self.addr), token.to_owned());
        tokio::spawn(async move {
            let client: HttpClient = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http();
            try_get_url(&client, &url, Some(&token)).await
        })
    }

    async fn wait_in_flight(&self) {
        eventually(
            Duration::from_secs(3),
            "a request in flight",
            move || async move {
                let m = self.admin_get("/metrics").await?;
                match metric_or_zero(&m.body, "jwtgate_requests_in_flight", &[]) {
                    n if n >= 1.0 => Ok(()),
                    n => Err(format!("{n} in flight")),
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_while_an_in_flight_request_finishes_then_exits_0() {
    let mut gw = Proc::start("10s").await;
    let gw_ref = &gw;
    eventually(Duration::from_secs(5), "/readyz 200", move || async move {
        match gw_ref.admin_get("/readyz").await?.status {
            200 => Ok(()),
            s => Err(format!("/readyz {s}")),
        }
    })
    .await;
    let token = es256_token();
    let slow = gw.spawn_get("/slow?delay_ms=2000", &token);
    gw.wait_in_flight().await;

    gw.signal("TERM");
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(1),
        "/readyz 503 while draining",
        move || async move {
            match gw_ref.admin_get("/readyz").await?.status {
                503 => Ok(()),
                s => Err(format!("/readyz {s}")),
            }
        },
    )
    .await;
    assert!(!slow.is_finished(), "the slow request is still in flight");
    assert!(gw.alive(), "draining:\n{}", gw.output());
    let r = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the in-flight request finished")
        .expect("task")
        .unwrap_or_else(|e| panic!("the in-flight request was cut: {e}\n{}", gw.output()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-sub"), ["alice"], "{}", r.body);
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit 0 after the drain:\n{}",
        gw.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_0_within_4s_despite_25s_grace_idle_and_busy_connections() {
    let mut gw = Proc::start("25s").await;
    let token = es256_token();
    // An idle keep-alive connection, after one answered request.
    let mut idle = TcpStream::connect(gw.addr).await.expect("connect");
    idle.write_all(
        format!("GET /a HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // And a request that would outlast the grace SIGINT allows.
    let busy = gw.spawn_get("/slow?delay_ms=20000", &token);
    gw.wait_in_flight().await;

    let sent = Instant::now();
    gw.signal("INT");
    let status = gw.wait_exit(Duration::from_secs(4)).await;
    let Some(status) = status else {
        panic!(
            "jwtgate did not exit within 4 s of SIGINT:\n{}",
            gw.output()
        )
    };
    assert_eq!(status.code(), Some(0), "exit 0 on SIGINT:\n{}", gw.output());
    println!("SIGINT exit after {:?}", sent.elapsed());
    busy.abort();
    drop(idle);
}

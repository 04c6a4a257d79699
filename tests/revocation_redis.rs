//! Revocation shared through a real `redis-server` by several gateway PROCESSES (SPEC
//! "Revocation", "Shared state: Redis"): propagation measured over 100 `jwtgate revoke` runs
//! and printed, a replica started late, a replica cut off from Redis while revocations happen
//! and then reconnected (it replays the stream), Redis killed (the last copy serves, staleness
//! grows, `max_staleness` answers 503, `revoke` fails naming Redis) and restarted with its
//! data and without it (the replicas write back what they hold).
//!
//! Timings are printed, never asserted: the bounds below only keep a broken build from
//! hanging.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::{self, HttpClient};
use common::describe_output as text;
use common::metrics::metric_or_zero;
use common::redis_server::RedisServer;
use common::*;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// Generous bounds for "eventually": a replica reconnects within its 10 s backoff.
const SETTLE: Duration = Duration::from_secs(30);

/// One `jwtgate run` process.
struct Replica {
    name: &'static str,
    child: ChildGuard,
    addr: SocketAddr,
    admin: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Replica {
    /// Starts `jwtgate run` in `dir` with Redis at `redis_url` and `denylist` as its
    /// `[denylist]` table body.
    fn start(
        dir: &Path,
        name: &'static str,
        upstream: SocketAddr,
        redis_url: &str,
        denylist: &str,
    ) -> Replica {
        let (port, admin_port) = (free_port(), free_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"[listen]
addr = "127.0.0.1:{port}"

[admin]
addr = "127.0.0.1:{admin_port}"

[redis]
url_env = "JWTGATE_REDIS_URL"

[denylist]
{denylist}
{}
[[route]]
name = "main"
path_prefix = "/"
upstream = "http://{upstream}"
auth = "required"
"#,
                default_issuer()
            ),
        )
        .expect("write config");
        let (stdout, stderr) = (
            dir.join(format!("{name}.out")),
            dir.join(format!("{name}.err")),
        );
        let child = spawn_run(dir, &config, &stdout, &stderr, |c| {
            c.env("JWTGATE_REDIS_URL", redis_url);
        });
        Replica {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            stdout,
            stderr,
        }
    }

    fn logs(&self) -> String {
        output_of(&self.stdout, &self.stderr)
    }

    async fn status(&self, http: &HttpClient, token: &str) -> Result<u16, String> {
        client::try_get_url(http, &format!("http://{}/x", self.addr), Some(token))
            .await
            .map(|a| a.status)
    }

    async fn metrics(&self, http: &HttpClient) -> String {
        client::try_get_url(http, &format!("http://{}/metrics", self.admin), None)
            .await
            .map(|a| a.body)
            .unwrap_or_default()
    }

    async fn ready(&self, http: &HttpClient) -> bool {
        client::try_get_url(http, &format!("http://{}/readyz", self.admin), None)
            .await
            .is_ok_and(|a| a.status == 200)
    }

    async fn wait_ready(&mut self, http: &HttpClient) {
        let deadline = Instant::now() + SETTLE;
        while !self.ready(http).await {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("{} exited with {s}:\n{}", self.name, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {SETTLE:?}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A TCP relay between one replica and Redis that the test can cut: a real disconnection
/// (connections closed, new ones refused), not a mock of Redis.
struct Cut {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cut {
    async fn start(target: SocketAddr) -> Cut {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let down = Arc::new(AtomicBool::new(false));
        let relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (d, r) = (down.clone(), relays.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                r.lock().expect("relays").push(task.abort_handle());
            }
        });
        Cut { addr, down, relays }
    }

    /// Closes every relayed connection and refuses new ones, or lets them through again.
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for r in self.relays.lock().expect("relays").drain(..) {
                r.abort();
            }
        }
    }
}

fn jwtgate(dir: &Path, redis_url: &str, args: &[&str]) -> Output {
    jwtgate_output(dir, &[("JWTGATE_REDIS_URL", redis_url)], args)
}

/// `jwtgate revoke --jti id` against A's config; panics unless it succeeds.
async fn revoke(dir: &Path, url: &str, jti: &str) {
    let (dir, url, jti) = (dir.to_owned(), url.to_owned(), jti.to_owned());
    let until = (now() + 3600).to_string();
    let o = tokio::task::spawn_blocking(move || {
        let o = jwtgate(
            &dir,
            &url,
            &[
                "revoke", "--config", "a.toml", "--issuer", "test", "--jti", &jti, "--until",
                &until,
            ],
        );
        (o, jti)
    })
    .await
    .expect("revoke ran");
    let (o, jti) = o;
    assert!(o.status.success(), "revoke {jti}: {}", text(&o));
}

fn jti_token(jti: &str) -> String {
    token("ES256", &with(claims(), "jti", json!(jti)))
}

/// Polls `replica` until `token` answers `want`; the time it took.
async fn until_status(http: &HttpClient, r: &Replica, token: &str, want: u16) -> Duration {
    let start = Instant::now();
    let mut last = Ok(0);
    while start.elapsed() < SETTLE {
        last = r.status(http, token).await;
        if last == Ok(want) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "{}: not {want} within {SETTLE:?} (last {last:?}):\n{}",
        r.name,
        r.logs()
    );
}

/// Waits until `r`'s `jwtgate_denylist_staleness_seconds` is above `secs`.
async fn staleness_above(http: &HttpClient, r: &Replica, secs: f64) {
    let start = Instant::now();
    loop {
        let m = r.metrics(http).await;
        if metric_or_zero(&m, "jwtgate_denylist_staleness_seconds", &[]) > secs {
            return;
        }
        assert!(
            start.elapsed() < SETTLE,
            "{}: staleness stays at or below {secs} s:\n{m}",
            r.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn list(dir: &Path, url: &str) -> Vec<String> {
    let (dir, url) = (dir.to_owned(), url.to_owned());
    let o = tokio::task::spawn_blocking(move || {
        jwtgate(&dir, &url, &["revoke", "--config", "a.toml", "--list"])
    })
    .await
    .expect("list ran");
    assert!(o.status.success(), "revoke --list: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("redis\t"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_revocations_through_redis_restarts_and_disconnections() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let (upstream, _up) = echo_upstream().await;
    let http = client::new();
    let cut = Cut::start(SocketAddr::from(([127, 0, 0, 1], redis.port()))).await;
    let cut_url = format!("redis://{}/0", cut.addr);

    let mut a = Replica::start(dir.path(), "a", upstream, &url, "");
    let mut b = Replica::start(
        dir.path(),
        "b",
        upstream,
        &cut_url,
        "max_staleness = \"2s\"",
    );
    a.wait_ready(&http).await;
    b.wait_ready(&http).await;
    let valid = jti_token("never-revoked");
    for r in [&a, &b] {
        assert_eq!(r.status(&http, &valid).await, Ok(200), "{}", r.logs());
    }

    // Propagation: 100 revocations, each timed from `revoke`'s exit to its refusal on A and B.
    let mut took = Vec::new();
    for i in 0..100 {
        let jti = format!("p-{i}");
        let t = jti_token(&jti);
        revoke(dir.path(), &url, &jti).await;
        for r in [&a, &b] {
            took.push(until_status(&http, r, &t, 401).await);
        }
    }
    took.sort();
    println!(
        "propagation, revoke exit -> refused, 100 revocations x 2 replicas: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took[took.len() - 1]
    );

    // A replica started late loads the whole set before it is ready.
    let mut c = Replica::start(dir.path(), "c", upstream, &url, "");
    c.wait_ready(&http).await;
    for i in (0..100).step_by(9).chain([99]) {
        assert_eq!(
            c.status(&http, &jti_token(&format!("p-{i}"))).await,
            Ok(401),
            "late replica, p-{i}"
        );
    }
    let m = c.metrics(&http).await;
    assert_eq!(
        metric_or_zero(&m, "jwtgate_denylist_entries", &[("kind", "jti")]),
        100.0,
        "{m}"
    );

    // B cut off from Redis while 20 revocations happen: past max_staleness it answers 503
    // with Retry-After and stays ready; reconnected, it replays what it missed.
    cut.set_down(true);
    for i in 0..20 {
        revoke(dir.path(), &url, &format!("q-{i}")).await;
    }
    for i in 0..20 {
        until_status(&http, &a, &jti_token(&format!("q-{i}")), 401).await;
    }
    until_status(&http, &b, &valid, 503).await;
    let answer = client::try_get_url(&http, &format!("http://{}/x", b.addr), Some(&valid))
        .await
        .expect("answer");
    let retry: u64 = answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("503 without a Retry-After in seconds: {:?}", answer.headers));
    assert!(retry >= 1);
    assert!(b.ready(&http).await, "a stale replica stays ready");
    // The gauge is published once a second: it catches up with the 503 within one.
    staleness_above(&http, &b, 2.0).await;
    let loads_before = std::fs::read_to_string(&b.stdout)
        .unwrap_or_default()
        .matches("denylist loaded from Redis")
        .count();
    cut.set_down(false);
    let back = Instant::now();
    for i in 0..20 {
        until_status(&http, &b, &jti_token(&format!("q-{i}")), 401).await;
    }
    until_status(&http, &b, &valid, 200).await;
    println!(
        "reconnected replica enforced the 20 revocations it missed {:?} after the link came back",
        back.elapsed()
    );
    let loads_after = std::fs::read_to_string(&b.stdout)
        .unwrap_or_default()
        .matches("denylist loaded from Redis")
        .count();
    assert_eq!(
        loads_after,
        loads_before,
        "B replayed the stream instead of loading whole:\n{}",
        b.logs()
    );

    // Redis killed: the last copy serves, staleness grows, `revoke` fails naming Redis.
    redis.kill();
    until_status(&http, &b, &valid, 503).await;
    assert_eq!(
        a.status(&http, &valid).await,
        Ok(200),
        "A has no max_staleness"
    );
    assert_eq!(a.status(&http, &jti_token("p-5")).await, Ok(401));
    let o = jwtgate(
        dir.path(),
        &url,
        &[
            "revoke", "--config", "a.toml", "--issuer", "test", "--jti", "lost",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Redis"),
        "{}",
        text(&o)
    );
    staleness_above(&http, &a, 1.0).await;
    let m = a.metrics(&http).await;
    assert_eq!(metric_or_zero(&m, "jwtgate_redis_up", &[]), 0.0, "{m}");

    // Restarted with its data: nothing lost, revocations flow again.
    redis.restart();
    revoke(dir.path(), &url, "r-1").await;
    for r in [&a, &b, &c] {
        until_status(&http, r, &jti_token("r-1"), 401).await;
        until_status(&http, r, &valid, 200).await;
    }
    assert_eq!(list(dir.path(), &url).await.len(), 121);

    // Restarted without its data: the replicas notice the new epoch and write back what
    // they hold.
    redis.restart_empty();
    let deadline = Instant::now() + SETTLE;
    loop {
        let n = list(dir.path(), &url).await.len();
        if n == 121 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "written back: {n} of 121 entries"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    revoke(dir.path(), &url, "s-1").await;
    for r in [&a, &b, &c] {
        until_status(&http, r, &jti_token("s-1"), 401).await;
    }
    // A gateway restart forgets nothing: a fresh A refuses old and new revocations at once.
    drop(a);
    let mut a2 = Replica::start(dir.path(), "a2", upstream, &url, "");
    a2.wait_ready(&http).await;
    for jti in ["p-0", "q-19", "r-1", "s-1"] {
        assert_eq!(a2.status(&http, &jti_token(jti)).await, Ok(401), "{jti}");
    }
    assert_eq!(a2.status(&http, &valid).await, Ok(200));
}

#[tokio::test]
async fn an_unreachable_redis_fails_revoke_and_holds_readiness_until_it_is_loaded() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let (upstream, _up) = echo_upstream().await;
    let http = client::new();
    let mut a = Replica::start(dir.path(), "a", upstream, &url, "file = \"deny.jsonl\"");
    // `revoke` never falls back to the file.
    let o = jwtgate(
        dir.path(),
        &url,
        &[
            "revoke", "--config", "a.toml", "--issuer", "test", "--sub", "alice",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Redis"),
        "{}",
        text(&o)
    );
    assert!(
        !dir.path().join("deny.jsonl").exists(),
        "fell back to the file"
    );
    // Not ready while the set has never been loaded.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !a.ready(&http).await,
        "ready without the denylist:\n{}",
        a.logs()
    );
    redis.restart();
    a.wait_ready(&http).await;
}

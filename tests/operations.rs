//! Operating the binary: a stdout that stalls never stalls traffic (the access log's bounded
//! writer, its drop counter, the flush at exit), and `demo` prints commands that work as
//! printed.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use common::{echo_upstream, free_port, repo, ChildGuard};

/// Every request of these tests must be answered within this, whatever stdout does.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A `jwtgate run` child whose stdout is a pipe the test holds (reading it or not).
struct Gw {
    child: ChildGuard,
    traffic: SocketAddr,
    admin: SocketAddr,
    /// Held open: dropping it would turn a stall into a broken pipe.
    stdout: Option<ChildStdout>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gw {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM; the exit status, waiting at most `limit`.
    async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        common::send_signal(&self.child, "TERM");
        common::wait_exit(&mut self.child, limit)
            .await
            .unwrap_or_else(|| panic!("no exit within {limit:?} of SIGTERM:\n{}", self.stderr()))
    }

    /// Reads stdout to its end on a thread: call once the process is exiting or exited.
    fn read_stdout_to_end(&mut self) -> std::thread::JoinHandle<String> {
        let mut out = self.stdout.take().expect("stdout not taken yet");
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        })
    }
}

/// `open` forwards to the echo upstream; `dead` to a closed port (a 502 and a warning event
/// per request, so non-access lines go the same way).
fn config_toml(traffic: u16, admin: u16, upstream: SocketAddr, dead: u16) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:{traffic}"

[admin]
addr = "127.0.0.1:{admin}"

[limits]
upstream_timeout = "2s"
shutdown_grace = "2s"

[[route]]
name = "open"
path_prefix = "/open"
upstream = "http://{upstream}"
auth = "none"

[[route]]
name = "dead"
path_prefix = "/dead"
upstream = "http://127.0.0.1:{dead}"
auth = "none"
"#
    )
}

/// Starts the gateway with stdout a pipe, `args` after the config, and waits until ready.
async fn start(upstream: SocketAddr, args: &[&str]) -> Gw {
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (traffic, admin, dead) = (free_port(), free_port(), free_port());
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, config_toml(traffic, admin, upstream, dead)).expect("write");
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new(common::binary())
            .current_dir(dir.path())
            .env_remove("JWTGATE_CONFIG")
            .env_remove("JWTGATE_LOG")
            .env_remove("JWTGATE_LOG_FORMAT")
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn jwtgate run");
        let stdout = child.stdout.take();
        let mut gw = Gw {
            child: ChildGuard(child),
            traffic: SocketAddr::from(([127, 0, 0, 1], traffic)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            stdout,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Ok((200, _))) =
                tokio::time::timeout(Duration::from_secs(2), get(gw.admin, "/readyz", false)).await
            {
                return gw;
            }
            if let Ok(Some(_)) = gw.child.try_wait() {
                if gw.stderr().contains("binding the") {
                    break; // a port was taken in between: try others
                }
                panic!("jwtgate run exited at start:\n{}", gw.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "jwtgate run not ready within 10 s:\n{}",
                gw.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("could not find free ports for jwtgate run");
}

fn client(http2: bool) -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

/// One GET on a fresh client: status and `x-request-id`.
async fn get(addr: SocketAddr, path: &str, http2: bool) -> Result<(u16, String), String> {
    send(&client(http2), addr, path).await
}

async fn send(
    c: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), String> {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .expect("request");
    let res = c.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, id))
}

/// Sends `n` GETs of `path` over 8 concurrent keep-alive connections (HTTP/1.1 or HTTP/2);
/// every one must be answered `want` within [`ANSWER_WITHIN`]. Returns their request ids.
async fn load(addr: SocketAddr, path: &str, n: usize, http2: bool, want: u16) -> Vec<String> {
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let c = client(http2);
        let path = path.to_owned();
        let count = n / workers + usize::from(w < n % workers);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for i in 0..count {
                let answered = tokio::time::timeout(ANSWER_WITHIN, send(&c, addr, &path)).await;
                match answered {
                    Ok(Ok((status, id))) => {
                        assert_eq!(status, want, "{path} (http2 {http2}) request {i}");
                        ids.push(id);
                    }
                    Ok(Err(e)) => panic!("{path} (http2 {http2}) request {i} failed: {e}"),
                    Err(_) => panic!(
                        "{path} (http2 {http2}) request {i} not answered within \
                         {ANSWER_WITHIN:?}: the log stalled traffic"
                    ),
                }
            }
            ids
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await.expect("load task"));
    }
    ids
}

/// The value of an unlabelled metric on the admin listener's `/metrics`.
async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let text = common::client::get(admin, "/metrics", None).await.body;
    common::metrics::metric(&text, name, &[])
        .unwrap_or_else(|| panic!("no {name} on /metrics:\n{text}"))
}

// ---------------------------------------------------------------------------------------------
// A stalled stdout

/// stdout is a pipe nobody reads: once it and the log queue are full, requests (HTTP/1.1 and
/// HTTP/2, proxied and failing upstream, JSON and text format) are still all answered, the
/// dropped lines are counted, and SIGTERM still ends the process in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_never_stalls_traffic() {
    let (upstream, _stop) = echo_upstream().await;
    for format in ["json", "text"] {
        let mut gw = start(upstream, &["--log-format", format]).await;
        let mut sent = 0;
        let mut dropped = 0.0;
        for _batch in 0..40 {
            sent += load(gw.traffic, "/open/a", 250, false, 200).await.len();
            sent += load(gw.traffic, "/open/b", 250, true, 200).await.len();
            sent += load(gw.traffic, "/dead/c", 40, false, 502).await.len();
            dropped = metric(gw.admin, "jwtgate_access_log_dropped_total").await;
            if dropped > 0.0 {
                break;
            }
        }
        assert!(
            dropped > 0.0,
            "{format}: {sent} requests and no access line dropped: is stdout really stalled?"
        );
        // Still serving, the admin listener included, once lines are being dropped.
        load(gw.traffic, "/open/after", 200, true, 200).await;
        load(gw.traffic, "/dead/after", 20, false, 502).await;
        let (status, _) = get(gw.admin, "/healthz", false).await.expect("/healthz");
        assert_eq!(status, 200, "{format}");
        let later = metric(gw.admin, "jwtgate_access_log_dropped_total").await;
        assert!(later > dropped, "{format}: drops keep being counted");
        metric(gw.admin, "jwtgate_log_events_dropped_total").await;
        // The flush at exit gives up on a stdout nobody reads: the exit is bounded.
        let status = gw.terminate(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(0), "{format}:\n{}", gw.stderr());
    }
}

/// With a reader, every access line arrives, whole, as one JSON object, and nothing is
/// counted as dropped (a modest load over HTTP/1.1 and HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_reader_every_access_line_arrives_whole() {
    let (upstream, _stop) = echo_upstream().await;
    let mut gw = start(upstream, &[]).await;
    let mut stdout = gw.stdout.take().expect("stdout");
    let read = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = read.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(&chunk[..n]),
            }
        }
    });
    let mut ids = load(gw.traffic, "/open/h1", 600, false, 200).await;
    ids.extend(load(gw.traffic, "/open/h2", 600, true, 200).await);
    ids.extend(load(gw.traffic, "/dead/x", 50, true, 502).await);
    assert_eq!(
        metric(gw.admin, "jwtgate_access_log_dropped_total").await,
        0.0
    );
    assert_eq!(
        metric(gw.admin, "jwtgate_log_events_dropped_total").await,
        0.0
    );
    let status = gw.terminate(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", gw.stderr());
    reader.join().expect("reader");
    let bytes = std::mem::take(&mut *read.lock().expect("lock"));
    let text = String::from_utf8(bytes).expect("stdout is UTF-8");
    assert!(text.ends_with('\n'), "stdout ends with a whole line");
    let logged = access_ids(&text);
    assert_eq!(logged.len(), ids.len(), "one access line per request");
    let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let got: HashSet<&str> = logged.iter().map(String::as_str).collect();
    assert_eq!(want.len(), ids.len(), "request ids are unique");
    assert_eq!(got, want);
    assert!(text.contains("\"message\":\"stopped\""), "{text}");
}

/// Lines still queued when SIGTERM comes (the reader was not reading) reach stdout before the
/// process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_queued_lines_before_exit() {
    let (upstream, _stop) = echo_upstream().await;
    let mut gw = start(upstream, &[]).await;
    // More than a pipe holds (64 KiB), far less than the queue: nothing is dropped.
    let mut ids = load(gw.traffic, "/open/h1", 500, false, 200).await;
    ids.extend(load(gw.traffic, "/open/h2", 500, true, 200).await);
    assert_eq!(
        metric(gw.admin, "jwtgate_access_log_dropped_total").await,
        0.0
    );
    common::send_signal(&gw.child, "TERM");
    // Let the drain finish while nobody reads, then read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = gw.read_stdout_to_end();
    let status = common::wait_exit(&mut gw.child, Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", gw.stderr()));
    assert_eq!(status.code(), Some(0), "{}", gw.stderr());
    let text = reader.join().expect("reader");
    let logged: HashSet<String> = access_ids(&text).into_iter().collect();
    let missing = ids.iter().filter(|id| !logged.contains(*id)).count();
    assert_eq!(missing, 0, "access lines lost at exit:\n{}", gw.stderr());
    assert!(text.contains("\"message\":\"stopped\""), "{text}");
}

/// The request ids of the access lines in `stdout`; every line must be a JSON object.
fn access_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .filter(|v| v["target"] == "access")
        .map(|v| {
            v["request_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no request_id: {v}"))
                .to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// demo

/// Runs `jwtgate demo <args>` in `cwd` and returns what it printed once it says how to stop.
fn start_demo(cwd: &Path, args: &[&str]) -> (ChildGuard, String) {
    let mut child = Command::new(common::binary())
        .current_dir(cwd)
        .env_remove("JWTGATE_CONFIG")
        .env("JWTGATE_LOG", "warn")
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jwtgate demo");
    let stderr = child.stderr.take().expect("stderr");
    let child = ChildGuard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
                if line.contains("Press Ctrl-C to stop") {
                    return (child, printed);
                }
            }
            Err(_) => panic!("demo did not print its commands within 20 s:\n{printed}"),
        }
    }
}

/// The `TOKEN=` line and every command `demo` printed (curl and explain lines).
fn printed_commands(printed: &str) -> (String, Vec<String>) {
    let token = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("TOKEN="))
        .unwrap_or_else(|| panic!("no TOKEN= line:\n{printed}"))
        .to_owned();
    let commands: Vec<String> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl ") || is_explain(l))
        .map(str::to_owned)
        .collect();
    assert!(
        commands.iter().filter(|c| c.starts_with("curl ")).count() >= 3
            && commands.iter().any(|c| is_explain(c)),
        "demo prints curl and explain commands:\n{printed}"
    );
    (token, commands)
}

/// `<how to run jwtgate> explain ...`.
fn is_explain(line: &str) -> bool {
    line.split_whitespace().nth(1) == Some("explain")
}

/// Pastes each printed command (after the `TOKEN=` line) into `sh -c` from `cwd`: each must
/// succeed, the token's requests reaching the echo upstream with claim headers, the one
/// without a token getting a 401, and explain saying the request would be forwarded.
fn run_printed(cwd: &Path, printed: &str) {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "this test runs the printed curl commands: install curl"
    );
    let (token, commands) = printed_commands(printed);
    for cmd in commands {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{token}\n{cmd}"))
            .current_dir(cwd)
            .env_remove("JWTGATE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let context = format!(
            "`{cmd}` from {}:\n{}\n--- stdout:\n{stdout}\n--- stderr:\n{}\n--- demo printed:\n{printed}",
            cwd.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{context}");
        if is_explain(&cmd) {
            continue;
        }
        if cmd.contains("Bearer") {
            assert!(stdout.contains("x-auth-sub"), "{context}");
        } else {
            assert!(
                stdout.starts_with("HTTP/") && stdout.contains(" 401"),
                "{context}"
            );
        }
    }
}

/// The README's quick start: `demo` on the shipped gateway.toml from the repository root
/// (its fixed ports 8443, 9901 and 9000 must be free), every printed command pasted there.
#[test]
fn demo_commands_work_as_printed_from_the_repository_root() {
    let root = repo("");
    let (_demo, printed) = start_demo(&root, &[]);
    run_printed(&root, &printed);
}

/// `demo` started elsewhere (a relative `--config ../conf/gateway.toml`, and an absolute
/// one): the printed paths are right from that directory.
#[test]
fn demo_commands_work_from_another_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf dir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&conf).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::os::unix::fs::symlink(repo("certs"), conf.join("certs")).expect("symlink certs");
    let shipped = std::fs::read_to_string(repo("gateway.toml")).expect("gateway.toml");
    for (cwd, config) in [
        (work.clone(), "../conf dir/gateway.toml".to_owned()),
        (
            dir.path().to_owned(),
            conf.join("gateway.toml").display().to_string(),
        ),
    ] {
        let text = shipped
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{}", free_port()))
            .replace("127.0.0.1:9901", &format!("127.0.0.1:{}", free_port()))
            .replace("127.0.0.1:9000", &format!("127.0.0.1:{}", free_port()));
        std::fs::write(conf.join("gateway.toml"), text).expect("write config");
        let (_demo, printed) = start_demo(&cwd, &["--config", &config]);
        run_printed(&cwd, &printed);
    }
}

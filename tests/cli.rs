//! The built `jwtgate` binary: `check`, `dev-token`, and `run` with its signals.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;

use common::{free_port, is_located, repo};

const DEV_ISS: &str = "https://dev.jwtgate.local/";
const DEV_AUD: &str = "jwtgate-demo";

/// Runs the binary to completion from `cwd` with `args`.
fn jwtgate(cwd: &Path, args: &[&str]) -> Output {
    Command::new(common::binary())
        .current_dir(cwd)
        .env_remove("JWTGATE_CONFIG")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run jwtgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// The issuer block for the shipped dev keys (absolute paths, so any config dir works).
fn dev_issuer(name: &str) -> String {
    format!(
        r#"
[[issuer]]
name = "{name}"
issuer = "{DEV_ISS}"
audiences = ["{DEV_AUD}"]
algorithms = ["ES256", "RS256"]
keys = [{:?}, {:?}]
"#,
        repo("certs/dev-signing-es256.pem").display().to_string(),
        repo("certs/dev-signing-rs256.pem").display().to_string()
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_valid_config_exits_0_and_prints_routes_and_issuers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}\n[[route]]\nname = \"orders-route\"\npath_prefix = \"/api/orders\"\nupstream = \"http://127.0.0.1:9000\"\nauth = \"required\"\n\n[[route]]\nname = \"open-route\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9001\"\nauth = \"none\"\n",
            dev_issuer("dev-issuer")
        ),
    );
    let o = jwtgate(
        dir.path(),
        &["check", "--config", config.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    for word in [
        "issuers:",
        "dev-issuer",
        DEV_ISS,
        "dev-signing-es256",
        "dev-signing-rs256",
        "routes:",
        "orders-route",
        "/api/orders",
        "http://127.0.0.1:9000",
        "open-route",
        "http://127.0.0.1:9001",
    ] {
        assert!(
            out.contains(word),
            "check output should mention {word:?}:\n{}",
            show(&o)
        );
    }
    assert!(
        !out.contains("warning"),
        "no warnings expected:\n{}",
        show(&o)
    );
}

#[test]
fn check_invalid_config_exits_1_with_every_error_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[listen]\naddr = \"nope\"\n[limits]\nupstream_timeout = \"5 parsecs\"\n{}\n[[route]]\nname = \"r\"\npath_prefix = \"/a/../b\"\nupstream = \"ftp://x\"\nauth = \"sometimes\"\n",
            dev_issuer("dev")
        ),
    );
    let o = jwtgate(
        dir.path(),
        &["check", "--config", config.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 5, "five errors, one per line:\n{}", show(&o));
    for l in &lines {
        assert!(
            is_located(l, &config),
            "{l:?} is not `file:line:col: message`"
        );
    }
    for (line, word) in lines
        .iter()
        .zip(["nope", "parsecs", "/a/../b", "scheme", "sometimes"])
    {
        assert!(
            line.contains(word),
            "{line:?} should mention {word:?}:\n{err}"
        );
    }
    assert!(
        text(&o.stdout).trim().is_empty(),
        "nothing on stdout:\n{}",
        show(&o)
    );
}

#[test]
fn check_reports_key_loading_errors_at_the_key_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[listen]\naddr = \"127.0.0.1:0\"\n[[issuer]]\nname = \"dev\"\nissuer = \"https://i/\"\naudiences = [\"a\"]\nalgorithms = [\"ES256\"]\nkeys = [\"missing.pem\"]\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9000\"\nauth = \"required\"\n",
    );
    let o = jwtgate(
        dir.path(),
        &["check", "--config", config.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{}:8:8: ", config.display())) && first.contains("missing.pem"),
        "{}",
        show(&o)
    );
}

#[test]
fn check_missing_config_file_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    let o = jwtgate(
        dir.path(),
        &["check", "--config", missing.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("nope.toml"), "{}", show(&o));
}

#[test]
fn check_warns_about_a_shadowed_route_and_an_unused_issuer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}{}\n[[route]]\nname = \"first\"\npath_prefix = \"/api\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"http://127.0.0.1:9000\"\nauth = \"required\"\nissuers = [\"used\"]\n\n[[route]]\nname = \"second\"\npath_prefix = \"/api\"\nmethods = [\"GET\"]\nupstream = \"http://127.0.0.1:9001\"\nauth = \"required\"\nissuers = [\"used\"]\n",
            dev_issuer("used"),
            // Its own iss: two [[issuer]]s with one iss are a config error.
            dev_issuer("idle").replace(DEV_ISS, "https://idle.jwtgate.local/")
        ),
    );
    let o = jwtgate(
        dir.path(),
        &["check", "--config", config.to_str().expect("utf8")],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "warnings are not errors:\n{}",
        show(&o)
    );
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    let warnings: Vec<&str> = all.lines().filter(|l| l.contains("warning")).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("\"second\"") && w.contains("shadowed") && w.contains("\"first\"")),
        "a warning that route second is shadowed by first:\n{}",
        show(&o)
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("\"idle\"") && w.contains("not used")),
        "a warning that issuer idle is unused:\n{}",
        show(&o)
    );
    assert!(
        !warnings.iter().any(|w| w.contains("\"used\"")),
        "the used issuer is not warned about:\n{}",
        show(&o)
    );
    assert_eq!(warnings.len(), 2, "exactly two warnings:\n{}", show(&o));
}

#[test]
fn check_does_not_warn_when_methods_differ() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}\n[[route]]\nname = \"reads\"\npath_prefix = \"/api\"\nmethods = [\"GET\"]\nupstream = \"http://127.0.0.1:9000\"\nauth = \"required\"\n\n[[route]]\nname = \"writes\"\npath_prefix = \"/api\"\nmethods = [\"POST\"]\nupstream = \"http://127.0.0.1:9001\"\nauth = \"required\"\n",
            dev_issuer("dev")
        ),
    );
    let o = jwtgate(
        dir.path(),
        &["check", "--config", config.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!text(&o.stdout).contains("warning"), "{}", show(&o));
}

#[test]
fn check_shipped_gateway_toml_exits_0_from_any_directory() {
    // Run from elsewhere: the shipped config's relative key paths resolve against its own dir.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let shipped = repo("gateway.toml");
    let o = jwtgate(
        elsewhere.path(),
        &["check", "--config", shipped.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stdout).contains("routes:"), "{}", show(&o));
}

#[test]
fn check_reads_jwtgate_config_from_the_environment() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let o = Command::new(common::binary())
        .current_dir(elsewhere.path())
        .env("JWTGATE_CONFIG", repo("gateway.toml"))
        .arg("check")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

// ---------------------------------------------------------------------------------------------
// dev-token

/// Splits a token into (header, payload) JSON, asserting three non-empty base64url segments.
fn decode(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "three segments: {token}");
    assert!(
        parts.iter().all(|p| !p.is_empty()),
        "no empty segment: {token}"
    );
    let json = |s: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("base64url")).expect("json")
    };
    (json(parts[0]), json(parts[1]))
}

fn mint(args: &[&str]) -> Output {
    let mut all = vec!["dev-token"];
    all.extend_from_slice(args);
    jwtgate(&repo(""), &all)
}

fn minted(args: &[&str]) -> String {
    let o = mint(args);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout:\n{}", show(&o));
    lines[0].trim().to_owned()
}

/// Checks the signature and the standard claims with an independent verifier.
fn verify(token: &str, alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::DecodingKey) -> Value {
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&[DEV_AUD]);
    v.set_issuer(&[DEV_ISS]);
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(token, key, &v)
        .unwrap_or_else(|e| panic!("token should verify with the matching key: {e}\n{token}"))
        .claims
}

#[test]
fn dev_token_es256_has_the_default_claims_and_the_given_ttl() {
    let token = minted(&[
        "--key",
        "certs/dev-signing-es256.key",
        "--alg",
        "ES256",
        "--kid",
        "dev-signing-es256",
        "--claims",
        r#"{"scope":"x"}"#,
        "--ttl",
        "5m",
    ]);
    let (header, payload) = decode(&token);
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["kid"], "dev-signing-es256", "{header}");
    assert_eq!(payload["iss"], DEV_ISS, "{payload}");
    assert_eq!(payload["aud"], DEV_AUD, "{payload}");
    assert!(
        payload["sub"].as_str().is_some_and(|s| !s.is_empty()),
        "{payload}"
    );
    assert_eq!(payload["scope"], "x", "{payload}");
    let (exp, iat) = (payload["exp"].as_i64(), payload["iat"].as_i64());
    let (Some(exp), Some(iat)) = (exp, iat) else {
        panic!("exp and iat are numbers: {payload}")
    };
    assert_eq!(exp - iat, 300, "{payload}");
    assert!((iat - common::now()).abs() <= 60, "iat is now: {payload}");
    let pem = std::fs::read(repo("certs/dev-signing-es256.pem")).expect("read");
    verify(
        &token,
        jsonwebtoken::Algorithm::ES256,
        &jsonwebtoken::DecodingKey::from_ec_pem(&pem).expect("pem"),
    );
}

#[test]
fn dev_token_rs256_verifies_with_the_shipped_public_key() {
    let token = minted(&[
        "--key",
        "certs/dev-signing-rs256.key",
        "--alg",
        "RS256",
        "--kid",
        "dev-signing-rs256",
    ]);
    let (header, payload) = decode(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "dev-signing-rs256");
    // The default ttl is 15m.
    assert_eq!(
        payload["exp"].as_i64().expect("exp") - payload["iat"].as_i64().expect("iat"),
        900,
        "{payload}"
    );
    let pem = std::fs::read(repo("certs/dev-signing-rs256.pem")).expect("read");
    verify(
        &token,
        jsonwebtoken::Algorithm::RS256,
        &jsonwebtoken::DecodingKey::from_rsa_pem(&pem).expect("pem"),
    );
}

#[test]
fn dev_token_hs256_verifies_with_the_shipped_secret() {
    let token = minted(&[
        "--key",
        "certs/dev-hmac.secret",
        "--alg",
        "HS256",
        "--claims",
        r#"{"sub":"bob","roles":["a","b"]}"#,
        "--ttl",
        "1h",
    ]);
    let (header, payload) = decode(&token);
    assert_eq!(header["alg"], "HS256");
    assert!(
        header.get("kid").is_none_or(Value::is_null),
        "no kid given: {header}"
    );
    assert_eq!(
        payload["sub"], "bob",
        "--claims overrides the defaults: {payload}"
    );
    assert_eq!(payload["roles"], serde_json::json!(["a", "b"]));
    let mut secret = std::fs::read(repo("certs/dev-hmac.secret")).expect("read");
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    let claims = verify(
        &token,
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::DecodingKey::from_secret(&secret),
    );
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        3600
    );
}

#[test]
fn dev_token_refuses_a_bad_alg() {
    for alg in ["none", "HS255", "es256", ""] {
        let o = mint(&["--key", "certs/dev-signing-es256.key", "--alg", alg]);
        assert!(
            !o.status.success(),
            "--alg {alg:?} must fail:\n{}",
            show(&o)
        );
        assert!(
            text(&o.stdout).trim().is_empty(),
            "no token printed:\n{}",
            show(&o)
        );
        assert!(
            text(&o.stderr).contains("unsupported algorithm"),
            "--alg {alg:?} says why:\n{}",
            show(&o)
        );
    }
}

#[test]
fn dev_token_refuses_a_missing_key_file() {
    let o = mint(&["--key", "certs/does-not-exist.key", "--alg", "ES256"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).trim().is_empty(), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("does-not-exist.key") && err.contains("cannot read"),
        "{}",
        show(&o)
    );
}

#[test]
fn dev_token_refuses_a_key_of_the_wrong_type_and_bad_claims() {
    let o = mint(&["--key", "certs/dev-signing-es256.key", "--alg", "RS256"]);
    assert!(
        !o.status.success(),
        "an EC key cannot sign RS256:\n{}",
        show(&o)
    );
    assert!(text(&o.stdout).trim().is_empty(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("dev-signing-es256.key"),
        "{}",
        show(&o)
    );

    let o = mint(&[
        "--key",
        "certs/dev-signing-es256.key",
        "--alg",
        "ES256",
        "--claims",
        "[1,2]",
    ]);
    assert!(
        !o.status.success(),
        "--claims must be an object:\n{}",
        show(&o)
    );
    assert!(text(&o.stderr).contains("--claims"), "{}", show(&o));
}

// ---------------------------------------------------------------------------------------------
// run

/// A running `jwtgate run` process; killed on drop so no test leaks it.
struct Running {
    child: common::ChildGuard,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn signal(&self, sig: &str) {
        common::send_signal(&self.child, sig);
    }

    fn output(&self) -> String {
        common::output_of(&self.log, &self.stderr)
    }

    /// Waits (bounded) for the process to exit.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        common::wait_exit(&mut self.child, limit).await
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Starts `jwtgate run --config X` with the config `make(port)`, retrying on a port race, and
/// waits (bounded) until it accepts connections.
async fn start_run(make: impl Fn(u16) -> String) -> Running {
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = write_config(dir.path(), &make(port));
        let log = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let child = common::spawn_run(dir.path(), &config, &log, &stderr, |c| {
            c.env("JWTGATE_LOG", "info");
        });
        let mut r = Running {
            child,
            port,
            config,
            log,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(r.addr()).await.is_ok() {
                return r;
            }
            if !r.alive() {
                let out = r.output();
                if out.contains("binding the traffic listener") {
                    break; // the port was taken in between: try another
                }
                panic!("jwtgate run exited at start:\n{out}");
            }
            assert!(
                Instant::now() < deadline,
                "jwtgate run did not listen within 10 s:\n{}",
                r.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("could not find a free port for jwtgate run");
}

fn run_config(port: u16, upstream: SocketAddr, claim_header: &str) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:{port}"

[limits]
shutdown_grace = "5s"

[[issuer]]
name = "dev"
issuer = "{DEV_ISS}"
audiences = ["{DEV_AUD}"]
algorithms = ["ES256"]
keys = [{:?}]

[[route]]
name = "api"
path_prefix = "/api"
upstream = "http://{upstream}"
auth = "required"
[route.claim_headers]
"{claim_header}" = "sub"
"X-Auth-Scope" = "scope"
"#,
        repo("certs/dev-signing-es256.pem").display().to_string()
    )
}

fn dev_token() -> String {
    minted(&[
        "--key",
        "certs/dev-signing-es256.key",
        "--alg",
        "ES256",
        "--kid",
        "dev-signing-es256",
        "--claims",
        r#"{"scope":"x","sub":"carol"}"#,
        "--ttl",
        "5m",
    ])
}

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One GET on a fresh connection that is closed afterwards (so nothing idles in the gateway).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("connection", "close")];
    headers.extend(auth.as_deref().map(|a| ("authorization", a)));
    let url = format!("http://{addr}{path}");
    let a = common::client::request("GET", &url, &headers, Bytes::new()).await;
    Reply {
        status: a.status,
        body: a.body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_and_exits_0_on_sigterm() {
    let token = dev_token();
    let (upstream, _stop) = common::echo_upstream().await;
    let mut gw = start_run(|port| run_config(port, upstream, "X-Auth-Sub")).await;

    let r = get(gw.addr(), "/api/orders", Some(&token)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, gw.output());
    assert_eq!(r.upstream_header("x-auth-sub"), ["carol"], "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-scope"), ["x"], "{}", r.body);
    assert!(r.upstream_header("authorization").is_empty(), "{}", r.body);

    let r = get(gw.addr(), "/api/orders", None).await;
    assert_eq!(r.status, 401, "{}", r.body);

    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    let Some(status) = status else {
        panic!(
            "jwtgate did not exit within 10 s of SIGTERM:\n{}",
            gw.output()
        )
    };
    assert_eq!(
        status.code(),
        Some(0),
        "exit 0 after SIGTERM:\n{}",
        gw.output()
    );
    assert!(
        std::net::TcpStream::connect(gw.addr()).is_err(),
        "the traffic port is closed after exit"
    );
    // The request log is JSON on stdout and never holds the token.
    let log = std::fs::read_to_string(&gw.log).expect("log");
    assert!(!log.contains(&token), "the token never appears in the log");
}

/// An upstream that reports each request's arrival and answers only when released.
async fn held_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::watch::Sender<bool>,
) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (arrived_tx, arrived_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let arrived = arrived_tx.clone();
            let release = release_rx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let arrived = arrived.clone();
                    let mut release = release.clone();
                    async move {
                        let _ = arrived.send(());
                        let _ = release.wait_for(|r| *r).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"{\"done\":true}")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, arrived_rx, release_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_port_and_lets_an_in_flight_request_finish() {
    let token = dev_token();
    let (upstream, mut arrived, release) = held_upstream().await;
    let mut gw = start_run(|port| run_config(port, upstream, "X-Auth-Sub")).await;
    let addr = gw.addr();
    let t = token.clone();
    let in_flight = tokio::spawn(async move { get(addr, "/api/slow", Some(&t)).await });
    tokio::time::timeout(Duration::from_secs(5), arrived.recv())
        .await
        .expect("the request reached the upstream")
        .expect("channel open");

    gw.signal("TERM");
    // While draining, the traffic port stops accepting (bounded poll).
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the traffic port still accepts 5 s after SIGTERM:\n{}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gw.alive(),
        "the process waits for the in-flight request:\n{}",
        gw.output()
    );

    release.send(true).expect("release");
    let r = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("in-flight request answered")
        .expect("task");
    assert_eq!(r.status, 200, "the in-flight request finishes: {}", r.body);
    assert_eq!(r.body, "{\"done\":true}");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit 0 after draining:\n{}",
        gw.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_modified_config() {
    let token = dev_token();
    let (upstream, _stop) = common::echo_upstream().await;
    let mut gw = start_run(|port| run_config(port, upstream, "X-Auth-Sub")).await;
    let r = get(gw.addr(), "/api/x", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-sub"), ["carol"], "{}", r.body);

    std::fs::write(&gw.config, run_config(gw.port, upstream, "X-User")).expect("rewrite config");
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = get(gw.addr(), "/api/x", Some(&token)).await;
        assert_eq!(r.status, 200, "{}\n{}", r.body, gw.output());
        if !r.upstream_header("x-user").is_empty() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the new claim header did not appear within 5 s of SIGHUP:\n{}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.upstream_header("x-user"), ["carol"], "{}", r.body);
    assert!(
        r.upstream_header("x-auth-sub").is_empty(),
        "the old claim header is gone: {}",
        r.body
    );
    assert!(
        gw.alive(),
        "SIGHUP must not end the process:\n{}",
        gw.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_an_invalid_config_keeps_the_old_one() {
    let token = dev_token();
    let (upstream, _stop) = common::echo_upstream().await;
    let mut gw = start_run(|port| run_config(port, upstream, "X-Auth-Sub")).await;
    std::fs::write(
        &gw.config,
        run_config(gw.port, upstream, "X-User").replace("auth = \"required\"", "auth = \"maybe\""),
    )
    .expect("rewrite config");
    gw.signal("HUP");
    // The refusal is logged (bounded poll on the log file).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&gw.log)
        .unwrap_or_default()
        .contains("maybe")
    {
        assert!(
            Instant::now() < deadline,
            "the refused reload was not logged with its error within 5 s:\n{}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gw.alive(),
        "an invalid config must not end the process:\n{}",
        gw.output()
    );
    let r = get(gw.addr(), "/api/x", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.upstream_header("x-auth-sub"),
        ["carol"],
        "old config serves: {}",
        r.body
    );
    assert!(r.upstream_header("x-user").is_empty(), "{}", r.body);
    let r = get(gw.addr(), "/api/x", None).await;
    assert_eq!(r.status, 401, "auth stays required: {}", r.body);
}

#[test]
fn run_with_an_invalid_config_exits_1_with_located_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[listen]\naddr = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"sometimes\"\n",
    );
    let o = jwtgate(
        dir.path(),
        &["run", "--config", config.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.lines()
            .any(|l| is_located(l, &config) && l.contains("sometimes")),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_idle_keep_alive_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, _stop) = common::echo_upstream().await;
    // A grace period far longer than the wait below: only idle connections are open.
    let mut gw = start_run(|port| {
        run_config(port, upstream, "X-Auth-Sub")
            .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"60s\"")
            .replace("auth = \"required\"", "auth = \"none\"")
    })
    .await;
    let mut idle = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    idle.write_all(b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", text(&buf[..n]));
    // The connection stays open and idle.
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "an idle keep-alive connection must not hold the drain for shutdown_grace:\n{}",
        gw.output()
    );
    drop(idle);
}

//! Observability: Prometheus metrics after known traffic, the admin endpoints, JSON access logs,
//! and that no token ever leaks into an answer, a log line, a metric or `/config`.
//!
//! SPEC.md "Admin listener" and "Logs".

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------------
// Local helpers

/// How long a polled condition may take to hold.
const WAIT: Duration = Duration::from_secs(5);

/// An answer read whole, from the gateway or its admin listener.
type Reply = Answer;

impl Answer {
    /// Everything the client saw: status, every header, the body.
    fn transcript(&self) -> String {
        let mut t = format!("{}\n", self.status);
        for (n, v) in &self.headers {
            t.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        t.push_str(&self.body);
        t
    }
}

/// Any request, through a real HTTP/1.1 client.
async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    client::request(method, url, headers, Bytes::new()).await
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", &format!("http://{addr}{path}"), headers).await
}

/// Every secret a test sent; every text the test saw is checked against all of them.
#[derive(Default)]
struct Secrets {
    tokens: Vec<String>,
    seen: Vec<(String, String)>,
}

impl Secrets {
    /// Registers a token (returned, for convenience).
    fn token(&mut self, t: String) -> String {
        self.tokens.push(t.clone());
        t
    }

    /// Records a text the test received (an answer, a log, a metrics page).
    fn saw(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.seen.push((what.into(), text.into()));
    }

    /// Records a reply and returns it.
    fn reply(&mut self, what: &str, r: Reply) -> Reply {
        self.saw(what, r.transcript());
        r
    }

    /// No recorded text holds any token, nor the signature segment of one.
    fn assert_no_leak(&self) {
        for t in &self.tokens {
            let sig = t
                .rsplit('.')
                .next()
                .filter(|s| s.len() >= 16 && t.contains('.'));
            for (what, text) in &self.seen {
                assert!(
                    !text.contains(t.as_str()),
                    "{what} holds a token that was sent:\n{text}"
                );
                if let Some(sig) = sig {
                    assert!(
                        !text.contains(sig),
                        "{what} holds the signature segment of a token that was sent:\n{text}"
                    );
                }
            }
        }
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A tiny parser of the Prometheus text exposition format: `name{k="v",...} value [ts]`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or_else(|| panic!("metrics line {}: no value: {raw}", n + 1));
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let end;
            loop {
                while chars
                    .next_if(|(_, c)| *c == ',' || c.is_whitespace())
                    .is_some()
                {}
                match chars.peek() {
                    Some((i, '}')) => {
                        end = *i + 1;
                        break;
                    }
                    None => panic!("metrics line {}: unterminated labels: {raw}", n + 1),
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(
                    chars.next().map(|(_, c)| c),
                    Some('"'),
                    "metrics line {}: label value not quoted: {raw}",
                    n + 1
                );
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("metrics line {}: bad escape: {raw}", n + 1),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => panic!("metrics line {}: unterminated value: {raw}", n + 1),
                    }
                }
                assert!(
                    labels.insert(key.trim().to_owned(), value).is_none(),
                    "metrics line {}: duplicate label: {raw}",
                    n + 1
                );
            }
            rest = &after[end..];
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("metrics line {}: no value: {raw}", n + 1));
        let value: f64 = value_text
            .parse()
            .unwrap_or_else(|e| panic!("metrics line {}: value {value_text:?}: {e}", n + 1));
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The parsed `/metrics` page.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn new(text: String) -> Scrape {
        let samples = parse_prometheus(&text);
        Scrape { text, samples }
    }

    /// The value of the sample `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<_> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{want:?} appears {} times:\n{}",
            found.len(),
            self.text
        );
        found.first().map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Every series of `name`, keyed by the values of `keys` (in that order), with a non-zero
    /// value (a counter created at zero says nothing happened).
    fn nonzero(&self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
        let mut out = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            let label_names: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
            let want: BTreeSet<&str> = keys.iter().copied().collect();
            assert_eq!(label_names, want, "{name} has labels {:?}", s.labels);
            if s.value != 0.0 {
                let key = keys.iter().map(|k| s.labels[*k].clone()).collect();
                assert!(
                    out.insert(key, s.value).is_none(),
                    "{name}: duplicate series"
                );
            }
        }
        out
    }
}

fn series(rows: &[(&[&str], f64)]) -> BTreeMap<Vec<String>, f64> {
    rows.iter()
        .map(|(k, v)| (k.iter().map(|s| (*s).to_owned()).collect(), *v))
        .collect()
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let r = get(admin, "/metrics", &[]).await;
    assert_eq!(r.status, 200, "/metrics: {}", r.body);
    Scrape::new(r.body)
}

/// A gateway run through the library `App`, with its own traffic and admin listeners.
struct Gw {
    dir: tempfile::TempDir,
    app: Arc<jwtgate::App>,
    traffic: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    _stop: oneshot::Sender<()>,
    _stop_upstream: oneshot::Sender<()>,
}

/// Substitutes `{upstream}` (echo), `{dead}` (a refused port), `{dir}` (the temp dir holding
/// the keys), `{manifest}` (the crate root) in `config` and writes it to `gateway.toml`.
fn write_config(dir: &Path, config: &str, upstream: SocketAddr) -> PathBuf {
    let text = config
        .replace("{upstream}", &format!("http://{upstream}"))
        .replace("{dead}", &format!("http://127.0.0.1:{}", free_port()))
        .replace("{dir}", &dir.display().to_string())
        .replace("{manifest}", env!("CARGO_MANIFEST_DIR"));
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A fresh temp dir holding the test keys and the config (as `gateway.toml`).
fn prepare_dir(config: &str, upstream: SocketAddr) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let path = write_config(dir.path(), config, upstream);
    (dir, path)
}

impl Gw {
    async fn start(config: &str) -> Gw {
        Self::start_with(config, |_| {}).await
    }

    /// Like [`Gw::start`], running `prepare` on the directory before the config is loaded.
    async fn start_with(config: &str, prepare: impl FnOnce(&Path)) -> Gw {
        let gw = Self::start_unready(config, prepare).await;
        gw.wait_ready().await;
        gw
    }

    /// Like [`Gw::start_with`], without waiting for `/readyz`.
    async fn start_unready(config: &str, prepare: impl FnOnce(&Path)) -> Gw {
        let (upstream, stop_upstream) = echo_upstream().await;
        let (dir, path) = prepare_dir(config, upstream);
        prepare(dir.path());
        let app = jwtgate::App::load(&path).unwrap_or_else(|e| panic!("config refused:\n{e}"));
        let app = Arc::new(app);
        let traffic_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let traffic = traffic_l.local_addr().expect("addr");
        let admin = admin_l.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(jwtgate::run(
            jwtgate::Listeners {
                traffic: traffic_l,
                admin: Some(admin_l),
            },
            app.clone(),
            async move {
                let _ = stopped.await;
                Duration::from_secs(1)
            },
        ));
        Gw {
            dir,
            app,
            traffic,
            admin,
            upstream,
            _stop: stop,
            _stop_upstream: stop_upstream,
        }
    }

    async fn wait_ready(&self) {
        let admin = self.admin;
        eventually(WAIT, "/readyz 200", || async move {
            get(admin, "/readyz", &[]).await.status == 200
        })
        .await;
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        get(self.traffic, path, headers).await
    }

    async fn scrape(&self) -> Scrape {
        scrape(self.admin).await
    }
}

/// The static-key issuer: two PEM keys (kids `rsa` and `ec256`).
const STATIC_ISSUER: &str = r#"
[[issuer]]
name = "static"
issuer = "https://issuer.test/"
audiences = ["test-api"]
algorithms = ["RS256", "ES256"]
keys = ["rsa.pem", "ec256.pem"]
leeway = "30s"
"#;

/// Routes `req` (required, scope read), `opt` (optional), `public` (none) and `dead` (a refused
/// upstream); no catch-all. Upstream timeout 300 ms.
fn traffic_config() -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"

[limits]
upstream_timeout = "300ms"
{STATIC_ISSUER}
[[route]]
name = "req"
path_prefix = "/api"
upstream = "{{upstream}}"
auth = "required"
require = {{ scope = "read" }}
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "opt"
path_prefix = "/opt"
upstream = "{{upstream}}"
auth = "optional"

[[route]]
name = "public"
path_prefix = "/public"
upstream = "{{upstream}}"
auth = "none"

[[route]]
name = "dead"
path_prefix = "/dead"
upstream = "{{dead}}"
auth = "none"
"#
    )
}

fn claims_with_scope() -> Value {
    let mut c = claims();
    c["scope"] = "read".into();
    c
}

fn rs256_header(kid: &str) -> String {
    json!({ "alg": "RS256", "typ": "JWT", "kid": kid }).to_string()
}

// ---------------------------------------------------------------------------------------------
// 1. Exact counters after known traffic

/// The known traffic of the counters test: each answer checked for its status and recorded.
async fn known_traffic(gw: &Gw, s: &mut Secrets) {
    let now = now();
    let expect = |what: &str, r: Reply, status: u16, s: &mut Secrets| {
        assert_eq!(r.status, status, "{what}: {}", r.transcript());
        if status == 401 {
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|w| w.starts_with("Bearer realm=\"jwtgate\"")),
                "{what}: {}",
                r.transcript()
            );
        }
        if status >= 400 {
            assert!(
                r.json()["error"].is_string(),
                "{what}: the gateway's JSON error: {}",
                r.body
            );
        }
        s.reply(what, r);
    };
    let bearer = |t: &str| format!("Bearer {t}");

    // req: 3 valid.
    for (i, alg) in ["RS256", "ES256", "RS256"].iter().enumerate() {
        let t = s.token(token(alg, &claims_with_scope()));
        let r = gw
            .get(&format!("/api/ok{i}"), &[("authorization", &bearer(&t))])
            .await;
        let echoed = r.json();
        assert_eq!(
            echoed["headers"]["x-auth-sub"],
            json!(["alice"]),
            "{}",
            r.body
        );
        expect("valid", r, 200, s);
    }
    // req: 2 missing.
    for _ in 0..2 {
        let r = gw.get("/api/none", &[]).await;
        expect("missing", r, 401, s);
    }
    let bad = |name: &str, tok: String| (name.to_owned(), tok);
    let mut c = claims_with_scope();
    c["iat"] = (now - 7200).into();
    c["exp"] = (now - 3600).into();
    let expired = token("RS256", &c);
    let mut c = claims_with_scope();
    c["nbf"] = (now + 3600).into();
    let not_yet = token("RS256", &c);
    let bad_sig = sign_raw_other(
        "RS256",
        &rs256_header("rsa"),
        &claims_with_scope().to_string(),
    );
    let mut c = claims_with_scope();
    c["aud"] = "other-api".into();
    let wrong_aud = token("ES256", &c);
    let mut c = claims_with_scope();
    c["iss"] = "https://evil.test/".into();
    let wrong_iss = token("ES256", &c);
    let unknown_kid = sign_raw(
        "RS256",
        &rs256_header("kid-unknown-zzz"),
        &claims_with_scope().to_string(),
    );
    let hs = token("HS256", &claims_with_scope());
    let malformed = "malformed-token-q9z-not-a-jwt".to_owned();
    let cases = [
        bad("expired", expired.clone()),
        bad("not_yet_valid", not_yet),
        bad("bad_signature", bad_sig),
        bad("wrong_audience", wrong_aud),
        bad("wrong_issuer", wrong_iss),
        bad("unknown_key", unknown_kid),
        bad("algorithm_not_allowed", hs),
        bad("malformed", malformed),
    ];
    for (name, tok) in cases {
        let t = s.token(tok);
        let r = gw.get("/api/bad", &[("authorization", &bearer(&t))]).await;
        expect(&name, r, 401, s);
    }
    // req: insufficient claims (no scope).
    let t = s.token(token("RS256", &claims()));
    let r = gw.get("/api/x", &[("authorization", &bearer(&t))]).await;
    assert!(
        r.header("www-authenticate")
            .is_some_and(|w| w.contains("error=\"insufficient_scope\"")),
        "{}",
        r.transcript()
    );
    expect("insufficient", r, 403, s);
    // req: upstream timeout.
    let t = s.token(token("RS256", &claims_with_scope()));
    let r = gw
        .get("/api/slow?delay_ms=3000", &[("authorization", &bearer(&t))])
        .await;
    expect("timeout", r, 504, s);

    // opt: valid, anonymous, expired.
    let t = s.token(token("ES256", &claims()));
    let r = gw.get("/opt/a", &[("authorization", &bearer(&t))]).await;
    expect("opt valid", r, 200, s);
    let r = gw.get("/opt/a", &[]).await;
    expect("opt anonymous", r, 200, s);
    let t = s.token(expired);
    let r = gw.get("/opt/a", &[("authorization", &bearer(&t))]).await;
    expect("opt expired", r, 401, s);

    // public: with and without a token, on a distinctive path.
    let t = s.token(token("RS256", &claims()));
    let r = gw
        .get(
            "/public/secret-path-xyz?x=1",
            &[("authorization", &bearer(&t))],
        )
        .await;
    expect("public with token", r, 200, s);
    let r = gw.get("/public/secret-path-xyz", &[]).await;
    expect("public", r, 200, s);

    // dead: upstream refuses.
    let r = gw.get("/dead/x", &[]).await;
    expect("dead", r, 502, s);

    // unmatched.
    let r = gw.get("/nowhere", &[]).await;
    expect("unmatched", r, 404, s);
    let t = s.token(token("RS256", &claims_with_scope()));
    let r = gw
        .get(
            "/secret-path-xyz-unmatched",
            &[("authorization", &bearer(&t))],
        )
        .await;
    expect("unmatched with token", r, 404, s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_exactly() {
    let started = now();
    let gw = Gw::start(&traffic_config()).await;
    let mut secrets = Secrets::default();
    known_traffic(&gw, &mut secrets).await;
    let m = gw.scrape().await;
    secrets.saw("/metrics", m.text.clone());

    assert_eq!(
        m.nonzero("jwtgate_requests_total", &["route", "code"]),
        series(&[
            (&["req", "200"], 3.0),
            (&["req", "401"], 10.0),
            (&["req", "403"], 1.0),
            (&["req", "504"], 1.0),
            (&["opt", "200"], 2.0),
            (&["opt", "401"], 1.0),
            (&["public", "200"], 2.0),
            (&["dead", "502"], 1.0),
            (&["", "404"], 2.0),
        ]),
        "jwtgate_requests_total:\n{}",
        m.text
    );
    assert_eq!(
        m.nonzero("jwtgate_auth_failures_total", &["route", "reason"]),
        series(&[
            (&["req", "missing"], 2.0),
            (&["req", "malformed"], 1.0),
            (&["req", "bad_signature"], 1.0),
            (&["req", "expired"], 1.0),
            (&["req", "not_yet_valid"], 1.0),
            (&["req", "wrong_issuer"], 1.0),
            (&["req", "wrong_audience"], 1.0),
            (&["req", "unknown_key"], 1.0),
            (&["req", "algorithm_not_allowed"], 1.0),
            (&["req", "insufficient_claims"], 1.0),
            (&["opt", "expired"], 1.0),
        ]),
        "jwtgate_auth_failures_total:\n{}",
        m.text
    );
    assert_eq!(
        m.nonzero("jwtgate_upstream_errors_total", &["route", "kind"]),
        series(&[(&["dead", "connect"], 1.0), (&["req", "timeout"], 1.0)]),
        "jwtgate_upstream_errors_total:\n{}",
        m.text
    );
    for (route, n) in [
        ("req", 15.0),
        ("opt", 3.0),
        ("public", 2.0),
        ("dead", 1.0),
        ("", 2.0),
    ] {
        assert_eq!(
            m.value(
                "jwtgate_request_duration_seconds_count",
                &[("route", route)]
            ),
            n,
            "histogram count for route {route:?}"
        );
        assert_eq!(
            m.value(
                "jwtgate_request_duration_seconds_bucket",
                &[("route", route), ("le", "+Inf")]
            ),
            n,
            "+Inf bucket for route {route:?}"
        );
    }
    assert_eq!(
        m.value("jwtgate_keys_loaded", &[("issuer", "static")]),
        2.0,
        "two PEM keys"
    );
    assert_eq!(
        m.value(
            "jwtgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(m.value("jwtgate_requests_in_flight", &[]), 0.0, "at rest");
    let loaded = m.value("jwtgate_config_last_reload_success_timestamp_seconds", &[]);
    assert!(
        loaded >= (started - 1) as f64 && loaded <= (now() + 1) as f64,
        "config_last_reload_success_timestamp_seconds {loaded} is the load time (~{started})"
    );

    // Labels never carry a token, a subject, a kid or a raw path.
    let mut forbidden: Vec<String> = secrets.tokens.clone();
    forbidden.extend(
        [
            "alice",
            "kid-unknown-zzz",
            "secret-path-xyz",
            "/public",
            "/api",
            "/nowhere",
            "q9z",
        ]
        .map(str::to_owned),
    );
    for s in &m.samples {
        for (k, v) in &s.labels {
            for f in &forbidden {
                assert!(
                    !v.contains(f.as_str()),
                    "{}{{{k}={v:?}}} carries {f:?}",
                    s.name
                );
            }
            assert!(
                !["rsa", "ec256"].contains(&v.as_str()),
                "{}{{{k}={v:?}}} carries a kid",
                s.name
            );
        }
    }
    for f in [
        "alice",
        "kid-unknown-zzz",
        "secret-path-xyz",
        "nowhere",
        "q9z",
    ] {
        assert!(!m.text.contains(f), "/metrics mentions {f:?}:\n{}", m.text);
    }
    secrets.assert_no_leak();
}

/// An upstream that reads one request head, reports it, and never answers.
async fn hold_upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::AsyncReadExt;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind hold");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(());
                // Hold the connection open, unanswered, until the gateway gives up on it.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_abandoned_by_its_client_is_still_counted() {
    use tokio::io::AsyncWriteExt;
    let (hold, mut arrived) = hold_upstream().await;
    let config = format!(
        r#"
[listen]
addr = "127.0.0.1:0"

[limits]
upstream_timeout = "500ms"
{STATIC_ISSUER}
[[route]]
name = "hold"
path_prefix = "/hold"
upstream = "http://{hold}"
auth = "none"
"#
    );
    let gw = Gw::start(&config).await;
    let mut c = tokio::net::TcpStream::connect(gw.traffic)
        .await
        .expect("connect");
    c.write_all(b"GET /hold/x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    tokio::time::timeout(Duration::from_secs(5), arrived.recv())
        .await
        .expect("the request reached the upstream")
        .expect("upstream running");
    assert_eq!(
        gw.scrape().await.value("jwtgate_requests_in_flight", &[]),
        1.0,
        "the request is in flight"
    );
    drop(c); // the client goes away before the answer
    let admin = gw.admin;
    eventually(WAIT, "the abandoned request leaves flight", || async move {
        scrape(admin).await.value("jwtgate_requests_in_flight", &[]) == 0.0
    })
    .await;
    // Whatever the gateway calls it (499, 502, 504, ...), the request is counted once and
    // its duration observed: one access line and one count per request.
    eventually(WAIT, "the abandoned request is counted", || async move {
        let m = scrape(admin).await;
        let counted: f64 = m
            .nonzero("jwtgate_requests_total", &["route", "code"])
            .iter()
            .filter(|(k, _)| k[0] == "hold")
            .map(|(_, v)| v)
            .sum();
        counted == 1.0
            && m.get(
                "jwtgate_request_duration_seconds_count",
                &[("route", "hold")],
            ) == Some(1.0)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. Histogram buckets

#[tokio::test]
async fn request_duration_buckets_span_sub_millisecond_to_seconds() {
    let gw = Gw::start(&traffic_config()).await;
    let r = gw.get("/public/a", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = gw.scrape().await;
    let buckets: Vec<(String, f64)> = m
        .samples
        .iter()
        .filter(|s| {
            s.name == "jwtgate_request_duration_seconds_bucket"
                && s.labels.get("route").map(String::as_str) == Some("public")
        })
        .map(|s| (s.labels["le"].clone(), s.value))
        .collect();
    let les: Vec<&str> = buckets.iter().map(|(le, _)| le.as_str()).collect();
    for want in ["0.0001", "0.001", "0.01", "0.1", "1", "10", "+Inf"] {
        assert!(les.contains(&want), "bucket le={want:?} missing: {les:?}");
    }
    let bounds: Vec<f64> = les
        .iter()
        .map(|l| l.parse::<f64>().expect("le is a number"))
        .collect();
    assert!(
        bounds.windows(2).all(|w| w[0] < w[1]),
        "bucket bounds ascend: {les:?}"
    );
    let counts: Vec<f64> = buckets.iter().map(|(_, v)| *v).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "buckets are cumulative: {buckets:?}"
    );
    assert_eq!(counts.last(), Some(&1.0), "{buckets:?}");
    assert_eq!(
        m.value(
            "jwtgate_request_duration_seconds_count",
            &[("route", "public")]
        ),
        1.0
    );
    let sum = m.value(
        "jwtgate_request_duration_seconds_sum",
        &[("route", "public")],
    );
    assert!(sum > 0.0 && sum < 10.0, "duration sum {sum}");
}

// ---------------------------------------------------------------------------------------------
// 3. Admin endpoints

const FILE_SECRET: &str = "file-secret-7f3a9c-do-not-show-0123456789abcdef";
const ENV_SECRET: &str = "env-secret-41b2e8-do-not-show-0123456789abcdef";
const ENV_VAR: &str = "JWTGATE_OBS_TEST_HMAC_SECRET";

fn admin_config() -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
{STATIC_ISSUER}
[[issuer]]
name = "filehmac"
issuer = "https://file.test/"
audiences = ["test-api"]
algorithms = ["HS256"]
hmac_secret_file = "hmac-file.secret"

[[issuer]]
name = "envhmac"
issuer = "https://env.test/"
audiences = ["test-api"]
algorithms = ["HS384"]
hmac_secret_env = "{ENV_VAR}"

[[route]]
name = "req"
path_prefix = "/api"
upstream = "{{upstream}}"
auth = "required"

[[route]]
name = "opt"
path_prefix = "/opt"
upstream = "{{upstream}}"
auth = "optional"
issuers = ["filehmac", "envhmac"]

[[route]]
name = "public"
path_prefix = "/public"
upstream = "{{upstream}}"
auth = "none"
"#
    )
}

async fn start_admin_gw() -> Gw {
    std::env::set_var(ENV_VAR, ENV_SECRET);
    Gw::start_with(&admin_config(), |dir| {
        std::fs::write(dir.join("hmac-file.secret"), format!("{FILE_SECRET}\n")).expect("write");
    })
    .await
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let gw = start_admin_gw().await;
    let r = get(gw.admin, "/healthz", &[]).await;
    assert_eq!(r.status, 200, "/healthz: {}", r.body);
    let r = get(gw.admin, "/readyz", &[]).await;
    assert_eq!(r.status, 200, "/readyz once ready: {}", r.body);
    assert!(gw.app.health.is_ready());
    // The admin endpoints are not on the traffic port.
    let r = gw.get("/healthz", &[]).await;
    assert_eq!(r.status, 404, "traffic port, no route: {}", r.body);
}

#[tokio::test]
async fn config_shows_routes_and_issuers_without_secrets() {
    let gw = start_admin_gw().await;
    let m = gw.scrape().await;
    // The secrets were loaded (so the redaction is tested against real secrets).
    assert_eq!(
        m.value("jwtgate_keys_loaded", &[("issuer", "filehmac")]),
        1.0
    );
    assert_eq!(
        m.value("jwtgate_keys_loaded", &[("issuer", "envhmac")]),
        1.0
    );

    let r = get(gw.admin, "/config", &[]).await;
    assert_eq!(r.status, 200, "/config: {}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.header("content-type")
    );
    let c = r.json();
    let names = |key: &str| -> BTreeSet<String> {
        c[key]
            .as_array()
            .unwrap_or_else(|| panic!("/config has no {key} array: {c}"))
            .iter()
            .map(|x| x["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(
        names("routes"),
        ["req", "opt", "public"].map(String::from).into(),
        "{c}"
    );
    assert_eq!(
        names("issuers"),
        ["static", "filehmac", "envhmac"].map(String::from).into(),
        "{c}"
    );
    let route = |n: &str| {
        c["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .expect("route")
    };
    assert_eq!(route("req")["path_prefix"], "/api", "{c}");
    assert_eq!(route("opt")["auth"], "optional", "{c}");
    assert_eq!(route("public")["auth"], "none", "{c}");
    for secret in [
        FILE_SECRET,
        ENV_SECRET,
        "file-secret-7f3a9c",
        "env-secret-41b2e8",
    ] {
        assert!(
            !r.body.contains(secret),
            "/config shows a secret:\n{}",
            r.body
        );
    }
    // The whole keys material is not secret, but the HMAC secret of the test keys never
    // appears either (it is not configured here).
    let hmac = String::from_utf8_lossy(&keys().hmac_secret).into_owned();
    assert!(!r.body.contains(&hmac), "{}", r.body);
    // /metrics never shows them either.
    for secret in [FILE_SECRET, ENV_SECRET] {
        assert!(!m.text.contains(secret), "/metrics shows a secret");
    }
}

#[tokio::test]
async fn admin_unknown_path_is_404_and_post_is_405() {
    let gw = start_admin_gw().await;
    let r = get(gw.admin, "/nope", &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get(gw.admin, "/metrics/extra", &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    for path in ["/metrics", "/config", "/healthz", "/readyz"] {
        let r = send("POST", &format!("http://{}{path}", gw.admin), &[]).await;
        assert_eq!(r.status, 405, "POST {path}: {}", r.body);
    }
    let r = get(gw.admin, "/metrics", &[]).await;
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.header("content-type")
    );
}

#[tokio::test]
async fn credentials_in_key_urls_are_refused_so_they_never_reach_config_or_logs() {
    let config = r#"
[listen]
addr = "127.0.0.1:0"

[[issuer]]
name = "remote"
issuer = "https://remote.test/"
audiences = ["test-api"]
algorithms = ["RS256"]
jwks_url = "http://jwks-user:jwks-password-9d8e7f@127.0.0.1:9/jwks.json"

[[issuer]]
name = "discovered"
issuer = "https://discovered.test/"
audiences = ["test-api"]
algorithms = ["RS256"]
discovery_url = "http://idp-user:url-password-1a2b3c@127.0.0.1:9/.well-known/openid-configuration"

[[route]]
name = "req"
path_prefix = "/"
upstream = "{upstream}"
auth = "required"
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config.replace("{upstream}", "http://127.0.0.1:9")).expect("write");
    let errors = match jwtgate::Config::load(&path) {
        Ok(_) => panic!("a key URL with credentials must be refused"),
        Err(e) => e.to_string(),
    };
    assert_eq!(errors.lines().count(), 2, "{errors}");
    assert!(
        errors.contains("jwks_url must not carry credentials"),
        "{errors}"
    );
    assert!(
        errors.contains("discovery_url must not carry credentials"),
        "{errors}"
    );
    assert!(
        !errors.contains("jwks-password-9d8e7f") && !errors.contains("url-password-1a2b3c"),
        "{errors}"
    );
}

/// Days since the Unix epoch of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `notAfter` of a certificate as Unix seconds, via `openssl x509 -enddate` (None without
/// openssl 3).
fn openssl_not_after(cert: &Path) -> Option<i64> {
    let out = Command::new("openssl")
        .args(["x509", "-enddate", "-noout", "-dateopt", "iso_8601", "-in"])
        .arg(cert)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // notAfter=2029-02-25 17:35:15Z
    let text = String::from_utf8(out.stdout).ok()?;
    let v = text.trim().strip_prefix("notAfter=")?.strip_suffix('Z')?;
    let (date, time) = v.split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    Some(days_from_civil(d[0], d[1], d[2]) * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

#[tokio::test]
async fn tls_cert_expiry_gauge_is_the_certificates_not_after() {
    let config = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
tls = {{ cert = "{{manifest}}/certs/server.crt", key = "{{manifest}}/certs/server.key" }}
{STATIC_ISSUER}
[[route]]
name = "req"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "required"
"#
    );
    let gw = Gw::start(&config).await;
    let cert = repo("certs/server.crt");
    let m = gw.scrape().await;
    let got = m.value(
        "jwtgate_tls_cert_expiry_timestamp_seconds",
        &[("cert", &cert.display().to_string())],
    );
    match openssl_not_after(&cert) {
        Some(want) => assert_eq!(got, want as f64, "notAfter of {}", cert.display()),
        None => {
            let now = now() as f64;
            assert!(
                got > now && got < now + 3.0 * 366.0 * 86_400.0,
                "expiry {got} is in the next three years"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Reload metrics

fn reload_config(extra_route: bool, broken: bool) -> String {
    let mut c = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
{STATIC_ISSUER}
[[route]]
name = "public"
path_prefix = "/public"
upstream = "{{upstream}}"
auth = "none"
"#
    );
    if extra_route {
        c.push_str(
            r#"
[[route]]
name = "added"
path_prefix = "/added"
upstream = "{upstream}"
auth = "none"
"#,
        );
    }
    if broken {
        c.push_str("\n[[route]]\nname = \"broken\"\nbogus_key = 1\n");
    }
    c
}

/// Through `reload_config` directly (no watcher, so the counts are exact).
#[tokio::test]
async fn reload_counters_count_success_and_failure_exactly() {
    let (upstream, _stop) = echo_upstream().await;
    let (dir, path) = prepare_dir(&reload_config(false, false), upstream);
    let app = jwtgate::App::load(&path).unwrap_or_else(|e| panic!("config refused:\n{e}"));
    let m = Scrape::new(app.metrics.render());
    assert_eq!(
        m.nonzero("jwtgate_config_reloads_total", &["result"]),
        series(&[]),
        "no reload yet"
    );
    let loaded_at = m.value("jwtgate_config_last_reload_success_timestamp_seconds", &[]);
    assert!(loaded_at > 0.0);

    write_config(dir.path(), &reload_config(true, false), upstream);
    app.reload_config()
        .unwrap_or_else(|e| panic!("good edit refused:\n{e}"));
    let m = Scrape::new(app.metrics.render());
    assert_eq!(
        m.nonzero("jwtgate_config_reloads_total", &["result"]),
        series(&[(&["success"], 1.0)]),
        "{}",
        m.text
    );
    let reloaded_at = m.value("jwtgate_config_last_reload_success_timestamp_seconds", &[]);
    assert!(reloaded_at >= loaded_at, "{reloaded_at} >= {loaded_at}");
    assert_eq!(app.state.load().config.routes.len(), 2);

    write_config(dir.path(), &reload_config(true, true), upstream);
    assert!(app.reload_config().is_err(), "a bad edit is refused");
    let m = Scrape::new(app.metrics.render());
    assert_eq!(
        m.nonzero("jwtgate_config_reloads_total", &["result"]),
        series(&[(&["success"], 1.0), (&["failure"], 1.0)]),
        "{}",
        m.text
    );
    assert_eq!(
        m.value("jwtgate_config_last_reload_success_timestamp_seconds", &[]),
        reloaded_at,
        "a failed reload does not move the last-success time"
    );
    assert_eq!(app.state.load().config.routes.len(), 2, "old config kept");
}

/// A config whose `static` issuer holds `keys` and, when `second` is given, an issuer `second`
/// reading that PEM file.
fn keys_config(keys: &str, second: Option<&str>) -> String {
    let mut c = format!(
        r#"
[listen]
addr = "127.0.0.1:0"

[[issuer]]
name = "static"
issuer = "https://issuer.test/"
audiences = ["test-api"]
algorithms = ["RS256", "ES256"]
keys = [{keys}]

[[route]]
name = "req"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "required"
"#
    );
    if let Some(file) = second {
        c.push_str(&format!(
            r#"
[[issuer]]
name = "second"
issuer = "https://second.test/"
audiences = ["test-api"]
algorithms = ["ES256"]
keys = ["{file}"]
"#
        ));
    }
    c
}

#[tokio::test]
async fn keys_loaded_is_unchanged_by_a_refused_reload() {
    let (upstream, _stop) = echo_upstream().await;
    let (dir, path) = prepare_dir(&keys_config(r#""rsa.pem", "ec256.pem""#, None), upstream);
    let app = jwtgate::App::load(&path).unwrap_or_else(|e| panic!("config refused:\n{e}"));
    let m = Scrape::new(app.metrics.render());
    assert_eq!(m.value("jwtgate_keys_loaded", &[("issuer", "static")]), 2.0);
    // Parses, but a key file of the second issuer is missing: the whole reload is refused.
    write_config(
        dir.path(),
        &keys_config(r#""rsa.pem""#, Some("missing.pem")),
        upstream,
    );
    assert!(app.reload_config().is_err(), "the reload is refused");
    let serving = app.state.load();
    assert_eq!(serving.config.issuers.len(), 1, "the old config serves");
    let m = Scrape::new(app.metrics.render());
    assert_eq!(
        m.nonzero("jwtgate_config_reloads_total", &["result"]),
        series(&[(&["failure"], 1.0)])
    );
    assert_eq!(
        m.value("jwtgate_keys_loaded", &[("issuer", "static")]),
        2.0,
        "the serving config holds two keys for static:\n{}",
        m.text
    );
}

#[tokio::test]
async fn keys_loaded_forgets_an_issuer_removed_by_a_reload() {
    let (upstream, _stop) = echo_upstream().await;
    let (dir, path) = prepare_dir(
        &keys_config(r#""rsa.pem", "ec256.pem""#, Some("ec256.pem")),
        upstream,
    );
    let app = jwtgate::App::load(&path).unwrap_or_else(|e| panic!("config refused:\n{e}"));
    let m = Scrape::new(app.metrics.render());
    assert_eq!(m.value("jwtgate_keys_loaded", &[("issuer", "second")]), 1.0);
    write_config(dir.path(), &keys_config(r#""rsa.pem""#, None), upstream);
    app.reload_config()
        .unwrap_or_else(|e| panic!("good edit refused:\n{e}"));
    let m = Scrape::new(app.metrics.render());
    assert_eq!(m.value("jwtgate_keys_loaded", &[("issuer", "static")]), 1.0);
    assert!(
        m.get("jwtgate_keys_loaded", &[("issuer", "second")])
            .unwrap_or(0.0)
            == 0.0,
        "issuer second is gone, its keys with it:\n{}",
        m.text
    );
}

/// Through the running app: `request_reload()` (SIGHUP) after a good, then a bad edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_counters_move_on_request_reload() {
    let gw = Gw::start(&reload_config(false, false)).await;
    let upstream = gw.upstream;
    let r = gw.get("/added/x", &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let m = gw.scrape().await;
    assert_eq!(
        m.nonzero("jwtgate_config_reloads_total", &["result"]),
        series(&[])
    );

    write_config(gw.dir.path(), &reload_config(true, false), upstream);
    gw.app.request_reload();
    let admin = gw.admin;
    eventually(
        WAIT,
        "config_reloads_total{result=success} >= 1",
        || async move {
            scrape(admin)
                .await
                .get("jwtgate_config_reloads_total", &[("result", "success")])
                .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    let r = gw.get("/added/x", &[]).await;
    assert_eq!(r.status, 200, "the good edit applies: {}", r.body);
    let m = gw.scrape().await;
    assert_eq!(
        m.get("jwtgate_config_reloads_total", &[("result", "failure")])
            .unwrap_or(0.0),
        0.0,
        "{}",
        m.text
    );

    write_config(gw.dir.path(), &reload_config(true, true), upstream);
    gw.app.request_reload();
    eventually(
        WAIT,
        "config_reloads_total{result=failure} >= 1",
        || async move {
            scrape(admin)
                .await
                .get("jwtgate_config_reloads_total", &[("result", "failure")])
                .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    let r = gw.get("/added/x", &[]).await;
    assert_eq!(
        r.status, 200,
        "the bad edit keeps the old config: {}",
        r.body
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Access logs through the binary

/// A `jwtgate run` child with stdout and stderr in files; killed (by its PID) when dropped.
struct Running {
    child: common::ChildGuard,
    traffic: SocketAddr,
    admin: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn output(&self) -> String {
        common::output_of(&self.stdout, &self.stderr)
    }

    /// SIGTERM, then waits (bounded) for the exit.
    async fn terminate(&mut self) -> ExitStatus {
        common::send_signal(&self.child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within 10 s of SIGTERM:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The config for the binary: `api` (required) and `public` (none), no catch-all.
fn binary_config(traffic: u16, admin: u16) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:{traffic}"

[admin]
addr = "127.0.0.1:{admin}"

[limits]
upstream_timeout = "300ms"
{STATIC_ISSUER}
[[route]]
name = "api"
path_prefix = "/api"
upstream = "{{upstream}}"
auth = "required"
token_query = "access_token"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "public"
path_prefix = "/public"
upstream = "{{upstream}}"
auth = "none"

[[route]]
name = "dead"
path_prefix = "/dead"
upstream = "{{dead}}"
auth = "none"
token_query = "access_token"
"#
    )
}

/// Starts `jwtgate run --config X <args>` with free ports (retrying a port race) and waits
/// until `/readyz` answers 200.
async fn start_binary(upstream: SocketAddr, args: &[&str]) -> Running {
    for _attempt in 0..5 {
        let (traffic, admin) = (free_port(), free_port());
        let (dir, config) = prepare_dir(&binary_config(traffic, admin), upstream);
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let child = spawn_run(dir.path(), &config, &stdout, &stderr, |c| {
            c.env_remove("JWTGATE_LOG")
                .env_remove("JWTGATE_LOG_FORMAT")
                .args(args);
        });
        let mut r = Running {
            child,
            traffic: SocketAddr::from(([127, 0, 0, 1], traffic)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            stdout,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(2), probe_status(r.admin, "/readyz")).await
            {
                if s == 200 {
                    return r;
                }
            }
            if let Ok(Some(_)) = r.child.try_wait() {
                let out = r.output();
                if out.contains("binding the") {
                    break; // a port was taken in between: try others
                }
                panic!("jwtgate run exited at start:\n{out}");
            }
            assert!(
                Instant::now() < deadline,
                "jwtgate run not ready within 10 s:\n{}",
                r.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("could not find free ports for jwtgate run");
}

/// The status of a GET, or an error when nothing answers (no panic: used while starting).
async fn probe_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    client
        .request(req)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Parses every non-empty stdout line as a JSON object; a line that is not fails the test.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("stdout line is not JSON ({e}): {l}\n--- stdout:\n{stdout}")
            });
            assert!(v.is_object(), "stdout line is not a JSON object: {l}");
            v
        })
        .collect()
}

/// What one request's access line must say.
struct Logged {
    what: &'static str,
    reply: Reply,
    path: &'static str,
    route: &'static str,
    auth: &'static str,
    /// `upstream_ms` is a number (the upstream was tried).
    proxied: bool,
    upstream_status: Option<u16>,
    upstream_error: Option<&'static str>,
    trace_id: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_one_json_line_per_request_with_every_field() {
    let (upstream, _stop) = echo_upstream().await;
    let mut gw = start_binary(upstream, &[]).await;
    let mut s = Secrets::default();
    let good = s.token(token("RS256", &claims()));
    let bad_sig = s.token(sign_raw_other(
        "RS256",
        &rs256_header("rsa"),
        &claims().to_string(),
    ));
    let auth = format!("Bearer {good}");
    let bad_auth = format!("Bearer {bad_sig}");
    let host = gw.traffic.to_string();
    fn template() -> Logged {
        Logged {
            what: "",
            reply: Reply {
                status: 0,
                headers: http::HeaderMap::new(),
                body: String::new(),
            },
            path: "/api/items",
            route: "api",
            auth: "ok",
            proxied: false,
            upstream_status: None,
            upstream_error: None,
            trace_id: None,
        }
    }
    let mut sent: Vec<Logged> = Vec::new();
    let send_one =
        |s: &mut Secrets, what: &'static str, r: Reply, status: u16, l: Logged| -> Logged {
            assert_eq!(r.status, status, "{what}: {}", r.transcript());
            Logged {
                what,
                reply: s.reply(what, r),
                ..l
            }
        };

    let r = get(
        gw.traffic,
        "/api/items?q=secret-query",
        &[("authorization", &auth), ("traceparent", TRACEPARENT)],
    )
    .await;
    assert_eq!(r.json()["query"], "q=secret-query", "{}", r.body);
    sent.push(send_one(
        &mut s,
        "valid",
        r,
        200,
        Logged {
            proxied: true,
            upstream_status: Some(200),
            trace_id: Some(TRACE_ID),
            ..template()
        },
    ));

    let r = get(gw.traffic, "/api/items?q=secret-query", &[]).await;
    let l = Logged {
        auth: "missing",
        ..template()
    };
    sent.push(send_one(&mut s, "missing", r, 401, l));

    let r = get(gw.traffic, "/api/items", &[("authorization", &bad_auth)]).await;
    let l = Logged {
        auth: "bad_signature",
        ..template()
    };
    sent.push(send_one(&mut s, "bad signature", r, 401, l));

    let r = get(
        gw.traffic,
        &format!("/api/by-query?access_token={good}&q=secret-query"),
        &[("x-request-id", "client-supplied-id-42")],
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("client-supplied-id-42"));
    let l = Logged {
        path: "/api/by-query",
        proxied: true,
        upstream_status: Some(200),
        ..template()
    };
    sent.push(send_one(&mut s, "query token", r, 200, l));

    let r = get(
        gw.traffic,
        "/api/slow?delay_ms=3000",
        &[("authorization", &auth)],
    )
    .await;
    let l = Logged {
        path: "/api/slow",
        proxied: true,
        upstream_error: Some("timeout"),
        ..template()
    };
    sent.push(send_one(&mut s, "upstream timeout", r, 504, l));

    let r = get(gw.traffic, "/dead/x", &[]).await;
    let l = Logged {
        path: "/dead/x",
        route: "dead",
        auth: "none",
        proxied: true,
        upstream_error: Some("connect"),
        ..template()
    };
    sent.push(send_one(&mut s, "upstream refused", r, 502, l));

    let r = get(gw.traffic, "/public/thing", &[]).await;
    let l = Logged {
        path: "/public/thing",
        route: "public",
        auth: "none",
        proxied: true,
        upstream_status: Some(200),
        ..template()
    };
    sent.push(send_one(&mut s, "public", r, 200, l));

    let status = gw.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit 0 after SIGTERM:\n{}",
        gw.output()
    );
    let (stdout, stderr) = (gw.stdout(), gw.stderr());
    s.saw("stdout", stdout.clone());
    s.saw("stderr", stderr.clone());

    let lines = json_lines(&stdout);
    for l in &lines {
        let time = l["time"].as_str().unwrap_or_else(|| panic!("no time: {l}"));
        humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("time {time:?}: {e}"));
        assert!(l["level"].is_string(), "level: {l}");
        assert!(l["target"].is_string(), "target: {l}");
    }
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "access").collect();
    assert_eq!(
        access.len(),
        sent.len(),
        "one access line per request:\n{stdout}"
    );
    for want in &sent {
        let what = want.what;
        let reply = &want.reply;
        let id = reply
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{what}: no x-request-id: {}", reply.transcript()));
        let found: Vec<&&Value> = access.iter().filter(|l| l["request_id"] == *id).collect();
        assert_eq!(
            found.len(),
            1,
            "{what}: one access line for {id}:\n{stdout}"
        );
        let l = found[0];
        let ctx = format!("{what}: {l}");
        assert_eq!(l["route"], want.route, "{ctx}");
        assert_eq!(l["method"], "GET", "{ctx}");
        assert_eq!(l["path"], want.path, "{ctx}: path without the query");
        assert_eq!(l["status"], reply.status, "{ctx}");
        assert!(
            l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{ctx}: duration_ms is a number"
        );
        if want.proxied {
            assert!(
                l["upstream_ms"].as_f64().is_some_and(|d| d >= 0.0),
                "{ctx}: upstream_ms is a number"
            );
        } else {
            assert!(l["upstream_ms"].is_null(), "{ctx}: no upstream_ms");
        }
        assert_eq!(l["upstream_status"], json!(want.upstream_status), "{ctx}");
        assert_eq!(l["upstream_error"], json!(want.upstream_error), "{ctx}");
        assert_eq!(l["auth"], want.auth, "{ctx}");
        assert_eq!(l["client"], "127.0.0.1", "{ctx}");
        assert_eq!(l["host"], host.as_str(), "{ctx}");
        assert_eq!(l["trace_id"], json!(want.trace_id), "{ctx}");
    }
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("secret-query"),
            "the query string is never logged:\n{text}"
        );
    }
    s.assert_no_leak();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_of_an_unmatched_request_names_its_path_and_host() {
    let (upstream, _stop) = echo_upstream().await;
    let mut gw = start_binary(upstream, &[]).await;
    let r = get(gw.traffic, "/nowhere/./else?q=secret-query", &[]).await;
    assert_eq!(r.status, 404, "{}", r.transcript());
    let id = r.header("x-request-id").expect("x-request-id").to_owned();
    let status = gw.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", gw.output());
    let stdout = gw.stdout();
    let lines = json_lines(&stdout);
    let l = lines
        .iter()
        .find(|l| l["target"] == "access" && l["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no access line for {id}:\n{stdout}"));
    assert_eq!(l["route"], "", "{l}");
    assert_eq!(l["status"], 404, "{l}");
    assert_eq!(l["auth"], "none", "{l}");
    assert!(l["upstream_ms"].is_null(), "{l}");
    assert_eq!(l["host"], gw.traffic.to_string(), "{l}");
    assert_eq!(
        l["path"], "/nowhere/else",
        "the normalised path, without the query: {l}"
    );
    assert!(!stdout.contains("secret-query"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_text_prints_human_lines() {
    let (upstream, _stop) = echo_upstream().await;
    let mut gw = start_binary(upstream, &["--log-format", "text"]).await;
    let t = token("RS256", &claims());
    let r = get(
        gw.traffic,
        "/api/x",
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.transcript());
    let status = gw.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", gw.output());
    let stdout = gw.stdout();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !lines.is_empty(),
        "text logs print something:\n{}",
        gw.output()
    );
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "text lines are not JSON:\n{stdout}"
    );
    let sig = t.rsplit('.').next().expect("signature");
    for text in [stdout, gw.stderr()] {
        assert!(
            !text.contains(&t) && !text.contains(sig),
            "token in logs:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. No token leaks across a whole run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_leaks_into_answers_logs_metrics_or_config() {
    let (upstream, _stop) = echo_upstream().await;
    // Debug level: whatever the gateway logs at any level it ships with.
    let mut gw = start_binary(upstream, &["--log-level", "debug"]).await;
    let mut s = Secrets::default();
    let now = now();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        c
    };
    let tokens: Vec<(&str, String)> = vec![
        ("valid", token("RS256", &claims())),
        ("valid es256", token("ES256", &claims())),
        (
            "expired",
            token(
                "RS256",
                &with(&|c| {
                    c["iat"] = (now - 7200).into();
                    c["exp"] = (now - 3600).into();
                }),
            ),
        ),
        (
            "not yet valid",
            token("RS256", &with(&|c| c["nbf"] = (now + 3600).into())),
        ),
        (
            "bad signature",
            sign_raw_other("RS256", &rs256_header("rsa"), &claims().to_string()),
        ),
        (
            "wrong audience",
            token("RS256", &with(&|c| c["aud"] = "nope".into())),
        ),
        (
            "wrong issuer",
            token("RS256", &with(&|c| c["iss"] = "https://x.test/".into())),
        ),
        (
            "unknown kid",
            sign_raw("RS256", &rs256_header("kid-leak-zz"), &claims().to_string()),
        ),
        ("alg not allowed", token("HS256", &claims())),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims().to_string().as_bytes())
            ),
        ),
        (
            "control char claim",
            token("RS256", &with(&|c| c["sub"] = "al\rice".into())),
        ),
        (
            "crit header",
            sign_raw(
                "RS256",
                r#"{"alg":"RS256","kid":"rsa","crit":["exp"]}"#,
                &claims().to_string(),
            ),
        ),
        (
            "bad json",
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"RS256""#),
                b64(b"{}"),
                b64(b"signature-bytes-xyz-0123456789")
            ),
        ),
        ("garbage", "leaky-garbage-token-ab12cd34ef56".to_owned()),
        (
            "too long",
            token("RS256", &with(&|c| c["pad"] = "p".repeat(9000).into())),
        ),
    ];
    let bearer = |t: &str| format!("Bearer {t}");
    for (what, t) in &tokens {
        let t = s.token(t.clone());
        let r = get(gw.traffic, "/api/x", &[("authorization", &bearer(&t))]).await;
        assert!([200, 401].contains(&r.status), "{what}: {}", r.transcript());
        s.reply(what, r);
        let r = get(gw.traffic, &format!("/api/q?access_token={t}"), &[]).await;
        s.reply(&format!("{what} in query"), r);
        let r = get(gw.traffic, "/public/p", &[("authorization", &bearer(&t))]).await;
        assert_eq!(r.status, 200, "{what} on public: {}", r.transcript());
        // The public route removes Authorization before forwarding (forward_token = false):
        // the echo's report would hold it otherwise.
        s.reply(&format!("{what} on public"), r);
        let r = get(gw.traffic, "/unmatched", &[("authorization", &bearer(&t))]).await;
        assert_eq!(r.status, 404, "{what}: {}", r.transcript());
        s.reply(&format!("{what} unmatched"), r);
    }
    // A header token and a query token at once; two Authorization headers.
    let (_, t) = &tokens[0];
    let r = get(
        gw.traffic,
        &format!("/api/q?access_token={t}"),
        &[("authorization", &bearer(t))],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.transcript());
    s.reply("header and query", r);
    let r = get(
        gw.traffic,
        "/api/x",
        &[
            ("authorization", &bearer(t)),
            ("authorization", &bearer(&tokens[1].1)),
        ],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.transcript());
    s.reply("two authorization headers", r);
    // An upstream error status on a token-bearing request.
    let r = get(
        gw.traffic,
        "/api/x?status=500",
        &[("authorization", &bearer(t))],
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.transcript());
    s.reply("upstream 500", r);

    // Upstream failures with a query token: the warnings they log hold no URL query.
    let r = get(gw.traffic, &format!("/dead/x?access_token={t}"), &[]).await;
    assert_eq!(r.status, 502, "{}", r.transcript());
    s.reply("dead upstream, query token", r);
    let r = get(
        gw.traffic,
        &format!("/api/slow?delay_ms=3000&access_token={t}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.transcript());
    s.reply("upstream timeout, query token", r);

    let m = get(gw.admin, "/metrics", &[]).await;
    s.reply("/metrics", m);
    let c = get(gw.admin, "/config", &[]).await;
    s.reply("/config", c);

    let status = gw.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", gw.output());
    let stdout = gw.stdout();
    s.saw("stdout", stdout.clone());
    s.saw("stderr", gw.stderr());
    json_lines(&stdout);
    s.assert_no_leak();
}

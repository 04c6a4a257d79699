//! Integration-test harness: a real echo upstream, the gateway on 127.0.0.1:0, keys generated
//! at test time for every algorithm, and tokens signed with them.
#![allow(dead_code)]

pub mod app;
pub mod bound;
pub mod browser;
pub mod client;
pub mod der;
pub mod edge;
pub mod jwks;
pub mod metrics;
pub mod node;
pub mod redis_server;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use aws_lc_rs::{hmac, rsa};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The `iss` of the default test issuer.
pub const ISS: &str = "https://issuer.test/";
/// The audience of the default test issuer.
pub const AUD: &str = "test-api";

/// Keys generated once per test binary (RSA generation is slow).
pub struct TestKeys {
    pub rsa: RsaKeyPair,
    pub rsa_spki: Vec<u8>,
    pub ec256: EcdsaKeyPair,
    pub ec384: EcdsaKeyPair,
    pub ed25519: Ed25519KeyPair,
    pub hmac_secret: Vec<u8>,
    /// A second, unrelated key of each kind, for "trusted kid, attacker key" cases.
    pub other_rsa: RsaKeyPair,
    pub other_ec256: EcdsaKeyPair,
}

pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = RsaKeyPair::generate(rsa::KeySize::Rsa2048).expect("rsa keygen");
        let rsa_spki = rsa.public_key().as_der().expect("spki").as_ref().to_vec();
        TestKeys {
            rsa,
            rsa_spki,
            ec256: EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec256"),
            ec384: EcdsaKeyPair::generate(&sig::ECDSA_P384_SHA384_FIXED_SIGNING).expect("ec384"),
            ed25519: Ed25519KeyPair::generate().expect("ed25519"),
            hmac_secret: {
                let mut s = vec![0u8; 48];
                aws_lc_rs::rand::fill(&mut s).expect("rand");
                // Printable, so it also works from an environment variable.
                s.iter()
                    .map(|b| b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(*b) % 36])
                    .collect()
            },
            other_rsa: RsaKeyPair::generate(rsa::KeySize::Rsa2048).expect("rsa keygen"),
            other_ec256: EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
                .expect("ec256"),
        }
    })
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs `header_json.payload_json` (both raw JSON text, so tests can write anything) with the
/// test key for `alg` ("HS256", "RS256", "PS256", "ES256", "ES384", "EdDSA", ...).
pub fn sign_raw(alg: &str, header_json: &str, payload_json: &str) -> String {
    sign_with(alg, header_json, payload_json, false)
}

/// Like [`sign_raw`] but with the *other* RSA / P-256 key (an attacker's key).
pub fn sign_raw_other(alg: &str, header_json: &str, payload_json: &str) -> String {
    sign_with(alg, header_json, payload_json, true)
}

fn sign_with(alg: &str, header_json: &str, payload_json: &str, other: bool) -> String {
    let k = keys();
    let input = format!(
        "{}.{}",
        b64(header_json.as_bytes()),
        b64(payload_json.as_bytes())
    );
    let msg = input.as_bytes();
    let rng = SystemRandom::new();
    let rsa_key = if other { &k.other_rsa } else { &k.rsa };
    let rsa_sign = |padding: &'static dyn sig::RsaEncoding| {
        let mut out = vec![0u8; rsa_key.public_modulus_len()];
        rsa_key
            .sign(padding, &rng, msg, &mut out)
            .expect("rsa sign");
        out
    };
    let sig: Vec<u8> = match alg {
        "HS256" => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k.hmac_secret), msg)
            .as_ref()
            .to_vec(),
        "HS384" => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA384, &k.hmac_secret), msg)
            .as_ref()
            .to_vec(),
        "HS512" => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, &k.hmac_secret), msg)
            .as_ref()
            .to_vec(),
        "RS256" => rsa_sign(&sig::RSA_PKCS1_SHA256),
        "RS384" => rsa_sign(&sig::RSA_PKCS1_SHA384),
        "RS512" => rsa_sign(&sig::RSA_PKCS1_SHA512),
        "PS256" => rsa_sign(&sig::RSA_PSS_SHA256),
        "PS384" => rsa_sign(&sig::RSA_PSS_SHA384),
        "PS512" => rsa_sign(&sig::RSA_PSS_SHA512),
        "ES256" => {
            let key = if other { &k.other_ec256 } else { &k.ec256 };
            key.sign(&rng, msg).expect("es256").as_ref().to_vec()
        }
        "ES384" => k.ec384.sign(&rng, msg).expect("es384").as_ref().to_vec(),
        "EdDSA" => k.ed25519.sign(msg).as_ref().to_vec(),
        other => panic!("sign_raw: no test key for {other}"),
    };
    format!("{input}.{}", b64(&sig))
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Claims that pass the default issuer: iss, aud, sub, iat, exp (+5 min).
pub fn claims() -> Value {
    json!({ "iss": ISS, "aud": AUD, "sub": "alice", "iat": now(), "exp": now() + 300 })
}

/// A valid token for `alg` with `claims` and the kid the harness gives that key type
/// (`rsa`, `ec256`, `ec384`, `ed25519`, `hmac`), typ JWT.
pub fn token(alg: &str, claims: &Value) -> String {
    let header = json!({ "alg": alg, "typ": "JWT", "kid": kid_for(alg) });
    sign_raw(alg, &header.to_string(), &claims.to_string())
}

/// The kid the harness's key files and JWKS give the key for `alg`.
pub fn kid_for(alg: &str) -> &'static str {
    match alg {
        a if a.starts_with("HS") => "hmac",
        a if a.starts_with("RS") || a.starts_with("PS") => "rsa",
        "ES256" => "ec256",
        "ES384" => "ec384",
        "EdDSA" => "ed25519",
        other => panic!("no kid for {other}"),
    }
}

fn pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PUBLIC KEY", der.to_vec()))
}

/// Writes the public keys into `dir`: `rsa.pem`, `ec256.pem`, `ec384.pem`, `ed25519.pem`
/// (kid = file stem), `hmac.secret`, and `jwks.json` holding all of them (oct key kid `hmac`).
pub fn write_keys(dir: &Path) {
    let k = keys();
    let ec256 = k
        .ec256
        .public_key()
        .as_der()
        .expect("der")
        .as_ref()
        .to_vec();
    let ec384 = k
        .ec384
        .public_key()
        .as_der()
        .expect("der")
        .as_ref()
        .to_vec();
    let ed = k
        .ed25519
        .public_key()
        .as_der()
        .expect("der")
        .as_ref()
        .to_vec();
    std::fs::write(dir.join("rsa.pem"), pem(&k.rsa_spki)).expect("write");
    std::fs::write(dir.join("ec256.pem"), pem(&ec256)).expect("write");
    std::fs::write(dir.join("ec384.pem"), pem(&ec384)).expect("write");
    std::fs::write(dir.join("ed25519.pem"), pem(&ed)).expect("write");
    std::fs::write(dir.join("hmac.secret"), &k.hmac_secret).expect("write");
    let comps = rsa::PublicKeyComponents::<Vec<u8>>::from(k.rsa.public_key());
    let point = |kp: &EcdsaKeyPair| kp.public_key().as_ref().to_vec();
    let (p256, p384) = (point(&k.ec256), point(&k.ec384));
    let jwks = json!({ "keys": [
        { "kty": "RSA", "kid": "rsa", "use": "sig", "n": b64(&comps.n), "e": b64(&comps.e) },
        { "kty": "EC", "kid": "ec256", "crv": "P-256", "x": b64(&p256[1..33]), "y": b64(&p256[33..]) },
        { "kty": "EC", "kid": "ec384", "crv": "P-384", "x": b64(&p384[1..49]), "y": b64(&p384[49..]) },
        { "kty": "OKP", "kid": "ed25519", "crv": "Ed25519", "x": b64(k.ed25519.public_key().as_ref()) },
        { "kty": "oct", "kid": "hmac", "k": b64(&k.hmac_secret) },
    ]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("write");
}

/// An `[[issuer]]` block for the default issuer reading `jwks.json` with every algorithm.
pub fn default_issuer() -> String {
    format!(
        r#"
[[issuer]]
name = "test"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["HS256","HS384","HS512","RS256","RS384","RS512","PS256","PS384","PS512","ES256","ES384","EdDSA"]
jwks_file = "jwks.json"
leeway = "30s"
"#
    )
}

/// A config with the default issuer and one `required` route `/` named `main` forwarding the
/// claim headers `X-Auth-Sub` (sub) and `X-Auth-Email` (email).
pub fn default_config() -> String {
    format!(
        r#"{}
[[route]]
name = "main"
path_prefix = "/"
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"#,
        default_issuer()
    )
}

/// A running gateway with an echo upstream behind it.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub upstream: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stop_upstream: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON (the echo upstream's report, or the gateway's error body).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// For an echoed request: the values the upstream received for `name` (lower case).
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For an echoed request: every header name the upstream received.
    pub fn upstream_header_names(&self) -> Vec<String> {
        self.json()["headers"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    /// Starts an echo upstream and the gateway on `config` (TOML text; `{upstream}` becomes
    /// the echo upstream's URL, `{dir}` the directory holding the key files). The `[listen]`
    /// section is added by the harness unless `config` has one.
    pub async fn start(config: &str) -> Harness {
        Self::try_start(config)
            .await
            .unwrap_or_else(|e| panic!("config refused:\n{e}"))
    }

    /// Like [`Harness::start`], returning config errors instead of panicking.
    pub async fn try_start(config: &str) -> Result<Harness, jwtgate::config::ConfigErrors> {
        let dir = tempfile::tempdir().expect("tempdir");
        write_keys(dir.path());
        let up_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let upstream = up_listener.local_addr().expect("addr");
        let (stop_up_tx, stop_up_rx) = oneshot::channel::<()>();
        tokio::spawn(jwtgate::echo::serve(up_listener, async move {
            let _ = stop_up_rx.await;
        }));
        let text = config
            .replace("{upstream}", &format!("http://{upstream}"))
            .replace("{dir}", &dir.path().display().to_string());
        let text = if text.contains("[listen]") {
            text
        } else {
            format!("[listen]\naddr = \"127.0.0.1:0\"\n{text}")
        };
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).expect("write config");
        // One registry for the snapshot and the app, so key refresh metrics are not lost.
        let metrics = jwtgate::metrics::Metrics::new();
        let snapshot =
            jwtgate::Snapshot::build_from(jwtgate::Config::load(&path)?, None, &metrics)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let app = jwtgate::App::new(snapshot, metrics, None)
                .unwrap_or_else(|e| panic!("gateway failed to start: {e}"));
            jwtgate::run(listener, std::sync::Arc::new(app), async move {
                let _ = stop_rx.await;
            })
            .await;
        });
        Ok(Harness {
            dir,
            addr,
            upstream,
            stop: Some(stop_tx),
            stop_upstream: Some(stop_up_tx),
            server: Some(server),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// GET `path` with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.request("GET", path, headers, Bytes::new()).await
    }

    /// GET `path` with `Authorization: Bearer token`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Answer {
        let auth = format!("Bearer {token}");
        self.get(path, &[("authorization", auth.as_str())]).await
    }

    /// Any request, through a real HTTP/1.1 client.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let url = format!("http://{}{}", self.addr, path);
        client::request(method, &url, headers, body).await
    }

    /// Writes raw bytes on a new TCP connection and returns everything read until the
    /// gateway closes it or `wait` passes.
    pub async fn raw(&self, bytes: &[u8], wait: Duration) -> String {
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Stops the gateway and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(tx) = self.stop_upstream.take() {
            let _ = tx.send(());
        }
    }
}

/// Path of the built `jwtgate` binary, for CLI tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jwtgate"))
}

// ---------------------------------------------------------------------------------------------
// Helpers for tests that run the `jwtgate` binary as a child process

/// A spawned `jwtgate` child, killed (by its PID, through `Child::kill`) and reaped when dropped,
/// so no test leaks it. Derefs to the [`std::process::Child`].
pub struct ChildGuard(pub std::process::Child);

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago (bind 127.0.0.1:0 and drop).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Spawns `jwtgate run --config <config>` in `dir`, without `JWTGATE_CONFIG`, with stdin closed
/// and stdout/stderr written to the given files. `tweak` adds to the command (environment,
/// further arguments after the config) before it is spawned.
pub fn spawn_run(
    dir: &Path,
    config: &Path,
    stdout: &Path,
    stderr: &Path,
    tweak: impl FnOnce(&mut std::process::Command),
) -> ChildGuard {
    let mut cmd = std::process::Command::new(binary());
    cmd.current_dir(dir)
        .env_remove("JWTGATE_CONFIG")
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(stdout).expect("stdout file"))
        .stderr(std::fs::File::create(stderr).expect("stderr file"));
    tweak(&mut cmd);
    ChildGuard(cmd.spawn().expect("spawn jwtgate run"))
}

/// Runs `jwtgate ARGS` to completion in `dir` (without `JWTGATE_CONFIG`, stdin closed) with
/// `env` set.
pub fn jwtgate_output(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(binary());
    cmd.current_dir(dir)
        .env_remove("JWTGATE_CONFIG")
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run jwtgate")
}

/// A finished command's exit code, stdout and stderr, for failure messages.
pub fn describe_output(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The captured stdout and stderr files of a child, for failure messages.
pub fn output_of(stdout: &Path, stderr: &Path) -> String {
    format!(
        "--- stdout:\n{}\n--- stderr:\n{}",
        std::fs::read_to_string(stdout).unwrap_or_default(),
        std::fs::read_to_string(stderr).unwrap_or_default()
    )
}

/// Sends `kill -<sig>` to the child's PID; panics when `kill` fails.
pub fn send_signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} failed");
}

/// Waits (bounded by `limit`) for the child to exit; `None` when it is still running.
pub async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when `line` is `file:line:col: message` for `file`.
pub fn is_located(line: &str, file: &Path) -> bool {
    let Some(rest) = line.strip_prefix(&format!("{}:", file.display())) else {
        return false;
    };
    let mut parts = rest.splitn(3, ':');
    let (Some(l), Some(c), Some(msg)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !l.is_empty()
        && l.bytes().all(|b| b.is_ascii_digit())
        && !c.is_empty()
        && c.bytes().all(|b| b.is_ascii_digit())
        && msg.starts_with(' ')
        && msg.len() > 1
}

/// An in-process echo upstream on 127.0.0.1:0; stops when the returned sender is dropped.
pub async fn echo_upstream() -> (SocketAddr, oneshot::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(jwtgate::echo::serve(l, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Writes `bytes` on a new connection and reads until EOF, an error, or `wait`: whatever
/// arrived, and whether the connection ended within `wait` (a reset after the answer keeps the
/// answer).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The gateway may answer and close before reading all of a large request.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let ended = tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), ended)
}

/// A path in the repository (`env!("CARGO_MANIFEST_DIR")`), not the working directory.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `claims` with `name` set to `value`.
pub fn with(claims: Value, name: &str, value: Value) -> Value {
    let mut c = claims;
    c[name] = value;
    c
}

/// `claims` without `name`.
pub fn without(claims: Value, name: &str) -> Value {
    let mut c = claims;
    c.as_object_mut().expect("claims object").remove(name);
    c
}

/// What a probe of [`eventually`] reports: done (with a value) or not yet (with what it saw).
pub trait Outcome {
    /// The value once done.
    type Value;
    /// `Ok` once done, else what was seen.
    fn outcome(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".into())
        }
    }
}

impl<T> Outcome for Result<T, String> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self
    }
}

/// Polls `probe` every 25 ms until it is done (`true` or `Ok`), at most `limit`; panics
/// naming `what` and the last thing seen.
pub async fn eventually<O, F, Fut>(limit: Duration, what: &str, mut probe: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match probe().await.outcome() {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{what}: not seen within {limit:?}; last seen: {last}"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
}

/// The start of the `WWW-Authenticate` challenge of an invalid-token answer.
pub const WWW_INVALID_PREFIX: &str =
    "Bearer realm=\"jwtgate\", error=\"invalid_token\", error_description=\"";

/// Asserts SPEC's invalid-token answer (401, the challenge with a description, the gateway's
/// own JSON body, no upstream reached, nothing injected, no token or sizeable token segment
/// echoed); returns the `error_description`.
pub fn assert_invalid(a: &Answer, token: &str, case: &str) -> String {
    assert_eq!(a.status, 401, "{case}: expected 401, got body {}", a.body);
    let www = a
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{case}: no WWW-Authenticate header; body {}", a.body));
    assert!(
        www.starts_with(WWW_INVALID_PREFIX),
        "{case}: WWW-Authenticate is {www:?}"
    );
    assert!(
        www.len() > WWW_INVALID_PREFIX.len() + 1 && www.ends_with('"'),
        "{case}: WWW-Authenticate has no description: {www:?}"
    );
    let body: Value = serde_json::from_str(&a.body)
        .unwrap_or_else(|e| panic!("{case}: body is not JSON ({e}): {}", a.body));
    assert_eq!(body["error"], "invalid_token", "{case}: body {}", a.body);
    let desc = body["error_description"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no error_description: {}", a.body))
        .to_owned();
    assert!(!desc.is_empty(), "{case}: empty error_description");
    // The gateway answered: the echo upstream's report has `headers` and `method`, a
    // recording upstream's has `recorder`.
    assert!(
        ["headers", "method", "recorder"]
            .iter()
            .all(|k| body.get(k).is_none()),
        "{case}: the upstream was reached: {}",
        a.body
    );
    assert!(
        a.headers.get("x-injected").is_none(),
        "{case}: a header was injected into the answer: {:?}",
        a.headers
    );
    // Never the token, nor any sizeable segment of it (the signature above all).
    let whole = (!token.is_empty()).then_some(token);
    for piece in whole
        .into_iter()
        .chain(token.split('.').filter(|s| s.len() >= 12))
    {
        assert!(
            !a.body.contains(piece),
            "{case}: the body echoes {piece:?}: {}",
            a.body
        );
        assert!(
            !www.contains(piece),
            "{case}: WWW-Authenticate echoes {piece:?}"
        );
    }
    desc
}

/// GETs `path` with `token` and asserts the invalid-token answer; returns the description.
pub async fn expect_401(h: &Harness, path: &str, token: &str, case: &str) -> String {
    let a = h.get_with_token(path, token).await;
    assert_invalid(&a, token, case)
}

/// Like [`expect_401`], and the description mentions one of `words` (case-insensitive).
pub async fn expect_401_saying(
    h: &Harness,
    path: &str,
    token: &str,
    words: &[&str],
    case: &str,
) -> String {
    let d = expect_401(h, path, token, case).await;
    let lower = d.to_ascii_lowercase();
    assert!(
        words
            .iter()
            .any(|w| lower.contains(&w.to_ascii_lowercase())),
        "{case}: description {d:?} mentions none of {words:?}"
    );
    d
}

/// A running gateway on the config file `path`, with a traffic and an admin listener on
/// 127.0.0.1:0: their addresses, and the sender that stops it (dropping it stops it too).
pub async fn run_with_admin(path: &Path) -> (SocketAddr, SocketAddr, oneshot::Sender<()>) {
    let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    run_on(path, traffic).await
}

/// Like [`run_with_admin`], on a traffic listener the test bound first (to know its port
/// before writing the config).
pub async fn run_on(
    path: &Path,
    traffic: TcpListener,
) -> (SocketAddr, SocketAddr, oneshot::Sender<()>) {
    let app = jwtgate::App::load(path).unwrap_or_else(|e| panic!("config refused:\n{e}"));
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (addr, admin_addr) = (
        traffic.local_addr().expect("addr"),
        admin.local_addr().expect("addr"),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let listeners = jwtgate::Listeners {
        traffic,
        admin: Some(admin),
    };
    tokio::spawn(jwtgate::run(
        listeners,
        std::sync::Arc::new(app),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, admin_addr, stop)
}

//! For the sender-constrained token tests (tests/dpop.rs, tests/cert_bound.rs): a gateway whose
//! metrics and state the test reads, and the real provider and client of bound tokens:
//! tests/oidc/bound.mjs (oidc-provider with its dPoP and mTLS features) and
//! tests/oidc/bound_client.mjs (openid-client and dpop). Both run on node with the npm
//! packages of tests/oidc; a missing tool fails the test with a message naming what to install.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::node::{oidc_dir, require_node};
use super::tls::CERTS;
use super::ChildGuard;

/// The routes of the bound-token tests (`{upstream}` to be replaced): `main` on `/` with a
/// claim header, `strict` with `require_binding`, `scoped` requiring scope `admin`, and
/// `open` without auth.
pub const ROUTES: &str = r#"
[[route]]
name = "main"
path_prefix = "/"
upstream = "{upstream}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "strict"
path_prefix = "/strict"
upstream = "{upstream}"
auth = "required"
require_binding = true

[[route]]
name = "scoped"
path_prefix = "/scoped"
upstream = "{upstream}"
auth = "required"
require = { scope = "admin" }

[[route]]
name = "open"
path_prefix = "/open"
upstream = "{upstream}"
auth = "none"
"#;

/// A gateway `App` on a config file in a temp dir holding the test keys ([`super::write_keys`]).
pub struct Gateway {
    pub app: Arc<jwtgate::App>,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway on `config` (a `[listen]` on 127.0.0.1:0 is added when it has none)
    /// and waits until every issuer a route needs has keys.
    pub async fn start(config: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        super::write_keys(dir.path());
        let path = dir.path().join("gateway.toml");
        let text = if config.contains("[listen]") {
            config.to_owned()
        } else {
            format!("[listen]\naddr = \"127.0.0.1:0\"\n{config}")
        };
        std::fs::write(&path, text).expect("write config");
        let app = Arc::new(jwtgate::App::load(&path).unwrap_or_else(|e| panic!("config: {e}")));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(jwtgate::run(l, app.clone(), std::future::pending::<()>()));
        super::eventually(Duration::from_secs(20), "issuer keys", || async {
            app.state.load().keys_ready()
        })
        .await;
        Gateway {
            app,
            addr,
            _dir: dir,
        }
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `jwtgate_auth_failures_total{route, reason}`.
    pub fn failures(&self, route: &str, reason: &str) -> u64 {
        self.app
            .metrics
            .auth_failures
            .with_label_values(&[route, reason])
            .get()
    }
}

/// An echo upstream for the rest of the test process; its `http://` URL.
pub async fn echo() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(jwtgate::echo::serve(l, std::future::pending()));
    format!("http://{addr}")
}

/// A node client run not done within this long fails the test.
const CLIENT_WITHIN: Duration = Duration::from_secs(60);
/// The provider not listening within this long fails the test.
const PROVIDER_WITHIN: Duration = Duration::from_secs(30);

/// tests/oidc/bound.mjs, killed (by PID) when dropped.
pub struct BoundProvider {
    _child: ChildGuard,
    pub http_port: u16,
    pub https_port: u16,
}

impl BoundProvider {
    /// Starts the provider and waits for its "ready" line.
    pub fn start() -> BoundProvider {
        require_node();
        let mut child = Command::new("node")
            .arg(oidc_dir().join("bound.mjs"))
            .arg(CERTS)
            .current_dir(oidc_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node tests/oidc/bound.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let guard = ChildGuard(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(PROVIDER_WITHIN)
            .expect("tests/oidc/bound.mjs printed no ready line in time");
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("ready"), "unexpected line {line:?}");
        let port = |w: Option<&str>| -> u16 {
            w.and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("bad ready line {line:?}"))
        };
        let http_port = port(words.next());
        let https_port = port(words.next());
        BoundProvider {
            _child: guard,
            http_port,
            https_port,
        }
    }

    /// The issuer (`iss` of its tokens).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// An `[[issuer]]` block trusting this provider through discovery, with `extra` keys.
    pub fn issuer_block(&self, extra: &str) -> String {
        format!(
            r#"
[[issuer]]
name = "bound"
issuer = "{iss}"
audiences = ["jwtgate-api"]
algorithms = ["ES256"]
discovery_url = "{iss}/.well-known/openid-configuration"
{extra}
"#,
            iss = self.issuer()
        )
    }

    /// Runs tests/oidc/bound_client.mjs in `mode` against `url` and returns what it printed.
    pub async fn client(&self, mode: &str, url: &str) -> Value {
        let issuer = self.issuer();
        let (mode, url) = (mode.to_owned(), url.to_owned());
        tokio::task::spawn_blocking(move || run_client(&mode, &issuer, &url))
            .await
            .expect("client task")
    }
}

fn run_client(mode: &str, issuer: &str, url: &str) -> Value {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let child = Command::new("node")
        .arg(oidc_dir().join("bound_client.mjs"))
        .args([mode, issuer, url, CERTS])
        .current_dir(oidc_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.reopen().expect("reopen")))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node tests/oidc/bound_client.mjs");
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + CLIENT_WITHIN;
    let status = loop {
        if let Some(s) = guard.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "bound_client.mjs {mode} did not finish within {CLIENT_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out.path()).expect("read client output");
    assert!(
        status.success(),
        "bound_client.mjs {mode} failed ({status}): {text}"
    );
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("bound_client.mjs {mode} printed no JSON ({e}): {text}"))
}

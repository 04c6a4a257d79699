//! Step-up (RFC 9470) with real tokens: `oidc-provider` (tests/oidc/stepup.mjs) runs the
//! authorization code flow for a user who logged in with a given `acr`, a given time ago, and
//! issues RFC 9068 access tokens carrying that `auth_time` and `acr`. The gateway, finding the
//! provider's keys through `discovery_url`, admits them on routes whose `max_auth_age` and
//! `acr_values` they meet and challenges the others.
//!
//! Needs `node` (>= 20.19) and the npm packages of tests/oidc (`npm ci --prefix tests/oidc`,
//! which scripts/test.sh runs): without them the test fails and says which is missing.

mod common;

use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::get;
use common::node::{oidc_dir, require_node};
use tokio::sync::mpsc;

/// The node child running tests/oidc/stepup.mjs; killed (by its PID) and reaped on drop.
struct Provider {
    _child: common::ChildGuard,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Provider {
    async fn start() -> Provider {
        require_node();
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = dir.path().join("stderr");
        let mut child = Command::new("node")
            .arg(oidc_dir().join("stepup.mjs"))
            .arg("0")
            .current_dir(oidc_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn node tests/oidc/stepup.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Provider {
            stdin: child.stdin.take().expect("stdin"),
            _child: common::ChildGuard(child),
            lines,
            stderr,
            port: 0,
            _dir: dir,
        };
        let ready = p.expect_line("ready ").await;
        p.port = ready[6..]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad ready line {ready:?}"));
        p
    }

    /// The next stdout line starting with `prefix` (or an `error` line), within 20 s.
    async fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(l)) if l.starts_with(prefix) || l.starts_with("error ") => return l,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => panic!(
                    "the provider did not print {prefix:?}; stderr:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }

    /// An access token for a user who logged in with `acr`, `age_secs` ago.
    async fn login(&mut self, acr: &str, age_secs: u64) -> String {
        writeln!(self.stdin, "login {acr} {age_secs}").expect("write to the provider");
        self.stdin.flush().expect("flush");
        let line = self.expect_line("token ").await;
        line.strip_prefix("token ")
            .unwrap_or_else(|| panic!("login failed: {line}"))
            .to_owned()
    }
}

#[tokio::test]
async fn real_tokens_pass_or_are_challenged_by_their_auth_time_and_acr() {
    let mut provider = Provider::start().await;
    let issuer = format!("http://127.0.0.1:{}", provider.port);
    let upstream = common::app::echo_url().await;
    let common::app::Running {
        app,
        addr,
        dir: _dir,
    } = common::app::start(&format!(
        r#"
[[issuer]]
name = "idp"
issuer = "{issuer}"
audiences = ["jwtgate-api"]
algorithms = ["ES256"]
discovery_url = "{issuer}/.well-known/openid-configuration"

[[route]]
name = "transfer"
path_prefix = "/transfer"
upstream = "{upstream}"
auth = "required"
max_auth_age = "5m"
acr_values = ["mfa", "phr"]
[route.claim_headers]
"X-Auth-Acr" = "acr"

[[route]]
name = "profile"
path_prefix = "/"
upstream = "{upstream}"
auth = "required"
"#
    ))
    .await;

    let strong_fresh = provider.login("mfa", 0).await;
    let strong_old = provider.login("mfa", 3600).await;
    let weak_fresh = provider.login("pwd", 0).await;

    // The provider's keys arrive through discovery; the first answer may be a 503.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let a = get(addr, "/transfer", Some(&strong_fresh)).await;
        if a.status != 503 || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.upstream_header("x-auth-acr"), ["mfa"]);

    let a = get(addr, "/transfer", Some(&strong_old)).await;
    assert_eq!(a.status, 401);
    let challenge = a.header("www-authenticate").expect("challenge");
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#)
            && challenge.contains(r#"max_age="300""#)
            && challenge.contains(r#"acr_values="mfa phr""#),
        "{challenge}"
    );
    assert!(a.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("more recent")));

    let a = get(addr, "/transfer", Some(&weak_fresh)).await;
    assert_eq!(a.status, 401);
    assert!(a.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("\"pwd\"") && d.contains("stronger")));

    // Routes without step-up take every valid token.
    for t in [&strong_old, &weak_fresh] {
        assert_eq!(get(addr, "/profile", Some(t)).await.status, 200);
    }
    assert_eq!(
        app.metrics
            .auth_failures
            .with_label_values(&["transfer", "insufficient_user_authentication"])
            .get(),
        2
    );
}

//! A real headless Chromium driven through chromedriver (W3C WebDriver over HTTP/1.1 on a
//! plain `std` TcpStream: a few JSON requests, no WebDriver crate). Both processes are started
//! by [`Browser::start`] and killed by their PIDs when it is dropped.
//!
//! Calls block; they run under `block_in_place`, so tests use the multi-thread runtime.
//! [`serve_page`] serves a page on another 127.0.0.1 origin (CORS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::ChildGuard;

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// One WebDriver call (a page load included) may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A Chromium session.
pub struct Browser {
    port: u16,
    session: String,
    _driver: ChildGuard,
    _profile: tempfile::TempDir,
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails (never skips) when the browser tools are missing, naming the Debian packages.
pub fn require_tools() {
    for (tool, package) in [
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ] {
        assert!(
            which(tool),
            "`{tool}` is not on PATH: install the Debian package `{package}` (CI installs it)"
        );
    }
}

/// The value Chromium's `--ignore-certificate-errors-spki-list` takes for a PEM certificate:
/// base64 of the SHA-256 of its SubjectPublicKeyInfo.
pub fn spki_hash(cert_pem: &Path) -> String {
    use base64::Engine;
    let der = super::tls::der_of(cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse certificate");
    let spki = cert.tbs_certificate.subject_pki.raw;
    base64::engine::general_purpose::STANDARD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that trusts the certificate `trust_pem`
    /// (plain-HTTP pages need none).
    pub fn start(trust_pem: Option<&Path>) -> Browser {
        require_tools();
        let port = super::free_port();
        let driver = ChildGuard(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn chromedriver"),
        );
        let profile = tempfile::tempdir().expect("profile dir");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if let Some(pem) = trust_pem {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                spki_hash(pem)
            ));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let mut b = Browser {
            port,
            session: String::new(),
            _driver: driver,
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        b
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error (an object
    /// with `error` and `message`, W3C WebDriver §6.6; a script's own result may have either).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = tokio::task::block_in_place(|| self.raw(method, path, body));
        if let (Some(err), Some(_)) = (v.get("error"), v.get("message")) {
            panic!("WebDriver {method} {path}: {err}: {}", v["message"]);
        }
        v
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect chromedriver");
        s.set_read_timeout(Some(CALL_TIMEOUT)).expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .expect("write to chromedriver");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        let mut length = None;
        loop {
            line.clear();
            r.read_line(&mut line).expect("read chromedriver head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let mut out = Vec::new();
        match length {
            Some(n) => {
                out.resize(n, 0);
                r.read_exact(&mut out).expect("read chromedriver body");
            }
            None => {
                r.read_to_end(&mut out).expect("read chromedriver body");
            }
        }
        let v: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("chromedriver answer is not JSON ({e})"));
        v.get("value").cloned().unwrap_or(v)
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Navigates the current tab and waits for the page load.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })));
    }

    /// The current tab's URL.
    pub fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The visible text of the current page.
    pub fn text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Runs a synchronous script and returns its value.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs an asynchronous script (its last argument is the callback) and returns its value.
    pub fn script_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.at("/execute/async"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = tokio::task::block_in_place(|| {
            self.raw(
                "POST",
                &self.at("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
        });
        v.get(ELEMENT).and_then(Value::as_str).map(str::to_owned)
    }

    /// Waits up to `limit` for an element matching `css`.
    pub fn wait_for(&self, css: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {css:?} within {limit:?} at {}; page: {}",
                self.url(),
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types into an element.
    pub fn type_into(&self, element: &str, text: &str) {
        self.call(
            "POST",
            &self.at(&format!("/element/{element}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// Clicks an element (and waits for a navigation it starts).
    pub fn click(&self, element: &str) {
        self.call(
            "POST",
            &self.at(&format!("/element/{element}/click")),
            Some(json!({})),
        );
    }

    /// Opens a new tab and returns its handle (the current tab stays current).
    pub fn new_tab(&self) -> String {
        let v = self.call(
            "POST",
            &self.at("/window/new"),
            Some(json!({ "type": "tab" })),
        );
        v["handle"].as_str().expect("tab handle").to_owned()
    }

    /// The current tab's handle.
    pub fn tab(&self) -> String {
        self.call("GET", &self.at("/window"), None)
            .as_str()
            .expect("handle")
            .to_owned()
    }

    /// Makes a tab current.
    pub fn switch_to(&self, handle: &str) {
        self.call(
            "POST",
            &self.at("/window"),
            Some(json!({ "handle": handle })),
        );
    }

    /// Every cookie the browser holds for the current page's origin (HttpOnly ones included).
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.call("GET", &self.at("/cookie"), None)
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or_default().to_owned(),
                            c["value"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `Cookie` header value the browser would send for the gateway's session.
    pub fn session_cookie_header(&self) -> String {
        self.cookies()
            .into_iter()
            .filter(|(n, _)| n.starts_with("__Host-jwtgate"))
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Logs in on oidc-provider's own login form (any login, any password) if the current page
    /// is that form.
    pub fn log_in_as(&self, login: &str) {
        let field = self.wait_for("input[name=login]", Duration::from_secs(20));
        self.type_into(&field, login);
        let password = self.wait_for("input[name=password]", Duration::from_secs(5));
        self.type_into(&password, "any password");
        let submit = self.wait_for("button[type=submit]", Duration::from_secs(5));
        self.click(&submit);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.raw("DELETE", &path, None)
            }));
        }
    }
}

/// Serves `html` at every path on 127.0.0.1:0 (another origin than the gateway's); stops when
/// the runtime does.
pub async fn serve_page(html: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let res = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = s.write_all(res.as_bytes()).await;
            });
        }
    });
    addr
}

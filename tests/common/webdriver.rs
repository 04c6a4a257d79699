//! A real headless Chromium driven through chromedriver's WebDriver HTTP API (W3C WebDriver),
//! and a tiny page server, for tests where a browser acts (CORS).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{free_port, ChildGuard};

/// The Chromium binary (Debian's package `chromium`).
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process and one browser session; both end when dropped.
pub struct Browser {
    base: String,
    session: String,
    _driver: ChildGuard,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; fails naming the missing package.
    pub async fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install the chromium package (CORS tests drive a real browser)"
        );
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromedriver did not start ({e}): install the chromium-driver package")
            });
        let driver = ChildGuard(driver);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(a) =
                super::client::try_get_url(&super::client::new(), &format!("{base}/status"), None)
                    .await
            {
                if a.json()["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            },
        }}});
        let res = post(&format!("{base}/session"), &caps).await;
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {res}"))
            .to_owned();
        Browser {
            base,
            session,
            _driver: driver,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    /// Navigates to `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        let res = post(&self.url("/url"), &json!({ "url": url })).await;
        assert!(res["value"].is_null(), "navigation to {url} failed: {res}");
    }

    /// Runs `script` as an async WebDriver script (its last argument is the callback) with
    /// `args`; returns what it passed to the callback.
    pub async fn run_async(&self, script: &str, args: Value) -> Value {
        let res = post(
            &self.url("/execute/async"),
            &json!({ "script": script, "args": args }),
        )
        .await;
        res["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; chromedriver itself is killed by its guard.
        let url = self.url("");
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        super::client::request("DELETE", &url, &[], Bytes::new()),
                    )
                    .await;
                });
            }
        })
        .join();
    }
}

async fn post(url: &str, body: &Value) -> Value {
    let a = super::client::request(
        "POST",
        url,
        &[("content-type", "application/json")],
        Bytes::from(body.to_string()),
    )
    .await;
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("WebDriver {url}: {e}: {}", a.body))
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

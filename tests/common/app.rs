//! A whole `App` (reloads, metrics and snapshot reachable) on a config written to a temp dir,
//! serving on 127.0.0.1:0 until the test ends.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

/// A running App and what keeps it alive.
pub struct Running {
    pub app: Arc<jwtgate::App>,
    pub addr: SocketAddr,
    /// Holds the config and key files (see [`super::write_keys`]).
    pub dir: tempfile::TempDir,
}

/// Starts an App on `config` (`[listen] addr = "127.0.0.1:0"` added unless it has a
/// `[listen]`; `{dir}` becomes the directory holding the key files); panics on a refused
/// config.
pub async fn start(config: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    super::write_keys(dir.path());
    let path = dir.path().join("gateway.toml");
    let text = config.replace("{dir}", &dir.path().display().to_string());
    let text = if text.contains("[listen]") {
        text
    } else {
        format!("[listen]\naddr = \"127.0.0.1:0\"\n{text}")
    };
    std::fs::write(&path, text).expect("write config");
    let app = Arc::new(jwtgate::App::load(&path).unwrap_or_else(|e| panic!("config: {e}")));
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(jwtgate::run(l, app.clone(), std::future::pending::<()>()));
    Running { app, addr, dir }
}

/// An echo upstream that lives as long as the test's runtime: its base URL.
pub async fn echo_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(jwtgate::echo::serve(l, std::future::pending()));
    format!("http://{addr}")
}

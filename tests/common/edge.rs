//! A gateway with its admin listener and an echo upstream, started from config text in a
//! temporary directory, kept as an [`jwtgate::App`] so tests can reload it (assertion, CORS
//! and rate-limit tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running gateway: traffic and admin addresses, its app, its directory.
pub struct EdgeGateway {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
    pub app: Arc<jwtgate::App>,
    stop: Option<oneshot::Sender<()>>,
    _stop_upstream: oneshot::Sender<()>,
}

impl EdgeGateway {
    /// Starts the gateway on `config` (`{upstream}` becomes the echo upstream's URL) written
    /// as `gateway.toml` in `dir`, which already holds the test keys ([`super::write_keys`]).
    pub async fn start(dir: &Path, config: &str) -> EdgeGateway {
        let (upstream, stop_upstream) = super::echo_upstream().await;
        Self::start_with_upstream(dir, config, upstream, stop_upstream).await
    }

    /// Like [`EdgeGateway::start`] with a given upstream (kept running until dropped).
    pub async fn start_with_upstream(
        dir: &Path,
        config: &str,
        upstream: SocketAddr,
        stop_upstream: oneshot::Sender<()>,
    ) -> EdgeGateway {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}",
            config.replace("{upstream}", &format!("http://{upstream}"))
        );
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).expect("write config");
        let app =
            Arc::new(jwtgate::App::load(&path).unwrap_or_else(|e| panic!("config refused:\n{e}")));
        let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (addr, admin_addr) = (
            traffic.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(jwtgate::run(
            jwtgate::Listeners {
                traffic,
                admin: Some(admin),
            },
            app.clone(),
            async move {
                let _ = stopped.await;
                std::time::Duration::from_millis(100)
            },
        ));
        EdgeGateway {
            dir: dir.to_owned(),
            config: path,
            addr,
            admin: admin_addr,
            upstream,
            app,
            stop: Some(stop),
            _stop_upstream: stop_upstream,
        }
    }

    /// `http://<traffic address><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://<admin address><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Any request to the traffic listener.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> super::Answer {
        super::client::request(method, &self.url(path), headers, bytes::Bytes::new()).await
    }

    /// The admin listener's `/metrics`.
    pub async fn metrics(&self) -> String {
        super::client::request("GET", &self.admin_url("/metrics"), &[], bytes::Bytes::new())
            .await
            .body
    }

    /// Rewrites the config file (same `{upstream}`) and applies it.
    pub fn reload(&self, config: &str) {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n{}",
            config.replace("{upstream}", &format!("http://{}", self.upstream))
        );
        std::fs::write(&self.config, text).expect("write config");
        self.app
            .reload_config()
            .unwrap_or_else(|e| panic!("reload refused:\n{e}"));
    }
}

impl Drop for EdgeGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

//! A real `redis-server` for tests: its own free port on 127.0.0.1 and its own data directory
//! (append-only file, fsync on every write, so a restart keeps what was written). Killed by
//! its PID when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server started by this test.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// The path of `redis-server`, or a panic naming the package: a test that needs Redis fails
/// loudly on a machine without it (`.ci/run` installs it), never passes silently.
fn binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join("redis-server");
        if p.is_file() {
            return p;
        }
    }
    for p in ["/usr/bin/redis-server", "/usr/sbin/redis-server"] {
        if std::path::Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!("redis-server is not installed: this test needs a real Redis (Debian package redis-server; .ci/run installs it)")
}

impl RedisServer {
    /// Starts a server with persistence and waits until it answers PING.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("redis data dir");
        let mut r = RedisServer {
            child: None,
            port: super::free_port(),
            dir,
        };
        r.spawn();
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, no chance to save: only what the append-only file holds
    /// survives) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again on the same port with its data deleted: a Redis that "came back empty".
    pub fn restart_empty(&mut self) {
        self.kill();
        for entry in std::fs::read_dir(self.dir.path()).expect("read data dir") {
            let p = entry.expect("entry").path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
        self.spawn();
    }

    /// A synchronous connection, for the test to read or write directly.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test redis-server")
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .arg("--logfile")
            .arg(&log)
            .args(["--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = redis::Client::open(self.url())
                .ok()
                .and_then(|c| {
                    c.get_connection_with_timeout(Duration::from_millis(200))
                        .ok()
                })
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some();
            if ok {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "redis-server exited at start ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

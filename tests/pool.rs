//! The HTTP/1 upstream pool against real upstreams on 127.0.0.1 written here, that count the
//! connections they accept and see closed: keep-alive reuse, a connection the upstream closed
//! while idle, an upstream closing mid-response, the idle limit under concurrency, idle expiry.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use jwtgate::proxy::pool::{Pool, PoolSettings};
use jwtgate::proxy::UpstreamKind;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Barrier;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// How the test upstream answers each request.
#[derive(Clone)]
enum Mode {
    /// `200 ok`, keeping the connection open.
    KeepAlive,
    /// `200 ok` with keep-alive, then closes the connection once it has been idle this long.
    CloseWhenIdle(Duration),
    /// Half a response head, then closes.
    HalfHead,
    /// Waits for every request of a round (the barrier's size) before answering.
    Together(Arc<Barrier>),
}

/// A test upstream and its counters.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (mode, c) = (mode.clone(), c.clone());
                tokio::spawn(async move {
                    serve(s, mode).await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            addr,
            accepted,
            closed,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Serves one connection until the client closes it or `mode` ends it. Requests carry no body.
async fn serve(s: tokio::net::TcpStream, mode: Mode) {
    let mut s = BufReader::new(s);
    loop {
        // The request head, to its empty line; EOF first means the client closed.
        let mut line = String::new();
        loop {
            line.clear();
            match s.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        match &mode {
            Mode::HalfHead => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Len").await;
                return;
            }
            Mode::Together(b) => {
                b.wait().await;
            }
            Mode::KeepAlive | Mode::CloseWhenIdle(_) => {}
        }
        if s.write_all(OK).await.is_err() {
            return;
        }
        if let Mode::CloseWhenIdle(after) = mode {
            let mut peek = [0u8; 1];
            // Closes unless the next request arrives first.
            if tokio::time::timeout(after, s.get_mut().peek(&mut peek))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

fn settings(max_idle: usize, idle_timeout: Duration) -> PoolSettings {
    PoolSettings {
        idle_timeout,
        max_idle,
        connect_timeout: Duration::from_secs(2),
    }
}

fn pool(up: &Upstream, s: PoolSettings) -> Arc<Pool<Full<Bytes>>> {
    let authority = http::uri::Authority::try_from(up.addr.to_string()).expect("authority");
    Arc::new(Pool::new(&http::uri::Scheme::HTTP, &authority, None, s).expect("pool"))
}

/// One GET through `pool`, read to its end; the status and body.
async fn get(pool: &Arc<Pool<Full<Bytes>>>, addr: SocketAddr) -> (u16, String) {
    let req = http::Request::get(format!("http://{addr}/x"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = pool
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("request: {e}"));
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A gateway with one route `/` (no auth) to `up`.
async fn gateway(up: &Upstream) -> Harness {
    Harness::start(&format!(
        "{}\n[[route]]\nname = \"up\"\npath_prefix = \"/\"\nupstream = \"http://{}\"\nauth = \"none\"\n",
        default_issuer(),
        up.addr
    ))
    .await
}

#[tokio::test]
async fn sequential_requests_through_the_gateway_share_one_upstream_connection() {
    let up = Upstream::start(Mode::KeepAlive).await;
    let h = gateway(&up).await;
    for i in 0..20 {
        let a = h.get("/x", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(
        up.accepted(),
        1,
        "one TCP connection for 20 sequential requests"
    );
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let up = Upstream::start(Mode::KeepAlive).await;
    let p = pool(&up, settings(8, Duration::from_secs(60)));
    for _ in 0..20 {
        assert_eq!(get(&p, up.addr).await, (200, "ok".into()));
    }
    assert_eq!(up.accepted(), 1);
    assert_eq!(p.idle_len(), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let up = Upstream::start(Mode::CloseWhenIdle(Duration::from_millis(50))).await;
    let h = gateway(&up).await;
    for i in 1..=5 {
        let a = h.get("/x", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "ok"), "request {i}");
        // Each connection is closed by the upstream before the next request.
        eventually(Duration::from_secs(5), "the upstream closed it", || async {
            up.closed() == i
        })
        .await;
    }
    assert_eq!(up.accepted(), 5, "a new connection for each request");

    // The same through the pool alone: no error, ever, for a request after an idle close.
    let p = pool(&up, settings(8, Duration::from_secs(60)));
    for i in 6..=10 {
        assert_eq!(get(&p, up.addr).await, (200, "ok".into()));
        eventually(Duration::from_secs(5), "the upstream closed it", || async {
            up.closed() == i
        })
        .await;
    }
    assert_eq!(up.accepted(), 10);
}

#[tokio::test]
async fn an_upstream_closing_mid_response_is_502_reset() {
    let up = Upstream::start(Mode::HalfHead).await;
    let p = pool(&up, settings(8, Duration::from_secs(60)));
    let req = http::Request::get(format!("http://{}/x", up.addr))
        .body(Full::new(Bytes::new()))
        .expect("request");
    match p.request(req).await {
        Ok(res) => panic!("a half response is no answer: {}", res.status()),
        Err(e) => assert_eq!(e.kind(), UpstreamKind::Reset, "{e}"),
    }
    assert_eq!(p.idle_len(), 0, "a broken connection is never pooled");

    let h = gateway(&up).await;
    let a = h.get("/x", &[]).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.json()["error"], "bad_gateway");
    // Not retried: the request had been written.
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn the_idle_limit_holds_under_concurrency() {
    const AT_ONCE: usize = 5;
    const MAX_IDLE: usize = 2;
    let up = Upstream::start(Mode::Together(Arc::new(Barrier::new(AT_ONCE)))).await;
    let p = pool(&up, settings(MAX_IDLE, Duration::from_secs(60)));
    let round = || async {
        let mut tasks = Vec::new();
        for _ in 0..AT_ONCE {
            let (p, addr) = (p.clone(), up.addr);
            tasks.push(tokio::spawn(async move { get(&p, addr).await }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), (200, "ok".into()));
        }
    };
    round().await;
    assert_eq!(
        up.accepted(),
        AT_ONCE,
        "all in flight at once: one connection each"
    );
    assert_eq!(p.idle_len(), MAX_IDLE, "only the limit is kept");
    eventually(Duration::from_secs(5), "the others closed", || async {
        up.closed() == AT_ONCE - MAX_IDLE
    })
    .await;
    round().await;
    assert_eq!(
        up.accepted(),
        AT_ONCE + (AT_ONCE - MAX_IDLE),
        "the kept ones reused, the rest opened"
    );
    assert_eq!(p.idle_len(), MAX_IDLE);
}

#[tokio::test]
async fn idle_connections_expire() {
    let up = Upstream::start(Mode::KeepAlive).await;
    let p = pool(&up, settings(8, Duration::from_millis(200)));
    assert_eq!(get(&p, up.addr).await, (200, "ok".into()));
    assert_eq!(get(&p, up.addr).await, (200, "ok".into()));
    assert_eq!(up.accepted(), 1);
    eventually(
        Duration::from_secs(5),
        "the idle connection closed",
        || async { up.closed() == 1 },
    )
    .await;
    assert_eq!(get(&p, up.addr).await, (200, "ok".into()));
    assert_eq!(up.accepted(), 2, "a new connection after expiry");
}

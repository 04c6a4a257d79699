//! The verified-token cache's memory bound, measured from outside: the real binary's resident
//! memory (VmRSS) before and after 4,000 unique valid tokens whose claims hold a large array
//! (8 KB of text that parses into several hundred KB of JSON values each).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_port, sign_raw, spawn_run, write_keys, AUD, ISS};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

/// The cache's byte budget (README "Verified-token cache").
const CACHE_BUDGET_BYTES: u64 = 32 << 20;
/// What else may grow while 4,000 requests pass: allocator arenas and fragmentation, the
/// connection pools, metrics series and the access log buffer (README documents this margin).
const MARGIN_BYTES: u64 = 48 << 20;

fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

/// A valid HS256 token of just under 8 KB whose claims hold an array of ~2,800 one-digit
/// numbers (each a whole JSON value in memory), unique by `jti`.
fn big_token(n: usize) -> String {
    let exp = common::now() + 600;
    let claims = json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "exp": exp, "jti": format!("t{n}"),
        "a": vec![1; 2800],
    });
    let t = sign_raw(
        "HS256",
        r#"{"alg":"HS256","typ":"JWT","kid":"hmac"}"#,
        &claims.to_string(),
    );
    assert!(t.len() <= 8192, "token is {} bytes", t.len());
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_growth_from_4000_large_unique_tokens_stays_within_the_cache_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path());
    let (up, _stop_up) = common::echo_upstream().await;
    let port = free_port();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[listen]
addr = "127.0.0.1:{port}"
{}
[[route]]
name = "main"
path_prefix = "/"
upstream = "http://{up}"
auth = "required"
"#,
            common::default_issuer()
        ),
    )
    .expect("write config");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let child = spawn_run(dir.path(), &config, &out, &err, |c| {
        c.env("RUST_LOG", "error");
    });
    let pid = child.id();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |token: String| {
        let client = client.clone();
        async move {
            let req = http::Request::get(format!("http://127.0.0.1:{port}/"))
                .header("authorization", format!("Bearer {token}"))
                .body(Empty::new())
                .expect("request");
            let res = tokio::time::timeout(Duration::from_secs(20), client.request(req))
                .await
                .map_err(|_| "timeout".to_owned())?
                .map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            let _ = res.into_body().collect().await;
            Ok::<u16, String>(status)
        }
    };
    // Ready when it answers; then warm up pools and allocator with the same kind of token.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if get(big_token(0)).await == Ok(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway not up: {}",
            common::output_of(&out, &err)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 1..50 {
        assert_eq!(get(big_token(n)).await, Ok(200));
    }
    let before = vm_rss(pid);
    // 4,000 unique tokens, 8 at a time.
    let tokens: Vec<String> = (1000..5000).map(big_token).collect();
    for chunk in tokens.chunks(8) {
        let answers = futures_join_all(chunk.iter().cloned().map(&get).collect::<Vec<_>>()).await;
        for a in answers {
            assert_eq!(a, Ok(200), "{}", common::output_of(&out, &err));
        }
    }
    let after = vm_rss(pid);
    let growth = after.saturating_sub(before);
    eprintln!(
        "VmRSS before {} MiB, after {} MiB, growth {} MiB",
        before >> 20,
        after >> 20,
        growth >> 20
    );
    assert!(
        growth < CACHE_BUDGET_BYTES + MARGIN_BYTES,
        "RSS grew by {} MiB (before {} MiB, after {} MiB): over the {} MiB cache budget plus {} MiB margin",
        growth >> 20,
        before >> 20,
        after >> 20,
        CACHE_BUDGET_BYTES >> 20,
        MARGIN_BYTES >> 20
    );
}

/// Awaits every future (spawned, so they run in parallel).
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

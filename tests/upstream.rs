//! The upstream side: failures become 502/504, statuses and bodies pass through, bodies stream,
//! connections are kept alive, and the HTTP/1.1 and HTTP/2 front ends hold their limits.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One route `/` named `up` to `upstream` with `auth`, after the `limits` text, with the
/// default issuer and the claim header `X-Auth-Sub`.
fn config(limits: &str, upstream: &str, auth: &str) -> String {
    format!(
        "{limits}\n{}\n[[route]]\nname = \"up\"\npath_prefix = \"/\"\nupstream = \"{upstream}\"\nauth = \"{auth}\"\n[route.claim_headers]\n\"X-Auth-Sub\" = \"sub\"\n",
        default_issuer()
    )
}

/// A loopback port with nothing listening (bound, noted, released).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Asserts `a` is the gateway's own JSON error with `status` and `error`, never the token.
fn assert_gateway_error(a: &Answer, status: u16, error: &str, token: Option<&str>) {
    assert_eq!(a.status, status, "{}", a.body);
    let j = a.json();
    assert_eq!(j["error"], error, "{}", a.body);
    assert!(
        j["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "a description: {}",
        a.body
    );
    assert!(
        j.get("headers").is_none(),
        "not the echo's body: {}",
        a.body
    );
    assert_eq!(a.header("content-type"), Some("application/json"));
    if let Some(t) = token {
        assert!(
            !a.body.contains(t),
            "the token never appears in an error body"
        );
        let sig = t.rsplit('.').next().unwrap_or(t);
        assert!(!a.body.contains(sig), "not even its signature");
    }
}

/// An upstream that counts the requests it receives and answers 200 `counted`.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    c.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"counted"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

/// A raw TCP upstream that reads a request head and answers with `response` (or, when empty,
/// closes the connection without answering).
async fn raw_upstream(response: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                if !response.is_empty() {
                    let _ = r.get_mut().write_all(response).await;
                    let _ = r.get_mut().flush().await;
                }
                // Dropping the socket closes it.
            });
        }
    });
    addr
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// (lower-case name, value)
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body) from `r`.
async fn read_response(r: &mut BufReader<TcpStream>) -> RawResponse {
    let mut line = String::new();
    r.read_line(&mut line).await.expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header");
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).await.expect("chunk size");
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).await.expect("chunk");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().expect("content-length");
        body.resize(len, 0);
        r.read_exact(&mut body).await.expect("body");
    } else if !(100..200).contains(&status) && status != 204 && status != 304 {
        r.read_to_end(&mut body).await.expect("body");
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream failures

#[tokio::test]
async fn upstream_refused_is_502_bad_gateway() {
    let url = format!("http://127.0.0.1:{}", dead_port());
    let h = Harness::start(&config("", &url, "none")).await;
    let a = h.get("/anything", &[]).await;
    assert_gateway_error(&a, 502, "bad_gateway", None);

    let h = Harness::start(&config("", &url, "required")).await;
    let t = token("ES256", &claims());
    let a = h.get_with_token("/anything", &t).await;
    assert_gateway_error(&a, 502, "bad_gateway", Some(&t));
    assert!(a.header("x-request-id").is_some(), "an id to quote");
}

#[tokio::test]
async fn upstream_closing_without_answer_is_502_bad_gateway() {
    let up = raw_upstream(b"").await;
    let h = Harness::start(&config("", &format!("http://{up}"), "none")).await;
    let a = h.get("/reset", &[]).await;
    assert_gateway_error(&a, 502, "bad_gateway", None);
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let h = Harness::start(&config(
        "[limits]\nupstream_timeout = \"300ms\"",
        "{upstream}",
        "required",
    ))
    .await;
    let t = token("ES256", &claims());
    let a = h.get_with_token("/?delay_ms=3000", &t).await;
    assert_gateway_error(&a, 504, "upstream_timeout", Some(&t));
    // A quick answer on the same gateway still passes.
    let a = h.get_with_token("/?delay_ms=10", &t).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

// ---------------------------------------------------------------------------------------------
// Pass-through

#[tokio::test]
async fn upstream_status_passes_through_with_its_body() {
    let h = Harness::start(&default_config()).await;
    let t = token("ES256", &claims());
    for status in [418u16, 500, 404, 201, 503] {
        let a = h
            .get_with_token(&format!("/teapot?status={status}"), &t)
            .await;
        assert_eq!(a.status, status, "{}", a.body);
        let j = a.json();
        assert_eq!(j["path"], "/teapot", "the echo's own body: {}", a.body);
        assert_eq!(j["query"], format!("status={status}"), "{}", a.body);
        assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
        assert!(
            j.get("error").is_none(),
            "not a gateway error body: {}",
            a.body
        );
    }
}

#[tokio::test]
async fn large_request_body_is_streamed_through() {
    let h = Harness::start(&default_config()).await;
    let t = token("ES256", &claims());
    let len = 5 * 1024 * 1024;
    let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let auth = format!("Bearer {t}");
    let a = h
        .request(
            "POST",
            "/upload",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/octet-stream"),
            ],
            Bytes::from(body.clone()),
        )
        .await;
    assert_eq!(a.status, 200, "{}", &a.body[..a.body.len().min(500)]);
    let j = a.json();
    assert_eq!(j["method"], "POST");
    let got = j["body"].as_str().expect("body string");
    assert_eq!(got.len(), len, "every byte arrived");
    assert!(got.as_bytes() == body.as_slice(), "the bytes are intact");
    assert_eq!(a.upstream_header("content-length"), [len.to_string()]);
}

#[tokio::test]
async fn chunked_request_body_arrives_intact() {
    let h = Harness::start(&config("", "{upstream}", "none")).await;
    let s = TcpStream::connect(h.addr).await.expect("connect");
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(
            b"POST /chunked HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n1\r\n \r\n5;ext=1\r\nworld\r\n0\r\n\r\n",
        )
        .await
        .expect("write");
    let res = tokio::time::timeout(Duration::from_secs(5), read_response(&mut r))
        .await
        .expect("answered");
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let j = res.body_json();
    assert_eq!(j["body"], "hello world", "{j}");
    assert_eq!(j["path"], "/chunked");
}

#[tokio::test]
async fn hop_by_hop_response_headers_from_the_upstream_are_removed() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Internal-Secret\r\n\
          X-Internal-Secret: s3cr3t\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
          Upgrade: foo\r\nX-Kept: yes\r\n\r\nok",
    )
    .await;
    let h = Harness::start(&config("", &format!("http://{up}"), "none")).await;
    let s = TcpStream::connect(h.addr).await.expect("connect");
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(b"GET /h HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    let res = tokio::time::timeout(Duration::from_secs(5), read_response(&mut r))
        .await
        .expect("answered");
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.body, b"ok");
    assert_eq!(res.header("x-kept"), Some("yes"), "{res:?}");
    for gone in [
        "x-internal-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            res.header(gone).is_none(),
            "{gone} must be removed: {res:?}"
        );
    }
    assert!(
        !res.headers.iter().any(|(_, v)| v.contains("s3cr3t")),
        "{res:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Client connections

#[tokio::test]
async fn keep_alive_connection_serves_several_requests() {
    let h = Harness::start(&default_config()).await;
    let t = token("ES256", &claims());
    let s = TcpStream::connect(h.addr).await.expect("connect");
    let mut r = BufReader::new(s);
    for i in 0..5 {
        let req =
            format!("GET /ka/{i} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\n\r\n");
        r.get_mut()
            .write_all(req.as_bytes())
            .await
            .expect("write on the same connection");
        let res = tokio::time::timeout(Duration::from_secs(5), read_response(&mut r))
            .await
            .expect("answered");
        assert_eq!(
            res.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&res.body)
        );
        let j = res.body_json();
        assert_eq!(j["path"], format!("/ka/{i}"), "{j}");
        assert_eq!(j["headers"]["x-auth-sub"][0], "alice", "{j}");
    }
    // One that fails auth does not end the connection either.
    r.get_mut()
        .write_all(b"GET /ka/no HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    let res = read_response(&mut r).await;
    assert_eq!(res.status, 401);
    r.get_mut()
        .write_all(
            format!("GET /ka/last HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let res = read_response(&mut r).await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn header_of_40_kib_is_431_and_never_reaches_the_upstream() {
    let (up, count) = counting_upstream().await;
    let h = Harness::start(&config("", &format!("http://{up}"), "none")).await;
    let big = "a".repeat(40 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: gw.test\r\nX-Big: {big}\r\n\r\n");
    let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "expected 431, got {:?}",
        &out[..out.len().min(300)]
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "the upstream is not reached"
    );
}

#[tokio::test]
async fn two_hundred_small_headers_is_431_and_never_reaches_the_upstream() {
    let (up, count) = counting_upstream().await;
    let h = Harness::start(&config("", &format!("http://{up}"), "none")).await;
    let mut req = String::from("GET / HTTP/1.1\r\nHost: gw.test\r\n");
    for i in 0..200 {
        req.push_str(&format!("X-H{i:03}: v\r\n")); // 10 bytes each
    }
    req.push_str("\r\n");
    let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "expected 431, got {:?}",
        &out[..out.len().min(300)]
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "the upstream is not reached"
    );
}

#[tokio::test]
async fn headers_just_below_max_header_bytes_are_served() {
    let (up, count) = counting_upstream().await;
    let h = Harness::start(&config("", &format!("http://{up}"), "none")).await;
    // The whole request head, 512 bytes under the default max_header_bytes (16384).
    let target = 16384 - 512;
    let mut req = String::from("GET /big HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n");
    let mut i = 0;
    while req.len() + 2 < target {
        let room = target - 2 - req.len();
        let value_len = room.saturating_sub(12).min(1500);
        if value_len == 0 {
            break;
        }
        req.push_str(&format!("X-F{i:03}: {}\r\n", "v".repeat(value_len)));
        i += 1;
    }
    req.push_str("\r\n");
    assert!(
        req.len() <= target && req.len() > target - 20,
        "{}",
        req.len()
    );
    let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "a {} byte head is within the limit, got {:?}",
        req.len(),
        &out[..out.len().min(300)]
    );
    assert!(out.ends_with("counted"), "{out}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_header_sender_is_disconnected_after_header_read_timeout() {
    let (up, count) = counting_upstream().await;
    let h = Harness::start(&config(
        "[limits]\nheader_read_timeout = \"500ms\"",
        &format!("http://{up}"),
        "none",
    ))
    .await;
    let (out, ended) = raw_exchange(
        h.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        ended,
        "the gateway must close a connection whose headers never finish (got {out:?} so far)"
    );
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 408"),
        "EOF or a 408, got {out:?}"
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "the upstream is not reached"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_request_is_served() {
    let h = Harness::start(&default_config()).await;
    let t = token("ES256", &claims());
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::post(format!("http://{}/h2/path?x=1", h.addr))
        .header("authorization", format!("Bearer {t}"))
        .header("x-auth-sub", "mallory")
        .body(Full::new(Bytes::from_static(b"over h2")))
        .expect("request");
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(res.version(), http::Version::HTTP_2);
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("echo json");
    assert_eq!(j["path"], "/h2/path", "{j}");
    assert_eq!(j["query"], "x=1", "{j}");
    assert_eq!(j["body"], "over h2", "{j}");
    assert_eq!(
        j["headers"]["x-auth-sub"],
        serde_json::json!(["alice"]),
        "{j}"
    );
    assert!(j["headers"].get("authorization").is_none(), "{j}");

    // Without a token, HTTP/2 gets the same 401.
    let req = http::Request::get(format!("http://{}/h2", h.addr))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = client.request(req).await.expect("answered");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn raised_max_header_bytes_admits_a_40_kib_header() {
    let (up, count) = counting_upstream().await;
    let h = Harness::start(&config(
        "[limits]\nmax_header_bytes = 65536",
        &format!("http://{up}"),
        "none",
    ))
    .await;
    let big = "a".repeat(40 * 1024);
    let req =
        format!("GET / HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nX-Big: {big}\r\n\r\n");
    let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "40 KiB is within a 64 KiB limit, got {:?}",
        &out[..out.len().min(300)]
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http2_header_over_the_limit_is_431_and_never_reaches_the_upstream() {
    let (up, count) = counting_upstream().await;
    let h = Harness::start(&config("", &format!("http://{up}"), "none")).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::get(format!("http://{}/big", h.addr))
        .header("x-big", "a".repeat(40 * 1024))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("answered in time")
        .expect("an answer, not a broken connection");
    assert_eq!(res.status(), 431);
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "the upstream is not reached"
    );
}

#[tokio::test]
async fn body_of_a_refused_request_is_never_read_as_a_request() {
    let h = Harness::start(&format!(
        "{}\n[[route]]\nname = \"open\"\npath_prefix = \"/\"\nupstream = \"{{upstream}}\"\nauth = \"none\"\n\n[[route]]\nname = \"private\"\npath_prefix = \"/private\"\nupstream = \"{{upstream}}\"\nauth = \"required\"\n",
        default_issuer()
    ))
    .await;
    // A 401 answered before the body is read; the body looks like a request of its own.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let req = format!(
        "POST /private HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n{smuggled}GET /next HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
        smuggled.len()
    );
    let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(
        !out.contains("/smuggled"),
        "the body was read as a request: {out}"
    );
}

#[tokio::test]
async fn expect_100_continue_forwards_the_body_only_after_auth() {
    let h = Harness::start(&default_config()).await;
    let t = token("ES256", &claims());
    let s = TcpStream::connect(h.addr).await.expect("connect");
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(
            format!(
                "POST /e HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\n\
                 Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let interim = tokio::time::timeout(Duration::from_secs(5), read_response(&mut r))
        .await
        .expect("100 Continue in time");
    assert_eq!(interim.status, 100, "{interim:?}");
    r.get_mut().write_all(b"hello").await.expect("body");
    let res = tokio::time::timeout(Duration::from_secs(5), read_response(&mut r))
        .await
        .expect("final answer in time");
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.body_json()["body"], "hello");

    // Without a token the answer is the 401, not an invitation to send the body.
    let s = TcpStream::connect(h.addr).await.expect("connect");
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(
            b"POST /e HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .expect("write");
    let res = tokio::time::timeout(Duration::from_secs(5), read_response(&mut r))
        .await
        .expect("answered without the body");
    assert_eq!(res.status, 401, "{res:?}");
}

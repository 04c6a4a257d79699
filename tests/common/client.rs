//! One HTTP/1.1 GET (with an optional bearer token) for every test, read whole into an
//! [`Answer`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::Answer;

/// A request not answered within this long fails the test.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// A keep-alive HTTP/1.1 client.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A new keep-alive HTTP/1.1 client (share one for many requests).
pub fn new() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Reads a response whole; `what` names the request in errors.
pub async fn read_answer<B>(res: http::Response<B>, what: &str) -> Result<Answer, String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{what}: body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// GET `url` through `client` with `Authorization: Bearer token` when given; an error
/// instead of a panic (load tests count them).
pub async fn try_get_url(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> Result<Answer, String> {
    let mut b = http::Request::get(url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = b.body(Empty::new()).map_err(|e| e.to_string())?;
    let res = tokio::time::timeout(ANSWER_WITHIN, client.request(req))
        .await
        .map_err(|_| format!("GET {url}: no answer within {ANSWER_WITHIN:?}"))?
        .map_err(|e| format!("GET {url}: {e:?}"))?;
    read_answer(res, &format!("GET {url}")).await
}

/// GET `path` on `addr` (a new connection) with an optional bearer token.
pub async fn try_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Answer, String> {
    try_get_url(&new(), &format!("http://{addr}{path}"), token).await
}

/// Like [`try_get`], panicking on a transport error.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    try_get(addr, path, token)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Any request to `url` with `headers` and `body`, through a new HTTP/1.1 client; panics on a
/// transport error or no answer within [`ANSWER_WITHIN`].
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http();
    send(client, method, url, headers, body).await
}

/// A GET over HTTP/2 (prior knowledge); each header pair is sent as its own field.
pub async fn get_h2(url: &str, headers: &[(&str, &str)]) -> Answer {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    send(client, "GET", url, headers, Bytes::new()).await
}

async fn send(
    client: Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let mut b = http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let req = b.body(Full::new(body)).expect("request");
    let res = tokio::time::timeout(ANSWER_WITHIN, client.request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no answer within {ANSWER_WITHIN:?}"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    read_answer(res, &format!("{method} {url}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

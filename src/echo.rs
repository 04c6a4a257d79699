//! A small upstream that answers every request with what it received, as JSON. `jwtgate demo`
//! runs it behind the gateway, and the integration tests use it as their real upstream.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// Longest delay a request may ask for with `?delay_ms=`.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Serves the echo upstream until `shutdown` completes.
///
/// The answer is `{"method", "path", "query", "version", "headers": {name: [values]}, "body"}`.
/// `?delay_ms=N` delays the answer (for timeout tests); `?status=N` sets its status;
/// `?set-header=name:value` adds a response header (for tests of what the gateway replaces).
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    crate::server::serve_small(
        listener,
        "echo",
        crate::server::ConnLimits::default,
        None,
        shutdown,
        echo,
    )
    .await;
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query();
    if let Some(ms) = query_param(query, "delay_ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms).min(MAX_DELAY)).await;
    }
    let status = query_param(query, "status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut headers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body = match body.collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": query,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": body,
    });
    let mut res = Response::new(Full::new(Bytes::from(doc.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some((name, value)) = query_param(query, "set-header").and_then(|h| h.split_once(':')) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            res.headers_mut().insert(n, v);
        }
    }
    res
}

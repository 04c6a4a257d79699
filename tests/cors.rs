//! `[route.cors]` (SPEC "CORS and rate limits"): preflights answered by the gateway per the
//! Fetch standard, at the HTTP level and by a real headless Chromium making credentialed
//! cross-origin fetches from a page served on another 127.0.0.1 origin.

mod common;

use common::browser::{serve_page, Browser};
use common::edge::EdgeGateway;
use serde_json::{json, Value};

/// The config: `/api` with CORS for `origin` (credentials), rate-limited to a burst of
/// `burst`; `/open` with CORS for any origin without credentials and a response header;
/// `/plain` without CORS.
fn config(origin: &str, burst: u32) -> String {
    format!(
        r#"[admin]
addr = "127.0.0.1:0"
{issuer}
[[route]]
name = "api"
path_prefix = "/api"
methods = ["GET", "PUT"]
upstream = "{{upstream}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
[route.cors]
allow_origins = ["{origin}"]
allow_methods = ["GET", "PUT"]
allow_headers = ["Authorization", "Content-Type"]
expose_headers = ["RateLimit", "RateLimit-Policy", "Retry-After"]
allow_credentials = true
max_age = "10m"
[route.rate_limit]
key = "sub"
rate = "1/h"
burst = {burst}

[[route]]
name = "open"
path_prefix = "/open"
upstream = "{{upstream}}"
auth = "none"
response_headers = {{ "X-Content-Type-Options" = "nosniff" }}
[route.cors]
allow_origins = ["*"]
allow_headers = ["*"]

[[route]]
name = "plain"
path_prefix = "/plain"
upstream = "{{upstream}}"
auth = "none"
"#,
        issuer = common::default_issuer()
    )
}

async fn gateway(origin: &str, burst: u32) -> (tempfile::TempDir, EdgeGateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let gw = EdgeGateway::start(dir.path(), &config(origin, burst)).await;
    (dir, gw)
}

fn cors_headers(a: &common::Answer) -> Vec<String> {
    a.headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn preflights_are_answered_here_never_forwarded_and_need_no_token() {
    let app = "https://app.example.com";
    let (_dir, gw) = gateway(app, 100).await;
    let ok = gw
        .request(
            "OPTIONS",
            "/api/orders",
            &[
                ("origin", app),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ],
        )
        .await;
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert!(
        ok.body.is_empty(),
        "not the echo upstream's answer: {}",
        ok.body
    );
    assert_eq!(ok.header("access-control-allow-origin"), Some(app));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(ok.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(ok.header("access-control-max-age"), Some("600"));
    assert!(ok.header("vary").is_some_and(|v| v.contains("Origin")));

    // Refused: another origin, a method or header not allowed. 403, no CORS header at all.
    for (origin, method, headers) in [
        ("https://evil.example.com", "PUT", "authorization"),
        ("https://app.example.com.evil.example", "GET", ""),
        ("http://app.example.com", "GET", ""),
        (app, "DELETE", ""),
        (app, "PUT", "x-admin"),
    ] {
        let mut h = vec![
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        if !headers.is_empty() {
            h.push(("access-control-request-headers", headers));
        }
        let no = gw.request("OPTIONS", "/api/orders", &h).await;
        assert_eq!(no.status, 403, "{origin} {method} {headers}: {}", no.body);
        assert!(cors_headers(&no).is_empty(), "{:?}", no.headers);
        assert_eq!(no.json()["error"], "cors_refused");
    }

    // `*` without credentials: any origin, any header but Authorization.
    let open = gw
        .request(
            "OPTIONS",
            "/open",
            &[
                ("origin", "https://anyone.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-custom"),
            ],
        )
        .await;
    assert_eq!(open.status, 204);
    assert_eq!(open.header("access-control-allow-origin"), Some("*"));
    assert!(open.header("access-control-allow-credentials").is_none());
    let auth = gw
        .request(
            "OPTIONS",
            "/open",
            &[
                ("origin", "https://anyone.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
        )
        .await;
    assert_eq!(auth.status, 403, "* never covers Authorization");

    // An OPTIONS that is not a preflight, or a route without CORS: treated like any request.
    let plain = gw
        .request(
            "OPTIONS",
            "/plain",
            &[("origin", app), ("access-control-request-method", "GET")],
        )
        .await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.json()["method"],
        "OPTIONS",
        "forwarded: {}",
        plain.body
    );
    let not_preflight = gw
        .request("OPTIONS", "/api/orders", &[("origin", app)])
        .await;
    assert_eq!(
        not_preflight.status, 404,
        "methods are GET and PUT: {}",
        not_preflight.body
    );
}

#[tokio::test]
async fn a_routes_response_headers_are_set_on_its_preflight_answers_too() {
    let (_dir, gw) = gateway("https://app.example.com", 100).await;
    let preflight = gw
        .request(
            "OPTIONS",
            "/open/x",
            &[
                ("origin", "https://elsewhere.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert_eq!(preflight.status, 204, "{}", preflight.body);
    assert_eq!(preflight.header("x-content-type-options"), Some("nosniff"));
    let refused = gw
        .request(
            "OPTIONS",
            "/open/x",
            &[
                ("origin", "https://elsewhere.example"),
                ("access-control-request-method", "DELETE"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.header("x-content-type-options"), Some("nosniff"));
    let actual = gw
        .request("GET", "/open/x", &[("origin", "https://elsewhere.example")])
        .await;
    assert_eq!(actual.status, 200);
    assert_eq!(actual.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn actual_answers_get_allow_origin_and_lose_the_upstreams_cors_headers() {
    let app = "https://app.example.com";
    let (_dir, gw) = gateway(app, 1).await;
    let token = common::token("ES256", &common::claims());
    let bearer = format!("Bearer {token}");
    // The echo upstream answers with what it is asked to set: a permissive ACAO of its own.
    let ok = gw
        .request(
            "GET",
            "/api/orders?set-header=access-control-allow-origin:*",
            &[("origin", app), ("authorization", &bearer)],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("access-control-allow-origin"), Some(app));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(ok.headers.get_all("vary").iter().any(|v| v == "Origin"));

    // The gateway's own 401 and 429 carry it too, so the page can read them.
    let no_token = gw.request("GET", "/api/orders", &[("origin", app)]).await;
    assert_eq!(no_token.status, 401);
    assert_eq!(no_token.header("access-control-allow-origin"), Some(app));
    let limited = gw
        .request(
            "GET",
            "/api/orders",
            &[("origin", app), ("authorization", &bearer)],
        )
        .await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.header("access-control-allow-origin"), Some(app));
    assert_eq!(
        limited.header("access-control-expose-headers"),
        Some("ratelimit, ratelimit-policy, retry-after")
    );

    // Another origin gets no CORS header, whatever the upstream said.
    let other = gw
        .request(
            "GET",
            "/api/orders?set-header=access-control-allow-origin:*",
            &[
                ("origin", "https://evil.example.com"),
                ("authorization", &bearer),
            ],
        )
        .await;
    assert!(cors_headers(&other).is_empty(), "{:?}", other.headers);
}

const PAGE: &str = "<!doctype html><title>app</title><p>cross-origin caller</p>";

/// Runs a credentialed `fetch` (Authorization makes it need a preflight) from the page.
const FETCH: &str = r#"
const [url, method, token, done] = arguments;
fetch(url, { method, credentials: 'include', headers: { 'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json' }, body: method === 'GET' ? undefined : '{}' })
  .then(async r => done({ status: r.status, body: await r.text(), retryAfter: r.headers.get('retry-after'), ratelimit: r.headers.get('ratelimit') }))
  .catch(e => done({ error: String(e) }));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_makes_credentialed_cross_origin_fetches_through_the_gateway() {
    let page = serve_page(PAGE).await;
    let origin = format!("http://{page}");
    let (_dir, gw) = gateway(&origin, 2).await;
    let browser = Browser::start(None);
    browser.goto(&format!("{origin}/"));
    let token = common::token("ES256", &common::claims());

    // PUT with Authorization: a preflight first, answered by the gateway, then the request.
    let put = browser.script_async(FETCH, json!([gw.url("/api/orders/7"), "PUT", token]));
    assert_eq!(put["status"], 200, "{put}");
    let echoed: Value = serde_json::from_str(put["body"].as_str().expect("body")).expect("json");
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["headers"]["x-auth-sub"], json!(["alice"]));
    assert_eq!(echoed["headers"]["origin"], json!([origin]));

    // The gateway's own 429 is readable by the page, with the exposed rate-limit headers.
    let second = browser.script_async(FETCH, json!([gw.url("/api/orders/7"), "GET", token]));
    assert_eq!(second["status"], 200, "{second}");
    let limited = browser.script_async(FETCH, json!([gw.url("/api/orders/7"), "GET", token]));
    assert_eq!(limited["status"], 429, "{limited}");
    assert!(limited["retryAfter"].as_str().is_some(), "{limited}");
    assert!(
        limited["ratelimit"]
            .as_str()
            .is_some_and(|r| r.contains("r=0")),
        "{limited}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(limited["body"].as_str().unwrap_or("{}")).expect("json")
            ["error"],
        "rate_limited"
    );

    // A page on an origin the route does not list: the browser refuses to hand over anything.
    let (_dir2, other) = gateway("https://app.example.com", 100).await;
    let refused = browser.script_async(FETCH, json!([other.url("/api/orders/7"), "PUT", token]));
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("TypeError")),
        "the browser blocks the fetch: {refused}"
    );
    let metrics = other.metrics().await;
    assert_eq!(
        common::metrics::metric_or_zero(
            &metrics,
            "jwtgate_requests_total",
            &[("route", "api"), ("code", "403")]
        ),
        1.0,
        "the refused preflight was answered 403 by the gateway:\n{metrics}"
    );
}

//! Route choice (host, longest segment-aware prefix, methods), path normalisation as the
//! upstream sees it, auth modes and claim requirements, all end to end through the real
//! gateway and the echo upstream.
//!
//! Each route forwards to the echo upstream under a distinct base path (`{upstream}/r-NAME`),
//! so the path the echo reports names the route that answered.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// One `[[route]]` block forwarding to `{upstream}/r-NAME`; `extra` is more TOML lines.
fn route(name: &str, prefix: &str, auth: &str, extra: &str) -> String {
    format!(
        r#"
[[route]]
name = "{name}"
path_prefix = "{prefix}"
upstream = "{{upstream}}/r-{name}"
auth = "{auth}"
{extra}
"#
    )
}

/// The claim headers every auth-mode route forwards.
const CLAIMS: &str = r#"[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"#;

fn config(routes: &[String]) -> String {
    format!("{}{}", default_issuer(), routes.concat())
}

/// The path the echo upstream received; panics with the answer when it did not answer.
fn upstream_path(a: &Answer) -> String {
    assert_eq!(a.status, 200, "expected the upstream's answer: {}", a.body);
    let v = a.json();
    assert!(
        v.get("headers").is_some(),
        "not the echo upstream's answer: {}",
        a.body
    );
    v["path"]
        .as_str()
        .unwrap_or_else(|| panic!("echo answer without path: {}", a.body))
        .to_owned()
}

/// Asserts a gateway answer (never the upstream's) with `status` and body `error`; the token,
/// when given, must not appear in the body or in any header.
fn assert_gateway(a: &Answer, status: u16, error: &str, token: Option<&str>) {
    assert_eq!(a.status, status, "status; body: {}", a.body);
    let v = a.json();
    assert!(
        v.get("headers").is_none() && v.get("path").is_none(),
        "the upstream answered instead of the gateway: {}",
        a.body
    );
    assert_eq!(v["error"], error, "body: {}", a.body);
    assert!(
        v["error_description"].is_string(),
        "error_description missing: {}",
        a.body
    );
    if let Some(t) = token {
        assert!(!a.body.contains(t), "the token is echoed in the body");
        for (name, value) in &a.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(t),
                "the token is echoed in header {name}"
            );
        }
    }
}

fn www_auth(a: &Answer) -> String {
    a.header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate; body: {}", a.body))
        .to_owned()
}

/// A valid ES256 token with the default claims plus `extra` (merged at the top level).
fn token_with(extra: Value) -> String {
    let mut c = claims();
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    token("ES256", &c)
}

/// A raw HTTP/1.1 request with `Connection: close`, read whole; returns (status, raw text).
async fn raw_request(h: &Harness, target: &str, extra_headers: &str) -> (u16, String) {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    let out = h.raw(req.as_bytes(), Duration::from_secs(4)).await;
    let status = out
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no HTTP/1.1 status line in answer to {target:?}: {out:?}"));
    (status, out)
}

fn raw_body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

// ---------------------------------------------------------------------------------------------
// Host
// ---------------------------------------------------------------------------------------------

/// Routes for the host tests, all `auth = "none"` on `/` unless noted.
fn host_config() -> String {
    config(&[
        route("any", "/", "none", ""),
        route("exact", "/", "none", r#"host = "api.example.com""#),
        route("wild", "/", "none", r#"host = "*.example.com""#),
        route("wildapi", "/", "none", r#"host = "*.api.example.com""#),
        route("orders_exact", "/orders", "none", r#"host = "shop.test""#),
        route("orders_any", "/orders", "none", ""),
    ])
}

async fn route_for_host(h: &Harness, host: &str, path: &str) -> String {
    let a = h.get(path, &[("host", host)]).await;
    let p = upstream_path(&a);
    // "/r-NAME/..." -> "NAME"
    p.trim_start_matches("/r-")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn exact_host_route_wins_for_its_host_and_other_hosts_get_the_hostless_one() {
    let h = Harness::start(&host_config()).await;
    assert_eq!(
        route_for_host(&h, "shop.test", "/orders/1").await,
        "orders_exact"
    );
    assert_eq!(
        route_for_host(&h, "shop.test", "/orders").await,
        "orders_exact"
    );
    assert_eq!(
        route_for_host(&h, "other.test", "/orders/1").await,
        "orders_any"
    );
    assert_eq!(
        route_for_host(&h, "127.0.0.1", "/orders").await,
        "orders_any"
    );
    // shop.test has no route for /x: falls to the host-less group.
    assert_eq!(route_for_host(&h, "shop.test", "/x").await, "any");
    // The upstream sees the whole normalised path after the base path.
    let a = h.get("/orders/1?q=1", &[("host", "shop.test")]).await;
    assert_eq!(upstream_path(&a), "/r-orders_exact/orders/1");
    assert_eq!(a.json()["query"], "q=1");
}

#[tokio::test]
async fn host_is_matched_before_the_longest_prefix() {
    // The exact-host route has the shorter prefix; host comes first anyway.
    let h = Harness::start(&config(&[
        route("host_root", "/", "none", r#"host = "a.test""#),
        route("deep_any", "/api/orders", "none", ""),
    ]))
    .await;
    assert_eq!(
        route_for_host(&h, "a.test", "/api/orders/1").await,
        "host_root"
    );
    assert_eq!(
        route_for_host(&h, "b.test", "/api/orders/1").await,
        "deep_any"
    );
}

#[tokio::test]
async fn wildcard_host_matches_one_or_more_labels_but_not_the_bare_domain() {
    let h = Harness::start(&host_config()).await;
    assert_eq!(route_for_host(&h, "a.example.com", "/").await, "wild");
    assert_eq!(route_for_host(&h, "a.b.example.com", "/x").await, "wild");
    assert_eq!(route_for_host(&h, "example.com", "/").await, "any");
    assert_eq!(route_for_host(&h, "notexample.com", "/").await, "any");
    assert_eq!(
        route_for_host(&h, "example.com.evil.test", "/").await,
        "any"
    );
}

#[tokio::test]
async fn wildcard_host_without_a_hostless_fallback_is_404_for_the_bare_domain() {
    let h = Harness::start(&config(&[route(
        "wild",
        "/",
        "none",
        r#"host = "*.example.com""#,
    )]))
    .await;
    assert_eq!(route_for_host(&h, "x.example.com", "/").await, "wild");
    let a = h.get("/", &[("host", "example.com")]).await;
    assert_gateway(&a, 404, "not_found", None);
}

#[tokio::test]
async fn host_header_is_case_insensitive_and_its_port_is_ignored() {
    let h = Harness::start(&host_config()).await;
    for host in [
        "API.Example.COM",
        "api.example.com:8443",
        "Api.EXAMPLE.com:80",
        "api.example.com.",
    ] {
        assert_eq!(route_for_host(&h, host, "/").await, "exact", "host {host}");
    }
    assert_eq!(
        route_for_host(&h, "A.B.Example.Com:1234", "/").await,
        "wild"
    );
    assert_eq!(
        route_for_host(&h, "SHOP.TEST:9", "/orders").await,
        "orders_exact"
    );
}

#[tokio::test]
async fn host_pattern_in_the_config_is_case_insensitive() {
    let h = Harness::start(&config(&[
        route("upper", "/", "none", r#"host = "Api.Example.COM""#),
        route("wild", "/", "none", r#"host = "*.Corp.Test""#),
    ]))
    .await;
    assert_eq!(route_for_host(&h, "api.example.com", "/").await, "upper");
    assert_eq!(route_for_host(&h, "x.corp.test", "/").await, "wild");
}

#[tokio::test]
async fn malformed_or_repeated_host_is_400_not_a_fallthrough() {
    let h = Harness::start(&host_config()).await;
    for host in [
        "api.example.com:abc",
        "api.example.com/x",
        "api example.com",
    ] {
        let a = h.get("/", &[("host", host)]).await;
        assert_gateway(&a, 400, "invalid_request", None);
    }
    let req =
        "GET / HTTP/1.1\r\nHost: api.example.com\r\nHost: other.test\r\nConnection: close\r\n\r\n";
    let out = h.raw(req.as_bytes(), Duration::from_secs(4)).await;
    assert!(out.starts_with("HTTP/1.1 400 "), "two Host headers: {out}");
    assert!(
        !out.contains("/r-"),
        "two Host headers reached the upstream: {out}"
    );
}

#[tokio::test]
async fn exact_host_beats_a_matching_wildcard() {
    let h = Harness::start(&host_config()).await;
    assert_eq!(route_for_host(&h, "api.example.com", "/").await, "exact");
    assert_eq!(route_for_host(&h, "www.example.com", "/").await, "wild");
}

#[tokio::test]
async fn longer_wildcard_beats_a_shorter_one() {
    let h = Harness::start(&host_config()).await;
    assert_eq!(
        route_for_host(&h, "v1.api.example.com", "/").await,
        "wildapi"
    );
    assert_eq!(
        route_for_host(&h, "a.v1.api.example.com", "/").await,
        "wildapi"
    );
    // api.example.com itself is the exact route, not *.api.example.com.
    assert_eq!(route_for_host(&h, "api.example.com", "/").await, "exact");
    assert_eq!(route_for_host(&h, "xapi.example.com", "/").await, "wild");
}

#[tokio::test]
async fn host_route_with_no_matching_method_falls_through_to_the_hostless_route() {
    let h = Harness::start(&config(&[
        route(
            "host_get",
            "/",
            "none",
            "host = \"a.test\"\nmethods = [\"GET\"]",
        ),
        route("any", "/", "none", ""),
    ]))
    .await;
    assert_eq!(route_for_host(&h, "a.test", "/x").await, "host_get");
    let a = h
        .request("POST", "/x", &[("host", "a.test")], "b".into())
        .await;
    assert_eq!(upstream_path(&a), "/r-any/x");
}

#[tokio::test]
async fn absolute_form_authority_chooses_the_host_route() {
    // RFC 9112 §3.2.2: the absolute-form target's authority wins over Host.
    let h = Harness::start(&host_config()).await;
    let (status, out) = raw_request(&h, "http://api.example.com/z", "").await;
    assert_eq!(status, 200, "{out}");
    assert!(
        raw_body(&out).contains("\"path\":\"/r-exact/z\""),
        "routed by the authority api.example.com: {out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Longest segment-aware path_prefix
// ---------------------------------------------------------------------------------------------

fn prefix_config() -> String {
    // /api first in the file: the longest prefix wins, not the first written.
    config(&[
        route("api", "/api", "none", ""),
        route("orders", "/api/orders", "none", ""),
    ])
}

#[tokio::test]
async fn longest_segment_aware_prefix_wins() {
    let h = Harness::start(&prefix_config()).await;
    for (path, want) in [
        ("/api/orders", "/r-orders/api/orders"),
        ("/api/orders/", "/r-orders/api/orders/"),
        ("/api/orders/1", "/r-orders/api/orders/1"),
        ("/api/orders/1/items", "/r-orders/api/orders/1/items"),
        ("/api/ordersX", "/r-api/api/ordersX"),
        ("/api/orders-old", "/r-api/api/orders-old"),
        ("/api/order", "/r-api/api/order"),
        ("/api", "/r-api/api"),
        ("/api/", "/r-api/api/"),
        ("/api/x", "/r-api/api/x"),
    ] {
        let a = h.get(path, &[]).await;
        assert_eq!(upstream_path(&a), want, "request {path}");
    }
}

#[tokio::test]
async fn prefix_is_not_a_string_prefix_and_is_case_sensitive() {
    let h = Harness::start(&prefix_config()).await;
    for path in ["/apix", "/apix/orders", "/ap", "/", "/x/api"] {
        let a = h.get(path, &[]).await;
        assert_gateway(&a, 404, "not_found", None);
    }
    // Case-sensitive as forwarded, but /api/orders to a case-insensitive upstream: the two
    // readings disagree, so it is refused rather than answered 404 or forwarded.
    let a = h.get("/API/orders", &[]).await;
    assert_gateway(&a, 400, "invalid_request", None);
}

// ---------------------------------------------------------------------------------------------
// methods
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn method_restricted_route_lets_other_methods_fall_through() {
    let h = Harness::start(&config(&[
        route("reads", "/items", "none", r#"methods = ["GET"]"#),
        route("rest", "/", "none", ""),
    ]))
    .await;
    let a = h.get("/items/1", &[]).await;
    assert_eq!(upstream_path(&a), "/r-reads/items/1");
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let a = h.request(m, "/items/1", &[], "body".into()).await;
        assert_eq!(upstream_path(&a), "/r-rest/items/1", "{m}");
        assert_eq!(a.json()["method"], m);
    }
}

#[tokio::test]
async fn method_restricted_route_without_fallback_is_404() {
    let h = Harness::start(&config(&[route(
        "reads",
        "/items",
        "none",
        r#"methods = ["get", "HEAD"]"#,
    )]))
    .await;
    let a = h.get("/items", &[]).await;
    assert_eq!(upstream_path(&a), "/r-reads/items");
    let a = h.request("POST", "/items", &[], "x".into()).await;
    assert_gateway(&a, 404, "not_found", None);
    let a = h.request("DELETE", "/items/1", &[], "".into()).await;
    assert_gateway(&a, 404, "not_found", None);
}

#[tokio::test]
async fn same_prefix_split_by_method_goes_to_the_right_route() {
    let h = Harness::start(&config(&[
        route("reader", "/orders", "none", r#"methods = ["GET"]"#),
        route(
            "writer",
            "/orders",
            "required",
            &format!("methods = [\"POST\", \"PUT\"]\n{CLAIMS}"),
        ),
    ]))
    .await;
    let a = h.get("/orders/1", &[]).await;
    assert_eq!(upstream_path(&a), "/r-reader/orders/1");
    let a = h.request("POST", "/orders", &[], "x".into()).await;
    assert_gateway(&a, 401, "missing_token", None);
    let t = token("ES256", &claims());
    let auth = format!("Bearer {t}");
    let a = h
        .request("PUT", "/orders/1", &[("authorization", &auth)], "x".into())
        .await;
    assert_eq!(upstream_path(&a), "/r-writer/orders/1");
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
    let a = h.request("DELETE", "/orders/1", &[], "".into()).await;
    assert_gateway(&a, 404, "not_found", None);
}

// ---------------------------------------------------------------------------------------------
// No route
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_route_is_404_not_found_json() {
    let h = Harness::start(&config(&[route("only", "/only", "required", CLAIMS)])).await;
    let t = token("ES256", &claims());
    for (path, tok) in [
        ("/", None),
        ("/elsewhere", None),
        ("/onlyx", Some(t.as_str())),
    ] {
        let a = match tok {
            Some(t) => h.get_with_token(path, t).await,
            None => h.get(path, &[]).await,
        };
        assert_gateway(&a, 404, "not_found", tok);
        assert_eq!(a.header("content-type"), Some("application/json"), "{path}");
        assert!(
            a.header("www-authenticate").is_none(),
            "a 404 is not an auth challenge"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Path normalisation, end to end
// ---------------------------------------------------------------------------------------------

/// `/admin` required, `/public` none, `/` none (catch-all).
fn norm_config() -> String {
    config(&[
        route("admin", "/admin", "required", CLAIMS),
        route("public", "/public", "none", ""),
        route("root", "/", "none", ""),
    ])
}

#[tokio::test]
async fn upstream_receives_the_normalised_path() {
    let h = Harness::start(&norm_config()).await;
    for (path, want) in [
        ("/a/./b/../c", "/r-root/a/c"),
        ("/%61pi/orders", "/r-root/api/orders"),
        ("//api//orders", "/r-root/api/orders"),
        ("/a/b/../../../c", "/r-root/c"),
        ("/public/./x", "/r-public/public/x"),
        ("/public/%7Euser", "/r-public/public/~user"),
        ("/public/%70ub", "/r-public/public/pub"),
        ("/%70ublic/x", "/r-public/public/x"),
        ("/x/../public/y", "/r-public/public/y"),
    ] {
        let a = h.get(path, &[]).await;
        assert_eq!(upstream_path(&a), want, "request {path}");
    }
}

#[tokio::test]
async fn query_string_is_forwarded_unchanged() {
    let h = Harness::start(&norm_config()).await;
    for (path, want_path, want_query) in [
        ("/a/./b?x=1&y=2", "/r-root/a/b", "x=1&y=2"),
        (
            "/public/p?next=/../admin&e=%2F%2e%2e&sp=a+b",
            "/r-public/public/p",
            "next=/../admin&e=%2F%2e%2e&sp=a+b",
        ),
        ("/public?flag", "/r-public/public", "flag"),
        ("/public/%61?%61=%62", "/r-public/public/a", "%61=%62"),
    ] {
        let a = h.get(path, &[]).await;
        assert_eq!(upstream_path(&a), want_path, "request {path}");
        assert_eq!(a.json()["query"], want_query, "request {path}");
    }
    let a = h.get("/public/x", &[]).await;
    assert_eq!(a.json()["query"], Value::Null, "no query invented");
}

#[tokio::test]
async fn dot_segments_cannot_escape_into_a_protected_route() {
    let h = Harness::start(&norm_config()).await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/x/../../admin/secret",
        "/%61dmin",
        "//admin",
        "/./admin",
        "/../admin",
        "/admin/.",
    ] {
        let a = h.get(path, &[]).await;
        assert_gateway(&a, 401, "missing_token", None);
        assert_eq!(www_auth(&a), "Bearer realm=\"jwtgate\"", "{path}");
    }
    // With a token the upstream sees the resolved path on the admin route.
    let t = token("ES256", &claims());
    let a = h.get_with_token("/public/%2e%2e/admin/x", &t).await;
    assert_eq!(upstream_path(&a), "/r-admin/admin/x");
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
}

#[tokio::test]
async fn dot_segment_glued_to_an_encoded_slash_is_400() {
    let h = Harness::start(&norm_config()).await;
    for path in [
        "/public/..%2Fadmin",
        "/public/..%2fadmin",
        "/public/%2e%2e%2fadmin",
        "/public/..%5Cadmin",
        "/public/..%5cadmin",
    ] {
        let a = h.get(path, &[]).await;
        assert_gateway(&a, 400, "invalid_request", None);
    }
}

#[tokio::test]
async fn dot_dot_with_a_path_parameter_is_400() {
    let h = Harness::start(&norm_config()).await;
    for path in [
        "/public/..;/admin",
        "/public/..;x=1/admin",
        "/public/%2e%2e;/admin",
    ] {
        let a = h.get(path, &[]).await;
        assert_gateway(&a, 400, "invalid_request", None);
    }
}

#[tokio::test]
async fn backslash_dot_dot_never_reaches_the_upstream() {
    let h = Harness::start(&norm_config()).await;
    for target in ["/public/..\\admin", "/public\\..\\admin", "/public/x\\.."] {
        let (status, out) = raw_request(&h, target, "").await;
        assert_eq!(status, 400, "{target:?}: {out}");
        assert!(
            !out.contains("\"headers\"") && !out.contains("/r-"),
            "{target:?} reached the upstream: {out}"
        );
    }
}

#[tokio::test]
async fn encoded_slash_stays_encoded_and_on_its_route() {
    let h = Harness::start(&norm_config()).await;
    let a = h.get("/public/a%2Fb", &[]).await;
    assert_eq!(upstream_path(&a), "/r-public/public/a%2Fb");
    // `%2F` never turns into a separator that a later `..` could climb.
    let a = h.get("/public/a%2F..%2F..%2Fadmin", &[]).await;
    assert_gateway(&a, 400, "invalid_request", None);
    let a = h.get("/public%2F..%2Fadmin", &[]).await;
    assert_gateway(&a, 400, "invalid_request", None);
}

#[tokio::test]
async fn encoded_slash_or_backslash_after_a_protected_prefix_stays_protected() {
    let h = Harness::start(&norm_config()).await;
    // Go's net/http (r.URL.Path), Tomcat with ALLOW_ENCODED_SLASH, IIS and others read these
    // as /admin/secret, so forwarding them on the public catch-all without a token is an
    // auth bypass. 401 (treated as under /admin) or 400 (refused) are both safe.
    for path in [
        "/admin%2Fsecret",
        "/admin%2fsecret",
        "/admin%5Csecret",
        "/admin%5csecret",
    ] {
        let a = h.get(path, &[]).await;
        assert!(
            matches!(a.status, 400 | 401),
            "{path} reached the upstream without a token: {} {}",
            a.status,
            a.body
        );
    }
    let (status, out) = raw_request(&h, "/admin\\secret", "").await;
    assert!(
        matches!(status, 400 | 401),
        "/admin\\secret reached the upstream without a token: {out}"
    );
}

#[tokio::test]
async fn double_encoding_is_never_decoded_twice() {
    let h = Harness::start(&norm_config()).await;
    let a = h.get("/public/%252e%252e/admin", &[]).await;
    assert_eq!(upstream_path(&a), "/r-public/public/%252e%252e/admin");
    let a = h.get("/public/%252e%252e%252fadmin", &[]).await;
    assert_eq!(upstream_path(&a), "/r-public/public/%252e%252e%252fadmin");
    let a = h.get("/%2561dmin", &[]).await;
    assert_eq!(upstream_path(&a), "/r-root/%2561dmin");
}

#[tokio::test]
async fn semicolon_parameters_count_as_under_the_prefix() {
    let h = Harness::start(&norm_config()).await;
    for path in [
        "/admin;x=1",
        "/admin;jsessionid=abc/secret",
        "/public/../admin;x",
    ] {
        let a = h.get(path, &[]).await;
        assert_gateway(&a, 401, "missing_token", None);
    }
    let t = token("ES256", &claims());
    let a = h.get_with_token("/admin;x=1", &t).await;
    assert_eq!(upstream_path(&a), "/r-admin/admin;x=1");
    // `/adminx;y` is not under /admin.
    let a = h.get("/adminx;y", &[]).await;
    assert_eq!(upstream_path(&a), "/r-root/adminx;y");
}

#[tokio::test]
async fn absolute_form_target_is_routed_by_its_path() {
    let h = Harness::start(&norm_config()).await;
    for target in [
        "http://127.0.0.1/admin",
        "http://127.0.0.1/admin/x",
        "http://127.0.0.1/public/../admin",
        "http://127.0.0.1/public/%2e%2e/admin",
    ] {
        let (status, out) = raw_request(&h, target, "").await;
        assert_eq!(status, 401, "{target}: {out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("www-authenticate: bearer realm=\"jwtgate\"\r\n"),
            "{target}: {out}"
        );
        assert!(raw_body(&out).contains("\"missing_token\""), "{out}");
    }
    let (status, out) = raw_request(&h, "http://127.0.0.1/public/x?q=1", "").await;
    assert_eq!(status, 200, "{out}");
    let body: Value = serde_json::from_str(raw_body(&out))
        .unwrap_or_else(|e| panic!("echo body not JSON ({e}): {out}"));
    assert_eq!(body["path"], "/r-public/public/x");
    assert_eq!(body["query"], "q=1");
}

#[tokio::test]
async fn upstream_base_path_is_prepended_to_the_forwarded_path() {
    let h = Harness::start(&config(&[
        r#"
[[route]]
name = "based"
path_prefix = "/api"
upstream = "{upstream}/base"
auth = "none"
"#
        .to_owned(),
        r#"
[[route]]
name = "slash"
path_prefix = "/s"
upstream = "{upstream}/base/"
auth = "none"
"#
        .to_owned(),
        r#"
[[route]]
name = "x"
path_prefix = "/x"
upstream = "{upstream}/base"
auth = "none"
"#
        .to_owned(),
    ]))
    .await;
    for (path, want) in [
        ("/x", "/base/x"),
        ("/x/", "/base/x/"),
        ("/api/orders/1", "/base/api/orders/1"),
        ("/api/./a/../b", "/base/api/b"),
        ("/s/y", "/base/s/y"),
    ] {
        let a = h.get(path, &[]).await;
        assert_eq!(upstream_path(&a), want, "request {path}");
    }
    let a = h.get("/x?k=v", &[]).await;
    assert_eq!(a.json()["query"], "k=v");
}

// ---------------------------------------------------------------------------------------------
// Auth modes
// ---------------------------------------------------------------------------------------------

fn modes_config() -> String {
    config(&[
        route("req", "/req", "required", CLAIMS),
        route("opt", "/opt", "optional", CLAIMS),
        route("none", "/none", "none", CLAIMS),
    ])
}

/// A token signed by an attacker's key with a trusted kid.
fn forged_token() -> String {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": "rsa" }).to_string();
    sign_raw_other("RS256", &header, &claims().to_string())
}

#[tokio::test]
async fn required_without_token_is_401_with_a_bare_bearer_challenge() {
    let h = Harness::start(&modes_config()).await;
    let a = h.get("/req", &[]).await;
    assert_gateway(&a, 401, "missing_token", None);
    assert_eq!(www_auth(&a), "Bearer realm=\"jwtgate\"");
    // Another scheme is no bearer token: the same bare challenge.
    let a = h
        .get("/req/x", &[("authorization", "Basic YWxpY2U6cHc=")])
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(www_auth(&a), "Bearer realm=\"jwtgate\"");
}

#[tokio::test]
async fn required_with_valid_token_forwards_claims() {
    let h = Harness::start(&modes_config()).await;
    let t = token_with(json!({ "email": "alice@example.com" }));
    let a = h.get_with_token("/req/x", &t).await;
    assert_eq!(upstream_path(&a), "/r-req/req/x");
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
    assert_eq!(a.upstream_header("x-auth-email"), ["alice@example.com"]);
    assert!(a.upstream_header("authorization").is_empty());
}

#[tokio::test]
async fn required_with_invalid_token_is_401_invalid_token() {
    let h = Harness::start(&modes_config()).await;
    for t in [forged_token(), "not-a-jwt".to_owned()] {
        let a = h.get_with_token("/req", &t).await;
        assert_gateway(&a, 401, "invalid_token", Some(&t));
        let w = www_auth(&a);
        assert!(
            w.starts_with(
                "Bearer realm=\"jwtgate\", error=\"invalid_token\", error_description=\""
            ),
            "{w}"
        );
    }
}

#[tokio::test]
async fn optional_without_token_passes_with_no_claim_headers() {
    let h = Harness::start(&modes_config()).await;
    let a = h
        .get(
            "/opt/x",
            &[("x-auth-sub", "mallory"), ("X_Auth_Email", "m@evil.test")],
        )
        .await;
    assert_eq!(upstream_path(&a), "/r-opt/opt/x");
    let names = a.upstream_header_names();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("x-auth") || n.starts_with("x_auth")),
        "no claim header may reach the upstream: {names:?}"
    );
}

#[tokio::test]
async fn optional_with_valid_token_forwards_claims() {
    let h = Harness::start(&modes_config()).await;
    let t = token_with(json!({ "email": "alice@example.com" }));
    let auth = format!("Bearer {t}");
    let a = h
        .get(
            "/opt",
            &[("authorization", &auth), ("x-auth-sub", "mallory")],
        )
        .await;
    assert_eq!(upstream_path(&a), "/r-opt/opt");
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
    assert_eq!(a.upstream_header("x-auth-email"), ["alice@example.com"]);
    assert!(a.upstream_header("authorization").is_empty());
}

#[tokio::test]
async fn optional_with_invalid_token_is_401() {
    let h = Harness::start(&modes_config()).await;
    let expired = token_with(json!({ "exp": now() - 3600, "iat": now() - 7200 }));
    for t in [forged_token(), expired, "a.b.c".to_owned()] {
        let a = h.get_with_token("/opt", &t).await;
        assert_gateway(&a, 401, "invalid_token", Some(&t));
        assert!(
            www_auth(&a).contains("error=\"invalid_token\""),
            "{}",
            www_auth(&a)
        );
    }
}

#[tokio::test]
async fn none_passes_with_or_without_tokens_and_never_sets_claim_headers() {
    let h = Harness::start(&modes_config()).await;
    let valid = token_with(json!({ "email": "alice@example.com" }));
    let cases: Vec<Option<String>> = vec![
        None,
        Some(valid),
        Some(forged_token()),
        Some("garbage".to_owned()),
    ];
    for t in cases {
        let auth = t.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("x-auth-sub", "mallory"), ("x-auth-email", "m@evil.test")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let a = h.get("/none/x", &headers).await;
        assert_eq!(upstream_path(&a), "/r-none/none/x", "token {t:?}");
        let names = a.upstream_header_names();
        assert!(
            !names.iter().any(|n| n.starts_with("x-auth")),
            "token {t:?}: claim headers reached the upstream: {names:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Claim requirements
// ---------------------------------------------------------------------------------------------

/// Asserts a 403 insufficient_scope answer.
fn assert_forbidden(a: &Answer, token: &str, what: &str) {
    assert_gateway(a, 403, "insufficient_scope", Some(token));
    let w = www_auth(a);
    assert!(
        w.starts_with("Bearer realm=\"jwtgate\"") && w.contains("error=\"insufficient_scope\""),
        "{what}: {w}"
    );
}

/// One route `/r` requiring `require` (TOML inline-table text).
async fn require_harness(require: &str) -> Harness {
    Harness::start(&config(&[route(
        "r",
        "/r",
        "required",
        &format!("require = {require}\n{CLAIMS}"),
    )]))
    .await
}

async fn check_require(h: &Harness, extra: Value, pass: bool) {
    let t = token_with(extra.clone());
    let a = h.get_with_token("/r", &t).await;
    if pass {
        assert_eq!(a.status, 200, "claims {extra} should pass: {}", a.body);
        assert_eq!(upstream_path(&a), "/r-r/r");
        assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
    } else {
        assert_forbidden(&a, &t, &extra.to_string());
    }
}

#[tokio::test]
async fn scope_requirement_matches_a_whole_space_separated_entry() {
    let h = require_harness(r#"{ scope = "orders:read" }"#).await;
    check_require(&h, json!({ "scope": "orders:read" }), true).await;
    check_require(&h, json!({ "scope": "a orders:read b" }), true).await;
    check_require(&h, json!({ "scope": "orders:write" }), false).await;
    check_require(&h, json!({ "scope": "orders:readx" }), false).await;
    check_require(&h, json!({ "scope": "xorders:read" }), false).await;
    check_require(&h, json!({ "scope": "orders:read:all" }), false).await;
    check_require(&h, json!({ "scope": "" }), false).await;
    check_require(&h, json!({}), false).await;
    // Another claim holding the value does not satisfy `scope`.
    check_require(&h, json!({ "scp": "orders:read" }), false).await;
}

#[tokio::test]
async fn insufficient_scope_answer_is_403_with_the_rfc6750_challenge() {
    let h = require_harness(r#"{ scope = "orders:read" }"#).await;
    let t = token_with(json!({ "scope": "orders:write" }));
    let a = h.get_with_token("/r", &t).await;
    assert_forbidden(&a, &t, "orders:write");
    assert_eq!(a.json()["error"], "insufficient_scope");
}

#[tokio::test]
async fn multi_value_scope_requirement_needs_every_value() {
    let h = require_harness(r#"{ scope = "a b" }"#).await;
    check_require(&h, json!({ "scope": "a b" }), true).await;
    check_require(&h, json!({ "scope": "b x a" }), true).await;
    check_require(&h, json!({ "scope": "a" }), false).await;
    check_require(&h, json!({ "scope": "b" }), false).await;
    check_require(&h, json!({ "scope": "ab" }), false).await;
}

#[tokio::test]
async fn array_claim_requirement_is_membership() {
    let h = require_harness(r#"{ roles = ["admin"] }"#).await;
    check_require(&h, json!({ "roles": ["admin"] }), true).await;
    check_require(&h, json!({ "roles": ["user", "admin"] }), true).await;
    check_require(&h, json!({ "roles": ["user"] }), false).await;
    check_require(&h, json!({ "roles": ["administrator"] }), false).await;
    check_require(&h, json!({ "roles": [] }), false).await;
    check_require(&h, json!({ "roles": "user admin" }), false).await;
    check_require(&h, json!({}), false).await;
}

#[tokio::test]
async fn array_requirement_with_several_values_needs_all() {
    let h = require_harness(r#"{ roles = ["admin", "ops"] }"#).await;
    check_require(&h, json!({ "roles": ["ops", "x", "admin"] }), true).await;
    check_require(&h, json!({ "roles": ["admin"] }), false).await;
}

#[tokio::test]
async fn exact_value_requirement() {
    let h = require_harness(r#"{ tenant = "acme" }"#).await;
    check_require(&h, json!({ "tenant": "acme" }), true).await;
    check_require(&h, json!({ "tenant": "acme2" }), false).await;
    check_require(&h, json!({ "tenant": "ACME" }), false).await;
    check_require(&h, json!({ "tenant": "acm" }), false).await;
    check_require(&h, json!({ "tenant": "other acme" }), false).await;
    check_require(&h, json!({ "tenant": null }), false).await;
    check_require(&h, json!({}), false).await;
}

#[tokio::test]
async fn exact_value_requirement_with_a_space() {
    let h = require_harness(r#"{ org = "Acme Corp" }"#).await;
    check_require(&h, json!({ "org": "Acme Corp" }), true).await;
    check_require(&h, json!({ "org": "Acme" }), false).await;
}

#[tokio::test]
async fn json_pointer_requirement() {
    let h = require_harness(r#"{ "/realm_access/roles" = "admin" }"#).await;
    check_require(
        &h,
        json!({ "realm_access": { "roles": ["user", "admin"] } }),
        true,
    )
    .await;
    check_require(&h, json!({ "realm_access": { "roles": ["user"] } }), false).await;
    check_require(&h, json!({ "realm_access": {} }), false).await;
    check_require(&h, json!({ "realm_access": "admin" }), false).await;
    // A top-level claim literally named like the pointer does not count.
    check_require(&h, json!({ "roles": ["admin"] }), false).await;
    check_require(&h, json!({}), false).await;
}

#[tokio::test]
async fn bool_requirement() {
    let h = require_harness("{ email_verified = true }").await;
    check_require(&h, json!({ "email_verified": true }), true).await;
    check_require(&h, json!({ "email_verified": false }), false).await;
    check_require(&h, json!({}), false).await;
}

#[tokio::test]
async fn number_requirement() {
    let h = require_harness("{ level = 3 }").await;
    check_require(&h, json!({ "level": 3 }), true).await;
    check_require(&h, json!({ "level": 4 }), false).await;
    check_require(&h, json!({ "level": 30 }), false).await;
    check_require(&h, json!({}), false).await;
}

#[tokio::test]
async fn several_requirements_must_all_hold() {
    let h = require_harness(r#"{ scope = "orders:read", tenant = "acme" }"#).await;
    check_require(
        &h,
        json!({ "scope": "orders:read", "tenant": "acme" }),
        true,
    )
    .await;
    check_require(&h, json!({ "scope": "orders:read", "tenant": "x" }), false).await;
    check_require(&h, json!({ "scope": "x", "tenant": "acme" }), false).await;
}

#[tokio::test]
async fn requirement_on_an_optional_route_applies_when_a_token_is_sent() {
    let h = Harness::start(&config(&[route(
        "o",
        "/o",
        "optional",
        &format!("require = {{ scope = \"orders:read\" }}\n{CLAIMS}"),
    )]))
    .await;
    let a = h.get("/o", &[]).await;
    assert_eq!(upstream_path(&a), "/r-o/o");
    assert!(a.upstream_header("x-auth-sub").is_empty());
    let t = token_with(json!({ "scope": "orders:write" }));
    let a = h.get_with_token("/o", &t).await;
    assert_forbidden(&a, &t, "optional route, wrong scope");
    let t = token_with(json!({ "scope": "orders:read" }));
    let a = h.get_with_token("/o", &t).await;
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
}

#[tokio::test]
async fn invalid_token_is_401_before_requirements_are_considered() {
    let h = require_harness(r#"{ scope = "orders:read" }"#).await;
    let t = {
        let mut c = claims();
        c["scope"] = "orders:read".into();
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": "ec256" }).to_string();
        sign_raw_other("ES256", &header, &c.to_string())
    };
    let a = h.get_with_token("/r", &t).await;
    assert_gateway(&a, 401, "invalid_token", Some(&t));
}

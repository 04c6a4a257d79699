//! Browser sessions (SPEC "Browser sessions: OpenID Connect login").
//!
//! Two kinds of tests:
//! - HTTP level, against a small real key/discovery server (tests/common/jwks.rs): the cookie
//!   crypto (tampered, wrong name, expired, rotated keys), API requests 401 and navigations
//!   302, open-redirect attempts, logout's origin check, back-channel logout tokens,
//!   `/.jwtgate/session`, cookies never reaching the upstream.
//! - End to end with the real `oidc-provider` (tests/oidc/session-provider.mjs) and a real
//!   headless Chromium driven through chromedriver (tests/common/browser.rs): login through
//!   the provider's own form, several tabs at once, refresh after expiry (10 concurrent
//!   requests at the refresh moment, also split over two replicas sharing one Redis), logout
//!   that ends the provider's session, back-channel logout, and the "session too large" page.
//!   These fail, naming the package, when node, the npm packages, chromium or chromedriver are
//!   missing.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::browser::Browser;
use common::client::get;
use common::jwks::{jwks_of, Provider, Signer};
use common::metrics::metric_or_zero;
use common::node::{oidc_dir, require_node};
use common::{eventually, Answer, ChildGuard};
use jwtgate::session::cookie::{Keyring, Session, Transaction, SESSION_COOKIE};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const CLIENT_ID: &str = "jwtgate-web";
const AUDIENCE: &str = "jwtgate-api";

fn now() -> i64 {
    common::now()
}

// ---------------------------------------------------------------------------------------------
// HTTP level

/// A gateway with `[session]` in front of an echo upstream, its provider a small key and
/// discovery server whose signer the test holds.
struct Local {
    provider: Provider,
    signer: Signer,
    issuer: String,
    ring: Keyring,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
    _stop_up: oneshot::Sender<()>,
}

/// Writes a cookie keys file of these keys (the first encrypts).
fn write_keys(path: &Path, keys: &[[u8; 32]]) {
    let text: String = keys.iter().map(|k| STANDARD.encode(k) + "\n").collect();
    std::fs::write(path, text).expect("write cookie keys");
}

/// Runs the gateway on `config` (written into `dir`) on `traffic`, once `/readyz` says so.
async fn start_gateway(
    config: &str,
    dir: &Path,
    traffic: TcpListener,
) -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    oneshot::Sender<()>,
) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).expect("write config");
    run_ready(&path, traffic).await
}

/// Runs the gateway on the config file at `path` on `traffic`, once `/readyz` says so.
async fn run_ready(
    path: &Path,
    traffic: TcpListener,
) -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    oneshot::Sender<()>,
) {
    let (addr, admin, stop) = common::run_on(path, traffic).await;
    eventually(Duration::from_secs(20), "/readyz 200", || async {
        match get(admin, "/readyz", None).await.status {
            200 => Ok(()),
            s => Err(format!("/readyz {s}")),
        }
    })
    .await;
    (addr, admin, stop)
}

impl Local {
    /// `keys`: the gateway's keyring (the first encrypts); the test seals with `keys[0]` too.
    async fn start(keys: &[[u8; 32]]) -> Local {
        let provider = Provider::start().await;
        let signer = Signer::new("k1");
        provider.set_jwks(jwks_of(&[&signer]));
        let issuer = format!("http://{}", provider.addr);
        provider.set_discovery(
            json!({
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/jwks.json"),
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "end_session_endpoint": format!("{issuer}/session/end"),
            })
            .to_string(),
        );
        let up = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let upstream = up.local_addr().expect("addr");
        let (stop_up, stopped_up) = oneshot::channel::<()>();
        tokio::spawn(jwtgate::echo::serve(up, async move {
            let _ = stopped_up.await;
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        write_keys(&dir.path().join("cookie-keys"), keys);
        std::fs::write(dir.path().join("denylist.jsonl"), "").expect("write denylist");
        let config = format!(
            r#"[listen]
addr = "127.0.0.1:0"

[[issuer]]
name = "idp"
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256"]
discovery_url = "{issuer}/.well-known/openid-configuration"
leeway = "1s"

[session]
issuer = "idp"
client_id = "{CLIENT_ID}"
scopes = ["openid", "email"]
cookie_keys_file = "cookie-keys"
external_url = "http://localhost:8080"
idle_timeout = "10m"

[denylist]
file = "denylist.jsonl"

[[route]]
name = "admin"
path_prefix = "/admin"
upstream = "http://{upstream}"
auth = "session"
max_auth_age = "5m"
acr_values = ["mfa"]

[[route]]
name = "app"
path_prefix = "/"
upstream = "http://{upstream}"
auth = "session"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#
        );
        let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (addr, admin, stop) = start_gateway(&config, dir.path(), traffic).await;
        Local {
            provider,
            signer,
            issuer,
            ring: Keyring::new(&keys[..1]),
            addr,
            admin,
            dir,
            _stop: stop,
            _stop_up: stop_up,
        }
    }

    fn access_token(&self, sub: &str, sid: &str) -> String {
        self.access_token_with(sub, sid, json!({}))
    }

    /// An access token with `extra` claims (`auth_time`, `acr`, ...) merged in.
    fn access_token_with(&self, sub: &str, sid: &str, extra: Value) -> String {
        let n = now();
        let mut claims = json!({"iss": self.issuer, "aud": AUDIENCE, "sub": sub, "sid": sid,
            "iat": n, "exp": n + 300, "scope": "api:read"});
        if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
            c.extend(e);
        }
        self.signer.sign_raw(
            &json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}).to_string(),
            &claims.to_string(),
        )
    }

    fn session(&self, sub: &str, sid: &str) -> Session {
        let n = now();
        Session {
            id: "test-session".into(),
            sub: sub.into(),
            sid: Some(sid.into()),
            iat: n - 10,
            exp: n + 3600,
            idle: n + 600,
            at: self.access_token(sub, sid),
            at_iat: n,
            at_exp: n + 300,
            rt: None,
            idt: Some("header.payload.signature".into()),
        }
    }

    fn cookie(&self, s: &Session) -> String {
        format!(
            "{SESSION_COOKIE}={}",
            self.ring
                .seal(SESSION_COOKIE, &serde_json::to_vec(s).expect("json"))
        )
    }

    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        common::client::request(
            method,
            &format!("http://{}{path}", self.addr),
            headers,
            bytes::Bytes::new(),
        )
        .await
    }

    async fn api(&self, cookie: &str) -> Answer {
        self.req(
            "GET",
            "/orders/1",
            &[("cookie", cookie), ("accept", "application/json")],
        )
        .await
    }

    async fn metrics(&self) -> String {
        get(self.admin, "/metrics", None).await.body
    }
}

#[tokio::test]
async fn a_sealed_session_passes_with_its_claims_and_the_gateway_cookies_never_reach_the_upstream()
{
    let l = Local::start(&[[7; 32]]).await;
    let cookie = format!(
        "theme=dark; {}; lang=en",
        l.cookie(&l.session("alice", "sid-1"))
    );
    let a = l.api(&cookie).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-auth-sub"), ["alice"]);
    let sent = a.upstream_header("cookie").join("; ");
    assert!(!sent.contains("__Host-jwtgate"), "{sent}");
    assert!(
        sent.contains("theme=dark") && sent.contains("lang=en"),
        "{sent}"
    );
    // A bearer token is accepted on a session route too.
    let bearer = format!("Bearer {}", l.access_token("bob", "sid-2"));
    let a = l.req("GET", "/x", &[("authorization", &bearer)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-auth-sub"), ["bob"]);
}

#[tokio::test]
async fn tampered_misnamed_expired_and_unknown_key_cookies_are_refused() {
    let l = Local::start(&[[7; 32]]).await;
    let good = l.session("alice", "sid-1");
    // Tampered: one character of the sealed value changed.
    let c = l.cookie(&good);
    let mut bytes = c.into_bytes();
    let i = bytes.len() - 5;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).expect("ascii");
    // Sealed for another cookie name (a transaction cookie's), then put in the session cookie.
    let misnamed = format!(
        "{SESSION_COOKIE}={}",
        l.ring.seal(
            "__Host-jwtgate-tx-abc",
            &serde_json::to_vec(&good).expect("json")
        )
    );
    let expired = l.cookie(&Session {
        exp: now() - 1,
        ..good.clone()
    });
    let idle = l.cookie(&Session {
        idle: now() - 1,
        ..good.clone()
    });
    let other_key = format!(
        "{SESSION_COOKIE}={}",
        Keyring::new(&[[9; 32]]).seal(SESSION_COOKIE, &serde_json::to_vec(&good).expect("json"))
    );
    for (case, cookie) in [
        ("tampered", tampered),
        ("wrong name", misnamed),
        ("absolute expiry passed", expired),
        ("idle expiry passed", idle),
        ("a key not in the ring", other_key),
    ] {
        let a = l.api(&cookie).await;
        assert_eq!(a.status, 401, "{case}: {}", a.body);
        assert_eq!(a.json()["error"], "missing_token", "{case}");
        let cleared = a
            .headers
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap_or("").starts_with("__Host-jwtgate=;"));
        assert!(cleared, "{case}: the dead session cookie is deleted");
    }
}

#[tokio::test]
async fn rotated_keys_open_old_sessions_until_the_old_key_is_removed() {
    let old = [1u8; 32];
    let new = [2u8; 32];
    let sealed_by_old = {
        let l = Local::start(&[old]).await;
        l.cookie(&l.session("alice", "sid-1"))
    };
    // The gateway now encrypts with `new` and still decrypts `old`.
    let l = Local::start(&[new, old]).await;
    // The old cookie's access token was signed by the first provider's key: re-seal it with
    // the old key over a token of this provider, as a rotation in place would have it.
    let s = l.session("alice", "sid-1");
    let old_ring = Keyring::new(&[old]);
    let cookie = format!(
        "{SESSION_COOKIE}={}",
        old_ring.seal(SESSION_COOKIE, &serde_json::to_vec(&s).expect("json"))
    );
    let a = l.api(&cookie).await;
    assert_eq!(
        a.status, 200,
        "a session sealed by the old key still opens: {}",
        a.body
    );
    drop(sealed_by_old);
    let l2 = Local::start(&[new]).await;
    let s = l2.session("alice", "sid-1");
    let cookie = format!(
        "{SESSION_COOKIE}={}",
        old_ring.seal(SESSION_COOKIE, &serde_json::to_vec(&s).expect("json"))
    );
    assert_eq!(l2.api(&cookie).await.status, 401, "the old key was removed");
}

#[tokio::test]
async fn api_requests_get_401_and_navigations_a_pkce_login_redirect_to_the_first_url() {
    let l = Local::start(&[[7; 32]]).await;
    for headers in [
        vec![("accept", "application/json")],
        vec![("accept", "text/html"), ("sec-fetch-mode", "cors")],
        vec![],
    ] {
        let a = l.req("GET", "/orders", &headers).await;
        assert_eq!(a.status, 401, "{headers:?}: {}", a.body);
        assert!(a.header("location").is_none());
    }
    let a = l.req("POST", "/orders", &[("accept", "text/html")]).await;
    assert_eq!(a.status, 401, "a POST is never redirected");

    let a = l
        .req(
            "GET",
            "/orders/7?tab=2",
            &[("accept", "text/html,application/xhtml+xml")],
        )
        .await;
    assert_eq!(a.status, 302, "{}", a.body);
    let location = a.header("location").expect("location").to_owned();
    assert!(
        location.starts_with(&format!("{}/auth?", l.issuer)),
        "{location}"
    );
    for part in [
        "response_type=code",
        "client_id=jwtgate-web",
        "code_challenge_method=S256",
        "redirect_uri=http%3A%2F%2Flocalhost%3A8080%2F.jwtgate%2Fcallback",
        "scope=openid%20email",
    ] {
        assert!(location.contains(part), "{part} in {location}");
    }
    let state = query_value(&location, "state");
    let tx_cookie = a
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .find(|c| c.starts_with("__Host-jwtgate-tx-"))
        .expect("a transaction cookie");
    let name = format!("__Host-jwtgate-tx-{state}");
    assert!(tx_cookie.starts_with(&format!("{name}=")), "{tx_cookie}");
    for attr in [
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(tx_cookie.contains(attr), "{attr} in {tx_cookie}");
    }
    let value = tx_cookie[name.len() + 1..]
        .split(';')
        .next()
        .expect("value");
    let tx: Transaction =
        serde_json::from_slice(&l.ring.open(&name, value).expect("opens")).expect("json");
    assert_eq!(
        tx.to, "/orders/7?tab=2",
        "the path and query first requested"
    );
    assert_eq!(
        query_value(&location, "code_challenge"),
        URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            tx.v.as_bytes()
        ))
    );
    assert!(
        metric_or_zero(
            &l.metrics().await,
            "jwtgate_sessions_total",
            &[("event", "login")]
        ) == 0.0
    );
}

fn query_value(url: &str, name: &str) -> String {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .to_owned()
}

#[tokio::test]
async fn open_redirect_attempts_stay_on_this_origin() {
    let l = Local::start(&[[7; 32]]).await;
    let html = [("accept", "text/html")];
    // No redirect parameter is ever read; a scheme-relative path returns to "/".
    for (path, want) in [
        (
            "/?next=https://evil.example/",
            Some("/?next=https://evil.example/"),
        ),
        ("//evil.example/x", None),
        ("/%2F%2Fevil.example/x", None),
        ("/\\evil.example/x", None),
    ] {
        let a = l.req("GET", path, &html).await;
        if a.status != 302 {
            assert_eq!(a.status, 400, "{path}: {}", a.body);
            continue;
        }
        let location = a.header("location").expect("location");
        let state = query_value(location, "state");
        let name = format!("__Host-jwtgate-tx-{state}");
        let c = a
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .find(|c| c.starts_with(&name))
            .expect("tx cookie");
        let tx: Transaction = serde_json::from_slice(
            &l.ring
                .open(&name, c[name.len() + 1..].split(';').next().expect("v"))
                .expect("opens"),
        )
        .expect("json");
        assert!(
            tx.to.starts_with('/') && !tx.to.starts_with("//") && !tx.to.contains('\\'),
            "{path}: {}",
            tx.to
        );
        if let Some(want) = want {
            assert_eq!(tx.to, want, "{path}");
        }
    }
    // A callback whose state names no transaction cookie never redirects.
    let a = l
        .req("GET", "/.jwtgate/callback?code=x&state=forged", &html)
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.header("location").is_none());
    assert!(a.body.contains("Login expired"), "{}", a.body);
}

#[tokio::test]
async fn logout_checks_the_origin_clears_the_cookies_and_revokes_the_sid() {
    let l = Local::start(&[[7; 32]]).await;
    let cookie = l.cookie(&l.session("alice", "sid-logout"));
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let a = l
            .req(
                "POST",
                "/.jwtgate/logout",
                &[("cookie", &cookie), (name, value)],
            )
            .await;
        assert_eq!(a.status, 403, "{name}: {value}");
    }
    assert_eq!(
        l.api(&cookie).await.status,
        200,
        "a refused logout changes nothing"
    );
    let a = l
        .req(
            "POST",
            "/.jwtgate/logout",
            &[("cookie", &cookie), ("origin", "http://localhost:8080")],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let location = a.header("location").expect("location");
    assert!(
        location.starts_with(&format!("{}/session/end?", l.issuer)),
        "{location}"
    );
    assert!(
        location.contains("id_token_hint=header.payload.signature"),
        "{location}"
    );
    assert!(
        location.contains("post_logout_redirect_uri=http%3A%2F%2Flocalhost%3A8080%2F"),
        "{location}"
    );
    let cleared: Vec<_> = a.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    // The same cookie, replayed after the logout: the sid is denylisted.
    assert_eq!(l.api(&cookie).await.status, 401);
    // A new login in the same provider session (created after the logout) is allowed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut later = l.session("alice", "sid-logout");
    later.iat = now() + 1;
    assert_eq!(l.api(&l.cookie(&later)).await.status, 200);
    // Without a session, logout just redirects to the post-logout page.
    let a = l.req("POST", "/.jwtgate/logout", &[]).await;
    assert_eq!(a.status, 303);
    assert_eq!(a.header("location"), Some("http://localhost:8080/"));
    let m = l.metrics().await;
    assert_eq!(
        metric_or_zero(&m, "jwtgate_sessions_total", &[("event", "logout")]),
        1.0
    );
}

#[tokio::test]
async fn backchannel_logout_tokens_are_verified_and_end_the_session() {
    let l = Local::start(&[[7; 32]]).await;
    let cookie = l.cookie(&l.session("alice", "sid-bc"));
    assert_eq!(l.api(&cookie).await.status, 200);
    let event = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
    let n = now();
    let claims = |extra: Value| {
        let mut c = json!({"iss": l.issuer, "aud": CLIENT_ID, "iat": n, "exp": n + 120,
            "jti": "j1", "sid": "sid-bc", "events": event});
        if let (Some(o), Value::Object(e)) = (c.as_object_mut(), extra) {
            o.extend(e);
        }
        c.to_string()
    };
    let header = json!({"alg": "ES256", "typ": "logout+jwt", "kid": "k1"}).to_string();
    let post = |token: String| async move {
        let body = format!("logout_token={token}");
        common::client::request(
            "POST",
            &format!("http://{}/.jwtgate/backchannel-logout", l.addr),
            &[("content-type", "application/x-www-form-urlencoded")],
            bytes::Bytes::from(body),
        )
        .await
    };
    let other = Signer::new("k1");
    for (case, token) in [
        (
            "wrong audience",
            l.signer
                .sign_raw(&header, &claims(json!({"aud": "someone-else"}))),
        ),
        (
            "a nonce",
            l.signer.sign_raw(&header, &claims(json!({"nonce": "n"}))),
        ),
        (
            "no event",
            l.signer.sign_raw(&header, &claims(json!({"events": {}}))),
        ),
        ("a foreign key", other.sign_raw(&header, &claims(json!({})))),
        (
            "an id token typ",
            l.signer.sign_raw(
                &json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}).to_string(),
                &claims(json!({})),
            ),
        ),
    ] {
        let a = post(token).await;
        assert_eq!(a.status, 400, "{case}: {}", a.body);
        assert_eq!(l.api(&cookie).await.status, 200, "{case} revokes nothing");
    }
    let logout_token = l.signer.sign_raw(&header, &claims(json!({})));
    let a = post(logout_token.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(l.api(&cookie).await.status, 401, "the sid is denylisted");
    // OIDC Back-Channel Logout §2.6: the same logout token (its jti) is accepted once.
    let a = post(logout_token).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("used before"), "{}", a.body);
    let m = l.metrics().await;
    assert_eq!(
        metric_or_zero(
            &m,
            "jwtgate_sessions_total",
            &[("event", "backchannel_logout")]
        ),
        1.0
    );
    drop(l.provider);
}

#[tokio::test]
async fn a_step_up_route_sends_a_browser_to_log_in_again_with_max_age_and_acr_values() {
    let l = Local::start(&[[7; 32]]).await;
    let plain = l.cookie(&l.session("alice", "sid-su"));
    assert_eq!(
        l.api(&plain).await.status,
        200,
        "the app route has no step-up"
    );
    let html = [("accept", "text/html")];
    // A navigation: a new login that asks the provider for what the route needs; the session
    // is kept (the app route still serves it) until the new login replaces it.
    let a = l
        .req("GET", "/admin/users", &[("cookie", &plain), html[0]])
        .await;
    assert_eq!(a.status, 302, "{}", a.body);
    let location = a.header("location").expect("location");
    assert!(
        location.starts_with(&format!("{}/auth?", l.issuer)),
        "{location}"
    );
    assert_eq!(query_value(location, "max_age"), "300", "{location}");
    assert_eq!(query_value(location, "acr_values"), "mfa", "{location}");
    let cookies: Vec<_> = a.headers.get_all("set-cookie").iter().collect();
    assert!(
        cookies
            .iter()
            .all(|c| !c.to_str().unwrap_or("").starts_with("__Host-jwtgate=")),
        "the session cookie is not cleared: {cookies:?}"
    );
    assert_eq!(l.api(&plain).await.status, 200);
    // An API request: the RFC 9470 challenge.
    let a = l
        .req(
            "GET",
            "/admin/users",
            &[("cookie", &plain), ("accept", "application/json")],
        )
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let challenge = a.header("www-authenticate").expect("challenge");
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#)
            && challenge.contains(r#"max_age="300""#)
            && challenge.contains(r#"acr_values="mfa""#),
        "{challenge}"
    );
    // After a recent, strong enough login the route serves the session.
    let mut stepped = l.session("alice", "sid-su");
    stepped.at = l.access_token_with(
        "alice",
        "sid-su",
        json!({"auth_time": now() - 5, "acr": "mfa"}),
    );
    let a = l
        .req(
            "GET",
            "/admin/users",
            &[("cookie", &l.cookie(&stepped)), html[0]],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn a_denylisted_subject_ends_its_sessions_and_clears_the_cookie() {
    let l = Local::start(&[[7; 32]]).await;
    let cookie = l.cookie(&l.session("mallory", "sid-sub"));
    let other = l.cookie(&l.session("alice", "sid-other"));
    assert_eq!(l.api(&cookie).await.status, 200);
    // "Log out everywhere": a sub entry for sessions created before now, as `jwtgate revoke
    // --sub` writes it; the file is watched.
    let line =
        json!({"issuer": "idp", "sub": "mallory", "before": now() + 1, "until": now() + 3600});
    std::fs::write(l.dir.path().join("denylist.jsonl"), format!("{line}\n")).expect("write");
    eventually(Duration::from_secs(10), "the sub entry applies", || async {
        match l.api(&cookie).await.status {
            401 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
    let a = l.api(&cookie).await;
    let cleared: Vec<_> = a.headers.get_all("set-cookie").iter().collect();
    assert!(!cleared.is_empty(), "the session cookies are cleared");
    assert_eq!(
        l.api(&other).await.status,
        200,
        "another user's session stays"
    );
}

#[tokio::test]
async fn the_session_endpoint_answers_single_page_apps_and_reserved_paths_are_never_forwarded() {
    let l = Local::start(&[[7; 32]]).await;
    let s = l.session("alice", "sid-1");
    let a = l
        .req("GET", "/.jwtgate/session", &[("cookie", &l.cookie(&s))])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json(), json!({"sub": "alice", "expires_at": s.exp}));
    let a = l.req("GET", "/.jwtgate/session", &[]).await;
    assert_eq!(a.status, 401);
    for (method, path, status) in [
        ("GET", "/.jwtgate/other", 404),
        ("GET", "/.jwtgate/logout", 405),
        ("POST", "/.jwtgate/session", 405),
    ] {
        let a = l.req(method, path, &[("accept", "text/html")]).await;
        assert_eq!(a.status, status, "{method} {path}: {}", a.body);
        assert!(!a.body.contains("\"headers\""), "never the upstream's echo");
    }
}

// ---------------------------------------------------------------------------------------------
// End to end: oidc-provider and Chromium

/// oidc-provider running tests/oidc/session-provider.mjs; killed by its PID on drop.
struct Idp {
    port: u16,
    _child: ChildGuard,
    stderr: Arc<Mutex<String>>,
}

impl Idp {
    fn start(origin: &str, access_token_ttl: u64) -> Idp {
        require_node();
        let mut child = Command::new("node")
            .arg(oidc_dir().join("session-provider.mjs"))
            .arg(origin)
            .arg(access_token_ttl.to_string())
            .current_dir(oidc_dir())
            .env("NODE_EXTRA_CA_CERTS", common::tls::cert_file("dev-ca.crt"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node tests/oidc/session-provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            // Drained to the end: a closed pipe would kill the provider at its next log line.
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let child = ChildGuard(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with("ready ") => {
                    break l[6..].trim().parse().expect("port");
                }
                Ok(_) => continue,
                Err(_) => panic!(
                    "the provider did not start within 30 s; stderr:\n{}",
                    stderr.lock().expect("lock")
                ),
            }
        };
        Idp {
            port,
            _child: child,
            stderr,
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A TLS gateway at https://localhost:PORT with `[session]` against a real provider.
struct E2e {
    idp: Idp,
    origin: String,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    ring: Keyring,
    /// Holds `gateway.toml`, the cookie keys and the client secret.
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
    _stop_up: oneshot::Sender<()>,
}

impl E2e {
    async fn start(access_token_ttl: u64) -> E2e {
        E2e::start_with(access_token_ttl, None).await
    }

    /// With `redis`: `store = "redis"` on that server.
    async fn start_with(
        access_token_ttl: u64,
        redis: Option<&common::redis_server::RedisServer>,
    ) -> E2e {
        common::browser::require_tools();
        let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = traffic.local_addr().expect("addr").port();
        let origin = format!("https://localhost:{port}");
        let idp = Idp::start(&origin, access_token_ttl);
        let issuer = idp.issuer();
        let up = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let upstream = up.local_addr().expect("addr");
        let (stop_up, stopped_up) = oneshot::channel::<()>();
        tokio::spawn(jwtgate::echo::serve(up, async move {
            let _ = stopped_up.await;
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        let key = [42u8; 32];
        write_keys(&dir.path().join("cookie-keys"), &[key]);
        std::fs::write(
            dir.path().join("client-secret"),
            "jwtgate-web-secret-that-is-long-enough\n",
        )
        .expect("secret");
        let config = format!(
            r#"[listen]
addr = "127.0.0.1:0"
tls = {{ cert = "{cert}", key = "{tkey}" }}

[[issuer]]
name = "idp"
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256"]
discovery_url = "{issuer}/.well-known/openid-configuration"
leeway = "1s"

[session]
issuer = "idp"
client_id = "{CLIENT_ID}"
client_secret_file = "client-secret"
scopes = ["openid", "email", "offline_access", "api:read"]
cookie_keys_file = "cookie-keys"
external_url = "{origin}"
{store}

[[route]]
name = "app"
path_prefix = "/"
upstream = "http://{upstream}"
auth = "session"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Scope" = "scope"
"#,
            cert = common::tls::cert_file("server.crt").display(),
            tkey = common::tls::cert_file("server.key").display(),
            store = redis.map_or(String::new(), |r| format!(
                "store = \"redis\"\n\n[redis]\nurl = \"{}\"\n",
                r.url()
            )),
        );
        let (addr, admin_addr, stop) = start_gateway(&config, dir.path(), traffic).await;
        E2e {
            idp,
            origin,
            addr,
            admin: admin_addr,
            ring: Keyring::new(&[key]),
            dir,
            _stop: stop,
            _stop_up: stop_up,
        }
    }

    /// Another replica of this gateway: the same config file (keys, `[redis]`, provider,
    /// upstream), its own traffic port on 127.0.0.1 with the same certificates.
    async fn second_replica(&self) -> Replica {
        let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (addr, admin, stop) = run_ready(&self.dir.path().join("gateway.toml"), traffic).await;
        Replica {
            addr,
            admin,
            _stop: stop,
        }
    }

    async fn metric(&self, event: &str) -> f64 {
        sessions_metric(self.admin, event).await
    }

    /// The session in the browser's cookie, opened with the gateway's key.
    fn session_of(&self, b: &Browser) -> Session {
        let cookies = b.cookies();
        let joined: String = [SESSION_COOKIE, "__Host-jwtgate-1"]
            .iter()
            .filter_map(|n| cookies.iter().find(|(c, _)| c == n).map(|(_, v)| v.clone()))
            .collect();
        let plain = self
            .ring
            .open(SESSION_COOKIE, &joined)
            .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
        serde_json::from_slice(&plain).expect("session json")
    }

    /// GET `path` over TLS with a `Cookie` header, as a browser tab holding `cookie` would.
    async fn get_with_cookie(&self, path: &str, cookie: &str) -> Answer {
        self.get_with_cookie_at(self.addr, path, cookie).await
    }

    /// Like [`E2e::get_with_cookie`], to the replica at `addr` (the `Host` is the origin's,
    /// as behind a load balancer).
    async fn get_with_cookie_at(
        &self,
        addr: std::net::SocketAddr,
        path: &str,
        cookie: &str,
    ) -> Answer {
        let mut send = tls_http1(addr).await;
        get_on(&mut send, self.host(), path, cookie).await
    }

    /// `localhost:PORT` of the origin.
    fn host(&self) -> &str {
        self.origin.trim_start_matches("https://")
    }

    fn stderr(&self) -> String {
        self.idp
            .stderr
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// A second gateway replica started by [`E2e::second_replica`]; stopped on drop.
struct Replica {
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// `jwtgate_sessions_total{event}` of the gateway whose admin listener is `admin`.
async fn sessions_metric(admin: std::net::SocketAddr, event: &str) -> f64 {
    let m = get(admin, "/metrics", None).await.body;
    metric_or_zero(&m, "jwtgate_sessions_total", &[("event", event)])
}

type Http1 = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/1.1 connection over TLS (to `localhost`, the dev certificate) to `addr`.
async fn tls_http1(addr: std::net::SocketAddr) -> Http1 {
    let tls = common::tls::connect(addr, common::tls::dev_client(&[b"http/1.1"], false)).await;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("http/1.1 handshake");
    tokio::spawn(conn);
    send
}

/// GET `path` with `Host: host` and a `Cookie` header on an open connection.
async fn get_on(send: &mut Http1, host: &str, path: &str, cookie: &str) -> Answer {
    let req = http::Request::get(path)
        .header("host", host)
        .header("cookie", cookie)
        .header("accept", "application/json")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let res = send.send_request(req).await.expect("answer");
    common::client::read_answer(res, path).await.expect("body")
}

impl Drop for E2e {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the provider's stderr:\n{}", self.stderr());
        }
    }
}

/// The echo upstream's report of the page the browser shows.
/// Waits (20 s at most) until the browser's page is `url`.
async fn lands_on(b: &Browser, url: String) {
    eventually(
        Duration::from_secs(20),
        &format!("lands on {url}"),
        || async {
            let u = b.url();
            if u == url {
                Ok(())
            } else {
                Err(u)
            }
        },
    )
    .await;
}

fn echoed(b: &Browser) -> Value {
    let text = b.text();
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "the page at {} is not the upstream's echo ({e}): {text}",
            b.url()
        )
    })
}

/// fetch()es `path` `n` times at once from the page; returns the statuses.
fn fetch_all(b: &Browser, path: &str, n: usize) -> Vec<u64> {
    let v = b.script_async(
        "const [path, n, done] = arguments;
         Promise.all(Array.from({length: n}, () =>
             fetch(path, {headers: {accept: 'application/json'}}).then(r => r.status)))
           .then(done, e => done(String(e)));",
        json!([path, n]),
    );
    v.as_array()
        .unwrap_or_else(|| panic!("fetch failed: {v}"))
        .iter()
        .map(|s| s.as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn browser_logs_in_with_several_tabs_outlives_token_expiry_and_logs_out_of_the_provider() {
    const TTL: u64 = 12;
    let e = E2e::start(TTL).await;
    let b = Browser::start(Some(&common::tls::cert_file("server.crt")));

    // Two tabs ask for two pages before either has logged in: two login attempts at once.
    let first = b.tab();
    b.goto(&format!("{}/orders/7?view=full", e.origin));
    assert!(
        b.url().starts_with(&e.idp.issuer()),
        "sent to the provider: {}",
        b.url()
    );
    let second = b.new_tab();
    b.switch_to(&second);
    b.goto(&format!("{}/invoices/3", e.origin));
    b.wait_for("input[name=login]", Duration::from_secs(20));

    b.switch_to(&first);
    b.log_in_as("alice");
    lands_on(&b, format!("{}/orders/7?view=full", e.origin)).await;
    let page = echoed(&b);
    assert_eq!(page["path"], "/orders/7", "{page}");
    assert_eq!(page["query"], "view=full", "{page}");
    assert_eq!(page["headers"]["x-auth-sub"], json!(["alice"]), "{page}");
    assert_eq!(
        page["headers"]["x-auth-scope"],
        json!(["api:read"]),
        "{page}"
    );
    let cookie_header = page["headers"]["cookie"].to_string();
    assert!(!cookie_header.contains("__Host-jwtgate"), "{cookie_header}");

    b.switch_to(&second);
    b.log_in_as("alice");
    lands_on(&b, format!("{}/invoices/3", e.origin)).await;
    assert_eq!(echoed(&b)["headers"]["x-auth-sub"], json!(["alice"]));
    assert_eq!(e.metric("login").await, 2.0, "{}", e.stderr());

    // The cookie: one, under 4000 bytes, with the __Host- attributes enforced by the browser.
    let s = e.session_of(&b);
    let size: usize = b
        .cookies()
        .iter()
        .filter(|(n, _)| n.starts_with(SESSION_COOKIE) && !n.contains("-tx-"))
        .map(|(n, v)| n.len() + v.len())
        .sum();
    assert!(size <= 4000, "session cookie of {size} bytes");
    eprintln!("session cookie: {size} bytes");

    // At the refresh moment, ten requests at once with the same cookie: all pass, one refresh.
    let refresh_at = jwtgate::session::refresh::refresh_at(s.at_iat, s.at_exp);
    tokio::time::sleep(Duration::from_secs((refresh_at - now()).max(0) as u64 + 1)).await;
    let before = e.metric("refresh").await;
    let old_cookie = b.session_cookie_header();
    let statuses = fetch_all(&b, "/api/data", 10);
    assert_eq!(statuses, vec![200; 10], "{}", e.stderr());
    assert_eq!(
        e.metric("refresh").await - before,
        1.0,
        "one refresh for ten requests"
    );
    let refreshed = e.session_of(&b);
    assert_ne!(
        refreshed.at, s.at,
        "the browser holds the refreshed session"
    );
    assert_ne!(refreshed.rt, s.rt, "the provider rotated the refresh token");
    // The rotation race: a request still carrying the old cookie (another tab, or sent before
    // the browser stored the new one) passes, with the new session, without a second refresh.
    let late = e.get_with_cookie("/api/late", &old_cookie).await;
    assert_eq!(late.status, 200, "{}", late.body);
    assert_eq!(late.upstream_header("x-auth-sub"), ["alice"]);
    assert!(
        late.headers
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap_or("").starts_with("__Host-jwtgate=")),
        "the late request gets the new session's cookie"
    );
    assert_eq!(e.metric("refresh").await - before, 1.0, "no second refresh");

    // Past the old access token's expiry, a navigation passes without a redirect.
    tokio::time::sleep(Duration::from_secs((s.at_exp - now()).max(0) as u64 + 2)).await;
    b.goto(&format!("{}/after-expiry", e.origin));
    assert_eq!(b.url(), format!("{}/after-expiry", e.origin));
    assert_eq!(echoed(&b)["headers"]["x-auth-sub"], json!(["alice"]));

    // Logout: a same-origin form POST, then the provider's confirmation.
    b.script(
        "const f = document.createElement('form'); f.method = 'POST';
         f.action = '/.jwtgate/logout'; document.body.appendChild(f); f.submit();",
        json!([]),
    );
    let yes = b.wait_for(
        "button[name=logout][value=yes], button[value=yes]",
        Duration::from_secs(20),
    );
    b.click(&yes);
    // The post-logout page is a session route: the provider's session ended, so it asks for
    // a login instead of signing the browser straight back in.
    b.wait_for("input[name=login]", Duration::from_secs(20));
    assert!(b.url().starts_with(&e.idp.issuer()), "{}", b.url());
    assert_eq!(e.metric("logout").await, 1.0);
    b.goto(&format!("{}/.jwtgate/session", e.origin));
    assert!(b.text().contains("login_required"), "{}", b.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn backchannel_logout_from_the_provider_ends_a_live_session_within_seconds() {
    let e = E2e::start(300).await;
    let b = Browser::start(Some(&common::tls::cert_file("server.crt")));
    b.goto(&format!("{}/home", e.origin));
    b.log_in_as("carol");
    lands_on(&b, format!("{}/home", e.origin)).await;
    assert_eq!(fetch_all(&b, "/api", 1), [200]);
    // The provider ends its session on its own page (not through the gateway).
    b.goto(&format!(
        "{}/session/end?client_id={CLIENT_ID}",
        e.idp.issuer()
    ));
    let yes = b.wait_for(
        "button[name=logout][value=yes], button[value=yes]",
        Duration::from_secs(20),
    );
    b.click(&yes);
    eventually(
        Duration::from_secs(10),
        "back-channel logout received",
        || async {
            if e.metric("backchannel_logout").await >= 1.0 {
                Ok(())
            } else {
                Err(e.stderr())
            }
        },
    )
    .await;
    b.goto(&format!("{}/home", e.origin));
    b.wait_for("input[name=login]", Duration::from_secs(20));
    let a = b.url();
    assert!(a.starts_with(&e.idp.issuer()), "sent to log in again: {a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_session_too_large_for_two_cookies_gets_a_page_that_says_so() {
    let e = E2e::start(300).await;
    let b = Browser::start(Some(&common::tls::cert_file("server.crt")));
    b.goto(&format!("{}/home", e.origin));
    b.log_in_as("big");
    eventually(Duration::from_secs(20), "the too-large page", || async {
        let t = b.text();
        if t.contains("Session too large") {
            Ok(())
        } else {
            Err(t)
        }
    })
    .await;
    assert!(b.text().contains("store = \"redis\""), "{}", b.text());
    assert_eq!(e.metric("too_large").await, 1.0);
    assert!(
        !b.cookies().iter().any(|(n, _)| n == SESSION_COOKIE),
        "no cookie the browser would drop"
    );
}

// ---------------------------------------------------------------------------------------------
// Config, check and explain

fn session_config(session: &str, route_auth: &str, discovery: bool) -> String {
    let source = if discovery {
        "discovery_url = \"https://idp.example.com/.well-known/openid-configuration\""
    } else {
        "jwks_url = \"https://idp.example.com/jwks\""
    };
    format!(
        r#"[listen]
addr = "127.0.0.1:0"

[[issuer]]
name = "corp"
issuer = "https://idp.example.com/"
audiences = ["orders-api"]
algorithms = ["ES256"]
{source}

{session}

[[route]]
name = "app"
path_prefix = "/"
upstream = "http://127.0.0.1:8080"
auth = "{route_auth}"
"#
    )
}

fn config_errors(text: &str) -> String {
    match jwtgate::Config::parse(Path::new("/etc/jwtgate/gateway.toml"), text) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

const GOOD_SESSION: &str = r#"[session]
issuer = "corp"
client_id = "orders-web"
cookie_keys_file = "cookie-keys"
external_url = "https://orders.example.com"
"#;

#[test]
fn session_config_is_validated_with_positions() {
    assert_eq!(
        config_errors(&session_config(GOOD_SESSION, "session", true)),
        ""
    );
    for (session, route_auth, discovery, want) in [
        (
            "",
            "session",
            true,
            "auth = \"session\" needs a [session] section",
        ),
        (GOOD_SESSION, "session", false, "needs a discovery_url"),
        (
            &GOOD_SESSION.replace("corp\"\nclient", "nobody\"\nclient"),
            "session",
            true,
            "no [[issuer]] is named \"nobody\"",
        ),
        (
            &GOOD_SESSION.replace(
                "https://orders.example.com",
                "https://orders.example.com/app",
            ),
            "session",
            true,
            "must be an origin",
        ),
        (
            &GOOD_SESSION.replace("https://orders.example.com", "http://orders.example.com"),
            "session",
            true,
            "must be https",
        ),
        (
            &format!("{GOOD_SESSION}store = \"memcached\"\n"),
            "session",
            true,
            "store \"memcached\" must be \"cookie\" or \"redis\"",
        ),
        (
            &format!("{GOOD_SESSION}scopes = [\"email\"]\n"),
            "session",
            true,
            "scopes must include \"openid\"",
        ),
        (
            &format!("{GOOD_SESSION}client_secret_env = \"A\"\nclient_secret_file = \"b\"\n"),
            "session",
            true,
            "not both",
        ),
        (
            &format!("{GOOD_SESSION}lifetime = \"soon\"\n"),
            "session",
            true,
            "lifetime",
        ),
        (
            &format!("{GOOD_SESSION}cookie_domain = \"x\"\n"),
            "session",
            true,
            "unknown key",
        ),
    ] {
        let errors = config_errors(&session_config(session, route_auth, discovery));
        assert!(errors.contains(want), "want {want:?} in:\n{errors}");
        assert!(
            errors.starts_with("/etc/jwtgate/gateway.toml:"),
            "located: {errors}"
        );
    }
    // http is fine for a loopback development origin.
    let local = GOOD_SESSION.replace("https://orders.example.com", "http://localhost:8080");
    assert_eq!(config_errors(&session_config(&local, "session", true)), "");
}

/// A session config for the provider at `iss` (keys in `cookie-keys` next to it), one `session`
/// route on `/` to a closed port, then `route_extra`.
fn small_session_config(iss: &str, route_extra: &str) -> String {
    format!(
        r#"[listen]
addr = "127.0.0.1:0"
[[issuer]]
name = "idp"
issuer = "{iss}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256"]
discovery_url = "{iss}/.well-known/openid-configuration"
[session]
issuer = "idp"
client_id = "{CLIENT_ID}"
cookie_keys_file = "cookie-keys"
[[route]]
name = "app"
path_prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "session"
{route_extra}"#
    )
}

#[tokio::test]
async fn a_missing_or_bad_cookie_keys_file_refuses_the_config_with_its_line() {
    let l = Local::start(&[[7; 32]]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = small_session_config(&l.issuer, "");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).expect("write");
    let load = || match jwtgate::App::load(&path) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    assert!(load().contains("cookie_keys_file"), "{}", load());
    std::fs::write(dir.path().join("cookie-keys"), "# keys\nnot-base64!\n").expect("write");
    assert!(load().contains("line 2"), "{}", load());
    write_keys(&dir.path().join("cookie-keys"), &[[1; 32]]);
    assert_eq!(load(), "");
}

#[tokio::test]
async fn check_fetches_the_discovery_document_and_explain_opens_a_cookie() {
    let l = Local::start(&[[7; 32]]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(&dir.path().join("cookie-keys"), &[[7; 32]]);
    let text = small_session_config(
        &l.issuer,
        "[route.claim_headers]\n\"X-Auth-Sub\" = \"sub\"\n",
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).expect("write");
    let bin = common::binary();
    let (p, b) = (path.clone(), bin.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&b)
            .arg("check")
            .arg("--config")
            .arg(&p)
            .output()
    })
    .await
    .expect("join")
    .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("redirect_uri=<each request's origin>/.jwtgate/callback"),
        "{stdout}"
    );
    assert!(stdout.contains("has no external_url"), "{stdout}");
    // 127.0.0.1 is loopback: no plain-http warning.
    assert!(
        !stdout.contains("plain http on a non-loopback host"),
        "{stdout}"
    );

    let cookie = l.cookie(&l.session("alice", "sid-x"));
    let (p, b) = (path.clone(), bin.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&b)
            .args(["explain", "--config"])
            .arg(&p)
            .args(["--cookie", &format!("a=1; {cookie}"), "/orders"])
            .output()
    })
    .await
    .expect("join")
    .expect("run explain");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sub=alice sid=sid-x"), "{stdout}");
    assert!(stdout.contains("x-auth-sub: alice"), "{stdout}");

    let (p, b) = (path.clone(), bin.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&b)
            .args(["explain", "--config"])
            .arg(&p)
            .args(["--cookie", "__Host-jwtgate=AAAA", "/orders"])
            .output()
    })
    .await
    .expect("join")
    .expect("run explain");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("does not open"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn redis_store_keeps_sessions_server_side_and_refreshes_them_once() {
    const TTL: u64 = 12;
    let redis = common::redis_server::RedisServer::start();
    let e = E2e::start_with(TTL, Some(&redis)).await;
    let b = Browser::start(Some(&common::tls::cert_file("server.crt")));
    b.goto(&format!("{}/home", e.origin));
    b.log_in_as("dave");
    lands_on(&b, format!("{}/home", e.origin)).await;
    assert_eq!(echoed(&b)["headers"]["x-auth-sub"], json!(["dave"]));
    let cookie = b.session_cookie_header();
    assert!(
        cookie.len() < 400,
        "the cookie holds only an id and a key: {cookie}"
    );
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("jwtgate:session:*")
        .query(&mut conn)
        .expect("KEYS");
    assert_eq!(keys.len(), 1, "{keys:?}");
    // At the refresh moment, ten requests at once: all pass, one refresh, the cookie unchanged.
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 1)).await;
    let before = e.metric("refresh").await;
    assert_eq!(fetch_all(&b, "/api", 10), vec![200; 10], "{}", e.stderr());
    assert_eq!(e.metric("refresh").await - before, 1.0);
    assert_eq!(
        b.session_cookie_header(),
        cookie,
        "the cookie never changes"
    );
    // The old cookie is the current session: after the access token expired it still passes.
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 2)).await;
    let a = e.get_with_cookie("/api/late", &cookie).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Logout deletes the session from Redis.
    b.script(
        "const f = document.createElement('form'); f.method = 'POST';
         f.action = '/.jwtgate/logout'; document.body.appendChild(f); f.submit();",
        json!([]),
    );
    b.wait_for("button[value=yes]", Duration::from_secs(20));
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("jwtgate:session:*")
        .query(&mut conn)
        .expect("KEYS");
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(e.get_with_cookie("/api", &cookie).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn two_replicas_on_one_redis_refresh_a_session_once_for_concurrent_requests_to_both() {
    const TTL: u64 = 12;
    const EACH: usize = 5;
    let redis = common::redis_server::RedisServer::start();
    let e = E2e::start_with(TTL, Some(&redis)).await;
    let r = e.second_replica().await;
    let b = Browser::start(Some(&common::tls::cert_file("server.crt")));
    b.goto(&format!("{}/home", e.origin));
    b.log_in_as("erin");
    lands_on(&b, format!("{}/home", e.origin)).await;
    let cookie = b.session_cookie_header();
    let both = || async {
        let mut sum = [0.0; 2];
        for (i, event) in ["refresh", "refresh_failed"].into_iter().enumerate() {
            sum[i] = e.metric(event).await + sessions_metric(r.admin, event).await;
        }
        sum
    };
    // At the refresh moment, five requests to each replica at once (connections opened first,
    // the requests sent together): all pass, and the provider sees one refresh in total.
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 1)).await;
    let before = both().await;
    let start = Arc::new(tokio::sync::Barrier::new(2 * EACH));
    let mut set = tokio::task::JoinSet::new();
    for (replica, addr) in [("A", e.addr), ("B", r.addr)] {
        for i in 0..EACH {
            let (start, host, cookie) = (start.clone(), e.host().to_owned(), cookie.clone());
            set.spawn(async move {
                let mut send = tls_http1(addr).await;
                start.wait().await;
                let a = get_on(&mut send, &host, &format!("/api/{replica}{i}"), &cookie).await;
                (replica, a)
            });
        }
    }
    let mut answers = Vec::new();
    while let Some(done) = set.join_next().await {
        answers.push(done.expect("request task"));
    }
    for (replica, a) in &answers {
        assert_eq!(
            a.status,
            200,
            "replica {replica}: {}\n{}",
            a.body,
            e.stderr()
        );
        assert_eq!(
            a.json()["headers"]["x-auth-sub"],
            json!(["erin"]),
            "{replica}"
        );
        assert!(
            a.headers.get("set-cookie").is_none(),
            "replica {replica}: the cookie never changes with store = \"redis\""
        );
    }
    let after = both().await;
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (1.0, 0.0),
        "refreshes and failed refreshes over both replicas (A: {}, B: {})\n{}",
        e.metric("refresh").await,
        sessions_metric(r.admin, "refresh").await,
        e.stderr()
    );
    // Replica B reads the refreshed session from Redis: the same cookie passes, no new refresh.
    let late = e.get_with_cookie_at(r.addr, "/api/late", &cookie).await;
    assert_eq!(late.status, 200, "{}", late.body);
    assert_eq!(both().await, after, "no second refresh");
}

//! The reserved paths, answered by the gateway on every host and never forwarded:
//! `GET /.jwtgate/callback`, `POST /.jwtgate/logout`, `POST /.jwtgate/backchannel-logout`,
//! `GET /.jwtgate/session`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::cookie::{self, Session, Transaction};
use super::oidc::{self, enc};
use super::{page, redirect, seal_session, Answer, Runtime, CALLBACK_PATH};
use crate::config::SessionConfig;
use crate::denylist::{Entry, Kind};
use crate::proxy::{Gateway, ProxyError};
use crate::replay::WhenDown;
use crate::server::ConnInfo;
use crate::state::Snapshot;
use crate::{unix_now, unix_secs};

/// A back-channel logout request body larger than this is refused.
const MAX_LOGOUT_BODY_BYTES: usize = 16 << 10;

/// Answers a request to a reserved path (`path` is normalised and starts with
/// [`super::RESERVED_PREFIX`]).
pub async fn handle(
    gw: &Gateway,
    snap: &Snapshot,
    req: Request<Incoming>,
    path: &str,
    host: Option<&HeaderValue>,
    conn: &ConnInfo,
) -> Result<Answer, ProxyError> {
    let (Some(cfg), Some(rt)) = (&snap.config.session, &snap.session) else {
        return Err(ProxyError::NotFound);
    };
    let Some(origin) = super::origin(cfg, host, conn.tls) else {
        return Err(ProxyError::BadRequest(
            "the request has no Host to build the login callback from",
        ));
    };
    let method = req.method().clone();
    match (path, method) {
        (CALLBACK_PATH, Method::GET) => callback(gw, snap, cfg, rt, &req, &origin).await,
        ("/.jwtgate/logout", Method::POST) => logout(gw, cfg, rt, &req, &origin).await,
        ("/.jwtgate/backchannel-logout", Method::POST) => backchannel(gw, snap, cfg, rt, req).await,
        ("/.jwtgate/session", Method::GET) => Ok(session_info(gw, snap, cfg, rt, &req).await),
        ("/.jwtgate/callback" | "/.jwtgate/session", _) => Err(ProxyError::MethodNotAllowed("GET")),
        ("/.jwtgate/logout" | "/.jwtgate/backchannel-logout", _) => {
            Err(ProxyError::MethodNotAllowed("POST"))
        }
        _ => Err(ProxyError::NotFound),
    }
}

/// A query parameter, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|p| {
        let (n, v) = p.split_once('=')?;
        (n == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn failed(title: &str, text: &str) -> Answer {
    page(StatusCode::BAD_REQUEST, title, text)
}

/// `GET /.jwtgate/callback?code&state`: the provider's answer to a login. The state names the
/// transaction cookie; its verifier and nonce finish the code exchange.
async fn callback(
    gw: &Gateway,
    snap: &Snapshot,
    cfg: &SessionConfig,
    rt: &Runtime,
    req: &Request<Incoming>,
    origin: &str,
) -> Result<Answer, ProxyError> {
    let now = unix_now();
    let query = req.uri().query();
    let state = query_param(query, "state").unwrap_or_default();
    let state_ok = !state.is_empty()
        && state.len() <= 64
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !state_ok {
        return Ok(failed(
            "Login failed",
            "The login answer carries no valid state. Start again from the page you wanted.",
        ));
    }
    let name = format!("{}{state}", cookie::TX_COOKIE_PREFIX);
    let jar = cookie::jar(req.headers());
    let tx: Option<Transaction> = jar
        .tx
        .iter()
        .find(|(id, _)| *id == state)
        .and_then(|(_, v)| rt.keyring.open(&name, v))
        .and_then(|p| serde_json::from_slice(&p).ok());
    let clear_tx = cookie::set_cookie(&name, "", 0);
    let with_clear = |mut a: Answer| {
        a.headers_mut().append(header::SET_COOKIE, clear_tx.clone());
        a
    };
    let Some(tx) = tx.filter(|t| t.exp > now) else {
        return Ok(with_clear(failed(
            "Login expired",
            "This login attempt is unknown or older than 10 minutes (or cookies are blocked). Start again from the page you wanted.",
        )));
    };
    if let Some(err) = query_param(query, "error") {
        let err: String = err.chars().take(100).collect();
        return Ok(with_clear(page(
            StatusCode::FORBIDDEN,
            "Login refused",
            &format!("The identity provider refused the login: {err}."),
        )));
    }
    let Some(code) = query_param(query, "code") else {
        return Ok(with_clear(failed(
            "Login failed",
            "The login answer carries no code.",
        )));
    };
    let redirect_uri = format!("{origin}{CALLBACK_PATH}");
    let result = async {
        let d = gw.sessions.discovery(rt).await?;
        let t = rt
            .client
            .exchange_code(&d, &code, &redirect_uri, &tx.v)
            .await?;
        let idt = t
            .id_token
            .as_deref()
            .ok_or_else(|| oidc::OidcError::IdToken("the provider sent none".into()))?;
        let claims = oidc::verify_id_token(
            idt,
            &rt.id_issuer,
            Some(&tx),
            snap.config.limits.max_token_bytes,
            now,
        )
        .await?;
        Ok::<_, oidc::OidcError>((t, claims))
    }
    .await;
    let (t, claims) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "login failed");
            return Ok(with_clear(page(
                StatusCode::BAD_GATEWAY,
                "Login failed",
                "The identity provider's answer could not be used; the gateway's log says why. Try again.",
            )));
        }
    };
    // The access token, when a JWT, is what requests forward: it must pass as a bearer token.
    if oidc::is_jwt(&t.access_token) {
        if let Err(e) = gw.verify(snap, &t.access_token, &[cfg.issuer]).await {
            tracing::warn!(error = %e, "login failed: the access token does not verify");
            return Ok(with_clear(page(
                StatusCode::BAD_GATEWAY,
                "Login failed",
                "The access token from the identity provider is not accepted by this gateway (see its log).",
            )));
        }
    }
    let sub = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let session = Session {
        id: oidc::random(16),
        sub,
        sid: claims
            .get("sid")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        iat: now,
        exp: now + cfg.lifetime.as_secs() as i64,
        idle: now + cfg.idle_timeout.as_secs().min(cfg.lifetime.as_secs()) as i64,
        at_exp: super::token_exp(&t, now),
        at_iat: now,
        at: t.access_token,
        rt: t.refresh_token,
        idt: t.id_token,
    };
    let had_second = jar.session_2.is_some();
    let sealed = match (cfg.store, &gw.sessions.store) {
        (crate::config::SessionStore::Cookie, _) => seal_session(rt, &session, now, had_second),
        (crate::config::SessionStore::Redis, Some(db)) => {
            let handle = super::store::Handle::new(&session.id);
            if let Err(e) = super::store::save(db, &handle, &session, now).await {
                tracing::warn!(error = %e, "login failed: the session could not be written to Redis");
                return Ok(with_clear(page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again shortly",
                    "Your session could not be stored. Try again in a moment.",
                )));
            }
            let plain = serde_json::to_vec(&handle).unwrap_or_default();
            super::seal_cookie(rt, &plain, session.exp - now, had_second)
        }
        (crate::config::SessionStore::Redis, None) => {
            return Err(ProxyError::BadRequest("store = \"redis\" needs [redis]"))
        }
    };
    match sealed {
        Ok(cookies) => {
            gw.metrics.sessions.with_label_values(&["login"]).inc();
            let mut res = redirect(StatusCode::FOUND, &tx.to);
            for c in cookies {
                res.headers_mut().append(header::SET_COOKIE, c);
            }
            Ok(with_clear(res))
        }
        Err(len) => {
            gw.metrics.sessions.with_label_values(&["too_large"]).inc();
            tracing::warn!(
                bytes = len,
                "a session was refused at login: it does not fit two cookies"
            );
            Ok(with_clear(page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Session too large",
                &format!(
                    "You signed in, but your session is too large to keep in browser cookies ({len} bytes; at most {} fit in two cookies), so this gateway refused it rather than let the browser drop it. The administrator can set store = \"redis\" in [session], or ask the identity provider for smaller tokens (fewer scopes or claims).",
                    2 * cookie::MAX_COOKIE_BYTES - cookie::SESSION_COOKIE.len() - cookie::SESSION_COOKIE_2.len() - 2
                ),
            )))
        }
    }
}

/// True when a logout request may come from another site: its `Origin` is another origin, or
/// `Sec-Fetch-Site` says cross-site or same-site. A request with neither is not a browser's.
fn cross_origin(headers: &http::HeaderMap, origin: &str) -> bool {
    if let Some(o) = headers.get(header::ORIGIN) {
        if !o.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(origin)) {
            return true;
        }
    }
    headers
        .get("sec-fetch-site")
        .is_some_and(|s| s.as_bytes() == b"cross-site" || s.as_bytes() == b"same-site")
}

/// `POST /.jwtgate/logout`: clears the cookies, denylists the session's `sid`, revokes its
/// refresh token, and ends the provider's session (RP-initiated logout).
async fn logout(
    gw: &Gateway,
    cfg: &SessionConfig,
    rt: &Runtime,
    req: &Request<Incoming>,
    origin: &str,
) -> Result<Answer, ProxyError> {
    if cross_origin(req.headers(), origin) {
        return Ok(page(
            StatusCode::FORBIDDEN,
            "Logout refused",
            "A logout must come from a page of this site.",
        ));
    }
    let now = unix_now();
    let after = cfg
        .post_logout_redirect
        .clone()
        .unwrap_or_else(|| format!("{origin}/"));
    let jar = cookie::jar(req.headers());
    let session = match cookie::session_value(&jar) {
        Some(v) => gw.sessions.read(rt, cfg, &v).await.ok().flatten(),
        None => None,
    };
    let mut location = after.clone();
    if let Some((s, handle)) = &session {
        if let (Some(h), Some(db)) = (handle, &gw.sessions.store) {
            if let Err(e) = super::store::delete(db, h).await {
                tracing::warn!(error = %e, "logout: the session could not be deleted from Redis");
            }
        }
        gw.metrics.sessions.with_label_values(&["logout"]).inc();
        // Without a sid only this session's cookie is cleared: a sub entry would log the user
        // out everywhere, which a logout of one browser does not ask for.
        if let Some(sid) = &s.sid {
            let entry = Entry {
                issuer: rt.issuer_name.clone(),
                kind: Kind::Sid,
                id: sid.clone(),
                before: Some(unix_secs(now + 1)),
                until: Some(unix_secs(s.exp.max(now) + 60)),
            };
            if let Err(e) = gw.denylist.revoke(entry).await {
                tracing::warn!(error = %e, "logout: the session's sid could not be denylisted");
            }
        }
        match gw.sessions.discovery(rt).await {
            Ok(d) => {
                if let Some(refresh_token) = &s.rt {
                    rt.client.revoke(&d, refresh_token).await;
                }
                if let Some(end) = &d.end_session_endpoint {
                    let mut u = end.clone();
                    u.push(if u.contains('?') { '&' } else { '?' });
                    u.push_str(&format!(
                        "client_id={}&post_logout_redirect_uri={}",
                        enc(&cfg.client_id),
                        enc(&after)
                    ));
                    if let Some(idt) = &s.idt {
                        u.push_str(&format!("&id_token_hint={}", enc(idt)));
                    }
                    location = u;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "logout: the provider's discovery document could not be fetched; its session stays")
            }
        }
    }
    let mut res = redirect(StatusCode::SEE_OTHER, &location);
    for c in cookie::clear_session() {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(res)
}

/// `POST /.jwtgate/backchannel-logout` (OIDC Back-Channel Logout 1.0): a `logout_token` signed
/// by the provider names a `sid` or `sub`, which is denylisted.
async fn backchannel(
    gw: &Gateway,
    snap: &Snapshot,
    cfg: &SessionConfig,
    rt: &Runtime,
    req: Request<Incoming>,
) -> Result<Answer, ProxyError> {
    let bad = |why: &str| {
        let mut a =
            crate::proxy::answer::json_answer(StatusCode::BAD_REQUEST, "invalid_request", why);
        a.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        a
    };
    let unavailable = |why: &str| {
        let mut a = crate::proxy::answer::json_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            why,
        );
        a.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        a
    };
    if !cfg.backchannel_logout {
        return Err(ProxyError::NotFound);
    }
    let body = match Limited::new(req.into_body(), MAX_LOGOUT_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(bad("the body could not be read or is too large")),
    };
    let body = String::from_utf8_lossy(&body);
    let Some(token) = query_param(Some(&body), "logout_token") else {
        return Ok(bad("the body has no logout_token"));
    };
    let now = unix_now();
    let target = match oidc::verify_logout_token(
        &token,
        &rt.logout_issuer,
        snap.config.limits.max_token_bytes,
        now,
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "a back-channel logout token was refused");
            return Ok(bad(&format!("the logout token is not valid: {e}")));
        }
    };
    // OIDC Back-Channel Logout §2.6: a logout token is accepted once (its jti, for as long as
    // its iat is acceptable).
    if let Some(jti) = &target.jti {
        let ns = format!("logout:{}", rt.issuer);
        let leeway = rt.logout_issuer[0].config.leeway.as_secs() as i64;
        let until = unix_secs(now + oidc::LOGOUT_TOKEN_MAX_AGE_SECS + leeway);
        match gw.replay.first_use(&ns, jti, until, WhenDown::Local).await {
            Ok(true) => {}
            Ok(false) => return Ok(bad("the logout token was used before (its jti)")),
            Err(e) => {
                tracing::warn!(error = %e, "back-channel logout: the logout token's jti cannot be checked");
                return Ok(unavailable(
                    "the logout token cannot be checked for replay; retry",
                ));
            }
        }
    }
    let (kind, id) = match (target.sid, target.sub) {
        (Some(sid), _) => (Kind::Sid, sid),
        (None, Some(sub)) => (Kind::Sub, sub),
        // verify_logout_token requires one of them.
        (None, None) => return Ok(bad("the logout token names neither sid nor sub")),
    };
    let entry = Entry {
        issuer: rt.issuer_name.clone(),
        kind,
        id,
        before: Some(unix_secs(now + 1)),
        until: Some(unix_secs(now + cfg.lifetime.as_secs() as i64 + 60)),
    };
    if let Err(e) = gw.denylist.revoke(entry).await {
        tracing::warn!(error = %e, "back-channel logout: the revocation could not be recorded");
        return Ok(unavailable("the logout could not be recorded; retry"));
    }
    gw.metrics
        .sessions
        .with_label_values(&["backchannel_logout"])
        .inc();
    let mut res = http::Response::new(Full::new(Bytes::new()));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `GET /.jwtgate/session`: `{"sub", "expires_at"}` of a live session, or 401.
async fn session_info(
    gw: &Gateway,
    snap: &Snapshot,
    cfg: &SessionConfig,
    rt: &Runtime,
    req: &Request<Incoming>,
) -> Answer {
    let now = unix_now();
    let lookup = gw
        .sessions
        .lookup(
            rt,
            cfg,
            &snap.config,
            &gw.metrics,
            &gw.denylist,
            req.headers(),
            now,
        )
        .await;
    let mut res = match &lookup.active {
        Some(s) => {
            let body = serde_json::json!({ "sub": s.sub, "expires_at": s.exp });
            let mut res = http::Response::new(Full::new(Bytes::from(body.to_string())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        None => crate::proxy::answer::json_answer(
            StatusCode::UNAUTHORIZED,
            "login_required",
            "there is no valid session",
        ),
    };
    let cookies = lookup
        .active
        .map(|a| a.set_cookies)
        .unwrap_or(lookup.set_cookies);
    for c in cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

//! The request path, top to bottom in [`Gateway::handle_inner`]: snapshot -> route -> token ->
//! verify -> strip and add headers -> upstream -> answer.

pub mod answer;
pub mod bearer;
pub mod body;
pub mod cors;
mod defenses;
pub mod dpop;
pub mod headers;
pub mod pool;
pub mod upstream;

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use std::sync::Arc;

use crate::auth::cache::TokenCache;
use crate::auth::{self, claims};
use crate::config::AuthMode;
use crate::metrics::Metrics;
use crate::replay::ReplayCache;
use crate::routes::normalize_host;
use crate::server::ConnInfo;
use crate::session;
use crate::state::{Shared, Snapshot};
use crate::store::Store;
use crate::unix_now;
pub use answer::{ProxyError, UpstreamKind};
use bearer::Source;

/// The response body: the gateway's own answer, or the upstream's, streamed.
pub type Body = Either<Full<Bytes>, pool::ResponseBody>;

/// What the access log records about one request.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Index of the route, when one matched.
    pub route: Option<usize>,
    /// The normalised path, once known (the log never shows the raw one or the query).
    pub path: Option<String>,
    /// The request's authority, as sent.
    pub host: Option<HeaderValue>,
    /// `ok`, `none` (not checked), or the failure reason.
    pub auth: &'static str,
    pub upstream_ms: Option<f64>,
    pub upstream_status: Option<u16>,
    pub upstream_error: Option<&'static str>,
    /// True when the gateway answered a CORS preflight itself.
    pub preflight: bool,
}

/// The shared state of the traffic listener.
pub struct Gateway {
    pub state: Shared,
    pub metrics: Metrics,
    /// The shared Redis (`[redis]`), if any.
    pub store: Option<Arc<Store>>,
    /// Used-once ids: DPoP proof `jti`s and one-time tokens.
    pub replay: ReplayCache,
    cache: Option<TokenCache>,
    cache_hits: prometheus::IntCounter,
    cache_misses: prometheus::IntCounter,
    /// Browser session state that outlives reloads (refreshes in flight, discovery).
    pub sessions: crate::session::Sessions,
    /// Identity assertions already signed, reused per token and route.
    assertions: crate::assertion::AssertionCache,
    /// Rate limits shared through `store`, with the local fallback's outage state.
    shared_limits: crate::ratelimit::SharedLimits,
    /// `[anomaly]`: where each token was used from (issue 20).
    anomalies: crate::anomaly::Anomalies,
    /// Revoked tokens, checked after verification (cache hits included).
    pub denylist: Arc<crate::denylist::Denylist>,
}

/// Memory budget of the verified-token cache.
const TOKEN_CACHE_BYTES: u64 = 32 << 20;
/// Bounds of the identity-assertion cache: entries, and memory (tokens plus assertions).
const ASSERTION_CACHE_ENTRIES: usize = 10_000;
const ASSERTION_CACHE_BYTES: u64 = 16 << 20;

impl Gateway {
    /// A gateway reading `state` and recording into `metrics`.
    pub fn new(state: Shared, metrics: Metrics, store: Option<Arc<Store>>) -> Gateway {
        let entries = state.load().config.limits.token_cache_entries;
        Gateway {
            replay: ReplayCache::new(store.clone()),
            sessions: crate::session::Sessions::new(store.clone()),
            store,
            cache: (entries > 0).then(|| TokenCache::new(entries, TOKEN_CACHE_BYTES)),
            cache_hits: metrics.token_cache.with_label_values(&["hit"]),
            cache_misses: metrics.token_cache.with_label_values(&["miss"]),
            assertions: crate::assertion::AssertionCache::new(
                ASSERTION_CACHE_ENTRIES,
                ASSERTION_CACHE_BYTES,
            ),
            shared_limits: crate::ratelimit::SharedLimits::default(),
            anomalies: crate::anomaly::Anomalies::new(metrics.token_anomalies.clone()),
            denylist: Arc::new(crate::denylist::Denylist::new(
                state.clone(),
                metrics.clone(),
            )),
            state,
            metrics,
        }
    }

    /// This gateway reading `denylist` (the app's, followed while serving).
    pub fn with_denylist(mut self, denylist: Arc<crate::denylist::Denylist>) -> Gateway {
        self.denylist = denylist;
        self
    }

    /// Answers one request, never with an error: failures become their answer, and every
    /// request leaves one access-log line and its metrics, also when its client goes away.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
        let _in_flight = InFlight::new(&self.metrics.in_flight);
        let mut rec = Record {
            gw: self,
            snapshot: self.state.load_full(),
            conn,
            start: Instant::now(),
            request_id: headers::request_id(req.headers()),
            method: req.method().clone(),
            trace: req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(trace_id)
                .and_then(|t| <[u8; 32]>::try_from(t.as_bytes()).ok()),
            outcome: Outcome {
                auth: "none",
                ..Outcome::default()
            },
            status: None,
        };
        let snapshot = rec.snapshot.clone();
        // Kept for CORS, which answers by the request's origin.
        let origin = req.headers().get(header::ORIGIN).cloned();
        let result = self
            .handle_inner(&snapshot, req, conn, &rec.request_id, &mut rec.outcome)
            .await;
        let mut res = match result {
            Ok(res) => res,
            Err(e) => {
                if let Some(a) = e.auth_error() {
                    rec.outcome.auth = a.reason().as_str();
                }
                if let ProxyError::Upstream { kind } = &e {
                    rec.outcome.upstream_error = Some(kind.as_str());
                }
                e.response(&rec.request_id).map(Either::Left)
            }
        };
        // CORS on actual answers, the gateway's own (401, 403, 429, ...) included, so a
        // browser can read them; preflight answers carry their own.
        if let Some(cors) = rec
            .outcome
            .route
            .and_then(|i| snapshot.config.routes[i].cors.as_ref())
            .filter(|_| !rec.outcome.preflight)
        {
            cors::decorate(cors, res.headers_mut(), origin.as_ref());
        }
        res.headers_mut()
            .insert(headers::X_REQUEST_ID.clone(), rec.request_id.clone());
        // Every answer of a route, the gateway's own included; none before a route is chosen.
        if let Some(route) = rec.outcome.route.map(|i| &snapshot.config.routes[i]) {
            defenses::apply_response_headers(route, res.headers_mut());
        }
        rec.status = Some(res.status());
        res
    }

    async fn handle_inner(
        &self,
        snap: &Snapshot,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, ProxyError> {
        check_request(&req)?;
        // Taken before the request is forwarded: the client side of a WebSocket tunnel.
        let client_upgrade = is_websocket_upgrade(req.headers(), req.version())
            .then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();

        // Route: the normalised path is both what is matched and what is forwarded.
        let normalized = crate::path::normalize(parts.uri.path())
            .map_err(|_| ProxyError::BadRequest("the request path is malformed or ambiguous"))?;
        // Kept in the outcome for the access log, which never shows the raw path or query.
        let path = outcome.path.insert(normalized).as_str();
        let host_value = request_host(&parts)?;
        outcome.host = host_value.clone();
        let host = match &host_value {
            Some(h) => normalize_host(
                h.to_str()
                    .map_err(|_| ProxyError::BadRequest("the Host header is not ASCII"))?,
            )
            .ok_or(ProxyError::BadRequest(
                "the Host header is not a valid host",
            ))?,
            None => "".into(),
        };
        // The session layer's reserved paths, on every host: never forwarded.
        if snap.config.session.is_some() && path.starts_with(crate::session::RESERVED_PREFIX) {
            let req = Request::from_parts(parts, body);
            let host = host_value.as_ref();
            let res = crate::session::routes::handle(self, snap, req, path, host, conn).await?;
            return Ok(res.map(Either::Left));
        }
        // A CORS preflight is routed by the method it asks about, and answered here when that
        // route has [route.cors]: never forwarded, no token needed.
        if let Some(asked) = cors::preflight_method(&parts.method, &parts.headers) {
            let with_cors = |m: &http::Method| {
                let i = snap
                    .table
                    .route(&snap.config.routes, &host, path, m)
                    .ok()
                    .flatten()?;
                Some((i, snap.config.routes[i].cors.as_ref()?))
            };
            // No route serves the asked method here: a CORS route of this path refuses it.
            let answer = match with_cors(&asked) {
                Some((i, c)) => Some((i, cors::preflight(c, &parts.headers, &asked))),
                None => with_cors(&parts.method)
                    .or_else(|| with_cors(&http::Method::GET))
                    .map(|(i, _)| (i, cors::refused("no route serves this method here"))),
            };
            if let Some((i, res)) = answer {
                outcome.route = Some(i);
                outcome.preflight = true;
                return Ok(res.map(Either::Left));
            }
        }
        // Every common upstream reading of the path must name this route (routes::route).
        let idx = snap
            .table
            .route(&snap.config.routes, &host, path, &parts.method)
            .map_err(|e| ProxyError::BadRequest(e.message()))?
            .ok_or(ProxyError::NotFound)?;
        let route = &snap.config.routes[idx];
        outcome.route = Some(idx);
        let up = &route.upstream;
        let query_len = parts.uri.query().map_or(0, str::len);
        let mut pq = String::with_capacity(up.base_path.len() + path.len() + 1 + query_len);
        pq.push_str(&up.base_path);
        pq.push_str(path);

        // Token: found, verified, checked against the route's requirements.
        // Sender-constrained tokens: the proof is taken out on every route (it never reaches
        // the upstream), and a token's binding is checked on every request, cache hit or not.
        let proof = dpop::take_proof(&mut parts.headers)?;
        let found = bearer::find(&parts.headers, parts.uri.query(), route)?;
        let mut session_cookies = Vec::new();
        let mut session_answer = None;
        let mut fresh_nonce = None;
        // Everything but the rate limit and one_time, as one result: the limit is decided
        // before a failure is answered (failed attempts count too), one_time after it (a
        // refused request never uses up its jti).
        let now = unix_now();
        let verified: Result<Option<auth::Verified>, ProxyError> = async {
            match (route.auth, &found) {
                (AuthMode::None, _) => Ok(None),
                (AuthMode::Required, None) => Err(auth::AuthError::Missing.into()),
                (AuthMode::Optional, None) => Ok(None),
                (AuthMode::Session, None) => {
                    let host = host_value.as_ref();
                    match self
                        .session_auth(snap, route, &parts, path, host, conn, request_id)
                        .await?
                    {
                        SessionAuth::Verified(v, cookies) => {
                            session_cookies = cookies;
                            Ok(Some(v))
                        }
                        // Answered after the rate limit, which counts it by client address.
                        SessionAuth::Answer(a) => {
                            session_answer = Some(a);
                            Ok(None)
                        }
                    }
                }
                (_, Some((token, source))) => {
                    let presented = dpop::Presented {
                        parts: &parts,
                        conn,
                        host: host_value.as_ref(),
                        token,
                        source: *source,
                        proof: proof.as_ref(),
                    };
                    // A refusal of a DPoP request is a DPoP challenge (RFC 9449 §7.1).
                    let challenge = |e: ProxyError| dpop::challenge(*source, e, snap, route);
                    let v = self
                        .verify(snap, token, &route.issuers)
                        .await
                        .map_err(challenge)?;
                    self.check_denylist(snap, &v).map_err(challenge)?;
                    self.check_anomaly(snap, &v, token, conn, &parts.headers, now)
                        .map_err(challenge)?;
                    fresh_nonce = presented
                        .check_binding(&self.replay, snap, route, &v)
                        .await?;
                    claims::check_requirements(&v.claims, &route.require)
                        .map_err(|e| challenge(e.into()))?;
                    self.check_step_up(snap, route, &v, now)
                        .map_err(challenge)?;
                    Ok(Some(v))
                }
            }
        }
        .await;
        // Rate limit, before an auth failure is answered: requests without a valid token are
        // limited too, by client address.
        if let Some(limiter) = snap.limiters.get(idx).and_then(Option::as_ref) {
            let key = verified
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .and_then(|v| claims::claim(&v.claims, &limiter.config.key))
                .map(crate::ratelimit::LimitKey::Claim)
                .unwrap_or_else(|| {
                    crate::ratelimit::LimitKey::Addr(
                        snap.headers.client_addr(conn.peer.ip(), &parts.headers),
                    )
                });
            let decision = match &self.store {
                Some(store) => {
                    self.shared_limits
                        .check(store, limiter, &route.name, key)
                        .await
                }
                None => limiter.check_local(key),
            };
            if let d @ crate::ratelimit::Decision::Limited { retry_after } = decision {
                if let Some(c) = &snap.route_metrics[idx].rate_limited {
                    c.inc();
                }
                return Err(ProxyError::RateLimited {
                    retry_after_secs: crate::ratelimit::whole_secs(retry_after),
                    policy: limiter.policy.clone(),
                    state: limiter.state_header(d),
                });
            }
        }
        let verified = verified?;
        if let Some(a) = session_answer {
            return Ok(a.map(Either::Left));
        }
        if let (Some(v), Some((_, source))) = (&verified, &found) {
            self.check_one_time(snap, route, v)
                .await
                .map_err(|e| dpop::challenge(*source, e, snap, route))?;
        }
        let mut claim_values = Vec::with_capacity(route.claim_headers.len());
        if let Some(v) = &verified {
            outcome.auth = "ok";
            for (name, path) in &route.claim_headers {
                if let Some(value) = claims::header_value(&v.claims, path)? {
                    claim_values.push((name, value));
                }
            }
        }

        // Identity assertion: signed for a verified token (reused while fresh); inserted after
        // strip_request has removed any client copy of its header.
        let assertion = match (&route.assertion, &snap.assertion, &verified, &found) {
            (Some(a), Some(signer), Some(v), Some((token, _))) => self
                .assertions
                .get_or_sign(signer, snap.generation, idx, a, token, &v.claims)
                .map(|value| (signer.header.clone(), value)),
            _ => None,
        };

        // Headers: remove what a client may not send, then add ours.
        let token_source = found.as_ref().map(|(_, s)| *s);
        let query = match (token_source, &route.token_query) {
            (Some(Source::Query), Some(param)) if !route.forward_token => parts
                .uri
                .query()
                .and_then(|q| bearer::query_without(q, param)),
            _ => parts.uri.query().map(str::to_owned),
        };
        let websocket = client_upgrade.is_some() && route.websocket;
        if snap.config.session.is_some() {
            crate::session::cookie::strip_own(&mut parts.headers);
        }
        snap.headers.prepare(
            &mut parts.headers,
            &headers::Forward {
                route,
                token_source,
                tls: conn.tls,
                peer: conn.peer.ip(),
                client_ip: &conn.peer_ip,
                client_cert: conn.client_cert_header.as_ref(),
                host: host_value.as_ref(),
                websocket,
                request_id,
            },
            claim_values,
        );
        if let Some((name, value)) = assertion {
            parts.headers.insert(name, value);
        }

        // Upstream.
        if let Some(q) = &query {
            pq.push('?');
            pq.push_str(q);
        }
        parts.uri =
            Uri::builder()
                .scheme(up.scheme.clone())
                .authority(up.authority.clone())
                .path_and_query(PathAndQuery::try_from(pq).map_err(|_| {
                    ProxyError::BadRequest("the request target cannot be forwarded")
                })?)
                .build()
                .map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))?;
        parts.version = http::Version::HTTP_11;
        let body = body::IdleTimeout::new(body, snap.config.limits.body_read_timeout);
        let upstream_req = Request::from_parts(parts, body);

        let client = snap.clients.for_route(idx).ok_or(ProxyError::NotFound)?;
        let sent = Instant::now();
        let result = tokio::time::timeout(
            snap.config.limits.upstream_timeout,
            client.request(upstream_req),
        )
        .await;
        outcome.upstream_ms = Some(sent.elapsed().as_secs_f64() * 1e3);
        let mut res = match result {
            Err(_) => {
                return Err(ProxyError::Upstream {
                    kind: UpstreamKind::Timeout,
                })
            }
            Ok(Err(e)) if body::is_client_fault(&e) => {
                tracing::debug!(route = %route.name, error = %e, "client request body failed");
                return Err(ProxyError::BadRequest(
                    "the request body is malformed (bad chunked framing) or ended early",
                ));
            }
            Ok(Err(e)) => {
                let kind = e.kind();
                tracing::warn!(route = %route.name, error = %e, "upstream request failed");
                return Err(ProxyError::Upstream { kind });
            }
            Ok(Ok(res)) => res,
        };
        outcome.upstream_status = Some(res.status().as_u16());
        if websocket && res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut res);
                tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
            }
            // The 101 keeps its Upgrade and Connection headers: they are the protocol switch.
            return Ok(res.map(Either::Right));
        }
        headers::remove_connection_listed(res.headers_mut());
        for c in session_cookies {
            res.headers_mut().append(header::SET_COOKIE, c);
        }
        if let Some(n) = fresh_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            // RFC 9449 §8.2: the next nonce, before the one the client holds expires.
            res.headers_mut().insert(dpop::DPOP_NONCE.clone(), n);
        }
        Ok(res.map(Either::Right))
    }

    /// `auth = "session"` without a bearer token: the request's session, refreshed when due,
    /// its token verified like a bearer token (cache included); without one, a browser
    /// navigation is sent to log in and anything else gets a 401.
    #[allow(clippy::too_many_arguments)]
    async fn session_auth(
        &self,
        snap: &Snapshot,
        route: &crate::config::RouteConfig,
        parts: &http::request::Parts,
        path: &str,
        host: Option<&HeaderValue>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
    ) -> Result<SessionAuth, ProxyError> {
        let (Some(cfg), Some(rt)) = (&snap.config.session, &snap.session) else {
            return Err(auth::AuthError::Missing.into());
        };
        let now = unix_now();
        let lookup = self
            .sessions
            .lookup(
                rt,
                cfg,
                &snap.config,
                &self.metrics,
                &self.denylist,
                &parts.headers,
                now,
            )
            .await;
        let mut clear = lookup.set_cookies;
        let mut opts = session::oidc::LoginOptions::default();
        if let Some(active) = lookup.active {
            let verified = if active.id_token {
                auth::verify_live(
                    &active.token,
                    &rt.id_issuer,
                    &[0],
                    snap.config.limits.max_token_bytes,
                    now,
                )
                .await
                // The ID token's issuer is the session's: every later check reads its config.
                .map(|(v, _)| auth::Verified {
                    issuer: cfg.issuer,
                    ..v
                })
                .map_err(ProxyError::from)
            } else {
                self.verify(snap, &active.token, &route.issuers).await
            };
            // The checks a bearer token gets after verification (one_time and the rate limit
            // follow in handle_inner).
            let checked = verified.and_then(|v| {
                self.check_denylist(snap, &v)?;
                self.check_anomaly(snap, &v, &active.token, conn, &parts.headers, now)?;
                claims::check_requirements(&v.claims, &route.require)?;
                self.check_step_up(snap, route, &v, now)?;
                Ok(v)
            });
            match checked {
                Ok(v) => return Ok(SessionAuth::Verified(v, active.set_cookies)),
                // RFC 9470 for a browser: log in again, asking the provider for what the route
                // needs (max_age, acr_values); the session stays until the new one replaces it.
                Err(ProxyError::Auth(auth::AuthError::StepUp(f)))
                    if session::is_navigation(&parts.method, &parts.headers) =>
                {
                    opts = session::oidc::LoginOptions {
                        max_age: f.max_age,
                        acr_values: f.acr_values.clone(),
                    };
                }
                Err(
                    e @ ProxyError::Auth(
                        auth::AuthError::StepUp(_) | auth::AuthError::Insufficient(_),
                    ),
                ) => return Err(e),
                // A session whose token no longer passes (expired and not refreshable, keys
                // rotated away, revoked, a theft signal) is over: log in again.
                Err(ProxyError::Auth(e)) => {
                    tracing::debug!(error = %e, "a session's token no longer passes");
                    clear = session::cookie::clear_session().to_vec();
                }
                Err(e) => return Err(e),
            }
        }
        let mut answer = if lookup.unavailable {
            session::unavailable_page(
                "The identity provider cannot be reached to renew your session.",
            )
        } else if session::is_navigation(&parts.method, &parts.headers) {
            let origin = session::origin(cfg, host, conn.tls).ok_or(ProxyError::BadRequest(
                "the request has no Host to build the login callback from",
            ))?;
            let to = session::return_path(path, parts.uri.query());
            match session::login_redirect(&self.sessions, rt, cfg, &origin, to, &opts, now).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a login: the identity provider's discovery failed");
                    session::unavailable_page(
                        "The identity provider cannot be reached to log you in.",
                    )
                }
            }
        } else {
            ProxyError::Auth(auth::AuthError::Missing).response(request_id)
        };
        for c in clear {
            answer.headers_mut().append(header::SET_COOKIE, c);
        }
        Ok(SessionAuth::Answer(answer))
    }
}

/// What the session layer made of a request without a bearer token.
enum SessionAuth {
    /// A live session: its verified token, and cookies for the answer.
    Verified(auth::Verified, Vec<HeaderValue>),
    /// The gateway answers: a login redirect, a 401, or a 503.
    Answer(session::Answer),
}

/// Refuses, before routing, what no route may forward: CONNECT (a tunnel carries anything
/// past routing); TRACE and TRACK (an upstream that implements them reflects the request, the
/// gateway's claim headers and certificate header included), each in any case since some
/// servers upper-case methods; an HTTP/1.1 request without Host (RFC 9112 §3.2; HTTP/1.0 may
/// omit it); an absolute-form target of a scheme other than http or https; raw non-ASCII bytes
/// in the query (the path has its own check); a transfer coding other than one final
/// `chunked`, which hyper would drop silently (501, RFC 9112 §6.1). `identity` (a coding that
/// changes nothing, once registered) is let through: dropping it loses no byte.
fn check_request<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let method = req.method().as_str();
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(ProxyError::BadRequest(
            "the CONNECT method is not supported: the gateway never opens a tunnel",
        ));
    }
    if method.eq_ignore_ascii_case("TRACE") || method.eq_ignore_ascii_case("TRACK") {
        return Err(ProxyError::BadRequest(
            "the TRACE and TRACK methods are not supported: they would reflect the gateway's headers",
        ));
    }
    if req.version() == http::Version::HTTP_11 && !req.headers().contains_key(header::HOST) {
        return Err(ProxyError::BadRequest(
            "an HTTP/1.1 request must have a Host header",
        ));
    }
    if let Some(scheme) = req.uri().scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(ProxyError::BadRequest(
                "the request target's scheme is neither http nor https",
            ));
        }
    }
    if req.uri().query().is_some_and(|q| !q.is_ascii()) {
        return Err(ProxyError::BadRequest(
            "the request target's query holds raw non-ASCII bytes: percent-encode them",
        ));
    }
    let mut chunked = 0;
    for v in req.headers().get_all(header::TRANSFER_ENCODING) {
        let v = v
            .to_str()
            .map_err(|_| ProxyError::BadRequest("the Transfer-Encoding header is not ASCII"))?;
        for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("identity") {
                continue;
            }
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(ProxyError::NotImplemented(
                    "the only transfer coding the gateway implements is chunked",
                ));
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(ProxyError::BadRequest(
            "the request is chunked more than once",
        ));
    }
    Ok(())
}

/// Status recorded for a request whose client went away before it was answered (nginx's
/// convention).
const CLIENT_CLOSED: http::StatusCode = match http::StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => panic!("499 is a valid status code"),
};

/// One request's metrics and access-log line, written when it is dropped: at the end of
/// `handle`, or when hyper drops the request because its client disconnected.
struct Record<'a> {
    gw: &'a Gateway,
    snapshot: Arc<Snapshot>,
    conn: &'a ConnInfo,
    start: Instant,
    request_id: HeaderValue,
    method: http::Method,
    trace: Option<[u8; 32]>,
    outcome: Outcome,
    /// The answer's status; `None` until answered.
    status: Option<http::StatusCode>,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let o = &self.outcome;
        let m = &self.gw.metrics;
        let route = o
            .route
            .map_or("", |i| self.snapshot.config.routes[i].name.as_str());
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        let elapsed = self.start.elapsed();
        if o.auth != "none" && o.auth != "ok" {
            m.auth_failures.with_label_values(&[route, o.auth]).inc();
        }
        if let Some(kind) = o.upstream_error {
            m.upstream_errors.with_label_values(&[route, kind]).inc();
        }
        match o.route.and_then(|i| self.snapshot.route_metrics.get(i)) {
            Some(rm) => {
                rm.count(m, route, status);
                rm.duration.observe(elapsed.as_secs_f64());
            }
            None => {
                m.requests
                    .with_label_values(&[route, status.as_str()])
                    .inc();
                m.request_duration
                    .with_label_values(&[route])
                    .observe(elapsed.as_secs_f64());
            }
        }
        crate::logging::access(&crate::logging::AccessLine {
            request_id: self.request_id.to_str().unwrap_or(""),
            client: self.conn.peer_ip.to_str().unwrap_or_default(),
            host: o.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
            trace_id: self
                .trace
                .as_ref()
                .and_then(|t| std::str::from_utf8(t).ok()),
            route,
            method: self.method.as_str(),
            path: o.path.as_deref().unwrap_or("<invalid>"),
            status: status.as_u16(),
            duration_ms: elapsed.as_secs_f64() * 1e3,
            upstream_ms: o.upstream_ms,
            upstream_status: o.upstream_status,
            upstream_error: o.upstream_error,
            auth: o.auth,
        });
    }
}

/// Counts a request in flight until it is answered or its client goes away.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn new(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Gateway {
    /// Verifies a token, through the verified-token cache when it has a usable entry; a kid the
    /// issuer's remote keys do not have triggers one (shared, rate-limited) refetch that this
    /// request waits for, so a key rotation never costs a 401.
    pub(crate) async fn verify(
        &self,
        snap: &Snapshot,
        token: &str,
        accepted: &[usize],
    ) -> Result<auth::Verified, ProxyError> {
        let now = unix_now();
        if let Some(cache) = &self.cache {
            if let Some(hit) = cached(cache, snap, token, accepted, now) {
                self.cache_hits.inc();
                let issuer = &snap.issuers[hit.issuer];
                auth::check_claims(&hit.claims, &issuer.config, now)?;
                return Ok(hit);
            }
            self.cache_misses.inc();
        }
        let limit = snap.config.limits.max_token_bytes;
        let (verified, keys) = auth::verify_live(token, &snap.issuers, accepted, limit, now)
            .await
            .map_err(ProxyError::from)?;
        let issuer = &snap.issuers[verified.issuer];
        if let Some(cache) = &self.cache {
            cache.insert(
                token,
                &issuer.config.issuer,
                snap.generation,
                &keys,
                verified.claims.clone(),
            );
        }
        Ok(verified)
    }
}

impl Gateway {
    /// Revocation, after verification: a Redis-fed copy older than `max_staleness` refuses
    /// with 503 (revoked tokens cannot be ruled out), an entry that covers the token with 401.
    fn check_denylist(&self, snap: &Snapshot, v: &auth::Verified) -> Result<(), ProxyError> {
        if let Some(max) = snap.config.denylist.as_ref().and_then(|d| d.max_staleness) {
            if let Some(retry_after_secs) = self.denylist.stale(max) {
                return Err(ProxyError::DenylistStale { retry_after_secs });
            }
        }
        let issuer = &snap.issuers[v.issuer].config.name;
        match self.denylist.check_claims(issuer, &v.claims) {
            Some(_) => Err(auth::AuthError::Revoked.into()),
            None => Ok(()),
        }
    }
}

/// A cache entry that still applies: made by this snapshot, for an issuer this route accepts,
/// with that issuer's current key set, before the token's `exp`.
fn cached(
    cache: &TokenCache,
    snap: &Snapshot,
    token: &str,
    accepted: &[usize],
    now: i64,
) -> Option<auth::Verified> {
    let c = cache.get(token)?;
    if c.generation != snap.generation || now as f64 >= c.expires {
        cache.remove(token);
        return None;
    }
    let &issuer = accepted
        .iter()
        .find(|&&i| snap.issuers[i].config.issuer == c.iss)?;
    let current = snap.issuers[issuer].keys.current()?;
    if !std::ptr::eq(c.keys.as_ptr(), Arc::as_ptr(&current)) {
        cache.remove(token);
        return None;
    }
    Some(auth::Verified {
        issuer,
        claims: c.claims.clone(),
    })
}

/// The trace id of a W3C `traceparent` (`version-traceid-parentid-flags`).
fn trace_id(tp: &str) -> Option<&str> {
    let id = tp.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// True for an HTTP/1.1 WebSocket handshake: `Connection: upgrade` and `Upgrade: websocket`.
fn is_websocket_upgrade(h: &http::HeaderMap, version: http::Version) -> bool {
    version == http::Version::HTTP_11
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
        && h.get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Copies bytes both ways between an upgraded client and upstream until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade did not complete");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "WebSocket tunnel closed with an error");
    }
}

/// The request's authority: the absolute-form target's or h2 `:authority` when present
/// (RFC 9112 §3.2.2 says it wins over Host), else the single Host header.
fn request_host(parts: &http::request::Parts) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest(
            "the request has more than one Host header",
        ));
    }
    if let Some(a) = parts.uri.authority() {
        // RFC 9113 §8.3.1: an HTTP/2 Host naming another entity than `:authority` is
        // malformed. (HTTP/1.1 absolute-form: RFC 9112 §3.2.2, the target's authority wins.)
        if parts.version == http::Version::HTTP_2 {
            if let Some(h) = first {
                let same = h
                    .to_str()
                    .ok()
                    .and_then(normalize_host)
                    .zip(normalize_host(a.as_str()))
                    .is_some_and(|(h, a)| h == a);
                if !same {
                    return Err(ProxyError::BadRequest(
                        "the Host header and :authority name different hosts",
                    ));
                }
            }
        }
        return HeaderValue::from_str(a.as_str())
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("the request authority is not valid"));
    }
    Ok(first.cloned())
}

//! `jwtgate explain`: a dry run of one request against a config. Which route matches and why,
//! every verification step with its result, and the exact headers the upstream would receive.
//! It runs the same functions as the request path; nothing is sent anywhere (a `jwks_url`
//! issuer may fetch its keys).

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use serde::Serialize;
use serde_json::Value;

use crate::auth::{self, claims, AuthError};
use crate::config::{AuthMode, HostMatch};
use crate::keys::family_name;
use crate::path::{has_prefix, normalize};
use crate::proxy::bearer::Source;
use crate::proxy::headers::Forward;
use crate::routes::normalize_host;
use crate::state::Snapshot;

/// One route and whether it could take the request.
#[derive(Debug, Serialize)]
pub struct RouteCheck {
    pub name: String,
    pub host: String,
    pub path_prefix: String,
    pub matched: bool,
    /// Why it matches or not.
    pub why: String,
}

/// One verification step.
#[derive(Debug, Serialize)]
pub struct Step {
    pub step: &'static str,
    /// `pass`, `fail` or `skipped`.
    pub result: &'static str,
    pub detail: String,
}

/// The whole dry run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub method: String,
    pub host: String,
    pub path: String,
    pub normalized_path: Option<String>,
    pub routes: Vec<RouteCheck>,
    pub route: Option<String>,
    pub route_reason: String,
    pub steps: Vec<Step>,
    /// The answer the client would get: `forwarded` or the status and error.
    pub outcome: String,
    pub status: u16,
    /// Headers the upstream would receive, in order, when the request is forwarded.
    pub upstream_headers: Vec<(String, String)>,
    pub upstream_url: Option<String>,
    /// The route's `response_headers`, set on every answer it gives (the gateway's too).
    pub response_headers: Vec<(String, String)>,
}

fn fmt_time(t: f64) -> String {
    // RFC 3339 ends at the last second of year 9999; a token may claim any number (and the
    // sum with UNIX_EPOCH would overflow), so anything outside prints as the number itself.
    const LAST_RFC3339_SECOND: f64 = 253_402_300_799.0;
    if !t.is_finite() || !(0.0..=LAST_RFC3339_SECOND).contains(&t) {
        return format!("{t}");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t as u64)).to_string()
}

fn relative(t: f64, now: i64) -> String {
    let d = t - now as f64;
    let span = humantime::format_duration(Duration::from_secs(d.abs() as u64));
    if d >= 0.0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// The step an error belongs to.
fn step_of(e: &AuthError) -> &'static str {
    match e {
        AuthError::Missing => "token",
        AuthError::TooLong { .. } | AuthError::MalformedJson(_) => "structure",
        AuthError::Header(_) => "header",
        AuthError::Typ(_) => "typ",
        AuthError::AlgorithmNotAllowed(_) => "algorithm",
        AuthError::WrongIssuer => "issuer",
        AuthError::UnknownKey | AuthError::TooManyKeys { .. } | AuthError::KeyTypeMismatch(_) => {
            "key"
        }
        AuthError::BadSignature => "signature",
        AuthError::Expired { .. }
        | AuthError::NotYetValid { .. }
        | AuthError::IssuedInFuture { .. } => "time",
        AuthError::WrongAudience => "audience",
        AuthError::UnsafeClaim { .. } => "claim headers",
        AuthError::Insufficient(_) => "requirements",
        AuthError::StepUp(_) => "step-up",
        AuthError::NoJti | AuthError::Replayed => "one-time",
        AuthError::Anomaly => "anomaly",
        AuthError::Revoked => "revocation",
        AuthError::DpopInvalid(_)
        | AuthError::DpopTime { .. }
        | AuthError::DpopNonce
        | AuthError::DpopReplay => "dpop",
        AuthError::BindingMismatch(_) | AuthError::DpopKeyMismatch => "binding",
        AuthError::Malformed(m) => {
            let starts = |p: &[&str]| p.iter().any(|p| m.starts_with(p));
            if starts(&["exp", "nbf", "iat", "a time claim"]) {
                "time"
            } else if starts(&["aud"]) {
                "audience"
            } else if starts(&["sub"]) {
                "subject"
            } else if starts(&["iss"]) {
                "issuer"
            } else {
                "structure"
            }
        }
    }
}

const STEPS: [&str; 18] = [
    "structure",
    "header",
    "issuer",
    "algorithm",
    "typ",
    "key",
    "signature",
    "time",
    "audience",
    "subject",
    "anomaly",
    "revocation",
    "binding",
    "dpop",
    "requirements",
    "step-up",
    "one-time",
    "claim headers",
];

/// Explains `method host path` with `token` (may be empty for "no token").
pub async fn explain(
    snap: &Snapshot,
    token: Option<&str>,
    method: &Method,
    host: &str,
    raw_path: &str,
) -> Report {
    explain_with(snap, None, token, None, method, host, raw_path).await
}

/// [`explain`], checking the token against `denylist` too (step `revocation`: which entry
/// revokes it), and for a token sent as `Authorization: DPoP` with the proof `dpop` (every
/// check of the request path but the replay cache, which a dry run must not fill).
pub async fn explain_with(
    snap: &Snapshot,
    denylist: Option<&crate::denylist::Denylist>,
    token: Option<&str>,
    dpop: Option<&str>,
    method: &Method,
    host: &str,
    raw_path: &str,
) -> Report {
    let now = crate::unix_now();
    let (raw_path, query) = raw_path
        .split_once('?')
        .map_or((raw_path, None), |(p, q)| (p, Some(q)));
    let mut report = Report {
        method: method.to_string(),
        host: host.to_owned(),
        path: raw_path.to_owned(),
        normalized_path: None,
        routes: Vec::new(),
        route: None,
        route_reason: String::new(),
        steps: Vec::new(),
        outcome: String::new(),
        status: 0,
        upstream_headers: Vec::new(),
        upstream_url: None,
        response_headers: Vec::new(),
    };
    let path = match normalize(raw_path) {
        Ok(p) => p,
        Err(e) => {
            report.outcome = format!("400 invalid_request: {e}");
            report.status = 400;
            return report;
        }
    };
    report.normalized_path = Some(path.clone());
    let Some(norm_host) = normalize_host(host) else {
        report.outcome = "400 invalid_request: the Host is not a valid host".into();
        report.status = 400;
        return report;
    };
    let routes = &snap.config.routes;
    // The same decision as traffic: every upstream reading of the path must agree.
    let decision = snap.table.route(routes, &norm_host, &path, method);
    let chosen = decision.unwrap_or(None);
    for (i, r) in routes.iter().enumerate() {
        let host_ok = match &r.host {
            None => Some("any host".to_owned()),
            Some(HostMatch::Exact(h)) if *h == *norm_host => Some(format!("host {h} matches")),
            Some(HostMatch::Wildcard(s))
                if norm_host.len() > s.len() && norm_host.ends_with(s.as_str()) =>
            {
                Some(format!("host *{s} matches"))
            }
            Some(_) => None,
        };
        let prefix_ok = has_prefix(&path, &r.path_prefix);
        let method_ok = r.methods.as_ref().is_none_or(|m| m.contains(method));
        let why = match (host_ok, prefix_ok, method_ok) {
            (None, _, _) => format!("host {norm_host} does not match"),
            (Some(_), false, _) => format!("path {path} is not under {}", r.path_prefix),
            (Some(_), true, false) => format!("method {method} is not in its methods"),
            (Some(h), true, true) if chosen == Some(i) => format!(
                "{h}; {} is under {}; chosen: the most specific host, then the longest path_prefix, then the first written",
                path, r.path_prefix
            ),
            (Some(h), true, true) => format!(
                "{h} and path is under {}, but route {:?} is more specific or written earlier",
                r.path_prefix,
                chosen.map_or("?", |c| routes[c].name.as_str())
            ),
        };
        report.routes.push(RouteCheck {
            name: r.name.clone(),
            host: match &r.host {
                None => "*".into(),
                Some(HostMatch::Exact(h)) => h.clone(),
                Some(HostMatch::Wildcard(s)) => format!("*{s}"),
            },
            path_prefix: r.path_prefix.clone(),
            matched: chosen == Some(i),
            why,
        });
    }
    if let Err(e) = decision {
        report.outcome = format!("400 invalid_request: {e}");
        report.status = 400;
        report.route_reason = e.to_string();
        return report;
    }
    let Some(idx) = chosen else {
        report.outcome = "404 not_found: no route matches".into();
        report.status = 404;
        report.route_reason = "no route matches host, path and method".into();
        return report;
    };
    let route = &routes[idx];
    report.route = Some(route.name.clone());
    report.route_reason = report.routes[idx].why.clone();
    report.response_headers = route
        .response_headers
        .iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), v)
        })
        .collect();

    let mut result: Result<Option<auth::Verified>, AuthError> = Ok(None);
    match (route.auth, token) {
        (AuthMode::None, _) => {
            report.steps.push(Step {
                step: "token",
                result: "skipped",
                detail: "auth = \"none\": no token is checked, no claim header is set".into(),
            });
        }
        (AuthMode::Optional, None) => report.steps.push(Step {
            step: "token",
            result: "skipped",
            detail: "auth = \"optional\" and no token: forwarded without claim headers".into(),
        }),
        (AuthMode::Required | AuthMode::Session, None) => result = Err(AuthError::Missing),
        (_, Some(t)) => {
            describe_token(&mut report.steps, snap, t, &route.issuers, now);
            result = verify(snap, t, &route.issuers, now).await;
            if let Ok(Some(_)) = &result {
                anomaly_step(&mut report.steps, snap);
            }
            if let (Ok(Some(v)), Some(d)) = (&result, denylist) {
                let issuer = &snap.issuers[v.issuer].config.name;
                match d.check_claims(issuer, &v.claims) {
                    None => report.steps.push(Step {
                        step: "revocation",
                        result: "pass",
                        detail: "no denylist entry covers the token".into(),
                    }),
                    Some(r) => {
                        report.steps.push(Step {
                            step: "revocation",
                            result: "fail",
                            detail: describe_revoked(issuer, &v.claims, &r),
                        });
                        result = Err(AuthError::Revoked);
                    }
                }
            }
            if let Ok(Some(v)) = &result {
                let scheme = if snap.config.listen.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                let facts = DryRequest {
                    method,
                    scheme,
                    host,
                    path: raw_path,
                    token: t,
                    dpop,
                };
                match dry_binding(snap, route, v, &facts, now) {
                    Ok(step) => report.steps.push(step),
                    Err(e) => result = Err(e),
                }
            }
            if let Ok(Some(v)) = &result {
                match claims::check_requirements(&v.claims, &route.require) {
                    Ok(()) => report.steps.push(Step {
                        step: "requirements",
                        result: "pass",
                        detail: if route.require.is_empty() {
                            "the route requires nothing more".into()
                        } else {
                            route
                                .require
                                .iter()
                                .map(|q| format!("{} has {}", q.claim.as_str(), q.values.join(" ")))
                                .collect::<Vec<_>>()
                                .join("; ")
                        },
                    }),
                    Err(e) => result = Err(e),
                }
            }
            if let Ok(Some(v)) = &result {
                if let Err(e) = route_defense_steps(&mut report.steps, snap, route, v, now) {
                    result = Err(e);
                }
            }
        }
    }
    let mut claim_values = Vec::new();
    if let Ok(Some(v)) = &result {
        for (name, path) in &route.claim_headers {
            match claims::header_value(&v.claims, path) {
                Ok(Some(value)) => claim_values.push((name, value)),
                Ok(None) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    // Mark the steps after a failure as not reached, and the failed one with its reason.
    if let Err(e) = &result {
        let failed = step_of(e);
        for s in report.steps.iter_mut() {
            if s.step == failed {
                s.result = "fail";
                s.detail = format!("{} — {e}", s.detail);
            }
        }
        if !report.steps.iter().any(|s| s.step == failed) {
            report.steps.push(Step {
                step: failed,
                result: "fail",
                detail: e.to_string(),
            });
        }
        let order = |n: &str| STEPS.iter().position(|s| *s == n).unwrap_or(0);
        let fail_at = order(failed);
        for s in report.steps.iter_mut() {
            if s.result == "pass" && order(s.step) > fail_at && s.step != "token" {
                s.result = "skipped";
            }
        }
        let err = crate::proxy::ProxyError::Auth(e.clone());
        report.status = err.status().as_u16();
        report.outcome = format!(
            "{} {}: {e} (metrics reason {})",
            report.status,
            err.code(),
            e.reason().as_str()
        );
        return report;
    }
    if !claim_values.is_empty() || !route.claim_headers.is_empty() {
        report.steps.push(Step {
            step: "claim headers",
            result: "pass",
            detail: route
                .claim_headers
                .iter()
                .map(|(h, p)| {
                    let v = claim_values
                        .iter()
                        .find(|(n, _)| *n == h)
                        .map_or("(absent: not set)".to_owned(), |(_, v)| {
                            String::from_utf8_lossy(v.as_bytes()).into_owned()
                        });
                    format!("{h} <- {}: {v}", p.as_str())
                })
                .collect::<Vec<_>>()
                .join("; "),
        });
    }

    // The headers, built by the same code the proxy runs, from a request holding only the
    // token and the Host.
    let mut h = HeaderMap::new();
    let host_value = HeaderValue::from_str(host).ok();
    if let Some(hv) = &host_value {
        h.insert(header::HOST, hv.clone());
    }
    if let Some(t) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        h.insert(header::AUTHORIZATION, t);
    }
    let request_id = HeaderValue::from_static("<generated per request>");
    snap.headers.prepare(
        &mut h,
        &Forward {
            route,
            token_source: token.map(|_| Source::Header),
            tls: snap.config.listen.tls.is_some(),
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
            client_ip: &HeaderValue::from_static("127.0.0.1"),
            client_cert: None,
            host: host_value.as_ref(),
            websocket: false,
            request_id: &request_id,
        },
        claim_values,
    );
    // The identity assertion is signed per request; explain names what it would carry.
    if let (Some(a), Some(signer), Some(_)) = (&route.assertion, &snap.assertion, token) {
        let shown = format!(
            "<signed {} assertion, kid {}: aud={}, {} s>",
            crate::assertion::ASSERTION_TYP,
            signer.kid(),
            a.audience,
            signer.ttl_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&shown) {
            h.insert(signer.header.clone(), v);
        }
    }
    report.upstream_headers = h
        .iter()
        .map(|(n, v)| {
            let shown = if n == header::AUTHORIZATION {
                // explain never prints the token back.
                "Bearer <the token>".to_owned()
            } else if n.as_str() == "x-forwarded-for" {
                "<client address>".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (n.as_str().to_owned(), shown)
        })
        .collect();
    let up = &route.upstream;
    report.upstream_url = Some(format!(
        "{}://{}{}{}{}",
        up.scheme,
        up.authority,
        up.base_path,
        path,
        query.map(|q| format!("?{q}")).unwrap_or_default()
    ));
    report.status = 200;
    report.outcome = "forwarded to the upstream (its answer is returned)".into();
    report
}

/// The entry that revokes a token, as `explain` shows it.
fn describe_revoked(
    issuer: &str,
    claims: &serde_json::Map<String, Value>,
    r: &crate::denylist::Revoked,
) -> String {
    use crate::denylist::{fmt_time, Source};
    let kind = r.kind.as_str();
    let id = claims.get(kind).and_then(Value::as_str).unwrap_or_default();
    let mut d = format!("revoked by the entry issuer {issuer:?} {kind} {id:?}");
    if let Some(b) = r.before() {
        let _ = write!(d, " before {}", fmt_time(b));
    }
    match r.until() {
        Some(u) => {
            let _ = write!(d, " until {}", fmt_time(u));
        }
        None => d.push_str(" until removed"),
    }
    d.push_str(match r.source {
        Source::File => " (from the [denylist] file)",
        Source::Shared => " (from Redis)",
    });
    d
}

async fn verify(
    snap: &Snapshot,
    token: &str,
    accepted: &[usize],
    now: i64,
) -> Result<Option<auth::Verified>, AuthError> {
    let limit = snap.config.limits.max_token_bytes;
    match auth::verify_live(token, &snap.issuers, accepted, limit, now).await {
        Ok((v, _)) => Ok(Some(v)),
        Err(auth::SignatureError::Auth(e)) => Err(e),
        // explain waits for first fetches before it starts; still none means the provider
        // could not be reached.
        Err(auth::SignatureError::NotLoaded { .. }) => Err(AuthError::UnknownKey),
    }
}

/// Decodes what can be shown of a token without trusting it, as the steps' details.
fn describe_token(
    steps: &mut Vec<Step>,
    snap: &Snapshot,
    token: &str,
    accepted: &[usize],
    now: i64,
) {
    let pass = |step: &'static str, detail: String| Step {
        step,
        result: "pass",
        detail,
    };
    let limit = snap.config.limits.max_token_bytes;
    let segs: Vec<&str> = token.split('.').collect();
    steps.push(pass(
        "structure",
        format!(
            "{} segments, {} bytes (limit {limit})",
            segs.len(),
            token.len()
        ),
    ));
    let decode = |s: &str| -> Option<serde_json::Map<String, Value>> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let (Some(header), Some(claims)) = (
        segs.first().and_then(|s| decode(s)),
        segs.get(1).and_then(|s| decode(s)),
    ) else {
        return;
    };
    let show = |v: Option<&Value>| v.map_or("-".to_owned(), |v| v.to_string());
    steps.push(pass(
        "header",
        format!(
            "alg={} kid={} typ={}{}",
            show(header.get("alg")),
            show(header.get("kid")),
            show(header.get("typ")),
            if header.contains_key("crit") {
                " crit=present"
            } else {
                ""
            }
        ),
    ));
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("-");
    let issuer = accepted
        .iter()
        .map(|&i| &snap.issuers[i])
        .find(|i| i.config.issuer == iss);
    steps.push(pass(
        "issuer",
        match issuer {
            Some(i) => format!("iss {iss:?} is issuer {:?}", i.config.name),
            None => format!(
                "iss {iss:?}; this route accepts {}",
                accepted
                    .iter()
                    .map(|&i| format!(
                        "{:?} ({:?})",
                        snap.issuers[i].config.name, snap.issuers[i].config.issuer
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    ));
    let Some(issuer) = issuer else { return };
    let cfg = &issuer.config;
    steps.push(pass(
        "algorithm",
        format!(
            "{} against the issuer's [{}]",
            show(header.get("alg")),
            cfg.algorithms
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    steps.push(pass(
        "typ",
        match header.get("typ") {
            None => "absent (accepted)".into(),
            Some(t) => format!("{t} against [{}]", cfg.typ.join(", ")),
        },
    ));
    let kid = header.get("kid").and_then(Value::as_str);
    let key_detail = match issuer.keys.current() {
        None => "the issuer's keys are not loaded yet".to_owned(),
        Some(keys) => {
            let alg = header
                .get("alg")
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok());
            let candidates: Vec<String> = keys
                .candidates(kid)
                .filter(|k| alg.is_some_and(|a| k.allows(a)))
                .map(|k| {
                    format!(
                        "{} ({} key)",
                        k.kid
                            .as_deref()
                            .map_or("(no kid)".to_owned(), |k| format!("{k:?}")),
                        family_name(k.family)
                            .trim_start_matches("an ")
                            .trim_start_matches("a ")
                    )
                })
                .collect();
            match kid {
                Some(k) => format!(
                    "kid {k:?}: candidates {}",
                    if candidates.is_empty() {
                        "none".into()
                    } else {
                        candidates.join(", ")
                    }
                ),
                None => format!(
                    "no kid: every key of the issuer that fits the algorithm is tried: {}",
                    candidates.join(", ")
                ),
            }
        }
    };
    steps.push(pass("key", key_detail));
    steps.push(pass("signature", "verified".into()));
    let num = |n: &str| claims.get(n).and_then(Value::as_f64);
    let mut t = String::new();
    for name in ["exp", "nbf", "iat"] {
        if let Some(v) = num(name) {
            let _ = write!(t, "{name} {} ({}); ", fmt_time(v), relative(v, now));
        } else if claims.contains_key(name) {
            let _ = write!(t, "{name} is not a number; ");
        } else {
            let _ = write!(t, "{name} absent; ");
        }
    }
    let _ = write!(
        t,
        "now {}; leeway {}",
        fmt_time(now as f64),
        humantime::format_duration(cfg.leeway)
    );
    steps.push(pass("time", t));
    steps.push(pass(
        "audience",
        format!(
            "aud {} against [{}]",
            show(claims.get("aud")),
            cfg.audiences.join(", ")
        ),
    ));
    steps.push(pass("subject", format!("sub {}", show(claims.get("sub")))));
}

/// `[anomaly]`, as settings: the signal needs the live traffic's history, which a dry run
/// has not got.
fn anomaly_step(steps: &mut Vec<Step>, snap: &Snapshot) {
    let detail = match &snap.config.anomaly {
        None => "no [anomaly] section: client addresses per token are not tracked".to_owned(),
        Some(a) => format!(
            "[anomaly] max_addresses = {}, window = {}, action = {:?}: a token seen from more client addresses within the window is counted and logged{} (per replica, from live traffic; a dry run has no history)",
            a.max_addresses,
            humantime::format_duration(a.window),
            a.action.as_str(),
            if a.action == crate::config::AnomalyAction::Refuse { " and refused until its exp" } else { "" },
        ),
    };
    steps.push(Step {
        step: "anomaly",
        result: "skipped",
        detail,
    });
}

/// The route's step-up and one-time steps, by the same check the proxy runs; a dry run
/// never uses a `jti` up.
fn route_defense_steps(
    steps: &mut Vec<Step>,
    snap: &Snapshot,
    route: &crate::config::RouteConfig,
    v: &auth::Verified,
    now: i64,
) -> Result<(), AuthError> {
    let leeway = snap.issuers[v.issuer].config.leeway;
    if let Some(s) = &route.step_up {
        let mut wanted = Vec::new();
        if let Some(age) = s.max_auth_age {
            let t = v.claims.get("auth_time").and_then(Value::as_f64);
            wanted.push(format!(
                "auth_time {} at most {} old (plus leeway {}s)",
                t.map_or("absent".to_owned(), |t| format!(
                    "{} ({})",
                    fmt_time(t),
                    relative(t, now)
                )),
                humantime::format_duration(age),
                leeway.as_secs()
            ));
        }
        if !s.acr_values.is_empty() {
            wanted.push(format!(
                "acr {} one of [{}]",
                v.claims
                    .get("acr")
                    .map_or("absent".to_owned(), Value::to_string),
                s.acr_values.join(", ")
            ));
        }
        steps.push(Step {
            step: "step-up",
            result: "pass",
            detail: wanted.join("; "),
        });
        s.check(&v.claims, leeway, now)
            .map_err(|f| AuthError::StepUp(Box::new(f)))?;
    }
    if route.one_time {
        let jti = v.claims.get("jti").and_then(Value::as_str);
        steps.push(Step {
            step: "one-time",
            result: "pass",
            detail: match jti {
                Some(j) => format!("jti {j:?} passes once: the first request uses it up (the dry run does not), later ones are refused (replayed)"),
                None => "the route lets each token pass once, by its jti".to_owned(),
            },
        });
        if jti.is_none() {
            return Err(AuthError::NoJti);
        }
    }
    Ok(())
}

/// The report as text for people.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request: {} {} (host {})", r.method, r.path, r.host);
    if let Some(p) = &r.normalized_path {
        if *p != r.path {
            let _ = writeln!(out, "normalised path: {p}");
        }
    }
    let _ = writeln!(out, "\nroutes considered:");
    for c in &r.routes {
        let _ = writeln!(
            out,
            "  {} {:<16} host={} prefix={}: {}",
            if c.matched { "=>" } else { "  " },
            c.name,
            c.host,
            c.path_prefix,
            c.why
        );
    }
    if let Some(route) = &r.route {
        let _ = writeln!(out, "route: {route}");
    }
    if !r.steps.is_empty() {
        let _ = writeln!(out, "\nverification:");
        for s in &r.steps {
            let _ = writeln!(out, "  [{:<7}] {:<13} {}", s.result, s.step, s.detail);
        }
    }
    let _ = writeln!(out, "\nanswer: {}", r.outcome);
    if !r.response_headers.is_empty() {
        let _ = writeln!(out, "response headers (on every answer of the route):");
        for (n, v) in &r.response_headers {
            let _ = writeln!(out, "  {n}: {v}");
        }
    }
    if let Some(u) = &r.upstream_url {
        let _ = writeln!(out, "\nupstream request: {} {u}", r.method);
        for (n, v) in &r.upstream_headers {
            let _ = writeln!(out, "  {n}: {v}");
        }
    }
    out
}

/// What [`dry_binding`] knows of the request explained.
struct DryRequest<'a> {
    method: &'a Method,
    scheme: &'a str,
    host: &'a str,
    path: &'a str,
    token: &'a str,
    dpop: Option<&'a str>,
}

/// The sender-constraint checks of the request path, without a connection or replay cache:
/// the token's `cnf`, the proof (when given) and `require_binding`.
fn dry_binding(
    snap: &Snapshot,
    route: &crate::config::RouteConfig,
    v: &auth::Verified,
    r: &DryRequest<'_>,
    now: i64,
) -> Result<Step, AuthError> {
    use crate::auth::{binding, dpop};
    let step = |step: &'static str, result: &'static str, detail: String| Step {
        step,
        result,
        detail,
    };
    let cnf = binding::cnf(&v.claims)?;
    if cnf.is_unbound() {
        if r.dpop.is_some() {
            return Err(AuthError::BindingMismatch(
                "the token is not DPoP-bound (it has no cnf.jkt): send it with the Bearer scheme",
            ));
        }
        if route.require_binding {
            return Err(AuthError::BindingMismatch(
                "this route requires a sender-constrained token (cnf: DPoP- or certificate-bound)",
            ));
        }
        return Ok(step(
            "binding",
            "pass",
            "the token is not sender-constrained (no cnf)".into(),
        ));
    }
    if let Some(x5t) = cnf.x5t {
        return Ok(step(
            "binding",
            "skipped",
            format!("certificate-bound: the connection's client certificate must have the SHA-256 thumbprint {x5t} (a dry run has no connection)"),
        ));
    }
    let Some(jkt) = cnf.jkt else {
        return Ok(step("binding", "pass", "no binding to check".into()));
    };
    let Some(proof) = r.dpop else {
        return Err(AuthError::DpopInvalid(
            "the token is DPoP-bound: a request needs Authorization: DPoP and a proof (pass --dpop)",
        ));
    };
    let htu = dpop::request_htu(r.scheme, r.host, r.path.split('?').next().unwrap_or(r.path))
        .ok_or(AuthError::DpopInvalid(
            "the request's scheme and host do not form a URI to compare htu with",
        ))?;
    let issuer = &snap.issuers[v.issuer];
    let request = dpop::ProofRequest {
        method: r.method.as_str(),
        htu: &htu,
        access_token: r.token,
        jkt,
        now,
    };
    dpop::check(proof, &issuer.dpop, &request)?;
    Ok(step(
        "dpop",
        "pass",
        format!("proof by the key with thumbprint {jkt} (cnf.jkt); typ, alg [{}], htm {}, htu {htu}, iat within {}s, ath; its jti is not recorded by a dry run", issuer.dpop.algs, r.method, issuer.dpop.window_secs),
    ))
}

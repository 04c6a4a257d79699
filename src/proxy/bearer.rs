//! Finding the bearer token of a request (RFC 6750 §2): the `Authorization` header, and the
//! query parameter or cookie a route names.

use http::header::{self, HeaderMap};

use super::answer::ProxyError;
use crate::config::RouteConfig;

/// Where the token was found, so it can be removed before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
    Cookie,
}

/// The RFC 6750 §2.3 query parameter; its presence next to a header token is refused even on
/// routes that do not read it, since two credentials in one request is ambiguous.
const STANDARD_QUERY: &str = "access_token";

/// The request's token, if it sent one. Two tokens, in one place or in several, are a 400.
pub fn find<'r>(
    headers: &'r HeaderMap,
    query: Option<&'r str>,
    route: &RouteConfig,
) -> Result<Option<(&'r str, Source)>, ProxyError> {
    let mut found: Option<(&str, Source)> = None;
    let mut count = 0;
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(v) = auth.next() {
        if auth.next().is_some() {
            return Err(ProxyError::BadRequest(
                "the request has more than one Authorization header",
            ));
        }
        let v = v
            .to_str()
            .map_err(|_| ProxyError::BadRequest("the Authorization header is not ASCII"))?;
        if let Some(t) = bearer(v) {
            found = Some((t, Source::Header));
            count += 1;
        }
    }
    if let Some(q) = query {
        for (name, value) in q.split('&').filter_map(|p| p.split_once('=')) {
            if name == STANDARD_QUERY || route.token_query.as_deref() == Some(name) {
                count += 1;
                if route.token_query.as_deref() == Some(name) {
                    found = Some((value, Source::Query));
                }
            }
        }
    }
    if let Some(cookie_name) = route.token_cookie.as_deref() {
        for v in headers.get_all(header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for (name, value) in v.split(';').filter_map(|c| c.trim().split_once('=')) {
                if name == cookie_name {
                    count += 1;
                    found = Some((value, Source::Cookie));
                }
            }
        }
    }
    if count > 1 {
        return Err(ProxyError::BadRequest(
            "the request carries more than one token (header, query or cookie): send exactly one",
        ));
    }
    Ok(found)
}

/// The token of an `Authorization: Bearer` value; `None` for another scheme. The token is not
/// checked here: a malformed one fails verification with a 401 that says why.
fn bearer(v: &str) -> Option<&str> {
    let v = v.trim_matches(' ');
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    // The scheme is case-insensitive (RFC 9110 §11.1).
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

/// The query without the route's token parameter; `None` when nothing is left.
pub fn query_without(query: &str, param: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| p.split_once('=').map_or(*p, |(n, _)| n) != param)
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

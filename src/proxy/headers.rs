//! Header hygiene: what a client sent that must never reach the upstream, and what the
//! gateway adds in its place.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::bearer::Source;
use crate::config::RouteConfig;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones proxies still see).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers a `Connection` list may never remove: the request cannot be routed or framed
/// without them, and removing ours would let a client unset what the gateway adds.
static NOT_CONNECTION_REMOVABLE: [HeaderName; 2] = [header::HOST, header::CONTENT_LENGTH];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The claim header names of every route, in the form inbound names are compared in:
/// lower case with `_` read as `-`. Built once per snapshot.
#[derive(Debug, Default)]
pub struct HeaderPlan {
    claim_names: Vec<HeaderName>,
}

impl HeaderPlan {
    /// Collects the claim header names of all routes.
    pub fn new(routes: &[RouteConfig]) -> HeaderPlan {
        let mut claim_names: Vec<HeaderName> = routes
            .iter()
            .flat_map(|r| r.claim_headers.iter().map(|(h, _)| h.clone()))
            .collect();
        claim_names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        claim_names.dedup();
        HeaderPlan { claim_names }
    }

    /// True when an inbound header name is a claim header name, ignoring case (HeaderName is
    /// already lower case) and reading `_` as `-`, since many servers (CGI, WSGI, Rack, PHP)
    /// fold both to the same variable.
    pub fn is_claim_name(&self, name: &HeaderName) -> bool {
        let n = name.as_str().as_bytes();
        self.claim_names.iter().any(|c| {
            let c = c.as_str().as_bytes();
            c.len() == n.len()
                && c.iter()
                    .zip(n)
                    .all(|(a, b)| *a == *b || (*a == b'-' && *b == b'_'))
        })
    }

    /// Turns a client's headers into what the upstream receives: strips everything a client
    /// may not send, then adds the gateway's own headers and the claim headers.
    pub fn prepare(
        &self,
        h: &mut HeaderMap,
        f: &Forward<'_>,
        claims: Vec<(&HeaderName, HeaderValue)>,
    ) {
        self.strip_request(h);
        let token_cookie = match (f.token_source, &f.route.token_cookie) {
            (Some(Source::Cookie), Some(name)) if !f.route.forward_token => Some(name.as_str()),
            _ => None,
        };
        join_cookies(h, token_cookie);
        if !f.route.forward_token {
            h.remove(header::AUTHORIZATION);
        }
        let proto = if f.tls { "https" } else { "http" };
        set_forwarded(h, f.client_ip, proto, f.host);
        // Only a WebSocket upgrade on a route that allows it survives hop-by-hop removal:
        // `Upgrade: h2c` or anything else never opens a tunnel.
        if f.websocket {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        match f.host {
            // RFC 9113 §8.3.1: over HTTP/2 `:authority` (the upstream's) and a different Host
            // must not both be sent; the client's host still arrives as X-Forwarded-Host.
            _ if f.route.upstream_http2 => {
                h.remove(header::HOST);
            }
            Some(hv) => {
                h.insert(header::HOST, hv.clone());
            }
            None => {}
        }
        h.insert(X_REQUEST_ID.clone(), f.request_id.clone());
        for (name, value) in claims {
            h.insert(name.clone(), value);
        }
    }

    /// Removes hop-by-hop headers, the headers the `Connection` header lists, and every inbound
    /// copy of every claim header name. Runs before the gateway adds its own headers, so
    /// nothing a client sends can remove or replace them.
    pub fn strip_request(&self, headers: &mut HeaderMap) {
        remove_connection_listed(headers);
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            if self.is_claim_name(name) {
                doomed.push(name.clone());
            }
        }
        for name in &doomed {
            headers.remove(name);
        }
    }
}

/// What [`HeaderPlan::prepare`] needs to know about the request besides its headers.
pub struct Forward<'a> {
    pub route: &'a RouteConfig,
    /// Where the token came from, if one was sent.
    pub token_source: Option<Source>,
    pub tls: bool,
    /// The client's address as text ([`crate::server::ConnInfo::peer_ip`]).
    pub client_ip: &'a HeaderValue,
    /// The request's authority (Host), as the client sent it.
    pub host: Option<&'a HeaderValue>,
    /// True when a WebSocket upgrade is being forwarded.
    pub websocket: bool,
    pub request_id: &'a HeaderValue,
}

/// Removes the headers named in `Connection`, then the hop-by-hop set itself.
pub fn remove_connection_listed(headers: &mut HeaderMap) {
    // Only the names present are removed: one pass over the message's names costs less than a
    // hashed `remove` for each of the nine, and most messages carry none or one of them.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    for v in headers.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        for token in v.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                if !NOT_CONNECTION_REMOVABLE.contains(&name) {
                    doomed.push(name);
                }
            }
        }
    }
    for name in &doomed {
        headers.remove(name);
    }
}

/// Appends the client address to `X-Forwarded-For` (merging repeated headers into one) and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    let xff = if headers.contains_key(&X_FORWARDED_FOR) {
        let mut xff = String::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(v) = v.to_str() {
                xff.push_str(v);
                xff.push_str(", ");
            }
        }
        xff.push_str(client_ip.to_str().unwrap_or_default());
        HeaderValue::from_str(&xff).ok()
    } else {
        Some(client_ip.clone())
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// The request id: the client's when it is short and printable, else a new random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_request_id()
}

/// 128 random bits as 32 hex digits.
pub fn new_request_id() -> HeaderValue {
    // A correlation id, not a secret: a per-thread wyrand (seeded at random) instead of
    // aws-lc's DRBG, whose RDRAND and AES calls cost about 0.4 µs on every request.
    let bytes = fastrand::u128(..).to_le_bytes();
    let mut hex = [0u8; 32];
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        hex[2 * i] = DIGITS[usize::from(b >> 4)];
        hex[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Joins every `Cookie` field into one, as RFC 9113 §8.2.3 asks before HTTP/1.1 (HTTP/2
/// clients send each cookie as its own field, and many backends read only the first), leaving
/// out the cookie named `drop` (a token the upstream must not see).
pub fn join_cookies(headers: &mut HeaderMap, drop: Option<&str>) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(_), more) = (values.next(), values.next().is_some()) else {
        return;
    };
    if !more && drop.is_none() {
        return;
    }
    let mut joined = String::new();
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for c in v.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let name = c.split_once('=').map_or(c, |(n, _)| n);
            if drop == Some(name) {
                continue;
            }
            if !joined.is_empty() {
                joined.push_str("; ");
            }
            joined.push_str(c);
        }
    }
    headers.remove(header::COOKIE);
    if !joined.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert(header::COOKIE, v);
        }
    }
}

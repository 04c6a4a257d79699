//! `[assertion]` and the route keys `assertion`, `[route.cors]` and `[route.rate_limit]`
//! (SPEC "Identity assertion for backends", "CORS and rate limits").

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Method;
use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawAssertion, RawConfig, RawCors, RawRateLimit, RawRoute};
use crate::config::{
    AssertionConfig, AuthMode, ClaimPath, Cors, RateLimit, RouteAssertion, RouteConfig,
    DEFAULT_ASSERTION_HEADER,
};

/// Claims every assertion sets itself; a claim header reading one of these never copies it.
pub const ASSERTION_OWN_CLAIMS: [&str; 7] = ["iss", "aud", "sub", "iat", "exp", "jti", "nbf"];

/// Longest assertion lifetime: it is a bearer credential towards the upstream.
const MAX_ASSERTION_TTL: Duration = Duration::from_secs(3600);

/// Longest preflight cache time; browsers cap it lower anyway (Chromium at 2 hours).
const MAX_CORS_MAX_AGE: Duration = Duration::from_secs(86_400);

impl Validator<'_> {
    /// `[assertion]`.
    pub(super) fn assertion(&mut self, raw: &Spanned<RawAssertion>) -> Option<AssertionConfig> {
        let a = raw.get_ref();
        let before = self.errors.len();
        self.strings(&a.keys, "[assertion] keys");
        let keys: Vec<_> = a.keys.get_ref().iter().map(|s| self.file(s)).collect();
        let issuer = a.issuer.get_ref().clone();
        if issuer.trim().is_empty() || issuer.trim() != issuer {
            self.error(
                &a.issuer,
                "[assertion] issuer must be a non-empty string without surrounding whitespace (the URL backends compare iss with)",
            );
        }
        let ttl = self.duration(&a.ttl, "[assertion] ttl", Duration::from_secs(60));
        if ttl > MAX_ASSERTION_TTL || ttl < Duration::from_secs(1) {
            if let Some(t) = &a.ttl {
                self.error(t, "[assertion] ttl must be between 1s and 1h: an assertion is a short-lived credential");
            }
        }
        let header = match &a.header {
            None => HeaderName::from_static(DEFAULT_ASSERTION_HEADER),
            Some(h) => match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) if name.as_str().contains('_') => {
                    self.error(h, format!("[assertion] header {:?} has '_': write it with '-' (inbound '_' variants are stripped anyway)", h.get_ref()));
                    return None;
                }
                Ok(name) if is_reserved(name.as_str()) => {
                    self.error(h, format!("[assertion] header {:?} is a header the gateway manages, that frames or authenticates the request, or that describes the body: choose another name", h.get_ref()));
                    return None;
                }
                Ok(name) => name,
                Err(_) => {
                    self.error(
                        h,
                        format!(
                            "[assertion] header {:?} is not a valid header name",
                            h.get_ref()
                        ),
                    );
                    return None;
                }
            },
        };
        if self.errors.len() > before {
            return None;
        }
        Some(AssertionConfig {
            keys,
            issuer,
            ttl,
            header,
            keys_loc: self.loc(a.keys.span().start),
        })
    }

    /// A route's `assertion`, `[route.cors]` and `[route.rate_limit]`.
    pub(super) fn route_edge(
        &mut self,
        r: &RawRoute,
        name: &str,
        auth: AuthMode,
        claim_headers: &[(HeaderName, ClaimPath)],
    ) -> (
        Option<RouteAssertion>,
        Option<crate::config::Cors>,
        Option<RateLimit>,
    ) {
        let assertion = match &r.assertion {
            Some(on) if *on.get_ref() => {
                if auth == AuthMode::None {
                    self.error(on, format!("route {name:?}: assertion = true has no effect with auth = \"none\": a request without a token gets no assertion"));
                }
                let audience = match &r.assertion_audience {
                    Some(a) if a.get_ref().trim().is_empty() => {
                        self.error(
                            a,
                            format!("route {name:?}: assertion_audience must not be empty"),
                        );
                        String::new()
                    }
                    Some(a) => a.get_ref().clone(),
                    None => name.to_owned(),
                };
                let mut claims: Vec<String> = Vec::new();
                for (_, path) in claim_headers {
                    let top = match path {
                        ClaimPath::Name(n) => n.clone(),
                        ClaimPath::Pointer(p) => pointer_top(p),
                    };
                    if !top.is_empty()
                        && !ASSERTION_OWN_CLAIMS.contains(&top.as_str())
                        && !claims.contains(&top)
                    {
                        claims.push(top);
                    }
                }
                Some(RouteAssertion { audience, claims })
            }
            Some(_) | None => {
                if let Some(a) = &r.assertion_audience {
                    self.error(
                        a,
                        format!("route {name:?}: assertion_audience needs assertion = true"),
                    );
                }
                None
            }
        };
        let cors = r.cors.as_ref().and_then(|c| self.cors(c, name));
        let rate_limit = r.rate_limit.as_ref().and_then(|l| self.rate_limit(l, name));
        (assertion, cors, rate_limit)
    }

    fn cors(&mut self, raw: &Spanned<RawCors>, route: &str) -> Option<Cors> {
        let c = raw.get_ref();
        let before = self.errors.len();
        let credentials = c.allow_credentials.as_ref().is_some_and(|b| *b.get_ref());
        let mut allow_origins = Vec::new();
        let mut any_origin = false;
        if c.allow_origins.get_ref().is_empty() {
            self.error(&c.allow_origins, format!("route {route:?}: cors.allow_origins must not be empty (list the origins that may call this route, such as \"https://app.example.com\")"));
        }
        for o in c.allow_origins.get_ref() {
            let text = o.get_ref();
            if text == "*" {
                if credentials {
                    self.error(o, format!("route {route:?}: cors.allow_origins \"*\" cannot be used with allow_credentials = true (the Fetch standard refuses it): list the exact origins"));
                }
                any_origin = true;
                continue;
            }
            match origin(text) {
                Ok(o) => allow_origins.push(o),
                Err(why) => self.error(
                    o,
                    format!("route {route:?}: cors.allow_origins {text:?} {why}"),
                ),
            }
        }
        if any_origin && !allow_origins.is_empty() {
            self.error(&c.allow_origins, format!("route {route:?}: cors.allow_origins lists \"*\" and exact origins: keep one or the other"));
        }
        let mut allow_methods = Vec::new();
        let mut any_method = false;
        for m in c.allow_methods.iter().flat_map(|l| l.get_ref()) {
            if m.get_ref() == "*" {
                if credentials {
                    self.error(m, format!("route {route:?}: cors.allow_methods \"*\" is not a wildcard with allow_credentials = true (the Fetch standard reads it as a method named *): list the methods"));
                }
                any_method = true;
                continue;
            }
            // Methods are case-sensitive (RFC 9110 §9.1); browsers upper-case only the
            // standard ones, so a listed method is kept as written.
            match Method::from_bytes(m.get_ref().as_bytes()) {
                Ok(method) => allow_methods.push(method),
                Err(_) => self.error(
                    m,
                    format!(
                        "route {route:?}: cors.allow_methods {:?} is not an HTTP method",
                        m.get_ref()
                    ),
                ),
            }
        }
        let mut allow_headers = Vec::new();
        let mut any_header = false;
        for h in c.allow_headers.iter().flat_map(|l| l.get_ref()) {
            if h.get_ref() == "*" {
                if credentials {
                    self.error(h, format!("route {route:?}: cors.allow_headers \"*\" is not a wildcard with allow_credentials = true (the Fetch standard reads it as a header named *): list the headers"));
                }
                any_header = true;
                continue;
            }
            match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => allow_headers.push(name.as_str().to_owned()),
                Err(_) => self.error(
                    h,
                    format!(
                        "route {route:?}: cors.allow_headers {:?} is not a header name",
                        h.get_ref()
                    ),
                ),
            }
        }
        let mut expose = Vec::new();
        for h in c.expose_headers.iter().flat_map(|l| l.get_ref()) {
            match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => expose.push(name.as_str().to_owned()),
                Err(_) if h.get_ref() == "*" && !credentials => expose.push("*".into()),
                Err(_) => self.error(
                    h,
                    format!("route {route:?}: cors.expose_headers {:?} is not a header name (\"*\" only without credentials)", h.get_ref()),
                ),
            }
        }
        let max_age = c.max_age.as_ref().map(|_| {
            let d = self.duration(&c.max_age, "cors.max_age", Duration::from_secs(600));
            if d > MAX_CORS_MAX_AGE {
                if let Some(m) = &c.max_age {
                    self.error(
                        m,
                        format!("route {route:?}: cors.max_age must be at most 24h"),
                    );
                }
            }
            HeaderValue::from(d.as_secs())
        });
        if self.errors.len() > before {
            return None;
        }
        let join = |items: &[String]| HeaderValue::from_str(&items.join(", ")).ok();
        let methods_text: Vec<String> = if any_method {
            vec!["*".into()]
        } else {
            allow_methods
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect()
        };
        Some(Cors {
            allow_origins,
            any_origin,
            allow_methods,
            any_method,
            allow_headers,
            any_header,
            expose_headers: if expose.is_empty() {
                None
            } else {
                join(&expose)
            },
            allow_credentials: credentials,
            max_age,
            allow_methods_value: if methods_text.is_empty() {
                None
            } else {
                join(&methods_text)
            },
        })
    }

    fn rate_limit(&mut self, raw: &Spanned<RawRateLimit>, route: &str) -> Option<RateLimit> {
        let l = raw.get_ref();
        let key = match &l.key {
            Some(k) if k.get_ref().is_empty() => {
                self.error(k, format!("route {route:?}: rate_limit.key must not be empty (a claim name such as \"sub\" or a JSON Pointer such as \"/tenant/id\")"));
                return None;
            }
            Some(k) => ClaimPath::parse(k.get_ref()),
            None => ClaimPath::parse("sub"),
        };
        let Some((count, period)) = parse_rate(l.rate.get_ref()) else {
            self.error(&l.rate, format!("route {route:?}: rate_limit.rate {:?} must be a count per second, minute or hour, such as \"100/s\", \"600/m\" or \"1000/h\"", l.rate.get_ref()));
            return None;
        };
        let interval = period / count;
        if interval.is_zero() {
            self.error(
                &l.rate,
                format!(
                    "route {route:?}: rate_limit.rate {:?} is more than one request a nanosecond",
                    l.rate.get_ref()
                ),
            );
            return None;
        }
        let burst = match &l.burst {
            None => count,
            Some(b) => match u32::try_from(*b.get_ref()) {
                Ok(n) if n >= 1 => n,
                _ => {
                    self.error(
                        b,
                        format!("route {route:?}: rate_limit.burst must be a whole number from 1"),
                    );
                    return None;
                }
            },
        };
        Some(RateLimit {
            key,
            interval,
            burst,
            rate: l.rate.get_ref().clone(),
        })
    }

    /// Checks across the whole config: routes with `assertion = true` need `[assertion]`, and
    /// no claim header may share the assertion header's name.
    pub(super) fn check_edge(
        &mut self,
        raw: &RawConfig,
        routes: &[RouteConfig],
        assertion: Option<&AssertionConfig>,
    ) {
        if raw.assertion.is_none() {
            for r in &raw.route {
                if let Some(on) = r.get_ref().assertion.as_ref().filter(|on| *on.get_ref()) {
                    self.error(on, format!("route {:?}: assertion = true needs an [assertion] section with the signing keys and issuer", r.get_ref().name.get_ref()));
                }
            }
        }
        let Some(a) = assertion else { return };
        for r in routes {
            if r.claim_headers.iter().any(|(h, _)| *h == a.header) {
                self.error_at(raw.assertion.as_ref().map_or(0, |s| s.span().start), format!("route {:?}: a claim header is named {:?}, the [assertion] header; rename one of them", r.name, a.header.as_str()));
            }
        }
    }
}

/// Headers an assertion may not be sent in (lower case).
fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "authorization"
            | "cookie"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "x-request-id"
            | "traceparent"
            | "tracestate"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
    ) || name.starts_with("content-")
        || name.starts_with("proxy-")
}

/// The top-level member a JSON Pointer starts in (`/realm_access/roles` -> `realm_access`),
/// unescaped (RFC 6901: `~1` is `/`, `~0` is `~`).
pub fn pointer_top(p: &str) -> String {
    p.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .replace("~1", "/")
        .replace("~0", "~")
}

/// An origin as browsers serialize it: `scheme://host[:port]`, lower case, no path.
fn origin(s: &str) -> Result<String, &'static str> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| "is not an origin such as \"https://app.example.com\"")?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err("is not an origin such as \"https://app.example.com\" (scheme and host)");
    };
    if !matches!(scheme, "http" | "https") {
        return Err("must be an http or https origin");
    }
    if authority.as_str().contains('@') {
        return Err("must not carry credentials");
    }
    let rest = &s[scheme.len() + 3 + authority.as_str().len()..];
    if !rest.is_empty() {
        return Err(
            "must not have a path, not even a trailing \"/\": browsers send the origin without one",
        );
    }
    Ok(s.to_ascii_lowercase())
}

/// `"100/s"`, `"600/m"`, `"1000/h"`: the count and the period.
fn parse_rate(s: &str) -> Option<(u32, Duration)> {
    let (n, unit) = s.trim().split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|&n| n > 0)?;
    let period = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return None,
    };
    Some((n, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_origins_and_pointers() {
        assert_eq!(parse_rate("100/s"), Some((100, Duration::from_secs(1))));
        assert_eq!(parse_rate("5/m"), Some((5, Duration::from_secs(60))));
        assert_eq!(parse_rate("0/s"), None);
        assert_eq!(parse_rate("10/d"), None);
        assert_eq!(
            origin("https://App.example.com:8443").as_deref(),
            Ok("https://app.example.com:8443")
        );
        assert!(origin("https://app.example.com/").is_err());
        assert!(origin("app.example.com").is_err());
        assert!(origin("null").is_err());
        assert_eq!(pointer_top("/realm_access/roles"), "realm_access");
        assert_eq!(pointer_top("/a~1b"), "a/b");
    }
}

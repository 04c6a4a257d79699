//! One `[[route]]`: host, path prefix, methods, upstream, auth and claim headers.

use std::collections::{HashMap, HashSet};

use http::header::HeaderName;
use http::Method;
use toml::Spanned;

use super::{IssuerNames, Validator};
use crate::config::raw::{RawRequirement, RawRoute};
use crate::config::{AuthMode, ClaimPath, HostMatch, Requirement, RouteConfig, Upstream};

/// Headers the gateway sets itself, that carry the request's framing or credentials, or that
/// change how the upstream reads the request; a claim may not name them. Lower case, `-`.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "max-forwards",
    "via",
    "x-request-id",
    "traceparent",
    "tracestate",
    "dpop",
];

/// Why a claim header may not be called `name` (lower case), or `None` when it may.
fn claim_header_refusal(name: &str) -> Option<&'static str> {
    if RESERVED_HEADERS.contains(&name) {
        Some("the gateway manages that header itself, or it frames or authenticates the request")
    } else if name.starts_with("content-") {
        Some("Content-* headers describe the body, which the claim does not")
    } else if name.starts_with("proxy-") {
        Some("Proxy-* headers belong to the hop, not to the request")
    } else if crate::proxy::headers::is_trust_family(name)
        && !crate::proxy::headers::is_proxy_identity(name)
    {
        Some("it is one of the headers backends trust as set by their proxy (client address, scheme, original URL, method override, client certificate), which the gateway removes from every request")
    } else {
        None
    }
}

/// Why a `token_query` or `token_cookie` name cannot be matched reliably, or `None`. Each
/// refused character splits or rewrites a name in some upstream's parser (`;` `,` `&` `=`
/// separate pairs, `[` starts an array suffix, `%` is decoded, whitespace is trimmed), so the
/// name the gateway looks for would not be the one the upstream reads.
fn token_name_refusal(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, ';' | '=' | ',' | '&' | '[' | '%')
    }) {
        Some("must not contain whitespace, a control character or any of ; = , & [ %")
    } else {
        None
    }
}

impl Validator<'_> {
    /// The valid `[[route]]`s; reports repeated names, prefixes that differ only in case, and a
    /// config with no route.
    pub(super) fn routes(
        &mut self,
        raw: &[Spanned<RawRoute>],
        issuers: &IssuerNames<'_>,
    ) -> Vec<RouteConfig> {
        let mut names = HashSet::new();
        let mut folded_prefixes = HashMap::new();
        let mut routes = Vec::with_capacity(raw.len());
        for r in raw {
            if !names.insert(r.get_ref().name.get_ref().clone()) {
                self.error(
                    &r.get_ref().name,
                    format!("route name {:?} is used twice", r.get_ref().name.get_ref()),
                );
            }
            if let Some(route) = self.route(r, issuers) {
                // Prefixes that differ only in case are one prefix to a case-insensitive
                // upstream: the later route could never be chosen (it is refused as ambiguous).
                let key = (route.host.clone(), route.path_prefix.to_ascii_lowercase());
                match folded_prefixes.get(&key) {
                    Some(first) if *first != route.path_prefix => self.error(
                        &r.get_ref().path_prefix,
                        format!(
                            "route {:?}: path_prefix {:?} differs from {first:?} only in case; case-insensitive upstreams read them as one, so requests for it are refused as ambiguous",
                            route.name, route.path_prefix
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        folded_prefixes.insert(key, route.path_prefix.clone());
                    }
                }
                routes.push(route);
            }
        }
        if raw.is_empty() {
            self.error_at(
                0,
                "no [[route]] is defined: the gateway would answer 404 to everything".into(),
            );
        }
        routes
    }

    fn route(&mut self, r: &Spanned<RawRoute>, issuers: &IssuerNames<'_>) -> Option<RouteConfig> {
        let loc = self.loc(r.span().start);
        let r = r.get_ref();
        let name = r.name.get_ref().clone();
        let before = self.errors.len();
        if name.is_empty() {
            self.error(&r.name, "route name must not be empty");
        }
        let path_prefix = match crate::path::normalize(r.path_prefix.get_ref()) {
            Ok(p) if &p == r.path_prefix.get_ref() => p,
            Ok(p) => {
                self.error(
                    &r.path_prefix,
                    format!(
                        "route {name:?}: path_prefix {:?} is not in normal form; write {p:?}",
                        r.path_prefix.get_ref()
                    ),
                );
                p
            }
            Err(e) => {
                self.error(&r.path_prefix, format!("route {name:?}: path_prefix: {e}"));
                String::new()
            }
        };
        if path_prefix.contains(';') || path_prefix.contains("%3B") {
            self.error(&r.path_prefix, format!("route {name:?}: path_prefix {path_prefix:?} holds a ';' parameter, which Tomcat, Jetty and Spring drop, so it could only match ambiguously"));
        } else if !crate::path::folds_to_case_only(&path_prefix) {
            self.error(&r.path_prefix, format!("route {name:?}: path_prefix {path_prefix:?} has a segment ending in '.' or a space (%20), a ':' or a fullwidth character, which case-insensitive upstreams (IIS) read as another path, so it could only match ambiguously"));
        }
        let host = r.host.as_ref().and_then(|h| self.host(h, &name));
        let methods = r.methods.as_ref().map(|m| {
            if m.get_ref().is_empty() {
                self.error(m, format!("route {name:?}: methods must not be empty (leave it out to allow every method)"));
            }
            m.get_ref()
                .iter()
                .filter_map(|s| {
                    let upper = s.get_ref().to_ascii_uppercase();
                    match Method::from_bytes(upper.as_bytes()) {
                        Ok(m) => Some(m),
                        Err(_) => {
                            self.error(s, format!("route {name:?}: {:?} is not an HTTP method", s.get_ref()));
                            None
                        }
                    }
                })
                .collect()
        });
        let upstream = self.upstream(&r.upstream, &name);
        let auth = match r.auth.get_ref().as_str() {
            "required" => AuthMode::Required,
            "optional" => AuthMode::Optional,
            "none" => AuthMode::None,
            "session" => AuthMode::Session,
            other => {
                self.error(
                    &r.auth,
                    format!(
                        "route {name:?}: auth {other:?} must be one of required, optional, none, session"
                    ),
                );
                AuthMode::Required
            }
        };
        let route_issuers: Vec<usize> = match &r.issuers {
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.error(list, format!("route {name:?}: issuers must not be empty (leave it out to accept every issuer)"));
                }
                list.get_ref()
                    .iter()
                    .filter_map(|n| {
                        let found = issuers.index.get(n.get_ref().as_str()).copied();
                        if found.is_none() {
                            self.error(
                                n,
                                format!("route {name:?}: no [[issuer]] is named {:?}", n.get_ref()),
                            );
                        }
                        found
                    })
                    .collect()
            }
            None => (0..issuers.count).collect(),
        };
        if auth != AuthMode::None && issuers.count == 0 {
            self.error(
                &r.auth,
                format!(
                    "route {name:?}: auth = {:?} needs at least one [[issuer]]",
                    r.auth.get_ref()
                ),
            );
        }
        let require = r
            .require
            .iter()
            .map(|(claim, v)| Requirement {
                claim: ClaimPath::parse(claim),
                values: match v.get_ref() {
                    // Only scope lists are space-separated (RFC 8693 §4.2); any other
                    // claim's value is one exact string, spaces included.
                    RawRequirement::One(s) if matches!(claim.as_str(), "scope" | "scp") => {
                        s.split_ascii_whitespace().map(str::to_owned).collect()
                    }
                    RawRequirement::One(s) => vec![s.clone()],
                    RawRequirement::All(list) => list.clone(),
                    RawRequirement::Bool(b) => vec![b.to_string()],
                    RawRequirement::Int(i) => vec![i.to_string()],
                },
            })
            .collect::<Vec<_>>();
        for (req, (_, v)) in require.iter().zip(r.require.iter()) {
            if req.values.is_empty() {
                self.error(
                    v,
                    format!(
                        "route {name:?}: require.{} has no value to require",
                        req.claim.as_str()
                    ),
                );
            }
        }
        if auth == AuthMode::None && !r.require.is_empty() {
            self.error(
                &r.auth,
                format!("route {name:?}: require has no effect with auth = \"none\""),
            );
        }
        let mut claim_headers = Vec::with_capacity(r.claim_headers.len());
        for (header, claim) in &r.claim_headers {
            let parsed = HeaderName::from_bytes(header.as_bytes());
            // Refused names are compared as inbound ones are: `_` reads as `-`.
            let refusal = parsed
                .as_ref()
                .ok()
                .and_then(|h| claim_header_refusal(&h.as_str().replace('_', "-")));
            match parsed {
                Ok(_) if refusal.is_some() => {
                    let why = refusal.unwrap_or_default();
                    self.error(
                        claim,
                        format!("route {name:?}: claim_headers cannot set {header:?}: {why}"),
                    );
                }
                Ok(h) if h.as_str().contains('_') => {
                    self.error(claim, format!("route {name:?}: claim header {header:?} has '_': write it with '-' (inbound '_' variants are stripped anyway)"));
                }
                Ok(h) => {
                    if claim.get_ref().is_empty() {
                        self.error(
                            claim,
                            format!(
                                "route {name:?}: claim for header {header:?} must not be empty"
                            ),
                        );
                    } else {
                        claim_headers.push((h, ClaimPath::parse(claim.get_ref())));
                    }
                }
                Err(_) => self.error(
                    claim,
                    format!("route {name:?}: {header:?} is not a valid header name"),
                ),
            }
        }
        for (key, value) in [
            ("token_query", &r.token_query),
            ("token_cookie", &r.token_cookie),
        ] {
            if let Some(why) = value.as_ref().and_then(|v| token_name_refusal(v.get_ref())) {
                if let Some(v) = value {
                    self.error(v, format!("route {name:?}: {key} {:?} {why}", v.get_ref()));
                }
            }
        }
        let token_query = r.token_query.as_ref().map(|q| q.get_ref().clone());
        let token_cookie = r.token_cookie.as_ref().map(|c| c.get_ref().clone());
        let (assertion, cors, rate_limit) = self.route_edge(r, &name, auth, &claim_headers);
        let defenses = self.route_defenses(r, &name, auth);
        if self.errors.len() > before {
            return None;
        }
        Some(RouteConfig {
            name,
            host,
            path_prefix,
            methods,
            upstream: upstream?,
            auth,
            issuers: route_issuers,
            require,
            forward_token: r.forward_token.as_ref().is_some_and(|f| *f.get_ref()),
            websocket: r.websocket.as_ref().is_none_or(|w| *w.get_ref()),
            upstream_ca: r.upstream_ca.as_ref().map(|c| self.file(c)),
            upstream_http2: r.upstream_http2.as_ref().is_some_and(|h| *h.get_ref()),
            token_query,
            token_cookie,
            claim_headers,
            require_binding: r.require_binding.as_ref().is_some_and(|b| *b.get_ref()),
            loc,
            assertion,
            cors,
            rate_limit,
            step_up: defenses.step_up,
            one_time: defenses.one_time,
            response_headers: defenses.response_headers,
        })
    }

    fn host(&mut self, h: &Spanned<String>, route: &str) -> Option<HostMatch> {
        let host = h.get_ref().to_ascii_lowercase();
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.split('.').all(valid_label) {
                return Some(HostMatch::Wildcard(format!(".{suffix}")));
            }
        } else if let Ok(ip) = host
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(&host)
            .parse::<std::net::Ipv6Addr>()
        {
            // Written as a request's Host is normalised (`[::1]`), so the two compare equal.
            return Some(HostMatch::Exact(format!("[{ip}]")));
        } else if host.split('.').all(valid_label)
            && crate::routes::normalize_host(&host).as_deref() == Some(host.as_str())
        {
            return Some(HostMatch::Exact(host));
        }
        self.error(h, format!("route {route:?}: host {:?} must be a host name such as \"api.example.com\" or \"*.example.com\", an IPv4 address, or an IPv6 address such as \"::1\" (no port)", h.get_ref()));
        None
    }

    fn upstream(&mut self, u: &Spanned<String>, route: &str) -> Option<Upstream> {
        let uri: http::Uri = match u.get_ref().parse() {
            Ok(uri) => uri,
            Err(_) => {
                self.error(
                    u,
                    format!("route {route:?}: upstream {:?} is not a URL", u.get_ref()),
                );
                return None;
            }
        };
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            self.error(u, format!("route {route:?}: upstream must be an absolute URL such as \"http://127.0.0.1:8080\""));
            return None;
        };
        if !matches!(scheme.as_str(), "http" | "https") {
            self.error(
                u,
                format!("route {route:?}: upstream scheme must be http or https"),
            );
            return None;
        }
        if uri.query().is_some() || authority.as_str().contains('@') {
            self.error(
                u,
                format!("route {route:?}: upstream must not carry a query or credentials"),
            );
            return None;
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Some(Upstream {
            scheme: scheme.clone(),
            authority: authority.clone(),
            base_path,
            url: u.get_ref().clone(),
        })
    }
}

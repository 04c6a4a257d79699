//! Header hygiene: what a client sent that must never reach the upstream, and what the
//! gateway adds in its place. Also where "the client's address" is decided
//! ([`client_addr`]), for every feature that needs it.

use std::cmp::Ordering;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use rustls_pki_types::CertificateDer;

use super::bearer::Source;
use crate::config::{Config, RouteConfig};

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
/// `X-Forwarded-Port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Client-Cert` (Envoy's name and format).
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that backends believe because "only our proxy sets them": the client's address and
/// scheme, the original URL, a method override, the client certificate, an identity set by an
/// authenticating proxy. Lower case, `-` (an inbound `_` matches too), sorted for a binary
/// search. README "Headers a client may never send" lists them with their prefixes.
static TRUST_FAMILY: [&str; 43] = [
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "cf-ipcountry",
    "cf-visitor",
    "client-ip",
    "fastly-client-ip",
    "fastly-ssl",
    "fly-client-ip",
    "forwarded",
    "forwarded-for",
    "front-end-https",
    "proxy-auth-cert",
    "proxy-client-ip",
    "proxy-ssl-id",
    "remote-addr",
    "true-client-ip",
    "x-appengine-user-ip",
    "x-arr-clientcert",
    "x-arr-ssl",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-client-dn",
    "x-client-ip",
    "x-client-verify",
    "x-cluster-client-ip",
    "x-custom-ip-authorization",
    "x-forwarded",
    "x-host",
    "x-http-method",
    "x-http-method-override",
    "x-method-override",
    "x-originating-ip",
    "x-proxied-https",
    "x-proxyuser-ip",
    "x-real-ip",
    "x-remote-addr",
    "x-remote-ip",
    "x-request-uri",
    "x-rewrite-url",
    "x-scheme",
    "x-script-name",
    "x-ssl",
    "x-url-scheme",
];

/// Prefixes of the same family: every name that starts with one is removed too
/// (`X-Forwarded-Anything`, `X-Original-URL`, `X-SSL-Client-Verify`, ...).
static TRUST_FAMILY_PREFIXES: [&str; 10] = [
    "ms-aspnetcore-",
    "ssl-client-",
    "wl-proxy-",
    "x-amzn-mtls-",
    "x-client-cert",
    "x-envoy-",
    "x-forwarded-",
    "x-jwtgate-",
    "x-original-",
    "x-ssl-",
];

/// The part of the family that names the user an authenticating proxy let in (oauth2-proxy,
/// ALB, IAP, App Service, Kong, Grafana's auth proxy, Linkerd): removed from clients like the
/// rest, but a claim header may use these names, since the gateway is that proxy here.
/// `X-User`, `X-Auth-User` and `X-Email` are the generic names many auth proxies use.
static PROXY_IDENTITY: [&str; 8] = [
    "l5d-client-id",
    "remote-user",
    "x-auth-user",
    "x-email",
    "x-goog-iap-jwt-assertion",
    "x-remote-user",
    "x-user",
    "x-webauth-user",
];

/// Prefixes of [`PROXY_IDENTITY`].
static PROXY_IDENTITY_PREFIXES: [&str; 8] = [
    "x-amzn-oidc-",
    "x-auth-request-",
    "x-authenticated-",
    "x-consumer-",
    "x-goog-authenticated-user-",
    "x-ms-client-principal",
    "x-ms-token-",
    "x-pomerium-",
];

/// What a trusted proxy may pass on: its client chain and the client's scheme, host and port.
/// Only these exact spellings: `X_Forwarded_For` from a trusted peer is still removed.
static KEPT_FROM_TRUSTED: [&HeaderName; 4] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_FORWARDED_PORT,
];

/// `a` (a header name, lower case) against `b` (a pattern with `-`), reading `_` in `a` as `-`.
fn cmp_folded(a: &[u8], b: &[u8]) -> Ordering {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.iter().map(|c| fold(*c)).cmp(b.iter().copied())
}

fn starts_folded(a: &[u8], prefix: &[u8]) -> bool {
    a.len() >= prefix.len() && cmp_folded(&a[..prefix.len()], prefix) == Ordering::Equal
}

/// True for a header of the trust family (a lower-case name; `_` reads as `-`), which no
/// client may send and no claim header may name.
pub fn is_trust_family(name: &str) -> bool {
    in_lists(name, &TRUST_FAMILY, &TRUST_FAMILY_PREFIXES) || is_proxy_identity(name)
}

/// True for the identity part of the trust family ([`PROXY_IDENTITY`]).
pub fn is_proxy_identity(name: &str) -> bool {
    in_lists(name, &PROXY_IDENTITY, &PROXY_IDENTITY_PREFIXES)
}

/// `name` against a sorted table of exact names and a list of prefixes, `_` read as `-`.
fn in_lists(name: &str, exact: &[impl AsRef<str>], prefixes: &[impl AsRef<str>]) -> bool {
    let n = name.as_bytes();
    exact
        .binary_search_by(|p| cmp_folded(n, p.as_ref().as_bytes()).reverse())
        .is_ok()
        || prefixes
            .iter()
            .any(|p| starts_folded(n, p.as_ref().as_bytes()))
}

/// What the header code needs from the snapshot, built once per snapshot: the claim header
/// names of every route, the site's own strip list, the trusted proxies.
#[derive(Debug, Default)]
pub struct HeaderPlan {
    /// In the form inbound names are compared in: lower case with `_` read as `-`.
    claim_names: Vec<HeaderName>,
    /// `[listen] strip_headers` names (lower case, `-`), sorted.
    strip_exact: Vec<String>,
    /// `[listen] strip_headers` entries that ended in `*`, without it.
    strip_prefixes: Vec<String>,
    /// `[listen] trusted_proxies`.
    trusted: Vec<IpNet>,
    /// `[listen] forward_client_cert`.
    forward_client_cert: bool,
    /// The identity-assertion header names: the default one and `[assertion] header`.
    assertion_names: Vec<HeaderName>,
}

impl HeaderPlan {
    /// Collects the claim header names of all routes and the listener's header settings.
    pub fn new(config: &Config) -> HeaderPlan {
        let mut plan = HeaderPlan::for_routes(&config.routes);
        for s in &config.listen.strip_headers {
            match s.strip_suffix('*') {
                Some(p) => plan.strip_prefixes.push(p.to_owned()),
                None => plan.strip_exact.push(s.clone()),
            }
        }
        // Sorted for the binary search of `in_lists` (the names are already lower case with
        // `-`, the form it compares in).
        plan.strip_exact.sort();
        plan.strip_exact.dedup();
        plan.trusted = config.listen.trusted_proxies.clone();
        plan.forward_client_cert = config.listen.forward_client_cert;
        plan.assertion_names = assertion_names(config);
        plan
    }

    /// A plan from routes alone: no strip list, no trusted proxy, no certificate header.
    pub fn for_routes(routes: &[RouteConfig]) -> HeaderPlan {
        let mut claim_names: Vec<HeaderName> = routes
            .iter()
            .flat_map(|r| r.claim_headers.iter().map(|(h, _)| h.clone()))
            .collect();
        claim_names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        claim_names.dedup();
        HeaderPlan {
            claim_names,
            assertion_names: vec![HeaderName::from_static(
                crate::config::DEFAULT_ASSERTION_HEADER,
            )],
            ..HeaderPlan::default()
        }
    }

    /// True for an identity-assertion header name (the default or the configured one), matched
    /// like claim header names.
    pub fn is_assertion_name(&self, name: &HeaderName) -> bool {
        let n = name.as_str().as_bytes();
        self.assertion_names
            .iter()
            .any(|c| cmp_folded(n, c.as_str().as_bytes()) == Ordering::Equal)
    }

    /// True when an inbound header name is a claim header name, ignoring case (HeaderName is
    /// already lower case) and reading `_` as `-`, since many servers (CGI, WSGI, Rack, PHP)
    /// fold both to the same variable.
    pub fn is_claim_name(&self, name: &HeaderName) -> bool {
        let n = name.as_str().as_bytes();
        self.claim_names
            .iter()
            .any(|c| cmp_folded(n, c.as_str().as_bytes()) == Ordering::Equal)
    }

    /// True when `[listen] strip_headers` names this header (same matching as claim names).
    fn is_site_stripped(&self, name: &HeaderName) -> bool {
        in_lists(name.as_str(), &self.strip_exact, &self.strip_prefixes)
    }

    /// True when the peer is one of `[listen] trusted_proxies`.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        is_trusted(&self.trusted, peer)
    }

    /// The client's address for this request: see [`client_addr`].
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_addr(peer, headers, &self.trusted)
    }

    /// Turns a client's headers into what the upstream receives: strips everything a client
    /// may not send, then adds the gateway's own headers and the claim headers.
    pub fn prepare(
        &self,
        h: &mut HeaderMap,
        f: &Forward<'_>,
        claims: Vec<(&HeaderName, HeaderValue)>,
    ) {
        let trusted = self.is_trusted(f.peer);
        self.strip_request(h, trusted);
        let token_cookie = match (f.token_source, &f.route.token_cookie) {
            (Some(Source::Cookie), Some(name)) if !f.route.forward_token => Some(name.as_str()),
            _ => None,
        };
        join_cookies(h, token_cookie);
        if !f.route.forward_token {
            h.remove(header::AUTHORIZATION);
        }
        let proto = if f.tls { "https" } else { "http" };
        set_forwarded(h, f.client_ip, proto, f.host, trusted);
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
        if self.forward_client_cert {
            if let Some(v) = f.client_cert {
                h.insert(X_FORWARDED_CLIENT_CERT.clone(), v.clone());
            }
        }
        for (name, value) in claims {
            h.insert(name.clone(), value);
        }
    }

    /// Removes hop-by-hop headers, the headers the `Connection` header lists, every inbound
    /// copy of every claim header name, the trust family (except what a trusted peer may pass
    /// on) and the site's `strip_headers`. Runs before the gateway adds its own headers, so
    /// nothing a client sends can remove or replace them.
    pub fn strip_request(&self, headers: &mut HeaderMap, trusted_peer: bool) {
        remove_connection_listed(headers);
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            let family = is_trust_family(name.as_str())
                && !(trusted_peer && KEPT_FROM_TRUSTED.contains(&name));
            if family
                || self.is_claim_name(name)
                || self.is_site_stripped(name)
                || self.is_assertion_name(name)
            {
                doomed.push(name.clone());
            }
        }
        for name in &doomed {
            headers.remove(name);
        }
    }
}

/// The header names an identity assertion may arrive in from a client: the default name on
/// every config (a backend may check it even where the gateway sends none) and the configured.
fn assertion_names(config: &Config) -> Vec<HeaderName> {
    let mut names = vec![HeaderName::from_static(
        crate::config::DEFAULT_ASSERTION_HEADER,
    )];
    if let Some(a) = &config.assertion {
        if !names.contains(&a.header) {
            names.push(a.header.clone());
        }
    }
    names
}

fn is_trusted(trusted: &[IpNet], peer: IpAddr) -> bool {
    if trusted.is_empty() {
        return false;
    }
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; the CIDRs are written as IPv4.
    let peer = peer.to_canonical();
    trusted.iter().any(|n| n.contains(&peer))
}

/// The client's address, the one every feature that needs it (rate limits, anomaly
/// detection, DPoP `htu`) must use: the peer, unless the peer is in `trusted`; then the
/// rightmost address of its `X-Forwarded-For` chain that is not itself trusted (each trusted
/// hop vouches only for the hop before it). An entry that is not an address (`unknown`, junk)
/// stops the walk at the hop that wrote it; a chain of trusted hops only yields its leftmost.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(trusted, client) {
        return client;
    }
    for v in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(v) = v.to_str() else { return client };
        for entry in v.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = parse_hop(entry) else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(trusted, client) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// What [`HeaderPlan::prepare`] needs to know about the request besides its headers.
pub struct Forward<'a> {
    pub route: &'a RouteConfig,
    /// Where the token came from, if one was sent.
    pub token_source: Option<Source>,
    pub tls: bool,
    /// The peer's address ([`crate::server::ConnInfo::peer`]).
    pub peer: IpAddr,
    /// The peer's address as text ([`crate::server::ConnInfo::peer_ip`]).
    pub client_ip: &'a HeaderValue,
    /// `X-Forwarded-Client-Cert` for the certificate verified in the TLS handshake, if any
    /// ([`crate::server::ConnInfo::client_cert_header`]).
    pub client_cert: Option<&'a HeaderValue>,
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

/// Sets `X-Forwarded-For`, `-Proto` and `-Host`. From a trusted peer its chain is kept (repeated
/// headers merged into one) with the peer appended, and its `-Proto`/`-Host` (and `-Port`) are
/// kept when sent; from anyone else they were stripped, and the gateway's own are set.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
    trusted_peer: bool,
) {
    let xff = if trusted_peer && headers.contains_key(&X_FORWARDED_FOR) {
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
    headers.insert(
        X_FORWARDED_FOR.clone(),
        xff.unwrap_or_else(|| client_ip.clone()),
    );
    if !(trusted_peer && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if trusted_peer && headers.contains_key(&X_FORWARDED_HOST) {
        return;
    }
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// URL encoding of the PEM in `Cert="..."`: everything but unreserved characters, as Envoy does.
const XFCC_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `X-Forwarded-Client-Cert` for a verified client certificate, in Envoy's format:
/// `Hash=<SHA-256 of the DER, hex>;Cert="<URL-encoded PEM>"`, then `Subject="..."` and one
/// `URI=` / `DNS=` per subject alternative name of that kind. A part whose text is not
/// printable ASCII is left out rather than mangled; `"` and `\` inside quotes are escaped.
pub fn client_cert_value(cert: &CertificateDer<'_>) -> Option<HeaderValue> {
    let der = cert.as_ref();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let pem = pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    let mut v = String::with_capacity(96 + pem.len() * 3 / 2);
    v.push_str("Hash=");
    for b in digest.as_ref() {
        v.push(char::from(HEX[usize::from(b >> 4)]));
        v.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    v.push_str(";Cert=\"");
    v.extend(percent_encoding::utf8_percent_encode(&pem, XFCC_ENCODE));
    v.push('"');
    if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(der) {
        push_quoted(&mut v, "Subject", &parsed.subject().to_string());
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::URI(u) => push_quoted(&mut v, "URI", u),
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        push_quoted(&mut v, "DNS", d)
                    }
                    _ => {}
                }
            }
        }
    }
    HeaderValue::from_str(&v).ok()
}

/// Appends `;key="value"` with `"` and `\` escaped; nothing when the value is not printable
/// ASCII (a header must not carry it, and a rewritten value would be a different name).
fn push_quoted(out: &mut String, key: &str, value: &str) {
    if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return;
    }
    out.push(';');
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
    for (i, b) in bytes.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Joins every `Cookie` field into one, as RFC 9113 §8.2.3 asks before HTTP/1.1 (HTTP/2
/// clients send each cookie as its own field, and many backends read only the first), leaving
/// out every cookie that reads as `drop` (a token the upstream must not see), however it is
/// spelled ([`super::bearer::same_name`]) and also where a `,` hides it inside another pair.
pub fn join_cookies(headers: &mut HeaderMap, drop: Option<&str>) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(_), more) = (values.next(), values.next().is_some()) else {
        return;
    };
    if !more && drop.is_none() {
        return;
    }
    let is_dropped = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        drop.is_some_and(|d| super::bearer::same_name(name, d))
    };
    let mut joined = String::new();
    let mut push = |c: &str| {
        if !joined.is_empty() {
            joined.push_str("; ");
        }
        joined.push_str(c);
    };
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for c in v.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            if is_dropped(c) {
                continue;
            }
            if drop.is_some() && c.contains(',') && c.split(',').any(|p| is_dropped(p.trim())) {
                let kept: Vec<&str> = c
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && !is_dropped(p))
                    .collect();
                if !kept.is_empty() {
                    push(&kept.join(", "));
                }
                continue;
            }
            push(c);
        }
    }
    headers.remove(header::COOKIE);
    if !joined.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_family_list_is_sorted_and_matches_spellings() {
        assert!(TRUST_FAMILY.windows(2).all(|w| w[0] < w[1]));
        assert!(PROXY_IDENTITY.windows(2).all(|w| w[0] < w[1]));
        assert!(is_trust_family("x_remote_user") && is_proxy_identity("x-auth-request-email"));
        assert!(!is_proxy_identity("x-real-ip"));
        for name in [
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "x-forwarded-anything",
            "x_forwarded_prefix",
            "x-original-url",
            "x-ssl-client-verify",
            "ssl-client-cert",
            "x-http-method-override",
            "true-client-ip",
            "x-client-cert",
            "x-arr-clientcert",
            "remote-addr",
            "x_custom_ip_authorization",
        ] {
            assert!(is_trust_family(name), "{name}");
        }
        for name in ["x-user", "x_auth_user", "x-email", "x-pomerium-claim-email"] {
            assert!(is_proxy_identity(name) && is_trust_family(name), "{name}");
        }
        for name in [
            "x-request-id",
            "accept",
            "x-auth-sub",
            "x-real",
            "x-forwarded",
        ] {
            assert_eq!(is_trust_family(name), name == "x-forwarded", "{name}");
        }
    }

    #[test]
    fn client_addr_is_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.1.1.1"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_addr(ip("10.0.0.5"), &h, &trusted), ip("1.2.3.4"));
        assert_eq!(client_addr(ip("::1"), &h, &trusted), ip("1.2.3.4"));
        // An untrusted peer's chain is never read.
        assert_eq!(client_addr(ip("9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
        // IPv4-mapped peers are compared as IPv4.
        assert_eq!(
            client_addr(ip("::ffff:10.0.0.5"), &h, &trusted),
            ip("1.2.3.4")
        );
        let mut junk = HeaderMap::new();
        junk.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("1.2.3.4, unknown, 10.0.0.9"),
        );
        assert_eq!(client_addr(ip("10.0.0.5"), &junk, &trusted), ip("10.0.0.9"));
        let mut ported = HeaderMap::new();
        ported.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(
            client_addr(ip("10.0.0.5"), &ported, &trusted),
            ip("2001:db8::1")
        );
        let mut all = HeaderMap::new();
        all.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("10.0.0.7, 10.0.0.8"),
        );
        assert_eq!(client_addr(ip("10.0.0.5"), &all, &trusted), ip("10.0.0.7"));
    }

    #[test]
    fn join_cookies_drops_every_spelling_of_the_token_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; Access_Token =x"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("b=2, access%5Ftoken=y; c=3"),
        );
        join_cookies(&mut h, Some("access_token"));
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
    }
}

//! `gateway.toml`: parsed as written ([`raw`]), then validated into runtime types, reporting
//! every error at once as `file:line:col: message`.

pub mod raw;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use http::Method;
use toml::Spanned;

use crate::alg::Alg;
use raw::{RawConfig, RawIssuer, RawRequirement, RawRoute};

/// Where in the config file something was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

/// One problem in the config, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub loc: Loc,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.loc.line,
            self.loc.col,
            self.message
        )
    }
}

/// Every problem found in a config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it resolve against its directory.
    pub path: PathBuf,
    pub listen: Listen,
    pub admin: Option<Admin>,
    pub limits: Limits,
    pub issuers: Vec<IssuerConfig>,
    pub routes: Vec<RouteConfig>,
}

/// `[listen]`.
#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub certificates: Vec<CertFiles>,
    /// Where `tls` is written, for certificate errors.
    pub tls_loc: Loc,
    /// Peers whose `X-Forwarded-For`/`-Proto`/`-Host`/`-Port` are kept (SPEC "Connections and
    /// trust"); empty: no peer is trusted.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Site-specific headers removed from every client request, lower case with `-` for `_`; a
    /// trailing `*` makes the entry a prefix.
    pub strip_headers: Vec<String>,
    /// Sets `X-Forwarded-Client-Cert` from the verified client certificate (mTLS only).
    pub forward_client_cert: bool,
}

/// The default certificate and optional client CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_token_bytes: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// Longest pause between request body data; a stalled upload is cut off.
    pub body_read_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Verified tokens remembered (0 turns the cache off); read once at start.
    pub token_cache_entries: usize,
    /// Open client connections per listener; past it new ones wait in the backlog.
    pub max_connections: usize,
    /// Concurrent streams one HTTP/2 connection may open.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_token_bytes: 8192,
            max_header_bytes: 16384,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(25),
            token_cache_entries: 10_000,
            max_connections: 10_000,
            max_concurrent_streams: 100,
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    JwksUrl(String),
    DiscoveryUrl(String),
    JwksFile(PathBuf),
    PemFiles(Vec<PathBuf>),
    HmacEnv(String),
    HmacFile(PathBuf),
}

/// One `[[issuer]]`, validated.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub source: KeySource,
    /// Where the key source is written, for errors found while loading keys.
    pub source_loc: Loc,
    pub leeway: Duration,
    pub refresh: Duration,
    /// Accepted `typ` values, compared case-insensitively; an absent `typ` is always accepted.
    pub typ: Vec<String>,
}

/// `auth = required | optional | none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Optional,
    None,
}

/// A host pattern: exact, or `*.example.com` (one or more labels before the suffix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Exact(String),
    /// The suffix including its leading dot: `.example.com`.
    Wildcard(String),
}

/// Where a claim is read from: a top-level name or a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPath {
    Name(String),
    Pointer(String),
}

impl ClaimPath {
    fn parse(s: &str) -> ClaimPath {
        if s.starts_with('/') {
            ClaimPath::Pointer(s.to_owned())
        } else {
            ClaimPath::Name(s.to_owned())
        }
    }

    /// Looks the claim up in a claims object.
    pub fn get<'a>(&self, claims: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        match self {
            ClaimPath::Name(n) => claims.get(n),
            ClaimPath::Pointer(p) => claims.pointer(p),
        }
    }

    /// The path as written in the config.
    pub fn as_str(&self) -> &str {
        match self {
            ClaimPath::Name(s) | ClaimPath::Pointer(s) => s,
        }
    }
}

/// A claim requirement of a route: every listed value must be present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub claim: ClaimPath,
    pub values: Vec<String>,
}

/// The upstream a route forwards to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// A base path prepended to the forwarded path; empty for none.
    pub base_path: String,
    /// The URL as written.
    pub url: String,
}

/// One `[[route]]`, validated.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    pub methods: Option<Vec<Method>>,
    pub upstream: Upstream,
    pub auth: AuthMode,
    /// Indices into [`Config::issuers`].
    pub issuers: Vec<usize>,
    pub require: Vec<Requirement>,
    pub forward_token: bool,
    pub websocket: bool,
    pub upstream_ca: Option<PathBuf>,
    pub upstream_http2: bool,
    pub token_query: Option<String>,
    pub token_cookie: Option<String>,
    pub claim_headers: Vec<(HeaderName, ClaimPath)>,
    /// Where the route is written, for warnings.
    pub loc: Loc,
}

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

/// Leeway beyond this hides clock problems rather than absorbing skew.
const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// HMAC secrets shorter than this are guessable offline from any token (RFC 7518 §3.2 asks for
/// at least the hash size; 32 bytes is the HS256 floor).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let fail = |message: String| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                loc: Loc { line: 1, col: 1 },
                message,
            }])
        };
        let bytes = crate::files::read_capped(path, crate::files::MAX_CONFIG_BYTES)
            .map_err(|e| fail(format!("cannot read config file: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| fail("cannot read config file: it is not UTF-8 text".into()))?;
        Config::parse(path, &text)
    }

    /// Validates config text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            file: path.to_owned(),
            base: path.parent().map(Path::to_owned).unwrap_or_default(),
            text,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            errors: Vec::new(),
        };
        let table = match toml::de::DeTable::parse(text) {
            Ok(t) => t,
            Err(e) => {
                let at = e.span().map(|s| s.start).unwrap_or(0);
                v.error_at(at, e.message().trim_end().to_owned());
                return Err(ConfigErrors(v.errors));
            }
        };
        let mut unknown: Vec<Vec<Seg>> = Vec::new();
        let de = match toml::Deserializer::parse(text) {
            Ok(de) => de,
            Err(e) => {
                let at = e.span().map(|s| s.start).unwrap_or(0);
                v.error_at(at, e.message().trim_end().to_owned());
                return Err(ConfigErrors(v.errors));
            }
        };
        let parsed: Result<RawConfig, _> =
            serde_ignored::deserialize(de, |path| unknown.push(segments(&path)));
        for path in &unknown {
            let at = locate(table.get_ref(), path).unwrap_or(0);
            v.error_at(at, format!("unknown key {}", describe_path(path)));
        }
        let raw = match parsed {
            Ok(raw) => raw,
            Err(e) => {
                let at = e.span().map(|s| s.start).unwrap_or(0);
                v.error_at(at, e.message().trim_end().to_owned());
                v.errors.sort_by_key(|e| (e.loc.line, e.loc.col));
                return Err(ConfigErrors(v.errors));
            }
        };
        let config = v.config(raw);
        if v.errors.is_empty() {
            if let Some(config) = config {
                return Ok(config);
            }
        }
        v.errors.sort_by_key(|e| (e.loc.line, e.loc.col));
        Err(ConfigErrors(v.errors))
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(self.path.parent().unwrap_or(Path::new("")), p)
    }

    /// The location of a byte offset in config text, for key-loading errors.
    pub fn error(&self, loc: Loc, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            loc,
            message: message.into(),
        }
    }
}

/// One step of a path into the TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path as P;
    let mut out = match path {
        P::Root => return Vec::new(),
        P::Seq { parent, .. }
        | P::Map { parent, .. }
        | P::Some { parent }
        | P::NewtypeStruct { parent }
        | P::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        P::Seq { index, .. } => out.push(Seg::Index(*index)),
        // toml's Spanned wrapper shows up as private keys; they are not part of the document.
        P::Map { key, .. } if !key.starts_with("$__") => out.push(Seg::Key(key.clone())),
        _ => {}
    }
    out
}

/// The byte offset of the key (or array element) a path names.
fn locate(table: &toml::de::DeTable<'_>, path: &[Seg]) -> Option<usize> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (k, v) = table.get_key_value(first.as_str())?;
    if rest.is_empty() {
        return Some(k.span().start);
    }
    let mut value = v;
    for (i, seg) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        match (seg, value.get_ref()) {
            (Seg::Key(key), toml::de::DeValue::Table(t)) => {
                let (k, v) = t.get_key_value(key.as_str())?;
                if last {
                    return Some(k.span().start);
                }
                value = v;
            }
            (Seg::Index(n), toml::de::DeValue::Array(a)) => {
                value = a.get(*n)?;
                if last {
                    return Some(value.span().start);
                }
            }
            _ => return Some(value.span().start),
        }
    }
    Some(value.span().start)
}

/// `colour` in `[[issuer]]` #1 → "`colour` in [[issuer]] number 1".
fn describe_path(path: &[Seg]) -> String {
    let name = match path.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "?",
    };
    let section: Vec<String> = path[..path.len().saturating_sub(1)]
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.clone()),
            Seg::Index(_) => None,
        })
        .collect();
    if name.contains("secret") || name.contains("password") {
        format!("{name:?}: secrets are never read from this file; use hmac_secret_env (environment) or hmac_secret_file (a mounted file)")
    } else if section.is_empty() {
        format!("{name:?} at the top level")
    } else {
        format!(
            "{name:?} in [{}] (a misspelled key would silently change behaviour, so it is refused)",
            section.join(".")
        )
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// The `[[issuer]]` names as written, for routes to look theirs up in constant time.
struct IssuerNames<'a> {
    index: HashMap<&'a str, usize>,
    count: usize,
}

struct Validator<'t> {
    file: PathBuf,
    base: PathBuf,
    text: &'t str,
    /// Byte offset of each line's start, so locating an offset is a binary search rather than
    /// a scan from the top (which made validation quadratic in the number of routes).
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn loc(&self, offset: usize) -> Loc {
        let offset = if self.text.is_char_boundary(offset.min(self.text.len())) {
            offset.min(self.text.len())
        } else {
            self.text.len()
        };
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self.text[start..offset].chars().count() + 1;
        Loc { line, col }
    }

    fn error_at(&mut self, offset: usize, message: String) {
        let loc = self.loc(offset);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            loc,
            message,
        });
    }

    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.error_at(at.span().start, message.into());
    }

    fn duration(&mut self, s: &Option<Spanned<String>>, key: &str, default: Duration) -> Duration {
        let Some(s) = s else { return default };
        match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(s, format!("{key} must be greater than zero"));
                default
            }
            Err(e) => {
                self.error(
                    s,
                    format!(
                        "{key}: {:?} is not a duration: {e} (write one such as \"250ms\", \"30s\" or \"5m\")",
                        s.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn addr(&mut self, s: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match s.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    s,
                    format!(
                        "{key} {:?} is not an IP address and port such as \"0.0.0.0:8443\"",
                        s.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn file(&mut self, s: &Spanned<String>) -> PathBuf {
        resolve(&self.base, Path::new(s.get_ref()))
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let listen = self.listen(&raw.listen);
        let admin = raw
            .admin
            .as_ref()
            .and_then(|a| self.addr(&a.addr, "admin addr").map(|addr| Admin { addr }));
        let limits = self.limits(&raw.limits);
        let issuers: Vec<Option<IssuerConfig>> = {
            let mut names = HashSet::new();
            // The `iss` strings, keyed without a trailing slash: a token's iss picks one issuer
            // by exact match, so a second [[issuer]] with the same iss would never verify
            // anything, and two that differ only by a trailing slash are refused too (almost
            // always a typo that leaves one of them dead).
            let mut iss_seen: HashMap<&str, (&str, &str)> = HashMap::new();
            raw.issuer
                .iter()
                .map(|i| {
                    let ri = i.get_ref();
                    let duplicate_name = !names.insert(ri.name.get_ref().clone());
                    if duplicate_name {
                        self.error(
                            &ri.name,
                            format!("issuer name {:?} is used twice", ri.name.get_ref()),
                        );
                    }
                    let iss = ri.issuer.get_ref().as_str();
                    // One error per repeated [[issuer]] block: a repeated name says it already.
                    match iss_seen.get(iss.trim_end_matches('/')).filter(|_| !duplicate_name) {
                        Some((other_name, other_iss)) if *other_iss == iss => self.error(
                            &ri.issuer,
                            format!("issuer {:?}: issuer {iss:?} is already the issuer of [[issuer]] {other_name:?}; a token's iss selects one [[issuer]], so this one would never be used (merge them)", ri.name.get_ref()),
                        ),
                        Some((other_name, other_iss)) => self.error(
                            &ri.issuer,
                            format!("issuer {:?}: issuer {iss:?} differs from {other_iss:?} ([[issuer]] {other_name:?}) only by a trailing slash; a token's iss must equal one exactly, so keep the one your tokens carry", ri.name.get_ref()),
                        ),
                        None => {
                            iss_seen.insert(iss.trim_end_matches('/'), (ri.name.get_ref(), iss));
                        }
                    }
                    self.issuer(ri)
                })
                .collect()
        };
        // Routes name issuers as written, so they are checked even when an issuer is invalid.
        let mut issuer_names: HashMap<&str, usize> = HashMap::with_capacity(raw.issuer.len());
        for (n, i) in raw.issuer.iter().enumerate() {
            issuer_names
                .entry(i.get_ref().name.get_ref().as_str())
                .or_insert(n);
        }
        let issuer_names = IssuerNames {
            index: issuer_names,
            count: raw.issuer.len(),
        };
        let mut names = HashSet::new();
        let mut folded_prefixes = HashMap::new();
        let mut routes = Vec::with_capacity(raw.route.len());
        for r in &raw.route {
            if !names.insert(r.get_ref().name.get_ref().clone()) {
                self.error(
                    &r.get_ref().name,
                    format!("route name {:?} is used twice", r.get_ref().name.get_ref()),
                );
            }
            if let Some(route) = self.route(r, &issuer_names) {
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
        if raw.route.is_empty() {
            self.error_at(
                0,
                "no [[route]] is defined: the gateway would answer 404 to everything".into(),
            );
        }
        let issuers = issuers.into_iter().collect::<Option<Vec<_>>>()?;
        Some(Config {
            path: self.file.clone(),
            listen: listen?,
            admin,
            limits,
            issuers,
            routes,
        })
    }

    fn listen(&mut self, raw: &Spanned<raw::RawListen>) -> Option<Listen> {
        let l = raw.get_ref();
        let addr = self.addr(&l.addr, "listen addr");
        let tls = l.tls.as_ref().map(|t| {
            let t = t.get_ref();
            TlsFiles {
                cert: self.file(&t.cert),
                key: self.file(&t.key),
                client_ca: t.client_ca.as_ref().map(|c| self.file(c)),
            }
        });
        let certificates: Vec<CertFiles> = l
            .certificates
            .iter()
            .map(|c| CertFiles {
                cert: self.file(&c.get_ref().cert),
                key: self.file(&c.get_ref().key),
            })
            .collect();
        if !certificates.is_empty() && tls.is_none() {
            self.error(
                &l.certificates[0],
                "[[listen.certificates]] needs [listen] tls, whose certificate is the default",
            );
        }
        let tls_loc = l
            .tls
            .as_ref()
            .map_or(Loc { line: 1, col: 1 }, |t| self.loc(t.span().start));
        let trusted_proxies = l
            .trusted_proxies
            .as_ref()
            .map(|list| list.get_ref().iter().filter_map(|c| self.cidr(c)).collect())
            .unwrap_or_default();
        let strip_headers = l
            .strip_headers
            .as_ref()
            .map(|list| {
                list.get_ref()
                    .iter()
                    .filter_map(|h| self.strip_header(h))
                    .collect()
            })
            .unwrap_or_default();
        Some(Listen {
            addr: addr?,
            tls,
            certificates,
            tls_loc,
            trusted_proxies,
            strip_headers,
            forward_client_cert: l.forward_client_cert.as_ref().is_none_or(|f| *f.get_ref()),
        })
    }

    /// One `trusted_proxies` entry: a CIDR in canonical form, or one address.
    fn cidr(&mut self, c: &Spanned<String>) -> Option<ipnet::IpNet> {
        let text = c.get_ref().trim();
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Some(ipnet::IpNet::from(ip));
        }
        match text.parse::<ipnet::IpNet>() {
            // "10.0.0.1/8" trusts all of 10/8, which is rarely what was meant: ask for the
            // network itself.
            Ok(net) if net.trunc() != net => {
                self.error(
                    c,
                    format!(
                        "trusted_proxies: {text:?} has host bits set: write {:?} (or the single address {:?})",
                        net.trunc().to_string(),
                        net.addr().to_string()
                    ),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.error(
                    c,
                    format!("trusted_proxies: {text:?} is not a CIDR such as \"10.0.0.0/8\" or \"::1/128\", nor an IP address"),
                );
                None
            }
        }
    }

    /// One `strip_headers` entry: a header name, or a prefix ending in `*`.
    fn strip_header(&mut self, h: &Spanned<String>) -> Option<String> {
        let text = h.get_ref();
        let (name, star) = match text.strip_suffix('*') {
            Some(p) => (p, "*"),
            None => (text.as_str(), ""),
        };
        if name.is_empty() || HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.error(
                h,
                format!("strip_headers: {text:?} is not a header name (a trailing * makes it a prefix, such as \"X-Internal-*\")"),
            );
            return None;
        }
        let protected = ["host", "content-length", "transfer-encoding"];
        let norm = format!("{}{star}", name.to_ascii_lowercase().replace('_', "-"));
        if protected.iter().any(|p| {
            if star.is_empty() {
                norm == *p
            } else {
                p.starts_with(&norm[..norm.len() - 1])
            }
        }) {
            self.error(
                h,
                format!("strip_headers: {text:?} would remove Host or the body's framing, which requests need"),
            );
            return None;
        }
        Some(norm)
    }

    fn limits(&mut self, raw: &raw::RawLimits) -> Limits {
        let d = Limits::default();
        let mut size = |v: &Option<Spanned<i64>>, key: &str, min: i64, max: i64, default: usize| {
            let Some(v) = v else { return default };
            if (min..=max).contains(v.get_ref()) {
                usize::try_from(*v.get_ref()).unwrap_or(default)
            } else {
                self.error(v, format!("{key} must be between {min} and {max}"));
                default
            }
        };
        let max_token_bytes = size(
            &raw.max_token_bytes,
            "max_token_bytes",
            256,
            1 << 20,
            d.max_token_bytes,
        );
        let max_header_bytes = size(
            &raw.max_header_bytes,
            "max_header_bytes",
            8192,
            1 << 20,
            d.max_header_bytes,
        );
        let token_cache_entries = size(
            &raw.token_cache_entries,
            "token_cache_entries",
            0,
            1_000_000,
            d.token_cache_entries,
        );
        let max_connections = size(
            &raw.max_connections,
            "max_connections",
            1,
            1_000_000,
            d.max_connections,
        );
        let max_concurrent_streams = size(
            &raw.max_concurrent_streams,
            "max_concurrent_streams",
            1,
            10_000,
            d.max_concurrent_streams as usize,
        );
        Limits {
            max_connections,
            // Within 1..=10_000 by the check above.
            max_concurrent_streams: u32::try_from(max_concurrent_streams)
                .unwrap_or(d.max_concurrent_streams),
            max_token_bytes,
            max_header_bytes,
            header_read_timeout: self.duration(
                &raw.header_read_timeout,
                "header_read_timeout",
                d.header_read_timeout,
            ),
            body_read_timeout: self.duration(
                &raw.body_read_timeout,
                "body_read_timeout",
                d.body_read_timeout,
            ),
            upstream_connect_timeout: self.duration(
                &raw.upstream_connect_timeout,
                "upstream_connect_timeout",
                d.upstream_connect_timeout,
            ),
            upstream_timeout: self.duration(
                &raw.upstream_timeout,
                "upstream_timeout",
                d.upstream_timeout,
            ),
            shutdown_grace: self.duration(&raw.shutdown_grace, "shutdown_grace", d.shutdown_grace),
            token_cache_entries,
        }
    }

    fn strings(&mut self, list: &Spanned<Vec<Spanned<String>>>, key: &str) -> Vec<String> {
        if list.get_ref().is_empty() {
            self.error(list, format!("{key} must not be empty"));
        }
        list.get_ref().iter().map(|s| s.get_ref().clone()).collect()
    }

    fn issuer(&mut self, i: &RawIssuer) -> Option<IssuerConfig> {
        let name = i.name.get_ref().clone();
        let before = self.errors.len();
        if name.is_empty() {
            self.error(&i.name, "issuer name must not be empty");
        }
        if i.issuer.get_ref().is_empty() {
            self.error(
                &i.issuer,
                format!("issuer {name:?}: issuer (the expected iss) must not be empty"),
            );
        }
        let audiences = self.strings(&i.audiences, &format!("issuer {name:?}: audiences"));
        let mut algorithms = Vec::new();
        if i.algorithms.get_ref().is_empty() {
            self.error(
                &i.algorithms,
                format!("issuer {name:?}: algorithms must not be empty"),
            );
        }
        for a in i.algorithms.get_ref() {
            match a.get_ref().parse::<Alg>() {
                Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                Ok(_) => {}
                Err(e) => self.error(a, format!("issuer {name:?}: {e}")),
            }
        }
        let mut sources: Vec<(KeySource, Loc)> = Vec::new();
        if let Some(u) = &i.jwks_url {
            self.url_ok(u, &name, "jwks_url");
            sources.push((
                KeySource::JwksUrl(u.get_ref().clone()),
                self.loc(u.span().start),
            ));
        }
        if let Some(u) = &i.discovery_url {
            self.url_ok(u, &name, "discovery_url");
            sources.push((
                KeySource::DiscoveryUrl(u.get_ref().clone()),
                self.loc(u.span().start),
            ));
        }
        if let Some(f) = &i.jwks_file {
            sources.push((KeySource::JwksFile(self.file(f)), self.loc(f.span().start)));
        }
        if let Some(k) = &i.keys {
            if k.get_ref().is_empty() {
                self.error(
                    k,
                    format!("issuer {name:?}: keys must list at least one PEM file"),
                );
            }
            let files = k.get_ref().iter().map(|f| self.file(f)).collect();
            sources.push((KeySource::PemFiles(files), self.loc(k.span().start)));
        }
        if let Some(e) = &i.hmac_secret_env {
            sources.push((
                KeySource::HmacEnv(e.get_ref().clone()),
                self.loc(e.span().start),
            ));
        }
        if let Some(f) = &i.hmac_secret_file {
            sources.push((KeySource::HmacFile(self.file(f)), self.loc(f.span().start)));
        }
        let issuer_at = self.loc(i.name.span().start);
        let (source, source_loc) = match sources.len() {
            1 => sources.pop()?,
            0 => {
                self.error(
                    &i.name,
                    format!("issuer {name:?} has no keys: set one of jwks_url, discovery_url, jwks_file, keys, hmac_secret_env, hmac_secret_file"),
                );
                (KeySource::PemFiles(Vec::new()), issuer_at)
            }
            _ => {
                self.error(
                    &i.name,
                    format!("issuer {name:?} sets more than one key source: keep exactly one of jwks_url, discovery_url, jwks_file, keys, hmac_secret_env, hmac_secret_file"),
                );
                (KeySource::PemFiles(Vec::new()), issuer_at)
            }
        };
        let hmac_source = matches!(source, KeySource::HmacEnv(_) | KeySource::HmacFile(_));
        let public_only = matches!(
            source,
            KeySource::JwksUrl(_) | KeySource::DiscoveryUrl(_) | KeySource::PemFiles(_)
        );
        for a in &algorithms {
            if hmac_source && !a.is_hmac() {
                self.error(&i.algorithms, format!("issuer {name:?}: {a} needs a public key, but the key source is an HMAC secret"));
            }
            if public_only && a.is_hmac() {
                self.error(&i.algorithms, format!("issuer {name:?}: {a} needs a shared secret, but the key source only holds public keys (use hmac_secret_env, hmac_secret_file or a jwks_file with \"oct\" keys)"));
            }
        }
        let leeway = self.duration(&i.leeway, "leeway", Duration::from_secs(30));
        if leeway > MAX_LEEWAY {
            if let Some(l) = &i.leeway {
                self.error(l, format!("issuer {name:?}: leeway must be at most 5m"));
            }
        }
        let refresh = self.duration(&i.refresh, "refresh", Duration::from_secs(300));
        let typ = match &i.typ {
            Some(t) => self.strings(t, &format!("issuer {name:?}: typ")),
            None => vec!["JWT".into(), "at+jwt".into(), "application/at+jwt".into()],
        };
        if self.errors.len() > before {
            return None;
        }
        Some(IssuerConfig {
            name,
            issuer: i.issuer.get_ref().clone(),
            audiences,
            algorithms,
            source,
            source_loc,
            leeway,
            refresh,
            typ,
        })
    }

    fn url_ok(&mut self, u: &Spanned<String>, issuer: &str, key: &str) {
        match u.get_ref().parse::<http::Uri>() {
            Ok(uri) if uri.authority().is_some_and(|a| a.as_str().contains('@')) => self.error(
                u,
                format!("issuer {issuer:?}: {key} must not carry credentials: they would show in logs and /config"),
            ),
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() => {}
            _ => self.error(
                u,
                format!("issuer {issuer:?}: {key} must be an http:// or https:// URL"),
            ),
        }
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
            other => {
                self.error(
                    &r.auth,
                    format!(
                        "route {name:?}: auth {other:?} must be one of required, optional, none"
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
        let token_query = r.token_query.as_ref().map(|q| q.get_ref().clone());
        let token_cookie = r.token_cookie.as_ref().map(|c| c.get_ref().clone());
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
            loc,
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

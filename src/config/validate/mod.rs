//! Raw config to runtime types. Every problem is collected with its position rather than
//! returned at the first, so one run of `jwtgate check` lists them all.

mod issuer;
mod listen;
mod route;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::locate::LineIndex;
use super::raw::RawConfig;
use super::types::resolve;
use super::{Admin, Config, ConfigError, IssuerConfig, Loc};

/// The `[[issuer]]` names as written, for routes to look theirs up in constant time.
struct IssuerNames<'a> {
    index: HashMap<&'a str, usize>,
    count: usize,
}

/// Collects the errors of one config text while building its runtime types.
pub(super) struct Validator<'t> {
    file: PathBuf,
    base: PathBuf,
    lines: LineIndex<'t>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'t> Validator<'t> {
    /// A validator for `text`, read from `path`.
    pub(super) fn new(path: &Path, text: &'t str) -> Self {
        Validator {
            file: path.to_owned(),
            base: path.parent().map(Path::to_owned).unwrap_or_default(),
            lines: LineIndex::new(text),
            errors: Vec::new(),
        }
    }
}

impl Validator<'_> {
    fn loc(&self, offset: usize) -> Loc {
        self.lines.loc(offset)
    }

    pub(super) fn error_at(&mut self, offset: usize, message: String) {
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

    pub(super) fn config(&mut self, raw: RawConfig) -> Option<Config> {
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

    fn strings(&mut self, list: &Spanned<Vec<Spanned<String>>>, key: &str) -> Vec<String> {
        if list.get_ref().is_empty() {
            self.error(list, format!("{key} must not be empty"));
        }
        list.get_ref().iter().map(|s| s.get_ref().clone()).collect()
    }
}

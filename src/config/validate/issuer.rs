//! One `[[issuer]]`: its `iss`, audiences, algorithms and key source.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::alg::Alg;
use crate::config::raw::RawIssuer;
use crate::config::{DpopConfig, IssuerConfig, KeySource, Loc};

/// Leeway beyond this hides clock problems rather than absorbing skew.
const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Longest DPoP proof window: a proof older than this is not "fresh" (RFC 9449 §11.1).
const MAX_DPOP_AGE: Duration = Duration::from_secs(300);

/// The `[[issuer]]` names as written, for routes to look theirs up in constant time.
pub(super) struct IssuerNames<'a> {
    pub(super) index: HashMap<&'a str, usize>,
    pub(super) count: usize,
}

impl<'a> IssuerNames<'a> {
    /// The first `[[issuer]]` of each name, by position.
    pub(super) fn new(raw: &'a [Spanned<RawIssuer>]) -> Self {
        let mut issuer_names: HashMap<&str, usize> = HashMap::with_capacity(raw.len());
        for (n, i) in raw.iter().enumerate() {
            issuer_names
                .entry(i.get_ref().name.get_ref().as_str())
                .or_insert(n);
        }
        IssuerNames {
            index: issuer_names,
            count: raw.len(),
        }
    }
}

impl Validator<'_> {
    /// Each `[[issuer]]` validated (`None` where invalid); reports names and `iss` values that
    /// repeat.
    pub(super) fn issuers(&mut self, raw: &[Spanned<RawIssuer>]) -> Vec<Option<IssuerConfig>> {
        let mut names = HashSet::new();
        // The `iss` strings, keyed without a trailing slash: a token's iss picks one issuer
        // by exact match, so a second [[issuer]] with the same iss would never verify
        // anything, and two that differ only by a trailing slash are refused too (almost
        // always a typo that leaves one of them dead).
        let mut iss_seen: HashMap<&str, (&str, &str)> = HashMap::new();
        raw.iter()
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
        let dpop = self.dpop(i, &name);
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
            dpop,
        })
    }

    /// The `dpop_*` keys: asymmetric proof algorithms only, a bounded `iat` window, and a
    /// nonce key variable that is a plausible environment name.
    fn dpop(&mut self, i: &RawIssuer, name: &str) -> DpopConfig {
        let d = DpopConfig::default();
        let mut algorithms = Vec::new();
        if let Some(list) = &i.dpop_algorithms {
            if list.get_ref().is_empty() {
                self.error(
                    list,
                    format!("issuer {name:?}: dpop_algorithms must not be empty"),
                );
            }
            for a in list.get_ref() {
                match a.get_ref().parse::<Alg>() {
                    Ok(alg) if alg.is_hmac() => self.error(
                        a,
                        format!("issuer {name:?}: dpop_algorithms: {alg} is symmetric; a DPoP proof is signed with the client's private key, so only asymmetric algorithms (ES256, ES384, EdDSA, PS256, RS256, ...) can be proofs"),
                    ),
                    Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                    Ok(_) => {}
                    Err(e) => self.error(a, format!("issuer {name:?}: dpop_algorithms: {e}")),
                }
            }
        }
        let max_age = self.duration(&i.dpop_max_age, "dpop_max_age", d.max_age);
        if max_age > MAX_DPOP_AGE {
            if let Some(m) = &i.dpop_max_age {
                self.error(m, format!("issuer {name:?}: dpop_max_age must be at most 5m: proofs are meant to be fresh, and the replay cache holds every jti for this long"));
            }
        }
        let nonce_key_env = match &i.dpop_nonce_key_env {
            Some(e) if e.get_ref().is_empty() || e.get_ref().contains(['=', '\0']) => {
                self.error(
                    e,
                    format!(
                        "issuer {name:?}: dpop_nonce_key_env must name an environment variable"
                    ),
                );
                d.nonce_key_env.clone()
            }
            Some(e) => e.get_ref().clone(),
            None => d.nonce_key_env.clone(),
        };
        DpopConfig {
            algorithms: if algorithms.is_empty() {
                d.algorithms
            } else {
                algorithms
            },
            max_age,
            nonce: i.dpop_nonce.as_ref().is_some_and(|n| *n.get_ref()),
            nonce_key_env,
        }
    }

    fn url_ok(&mut self, u: &Spanned<String>, issuer: &str, key: &str) {
        use crate::keys::remote::{key_url_problem, UrlProblem};
        let problem = match u.get_ref().parse::<http::Uri>() {
            Ok(uri) => key_url_problem(&uri),
            Err(_) => Some(UrlProblem::NotHttp),
        };
        match problem {
            None => {}
            Some(UrlProblem::Credentials) => self.error(
                u,
                format!("issuer {issuer:?}: {key} must not carry credentials: they would show in logs and /config"),
            ),
            Some(UrlProblem::NotHttp) => self.error(
                u,
                format!("issuer {issuer:?}: {key} must be an http:// or https:// URL"),
            ),
        }
    }
}

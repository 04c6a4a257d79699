//! Raw config to runtime types. Every problem is collected with its position rather than
//! returned at the first, so one run of `jwtgate check` lists them all.

mod defenses;
mod denylist;
mod edge;
mod issuer;
mod listen;
mod route;
mod session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::locate::LineIndex;
use super::raw::{RawConfig, RawRedis};
use super::types::resolve;
use super::{Config, ConfigError, Loc, RedisConfig};
use issuer::IssuerNames;

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
        let admin = raw.admin.as_ref().and_then(|a| self.admin(a));
        let limits = self.limits(&raw.limits);
        let issuers = self.issuers(&raw.issuer);
        // Routes name issuers as written, so they are checked even when an issuer is invalid.
        let issuer_names = IssuerNames::new(&raw.issuer);
        let routes = self.routes(&raw.route, &issuer_names);
        let session = raw.session.as_ref().and_then(|s| {
            self.session(s, &raw.issuer, &issuer_names, &routes, raw.redis.is_some())
        });
        if raw.session.is_none() {
            self.session_routes_need_session(&raw.route);
        }
        let assertion = raw.assertion.as_ref().and_then(|a| self.assertion(a));
        self.check_edge(&raw, &routes, assertion.as_ref());
        let anomaly = raw.anomaly.as_ref().map(|a| self.anomaly(a));
        let redis = raw.redis.as_ref().and_then(|r| self.redis(r));
        let denylist = raw
            .denylist
            .as_ref()
            .map(|d| self.denylist(d, raw.redis.is_some()));
        let issuers = issuers.into_iter().collect::<Option<Vec<_>>>()?;
        Some(Config {
            path: self.file.clone(),
            listen: listen?,
            admin,
            limits,
            issuers,
            routes,
            session,
            assertion,
            anomaly,
            redis,
            denylist,
        })
    }

    /// `[redis]`: exactly one of `url_env` and `url`, a URL the Redis client understands.
    fn redis(&mut self, r: &Spanned<RawRedis>) -> Option<RedisConfig> {
        let raw = r.get_ref();
        let (url, url_env, at) = match (&raw.url_env, &raw.url) {
            (Some(env), None) => {
                let name = env.get_ref();
                match std::env::var(name) {
                    Ok(v) if !v.trim().is_empty() => {
                        (v.trim().to_owned(), Some(name.clone()), env.span())
                    }
                    _ => {
                        self.error(env, format!("[redis] url_env: the environment variable {name} is not set (it should hold a redis:// or rediss:// URL)"));
                        return None;
                    }
                }
            }
            (None, Some(url)) => (url.get_ref().trim().to_owned(), None, url.span()),
            (Some(_), Some(_)) => {
                self.error(r, "[redis] sets both url_env and url: keep one".to_owned());
                return None;
            }
            (None, None) => {
                self.error(
                    r,
                    "[redis] needs url_env (the environment variable holding the URL) or url"
                        .to_owned(),
                );
                return None;
            }
        };
        let config = RedisConfig { url, url_env };
        let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| config.url.starts_with(s));
        let parsed = scheme_ok.then(|| redis::Client::open(config.url.as_str()));
        match parsed {
            Some(Ok(_)) => Some(config),
            Some(Err(e)) => {
                self.error_at(
                    at.start,
                    format!(
                        "[redis] {:?} is not a usable Redis URL: {e}",
                        config.redacted()
                    ),
                );
                None
            }
            None => {
                self.error_at(at.start, format!("[redis] {:?} is not a Redis URL: write redis://host:port/db or rediss://... for TLS", config.redacted()));
                None
            }
        }
    }

    fn strings(&mut self, list: &Spanned<Vec<Spanned<String>>>, key: &str) -> Vec<String> {
        if list.get_ref().is_empty() {
            self.error(list, format!("{key} must not be empty"));
        }
        list.get_ref().iter().map(|s| s.get_ref().clone()).collect()
    }
}

//! `gateway.toml`: parsed as written ([`raw`]), then validated into runtime types, reporting
//! every error at once as `file:line:col: message`.

mod locate;
pub mod raw;
mod types;
mod validate;

use std::path::Path;

pub use locate::{ConfigError, ConfigErrors, Loc};
pub use types::{
    Admin, AnomalyAction, AnomalyConfig, AuthMode, CertFiles, ClaimPath, Config, DenylistConfig,
    DpopConfig, HostMatch, IssuerConfig, KeySource, Limits, Listen, RedisConfig, Requirement,
    RouteConfig, SecretSource, SessionConfig, SessionStore, TlsFiles, TokenAuth, Upstream,
    MIN_HMAC_SECRET_BYTES,
};
pub use types::{AssertionConfig, Cors, RateLimit, RouteAssertion, DEFAULT_ASSERTION_HEADER};

use locate::{describe_path, locate, segments, Seg};
use raw::RawConfig;
use validate::Validator;

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
        let mut v = Validator::new(path, text);
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
}

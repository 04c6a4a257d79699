//! One denylist entry: its JSON-lines form (the file, Redis and `revoke --list` share it) and
//! its parsing, strict so that a typo is a skipped line with a message, never a silent no-op.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One token id.
    Jti,
    /// Every token of a subject issued before `before` (log out everywhere).
    Sub,
    /// Every token and session of an IdP session (issued or created before `before`).
    Sid,
}

impl Kind {
    /// Every kind, in the order the metrics and listings use.
    pub const ALL: [Kind; 3] = [Kind::Jti, Kind::Sub, Kind::Sid];

    /// The claim name, the JSON member and the `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Jti => "jti",
            Kind::Sub => "sub",
            Kind::Sid => "sid",
        }
    }
}

/// One revocation, scoped to an issuer (its `name` in the config). Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub issuer: String,
    pub kind: Kind,
    /// The token id, subject or session id.
    pub id: String,
    /// `sub`/`sid`: only tokens issued (sessions created) earlier are refused; `None`: all.
    pub before: Option<u64>,
    /// The entry drops out after this (plus the issuer's leeway); `None`: until removed.
    pub until: Option<u64>,
}

/// The JSON object of one line, as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<u64>,
}

/// Why a line is not an entry; the message names the mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("not a denylist entry: {0}")]
    Json(String),
    #[error("an entry names exactly one of jti, sub and sid (this one names {0})")]
    Kinds(usize),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("a jti entry takes no before (a token id names one token)")]
    JtiBefore,
    #[error("until ({until}) is not after before ({before}): the entry would never apply")]
    UntilBeforeBefore { before: u64, until: u64 },
}

impl Entry {
    /// Parses one line of the file (or one value in Redis).
    pub fn parse(line: &str) -> Result<Entry, EntryError> {
        let l: Line = serde_json::from_str(line).map_err(|e| EntryError::Json(e.to_string()))?;
        let named = [&l.jti, &l.sub, &l.sid]
            .iter()
            .filter(|v| v.is_some())
            .count();
        let (kind, id) = match (l.jti, l.sub, l.sid) {
            (Some(id), None, None) => (Kind::Jti, id),
            (None, Some(id), None) => (Kind::Sub, id),
            (None, None, Some(id)) => (Kind::Sid, id),
            _ => return Err(EntryError::Kinds(named)),
        };
        let e = Entry {
            issuer: l.issuer,
            kind,
            id,
            before: l.before,
            until: l.until,
        };
        e.validate()?;
        Ok(e)
    }

    /// The checks every entry passes, parsed or built by `revoke`.
    pub fn validate(&self) -> Result<(), EntryError> {
        if self.issuer.is_empty() {
            return Err(EntryError::Empty("issuer"));
        }
        if self.id.is_empty() {
            return Err(EntryError::Empty(self.kind.as_str()));
        }
        if self.kind == Kind::Jti && self.before.is_some() {
            return Err(EntryError::JtiBefore);
        }
        if let (Some(before), Some(until)) = (self.before, self.until) {
            if until <= before {
                return Err(EntryError::UntilBeforeBefore { before, until });
            }
        }
        Ok(())
    }

    /// The one-line JSON form (file line, Redis value, `revoke --list`).
    pub fn to_json(&self) -> String {
        let id = Some(self.id.clone());
        let line = Line {
            issuer: self.issuer.clone(),
            jti: id.clone().filter(|_| self.kind == Kind::Jti),
            sub: id.clone().filter(|_| self.kind == Kind::Sub),
            sid: id.filter(|_| self.kind == Kind::Sid),
            before: self.before,
            until: self.until,
        };
        // Strings and integers only: serialising cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// What identifies the entry: a second entry with the same key merges into the first.
    pub fn key(&self) -> String {
        // A JSON array: unambiguous whatever the issuer or id holds.
        serde_json::json!([self.kind.as_str(), self.issuer, self.id]).to_string()
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "issuer {:?} {} {:?}",
            self.issuer,
            self.kind.as_str(),
            self.id
        )?;
        if let Some(b) = self.before {
            write!(f, " before {}", fmt_time(b))?;
        }
        match self.until {
            Some(u) => write!(f, " until {}", fmt_time(u)),
            None => f.write_str(" until removed"),
        }
    }
}

/// Unix seconds as RFC 3339, or the number when out of range.
pub fn fmt_time(t: u64) -> String {
    const LAST_RFC3339_SECOND: u64 = 253_402_300_799;
    if t > LAST_RFC3339_SECOND {
        return t.to_string();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

/// A time given on the command line: Unix seconds, or RFC 3339 in UTC (`2026-12-31T00:00:00Z`).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| {
            format!(
                "{s:?} is neither Unix seconds nor an RFC 3339 time such as 2026-12-31T00:00:00Z"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_strictly_and_round_trip() {
        let e = Entry::parse(r#"{"issuer":"corp","sub":"alice","before":10,"until":20}"#)
            .expect("valid");
        assert_eq!(e.kind, Kind::Sub);
        assert_eq!(Entry::parse(&e.to_json()).expect("round trip"), e);
        for bad in [
            r#"{"issuer":"corp","jti":"a","sub":"b","until":1}"#,
            r#"{"issuer":"corp","until":1}"#,
            r#"{"issuer":"corp","jti":"a","befor":1}"#,
            r#"{"issuer":"corp","jti":"a","before":1}"#,
            r#"{"issuer":"","jti":"a"}"#,
            r#"{"issuer":"corp","sid":"s","before":5,"until":5}"#,
            r#"{"issuer":"corp","jti":"a","until":-1}"#,
            "not json",
        ] {
            assert!(Entry::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn times_parse_as_seconds_or_rfc3339() {
        assert_eq!(parse_time("1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        assert!(parse_time("tomorrow").is_err());
    }
}

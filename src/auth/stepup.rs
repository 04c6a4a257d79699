//! Step-up authentication (RFC 9470): a route may ask that the user authenticated recently
//! (`max_auth_age` against the token's `auth_time`) or strongly enough (`acr_values` against
//! its `acr`). A token that falls short is refused with a challenge naming what a new login
//! must achieve (`max_age`, `acr_values`), so a client, or the gateway's own session login,
//! can obtain one that passes. The check is pure and runs on every request, verified-token
//! cache hits included: a token's `auth_time` ages while the token stays valid.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

/// A route's step-up requirements, built once per snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// The longest time since the user's authentication (`auth_time`) the route accepts.
    pub max_auth_age: Option<Duration>,
    /// The `acr` values the route accepts; empty: any (or none).
    pub acr_values: Vec<String>,
    /// `acr_values` space-separated, as a challenge and a login request send it.
    acr_joined: Option<String>,
}

/// Why a token does not meet a route's step-up requirements, and what a new authentication
/// must achieve. The session login (issue 15) turns [`StepUpFailure::max_age`] and
/// [`StepUpFailure::acr_values`] into the parameters of its authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpFailure {
    /// Set when `max_auth_age` is not met.
    pub auth_time: Option<AuthTimeUnmet>,
    /// Set when `acr_values` is not met.
    pub acr: Option<AcrUnmet>,
    /// The route's `max_auth_age` in whole seconds: `max_age` to ask for.
    pub max_age: Option<u64>,
    /// The route's `acr_values`, space-separated: `acr_values` to ask for.
    pub acr_values: Option<String>,
}

/// How the token's `auth_time` falls short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthTimeUnmet {
    /// The token carries no `auth_time`.
    Missing,
    /// The user authenticated `age_secs` ago, longer than `max_auth_age` plus the leeway.
    TooOld { auth_time: i64, age_secs: i64 },
}

/// How the token's `acr` falls short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcrUnmet {
    /// The token carries no `acr` (or one that is not a string).
    Missing,
    /// The token's `acr` (shortened to [`MAX_ACR_SHOWN`] characters) is not listed.
    NotListed(String),
}

/// The most characters of a token's `acr` an error repeats.
pub const MAX_ACR_SHOWN: usize = 64;

impl StepUp {
    /// The requirements of a route, or `None` when it sets neither.
    pub fn new(max_auth_age: Option<Duration>, acr_values: Vec<String>) -> Option<StepUp> {
        if max_auth_age.is_none() && acr_values.is_empty() {
            return None;
        }
        let acr_joined = (!acr_values.is_empty()).then(|| acr_values.join(" "));
        Some(StepUp {
            max_auth_age,
            acr_values,
            acr_joined,
        })
    }

    /// Checks verified claims at `now` with the issuer's `leeway`. `auth_time` was already
    /// held to a finite number in range by the claim checks.
    pub fn check(
        &self,
        claims: &Map<String, Value>,
        leeway: Duration,
        now: i64,
    ) -> Result<(), StepUpFailure> {
        let auth_time = self.max_auth_age.and_then(|max| {
            match claims.get("auth_time").and_then(Value::as_f64) {
                None => Some(AuthTimeUnmet::Missing),
                Some(t) => {
                    // A future auth_time counts as fresh: iat and nbf checks own the clock.
                    let age = now.saturating_sub(t as i64);
                    let allowed = max.as_secs().saturating_add(leeway.as_secs());
                    (age > 0 && age as u64 > allowed).then_some(AuthTimeUnmet::TooOld {
                        auth_time: t as i64,
                        age_secs: age,
                    })
                }
            }
        });
        let acr = if self.acr_values.is_empty() {
            None
        } else {
            match claims.get("acr") {
                Some(Value::String(a)) if self.acr_values.iter().any(|v| v == a) => None,
                Some(Value::String(a)) => {
                    Some(AcrUnmet::NotListed(a.chars().take(MAX_ACR_SHOWN).collect()))
                }
                _ => Some(AcrUnmet::Missing),
            }
        };
        if auth_time.is_none() && acr.is_none() {
            return Ok(());
        }
        Err(StepUpFailure {
            auth_time,
            acr,
            max_age: self.max_auth_age.map(|d| d.as_secs()),
            acr_values: self.acr_joined.clone(),
        })
    }
}

impl StepUpFailure {
    /// The RFC 9470 challenge parameters for this route, `max_age="300", acr_values="mfa"`
    /// (the config holds acr values to visible ASCII without quote or backslash).
    pub fn challenge(&self) -> String {
        let mut params = Vec::with_capacity(2);
        if let Some(age) = self.max_age {
            params.push(format!("max_age=\"{age}\""));
        }
        if let Some(acr) = &self.acr_values {
            params.push(format!("acr_values=\"{acr}\""));
        }
        params.join(", ")
    }
}

impl fmt::Display for StepUpFailure {
    /// The `error_description`: what falls short, never the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = self.max_age.unwrap_or(0);
        match &self.auth_time {
            Some(AuthTimeUnmet::Missing) => write!(
                f,
                "a more recent authentication is required: the token has no auth_time and this route needs one at most {max}s old"
            )?,
            Some(AuthTimeUnmet::TooOld { age_secs, .. }) => write!(
                f,
                "a more recent authentication is required: the user authenticated {age_secs}s ago, this route needs at most {max}s"
            )?,
            None => {}
        }
        if self.auth_time.is_some() && self.acr.is_some() {
            f.write_str("; ")?;
        }
        let wanted = self.acr_values.as_deref().unwrap_or("");
        match &self.acr {
            Some(AcrUnmet::Missing) => write!(
                f,
                "a stronger authentication is required: the token has no acr and this route needs one of: {wanted}"
            ),
            Some(AcrUnmet::NotListed(acr)) => write!(
                f,
                "a stronger authentication is required: the token's acr {acr:?} is not one of: {wanted}"
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    const NOW: i64 = 1_800_000_000;
    const LEEWAY: Duration = Duration::from_secs(30);

    #[test]
    fn nothing_configured_is_no_step_up() {
        assert_eq!(StepUp::new(None, vec![]), None);
    }

    #[test]
    fn auth_time_within_max_age_plus_leeway_passes() {
        let s = StepUp::new(Some(Duration::from_secs(300)), vec![]).expect("set");
        let ok = claims(json!({"auth_time": NOW - 330}));
        assert_eq!(s.check(&ok, LEEWAY, NOW), Ok(()));
        let old = claims(json!({"auth_time": NOW - 331}));
        let e = s.check(&old, LEEWAY, NOW).expect_err("too old");
        assert_eq!(
            e.auth_time,
            Some(AuthTimeUnmet::TooOld {
                auth_time: NOW - 331,
                age_secs: 331
            })
        );
        assert_eq!((e.max_age, e.acr.clone()), (Some(300), None));
        assert_eq!(e.challenge(), "max_age=\"300\"");
        assert!(e.to_string().contains("331s ago"), "{e}");
        let none = claims(json!({"sub": "a"}));
        let e = s.check(&none, LEEWAY, NOW).expect_err("missing");
        assert_eq!(e.auth_time, Some(AuthTimeUnmet::Missing));
        // A future auth_time is not "too old" (the clock checks own that).
        let future = claims(json!({"auth_time": NOW + 3600}));
        assert_eq!(s.check(&future, LEEWAY, NOW), Ok(()));
    }

    #[test]
    fn acr_must_be_listed_and_a_string() {
        let s = StepUp::new(None, vec!["mfa".into(), "phr".into()]).expect("set");
        assert_eq!(s.check(&claims(json!({"acr": "phr"})), LEEWAY, NOW), Ok(()));
        let e = s
            .check(&claims(json!({"acr": "pwd"})), LEEWAY, NOW)
            .expect_err("not listed");
        assert_eq!(e.acr, Some(AcrUnmet::NotListed("pwd".into())));
        assert_eq!(e.acr_values.as_deref(), Some("mfa phr"));
        assert_eq!(e.challenge(), "acr_values=\"mfa phr\"");
        for bad in [json!({}), json!({"acr": 2}), json!({"acr": ["mfa"]})] {
            let e = s.check(&claims(bad), LEEWAY, NOW).expect_err("missing");
            assert_eq!(e.acr, Some(AcrUnmet::Missing));
        }
        // Only the configured requirement is checked: no max_auth_age, no auth_time needed.
        assert_eq!(e.auth_time, None);
    }

    #[test]
    fn both_failures_are_reported_with_both_parameters() {
        let s = StepUp::new(Some(Duration::from_secs(60)), vec!["mfa".into()]).expect("set");
        let e = s
            .check(&claims(json!({"acr": "pwd"})), LEEWAY, NOW)
            .expect_err("both");
        assert_eq!(e.auth_time, Some(AuthTimeUnmet::Missing));
        assert!(e.acr.is_some());
        assert_eq!(e.challenge(), "max_age=\"60\", acr_values=\"mfa\"");
        let text = e.to_string();
        assert!(text.contains("auth_time") && text.contains("acr"), "{text}");
        // A long acr is shortened in the description.
        let long = "x".repeat(500);
        let e = s
            .check(&claims(json!({"acr": long, "auth_time": NOW})), LEEWAY, NOW)
            .expect_err("acr");
        assert!(e.to_string().len() < 300);
    }
}

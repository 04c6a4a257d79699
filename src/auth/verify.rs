//! Verifying one compact JWS against the issuers a route accepts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::strict_json::parse_object;
use super::AuthError;
use crate::alg::Alg;
use crate::config::IssuerConfig;
use std::sync::Arc;

use crate::keys::remote::RemoteKeys;
use crate::keys::{KeySet, MAX_SIGNATURE_CHECKS};

/// An issuer as the request path sees it: its config and its keys.
#[derive(Debug)]
pub struct Issuer {
    pub config: IssuerConfig,
    pub keys: IssuerKeys,
    /// How this issuer's DPoP proofs are checked (sender-constrained tokens).
    pub dpop: super::dpop::IssuerDpop,
}

/// Where an issuer's keys live.
#[derive(Debug, Clone)]
pub enum IssuerKeys {
    /// Loaded from local files with the snapshot.
    Static(Arc<KeySet>),
    /// Fetched and refreshed in the background; shared across snapshots.
    Remote(Arc<RemoteKeys>),
}

impl IssuerKeys {
    /// The current keys; `None` until a remote issuer's first fetch succeeds.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        match self {
            IssuerKeys::Static(k) => Some(k.clone()),
            IssuerKeys::Remote(r) => r.keys(),
        }
    }
}

/// Why a token's signature could not be checked or did not verify.
#[derive(Debug)]
pub enum SignatureError {
    /// The token is refused.
    Auth(AuthError),
    /// The issuer's keys have not been fetched yet: answer 503, retry after this long.
    NotLoaded {
        issuer: String,
        retry_after_secs: u64,
    },
}

impl From<AuthError> for SignatureError {
    fn from(e: AuthError) -> Self {
        SignatureError::Auth(e)
    }
}

impl Issuer {
    /// Checks a parsed token's signature with this issuer's keys and returns the key set that
    /// verified it. A kid that remote keys do not have triggers one (shared, rate-limited)
    /// refetch that this call waits for, so a key rotation never costs a 401.
    pub async fn check_signature(
        &self,
        parsed: &Parsed<'_>,
    ) -> Result<Arc<KeySet>, SignatureError> {
        let not_loaded = |r: &RemoteKeys| SignatureError::NotLoaded {
            issuer: self.config.name.clone(),
            retry_after_secs: r.retry_after_secs(),
        };
        match (&self.keys, self.keys.current()) {
            (_, Some(keys)) => match parsed.check_signature(&keys) {
                Ok(()) => Ok(keys),
                Err(AuthError::UnknownKey) => {
                    let IssuerKeys::Remote(remote) = &self.keys else {
                        return Err(AuthError::UnknownKey.into());
                    };
                    let keys = remote.refetch().await.ok_or_else(|| not_loaded(remote))?;
                    parsed.check_signature(&keys)?;
                    Ok(keys)
                }
                Err(e) => Err(e.into()),
            },
            (IssuerKeys::Remote(remote), None) => Err(not_loaded(remote)),
            (IssuerKeys::Static(_), None) => Err(AuthError::UnknownKey.into()),
        }
    }
}

/// The request path's verification: [`parse`], then the issuer's keys (waiting for a
/// refetch on an unknown kid), then the claim checks. Returns the key set that verified the
/// token too, for the token cache.
pub async fn verify_live(
    token: &str,
    issuers: &[Issuer],
    accepted: &[usize],
    max_token_bytes: usize,
    now: i64,
) -> Result<(Verified, Arc<KeySet>), SignatureError> {
    let parsed = parse(token, issuers, accepted, max_token_bytes)?;
    let issuer = &issuers[parsed.issuer];
    let keys = issuer.check_signature(&parsed).await?;
    Ok((parsed.finish(&issuer.config, now)?, keys))
}

/// A token whose structure, issuer, algorithm and `typ` passed, awaiting its signature and
/// claim checks.
#[derive(Debug)]
pub struct Parsed<'t> {
    /// Index of the issuer named by `iss`.
    pub issuer: usize,
    pub alg: Alg,
    pub kid: Option<String>,
    signing_input: &'t str,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

/// A token that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// Index of the issuer that vouched for it.
    pub issuer: usize,
    pub claims: Arc<Map<String, Value>>,
}

fn b64(part: &str) -> Result<Vec<u8>, AuthError> {
    // The URL-safe, unpadded alphabet with canonical trailing bits only: padding, `+`, `/` or
    // a second spelling of the same bytes is refused rather than silently accepted.
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed("a segment is not base64url"))
}

/// Verifies `token` with keys already at hand (static keys, or tests); the request path uses
/// [`parse`], then [`Parsed::check_signature`] (which may wait for a refetch), then
/// [`Parsed::finish`]. `now` is the current Unix time in seconds.
pub fn verify(
    token: &str,
    issuers: &[Issuer],
    accepted: &[usize],
    max_token_bytes: usize,
    now: i64,
) -> Result<Verified, AuthError> {
    let parsed = parse(token, issuers, accepted, max_token_bytes)?;
    let keys = issuers[parsed.issuer]
        .keys
        .current()
        .ok_or(AuthError::UnknownKey)?;
    parsed.check_signature(&keys)?;
    let cfg = &issuers[parsed.issuer].config;
    parsed.finish(cfg, now)
}

/// Checks everything that needs no key: size, structure, header, issuer, algorithm, `typ`.
pub fn parse<'t>(
    token: &'t str,
    issuers: &[Issuer],
    accepted: &[usize],
    max_token_bytes: usize,
) -> Result<Parsed<'t>, AuthError> {
    if token.len() > max_token_bytes {
        return Err(AuthError::TooLong {
            limit: max_token_bytes,
        });
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(if token.split('.').count() == 5 {
            AuthError::Malformed("encrypted tokens (JWE) are not accepted")
        } else {
            AuthError::Malformed("a JWT has exactly three dot-separated segments")
        });
    };
    let header =
        parse_object(&b64(h64)?).map_err(|e| AuthError::MalformedJson(format!("header: {e}")))?;
    let alg_name = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => return Err(AuthError::Header("alg is not a string")),
        None => return Err(AuthError::Header("alg is missing")),
    };
    // jsonwebtoken ignores `crit`; RFC 7515 §4.1.11 says a recipient that does not understand
    // every listed extension must refuse the token, and we understand none.
    if header.contains_key("crit") {
        return Err(AuthError::Header("crit extensions are not supported"));
    }
    // RFC 7797 unencoded payloads would change what the signature covers.
    if header.contains_key("b64") {
        return Err(AuthError::Header("b64 is not supported"));
    }
    // A nested JWT (RFC 7519 §5.2) would need a second verification we never do; refusing any
    // `cty` (whatever its value or case, null included) keeps one token one set of claims.
    if header.contains_key("cty") {
        return Err(AuthError::Header(
            "cty is present: nested tokens are not accepted",
        ));
    }
    if header.contains_key("enc") || header.contains_key("zip") {
        return Err(AuthError::Header(
            "encrypted or compressed tokens are not accepted",
        ));
    }
    // jsonwebtoken reads `kid: null` as "no kid", which would widen the key search.
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(AuthError::Header("kid is not a string")),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => return Err(AuthError::Header("typ is not a string")),
    };
    // `jwk`, `jku`, `x5u`, `x5c`, `x5t` are never read: keys come only from the issuer config.

    let payload = b64(p64)?;
    let claims =
        parse_object(&payload).map_err(|e| AuthError::MalformedJson(format!("claims: {e}")))?;
    let iss = match claims.get("iss") {
        Some(Value::String(i)) => i.as_str(),
        Some(_) => return Err(AuthError::Malformed("iss is not a string")),
        None => return Err(AuthError::WrongIssuer),
    };
    let Some(&issuer_idx) = accepted
        .iter()
        .find(|&&i| issuers.get(i).is_some_and(|is| is.config.issuer == iss))
    else {
        return Err(AuthError::WrongIssuer);
    };
    let cfg = &issuers[issuer_idx].config;

    let alg = match alg_name.parse::<Alg>() {
        Ok(a) if cfg.algorithms.contains(&a) => a,
        _ => return Err(AuthError::AlgorithmNotAllowed(truncate(alg_name))),
    };
    if let Some(t) = typ {
        if !cfg.typ.iter().any(|allowed| typ_eq(allowed, t)) {
            return Err(AuthError::Typ(truncate(t)));
        }
    }

    let signature = b64(s64)?;
    Ok(Parsed {
        issuer: issuer_idx,
        alg,
        kid: kid.map(str::to_owned),
        signing_input: &token[..h64.len() + 1 + p64.len()],
        signature,
        claims,
    })
}

impl Parsed<'_> {
    /// Checks the signature against the issuer's keys.
    pub fn check_signature(&self, keys: &KeySet) -> Result<(), AuthError> {
        verify_signature(
            keys,
            self.kid.as_deref(),
            self.alg,
            self.signing_input.as_bytes(),
            &self.signature,
        )
    }

    /// The claims, for tokens with their own rules (back-channel logout tokens); call only after
    /// [`Parsed::check_signature`] or [`Issuer::check_signature`] passed.
    pub fn into_claims(self) -> Map<String, Value> {
        self.claims
    }

    /// The claim checks that follow a good signature: times, audience, subject.
    pub fn finish(self, cfg: &IssuerConfig, now: i64) -> Result<Verified, AuthError> {
        check_claims(&self.claims, cfg, now)?;
        Ok(Verified {
            issuer: self.issuer,
            claims: Arc::new(self.claims),
        })
    }
}

/// The checks that do not depend on the signature: times, audience, subject. They run on
/// every request, also when the token cache vouches for the signature.
pub fn check_claims(
    claims: &Map<String, Value>,
    cfg: &IssuerConfig,
    now: i64,
) -> Result<(), AuthError> {
    check_times(claims, cfg, now)?;
    check_audience(claims, &cfg.audiences)?;
    // Registered claims other readers rely on have one JSON type: a number where a string
    // belongs could compare equal to something else downstream (denylists, logs).
    for (name, message) in [
        ("jti", "jti is not a string"),
        ("sid", "sid is not a string"),
    ] {
        match claims.get(name) {
            None | Some(Value::String(_)) => {}
            Some(_) => return Err(AuthError::Malformed(message)),
        }
    }
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(AuthError::Malformed("sub must be a non-empty string")),
    }
}

fn verify_signature(
    keys: &KeySet,
    kid: Option<&str>,
    alg: Alg,
    message: &[u8],
    signature: &[u8],
) -> Result<(), AuthError> {
    // Bounded work per token: count first, and refuse without checking anything when a token
    // that names no (known) kid could make us try more than a few keys.
    let count = keys.candidates(kid).filter(|k| k.allows(alg)).count();
    if count > MAX_SIGNATURE_CHECKS {
        return Err(AuthError::TooManyKeys {
            alg: alg.as_str(),
            keys: count,
        });
    }
    for key in keys.candidates(kid).filter(|k| k.allows(alg)) {
        if key.verify(alg, message, signature) {
            return Ok(());
        }
    }
    if count > 0 {
        Err(AuthError::BadSignature)
    } else if kid.is_some() && keys.candidates(kid).next().is_none() {
        Err(AuthError::UnknownKey)
    } else {
        // A key exists but none of them is pinned to this algorithm: the key type does not
        // match (for example HS256 against an RSA key).
        Err(AuthError::KeyTypeMismatch(alg.as_str()))
    }
}

/// 2^63: the first value past a signed 64-bit count of seconds (exact as an f64).
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Seconds, accepting any JSON number (NumericDate may be fractional) within the range of a
/// signed 64-bit count of seconds, and nothing else. An integer is taken when it fits an i64;
/// any other number (a fraction, an exponent, or an integer too large that the parser turned
/// into a float) must lie strictly inside (-2^63, 2^63), so `9223372036854775808`,
/// `-9223372036854775809`, `1e300` and `-1e300` are all refused.
fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, AuthError> {
    let (out_of_range, not_number) = match name {
        "exp" => (
            "exp is out of range (not a finite 64-bit count of seconds)",
            "exp is not a number",
        ),
        "nbf" => (
            "nbf is out of range (not a finite 64-bit count of seconds)",
            "nbf is not a number",
        ),
        "iat" => (
            "iat is out of range (not a finite 64-bit count of seconds)",
            "iat is not a number",
        ),
        _ => (
            "a time claim (auth_time) is out of range (not a finite 64-bit count of seconds)",
            "a time claim (auth_time) is not a number",
        ),
    };
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i as f64));
            }
            match n.as_f64() {
                Some(f) if f.is_finite() && f > -TWO_POW_63 && f < TWO_POW_63 => Ok(Some(f)),
                _ => Err(AuthError::Malformed(out_of_range)),
            }
        }
        Some(_) => Err(AuthError::Malformed(not_number)),
    }
}

fn check_times(claims: &Map<String, Value>, cfg: &IssuerConfig, now: i64) -> Result<(), AuthError> {
    let leeway = cfg.leeway.as_secs();
    let (nowf, leewayf) = (now as f64, leeway as f64);
    let Some(exp) = numeric(claims, "exp")? else {
        return Err(AuthError::Malformed("exp is missing"));
    };
    // RFC 7519 §4.1.4: the token is valid only strictly before exp.
    if nowf >= exp + leewayf {
        return Err(AuthError::Expired {
            exp: exp as i64,
            now,
            leeway,
        });
    }
    if let Some(nbf) = numeric(claims, "nbf")? {
        if nowf + leewayf < nbf {
            return Err(AuthError::NotYetValid {
                nbf: nbf as i64,
                now,
                leeway,
            });
        }
    }
    if let Some(iat) = numeric(claims, "iat")? {
        if iat > nowf + leewayf {
            return Err(AuthError::IssuedInFuture {
                iat: iat as i64,
                now,
                leeway,
            });
        }
    }
    // Not checked against anything yet (no max_auth_age), but held to the same type and range
    // so a later reader never meets an unrepresentable value.
    numeric(claims, "auth_time")?;
    Ok(())
}

fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), AuthError> {
    let ok = |a: &str| accepted.iter().any(|x| x == a);
    match claims.get("aud") {
        Some(Value::String(a)) if ok(a) => Ok(()),
        Some(Value::String(_)) | None => Err(AuthError::WrongAudience),
        Some(Value::Array(list)) => {
            let mut found = false;
            for a in list {
                match a {
                    Value::String(s) => found |= ok(s),
                    _ => {
                        return Err(AuthError::Malformed(
                            "aud holds a value that is not a string",
                        ))
                    }
                }
            }
            if found {
                Ok(())
            } else {
                Err(AuthError::WrongAudience)
            }
        }
        Some(_) => Err(AuthError::Malformed(
            "aud is neither a string nor an array of strings",
        )),
    }
}

/// `typ` is a media type: case-insensitive, and `application/` may be left out (RFC 7515 §4.1.9).
fn typ_eq(allowed: &str, got: &str) -> bool {
    fn short(t: &str) -> &str {
        match t.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => &t[12..],
            _ => t,
        }
    }
    short(allowed).eq_ignore_ascii_case(short(got))
}

/// Header values from an attacker go into error messages only shortened and printable.
fn truncate(s: &str) -> String {
    s.chars()
        .take(32)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

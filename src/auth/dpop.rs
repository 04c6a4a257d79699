//! DPoP proofs (RFC 9449): every check of §4.3 on one `DPoP` header, the RFC 7638 thumbprint
//! of the proof's key, `htu` normalisation (RFC 3986 §6.2.2-6.2.3) and stateless server nonces
//! (§8: an HMAC over a time window that every replica with the same key accepts). Pure: the
//! `jti` replay cache is consulted by the caller with the id and lifetime returned here.

use std::time::Duration;

use aws_lc_rs::{digest, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::binding::same_text;
use super::strict_json::parse_object;
use super::AuthError;
use crate::alg::Alg;
use crate::config::IssuerConfig;

/// A proof longer than this is refused before it is decoded (an RSA-4096 proof is ~1.6 KiB).
pub const MAX_PROOF_BYTES: usize = 8192;
/// A `jti` longer than this is refused: the replay cache keeps a hash, but a huge one is junk.
const MAX_JTI_BYTES: usize = 256;
/// Nonces are minted per window of this length; the current, previous and next windows are
/// accepted, so a nonce lives 1-2 windows and replicas whose clocks differ a little agree.
pub const NONCE_WINDOW_SECS: i64 = 60;
/// Nonce HMAC keys shorter than this are refused (the HMAC-SHA256 key size).
pub const MIN_NONCE_KEY_BYTES: usize = 32;
/// What the nonce HMAC covers before the issuer and the window, so the key signs nothing else.
const NONCE_DOMAIN: &[u8] = b"jwtgate DPoP-Nonce v1\0";
/// Bytes of the HMAC kept in a nonce (128 bits: unforgeable, short enough for a header).
const NONCE_TAG_BYTES: usize = 16;

/// One issuer's DPoP settings, ready for the request path (built with the snapshot).
pub struct IssuerDpop {
    pub algorithms: Vec<Alg>,
    /// `dpop_max_age` plus the issuer's leeway, in seconds: the `iat` window either way.
    pub window_secs: i64,
    /// The accepted algorithms as the challenge's `algs` parameter (space-separated).
    pub algs: String,
    /// With `dpop_nonce = true`, the nonce key.
    pub nonce: Option<NonceKey>,
}

impl std::fmt::Debug for IssuerDpop {
    // Never prints the nonce key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerDpop")
            .field("algs", &self.algs)
            .field("window_secs", &self.window_secs)
            .field("nonce", &self.nonce.is_some())
            .finish()
    }
}

impl IssuerDpop {
    /// The settings of `cfg`, without the nonce key ([`nonce_key`] reads it).
    pub fn new(cfg: &IssuerConfig) -> IssuerDpop {
        let d = &cfg.dpop;
        IssuerDpop {
            algorithms: d.algorithms.clone(),
            window_secs: secs(d.max_age + cfg.leeway),
            algs: d
                .algorithms
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            nonce: None,
        }
    }
}

/// With `dpop_nonce = true`, the nonce key from its environment variable; an error naming the
/// variable when it is unset or too short.
pub fn nonce_key(cfg: &IssuerConfig) -> Result<Option<NonceKey>, String> {
    let d = &cfg.dpop;
    if !d.nonce {
        return Ok(None);
    }
    let var = &d.nonce_key_env;
    let key = std::env::var_os(var).ok_or_else(|| {
        format!("dpop_nonce = true needs the nonce key in the environment variable {var}, which is not set (at least {MIN_NONCE_KEY_BYTES} random bytes, the same on every replica)")
    })?;
    let key = key.into_encoded_bytes();
    if key.len() < MIN_NONCE_KEY_BYTES {
        return Err(format!(
            "the DPoP nonce key in {var} is {} bytes; at least {MIN_NONCE_KEY_BYTES} are required",
            key.len()
        ));
    }
    Ok(Some(NonceKey::new(&key, &cfg.issuer)))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The request a proof must describe.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    /// The HTTP method, as sent.
    pub method: &'a str,
    /// The request's URI as the client used it, normalised ([`request_htu`]).
    pub htu: &'a str,
    /// The access token presented with the proof.
    pub access_token: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
    pub now: i64,
}

/// A proof that passed every check but the replay cache.
#[derive(Debug)]
pub struct CheckedProof {
    /// The replay cache id: a hash of the key thumbprint and `jti` (one client's `jti` never
    /// collides with another's, and the cache holds a fixed size per proof).
    pub replay_id: String,
    /// Unix time until which the proof would still be accepted, so its `jti` is remembered
    /// until then.
    pub until: i64,
    /// True when the proof's nonce is from an earlier window: the answer carries a fresh
    /// `DPoP-Nonce` (RFC 9449 §8.2) so the client moves on before it expires.
    pub nonce_stale: bool,
}

fn invalid(why: &'static str) -> AuthError {
    AuthError::DpopInvalid(why)
}

fn b64(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid("a segment is not base64url"))
}

fn string<'m>(
    m: &'m Map<String, Value>,
    name: &str,
    missing: &'static str,
) -> Result<&'m str, AuthError> {
    match m.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(invalid(missing)),
    }
}

/// Checks one DPoP proof against the request (RFC 9449 §4.3, every step): structure, `typ`,
/// an algorithm of `dpop_algorithms`, a public `jwk` whose thumbprint is the token's
/// `cnf.jkt`, the signature with that key, `htm`, `htu`, `iat` within the window, the nonce
/// when required, and `ath`. The `jti` is returned for the caller's replay cache.
pub fn check(
    proof: &str,
    dpop: &IssuerDpop,
    req: &ProofRequest<'_>,
) -> Result<CheckedProof, AuthError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(invalid("the proof is longer than 8192 bytes"));
    }
    let mut parts = proof.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "a proof is a JWS with exactly three dot-separated segments",
        ));
    };
    let header =
        parse_object(&b64(h64)?).map_err(|_| invalid("the header is not a JSON object"))?;
    // §4.3 step 4: explicit typing, so no other kind of JWT passes for a proof.
    let typ = string(&header, "typ", "typ must be \"dpop+jwt\"")?;
    if !(typ.eq_ignore_ascii_case("dpop+jwt") || typ.eq_ignore_ascii_case("application/dpop+jwt")) {
        return Err(invalid("typ must be \"dpop+jwt\""));
    }
    let alg = match string(&header, "alg", "alg is missing or not a string")? {
        // RFC 9864's fully-specified name for EdDSA over Ed25519, which DPoP clients (npm
        // `dpop`, openid-client) send for Ed25519 keys; `EdDSA` in dpop_algorithms allows it.
        "Ed25519" => Ok(Alg::EdDSA),
        other => other.parse::<Alg>(),
    };
    let alg = match alg {
        Ok(a) if dpop.algorithms.contains(&a) && !a.is_hmac() => a,
        _ => return Err(invalid("alg is not one of the issuer's dpop_algorithms")),
    };
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(invalid("crit and b64 are not supported"));
    }
    let (jwk_value, jwk) = match header.get("jwk") {
        Some(v @ Value::Object(m)) => (v, m),
        _ => return Err(invalid("the header has no jwk (the proof's public key)")),
    };
    // §4.3 step 7: the key must be public; `proof_key` refuses "d" too, but RSA's other
    // private members and symmetric keys are named here so the message says why.
    const PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];
    if PRIVATE.iter().any(|m| jwk.contains_key(*m)) {
        return Err(invalid("the jwk holds private key material"));
    }
    let thumbprint = thumbprint(jwk)?;
    // §4.3 step 12, done before the signature so a proof by another key costs no verification.
    if !same_text(&thumbprint, req.jkt) {
        return Err(AuthError::DpopKeyMismatch);
    }
    let key = match crate::keys::jwks::proof_key(jwk_value, alg) {
        Ok(Some(k)) => k,
        Ok(None) => return Err(invalid("the jwk is not a key for the proof's alg")),
        Err(_) => return Err(invalid("the jwk is not a usable public key")),
    };
    let signature = b64(s64)?;
    let signing_input = &proof[..h64.len() + 1 + p64.len()];
    if !key.verify(alg, signing_input.as_bytes(), &signature) {
        return Err(invalid(
            "the signature does not verify with the proof's jwk",
        ));
    }

    let claims =
        parse_object(&b64(p64)?).map_err(|_| invalid("the claims are not a JSON object"))?;
    let jti = string(&claims, "jti", "jti is missing or not a string")?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(invalid("jti is empty or longer than 256 bytes"));
    }
    // Methods are case-sensitive (RFC 9110 §9.1).
    if string(&claims, "htm", "htm is missing or not a string")? != req.method {
        return Err(invalid("htm is not the request's method"));
    }
    let htu = string(&claims, "htu", "htu is missing or not a string")?;
    if normalize_uri(htu).as_deref() != Some(req.htu) {
        return Err(invalid("htu is not the request's URI"));
    }
    let iat = match claims.get("iat") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| invalid("iat is out of range"))?,
        _ => return Err(invalid("iat is missing or not a number")),
    };
    if iat.abs_diff(req.now) > dpop.window_secs.unsigned_abs() {
        return Err(AuthError::DpopTime {
            iat,
            now: req.now,
            window: dpop.window_secs,
        });
    }
    let mut nonce_stale = false;
    if let Some(key) = &dpop.nonce {
        match claims.get("nonce") {
            Some(Value::String(n)) => match key.check(n, req.now) {
                Some(fresh) => nonce_stale = !fresh,
                None => return Err(AuthError::DpopNonce),
            },
            None => return Err(AuthError::DpopNonce),
            Some(_) => return Err(invalid("nonce is not a string")),
        }
    }
    // §4.3 step 11 / §7: the proof covers this very token.
    let ath = string(&claims, "ath", "ath (the access token's hash) is missing")?;
    if !same_text(ath, &token_hash(req.access_token)) {
        return Err(invalid("ath is not the hash of the access token"));
    }
    Ok(CheckedProof {
        replay_id: replay_id(&thumbprint, jti),
        until: iat.saturating_add(dpop.window_secs).max(req.now) + 1,
        nonce_stale,
    })
}

/// `ath`: base64url of the SHA-256 of the access token's ASCII text (RFC 9449 §4.2).
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

fn replay_id(thumbprint: &str, jti: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(thumbprint.as_bytes());
    ctx.update(b"\0");
    ctx.update(jti.as_bytes());
    URL_SAFE_NO_PAD.encode(&ctx.finish().as_ref()[..16])
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK: its required members in
/// lexicographic order, without whitespace.
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, AuthError> {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("RSA") => &["e", "kty", "n"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => return Err(invalid("the jwk's kty is not EC, RSA or OKP")),
    };
    let mut canonical = String::with_capacity(256);
    canonical.push('{');
    for (i, m) in members.iter().enumerate() {
        let Some(Value::String(v)) = jwk.get(*m) else {
            return Err(invalid("the jwk lacks a member its key type requires"));
        };
        if i > 0 {
            canonical.push(',');
        }
        canonical.push('"');
        canonical.push_str(m);
        canonical.push_str("\":");
        // A JSON string as serde writes it (base64url never needs escaping, junk does).
        canonical.push_str(&serde_json::to_string(v).map_err(|_| invalid("the jwk is not JSON"))?);
    }
    canonical.push('}');
    Ok(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes())))
}

/// The `htu` of a request: `scheme://authority path` as the client used them, normalised.
/// `None` when they do not form an http(s) URI.
pub fn request_htu(scheme: &str, authority: &str, path: &str) -> Option<String> {
    let mut s = String::with_capacity(scheme.len() + 3 + authority.len() + path.len());
    s.push_str(scheme);
    s.push_str("://");
    s.push_str(authority);
    s.push_str(path);
    normalize_uri(&s)
}

/// An http(s) URI without query and fragment, after RFC 3986 syntax-based (§6.2.2: case,
/// percent-encoding, dot segments) and scheme-based (§6.2.3: default port, empty path)
/// normalisation, as RFC 9449 §4.3 asks before comparing `htu`. `None` for anything else
/// (another scheme, userinfo, a bad port or percent-encoding).
pub fn normalize_uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some(i) if !authority[i..].contains(']') => (&authority[..i], &authority[i + 1..]),
        _ => (authority, ""),
    };
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // An empty port is the default one (RFC 3986 §6.2.3); leading zeros are dropped.
    let port: Option<u16> = if port.is_empty() {
        None
    } else {
        Some(port.parse().ok()?)
    };
    let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let mut out = String::with_capacity(uri.len());
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(&percent_normalized(host, true)?);
    if let Some(p) = port.filter(|p| *p != default_port) {
        out.push(':');
        out.push_str(itoa::Buffer::new().format(p));
    }
    let path = percent_normalized(path, false)?;
    remove_dot_segments(if path.is_empty() { "/" } else { &path }, &mut out);
    Some(out)
}

/// Percent-encoded unreserved characters decoded, other triplets upper-cased (RFC 3986
/// §6.2.2.1-2); with `lower`, everything else lower-cased (hosts). `None` for a bad triplet.
fn percent_normalized(s: &str, lower: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(if lower { v.to_ascii_lowercase() } else { v } as char);
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            let c = s[i..].chars().next()?;
            if lower {
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
            i += c.len_utf8();
        }
    }
    Some(out)
}

/// RFC 3986 §5.2.4 on an absolute path, appended to `out`.
fn remove_dot_segments(path: &str, out: &mut String) {
    let mut segments: Vec<&str> = Vec::new();
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut iter = path.split('/').peekable();
    while let Some(seg) = iter.next() {
        let last = iter.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => {
                segments.push(s);
                continue;
            }
        }
        // A path ending in a dot segment keeps its trailing slash ("/a/." is "/a/").
        if last {
            segments.push("");
        }
    }
    out.push('/');
    out.push_str(&segments.join("/"));
}

/// Stateless server nonces (RFC 9449 §8): `base64url(window || HMAC(key, issuer, window))`,
/// checkable by any replica holding the same key, with nothing stored.
pub struct NonceKey {
    key: hmac::Key,
    issuer: Vec<u8>,
}

impl NonceKey {
    /// A nonce key for one issuer (its `iss`): the same key never makes one issuer's nonces
    /// valid for another.
    pub fn new(secret: &[u8], issuer: &str) -> NonceKey {
        NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            issuer: issuer.as_bytes().to_vec(),
        }
    }

    fn tag(&self, window: i64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(NONCE_DOMAIN);
        ctx.update(&(self.issuer.len() as u64).to_be_bytes());
        ctx.update(&self.issuer);
        ctx.update(&window.to_be_bytes());
        ctx.sign()
    }

    /// The nonce of the window `now` falls in.
    pub fn issue(&self, now: i64) -> String {
        let window = now.div_euclid(NONCE_WINDOW_SECS);
        let mut raw = [0u8; 8 + NONCE_TAG_BYTES];
        raw[..8].copy_from_slice(&window.to_be_bytes());
        raw[8..].copy_from_slice(&self.tag(window).as_ref()[..NONCE_TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// `Some(true)` for a nonce of the current (or next: a replica whose clock runs ahead)
    /// window, `Some(false)` for the previous window (still accepted; time to send a new
    /// one), `None` for anything else.
    pub fn check(&self, nonce: &str, now: i64) -> Option<bool> {
        let raw = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        if raw.len() != 8 + NONCE_TAG_BYTES {
            return None;
        }
        let window = i64::from_be_bytes(raw[..8].try_into().ok()?);
        let current = now.div_euclid(NONCE_WINDOW_SECS);
        if !(current - 1..=current + 1).contains(&window) {
            return None;
        }
        let tag = self.tag(window);
        aws_lc_rs::constant_time::verify_slices_are_equal(
            &raw[8..],
            &tag.as_ref()[..NONCE_TAG_BYTES],
        )
        .ok()?;
        Some(window >= current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_normalise_as_rfc_3986_says() {
        let n = |s: &str| normalize_uri(s);
        assert_eq!(
            n("https://EXAMPLE.com:443/a/b").as_deref(),
            Some("https://example.com/a/b")
        );
        assert_eq!(
            n("http://example.com:80").as_deref(),
            Some("http://example.com/")
        );
        assert_eq!(
            n("https://example.com:8443/x?q=1#f").as_deref(),
            Some("https://example.com:8443/x")
        );
        assert_eq!(
            n("HTTPS://example.com/%7Euser/%2fa").as_deref(),
            Some("https://example.com/~user/%2Fa")
        );
        assert_eq!(
            n("https://example.com/a/./b/../c").as_deref(),
            Some("https://example.com/a/c")
        );
        assert_eq!(
            n("https://example.com/a/.").as_deref(),
            Some("https://example.com/a/")
        );
        assert_eq!(n("https://[::1]:443/").as_deref(), Some("https://[::1]/"));
        assert_eq!(
            n("https://[::1]:8443/").as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(n("https://user@example.com/"), None);
        assert_eq!(n("ftp://example.com/"), None);
        assert_eq!(n("https://example.com/%zz"), None);
        assert_eq!(n("https://example.com:x/"), None);
        assert_eq!(
            request_htu("http", "127.0.0.1:8080", "/api/%61").as_deref(),
            Some("http://127.0.0.1:8080/api/a")
        );
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk: Map<String, Value> = serde_json::from_str(r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).expect("jwk");
        assert_eq!(
            thumbprint(&jwk).expect("thumbprint"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn nonces_hold_for_their_windows_and_only_for_their_issuer() {
        let key = NonceKey::new(&[7u8; 32], "https://idp.example");
        let now = 1_800_000_000;
        let nonce = key.issue(now);
        assert_eq!(key.check(&nonce, now), Some(true));
        assert_eq!(key.check(&nonce, now + NONCE_WINDOW_SECS), Some(false));
        assert_eq!(key.check(&nonce, now + 2 * NONCE_WINDOW_SECS), None);
        assert_eq!(key.check(&nonce, now - NONCE_WINDOW_SECS), Some(true));
        let other = NonceKey::new(&[7u8; 32], "https://other.example");
        assert_eq!(other.check(&nonce, now), None);
        let replica = NonceKey::new(&[7u8; 32], "https://idp.example");
        assert_eq!(replica.check(&nonce, now), Some(true));
        assert_eq!(key.check("AAAA", now), None);
    }
}

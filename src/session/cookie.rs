//! The gateway's cookies: AES-256-GCM sealed values bound to their cookie name, the keyring
//! (the first key encrypts, every key decrypts), the session payload with its expiries inside
//! the authenticated plaintext, and the `Set-Cookie` values.
//!
//! A sealed value is `base64url(version | key id (4) | nonce (12) | ciphertext | tag)`; the
//! additional authenticated data is the cookie's name, so a value moved to another cookie
//! (a transaction cookie into the session cookie, or the reverse) never opens.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::header::HeaderValue;
use serde::{Deserialize, Serialize};

/// The session cookie's name; a session too large for one cookie continues in [`SESSION_COOKIE_2`].
pub const SESSION_COOKIE: &str = "__Host-jwtgate";
/// The second part of a session that does not fit one cookie.
pub const SESSION_COOKIE_2: &str = "__Host-jwtgate-1";
/// The prefix of transaction cookies (`__Host-jwtgate-tx-<state>`), one per login attempt.
pub const TX_COOKIE_PREFIX: &str = "__Host-jwtgate-tx-";
/// Every cookie the gateway owns starts with this; they never reach the upstream.
pub const OWN_PREFIX: &str = "__Host-jwtgate";
/// Browsers keep cookies of up to 4096 bytes; 4000 of name and value leaves room for the
/// attributes, so no browser drops a session silently (SPEC).
pub const MAX_COOKIE_BYTES: usize = 4000;
/// The cookie keys file is small: a few base64 lines.
const MAX_KEYS_FILE_BYTES: u64 = 64 << 10;
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;

/// Why the cookie keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cookie_keys_file {path}: {source}")]
    Read {
        path: String,
        source: crate::files::ReadError,
    },
    #[error("cookie_keys_file {path} line {line}: not a base64 32-byte key (generate one with `openssl rand -base64 32`)")]
    Line { path: String, line: usize },
    #[error("cookie_keys_file {path} holds no key (one base64 32-byte key a line; the first encrypts, all decrypt)")]
    Empty { path: String },
}

/// The cookie keys: the first seals, each opens what it sealed (rotation: add a new key at the
/// top, keep the old ones until the sessions they sealed have expired).
pub struct Keyring {
    keys: Vec<([u8; KEY_ID_LEN], LessSafeKey)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// Reads a keys file: one base64 (standard or URL-safe) 32-byte key a line; blank lines and
    /// `#` comments are skipped.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let shown = path.display().to_string();
        let bytes = crate::files::read_capped(path, MAX_KEYS_FILE_BYTES).map_err(|source| {
            KeyringError::Read {
                path: shown.clone(),
                source,
            }
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = STANDARD
                .decode(line)
                .or_else(|_| URL_SAFE_NO_PAD.decode(line.trim_end_matches('=')))
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or(KeyringError::Line {
                    path: shown.clone(),
                    line: n + 1,
                })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty { path: shown });
        }
        Ok(Keyring::new(&keys))
    }

    /// A keyring of raw 32-byte keys, the first sealing.
    pub fn new(keys: &[[u8; 32]]) -> Keyring {
        Keyring {
            keys: keys
                .iter()
                .filter_map(|k| {
                    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, k);
                    let mut id = [0u8; KEY_ID_LEN];
                    id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
                    // A 32-byte key is always a valid AES-256 key.
                    let key = UnboundKey::new(&AES_256_GCM, k).ok()?;
                    Some((id, LessSafeKey::new(key)))
                })
                .collect(),
        }
    }

    /// Seals `plaintext` for the cookie `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        // The system RNG failing is not recoverable in any useful way; a zero nonce would be
        // catastrophic, so refuse to go on.
        aws_lc_rs::rand::fill(&mut nonce).expect("the system random number generator works");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(start);
        // Sealing in place cannot fail for inputs under GCM's 64 GiB limit.
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut body,
        )
        .expect("AES-GCM seals a cookie-sized input");
        out.extend_from_slice(&body);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a value sealed for the cookie `name` by any key of the ring; `None` when it was
    /// tampered with, sealed for another name, or by a key no longer in the ring.
    pub fn open(&self, name: &str, value: &str) -> Option<Vec<u8>> {
        let mut raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() < 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN || raw[0] != VERSION {
            return None;
        }
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| id[..] == raw[1..1 + KEY_ID_LEN])?;
        let nonce = Nonce::try_assume_unique_for_key(&raw[1 + KEY_ID_LEN..][..NONCE_LEN]).ok()?;
        let body = &mut raw[1 + KEY_ID_LEN + NONCE_LEN..];
        let plain = key
            .open_in_place(nonce, Aad::from(name.as_bytes()), body)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// A browser session, sealed in the cookie (or in Redis with `store = "redis"`). Field names
/// are short: every byte counts against the cookie budget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The gateway's own id of this session (random): the key of its refresh single-flight.
    pub id: String,
    pub sub: String,
    /// The provider's session id (`sid` of the ID token), for logout and the denylist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Created at (Unix seconds): the denylist refuses sessions created before a logout.
    pub iat: i64,
    /// Absolute expiry.
    pub exp: i64,
    /// Idle expiry: moved forward as the session is used.
    pub idle: i64,
    /// The access token.
    pub at: String,
    /// When the access token was received and when it expires.
    pub at_iat: i64,
    pub at_exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt: Option<String>,
    /// The ID token: the `id_token_hint` of logout, and the claims when the access token is
    /// not a JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idt: Option<String>,
}

/// A login in progress, sealed in its transaction cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Transaction {
    /// PKCE code verifier.
    pub v: String,
    pub nonce: String,
    /// Where the browser goes after login: a path and query of this origin.
    pub to: String,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// The `max_age` sent, if any: the ID token's `auth_time` must honour it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// The `acr_values` sent, if any: the ID token's `acr` must be one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr_values: Option<String>,
}

/// The `Set-Cookie` value of one gateway cookie: `__Host-` rules (Secure, Path=/, no Domain),
/// HttpOnly, SameSite=Lax. `max_age_secs` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let c = cookie::Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age_secs.max(0)))
        .build();
    // Names are ours and values base64url: always a valid header value.
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The gateway's cookies of a request: the session's one or two parts, and transaction cookies.
#[derive(Debug, Default)]
pub struct Jar<'r> {
    pub session: Option<&'r str>,
    pub session_2: Option<&'r str>,
    pub tx: Vec<(&'r str, &'r str)>,
}

/// Reads the gateway's cookies from the request's `Cookie` headers.
pub fn jar(headers: &http::HeaderMap) -> Jar<'_> {
    let mut jar = Jar::default();
    for v in headers.get_all(http::header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if !name.starts_with(OWN_PREFIX) {
                continue;
            }
            match name {
                SESSION_COOKIE => jar.session = Some(value),
                SESSION_COOKIE_2 => jar.session_2 = Some(value),
                n => {
                    if let Some(id) = n.strip_prefix(TX_COOKIE_PREFIX) {
                        jar.tx.push((id, value));
                    }
                }
            }
        }
    }
    jar
}

/// True when a request carries any gateway cookie (cheap: for stripping before the upstream).
pub fn has_own(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::COOKIE).iter().any(|v| {
        v.as_bytes()
            .windows(OWN_PREFIX.len())
            .any(|w| w == OWN_PREFIX.as_bytes())
    })
}

/// Removes the gateway's cookies from the `Cookie` headers (and a header left empty), so the
/// upstream never sees a session.
pub fn strip_own(headers: &mut http::HeaderMap) {
    if !has_own(headers) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| {
            // A Cookie header that is not text cannot be filtered reliably: dropped whole.
            let v = v.to_str().ok()?;
            let rest: Vec<&str> = v
                .split(';')
                .map(str::trim)
                .filter(|p| {
                    !p.is_empty()
                        && !p
                            .split_once('=')
                            .map_or(*p, |(n, _)| n)
                            .trim()
                            .starts_with(OWN_PREFIX)
                })
                .collect();
            (!rest.is_empty()).then(|| rest.join("; "))
        })
        .collect();
    headers.remove(http::header::COOKIE);
    for v in kept {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.append(http::header::COOKIE, v);
        }
    }
}

/// The session's sealed value split into cookies of at most [`MAX_COOKIE_BYTES`] of name and
/// value: `Ok` with one or two `Set-Cookie` values (and a deletion of the second part when it
/// is no longer needed), `Err(len)` when it does not fit two.
pub fn session_cookies(
    sealed: &str,
    max_age_secs: i64,
    had_second: bool,
) -> Result<Vec<HeaderValue>, usize> {
    let first_cap = MAX_COOKIE_BYTES - SESSION_COOKIE.len() - 1;
    let second_cap = MAX_COOKIE_BYTES - SESSION_COOKIE_2.len() - 1;
    if sealed.len() <= first_cap {
        let mut out = vec![set_cookie(SESSION_COOKIE, sealed, max_age_secs)];
        if had_second {
            out.push(set_cookie(SESSION_COOKIE_2, "", 0));
        }
        return Ok(out);
    }
    if sealed.len() > first_cap + second_cap {
        return Err(sealed.len());
    }
    // base64url is ASCII: any byte index is a char boundary.
    let (a, b) = sealed.split_at(first_cap);
    Ok(vec![
        set_cookie(SESSION_COOKIE, a, max_age_secs),
        set_cookie(SESSION_COOKIE_2, b, max_age_secs),
    ])
}

/// The two session cookie parts joined back.
pub fn session_value<'a>(jar: &Jar<'a>) -> Option<std::borrow::Cow<'a, str>> {
    match (jar.session, jar.session_2) {
        (Some(a), None) => Some(a.into()),
        (Some(a), Some(b)) => Some(format!("{a}{b}").into()),
        _ => None,
    }
}

/// Deletes the session cookies.
pub fn clear_session() -> [HeaderValue; 2] {
    [
        set_cookie(SESSION_COOKIE, "", 0),
        set_cookie(SESSION_COOKIE_2, "", 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_a_ring_key() {
        let ring = Keyring::new(&[[1; 32]]);
        let v = ring.seal(SESSION_COOKIE, b"hello");
        assert_eq!(
            ring.open(SESSION_COOKIE, &v).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(ring.open("__Host-jwtgate-tx-a", &v), None);
        let rotated = Keyring::new(&[[2; 32], [1; 32]]);
        assert_eq!(
            rotated.open(SESSION_COOKIE, &v).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(Keyring::new(&[[2; 32]]).open(SESSION_COOKIE, &v), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            ring.open(SESSION_COOKIE, &URL_SAFE_NO_PAD.encode(raw)),
            None
        );
    }

    #[test]
    fn own_cookies_are_stripped_and_others_kept() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; __Host-jwtgate=x; b=2"),
        );
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("__Host-jwtgate-tx-abc=y"),
        );
        strip_own(&mut h);
        let left: Vec<_> = h.get_all(http::header::COOKIE).iter().collect();
        assert_eq!(left, [HeaderValue::from_static("a=1; b=2")]);
    }

    #[test]
    fn sessions_split_into_two_cookies_of_at_most_4000_bytes() {
        let one = session_cookies(&"a".repeat(3000), 60, true).unwrap();
        assert_eq!(one.len(), 2, "the stale second part is deleted");
        let two = session_cookies(&"a".repeat(7000), 60, false).unwrap();
        assert_eq!(two.len(), 2);
        for c in &two {
            let nv = c.to_str().unwrap().split(';').next().unwrap().len();
            assert!(nv <= MAX_COOKIE_BYTES, "{nv}");
        }
        assert!(session_cookies(&"a".repeat(8000), 60, false).is_err());
    }
}

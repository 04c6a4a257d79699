//! Identity assertions for upstreams (SPEC "Identity assertion for backends"): a short-lived
//! JWT the gateway signs for each verified token, so a backend can prove that the identity it
//! reads came through the gateway. ES256 or EdDSA with aws-lc-rs; `kid` is the key's RFC 7638
//! thumbprint; the first configured key signs and every key is published, so a new key is
//! added at the end (published before it signs) and moved to the front once backends have it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use serde_json::{json, Map, Value};

use crate::config::{AssertionConfig, RouteAssertion};

/// The `typ` of every assertion: backends check it so that no other JWT signed with these
/// keys (there is none, but keys get reused) passes for an assertion (RFC 8725 §3.11).
pub const ASSERTION_TYP: &str = "jwtgate-id+jwt";

/// Why an assertion key did not load.
#[derive(Debug, thiserror::Error)]
pub enum AssertionKeyError {
    #[error("[assertion] key {path}: {source}")]
    Read {
        path: PathBuf,
        source: crate::files::ReadError,
    },
    #[error("[assertion] key {path}: not a PEM file ({reason})")]
    NotPem { path: PathBuf, reason: String },
    #[error("[assertion] key {path}: holds no EC P-256 or Ed25519 private key (PKCS#8 \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\" PEM); make one with `openssl genpkey -algorithm ed25519 -out {path}` or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {path}`")]
    Unsupported { path: PathBuf },
    #[error("[assertion] keys: {0} is listed twice")]
    Duplicate(PathBuf),
}

enum SigningKey {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// One loaded key: its signing half and its public JWK.
struct LoadedKey {
    key: SigningKey,
    kid: String,
    jwk: Value,
}

/// Signs assertions with the first key; publishes all of them.
pub struct Signer {
    signing: LoadedKey,
    /// base64url of the JOSE header, the same for every assertion of this key.
    header_b64: String,
    issuer: String,
    ttl_secs: i64,
    /// The header the upstream receives the assertion in.
    pub header: HeaderName,
    /// `{"keys": [...]}` of every configured key, in list order.
    jwks: Bytes,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.signing.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads every key of `[assertion]`.
    pub fn load(cfg: &AssertionConfig) -> Result<Signer, AssertionKeyError> {
        let mut loaded = Vec::with_capacity(cfg.keys.len());
        for (i, path) in cfg.keys.iter().enumerate() {
            if cfg.keys[..i].contains(path) {
                return Err(AssertionKeyError::Duplicate(path.clone()));
            }
            loaded.push(load_key(path)?);
        }
        let jwks = json!({ "keys": loaded.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        let mut keys = loaded.into_iter();
        let signing = keys.next().ok_or_else(|| AssertionKeyError::Unsupported {
            path: PathBuf::new(),
        })?;
        let alg = match signing.key {
            SigningKey::Es256(_) => "ES256",
            SigningKey::EdDsa(_) => "EdDSA",
        };
        let header = json!({ "alg": alg, "kid": signing.kid, "typ": ASSERTION_TYP });
        Ok(Signer {
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            signing,
            issuer: cfg.issuer.clone(),
            ttl_secs: cfg.ttl.as_secs() as i64,
            header: cfg.header.clone(),
            jwks: Bytes::from(jwks.to_string()),
            rng: SystemRandom::new(),
        })
    }

    /// The JWKS of every configured key (what `/.well-known/jwks.json` serves).
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The kid of the key that signs.
    pub fn kid(&self) -> &str {
        &self.signing.kid
    }

    /// Lifetime of an assertion, in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A new assertion for a verified token's `claims` on a route: `iss`, `aud`, `sub`, `iat`,
    /// `exp`, `jti`, then the route's copied claims. `None` without a string `sub` (a verified
    /// token always has one) or if signing fails.
    pub fn sign(
        &self,
        route: &RouteAssertion,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Option<HeaderValue> {
        let sub = claims.get("sub")?.as_str()?;
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).ok()?;
        let mut payload = Map::with_capacity(6 + route.claims.len());
        payload.insert("iss".into(), Value::from(self.issuer.as_str()));
        payload.insert("aud".into(), Value::from(route.audience.as_str()));
        payload.insert("sub".into(), Value::from(sub));
        payload.insert("iat".into(), Value::from(now));
        payload.insert("exp".into(), Value::from(now + self.ttl_secs));
        payload.insert("jti".into(), Value::from(URL_SAFE_NO_PAD.encode(jti)));
        for name in &route.claims {
            if let Some(v) = claims.get(name) {
                payload.insert(name.clone(), v.clone());
            }
        }
        let payload = serde_json::to_vec(&payload).ok()?;
        let mut jwt =
            String::with_capacity(self.header_b64.len() + 2 + payload.len() * 4 / 3 + 4 + 88);
        jwt.push_str(&self.header_b64);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        let signature = match &self.signing.key {
            SigningKey::Es256(k) => k.sign(&self.rng, jwt.as_bytes()).ok()?.as_ref().to_vec(),
            SigningKey::EdDsa(k) => k.sign(jwt.as_bytes()).as_ref().to_vec(),
        };
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        // base64url and dots only: always a valid header value.
        HeaderValue::from_maybe_shared(Bytes::from(jwt)).ok()
    }
}

/// Reads one PEM private key: PKCS#8 (EC P-256 or Ed25519, v1 or v2) or SEC1 EC.
fn load_key(path: &Path) -> Result<LoadedKey, AssertionKeyError> {
    let bytes =
        crate::files::read_capped(path, crate::files::MAX_KEY_FILE_BYTES).map_err(|source| {
            AssertionKeyError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
    let block = pem::parse(&bytes).map_err(|e| AssertionKeyError::NotPem {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let der = block.contents();
    let unsupported = || AssertionKeyError::Unsupported {
        path: path.to_owned(),
    };
    let (key, jwk) = match block.tag() {
        "PRIVATE KEY" | "EC PRIVATE KEY" => {
            if let Ok(k) = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            {
                let point = k.public_key().as_ref();
                // An uncompressed P-256 point: 0x04 || x (32) || y (32).
                if point.len() != 65 || point[0] != 4 {
                    return Err(unsupported());
                }
                let jwk = json!({
                    "crv": "P-256",
                    "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                });
                (SigningKey::Es256(k), jwk)
            } else if block.tag() == "PRIVATE KEY" {
                // OpenSSL writes PKCS#8 v1 (no public key inside): "maybe unchecked" accepts it.
                let k =
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| unsupported())?;
                let jwk = json!({
                    "crv": "Ed25519",
                    "kty": "OKP",
                    "x": URL_SAFE_NO_PAD.encode(k.public_key().as_ref()),
                });
                (SigningKey::EdDsa(k), jwk)
            } else {
                return Err(unsupported());
            }
        }
        _ => return Err(unsupported()),
    };
    let kid = thumbprint(&jwk);
    let mut jwk = jwk;
    if let Some(o) = jwk.as_object_mut() {
        o.insert("kid".into(), Value::from(kid.as_str()));
        o.insert("use".into(), Value::from("sig"));
        let alg = match key {
            SigningKey::Es256(_) => "ES256",
            SigningKey::EdDsa(_) => "EdDSA",
        };
        o.insert("alg".into(), Value::from(alg));
    }
    Ok(LoadedKey { key, kid, jwk })
}

/// RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace,
/// base64url. `jwk` holds exactly those members here, and serde_json writes an object built
/// by `json!` in insertion order, which [`load_key`] makes lexicographic.
fn thumbprint(jwk: &Value) -> String {
    let canonical = jwk.to_string();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Assertions already made, reused for the same token on the same route until 10% of their
/// lifetime is left. Keyed by the whole token text (no collision can hand one token's
/// identity to another) and the route; an entry made under another snapshot (a reload may
/// have rotated the keys or changed the route's claims) is never used.
pub struct AssertionCache {
    cache: Cache<CacheKey, Arc<Entry>, ByBytes>,
}

struct Entry {
    generation: u64,
    /// Unix time from which a new assertion is made instead.
    renew_at: i64,
    value: HeaderValue,
}

#[derive(PartialEq, Eq)]
struct CacheKey {
    route: usize,
    token: Box<str>,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.route.hash(h);
        (*self.token).hash(h);
    }
}

/// A lookup key borrowing the token, hashed exactly like [`CacheKey`].
struct KeyRef<'a> {
    route: usize,
    token: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.route.hash(h);
        self.token.hash(h);
    }
}

impl Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.route == key.route && self.token == &*key.token
    }
}

#[derive(Clone)]
struct ByBytes;

/// The boxed token, the assertion's bytes, the `Arc<Entry>` and the cache slot.
const ENTRY_OVERHEAD_BYTES: u64 = 160;

impl Weighter<CacheKey, Arc<Entry>> for ByBytes {
    fn weight(&self, key: &CacheKey, val: &Arc<Entry>) -> u64 {
        key.token.len() as u64 + val.value.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

impl std::fmt::Debug for AssertionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssertionCache({} entries)", self.cache.len())
    }
}

impl AssertionCache {
    /// At most `entries` assertions and about `bytes` of memory.
    pub fn new(entries: usize, bytes: u64) -> AssertionCache {
        AssertionCache {
            cache: Cache::with_weighter(entries.max(1), bytes, ByBytes),
        }
    }

    /// The assertion for `token` on route `route`: the remembered one while more than 10% of
    /// its lifetime is left, else a new one (remembered in its place).
    pub fn get_or_sign(
        &self,
        signer: &Signer,
        generation: u64,
        route: usize,
        assertion: &RouteAssertion,
        token: &str,
        claims: &Map<String, Value>,
    ) -> Option<HeaderValue> {
        let now = crate::unix_now();
        if let Some(e) = self.cache.get(&KeyRef { route, token }) {
            if e.generation == generation && now < e.renew_at {
                return Some(e.value.clone());
            }
        }
        let value = signer.sign(assertion, claims, now)?;
        // Renewed with 10% of the lifetime left (rounded down, so a 1 s ttl is never reused).
        let renew_at = now + signer.ttl_secs - (signer.ttl_secs / 10).max(1);
        self.cache.insert(
            CacheKey {
                route,
                token: token.into(),
            },
            Arc::new(Entry {
                generation,
                renew_at,
                value: value.clone(),
            }),
        );
        Some(value)
    }

    /// Number of entries, for tests.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// `jwtgate assertion-jwks`: the JWKS of the config's `[assertion]` keys.
pub fn jwks_of_config(cfg: &AssertionConfig) -> Result<String, AssertionKeyError> {
    let signer = Signer::load(cfg)?;
    Ok(String::from_utf8_lossy(&signer.jwks()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1 gives an RSA example; RFC 8037 §A.3 an Ed25519 one.
        let jwk =
            json!({"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            thumbprint(&jwk),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}

//! The verified-token cache: a token whose signature was checked is remembered, keyed by the
//! whole token text (so no collision can let one token pass for another), until its `exp`,
//! and only while its issuer's keys are the same key set. A hit skips base64, JSON parsing and
//! the signature; every check that depends on time or on the request (exp/nbf/iat, audience,
//! subject, the route's requirements and issuers) still runs.

use std::sync::{Arc, Weak};

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use serde_json::{Map, Value};

use crate::keys::KeySet;

/// What the cache holds for a token.
#[derive(Debug)]
pub struct Cached {
    /// The `iss` the signature was verified for, matched against the issuers a route accepts.
    pub iss: String,
    /// The snapshot that verified it.
    pub generation: u64,
    /// The key set that verified it; a refresh or reload that replaces it invalidates the entry.
    pub keys: Weak<KeySet>,
    pub claims: Arc<Map<String, Value>>,
    /// Unix time after which the entry is never used (the token's `exp`).
    pub expires: f64,
    weight: u64,
}

#[derive(Clone)]
struct ByBytes {
    floor: u64,
}

impl Weighter<Box<str>, Arc<Cached>> for ByBytes {
    fn weight(&self, key: &Box<str>, val: &Arc<Cached>) -> u64 {
        // Every entry weighs at least `floor`, so the byte budget also bounds the entry count.
        (key.len() as u64 + val.weight).max(self.floor)
    }
}

/// Bounded in entries and in bytes; shared by every snapshot (entries carry their own validity).
pub struct TokenCache {
    cache: Cache<Box<str>, Arc<Cached>, ByBytes>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCache({} entries)", self.cache.len())
    }
}

impl TokenCache {
    /// A cache of at most `entries` tokens and about `bytes` of memory.
    pub fn new(entries: usize, bytes: u64) -> TokenCache {
        let entries = entries.max(1);
        TokenCache {
            cache: Cache::with_weighter(
                entries,
                bytes,
                ByBytes {
                    floor: bytes / entries as u64,
                },
            ),
        }
    }

    /// The entry for `token`, if any; the caller checks it is still usable.
    pub fn get(&self, token: &str) -> Option<Arc<Cached>> {
        self.cache.get(token)
    }

    /// Drops an entry that turned out stale.
    pub fn remove(&self, token: &str) {
        self.cache.remove(token);
    }

    /// Remembers a verified token.
    pub fn insert(
        &self,
        token: &str,
        iss: &str,
        generation: u64,
        keys: &Arc<KeySet>,
        claims: Arc<Map<String, Value>>,
    ) {
        let Some(expires) = claims.get("exp").and_then(Value::as_f64) else {
            return;
        };
        let now = crate::unix_now() as f64;
        // A token inside its leeway after exp is still accepted, but not worth remembering.
        if expires <= now {
            return;
        }
        // A rough size of the parsed claims: the JSON text is a fair proxy.
        let weight = 256 + 2 * token.len() as u64;
        self.cache.insert(
            token.into(),
            Arc::new(Cached {
                iss: iss.to_owned(),
                generation,
                keys: Arc::downgrade(keys),
                claims,
                expires,
                weight,
            }),
        );
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

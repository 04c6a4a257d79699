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
        (heap(key.len()) + val.weight).max(self.floor)
    }
}

/// Bounded in entries and in bytes; shared by every snapshot (entries carry their own validity).
pub struct TokenCache {
    cache: Cache<Box<str>, Arc<Cached>, ByBytes>,
    max_entry_bytes: u64,
}

/// Per-allocation cost assumed on top of the requested size (glibc malloc: an 8-byte header,
/// 16-byte alignment, 32-byte minimum chunk), rounded up to be conservative.
const ALLOC_OVERHEAD_BYTES: u64 = 16;
/// The `Arc<Cached>`, the cache's own slot and the boxed key's header.
const ENTRY_OVERHEAD_BYTES: u64 = std::mem::size_of::<Cached>() as u64 + 128;
const VALUE_BYTES: u64 = std::mem::size_of::<Value>() as u64;

/// The memory of one heap allocation of `n` bytes (0 for none).
fn heap(n: usize) -> u64 {
    if n == 0 {
        0
    } else {
        (n as u64).div_ceil(16) * 16 + ALLOC_OVERHEAD_BYTES
    }
}

/// A conservative estimate of the heap memory a parsed JSON value owns (its own `Value` slot is
/// counted by its container). Objects are `IndexMap`s (serde_json `preserve_order`): an entries
/// vector of (hash, key, value) and an index table; growth by doubling is assumed for both.
fn value_weight(v: &Value) -> u64 {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => heap(s.capacity()),
        Value::Array(items) => {
            heap(items.capacity() * VALUE_BYTES as usize)
                + items.iter().map(value_weight).sum::<u64>()
        }
        Value::Object(m) => map_weight(m),
    }
}

/// [`value_weight`] of an object's contents.
fn map_weight(m: &Map<String, Value>) -> u64 {
    if m.is_empty() {
        return 0;
    }
    // Entries: hash (8) + key `String` (24) + value; index table: 8-byte slots plus a control
    // byte each, at most 2x the entries after growth, plus a 16-byte control group.
    let slots = 2 * m.len();
    let entries = heap(slots * (8 + 24 + VALUE_BYTES as usize));
    let index = heap(slots * 9 + 16);
    entries
        + index
        + m.iter()
            .map(|(k, v)| heap(k.capacity()) + value_weight(v))
            .sum::<u64>()
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
            max_entry_bytes: bytes / 16,
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
        // What the entry really holds: parsed JSON costs several times its text (a one-byte
        // array element is a whole `Value`), so the claims are weighed by walking them once.
        let weight = ENTRY_OVERHEAD_BYTES + heap(iss.len()) + map_weight(&claims);
        // One entry may take at most a sixteenth of the budget: a few huge claim sets never
        // flush everything else, and are simply verified every time.
        if weight + token.len() as u64 > self.max_entry_bytes {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_weighed_by_what_they_hold() {
        // 4,000 one-digit array elements: 8 KB of text, over 100 KB as `Value`s.
        let text = format!(
            "{{\"a\":[{}]}}",
            std::iter::repeat_n("1", 4000).collect::<Vec<_>>().join(",")
        );
        let v: Map<String, Value> = serde_json::from_str(&text).expect("json");
        let w = map_weight(&v);
        assert!(
            w >= 4000 * VALUE_BYTES,
            "weight {w} for {} bytes",
            text.len()
        );
        let nested: Map<String, Value> =
            serde_json::from_str(r#"{"o":{"k":"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"}}"#)
                .expect("json");
        assert!(map_weight(&nested) > 40 + 2 * (VALUE_BYTES + 32));
    }
}

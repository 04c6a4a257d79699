//! `store = "redis"`: the session lives in Redis, sealed with a key of its own that only the
//! browser's cookie holds (a Redis dump alone opens no session); the cookie holds the id and
//! that key, sealed with the keyring like any session cookie. Every replica reads the current
//! session, so a refresh-token rotation never races between replicas, and a refresh is
//! single-flight across replicas through a Redis lock.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::cookie::{Keyring, Session};
use crate::store::{Store, StoreError};

/// How long one replica may hold a session's refresh lock (a refresh takes at most the
/// provider's fetch timeout).
pub const LOCK_MS: u64 = 10_000;
/// How long a replica that lost the lock waits for the winner's result.
pub const WAIT_FOR_REFRESH: Duration = Duration::from_secs(6);

/// What a `store = "redis"` session cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Handle {
    pub id: String,
    /// The session's own 32-byte key, base64url.
    pub k: String,
}

impl Handle {
    /// A new handle for the session `id`, with a fresh key.
    pub fn new(id: &str) -> Handle {
        Handle {
            id: id.to_owned(),
            k: super::oidc::random(32),
        }
    }

    fn ring(&self) -> Option<Keyring> {
        let k = URL_SAFE_NO_PAD.decode(&self.k).ok()?;
        Some(Keyring::new(&[<[u8; 32]>::try_from(k).ok()?]))
    }

    fn key(&self, store: &Store) -> String {
        store.key("session", &self.id)
    }
}

/// The session of `h`; `None` when Redis has none (expired, logged out) or it does not open.
pub async fn load(store: &Store, h: &Handle) -> Result<Option<Session>, StoreError> {
    let key = h.key(store);
    let sealed: Option<String> = store
        .call_idempotent("session_read", redis::cmd("GET").arg(&key))
        .await?;
    Ok(sealed.and_then(|v| {
        let plain = h.ring()?.open(&key, &v)?;
        serde_json::from_slice(&plain).ok()
    }))
}

/// Writes the session, expiring with it.
pub async fn save(store: &Store, h: &Handle, s: &Session, now: i64) -> Result<(), StoreError> {
    let key = h.key(store);
    let ring = h.ring().ok_or_else(|| {
        StoreError::Redis(redis::RedisError::from((
            redis::ErrorKind::Client,
            "a session handle without a valid key",
        )))
    })?;
    let sealed = ring.seal(&key, &serde_json::to_vec(s).unwrap_or_default());
    let ttl = (s.exp - now).max(1);
    store
        .call_idempotent::<()>(
            "session_write",
            redis::cmd("SET").arg(&key).arg(sealed).arg("EX").arg(ttl),
        )
        .await
}

/// Moves the stored session's idle expiry to `s`'s, under the session's lock, and only while
/// the stored session is the one `s` was read as (same refresh token): a request that read the
/// session before another replica refreshed it must not write the old tokens back. Skipped
/// while a refresh holds the lock (the next request touches it).
pub async fn touch(store: &Store, h: &Handle, s: &Session, now: i64) -> Result<(), StoreError> {
    if !lock(store, h).await? {
        return Ok(());
    }
    let result = async {
        match load(store, h).await? {
            Some(mut cur) if cur.rt == s.rt => {
                cur.idle = cur.idle.max(s.idle);
                save(store, h, &cur, now).await
            }
            // Refreshed meanwhile, or logged out: nothing of this copy is written.
            _ => Ok(()),
        }
    }
    .await;
    unlock(store, h).await;
    result
}

/// Deletes the session (logout).
pub async fn delete(store: &Store, h: &Handle) -> Result<(), StoreError> {
    store
        .call_idempotent::<()>("session_write", redis::cmd("DEL").arg(h.key(store)))
        .await
}

/// Takes the session's refresh lock; false when another replica holds it.
pub async fn lock(store: &Store, h: &Handle) -> Result<bool, StoreError> {
    let key = store.key("session-lock", &h.id);
    let set: Option<String> = store
        .call(
            "session_lock",
            redis::cmd("SET")
                .arg(&key)
                .arg("1")
                .arg("NX")
                .arg("PX")
                .arg(LOCK_MS),
        )
        .await?;
    Ok(set.is_some())
}

/// Releases the session's refresh lock.
pub async fn unlock(store: &Store, h: &Handle) {
    let key = store.key("session-lock", &h.id);
    let _ = store
        .call::<()>("session_lock", redis::cmd("DEL").arg(&key))
        .await;
}

//! The replay cache: "has this id been used before?" for DPoP proof `jti`s and one-time
//! tokens. In memory on one gateway; in Redis (`SET NX` with the id's expiry) when `[redis]`
//! is set, so a replay to another replica is caught too.
//!
//! Ids are remembered by a 128-bit SHA-256 prefix of namespace and id: bounded size whatever a
//! client sends, and a collision (a false "seen") is beyond reach.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Store, StoreError};

/// Ids remembered in memory at most, across all namespaces (about 40 bytes each).
pub const LOCAL_CAPACITY: usize = 1_000_000;

const SHARDS: usize = 16;

/// Seconds between sweeps of expired ids in one shard.
const SWEEP_EVERY: u64 = 30;

/// What to do when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDown {
    /// Refuse: the caller answers 503 (one-time tokens: a replay must never pass).
    Refuse,
    /// Decide on this replica's memory alone (DPoP proofs: their window is seconds long).
    Local,
}

/// The cache could not decide; the request must be refused with 503.
#[derive(Debug, thiserror::Error)]
pub enum ReplayUnavailable {
    #[error("the shared replay cache (Redis) is unreachable: {0}")]
    Store(#[from] StoreError),
    #[error("the replay cache is full ({LOCAL_CAPACITY} unexpired ids)")]
    Full,
}

/// The process's replay cache.
#[derive(Debug)]
pub struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
    store: Option<Arc<Store>>,
}

#[derive(Debug, Default)]
struct Shard {
    /// Id hash -> Unix second after which it may be forgotten.
    seen: HashMap<u128, u64>,
    next_sweep: u64,
}

impl ReplayCache {
    /// A cache in memory, shared through `store` when there is one.
    pub fn new(store: Option<Arc<Store>>) -> ReplayCache {
        ReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            store,
        }
    }

    /// Records `id` in `namespace` (such as `dpop:corp` or `once:corp`) until `until` (Unix
    /// seconds); true the first time it is seen, false for a replay.
    pub async fn first_use(
        &self,
        namespace: &str,
        id: &str,
        until: u64,
        when_down: WhenDown,
    ) -> Result<bool, ReplayUnavailable> {
        let hash = id_hash(namespace, id);
        let now = crate::unix_secs(crate::unix_now());
        let until = until.max(now + 1);
        let Some(store) = &self.store else {
            return self.first_use_local(hash, until, now);
        };
        let key = store.key("replay", &format!("{namespace}:{hash:032x}"));
        // A value of this attempt's own, returned by `GET` when a resent SET finds it: an
        // attempt whose reply was lost still counts as the first use.
        let mine = fastrand::u64(..).to_string();
        let set = redis::cmd("SET")
            .arg(&key)
            .arg(&mine)
            .arg("NX")
            .arg("GET")
            .arg("EXAT")
            .arg(until)
            .to_owned();
        match store
            .call_idempotent::<Option<String>>("replay", &set)
            .await
        {
            Ok(previous) => Ok(previous.is_none_or(|p| p == mine)),
            Err(e) => match when_down {
                WhenDown::Refuse => Err(e.into()),
                WhenDown::Local => {
                    tracing::debug!(error = %e, "replay cache: Redis unavailable, deciding on this replica's memory");
                    self.first_use_local(hash, until, now)
                }
            },
        }
    }

    fn first_use_local(&self, hash: u128, until: u64, now: u64) -> Result<bool, ReplayUnavailable> {
        let shard = &self.shards[(hash as usize) % SHARDS];
        // A poisoned shard only means another request panicked mid-insert; its map is intact.
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if now >= shard.next_sweep || shard.seen.len() >= LOCAL_CAPACITY / SHARDS {
            shard.seen.retain(|_, u| *u > now);
            shard.next_sweep = now + SWEEP_EVERY;
        }
        match shard.seen.get(&hash) {
            Some(u) if *u > now => return Ok(false),
            _ => {}
        }
        if shard.seen.len() >= LOCAL_CAPACITY / SHARDS {
            return Err(ReplayUnavailable::Full);
        }
        shard.seen.insert(hash, until);
        Ok(true)
    }

    /// Ids held in memory now (expired ones not yet swept included).
    pub fn local_len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).seen.len())
            .sum()
    }
}

fn id_hash(namespace: &str, id: &str) -> u128 {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(namespace.as_bytes());
    ctx.update(&[0]);
    ctx.update(id.as_bytes());
    let digest = ctx.finish();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest.as_ref()[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_passes_once_per_namespace_until_it_expires() {
        let cache = ReplayCache::new(None);
        let now = crate::unix_now() as u64;
        assert!(cache
            .first_use("once:a", "j1", now + 60, WhenDown::Refuse)
            .await
            .unwrap());
        assert!(!cache
            .first_use("once:a", "j1", now + 60, WhenDown::Refuse)
            .await
            .unwrap());
        assert!(cache
            .first_use("once:b", "j1", now + 60, WhenDown::Refuse)
            .await
            .unwrap());
        assert!(cache
            .first_use("once:a", "j2", now + 60, WhenDown::Refuse)
            .await
            .unwrap());
        // An entry past its time is forgotten and the id passes again.
        let hash = id_hash("once:a", "old");
        assert!(cache.first_use_local(hash, now + 5, now).unwrap());
        assert!(!cache.first_use_local(hash, now + 5, now + 4).unwrap());
        assert!(cache.first_use_local(hash, now + 100, now + 6).unwrap());
    }

    #[test]
    fn a_full_cache_refuses_instead_of_forgetting() {
        let cache = ReplayCache::new(None);
        let now = 1000;
        let per_shard = LOCAL_CAPACITY / SHARDS;
        // Fill one shard with unexpired ids.
        {
            let mut shard = cache.shards[0].lock().unwrap();
            shard.next_sweep = now + SWEEP_EVERY;
            for i in 0..per_shard as u128 {
                shard.seen.insert(i * SHARDS as u128, now + 60);
            }
        }
        let fresh = (per_shard as u128 + 1) * SHARDS as u128;
        assert!(matches!(
            cache.first_use_local(fresh, now + 60, now),
            Err(ReplayUnavailable::Full)
        ));
        // Once they expire the sweep makes room.
        assert!(cache.first_use_local(fresh, now + 200, now + 61).unwrap());
        assert_eq!(cache.local_len(), 1);
    }
}

//! `[route.rate_limit]`: GCRA (a token bucket of `burst` refilled at `rate`) per key, the
//! token's claim or, without a valid token, the client address (SPEC "CORS and rate limits").
//!
//! In memory the decision is `governor`'s. Its own keyed stores (a `DashMap` or a `HashMap`)
//! grow with every key ever seen until `retain_recent` is called, so a flood of distinct
//! client addresses would grow them without bound; [`BoundedStore`] implements its
//! `StateStore` over a `quick_cache` of at most [`MAX_KEYS`] entries shared by every route, so
//! memory stays bounded and the least recently used keys are forgotten first (a forgotten key
//! starts again with a full bucket). With `[redis]` the same algorithm runs as one atomic Lua
//! script, so replicas share each key's state ([`REDIS_GCRA`]).

use std::convert::Infallible;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::Quota;
use http::header::HeaderValue;
use quick_cache::sync::Cache;
use serde_json::Value;

use crate::config::RateLimit;

/// Keys remembered at once across all routes; past it the least recently used are dropped.
pub const MAX_KEYS: usize = 1_000_000;

/// What a request is limited by.
#[derive(Debug, Clone, Copy)]
pub enum LimitKey<'a> {
    /// The route's key claim of a verified token.
    Claim(&'a Value),
    /// The client address (no valid token, or no such claim).
    Addr(IpAddr),
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through; `remaining` more requests would be now.
    Allowed { remaining: u32 },
    /// Over the limit: the next request conforms after `retry_after`.
    Limited { retry_after: Duration },
}

/// GCRA states of every route, bounded in entries. Cloned into each route's limiter.
#[derive(Clone)]
pub struct BoundedStore {
    cache: Arc<Cache<u64, Arc<InMemoryState>>>,
}

impl std::fmt::Debug for BoundedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoundedStore({} keys)", self.cache.len())
    }
}

impl BoundedStore {
    /// A store of at most `keys` states.
    pub fn new(keys: usize) -> BoundedStore {
        BoundedStore {
            cache: Arc::new(Cache::new(keys.max(1))),
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// Keys are already hashes of (limiter, key), see [`RouteLimiter::hash`].
impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let state = match self.cache.get_or_insert_with(key, || {
            Ok::<_, Infallible>(Arc::new(InMemoryState::default()))
        }) {
            Ok(s) => s,
            Err(never) => match never {},
        };
        // The state's own compare-and-swap loop: concurrent requests of one key never both
        // take the last cell.
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// The clock of the in-memory limiters: Tokio's, so tests can pause and advance it.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl governor::clock::Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        // Offset by one nanosecond: governor reads a stored 0 as "never seen".
        Nanos::from(self.start.elapsed()) + Nanos::from(1u64)
    }
}

type Limiter = governor::RateLimiter<u64, BoundedStore, TokioClock, StateInformationMiddleware>;

/// One route's limit: the in-memory limiter and the precomputed `RateLimit-Policy`.
pub struct RouteLimiter {
    /// Unique per limiter: part of every key hash, so routes never share a bucket.
    id: u64,
    pub config: RateLimit,
    limiter: Limiter,
    hasher: std::collections::hash_map::RandomState,
    /// The policy item's name: the route name as a structured-field string.
    policy_name: String,
    /// `RateLimit-Policy`.
    pub policy: HeaderValue,
}

impl std::fmt::Debug for RouteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

static NEXT_LIMITER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl RouteLimiter {
    /// The limiter of route `route` with `config`, keeping its states in `store`.
    pub fn new(route: &str, config: &RateLimit, store: &BoundedStore) -> RouteLimiter {
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        // Validation refuses a zero interval; one nanosecond is the floor governor accepts.
        let quota = Quota::with_period(config.interval.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let limiter = governor::RateLimiter::<
            u64,
            BoundedStore,
            TokioClock,
            governor::middleware::NoOpMiddleware<Nanos>,
        >::new(quota, store.clone(), TokioClock::default())
        .with_middleware::<StateInformationMiddleware>();
        let policy_name = sf_string(route);
        let policy = HeaderValue::from_str(&format!(
            "{policy_name};q={};w={}",
            config.burst,
            window_secs(config)
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("\"route\""));
        RouteLimiter {
            id: NEXT_LIMITER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            config: config.clone(),
            limiter,
            hasher: Default::default(),
            policy_name,
            policy,
        }
    }

    /// True when this limiter enforces `config` (a reload keeps it, and its states, then).
    pub fn same(&self, config: &RateLimit) -> bool {
        self.config == *config
    }

    /// The key's hash within this limiter.
    fn hash(&self, key: LimitKey<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        self.id.hash(&mut h);
        match key {
            LimitKey::Claim(Value::String(s)) => {
                0u8.hash(&mut h);
                s.hash(&mut h);
            }
            LimitKey::Claim(other) => {
                0u8.hash(&mut h);
                other.to_string().hash(&mut h);
            }
            LimitKey::Addr(ip) => {
                1u8.hash(&mut h);
                ip.hash(&mut h);
            }
        }
        h.finish()
    }

    /// One request of `key` against this replica's memory.
    pub fn check_local(&self, key: LimitKey<'_>) -> Decision {
        match self.limiter.check_key(&self.hash(key)) {
            Ok(state) => Decision::Allowed {
                remaining: state.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Limited {
                retry_after: not_until
                    .wait_time_from(governor::clock::Clock::now(self.limiter.clock())),
            },
        }
    }

    /// `RateLimit` for an answer: what is left and when the bucket has room again.
    pub fn state_header(&self, decision: Decision) -> HeaderValue {
        let (remaining, reset) = match decision {
            Decision::Allowed { remaining } => (remaining, 0),
            Decision::Limited { retry_after } => (0, whole_secs(retry_after)),
        };
        HeaderValue::from_str(&format!("{};r={remaining};t={reset}", self.policy_name))
            .unwrap_or_else(|_| HeaderValue::from_static("\"route\";r=0"))
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After` of 0 would invite an instant retry).
pub fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

/// `w` of `RateLimit-Policy`: the time an empty bucket takes to refill, whole seconds.
fn window_secs(c: &RateLimit) -> u64 {
    whole_secs(c.interval * c.burst)
}

/// A structured-field string (RFC 8941 §3.3.3) of printable ASCII; other characters become `?`.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// The GCRA of [`RouteLimiter::check_local`] as one atomic Redis script, so replicas share
/// each key's bucket. KEYS[1]: the key; ARGV: emission interval and burst tolerance in
/// microseconds (tau = interval x (burst - 1)). Time is Redis's own (`TIME`), the same for
/// every replica. Returns {allowed (1/0), remaining, retry-after in microseconds}.
pub const REDIS_GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tau
if now < allow_at then
  return {0, 0, allow_at - now}
end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], new_tat, 'PX', ttl_ms)
local remaining = math.floor((now + tau - (new_tat - interval)) / interval)
if remaining < 0 then remaining = 0 end
return {1, remaining, 0}
"#;

/// Rate limits shared through Redis ([`REDIS_GCRA`]); while Redis does not answer, each
/// replica falls back to its own in-memory limit (logged once per outage; every failed call
/// is counted in `jwtgate_redis_errors_total{op="ratelimit"}` by the store).
pub struct SharedLimits {
    script: redis::Script,
    down: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLimits")
    }
}

impl Default for SharedLimits {
    fn default() -> Self {
        SharedLimits {
            script: redis::Script::new(REDIS_GCRA),
            down: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Longest claim value kept as is in a Redis key; longer ones are hashed (SHA-256).
const MAX_KEY_VALUE_BYTES: usize = 128;

impl SharedLimits {
    /// One request of `key` on `route`, against the bucket every replica shares.
    pub async fn check(
        &self,
        store: &crate::store::Store,
        limiter: &RouteLimiter,
        route: &str,
        key: LimitKey<'_>,
    ) -> Decision {
        let id = store.key("ratelimit", &redis_id(route, key));
        // Microseconds: Redis TIME's unit, and exact in Lua's doubles for centuries.
        let interval_us = (limiter.config.interval.as_micros() as u64).max(1);
        let tau_us = interval_us.saturating_mul(u64::from(limiter.config.burst) - 1);
        let result = store
            .run("ratelimit", |mut conn| async move {
                self.script
                    .key(&id)
                    .arg(interval_us)
                    .arg(tau_us)
                    .invoke_async::<(i64, i64, i64)>(&mut conn)
                    .await
            })
            .await;
        use std::sync::atomic::Ordering;
        match result {
            Ok((allowed, remaining, wait_us)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "Redis answers again: rate limits are shared between replicas again"
                    );
                }
                if allowed == 1 {
                    Decision::Allowed {
                        remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
                    }
                } else {
                    Decision::Limited {
                        retry_after: Duration::from_micros(wait_us.max(1) as u64),
                    }
                }
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Redis does not answer: each replica enforces rate limits in its own memory until it does");
                }
                limiter.check_local(key)
            }
        }
    }
}

/// The part of the Redis key after `jwtgate:ratelimit:`: route, kind, value. Values are
/// never secrets (a subject, a tenant, an address), but long ones are hashed to bound keys.
fn redis_id(route: &str, key: LimitKey<'_>) -> String {
    let (kind, value) = match key {
        LimitKey::Claim(Value::String(s)) => ("c", s.clone()),
        LimitKey::Claim(other) => ("c", other.to_string()),
        LimitKey::Addr(ip) => ("a", ip.to_string()),
    };
    let value = if value.len() > MAX_KEY_VALUE_BYTES {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    } else {
        value
    };
    format!("{route}:{kind}:{value}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClaimPath;

    fn config(rate_per_sec: u32, burst: u32) -> RateLimit {
        RateLimit {
            key: ClaimPath::Name("sub".into()),
            interval: Duration::from_secs(1) / rate_per_sec,
            burst,
            rate: format!("{rate_per_sec}/s"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_of_burst_refilled_at_rate() {
        let store = BoundedStore::new(100);
        let l = RouteLimiter::new("api", &config(2, 3), &store);
        let alice = Value::from("alice");
        let key = LimitKey::Claim(&alice);
        for left in [2, 1, 0] {
            assert_eq!(l.check_local(key), Decision::Allowed { remaining: left });
        }
        let Decision::Limited { retry_after } = l.check_local(key) else {
            panic!("the fourth request passed");
        };
        assert!(retry_after <= Duration::from_millis(500), "{retry_after:?}");
        // Another key has its own bucket.
        let ip = LimitKey::Addr("127.0.0.1".parse().unwrap());
        assert!(matches!(l.check_local(ip), Decision::Allowed { .. }));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(matches!(l.check_local(key), Decision::Allowed { .. }));
        assert!(matches!(l.check_local(key), Decision::Limited { .. }));
        assert_eq!(l.policy, "\"api\";q=3;w=2");
        assert_eq!(
            l.state_header(Decision::Limited {
                retry_after: Duration::from_millis(1)
            }),
            "\"api\";r=0;t=1"
        );
    }

    #[test]
    fn the_store_stays_bounded() {
        let store = BoundedStore::new(1000);
        let l = RouteLimiter::new("api", &config(1, 1), &store);
        for i in 0..10_000u32 {
            let v = Value::from(i);
            l.check_local(LimitKey::Claim(&v));
        }
        assert!(store.len() <= 1000, "{} keys", store.len());
    }
}

//! The store replicas share: one Redis, reached through one reconnecting connection manager.
//! The denylist, server-side sessions, the replay caches and rate limits all call it here, so
//! every call has the same deadline, error counting and `jwtgate_redis_up` bookkeeping.
//!
//! A gateway without `[redis]` has no `Store` and keeps each of those features in memory.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisResult};

use crate::config::RedisConfig;
use crate::metrics::{Metrics, RedisMetrics};

/// Longest wait for one Redis call on the request path: past it the caller gets
/// [`StoreError::Timeout`] and applies its own "Redis is down" rule instead of holding the
/// request.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the store checks Redis while nothing else calls it, so `jwtgate_redis_up` is
/// current and a dropped connection is re-established before a request needs it.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Why a Redis call failed. Messages never carry the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl StoreError {
    /// True when Redis could not be reached at all (as opposed to refusing a command).
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Timeout(_) => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
            }
        }
    }
}

/// The shared Redis of every replica.
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
    metrics: RedisMetrics,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

impl Store {
    /// Opens the store without waiting for Redis: the first calls fail (and count) until it is
    /// reachable, and traffic that does not need it is never held up. Needs a Tokio runtime.
    pub fn open(config: &RedisConfig, metrics: &Metrics) -> Result<Arc<Store>, StoreError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        metrics.register_redis();
        let store = Arc::new(Store {
            client,
            conn,
            metrics: metrics.redis.clone(),
            url: config.redacted(),
        });
        tokio::spawn(ping(Arc::downgrade(&store)));
        Ok(store)
    }

    /// Runs one command under [`CALL_TIMEOUT`]; `op` names it in
    /// `jwtgate_redis_errors_total{op}` (a fixed word such as `denylist_read`, never a key).
    pub async fn call<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        self.run(
            op,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Like [`Store::call`], sent a second time when the first attempt found the connection
    /// dropped (the first call after a Redis restart does). Only for commands that mean the
    /// same when applied twice.
    pub async fn call_idempotent<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        match self.call(op, cmd).await {
            Err(StoreError::Redis(e)) if e.is_connection_dropped() => self.call(op, cmd).await,
            other => other,
        }
    }

    /// Runs `f` (a pipeline, a script, several commands) on a connection, with the same
    /// deadline and bookkeeping as [`Store::call`].
    pub async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let result = match tokio::time::timeout(CALL_TIMEOUT, f(self.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(CALL_TIMEOUT)),
        };
        self.record(op, result)
    }

    /// Counts a result obtained outside [`Store::run`] (a dedicated connection, a blocking
    /// read) and keeps `jwtgate_redis_up` current.
    pub fn record<T>(
        &self,
        op: &'static str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.metrics.up.set(1),
            Err(e) => {
                if e.is_unreachable() {
                    self.metrics.up.set(0);
                }
                self.metrics.errors.with_label_values(&[op]).inc();
            }
        }
        result
    }

    /// A clone of the shared, multiplexed connection (cheap). Blocking commands (`XREAD
    /// BLOCK`, `BLPOP`) must use [`Store::dedicated`] instead: they would stall every other
    /// caller and trip the response timeout.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A new connection of its own, for blocking reads; no response timeout.
    pub async fn dedicated(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(StoreError::Redis);
        self.record("connect", conn)
    }

    /// The key of one item: `jwtgate:{kind}:{id}`. Every key the gateway writes has this
    /// prefix, so an operator can list or drop them together.
    pub fn key(&self, kind: &str, id: &str) -> String {
        let mut k = String::with_capacity(9 + kind.len() + id.len());
        k.push_str("jwtgate:");
        k.push_str(kind);
        k.push(':');
        k.push_str(id);
        k
    }
}

/// Pings while the store lives; logs each change between reachable and unreachable once.
async fn ping(store: Weak<Store>) {
    let mut was_up = None;
    loop {
        let Some(s) = store.upgrade() else { return };
        let up = s.call::<String>("ping", &redis::cmd("PING")).await.is_ok();
        if was_up != Some(up) {
            if up {
                tracing::info!(redis = %s.url, "Redis reachable");
            } else {
                tracing::warn!(redis = %s.url, "Redis unreachable; features that share state use their fallback (README: \"Shared state: Redis\")");
            }
            was_up = Some(up);
        }
        drop(s);
        tokio::time::sleep(PING_EVERY).await;
    }
}

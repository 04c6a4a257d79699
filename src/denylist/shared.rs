//! The denylist in Redis, shared by every replica (README "Revocation" has the layout):
//!
//! - `jwtgate:denylist:entries`, a sorted set: member = the entry's JSON line, score = its
//!   `until`. Two entries for one id are two members; each replica merges them.
//! - `jwtgate:denylist:events`, a stream (`XADD ... MAXLEN ~`): one event per revocation, so a
//!   replica that was away replays what it missed from its last id.
//! - `jwtgate:denylist:epoch`, a random id set once: a Redis that comes back without its data
//!   has another (or none), and every replica then writes back the entries it holds.
//!
//! A replica loads the sorted set whole (ZSCAN), then follows the stream with `XREAD BLOCK`
//! on a connection of its own; it loads whole again on a gap (the stream trimmed past its
//! last id), on a new epoch, and every [`FULL_RESYNC`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::streams::StreamReadReply;
use redis::Value;

use super::entry::Entry;
use super::index::Layer;
use super::{unix_ms, Denylist, DenylistError};
use crate::store::{Store, StoreError};

/// Key names (the `jwtgate:{kind}:{id}` scheme of the store).
pub const ENTRIES_KEY: &str = "jwtgate:denylist:entries";
pub const EVENTS_KEY: &str = "jwtgate:denylist:events";
pub const EPOCH_KEY: &str = "jwtgate:denylist:epoch";

/// The `op` labels of `jwtgate_redis_errors_total` the denylist uses.
pub const OPS: [&str; 6] = [
    "denylist_read",
    "denylist_write",
    "denylist_write_back",
    "denylist_prune",
    "denylist_stream",
    "connect",
];

/// Events the stream keeps (approximately): far more than replicas miss in a restart; one
/// that misses more loads whole.
const STREAM_MAXLEN: u64 = 100_000;
/// How long one `XREAD` waits for events: also how often staleness is refreshed and the epoch
/// looked at.
const BLOCK: Duration = Duration::from_millis(1000);
/// A full load even without a reason, in case an event was ever lost.
pub const FULL_RESYNC: Duration = Duration::from_secs(300);
/// Entries stay in Redis this long past their `until`: longer than any issuer's leeway, so a
/// replica's own leeway decides, not the pruning.
const PRUNE_MARGIN_SECS: u64 = 86_400;
/// Members per ZSCAN page.
const SCAN_COUNT: usize = 10_000;
/// Reconnect backoff: from 1 s, doubling, at most 10 s, jittered.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How much longer than [`BLOCK`] an `XREAD` may take before the connection counts as dead.
const READ_GRACE: Duration = Duration::from_secs(2);

/// Adds one entry: to the set and, in the same script, to the stream; sets the epoch if none.
const WRITE_SCRIPT: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[4], 'NX')
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[1])
";

fn redis_err(e: StoreError) -> DenylistError {
    DenylistError::Redis(e.to_string())
}

/// A [`StoreError`] from a failure outside the store (a task that panicked).
fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redis(redis::RedisError::from(std::io::Error::other(
        e.to_string(),
    )))
}

/// The score of an entry: its `until`, or +inf for one that holds until removed.
fn score(e: &Entry) -> String {
    e.until.map_or("+inf".to_owned(), |u| u.to_string())
}

/// A fresh epoch id.
fn new_epoch() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), unix_ms())
}

/// Writes `entry` to Redis (set, stream and epoch in one script).
pub async fn write(store: &Store, entry: &Entry) -> Result<(), DenylistError> {
    let script = redis::Script::new(WRITE_SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation
        .key(ENTRIES_KEY)
        .key(EVENTS_KEY)
        .key(EPOCH_KEY)
        .arg(entry.to_json())
        .arg(score(entry))
        .arg(STREAM_MAXLEN)
        .arg(new_epoch());
    store
        .run("denylist_write", |mut conn| async move {
            invocation.invoke_async::<String>(&mut conn).await
        })
        .await
        .map(drop)
        .map_err(redis_err)
}

/// Writes entries back to a Redis that lost them (set only: the other replicas load whole
/// when they see the new epoch).
async fn write_back(store: &Store, entries: &[Entry]) -> Result<(), StoreError> {
    for chunk in entries.chunks(1000) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(ENTRIES_KEY);
        for e in chunk {
            cmd.arg(score(e)).arg(e.to_json());
        }
        store
            .call_idempotent::<()>("denylist_write_back", &cmd)
            .await?;
    }
    Ok(())
}

/// What a full load read.
pub struct Snapshot {
    pub layer: Layer,
    /// The stream's last id when the load started: events after it are replayed.
    pub last_id: String,
    pub epoch: String,
    /// Members that are not entries (written by something else), skipped.
    pub skipped: usize,
}

/// The epoch, set to a new one when there is none (a fresh or emptied Redis).
async fn epoch(store: &Store) -> Result<String, StoreError> {
    let mut set = redis::cmd("SET");
    set.arg(EPOCH_KEY).arg(new_epoch()).arg("NX");
    store
        .call_idempotent::<Value>("denylist_read", &set)
        .await?;
    current_epoch(store)
        .await?
        .ok_or_else(|| other("the denylist epoch vanished while it was being set"))
}

/// The epoch now, `None` when Redis has none (it lost its data).
async fn current_epoch(store: &Store) -> Result<Option<String>, StoreError> {
    store
        .call_idempotent("denylist_read", redis::cmd("GET").arg(EPOCH_KEY))
        .await
}

/// The stream's last id, `0-0` when it is empty or missing.
async fn last_id(store: &Store) -> Result<String, StoreError> {
    let r: redis::streams::StreamRangeReply = store
        .call_idempotent(
            "denylist_read",
            redis::cmd("XREVRANGE")
                .arg(EVENTS_KEY)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1),
        )
        .await?;
    Ok(r.ids.first().map_or("0-0".to_owned(), |i| i.id.clone()))
}

/// The largest id the stream ever trimmed or deleted (`XINFO STREAM`, Redis 7), `0-0` when
/// none or the stream does not exist.
async fn max_deleted_id(store: &Store) -> Result<String, StoreError> {
    let exists: bool = store
        .call_idempotent("denylist_read", redis::cmd("EXISTS").arg(EVENTS_KEY))
        .await?;
    if !exists {
        return Ok("0-0".to_owned());
    }
    let info: Value = store
        .call_idempotent(
            "denylist_read",
            redis::cmd("XINFO").arg("STREAM").arg(EVENTS_KEY),
        )
        .await?;
    let pairs: Vec<(String, Value)> = match info {
        Value::Map(m) => m
            .into_iter()
            .filter_map(|(k, v)| redis::from_redis_value::<String>(k).ok().map(|k| (k, v)))
            .collect(),
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => redis::from_redis_value_ref::<String>(k)
                    .ok()
                    .map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(pairs
        .into_iter()
        .find(|(k, _)| k == "max-deleted-entry-id")
        .and_then(|(_, v)| redis::from_redis_value::<String>(v).ok())
        .unwrap_or_else(|| "0-0".to_owned()))
}

/// Stream ids (`ms-seq`) as numbers, for comparing.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Reads every entry (pruning those long past their `until` first).
pub async fn load(store: &Store, now: u64) -> Result<Snapshot, StoreError> {
    let epoch = epoch(store).await?;
    let last_id = last_id(store).await?;
    store
        .call_idempotent::<Value>(
            "denylist_prune",
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(ENTRIES_KEY)
                .arg("-inf")
                .arg(format!("({}", now.saturating_sub(PRUNE_MARGIN_SECS))),
        )
        .await?;
    // Each page is parsed on a blocking thread while the next one is fetched: the load
    // takes about the longer of the two, and holds one page of text at a time.
    let mut layer = Layer::default();
    let mut skipped = 0;
    let mut parsing: Option<tokio::task::JoinHandle<(Layer, usize)>> = None;
    let mut cursor = "0".to_owned();
    loop {
        let (next, page): (String, Vec<String>) = store
            .call_idempotent(
                "denylist_read",
                redis::cmd("ZSCAN")
                    .arg(ENTRIES_KEY)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(SCAN_COUNT),
            )
            .await?;
        if let Some(p) = parsing.take() {
            (layer, skipped) = p.await.map_err(other)?;
        }
        let mut layer = std::mem::take(&mut layer);
        parsing = Some(tokio::task::spawn_blocking(move || {
            // Member, score, member, score, ...
            for m in page.iter().step_by(2) {
                match Entry::parse(m) {
                    Ok(e) => layer.insert(&e),
                    Err(_) => skipped += 1,
                }
            }
            (layer, skipped)
        }));
        if next == "0" {
            break;
        }
        cursor = next;
    }
    if let Some(p) = parsing {
        (layer, skipped) = p.await.map_err(other)?;
    }
    Ok(Snapshot {
        layer,
        last_id,
        epoch,
        skipped,
    })
}

/// Where a replica is in the stream.
#[derive(Debug, Default)]
struct Position {
    /// The epoch of the last full load; `None` before the first.
    epoch: Option<String>,
    last_id: String,
    loaded_at: Option<Instant>,
}

impl Denylist {
    /// Loads Redis's entries whole into the index (replacing the Redis layers); writes back
    /// what this replica holds first when Redis lost it (a new epoch).
    async fn full_load(
        &self,
        store: &Store,
        known_epoch: Option<&str>,
    ) -> Result<Snapshot, StoreError> {
        let now = super::now_secs();
        if let Some(known) = known_epoch {
            let current = current_epoch(store).await?;
            if current.as_deref() != Some(known) {
                let held: Vec<Entry> = {
                    let idx = self.index.load();
                    idx.base.merged(&idx.delta).entries().collect()
                };
                tracing::warn!(
                    entries = held.len(),
                    "Redis lost the denylist (new epoch); writing back the entries this replica holds"
                );
                write_back(store, &held).await?;
            }
        }
        let snap = load(store, now).await?;
        if snap.skipped > 0 {
            tracing::warn!(
                skipped = snap.skipped,
                key = ENTRIES_KEY,
                "Redis holds members that are not denylist entries; skipped"
            );
        }
        Ok(snap)
    }

    /// Publishes a full load: the Redis layers become its entries.
    pub(super) fn publish_load(&self, layer: Layer) {
        self.update(|idx| {
            idx.base = Arc::new(layer);
            idx.delta = Arc::default();
        });
        self.shared_loaded.store(true, Ordering::SeqCst);
        self.mark_read();
    }

    /// Records a successful Redis read (staleness is measured from it).
    fn mark_read(&self) {
        self.last_shared_read_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// One full load and the events after it, then events until an error: the body of
    /// [`Denylist::follow`]'s retry loop.
    async fn follow_once(
        &self,
        store: &Store,
        blocking: &mut redis::aio::MultiplexedConnection,
        pos: &mut Position,
    ) -> Result<(), StoreError> {
        // On (re)connect: replay from the last id unless the stream trimmed events after it.
        let gap =
            pos.loaded_at.is_some() && id_key(&max_deleted_id(store).await?) > id_key(&pos.last_id);
        let mut load_now = pos.loaded_at.is_none() || gap;
        loop {
            if !load_now {
                let current = current_epoch(store).await?;
                let due = pos.loaded_at.is_none_or(|t| t.elapsed() >= FULL_RESYNC);
                load_now = due || current.is_none() || current != pos.epoch;
            }
            if load_now {
                let snap = self.full_load(store, pos.epoch.as_deref()).await?;
                let counts = snap.layer.counts();
                pos.last_id = snap.last_id;
                pos.epoch = Some(snap.epoch);
                pos.loaded_at = Some(Instant::now());
                self.publish_load(snap.layer);
                load_now = false;
                tracing::info!(
                    jti = counts[0],
                    sub = counts[1],
                    sid = counts[2],
                    "denylist loaded from Redis"
                );
            }
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(EVENTS_KEY)
                .arg(&pos.last_id);
            // The dedicated connection has no response timeout of its own: a Redis that
            // stops answering without closing the connection is noticed here.
            let read =
                match tokio::time::timeout(BLOCK + READ_GRACE, xread.query_async(blocking)).await {
                    Ok(r) => r.map_err(StoreError::Redis),
                    Err(_) => Err(StoreError::Timeout(BLOCK + READ_GRACE)),
                };
            let reply: Option<StreamReadReply> = store.record("denylist_stream", read)?;
            let mut batch = Vec::new();
            for id in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                if let Some(Value::BulkString(b)) = id.map.get("e") {
                    match std::str::from_utf8(b).ok().map(Entry::parse) {
                        Some(Ok(e)) => batch.push(e),
                        _ => {
                            tracing::warn!(id = %id.id, "a denylist event is not an entry; skipped")
                        }
                    }
                }
                pos.last_id = id.id;
            }
            if !batch.is_empty() {
                self.apply_shared(&batch);
            }
            // After applying: a request that sees a fresh read also sees what it brought.
            self.mark_read();
        }
    }

    /// Follows Redis until aborted: loads whole, then the stream; on an error keeps serving
    /// the last copy and retries with jittered backoff (the staleness gauge grows meanwhile).
    pub async fn follow(self: Arc<Self>, store: Arc<Store>) {
        let mut pos = Position::default();
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let err = match store.dedicated().await {
                Ok(mut blocking) => self
                    .follow_once(&store, &mut blocking, &mut pos)
                    .await
                    .err(),
                Err(e) => Some(e),
            };
            if started.elapsed() > BACKOFF_MAX {
                // It worked for a while: start over from the shortest wait.
                backoff = BACKOFF_MIN;
            }
            let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            self.retry_after_secs
                .store(wait.as_secs().max(1), Ordering::Relaxed);
            if let Some(e) = err {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "denylist: Redis read failed; serving the last copy");
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

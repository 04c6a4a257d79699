//! Revocation (SPEC.md "Revocation"): an exact in-memory copy of every entry in effect, fed by
//! the watched `[denylist] file` and, with `[redis]`, by Redis (a full load, then a stream).
//! The request path reads one immutable [`Index`] behind an `ArcSwap`: no lock, and an empty
//! denylist costs one load and a branch. Writers (the file watcher, the Redis sync, `revoke`)
//! build the next index under a mutex that readers never touch.

pub mod entry;
pub mod file;
pub mod index;
pub mod shared;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};

pub use entry::{fmt_time, parse_time, Entry, EntryError, Kind};
pub use index::{Index, Layer, Revoked, Source};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::Shared;
use crate::store::Store;

/// How often the watcher looks at the file (SPEC: changes apply within 5 s) and refreshes
/// the gauges.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why an entry could not be added.
#[derive(Debug, thiserror::Error)]
pub enum DenylistError {
    #[error("the entry is not valid: {0}")]
    Entry(#[from] EntryError),
    #[error("cannot append to the denylist file {path}: {error}")]
    File {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("cannot reach Redis for the denylist: {0} (nothing was written: with [redis] set, revocations go only to Redis, so that every replica sees them)")]
    Redis(String),
}

/// Where revocations go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Redis,
    File(std::path::PathBuf),
    /// Neither `[redis]` nor `[denylist] file`: this process only, until it stops.
    Memory,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Redis => f.write_str("Redis"),
            Destination::File(p) => write!(f, "the denylist file {}", p.display()),
            Destination::Memory => f.write_str("this process's memory only"),
        }
    }
}

/// The denylist of one process: see the module documentation.
pub struct Denylist {
    index: ArcSwap<Index>,
    /// Serialises writers, so an update made between another writer's load and store is not
    /// lost. Never taken on the request path.
    writer: Mutex<()>,
    state: Shared,
    metrics: Metrics,
    /// The file (if any) has been read once.
    file_loaded: AtomicBool,
    /// Redis's entries have been loaded whole once (true from the start without Redis).
    shared_loaded: AtomicBool,
    /// Unix milliseconds of the last successful Redis read (0: never).
    last_shared_read_ms: AtomicU64,
    /// Whole seconds until the Redis sync tries again, for `Retry-After` while stale.
    retry_after_secs: AtomicU64,
    /// The shared store with `[redis]`: revocations go there and come back through it.
    store: Option<Arc<Store>>,
}

impl std::fmt::Debug for Denylist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denylist")
            .field("counts", &self.index.load().counts())
            .finish()
    }
}

/// The current Unix time in milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_secs() -> u64 {
    crate::unix_secs(crate::unix_now())
}

/// Each issuer's leeway, in seconds, as the index reads it.
fn leeways(config: &Config) -> Arc<Vec<(Box<str>, u64)>> {
    Arc::new(
        config
            .issuers
            .iter()
            .map(|i| (i.name.as_str().into(), i.leeway.as_secs()))
            .collect(),
    )
}

impl Denylist {
    /// An empty denylist for the config in `state`; [`Denylist::run`] loads and follows it.
    pub fn new(state: Shared, metrics: Metrics) -> Denylist {
        let leeway = leeways(&state.load().config);
        for kind in Kind::ALL {
            metrics.denylist_entries.with_label_values(&[kind.as_str()]);
        }
        Denylist {
            index: ArcSwap::from_pointee(
                Index {
                    leeway,
                    ..Index::default()
                }
                .with_layers(),
            ),
            writer: Mutex::new(()),
            state,
            metrics,
            file_loaded: AtomicBool::new(false),
            shared_loaded: AtomicBool::new(true),
            last_shared_read_ms: AtomicU64::new(0),
            retry_after_secs: AtomicU64::new(1),
            store: None,
        }
    }

    /// This denylist fed by (and writing to) `store`: not ready until Redis's entries are
    /// loaded once, and stale from the start until they are.
    pub fn with_store(mut self, store: Option<Arc<Store>>) -> Denylist {
        if store.is_some() {
            // Every operation's error series exists from the first scrape, at 0.
            for op in shared::OPS {
                self.metrics.redis.errors.with_label_values(&[op]);
            }
            self.shared_loaded = AtomicBool::new(false);
            self.last_shared_read_ms = AtomicU64::new(unix_ms());
        }
        self.store = store;
        self
    }

    /// The entry that refuses a token of `issuer` (its config `name`) with `claims`, if any.
    pub fn check(&self, issuer: &str, claims: &Value) -> Option<Revoked> {
        claims
            .as_object()
            .and_then(|c| self.check_claims(issuer, c))
    }

    /// [`Denylist::check`] on a claims map, as the request path holds them.
    pub fn check_claims(&self, issuer: &str, claims: &Map<String, Value>) -> Option<Revoked> {
        let idx = self.index.load();
        if idx.empty {
            return None;
        }
        idx.check(issuer, claims, now_secs())
    }

    /// True when a browser session of `issuer` for `sub`, with IdP session `sid`, created at
    /// `created_at` (Unix seconds), is revoked: by a `sid` entry (logout) or a `sub` entry
    /// ("log out everywhere") covering that time.
    pub fn session_revoked(
        &self,
        issuer: &str,
        sid: Option<&str>,
        sub: &str,
        created_at: u64,
    ) -> bool {
        let idx = self.index.load();
        if idx.empty {
            return false;
        }
        let (now, leeway, at) = (now_secs(), idx.leeway_of(issuer), Some(created_at as f64));
        sid.is_some_and(|sid| idx.find(issuer, Kind::Sid, sid, now, leeway, at).is_some())
            || idx.find(issuer, Kind::Sub, sub, now, leeway, at).is_some()
    }

    /// Adds `entry` where the config says (Redis with `[redis]`, else the `[denylist] file`,
    /// else this process's memory) and applies it here at once.
    pub async fn revoke(&self, entry: Entry) -> Result<(), DenylistError> {
        entry.validate()?;
        if let Some(store) = &self.store {
            shared::write(store, &entry).await?;
            self.apply_shared(std::slice::from_ref(&entry));
            return Ok(());
        }
        let config = &self.state.load().config;
        if let Some(path) = config.denylist.as_ref().and_then(|d| d.file.clone()) {
            let line = entry.clone();
            let p = path.clone();
            tokio::task::spawn_blocking(move || file::append(&p, &line))
                .await
                .map_err(|e| DenylistError::File {
                    path: path.clone(),
                    error: std::io::Error::other(e),
                })?
                .map_err(|error| DenylistError::File { path, error })?;
            self.update(|idx| {
                let mut l = Layer::clone(&idx.file);
                l.insert(&entry);
                idx.file = Arc::new(l);
            });
            return Ok(());
        }
        self.apply_shared(std::slice::from_ref(&entry));
        Ok(())
    }

    /// Where [`Denylist::revoke`] writes, for messages.
    pub fn destination(&self) -> Destination {
        if self.store.is_some() {
            return Destination::Redis;
        }
        match self
            .state
            .load()
            .config
            .denylist
            .as_ref()
            .and_then(|d| d.file.clone())
        {
            Some(p) => Destination::File(p),
            None => Destination::Memory,
        }
    }

    /// Reads every source once, for commands that do not serve (`revoke`, `explain`).
    pub async fn load_once(self: &Arc<Self>) -> Result<(), DenylistError> {
        let me = self.clone();
        let snap = self.state.load_full();
        let loaded = tokio::task::spawn_blocking(move || me.reload_file(&snap.config));
        if let Err(e) = loaded.await {
            // Only a panic while reading the file gets here.
            return Err(DenylistError::File {
                path: Default::default(),
                error: std::io::Error::other(e.to_string()),
            });
        }
        self.file_loaded.store(true, Ordering::SeqCst);
        if let Some(store) = &self.store {
            let snap = shared::load(store, now_secs())
                .await
                .map_err(|e| DenylistError::Redis(e.to_string()))?;
            self.publish_load(snap.layer);
        }
        Ok(())
    }

    /// True once every source has been loaded whole once (the readiness condition).
    pub fn ready(&self) -> bool {
        self.file_loaded.load(Ordering::SeqCst) && self.shared_loaded.load(Ordering::SeqCst)
    }

    /// With `max_staleness` exceeded: the `Retry-After` seconds (≥ 1) of the 503. Only a
    /// Redis-fed denylist goes stale.
    pub fn stale(&self, max_staleness: Duration) -> Option<u64> {
        // Only a Redis-fed copy goes stale.
        self.store.as_ref()?;
        let last = self.last_shared_read_ms.load(Ordering::Relaxed);
        let age_ms = unix_ms().saturating_sub(last);
        (u128::from(age_ms) > max_staleness.as_millis())
            .then(|| self.retry_after_secs.load(Ordering::Relaxed).max(1))
    }

    /// Every entry held, with where it comes from (the file's first).
    pub fn entries(&self) -> Vec<(Entry, Source)> {
        let idx = self.index.load();
        let now = now_secs();
        let shared = idx.base.merged(&idx.delta);
        idx.file
            .entries()
            .map(|e| (e, Source::File))
            .chain(shared.entries().map(|e| (e, Source::Shared)))
            .filter(|(e, _)| {
                e.until
                    .is_none_or(|u| now <= u.saturating_add(idx.leeway_of(&e.issuer)))
            })
            .collect()
    }

    /// The index as it is now (for `explain` and tests).
    pub fn index(&self) -> Arc<Index> {
        self.index.load_full()
    }

    /// Builds the next index from the current one and publishes it with its gauges.
    fn update(&self, f: impl FnOnce(&mut Index)) {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Index::clone(&self.index.load());
        f(&mut next);
        let next = next.with_layers();
        let counts = next.counts();
        self.index.store(Arc::new(next));
        for (kind, n) in Kind::ALL.iter().zip(counts) {
            self.metrics
                .denylist_entries
                .with_label_values(&[kind.as_str()])
                .set(n as i64);
        }
    }

    /// Adds entries from the shared source (a stream batch, or a local `revoke`) to the delta.
    fn apply_shared(&self, entries: &[Entry]) {
        self.update(|idx| {
            let mut d = Layer::clone(&idx.delta);
            for e in entries {
                d.insert(e);
            }
            idx.delta = Arc::new(d);
        });
    }

    /// Loads the file now (blocking: call off the runtime's workers).
    pub fn reload_file(&self, config: &Config) {
        let Some(path) = config.denylist.as_ref().and_then(|d| d.file.as_deref()) else {
            self.update(|idx| idx.file = Arc::default());
            self.metrics.denylist_skipped_lines.set(0);
            return;
        };
        let loaded = file::load(path);
        let skipped = loaded.skipped.len();
        for bad in &loaded.skipped {
            tracing::warn!(file = %path.display(), line = bad.line, error = %bad.error, "denylist line skipped; the other entries apply");
        }
        if let Some(e) = &loaded.error {
            tracing::warn!(file = %path.display(), error = %e, "denylist file unreadable; keeping the entries last read from it");
        } else {
            let counts = loaded.layer.counts();
            self.update(|idx| idx.file = Arc::new(loaded.layer));
            tracing::info!(
                file = %path.display(),
                jti = counts[0],
                sub = counts[1],
                sid = counts[2],
                skipped,
                "denylist file loaded"
            );
        }
        self.metrics.denylist_skipped_lines.set(skipped as i64);
    }

    /// Follows the file (within [`WATCH_INTERVAL`], a config reload naming another file
    /// included), the issuers' leeways, expiry, and the staleness gauge. Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        // With Redis, a second task follows it; aborted with this one.
        let _follow = self
            .store
            .clone()
            .map(|store| AbortOnDrop(tokio::spawn(self.clone().follow(store))));
        let mut seen: Option<(Option<std::path::PathBuf>, Option<file::Stamp>)> = None;
        let mut generation = 0;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tick.tick().await;
            let snap = self.state.load_full();
            if snap.generation != generation {
                generation = snap.generation;
                let leeway = leeways(&snap.config);
                self.update(|idx| idx.leeway = leeway);
            }
            let path = snap.config.denylist.as_ref().and_then(|d| d.file.clone());
            let stamp = path.as_deref().and_then(file::stamp);
            let now = (path, stamp);
            if seen.as_ref() != Some(&now) {
                let (me, snap) = (self.clone(), snap.clone());
                if let Err(e) =
                    tokio::task::spawn_blocking(move || me.reload_file(&snap.config)).await
                {
                    tracing::error!(error = %e, "the denylist file load failed; retrying");
                    continue;
                }
                seen = Some(now);
                self.file_loaded.store(true, Ordering::SeqCst);
            }
            self.prune_expired();
            self.publish_staleness();
        }
    }

    /// Drops entries past their `until` (plus leeway) from the layers that hold any.
    fn prune_expired(&self) {
        let idx = self.index.load();
        let now = now_secs();
        let due = |l: &Layer| {
            l.next_expiry()
                .is_some_and(|t| t.saturating_add(idx.leeway_of_max()) < now)
        };
        // Only the small layers are pruned here; the Redis base is rebuilt by each full load.
        if !(due(&idx.file) || due(&idx.delta)) {
            return;
        }
        drop(idx);
        self.update(|idx| {
            let leeway = idx.leeway.clone();
            let of = |i: &str| {
                leeway
                    .iter()
                    .find(|(n, _)| **n == *i)
                    .map_or(0, |(_, l)| *l)
            };
            for layer in [&mut idx.file, &mut idx.delta] {
                let mut l = Layer::clone(layer);
                // Also when nothing dropped: the recomputed earliest `until` ends the retries.
                if l.prune(now, of) || l.next_expiry() != layer.next_expiry() {
                    *layer = Arc::new(l);
                }
            }
        });
    }

    /// Sets `jwtgate_denylist_staleness_seconds`: time since the last successful Redis read
    /// (since the start until the first), 0 without Redis.
    fn publish_staleness(&self) {
        let last = self.last_shared_read_ms.load(Ordering::Relaxed);
        let age = if last == 0 || self.store.is_none() {
            0.0
        } else {
            unix_ms().saturating_sub(last) as f64 / 1e3
        };
        self.metrics.denylist_staleness.set(age);
    }
}

/// Aborts a task when dropped, so aborting [`Denylist::run`] stops the Redis sync too.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Index {
    /// The largest leeway of any configured issuer: when a prune may be worth its copy.
    fn leeway_of_max(&self) -> u64 {
        self.leeway.iter().map(|(_, l)| *l).max().unwrap_or(0)
    }
}

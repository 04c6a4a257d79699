//! Seeing changes: the config file, key files, JWKS files and certificates are watched through
//! their directories (so a Kubernetes `..data` symlink flip is seen), debounced, re-checked by
//! a slow poll in case an event is missed, and reloaded at once on SIGHUP.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::config::{Config, KeySource};
use crate::App;

/// Events come in bursts (an editor's write, rename and chmod); wait for them to settle.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// The fallback poll: SPEC.md asks for changes to apply within 5 s even if an event is lost.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Every file a config depends on, as written (never canonicalised, so a symlink flip is seen).
pub fn watched_files(config_path: &Path, c: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_owned()];
    for i in &c.issuers {
        match &i.source {
            KeySource::JwksFile(f) | KeySource::HmacFile(f) => files.push(f.clone()),
            KeySource::PemFiles(fs) => files.extend(fs.iter().cloned()),
            KeySource::JwksUrl(_) | KeySource::DiscoveryUrl(_) | KeySource::HmacEnv(_) => {}
        }
    }
    if let Some(t) = &c.listen.tls {
        files.extend([t.cert.clone(), t.key.clone()]);
        files.extend(t.client_ca.clone());
    }
    for x in &c.listen.certificates {
        files.extend([x.cert.clone(), x.key.clone()]);
    }
    files.extend(c.routes.iter().filter_map(|r| r.upstream_ca.clone()));
    // Many routes share one CA bundle: read each file once per poll.
    let mut seen = std::collections::HashSet::with_capacity(files.len());
    files.retain(|f| seen.insert(f.clone()));
    files
}

/// A hash of every file's bytes; a missing file hashes as missing. Each read is capped (at the
/// largest cap of any watched kind), and a device or FIFO is never opened, so a path pointed
/// at `/dev/zero` costs nothing here; loading it is refused with a clear error.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    use crate::files::{read_capped, ReadError, MAX_CONFIG_BYTES};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match read_capped(f, MAX_CONFIG_BYTES) {
            Ok(bytes) => (0u8, bytes).hash(&mut h),
            Err(ReadError::TooLarge { .. }) => 1u8.hash(&mut h),
            Err(ReadError::NotAFile) => 2u8.hash(&mut h),
            Err(ReadError::Io(e)) => (3u8, e.kind().to_string()).hash(&mut h),
        }
    }
    h.finish()
}

/// The fingerprint of a config file and every file it names (as it reads now). A config that
/// does not parse counts as just its own bytes.
pub fn files_fingerprint(config_path: &Path) -> u64 {
    files_fingerprint_and_list(config_path).0
}

/// [`files_fingerprint`] and the files it covers (what to watch next).
pub fn files_fingerprint_and_list(config_path: &Path) -> (u64, Vec<PathBuf>) {
    let files = match Config::load(config_path) {
        Ok(c) => watched_files(config_path, &c),
        Err(_) => vec![config_path.to_owned()],
    };
    (fingerprint(&files), files)
}

fn directories(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect()
}

/// Runs until aborted: reloads the config (and keys) when a file it depends on changes or on
/// request, and certificates when theirs change.
pub async fn watch(app: Arc<App>) {
    let Some(config_path) = app.config_path.clone() else {
        // A gateway built from a snapshot in memory has no files to watch.
        return std::future::pending().await;
    };
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(
        move |_res: notify::Result<notify::Event>| {
            let _ = tx.send(());
        },
    ) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; polling every {POLL_INTERVAL:?}");
            None
        }
    };
    let mut files = watched_files(&config_path, &app.state.load().config);
    let mut watched_dirs = BTreeSet::new();
    // Compare against what was loaded, not what is on disk now: a change made between load
    // and this point must still be applied.
    let mut last = app.loaded_files.load(std::sync::atomic::Ordering::SeqCst);
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        // The watched directories follow the config: a reload may name new files.
        let dirs = directories(&files);
        if let Some(w) = watcher.as_mut() {
            for d in watched_dirs.difference(&dirs) {
                let _ = w.unwatch(d);
            }
            for d in dirs.difference(&watched_dirs) {
                if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; relying on the poll");
                }
            }
        }
        watched_dirs = dirs;

        let forced = tokio::select! {
            () = app.reload_now.notified() => true,
            Some(()) = events.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while events.try_recv().is_ok() {}
                false
            }
            _ = poll.tick() => false,
        };
        // Reading files and building a snapshot take long with large configs: never on a
        // runtime worker that serves requests (one current-thread worker serves them all).
        let job = {
            let (app, path, files) = (app.clone(), config_path.clone(), files.clone());
            move || {
                let mut next = None;
                if forced || fingerprint(&files) != last {
                    // The fingerprint is taken BEFORE the files are read: a change that lands
                    // while the reload reads them differs from it, so the next poll reloads
                    // again rather than losing the change. A refused config is remembered
                    // too, so it is logged once, not on every poll.
                    next = Some(files_fingerprint_and_list(&path));
                    let _ = app.reload_config();
                }
                app.reload_tls();
                next
            }
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(Some((fp, listed))) => {
                last = fp;
                files = listed;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "the reload task failed; retrying at the next change or poll")
            }
        }
    }
}

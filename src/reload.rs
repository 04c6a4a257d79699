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
/// at `/dev/zero` costs nothing here; loading it is refused with a clear error. A file that
/// could not be read for another reason hashes as that error (see [`known_fingerprint`] for
/// the watcher's reading).
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    known_fingerprint(files).unwrap_or_else(|e| error_hash(&e))
}

/// The fingerprint of a set of files one of which could not be read with `e`.
fn error_hash(e: &std::io::Error) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (3u8, e.kind().to_string()).hash(&mut h);
    h.finish()
}

/// Like [`fingerprint`], but an error other than "not found" while reading a file (too many
/// open files, permission denied, ...) is returned: it says nothing about whether the file
/// changed, so the watcher retries at the next poll instead of reloading.
pub fn known_fingerprint(files: &[PathBuf]) -> Result<u64, std::io::Error> {
    use crate::files::{read_capped, ReadError, MAX_CONFIG_BYTES};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match read_capped(f, MAX_CONFIG_BYTES) {
            Ok(bytes) => (0u8, bytes).hash(&mut h),
            Err(ReadError::TooLarge { .. }) => 1u8.hash(&mut h),
            Err(ReadError::NotAFile) => 2u8.hash(&mut h),
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => 4u8.hash(&mut h),
            Err(ReadError::Io(e)) => return Err(e),
        }
    }
    Ok(h.finish())
}

/// What one pass of the watcher does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Reload: asked for, or the files differ from what was loaded.
    Reload,
    /// The files read as loaded.
    Unchanged,
    /// A file could not be read (such as during file-descriptor exhaustion): not a change,
    /// and not a failed reload; the next poll looks again.
    Unknown,
}

/// The watcher's decision from the fingerprint it just took and the one last loaded.
pub fn decide(forced: bool, now: &Result<u64, std::io::Error>, last: u64) -> Poll {
    match now {
        _ if forced => Poll::Reload,
        Ok(fp) if *fp == last => Poll::Unchanged,
        Ok(_) => Poll::Reload,
        Err(_) => Poll::Unknown,
    }
}

/// The fingerprint of a config file and every file it names (as it reads now). A config that
/// does not parse counts as just its own bytes.
pub fn files_fingerprint(config_path: &Path) -> u64 {
    known_files_fingerprint(config_path)
        .0
        .unwrap_or_else(|e| error_hash(&e))
}

/// The fingerprint of a config file and every file it names, an unreadable file reported as
/// in [`known_fingerprint`], and the files it covers (what to watch next).
fn known_files_fingerprint(config_path: &Path) -> (Result<u64, std::io::Error>, Vec<PathBuf>) {
    let files = match Config::load(config_path) {
        Ok(c) => watched_files(config_path, &c),
        Err(_) => vec![config_path.to_owned()],
    };
    (known_fingerprint(&files), files)
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
                match decide(forced, &known_fingerprint(&files), last) {
                    Poll::Reload => {
                        // The fingerprint is taken BEFORE the files are read: a change that
                        // lands while the reload reads them differs from it, so the next poll
                        // reloads again rather than losing the change. A refused config is
                        // remembered too, so it is logged once, not on every poll.
                        next = Some(known_files_fingerprint(&path));
                        let _ = app.reload_config();
                    }
                    Poll::Unchanged => {}
                    Poll::Unknown => {
                        tracing::debug!(
                            "a watched file could not be read; looking again at the next poll"
                        );
                    }
                }
                app.reload_tls();
                next
            }
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(Some((fp, listed))) => {
                // An unreadable file leaves `last` as it was: the next poll that can read
                // everything reloads once more if anything differs, rather than miss a change.
                if let Ok(fp) = fp {
                    last = fp;
                }
                files = listed;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "the reload task failed; retrying at the next change or poll")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_file_is_unknown_not_a_change() {
        let emfile = || Err(std::io::Error::from_raw_os_error(24));
        assert_eq!(decide(false, &emfile(), 7), Poll::Unknown);
        assert_eq!(
            decide(false, &Err(std::io::ErrorKind::PermissionDenied.into()), 7),
            Poll::Unknown
        );
        assert_eq!(decide(true, &emfile(), 7), Poll::Reload);
        assert_eq!(decide(false, &Ok(7), 7), Poll::Unchanged);
        assert_eq!(decide(false, &Ok(8), 7), Poll::Reload);
        assert_eq!(decide(true, &Ok(7), 7), Poll::Reload);
    }

    #[test]
    fn a_missing_file_is_known_and_another_read_error_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.toml");
        let missing = vec![file.clone()];
        let before = known_fingerprint(&missing).expect("a missing file is a known state");
        std::fs::write(&file, "x").expect("write");
        assert_ne!(known_fingerprint(&missing).expect("readable"), before);
        // A path below a regular file fails with ENOTDIR: neither present nor absent.
        let below_file = vec![file.join("b.toml")];
        assert!(known_fingerprint(&below_file).is_err());
        assert_eq!(fingerprint(&below_file), fingerprint(&below_file));
    }
}

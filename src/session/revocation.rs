//! THE SEAM TO THE DENYLIST (issue 14): until `gw.denylist` lands, sessions record and check
//! revocations here, in memory. The lead replaces [`Revocations`] by the denylist:
//! `session_revoked` -> `denylist.check_session(issuer, sid, created_at)` (plus its `sub`
//! check), `revoke` -> `denylist.revoke(entry)`. Entries are SPEC "Revocation"'s.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// One revocation, as SPEC "Revocation" writes it: a `sid` or a `sub` of an issuer (its
/// `name`), refusing sessions created before `before` (every one without it), until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub issuer: String,
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub before: Option<i64>,
    pub until: i64,
}

/// Why a revocation could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("the revocation could not be recorded: {0}")]
pub struct RevokeError(pub String);

/// The revocations sessions honour: read without a lock (one `ArcSwap` load per check).
#[derive(Debug, Default)]
pub struct Revocations {
    entries: ArcSwap<Vec<Entry>>,
}

impl Revocations {
    /// True when a session of `issuer` with this `sid`/`sub`, created at `created_at`, is revoked.
    pub fn session_revoked(
        &self,
        issuer: &str,
        sid: Option<&str>,
        sub: &str,
        created_at: i64,
        now: i64,
    ) -> bool {
        let entries = self.entries.load();
        entries.iter().any(|e| {
            e.issuer == issuer
                && e.until >= now
                && e.before.is_none_or(|b| created_at < b)
                && match (&e.sid, &e.sub) {
                    (Some(s), _) => sid == Some(s.as_str()),
                    (None, Some(s)) => s == sub,
                    (None, None) => false,
                }
        })
    }

    /// Records an entry (entries past their `until` are dropped on the way).
    pub async fn revoke(&self, entry: Entry, now: i64) -> Result<(), RevokeError> {
        self.entries.rcu(|old| {
            let mut next: Vec<Entry> = old.iter().filter(|e| e.until >= now).cloned().collect();
            next.push(entry.clone());
            Arc::new(next)
        });
        Ok(())
    }
}

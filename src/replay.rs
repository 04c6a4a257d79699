//! TEMPORARY stand-in for the foundation's replay cache (lands on main at about 20:00 UTC);
//! same names and signature, memory only. Replaced whole by main's file at the merge.

use std::collections::HashMap;
use std::sync::Mutex;

/// What `first_use` does while Redis is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDown {
    Refuse,
    Local,
}

/// The shared store could not answer and the caller asked to refuse.
#[derive(Debug, thiserror::Error)]
#[error("the replay cache is unavailable")]
pub struct ReplayUnavailable;

/// Ids seen, until their expiry.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<String, i64>>,
}

impl ReplayCache {
    /// True the first time `namespace`/`id` is seen before `until_unix_secs`.
    pub async fn first_use(
        &self,
        namespace: &str,
        id: &str,
        until_unix_secs: i64,
        _when_down: WhenDown,
    ) -> Result<bool, ReplayUnavailable> {
        let now = crate::unix_now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, until| *until > now);
        Ok(seen
            .insert(format!("{namespace}:{id}"), until_unix_secs)
            .is_none())
    }
}

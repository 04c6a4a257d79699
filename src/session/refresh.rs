//! Refresh ahead of expiry, one refresh per session at a time, and tolerance of the rotation
//! race: the result of a refresh is kept for [`GRACE`] under the refresh token it replaced, so
//! a request that still carries the old cookie (sent by another tab, or in parallel before
//! the browser stored the new cookie) gets the new session instead of presenting a refresh
//! token the provider has already rotated away (which many providers answer by revoking the
//! whole grant).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::cookie::Session;

/// How long a refresh result answers requests carrying the refresh token it replaced.
pub const GRACE: Duration = Duration::from_secs(120);
/// How long a refused or failed refresh is remembered, so a session whose refresh fails is
/// not retried by every request (it goes on with its access token until that expires).
pub const FAILURE_MEMORY: Duration = Duration::from_secs(10);
/// Results remembered at most: past it, old results are dropped first (a refresh then simply
/// happens again).
const MAX_REMEMBERED: usize = 100_000;

/// Why a refresh did not give a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The provider refused the refresh token: the session ends once its access token expires.
    Refused,
    /// The provider could not be asked (network, 5xx, keys): try again later.
    Unavailable,
}

type Outcome = Result<Arc<Session>, Failure>;

/// The in-flight refreshes and recent results, keyed by the refresh token being replaced.
/// Locked only around a map lookup or insert when a session is due for refresh, never on the
/// ordinary request path.
#[derive(Debug, Default)]
pub struct Refresher {
    inflight: Mutex<HashMap<String, Arc<OnceCell<Outcome>>>>,
    recent: Mutex<HashMap<String, (Outcome, Instant)>>,
}

/// When a session's access token should be refreshed: at exp minus the larger of 60 s and 10%
/// of its lifetime, but never before half its lifetime (SPEC).
pub fn refresh_at(at_iat: i64, at_exp: i64) -> i64 {
    let lifetime = (at_exp - at_iat).max(0);
    (at_exp - (lifetime / 10).max(60)).max(at_iat + lifetime / 2)
}

impl Refresher {
    /// The refreshed session for `old_rt`: a result from the last [`GRACE`] if there is one,
    /// else the result of the refresh in flight, else a new refresh made by `run`.
    pub async fn refresh<F, Fut>(&self, old_rt: &str, run: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        if let Some(r) = self.remembered(old_rt) {
            return r;
        }
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.entry(old_rt.to_owned()).or_default().clone()
        };
        let mut ran = false;
        let outcome = cell
            .get_or_init(|| {
                ran = true;
                run()
            })
            .await
            .clone();
        if ran {
            self.remember(old_rt, outcome.clone());
            self.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(old_rt);
        }
        outcome
    }

    fn remembered(&self, old_rt: &str) -> Option<Outcome> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (outcome, until) = recent.get(old_rt)?;
        (Instant::now() < *until).then(|| outcome.clone())
    }

    fn remember(&self, old_rt: &str, outcome: Outcome) {
        let now = Instant::now();
        let until = now
            + match outcome {
                Ok(_) => GRACE,
                Err(_) => FAILURE_MEMORY,
            };
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= MAX_REMEMBERED {
            recent.retain(|_, (_, u)| *u > now);
            if recent.len() >= MAX_REMEMBERED {
                recent.clear();
            }
        }
        recent.insert(old_rt.to_owned(), (outcome, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn refresh_time_follows_the_spec() {
        // 1 h token: 10% (360 s) before exp.
        assert_eq!(refresh_at(0, 3600), 3240);
        // 5 min token: 60 s before exp.
        assert_eq!(refresh_at(0, 300), 240);
        // 60 s token: never before half its lifetime.
        assert_eq!(refresh_at(0, 60), 30);
    }

    fn session(at: &str) -> Arc<Session> {
        Arc::new(Session {
            id: "s".into(),
            sub: "alice".into(),
            sid: None,
            iat: 0,
            exp: 100,
            idle: 100,
            at: at.into(),
            at_iat: 0,
            at_exp: 100,
            rt: Some("rt2".into()),
            idt: None,
        })
    }

    #[tokio::test]
    async fn concurrent_refreshes_of_one_session_make_one_call_and_late_ones_reuse_it() {
        let r = Arc::new(Refresher::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (r, calls) = (r.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                r.refresh("rt1", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(session("new"))
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().at, "new");
        }
        // A request with the old cookie after the refresh: the same result, no new call.
        let late = r
            .refresh("rt1", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(session("newer"))
            })
            .await;
        assert_eq!(late.unwrap().at, "new");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

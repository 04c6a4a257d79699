//! Token-theft signals (`[anomaly]`): a bearer token is usually used from one place, so one
//! seen from more distinct client addresses than `max_addresses` within `window` has likely
//! been copied. Tokens are tracked by a hash (SHA-256, first 16 bytes; the token itself is
//! never kept), in bounded memory, per replica. A signal is counted in
//! `jwtgate_token_anomalies_total{issuer}` and logged once per token with its `jti` and
//! `sub`; with `action = "refuse"` the token is refused from the crossing request until its
//! `exp`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use quick_cache::sync::Cache;

use crate::config::{AnomalyAction, AnomalyConfig};

/// Tokens tracked at once. Each entry holds a 16-byte key, its `exp` and at most
/// `max_addresses + 1` (address, last seen) pairs of 32 bytes, about 250 bytes with the
/// cache's own slot at the default `max_addresses = 3` and about 700 at the allowed maximum
/// of 16: some 16 MB (45 MB) when full. Past it the least used tokens are forgotten, which
/// can only delay a signal, never raise a false one.
pub const TRACKED_TOKENS: usize = 65_536;

/// Tokens remembered as flagged (logged once, refused with `action = "refuse"`) until their
/// `exp`; apart from the tracked ones, so ordinary traffic never pushes a flagged token out.
/// A 16-byte key and an `exp` each.
pub const FLAGGED_TOKENS: usize = 16_384;

/// A token's key: the first 16 bytes of its SHA-256, so memory never holds the token.
type TokenKey = [u8; 16];

/// What one token was seen from.
#[derive(Debug, Default)]
struct Seen {
    /// (address as IPv6 bits, Unix second last seen), at most `max_addresses + 1`.
    addresses: Vec<(u128, i64)>,
}

/// The two bounded maps, made on first use so a gateway without `[anomaly]` holds nothing.
struct Tracker {
    tokens: Cache<TokenKey, Arc<Mutex<Seen>>>,
    flagged: Cache<TokenKey, i64>,
}

/// The result of observing one request's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing unusual, or a signal with `action = "log"`.
    Pass,
    /// `action = "refuse"` and the token is flagged: answer 401, reason `anomaly`.
    Refuse,
}

/// One request's token, as the tracker needs it.
pub struct Sighting<'a> {
    pub token: &'a str,
    /// The client's address ([`crate::proxy::headers::client_addr`]).
    pub addr: IpAddr,
    /// The token's `exp` plus its issuer's leeway: when it is forgotten.
    pub until: i64,
    /// The issuer's `name`, the metric label.
    pub issuer: &'a str,
    pub jti: Option<&'a str>,
    pub sub: Option<&'a str>,
}

/// The per-replica theft-signal tracker, shared by every snapshot (settings are read per
/// call, so a reload applies them at once).
pub struct Anomalies {
    tracker: OnceLock<Tracker>,
    counter: prometheus::IntCounterVec,
}

impl Anomalies {
    /// A tracker counting into `counter` (`jwtgate_token_anomalies_total`).
    pub fn new(counter: prometheus::IntCounterVec) -> Anomalies {
        Anomalies {
            tracker: OnceLock::new(),
            counter,
        }
    }

    /// Records that `s.token` was used from `s.addr` at `now`; the verdict under `cfg`.
    pub fn observe(&self, cfg: &AnomalyConfig, s: &Sighting<'_>, now: i64) -> Verdict {
        let t = self.tracker.get_or_init(|| Tracker {
            tokens: Cache::new(TRACKED_TOKENS),
            flagged: Cache::new(FLAGGED_TOKENS),
        });
        let key = token_key(s.token);
        let refuse = match cfg.action {
            AnomalyAction::Refuse => Verdict::Refuse,
            AnomalyAction::Log => Verdict::Pass,
        };
        if let Some(until) = t.flagged.get(&key) {
            if now <= until {
                return refuse;
            }
            t.flagged.remove(&key);
        }
        let seen = t
            .tokens
            .get_or_insert_with(&key, || {
                Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Seen::default())))
            })
            .unwrap_or_else(|never| match never {});
        let addr = u128::from_be_bytes(match s.addr.to_canonical() {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        });
        let crossed: Option<Vec<(u128, i64)>> = {
            // One token's lock, held for a few comparisons: requests of other tokens never wait.
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            let since = now.saturating_sub(cfg.window.as_secs() as i64);
            seen.addresses.retain(|&(_, last)| last > since);
            match seen.addresses.iter_mut().find(|(a, _)| *a == addr) {
                Some(entry) => entry.1 = now,
                None => seen.addresses.push((addr, now)),
            }
            (seen.addresses.len() > cfg.max_addresses).then(|| {
                let all = seen.addresses.clone();
                // The signal is raised; what follows is decided by the flagged map.
                seen.addresses.clear();
                all
            })
        };
        let Some(addresses) = crossed else {
            return Verdict::Pass;
        };
        t.tokens.remove(&key);
        t.flagged.insert(key, s.until);
        self.counter.with_label_values(&[s.issuer]).inc();
        let shown: Vec<String> = addresses
            .iter()
            .map(|(a, _)| std::net::Ipv6Addr::from(*a).to_canonical().to_string())
            .collect();
        tracing::warn!(
            issuer = s.issuer,
            jti = s.jti.unwrap_or(""),
            sub = s.sub.unwrap_or(""),
            addresses = shown.join(","),
            max_addresses = cfg.max_addresses,
            window_secs = cfg.window.as_secs(),
            action = cfg.action.as_str(),
            "token used from more client addresses than max_addresses within the window: it may have been stolen"
        );
        refuse
    }
}

/// The first 16 bytes of the token's SHA-256.
fn token_key(token: &str) -> TokenKey {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d.as_ref()[..16]);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(action: AnomalyAction) -> AnomalyConfig {
        AnomalyConfig {
            max_addresses: 2,
            window: Duration::from_secs(600),
            action,
        }
    }

    fn counter() -> prometheus::IntCounterVec {
        prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["issuer"]).expect("ok")
    }

    fn at<'a>(token: &'a str, addr: &str) -> Sighting<'a> {
        Sighting {
            token,
            addr: addr.parse().expect("ip"),
            until: 10_000,
            issuer: "corp",
            jti: Some("j1"),
            sub: Some("alice"),
        }
    }

    #[test]
    fn refuses_from_the_crossing_request_until_exp() {
        let a = Anomalies::new(counter());
        let c = cfg(AnomalyAction::Refuse);
        assert_eq!(a.observe(&c, &at("t1", "10.0.0.1"), 100), Verdict::Pass);
        assert_eq!(a.observe(&c, &at("t1", "10.0.0.2"), 101), Verdict::Pass);
        // The same addresses again are not new ones.
        assert_eq!(a.observe(&c, &at("t1", "10.0.0.1"), 102), Verdict::Pass);
        // IPv4 and its mapped IPv6 form are one address.
        assert_eq!(
            a.observe(&c, &at("t1", "::ffff:10.0.0.2"), 103),
            Verdict::Pass
        );
        assert_eq!(a.observe(&c, &at("t1", "10.0.0.3"), 104), Verdict::Refuse);
        assert_eq!(a.observe(&c, &at("t1", "10.0.0.1"), 105), Verdict::Refuse);
        assert_eq!(a.counter.with_label_values(&["corp"]).get(), 1);
        // Another token is untouched; after `until` the flagged one is forgotten.
        assert_eq!(a.observe(&c, &at("t2", "10.0.0.9"), 106), Verdict::Pass);
        assert_eq!(a.observe(&c, &at("t1", "10.0.0.1"), 10_001), Verdict::Pass);
    }

    #[test]
    fn addresses_older_than_the_window_do_not_count() {
        let a = Anomalies::new(counter());
        let c = cfg(AnomalyAction::Refuse);
        assert_eq!(a.observe(&c, &at("t", "10.0.0.1"), 100), Verdict::Pass);
        assert_eq!(a.observe(&c, &at("t", "10.0.0.2"), 200), Verdict::Pass);
        // 10.0.0.1 was last seen 601 s ago: out of the window.
        assert_eq!(a.observe(&c, &at("t", "10.0.0.3"), 701), Verdict::Pass);
        assert_eq!(a.observe(&c, &at("t", "10.0.0.4"), 702), Verdict::Refuse);
    }

    #[test]
    fn log_action_counts_once_and_passes() {
        let a = Anomalies::new(counter());
        let c = cfg(AnomalyAction::Log);
        for (i, addr) in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
            .iter()
            .enumerate()
        {
            assert_eq!(a.observe(&c, &at("t", addr), 100 + i as i64), Verdict::Pass);
        }
        assert_eq!(a.counter.with_label_values(&["corp"]).get(), 1);
    }
}

//! The exact in-memory index the request path reads: per issuer, one hash map per kind from
//! the id to its times. Immutable once published; writers build a new one and swap it in.
//!
//! Memory: a slot is a `Box<str>` (16 bytes) and [`Times`] (8 bytes) plus one control byte;
//! with hashbrown's load factor that is at most about 60 bytes per entry beyond the key text
//! and its allocation (measured in README "Revocation").

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::entry::{Entry, Kind};

/// "Never expires" (`until`) or "every token, whatever its `iat`" (`before`).
pub const FOREVER: u32 = u32::MAX;

/// An entry's times, compact: Unix seconds as `u32` (enough until 2106), [`FOREVER`] for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub before: u32,
    pub until: u32,
}

fn compact(t: Option<u64>) -> u32 {
    t.map_or(FOREVER, |t| u32::try_from(t).unwrap_or(FOREVER - 1))
}

fn expand(t: u32) -> Option<u64> {
    (t != FOREVER).then_some(u64::from(t))
}

impl Times {
    /// The times of `e`.
    pub fn of(e: &Entry) -> Times {
        Times {
            before: compact(e.before),
            until: compact(e.until),
        }
    }

    /// Two entries for the same id: the later `before` and the later `until` win, so a second
    /// "log out everywhere" extends the first rather than shortening it.
    pub fn merge(self, other: Times) -> Times {
        Times {
            before: self.before.max(other.before),
            until: self.until.max(other.until),
        }
    }

    /// True while the entry holds: until `until` plus the issuer's leeway.
    pub fn live(self, now: u64, leeway: u64) -> bool {
        self.until == FOREVER || now <= u64::from(self.until) + leeway
    }

    /// True when a token issued at `iat` (a session created then) falls under the entry; a
    /// token without `iat` falls under every `before`.
    pub fn covers(self, iat: Option<f64>) -> bool {
        self.before == FOREVER || iat.is_none_or(|iat| iat < f64::from(self.before))
    }
}

/// One id's maps, by kind.
#[derive(Debug, Default, Clone)]
struct Kinds([HashMap<Box<str>, Times>; 3]);

/// A set of entries from one source (the file, or Redis), by issuer. Few issuers: a list.
#[derive(Debug, Default, Clone)]
pub struct Layer {
    issuers: Vec<(Box<str>, Kinds)>,
    /// The earliest `until` held (kept on insert, recomputed by a prune), so the watcher's
    /// once-a-second look costs nothing with a million entries.
    earliest_until: Option<u64>,
}

impl Layer {
    /// Adds `e`, merging with an entry already held for the same id.
    pub fn insert(&mut self, e: &Entry) {
        let at = match self.issuers.iter().position(|(n, _)| **n == *e.issuer) {
            Some(i) => i,
            None => {
                self.issuers
                    .push((e.issuer.as_str().into(), Kinds::default()));
                self.issuers.len() - 1
            }
        };
        if let Some(u) = e.until {
            self.earliest_until = Some(self.earliest_until.map_or(u, |m| m.min(u)));
        }
        let map = &mut self.issuers[at].1 .0[e.kind as usize];
        let t = Times::of(e);
        match map.get_mut(e.id.as_str()) {
            Some(old) => *old = old.merge(t),
            None => {
                map.insert(e.id.as_str().into(), t);
            }
        }
    }

    /// The times held for `id`.
    pub fn get(&self, issuer: &str, kind: Kind, id: &str) -> Option<Times> {
        let (_, k) = self.issuers.iter().find(|(n, _)| **n == *issuer)?;
        k.0[kind as usize].get(id).copied()
    }

    /// Entries held, by kind ([`Kind::ALL`] order).
    pub fn counts(&self) -> [usize; 3] {
        let mut c = [0; 3];
        for (_, k) in &self.issuers {
            for (i, m) in k.0.iter().enumerate() {
                c[i] += m.len();
            }
        }
        c
    }

    /// True when the layer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.counts() == [0; 3]
    }

    /// Every entry, as an [`Entry`] (listings and write-back).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.issuers.iter().flat_map(|(issuer, k)| {
            Kind::ALL.into_iter().flat_map(move |kind| {
                k.0[kind as usize].iter().map(move |(id, t)| Entry {
                    issuer: issuer.to_string(),
                    kind,
                    id: id.to_string(),
                    before: expand(t.before).filter(|_| kind != Kind::Jti),
                    until: expand(t.until),
                })
            })
        })
    }

    /// Drops the entries past `until` plus their issuer's leeway; true when any was dropped.
    pub fn prune(&mut self, now: u64, leeway: impl Fn(&str) -> u64) -> bool {
        let mut dropped = false;
        for (issuer, k) in &mut self.issuers {
            let l = leeway(issuer);
            for m in &mut k.0 {
                let before = m.len();
                m.retain(|_, t| t.live(now, l));
                dropped |= m.len() != before;
            }
        }
        self.issuers
            .retain(|(_, k)| k.0.iter().any(|m| !m.is_empty()));
        dropped
    }

    /// The earliest moment (Unix seconds, without leeway) an entry drops out, if any does.
    pub fn next_expiry(&self) -> Option<u64> {
        self.issuers
            .iter()
            .flat_map(|(_, k)| k.0.iter().flat_map(|m| m.values()))
            .filter(|t| t.until != FOREVER)
            .map(|t| u64::from(t.until))
            .min()
    }

    /// `self` with `other`'s entries merged in.
    pub fn merged(&self, other: &Layer) -> Layer {
        let mut out = self.clone();
        for e in other.entries() {
            out.insert(&e);
        }
        out
    }
}

/// Where an entry in effect comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `[denylist] file`.
    File,
    /// Redis (or, without Redis, this process's memory: `revoke` calls with nowhere to write).
    Shared,
}

/// Which entry refuses a token: enough for the log, `explain` and a session check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    pub kind: Kind,
    pub times: Times,
    pub source: Source,
}

impl Revoked {
    /// `before`, when the entry has one.
    pub fn before(&self) -> Option<u64> {
        expand(self.times.before).filter(|_| self.kind != Kind::Jti)
    }

    /// `until`, when the entry has one.
    pub fn until(&self) -> Option<u64> {
        expand(self.times.until)
    }
}

/// Everything the request path reads, swapped whole.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// The `[denylist] file`'s entries.
    pub file: Arc<Layer>,
    /// Redis's entries as of the last full load.
    pub base: Arc<Layer>,
    /// What the Redis stream (or a local `revoke`) brought since: small, so that applying an
    /// event copies little; folded into `base` once it grows.
    pub delta: Arc<Layer>,
    /// Each configured issuer's leeway in seconds (entries hold until `until` plus it).
    pub leeway: Arc<Vec<(Box<str>, u64)>>,
    /// True when no layer holds anything: the request path then costs one load and a branch.
    pub empty: bool,
}

impl Index {
    /// Recomputes `empty` after a layer changed.
    pub fn with_layers(mut self) -> Index {
        self.empty = self.file.is_empty() && self.base.is_empty() && self.delta.is_empty();
        self
    }

    /// The issuer's leeway in seconds (0 for an issuer the config does not name).
    pub fn leeway_of(&self, issuer: &str) -> u64 {
        self.leeway
            .iter()
            .find(|(n, _)| **n == *issuer)
            .map_or(0, |(_, l)| *l)
    }

    /// The entry that refuses a token of `issuer` with `claims` at `now`, if one does.
    pub fn check(&self, issuer: &str, claims: &Map<String, Value>, now: u64) -> Option<Revoked> {
        if self.empty {
            return None;
        }
        let leeway = self.leeway_of(issuer);
        let iat = claims.get("iat").and_then(Value::as_f64);
        for kind in Kind::ALL {
            let Some(id) = claims.get(kind.as_str()).and_then(Value::as_str) else {
                continue;
            };
            if let Some(r) = self.find(issuer, kind, id, now, leeway, iat) {
                return Some(r);
            }
        }
        None
    }

    /// The entry of `kind` for `id` that applies to something issued at `iat`, if any.
    pub fn find(
        &self,
        issuer: &str,
        kind: Kind,
        id: &str,
        now: u64,
        leeway: u64,
        iat: Option<f64>,
    ) -> Option<Revoked> {
        let layers = [
            (&self.file, Source::File),
            (&self.delta, Source::Shared),
            (&self.base, Source::Shared),
        ];
        layers.into_iter().find_map(|(layer, source)| {
            let times = layer.get(issuer, kind, id)?;
            (times.live(now, leeway) && (kind == Kind::Jti || times.covers(iat))).then_some(
                Revoked {
                    kind,
                    times,
                    source,
                },
            )
        })
    }

    /// Entries held, by kind, over every layer.
    pub fn counts(&self) -> [usize; 3] {
        let mut c = [0; 3];
        for l in [&self.file, &self.base, &self.delta] {
            for (i, n) in l.counts().into_iter().enumerate() {
                c[i] += n;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(line: &str) -> Entry {
        Entry::parse(line).expect("valid entry")
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn index_of(lines: &[&str]) -> Index {
        let mut l = Layer::default();
        for line in lines {
            l.insert(&entry(line));
        }
        Index {
            file: Arc::new(l),
            leeway: Arc::new(vec![("corp".into(), 30)]),
            ..Index::default()
        }
        .with_layers()
    }

    #[test]
    fn each_kind_refuses_what_the_spec_says() {
        let idx = index_of(&[
            r#"{"issuer":"corp","jti":"t1","until":1000}"#,
            r#"{"issuer":"corp","sub":"alice","before":500,"until":2000}"#,
            r#"{"issuer":"corp","sid":"s1","before":500,"until":2000}"#,
            r#"{"issuer":"corp","sid":"s2","until":2000}"#,
        ]);
        let at = |c: Value, now: u64| idx.check("corp", &claims(c), now).map(|r| r.kind);
        assert_eq!(at(json!({"jti":"t1"}), 1000), Some(Kind::Jti));
        // until plus the issuer's leeway (30 s), then gone.
        assert_eq!(at(json!({"jti":"t1"}), 1030), Some(Kind::Jti));
        assert_eq!(at(json!({"jti":"t1"}), 1031), None);
        assert_eq!(at(json!({"jti":"t2"}), 100), None);
        assert_eq!(at(json!({"sub":"alice","iat":499}), 600), Some(Kind::Sub));
        assert_eq!(at(json!({"sub":"alice","iat":500}), 600), None);
        assert_eq!(at(json!({"sub":"alice"}), 600), Some(Kind::Sub));
        assert_eq!(at(json!({"sub":"bob","iat":1}), 600), None);
        assert_eq!(at(json!({"sid":"s1","iat":10}), 600), Some(Kind::Sid));
        assert_eq!(at(json!({"sid":"s1","iat":501}), 600), None);
        assert_eq!(at(json!({"sid":"s2","iat":1999}), 600), Some(Kind::Sid));
        // Scoped to the issuer.
        assert_eq!(idx.check("other", &claims(json!({"jti":"t1"})), 10), None);
    }

    #[test]
    fn a_second_entry_for_the_same_id_extends_the_first() {
        let idx = index_of(&[
            r#"{"issuer":"corp","sub":"alice","before":500,"until":2000}"#,
            r#"{"issuer":"corp","sub":"alice","before":800,"until":1500}"#,
        ]);
        let r = idx.file.get("corp", Kind::Sub, "alice").expect("held");
        assert_eq!((r.before, r.until), (800, 2000));
        assert_eq!(idx.counts(), [0, 1, 0]);
    }

    #[test]
    fn pruning_drops_only_expired_entries() {
        let mut l = Layer::default();
        l.insert(&entry(r#"{"issuer":"corp","jti":"a","until":100}"#));
        l.insert(&entry(r#"{"issuer":"corp","jti":"b","until":300}"#));
        l.insert(&entry(r#"{"issuer":"corp","sub":"c"}"#));
        assert_eq!(l.next_expiry(), Some(100));
        assert!(l.prune(131, |_| 30));
        assert_eq!(l.counts(), [1, 1, 0]);
        assert!(!l.prune(131, |_| 30));
    }
}

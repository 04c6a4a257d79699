//! What `jwtgate check` prints: the routes and issuers it understood, and warnings.

use std::collections::HashMap;
use std::fmt::Write;

use crate::config::{AuthMode, HostMatch, RouteConfig};
use crate::state::Snapshot;

/// A human-readable summary of a loaded snapshot, warnings last.
pub fn describe(snap: &Snapshot) -> String {
    let c = &snap.config;
    let mut out = String::new();
    let _ = writeln!(out, "config {} is valid", c.path.display());
    let _ = writeln!(
        out,
        "listen {} ({})",
        c.listen.addr,
        if c.listen.tls.is_some() {
            "https"
        } else {
            "http"
        }
    );
    let _ = writeln!(out, "issuers:");
    for i in &snap.issuers {
        let ic = &i.config;
        let _ = writeln!(
            out,
            "  {:<16} iss={} aud=[{}] algs=[{}] keys={}",
            ic.name,
            ic.issuer,
            ic.audiences.join(", "),
            ic.algorithms
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            match i.keys.current() {
                Some(keys) => keys
                    .iter()
                    .map(|k| k.kid.clone().unwrap_or_else(|| "(no kid)".into()))
                    .collect::<Vec<_>>()
                    .join(", "),
                None => "(not fetched)".into(),
            }
        );
    }
    let _ = writeln!(out, "routes:");
    for r in &c.routes {
        let _ = writeln!(
            out,
            "  {:<16} {}{} {} -> {} auth={}{}",
            r.name,
            host_str(r),
            r.path_prefix,
            r.methods.as_ref().map_or("ANY".to_owned(), |m| m
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(",")),
            r.upstream.url,
            match r.auth {
                AuthMode::Required => "required",
                AuthMode::Optional => "optional",
                AuthMode::None => "none",
            },
            if r.auth == AuthMode::None {
                String::new()
            } else {
                format!(
                    " issuers=[{}]",
                    r.issuers
                        .iter()
                        .map(|&i| c.issuers[i].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    for w in warnings(snap) {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

fn host_str(r: &RouteConfig) -> String {
    match &r.host {
        Some(HostMatch::Exact(h)) => h.clone(),
        Some(HostMatch::Wildcard(s)) => format!("*{s}"),
        None => String::new(),
    }
}

/// Routes another route always wins over, issuers no route uses, and skipped JWKS entries.
pub fn warnings(snap: &Snapshot) -> Vec<String> {
    let c = &snap.config;
    let mut out = Vec::new();
    // Routes grouped by host and prefix, in file order: only routes of one group can shadow
    // each other, so the search stays linear unless many routes share a host and prefix.
    let mut groups: HashMap<(&Option<HostMatch>, &str), Vec<&RouteConfig>> = HashMap::new();
    for b in &c.routes {
        let earlier = groups.entry((&b.host, b.path_prefix.as_str())).or_default();
        // Same host and prefix, earlier in the file, and at least the same methods: the route
        // table keeps file order among equals, so `b` can never be chosen.
        if let Some(a) = earlier.iter().find(|a| match (&a.methods, &b.methods) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(am), Some(bm)) => bm.iter().all(|m| am.contains(m)),
        }) {
            out.push(format!(
                "{}:{}:{}: route {:?} is shadowed by route {:?} (same host, path_prefix and methods, written earlier): it never matches",
                c.path.display(),
                b.loc.line,
                b.loc.col,
                b.name,
                a.name
            ));
        }
        earlier.push(b);
    }
    let mut used = vec![false; c.issuers.len()];
    for r in c.routes.iter().filter(|r| r.auth != AuthMode::None) {
        for &i in &r.issuers {
            if let Some(u) = used.get_mut(i) {
                *u = true;
            }
        }
    }
    for (ic, used) in c.issuers.iter().zip(used) {
        if !used {
            out.push(format!("issuer {:?} is not used by any route", ic.name));
        }
    }
    out.extend(
        snap.skipped_keys
            .iter()
            .map(|s| format!("skipped JWKS entry: {s}")),
    );
    out
}

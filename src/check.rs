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
            r.auth.as_str(),
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
    if let Some(sc) = &c.session {
        let _ = writeln!(
            out,
            "session: issuer={} client_id={} store={} redirect_uri={}{}",
            c.issuers[sc.issuer].name,
            sc.client_id,
            match sc.store {
                crate::config::SessionStore::Cookie => "cookie",
                crate::config::SessionStore::Redis => "redis",
            },
            sc.external_url
                .as_deref()
                .unwrap_or("<each request's origin>"),
            crate::session::CALLBACK_PATH
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
    if let Some(sc) = &c.session {
        // Browser sessions: a provider reached over plain http off this machine hands out
        // tokens anyone on the path can read.
        let iss = &c.issuers[sc.issuer].issuer;
        let host = iss
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned));
        if iss.starts_with("http://") && !host.is_some_and(|h| crate::session::is_loopback_host(&h))
        {
            out.push(format!("[session] issuer {iss:?} is plain http on a non-loopback host: codes and tokens cross the network unencrypted"));
        }
        if sc.external_url.is_none() {
            out.push("[session] has no external_url: the redirect_uri is built from each request's Host, and every such origin must be registered at the provider".into());
        }
    }
    out.extend(
        snap.skipped_keys
            .iter()
            .map(|s| format!("skipped JWKS entry: {s}")),
    );
    out
}

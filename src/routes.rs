//! The compiled route table: host first (exact, then the longest wildcard, then routes without
//! a host), then the longest segment-aware `path_prefix`, then methods.

use std::borrow::Cow;
use std::collections::HashMap;

use http::Method;

use crate::config::{HostMatch, RouteConfig};
use crate::path::has_prefix;

/// Routes grouped by host, each group ordered longest prefix first.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<usize>>,
    /// `(".example.com", routes)`, longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    any_host: Vec<usize>,
}

impl RouteTable {
    /// Compiles the table; indices refer to `routes`.
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let mut t = RouteTable::default();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                Some(HostMatch::Exact(h)) => t.exact.entry(h.clone()).or_default().push(i),
                Some(HostMatch::Wildcard(s)) => {
                    match t.wildcard.iter_mut().find(|(suffix, _)| suffix == s) {
                        Some((_, list)) => list.push(i),
                        None => t.wildcard.push((s.clone(), vec![i])),
                    }
                }
                None => t.any_host.push(i),
            }
        }
        // Stable sorts keep file order among equal prefixes, so the first route written wins.
        let by_prefix = |list: &mut Vec<usize>| {
            list.sort_by_key(|&i| std::cmp::Reverse(routes[i].path_prefix.len()));
        };
        t.exact.values_mut().for_each(by_prefix);
        t.wildcard.iter_mut().for_each(|(_, l)| by_prefix(l));
        by_prefix(&mut t.any_host);
        t.wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t
    }

    /// The groups that apply to `host`, most specific first.
    pub fn groups<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a [usize]> + 'a {
        let exact = self.exact.get(host).map(Vec::as_slice);
        let wild = self
            .wildcard
            .iter()
            // `*.example.com` needs at least one label before the suffix.
            .filter(move |(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
            .map(|(_, l)| l.as_slice());
        exact
            .into_iter()
            .chain(wild)
            .chain(std::iter::once(self.any_host.as_slice()))
    }

    /// The route for a request; `host` is normalised by [`normalize_host`], `path` by
    /// [`crate::path::normalize`].
    pub fn find(
        &self,
        routes: &[RouteConfig],
        host: &str,
        path: &str,
        method: &Method,
    ) -> Option<usize> {
        self.groups(host).find_map(|group| {
            group.iter().copied().find(|&i| {
                let r = &routes[i];
                has_prefix(path, &r.path_prefix)
                    && r.methods.as_ref().is_none_or(|m| m.contains(method))
            })
        })
    }
}

/// Lower-cases a Host value and strips its port and a trailing dot; `None` when it is not a
/// plausible host.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a port.
        &raw[..=raw.find(']')?]
    } else {
        match raw.rfind(':') {
            Some(i) if raw[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &raw[..i],
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        })
    {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("Example.COM:8443").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            normalize_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("a b"), None);
        assert_eq!(normalize_host(""), None);
        assert_eq!(normalize_host("x:abc"), None);
    }
}

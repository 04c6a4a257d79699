//! The compiled route table: host first (exact, then the longest wildcard, then routes without
//! a host), then the longest segment-aware `path_prefix`, then methods.

use std::borrow::Cow;
use std::collections::HashMap;

use http::Method;

use crate::config::{HostMatch, RouteConfig};
use crate::path::{has_prefix, segments};

/// Routes grouped by host; within a group, a segment trie of the path prefixes.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Group>,
    /// `(".example.com", routes)`, longest suffix first.
    wildcard: Vec<(String, Group)>,
    any_host: Group,
}

/// The routes of one host group. A lookup walks the request path's segments down the trie,
/// so it costs a hash lookup per path segment instead of a prefix test per route (about
/// 12 µs at 1,000 routes before; `benches/gateway.rs`, `routes/find_1000`).
#[derive(Debug, Default)]
struct Group {
    root: Node,
}

/// One prefix segment. Entries are `(rank, route index)`.
#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Prefixes that end with this segment (`/api`): the path ends here or goes on after a
    /// separator or `;`.
    ends: Vec<(usize, usize)>,
    /// Prefixes that end with a separator after this segment (`/api/`; at the root, `/`):
    /// the path goes on.
    dir: Vec<(usize, usize)>,
}

impl Group {
    /// The trie of `members` (indices into `routes`), ranked longest prefix first.
    fn new(routes: &[RouteConfig], mut members: Vec<usize>) -> Group {
        // A stable sort keeps file order among equal prefixes, so the first route written wins.
        members.sort_by_key(|&i| std::cmp::Reverse(routes[i].path_prefix.len()));
        let mut group = Group::default();
        for (rank, &i) in members.iter().enumerate() {
            let prefix = &routes[i].path_prefix;
            let mut node = &mut group.root;
            let mut after_last = None;
            for (segment, rest) in segments(prefix) {
                node = node.children.entry(segment.into()).or_default();
                after_last = Some(rest);
            }
            // Every segment is followed by a separator run or by nothing; `/` alone has none.
            if after_last == Some("") {
                node.ends.push((rank, i));
            } else {
                node.dir.push((rank, i));
            }
        }
        group
    }

    /// The best route of this group for `path` and `method`: the lowest rank among the
    /// routes whose prefix the path lies under and that allow the method.
    fn find(&self, routes: &[RouteConfig], path: &str, method: &Method) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        let mut consider = |entries: &[(usize, usize)]| {
            for &(rank, i) in entries {
                if best.is_some_and(|(b, _)| b <= rank) {
                    continue;
                }
                let r = &routes[i];
                // The trie narrows the candidates; `has_prefix` stays the one definition of
                // "under this prefix".
                if has_prefix(path, &r.path_prefix)
                    && r.methods.as_ref().is_none_or(|m| m.contains(method))
                {
                    best = Some((rank, i));
                }
            }
        };
        consider(&self.root.dir);
        let mut node = &self.root;
        for (segment, rest) in segments(path) {
            // `/admin;x=1` lies under `/admin`: a `;` ends the last prefix segment too.
            for (k, _) in segment.match_indices(';') {
                if let Some(child) = node.children.get(&segment[..k]) {
                    consider(&child.ends);
                }
            }
            let Some(child) = node.children.get(segment) else {
                break;
            };
            consider(&child.ends);
            if !rest.is_empty() {
                consider(&child.dir);
            }
            node = child;
        }
        best.map(|(_, i)| i)
    }
}

impl RouteTable {
    /// Compiles the table; indices refer to `routes`.
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: Vec<(String, Vec<usize>)> = Vec::new();
        let mut any_host = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                Some(HostMatch::Exact(h)) => exact.entry(h.clone()).or_default().push(i),
                Some(HostMatch::Wildcard(s)) => {
                    match wildcard.iter_mut().find(|(suffix, _)| suffix == s) {
                        Some((_, list)) => list.push(i),
                        None => wildcard.push((s.clone(), vec![i])),
                    }
                }
                None => any_host.push(i),
            }
        }
        wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        RouteTable {
            exact: exact
                .into_iter()
                .map(|(h, list)| (h, Group::new(routes, list)))
                .collect(),
            wildcard: wildcard
                .into_iter()
                .map(|(s, list)| (s, Group::new(routes, list)))
                .collect(),
            any_host: Group::new(routes, any_host),
        }
    }

    /// The groups that apply to `host`, most specific first.
    fn groups<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Group> + 'a {
        let exact = self.exact.get(host);
        let wild = self
            .wildcard
            .iter()
            // `*.example.com` needs at least one label before the suffix.
            .filter(move |(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
            .map(|(_, g)| g);
        exact
            .into_iter()
            .chain(wild)
            .chain(std::iter::once(&self.any_host))
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
        self.groups(host)
            .find_map(|group| group.find(routes, path, method))
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

//! The compiled route table: host first (exact, then the longest wildcard, then routes without
//! a host), then the longest segment-aware `path_prefix`, then methods.
//!
//! A request is routed only when every common upstream reading of its path picks the same
//! route ([`RouteTable::route`]): as forwarded, without `;` parameters (Tomcat, Jetty,
//! Spring), as a case-insensitive Windows server reads it (IIS), and both rewrites together.
//! Folding by default instead would open the reverse bypass on case-sensitive upstreams.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use http::Method;

use crate::config::{HostMatch, RouteConfig};
use crate::path::{folded, has_prefix, rewrites, segments, without_params, AmbiguousPath};

/// Routes grouped by host; within a group, a segment trie of the path prefixes.
#[derive(Debug, Default)]
pub struct RouteTable {
    plain: Hosts,
    /// The same routes under their [`folded`] prefixes, for the case-insensitive reading;
    /// `None` when every prefix is its own folded form (lower case), so `plain` serves both.
    folded: Option<(Hosts, Vec<String>)>,
}

/// The host groups of one table.
#[derive(Debug, Default)]
struct Hosts {
    exact: HashMap<String, Group>,
    /// By suffix with its leading dot (`.example.com`). A lookup tries each suffix of the
    /// Host instead of each wildcard, so it costs one hash per label, however many there are.
    wildcard: HashMap<String, Group>,
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
    /// The trie of `members` (indices into `prefixes`), ranked longest prefix first.
    fn new<P: Prefixes + ?Sized>(prefixes: &P, mut members: Vec<usize>) -> Group {
        // A stable sort keeps file order among equal prefixes, so the first route written wins.
        members.sort_by_key(|&i| std::cmp::Reverse(prefixes.prefix(i).len()));
        let mut group = Group::default();
        for (rank, &i) in members.iter().enumerate() {
            let prefix = prefixes.prefix(i);
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
    fn find<P: Prefixes + ?Sized>(
        &self,
        routes: &[RouteConfig],
        prefixes: &P,
        path: &str,
        method: &Method,
    ) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        let mut consider = |entries: &[(usize, usize)]| {
            for &(rank, i) in entries {
                if best.is_some_and(|(b, _)| b <= rank) {
                    continue;
                }
                let r = &routes[i];
                // The trie narrows the candidates; `has_prefix` stays the one definition of
                // "under this prefix".
                if has_prefix(path, prefixes.prefix(i))
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

impl Hosts {
    /// Groups the routes by host; `prefixes` are the route prefixes in the reading to match.
    fn new<P: Prefixes + ?Sized>(routes: &[RouteConfig], prefixes: &P) -> Hosts {
        let mut exact: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                Some(HostMatch::Exact(h)) => exact.entry(h.as_str()).or_default().push(i),
                Some(HostMatch::Wildcard(s)) => wildcard.entry(s.as_str()).or_default().push(i),
                None => any_host.push(i),
            }
        }
        let compile = |groups: HashMap<&str, Vec<usize>>| {
            groups
                .into_iter()
                .map(|(h, list)| (h.to_owned(), Group::new(prefixes, list)))
                .collect()
        };
        Hosts {
            exact: compile(exact),
            wildcard: compile(wildcard),
            any_host: Group::new(prefixes, any_host),
        }
    }

    /// The groups that apply to `host`, most specific first: the exact host, then the
    /// wildcards from the longest suffix to the shortest, then routes without a host.
    fn groups<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Group> + 'a {
        let exact = self.exact.get(host);
        let wild = host
            .match_indices('.')
            // `*.example.com` needs at least one label before the suffix.
            .filter(|&(k, _)| k > 0)
            .filter_map(move |(k, _)| self.wildcard.get(&host[k..]));
        exact
            .into_iter()
            .chain(wild)
            .chain(std::iter::once(&self.any_host))
    }

    fn find<P: Prefixes + ?Sized>(
        &self,
        routes: &[RouteConfig],
        prefixes: &P,
        host: &str,
        path: &str,
        method: &Method,
    ) -> Option<usize> {
        self.groups(host)
            .find_map(|group| group.find(routes, prefixes, path, method))
    }
}

/// The route prefixes in one reading, by route index.
trait Prefixes {
    fn prefix(&self, route: usize) -> &str;
}

/// The prefixes as written.
impl Prefixes for [RouteConfig] {
    fn prefix(&self, route: usize) -> &str {
        &self[route].path_prefix
    }
}

/// The [`folded`] prefixes.
impl Prefixes for [String] {
    fn prefix(&self, route: usize) -> &str {
        &self[route]
    }
}

impl RouteTable {
    /// Compiles the table; indices refer to `routes`. A prefix that [`folded`] refuses keeps
    /// its lower-cased form (config validation refuses such prefixes before they get here).
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let folded_prefixes: Vec<String> = routes
            .iter()
            .map(|r| folded(&r.path_prefix).unwrap_or_else(|_| r.path_prefix.to_ascii_lowercase()))
            .collect();
        let same = folded_prefixes
            .iter()
            .zip(routes)
            .all(|(f, r)| *f == r.path_prefix);
        let folded = (!same).then(|| {
            (
                Hosts::new(routes, folded_prefixes.as_slice()),
                folded_prefixes,
            )
        });
        RouteTable {
            plain: Hosts::new(routes, routes),
            folded,
        }
    }

    /// The route the path names as forwarded, with no other reading considered; traffic uses
    /// [`RouteTable::route`]. `host` is normalised by [`normalize_host`], `path` by
    /// [`crate::path::normalize`].
    pub fn find(
        &self,
        routes: &[RouteConfig],
        host: &str,
        path: &str,
        method: &Method,
    ) -> Option<usize> {
        self.plain.find(routes, routes, host, path, method)
    }

    /// The route under the case-insensitive reading of `path` (already [`folded`]).
    fn find_folded(
        &self,
        routes: &[RouteConfig],
        host: &str,
        path: &str,
        method: &Method,
    ) -> Option<usize> {
        match &self.folded {
            Some((hosts, prefixes)) => hosts.find(routes, prefixes.as_slice(), host, path, method),
            None => self.find(routes, host, path, method),
        }
    }

    /// The route for a request, the one decision traffic and `jwtgate explain` use: the route
    /// the path names as forwarded, provided every upstream reading of it names the same one.
    /// A plain lower-case path costs one lookup and no allocation; the other readings are
    /// computed only when the path holds what they rewrite (or, for the case-insensitive one,
    /// when some prefix has upper case, since then even a lower-case path reads differently).
    pub fn route(
        &self,
        routes: &[RouteConfig],
        host: &str,
        path: &str,
        method: &Method,
    ) -> Result<Option<usize>, AmbiguousPath> {
        let chosen = self.find(routes, host, path, method);
        let r = rewrites(path);
        let fold = r.fold || self.folded.is_some();
        if !r.params && !fold {
            return Ok(chosen);
        }
        let stripped = if r.params {
            let s = without_params(path)?;
            if self.find(routes, host, &s, method) != chosen {
                return Err(AmbiguousPath::PARAMS);
            }
            Some(s)
        } else {
            None
        };
        if fold {
            if self.find_folded(routes, host, &folded(path)?, method) != chosen {
                return Err(AmbiguousPath::FOLDED);
            }
            if let Some(s) = stripped {
                if self.find_folded(routes, host, &folded(&s)?, method) != chosen {
                    return Err(AmbiguousPath::BOTH);
                }
            }
        }
        Ok(chosen)
    }
}

/// Lower-cases a Host value, strips its port and one trailing dot, and writes an IPv6 literal
/// in its canonical bracketed form (`[0:0::1]:8443` is `[::1]`); route hosts are written the
/// same way, so both sides compare equal. `None` when it is not a plausible host: userinfo
/// (`a@b`), anything after `]` but a port (`[::1]evil.com`), an unbracketed IPv6 address or
/// several colons, a port that is not 0..=65535 in at most five digits, an empty label, or a
/// numeric last label that is not a dotted-quad IPv4 address (`127.1`, `0x7f.1`, `010.0.0.1`,
/// which resolvers read as other addresses).
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        if !after.is_empty() && !valid_port(after.strip_prefix(':')?) {
            return None;
        }
        return Some(Cow::Owned(format!("[{ip}]")));
    }
    let host = match raw.split_once(':') {
        Some((host, port)) if valid_port(port) => host,
        Some(_) => return None,
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        || host.split('.').any(str::is_empty)
    {
        return None;
    }
    // WHATWG URL: a host whose last label is a number is an IPv4 address, and one that does
    // not parse as the canonical dotted quad is refused rather than compared as a name.
    let last = host.rsplit('.').next().unwrap_or(host);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"));
    if numeric && host.parse::<Ipv4Addr>().is_err() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// An authority's port: empty (RFC 3986 allows `host:`) or 0..=65535 in at most five digits.
fn valid_port(port: &str) -> bool {
    port.is_empty()
        || (port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::{normalize_host, RouteTable};
    use crate::config::{Config, HostMatch};

    #[test]
    fn ten_thousand_distinct_wildcard_suffixes_build_and_route() {
        let text = "[listen]\naddr = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\n\
                    path_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"none\"\n";
        let config = Config::parse(std::path::Path::new("f.toml"), text)
            .unwrap_or_else(|e| panic!("config: {e}"));
        let template = &config.routes[0];
        let mut routes: Vec<_> = (0..10_000)
            .map(|i| {
                let mut r = template.clone();
                r.host = Some(HostMatch::Wildcard(format!(".t{i}.example.com")));
                r
            })
            .collect();
        // A shorter wildcard every tenant host also lies under: the longer one wins.
        let mut outer = template.clone();
        outer.host = Some(HostMatch::Wildcard(".example.com".to_owned()));
        routes.push(outer);
        let table = RouteTable::new(&routes);
        let get = http::Method::GET;
        let find = |host: &str| table.find(&routes, host, "/x", &get);
        assert_eq!(find("x.t9999.example.com"), Some(9999));
        assert_eq!(find("a.b.t42.example.com"), Some(42));
        assert_eq!(
            find("t42.example.com"),
            Some(10_000),
            "one label is needed before .t42"
        );
        assert_eq!(find("example.com"), None);
        assert_eq!(find("x.t10000.example.org"), None);
    }

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
        assert_eq!(
            normalize_host("example.com:").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(normalize_host("a b"), None);
        assert_eq!(normalize_host(""), None);
        assert_eq!(normalize_host("x:abc"), None);
    }

    #[test]
    fn ipv6_literals_are_canonical() {
        for raw in [
            "[::1]",
            "[::1]:80",
            "[0:0:0:0:0:0:0:1]:8443",
            "[::0001]",
            "[::1]:",
        ] {
            assert_eq!(normalize_host(raw).as_deref(), Some("[::1]"), "{raw}");
        }
        assert_eq!(
            normalize_host("[2001:DB8:0::1]").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(
            normalize_host("[::FFFF:127.0.0.1]:1").as_deref(),
            Some("[::ffff:127.0.0.1]")
        );
    }

    #[test]
    fn confusing_hosts_are_refused() {
        for raw in [
            "[::1]evil.com",
            "[::1]@x",
            "[::1]:80@x",
            "[::1",
            "[]",
            "[]:80",
            "[::1]]",
            "[::1]:99999",
            "[::1]:8a",
            "[::1%25eth0]",
            "[evil.com]",
            "::1",
            "::1:80",
            "2001:db8::1",
            "a@b",
            "user@example.com",
            "host:80:80",
            "host:65536",
            "host:000080",
            "host:-1",
            "host: 80",
            "example.com..",
            ".example.com",
            "a..b",
            ".",
            "127.1",
            "0x7f.0.0.1",
            "010.0.0.1",
            "127.0.0.01",
            "1.2.3.4.5",
            "x.0x10",
            "4294967295",
        ] {
            assert_eq!(normalize_host(raw), None, "{raw}");
        }
    }
}

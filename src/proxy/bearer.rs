//! Finding the bearer token of a request (RFC 6750 §2): the `Authorization` header, and the
//! query parameter or cookie a route names.
//!
//! Query and cookie names are compared as upstreams read them, so a name that an upstream
//! would take for the token is the token here too: percent-decoded (`+` as a space), ASCII
//! case-insensitive (ASP.NET), surrounding whitespace ignored, and `.`, ` ` and `[` read as `_`
//! (PHP). A name with an array suffix (`access_token[]`, `access_token[0]`, `access_token[x][y]`)
//! is the name before its first `[` too: PHP, Rack and Node's `qs` read it as that parameter.
//! A query name holding NUL (`access_token%00`) is refused: C-based parsers end the name there.
//! Query pairs are split on `;` as well as `&` (older Python, Go and Java servers), and
//! cookies on `,` as well as `;` (RFC 2965 servers). Cookie values may be quoted.

use std::borrow::Cow;

use http::header::{self, HeaderMap};
use percent_encoding::percent_decode;

use super::answer::ProxyError;
use crate::config::RouteConfig;

/// Where the token was found, so it can be removed before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    /// `Authorization: DPoP` (RFC 9449 §7.1): the token comes with a `DPoP` proof.
    DpopHeader,
    Query,
    Cookie,
}

/// The RFC 6750 §2.3 query parameter; its presence next to a header token is refused even on
/// routes that do not read it, since two credentials in one request is ambiguous.
const STANDARD_QUERY: &str = "access_token";

/// The request's token, if it sent one. Two tokens, in one place or in several, are a 400.
pub fn find<'r>(
    headers: &'r HeaderMap,
    query: Option<&'r str>,
    route: &RouteConfig,
) -> Result<Option<(Cow<'r, str>, Source)>, ProxyError> {
    let mut found: Option<(Cow<'r, str>, Source)> = None;
    let mut count = 0;
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(v) = auth.next() {
        if auth.next().is_some() {
            return Err(ProxyError::BadRequest(
                "the request has more than one Authorization header",
            ));
        }
        let v = v
            .to_str()
            .map_err(|_| ProxyError::BadRequest("the Authorization header is not ASCII"))?;
        if let Some((t, source)) = bearer(v) {
            found = Some((Cow::Borrowed(t), source));
            count += 1;
        }
    }
    if let Some(q) = query {
        let standard = decoded_name(STANDARD_QUERY);
        let param = route.token_query.as_deref().map(decoded_name);
        for (name, value) in query_pairs(q) {
            let name = decoded_name(name);
            if name.contains(&0) {
                return Err(ProxyError::BadRequest(
                    "a query parameter name holds a NUL byte, which servers read differently",
                ));
            }
            let is_param = param.as_ref().is_some_and(|p| reads_as(&name, p));
            if is_param || reads_as(&name, &standard) {
                count += 1;
                if is_param {
                    found = Some((decode(value, true), Source::Query));
                }
            }
        }
    }
    if let Some(cookie_name) = route.token_cookie.as_deref() {
        let want = decoded_name(cookie_name);
        for v in headers.get_all(header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for (name, value) in cookie_pairs(v) {
                if reads_as(&decoded_name(name), &want) {
                    count += 1;
                    found = Some((decode(unquote(value), false), Source::Cookie));
                }
            }
        }
    }
    if count > 1 {
        return Err(ProxyError::BadRequest(
            "the request carries more than one token (header, query or cookie): send exactly one",
        ));
    }
    Ok(found)
}

/// The token of an `Authorization: Bearer` or `Authorization: DPoP` value; `None` for another
/// scheme. The token is not checked here: a malformed one fails verification with a 401 that
/// says why.
fn bearer(v: &str) -> Option<(&str, Source)> {
    let v = v.trim_matches(' ');
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let source = if scheme.eq_ignore_ascii_case("bearer") {
        Source::Header
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Source::DpopHeader
    } else {
        return None;
    };
    Some((rest.trim_start_matches(' '), source))
}

/// A name decoded as upstreams decode it (see the module docs), `[` kept so that an array
/// suffix can still be seen. Borrowed in the common case: a name of lower-case letters,
/// digits, `-` and `_` is already decoded.
fn decoded_name(raw: &str) -> Cow<'_, [u8]> {
    let plain = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-');
    if raw.as_bytes().iter().all(plain) {
        return Cow::Borrowed(raw.as_bytes());
    }
    let spaced: Vec<u8> = raw
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    let decoded: Vec<u8> = percent_decode(&spaced).collect();
    Cow::Owned(
        decoded
            .trim_ascii()
            .iter()
            .map(|b| match b.to_ascii_lowercase() {
                b'.' | b' ' => b'_',
                other => other,
            })
            .collect(),
    )
}

/// True when a decoded name reads as `want` (a decoded configured name, which the config keeps
/// free of `[`) to some upstream: as a whole with
/// a lone `[` read as `_` (PHP), or by its part before the first `[` (an array suffix).
fn reads_as(decoded: &[u8], want: &[u8]) -> bool {
    let Some(i) = decoded.iter().position(|&b| b == b'[') else {
        return decoded == want;
    };
    decoded[..i] == *want
        || (decoded.len() == want.len()
            && decoded
                .iter()
                .zip(want)
                .all(|(&d, &w)| d == w || (d == b'[' && w == b'_')))
}

/// True when a query parameter or cookie name reads as `name` to an upstream.
pub fn same_name(raw: &str, name: &str) -> bool {
    reads_as(&decoded_name(raw), &decoded_name(name))
}

/// A percent-decoded value (`+` as a space for query values); invalid UTF-8 is kept lossily,
/// so the token fails verification rather than vanishing.
fn decode(v: &str, plus_is_space: bool) -> Cow<'_, str> {
    if !(v.contains('%') || (plus_is_space && v.contains('+'))) {
        return Cow::Borrowed(v);
    }
    let spaced: Cow<'_, str> = if plus_is_space {
        Cow::Owned(v.replace('+', " "))
    } else {
        Cow::Borrowed(v)
    };
    Cow::Owned(
        String::from_utf8_lossy(&percent_decode(spaced.as_bytes()).collect::<Vec<u8>>())
            .into_owned(),
    )
}

/// A cookie value without its surrounding double quotes (RFC 6265 §4.1.1 allows them; servers
/// drop them).
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// The `name=value` pairs of a query, split on `&` and `;`; a part without `=` is no pair.
fn query_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split(['&', ';']).filter_map(|p| p.split_once('='))
}

/// The `name=value` pairs of one `Cookie` field, split on `;` and `,`, names and values trimmed.
fn cookie_pairs(v: &str) -> impl Iterator<Item = (&str, &str)> {
    v.split([';', ','])
        .filter_map(|c| c.split_once('='))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// The query without the route's token parameter (every spelling of it); `None` when nothing
/// is left. The other pairs keep their separators.
pub fn query_without(query: &str, param: &str) -> Option<String> {
    let want = decoded_name(param);
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    let mut sep = "";
    loop {
        let (part, next, next_sep) = match rest.find(['&', ';']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..]), &rest[i..=i]),
            None => (rest, None, ""),
        };
        let name = part.split_once('=').map_or(part, |(n, _)| n);
        if !reads_as(&decoded_name(name), &want) {
            if !out.is_empty() {
                out.push_str(sep);
            }
            out.push_str(part);
        }
        match next {
            Some(n) => {
                rest = n;
                sep = next_sep;
            }
            None => break,
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_upstreams_read_them() {
        for raw in [
            "access_token",
            "acc%65ss_token",
            "access%5Ftoken",
            "ACCESS_TOKEN",
            "Access_Token",
            "access.token",
            "access+token",
            "access%20token",
            " access_token ",
            "access_token%20",
            "%61ccess_token",
            "access[token",
            "access_token%5b0%5d",
            "ACCESS.TOKEN[]",
            "access_token[",
        ] {
            assert!(same_name(raw, "access_token"), "{raw}");
        }
        for raw in [
            "access_tokens",
            "access-token",
            "accesstoken",
            "access_token2",
            "access[token]",
            "access_tokens[]",
            "[access_token]",
            "x[access_token]",
        ] {
            assert!(!same_name(raw, "access_token"), "{raw}");
        }
    }

    #[test]
    fn query_without_removes_every_spelling_and_keeps_separators() {
        assert_eq!(
            query_without("a=1&acc%65ss_token=x;b=2", "access_token").as_deref(),
            Some("a=1;b=2")
        );
        assert_eq!(query_without("ACCESS_TOKEN=x", "access_token"), None);
        assert_eq!(
            query_without("access_token[]=x&a=1&access_token%5B0%5D=y", "access_token").as_deref(),
            Some("a=1")
        );
        assert_eq!(
            query_without("a=1&b&c=3", "access_token").as_deref(),
            Some("a=1&b&c=3")
        );
    }

    #[test]
    fn cookie_values_are_unquoted_and_trimmed() {
        let pairs: Vec<_> = cookie_pairs(r#"a=1; access_token = "x" , b=2"#).collect();
        assert_eq!(pairs, [("a", "1"), ("access_token", "\"x\""), ("b", "2")]);
        assert_eq!(unquote("\"x\""), "x");
        assert_eq!(decode("a%2Eb", false), "a.b");
        assert_eq!(decode("a+b", true), "a b");
    }
}

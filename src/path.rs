//! Request-path normalisation.
//!
//! Routes are matched against the normalised path and the same normalised path is what is
//! forwarded upstream, so the gateway and the upstream can never disagree about which
//! resource a request names. Anything that different upstreams could resolve differently
//! (dot segments glued to encoded slashes or backslashes, `..;` path parameters) is refused
//! rather than guessed at.

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (absolute-form, authority-form, `*`, or empty).
    #[error("the request path must start with '/'")]
    NotOriginForm,
    /// A NUL or other control byte appears, raw or percent-encoded.
    #[error("the path contains a control character (raw or percent-encoded such as %00 or %0A)")]
    ControlCharacter,
    /// A `%` is not followed by two hex digits.
    #[error("the path has a '%' not followed by two hex digits")]
    BadPercentEncoding,
    /// A `.` or `..` segment that some upstream would resolve and the gateway does not.
    #[error(
        "the path has a '.' or '..' segment next to an encoded slash, a backslash or a ';' parameter, or a segment of only dots and spaces"
    )]
    AmbiguousSegment,
    /// A raw byte >= 0x80: a request target is ASCII (RFC 9112 §3.2); non-ASCII is
    /// percent-encoded.
    #[error("the path contains a raw non-ASCII byte; percent-encode it as UTF-8")]
    NonAscii,
    /// Percent-encoded bytes that are not UTF-8: overlong forms such as `%C0%AF` (a `/` to
    /// decoders that accept them), surrogates, stray or missing continuation bytes.
    #[error("the path has percent-encoded bytes that are not valid UTF-8 (overlong, truncated or stray)")]
    InvalidUtf8,
}

/// Normalises a raw request path (no query string; it starts at the first '/').
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotOriginForm)?;
    // Normalisation only ever shrinks the path (escapes decode to one byte or keep their
    // three), so one allocation of the raw length is enough.
    let mut out = String::with_capacity(raw.len());
    out.push('/');

    // Invariant between iterations: `out` starts and ends with '/'. Decoding happens per
    // segment straight into `out`, so slash merging and dot-segment removal are done in the
    // same pass, with `out` itself serving as the RFC 3986 §5.2.4 output buffer.
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        let start = out.len();
        decode_segment(segment, &mut out)?;
        // Classify on the decoded text so that `%2e%2e` is a dot segment just like `..`.
        match classify(&out.as_bytes()[start..]) {
            // An empty segment is a repeated slash (merged) or the trailing slash (kept,
            // because `out` already ends with '/').
            Segment::Empty => {}
            // Truncating leaves the preceding '/', which is the trailing slash RFC 3986
            // keeps when the path ends in a dot segment.
            Segment::Dot => out.truncate(start),
            Segment::DotDot => {
                out.truncate(start);
                pop_segment(&mut out);
            }
            Segment::Name => {
                if !is_last {
                    out.push('/');
                }
            }
        }
    }

    // Checked on the result rather than per segment, so a segment later removed by a `..`
    // does not cause a refusal (matching the order of the rules).
    if has_ambiguous_component(out.as_bytes()) {
        return Err(PathError::AmbiguousSegment);
    }
    Ok(out)
}

/// True when `path` (already normalised) lies under `prefix` (already normalised), segment-aware.
#[must_use]
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    // `%2F`, `%5C` and `\` are read as `/` here: some upstreams (Go, IIS, Tomcat with encoded
    // slashes allowed) decode them into separators, so `/admin%2Fx` must be as protected as
    // `/admin/x`. Matching can only get stricter this way, never looser.
    let (p, pre) = (path.as_bytes(), prefix.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut ended_on_separator = false;
    while j < pre.len() {
        if separator_len(&pre[j..]) > 0 {
            // A run of separators is one boundary on both sides (`/%2Fadmin` is `/admin` to
            // nginx and IIS), so a prefix always lies under itself.
            if separator_len(&p[i..]) == 0 {
                return false;
            }
            j = skip_separators(pre, j);
            i = skip_separators(p, i);
            ended_on_separator = true;
        } else if p.get(i) == Some(&pre[j]) {
            i += 1;
            j += 1;
            ended_on_separator = false;
        } else {
            return false;
        }
    }
    if ended_on_separator {
        return true;
    }
    // ';' counts as a boundary because some upstreams (Tomcat) strip `;params`, so treating
    // `/admin;x=1` as under `/admin` errs towards the stricter route.
    let rest = &p[i..];
    rest.is_empty() || rest[0] == b';' || separator_len(rest) > 0
}

/// The segments of `path` between separator runs, as [`has_prefix`] reads them, each with the
/// rest of the path after it (empty, or starting with a separator).
pub fn segments(path: &str) -> impl Iterator<Item = (&str, &str)> {
    let b = path.as_bytes();
    let mut k = 0;
    std::iter::from_fn(move || {
        k = skip_separators(b, k);
        if k >= b.len() {
            return None;
        }
        let start = k;
        while k < b.len() && separator_len(&b[k..]) == 0 {
            k += 1;
        }
        // Separators are ASCII, so `start` and `k` are character boundaries.
        Some((&path[start..k], &path[k..]))
    })
}

/// A path that common upstreams would route differently from the gateway; the message is the
/// whole answer text (`the request path is ambiguous: ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AmbiguousPath(pub &'static str);

impl AmbiguousPath {
    /// Read without its `;` parameters, the path names another route.
    pub const PARAMS: AmbiguousPath = AmbiguousPath(
        "the request path is ambiguous: without its ';' parameters (as Tomcat, Jetty and Spring read it) it names another route",
    );
    /// Read as a case-insensitive Windows server does, the path names another route.
    pub const FOLDED: AmbiguousPath = AmbiguousPath(
        "the request path is ambiguous: read case-insensitively, without trailing dots or spaces and NTFS ':' streams (as IIS and Windows read it), it names another route",
    );
    /// Both rewrites together name another route.
    pub const BOTH: AmbiguousPath = AmbiguousPath(
        "the request path is ambiguous: without its ';' parameters and read case-insensitively, it names another route",
    );
    /// A `;` parameter holds a separator that servers disagree about.
    pub const PARAM_SEPARATOR: AmbiguousPath = AmbiguousPath(
        "the request path is ambiguous: a ';' parameter holds an encoded slash or a backslash",
    );
    /// A segment reads as `.` or `..` once fullwidth forms or NTFS streams are read.
    pub const DOTS: AmbiguousPath = AmbiguousPath(
        "the request path is ambiguous: a segment is only dots and spaces once fullwidth characters and ':' streams are read as Windows does",
    );

    /// The answer text.
    pub fn message(self) -> &'static str {
        self.0
    }
}

/// Which upstream readings of a normalised path may differ from the path as forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// A `;` or `%3B`: Tomcat, Jetty and Spring drop `;params` from every segment.
    pub params: bool,
    /// An ASCII upper-case letter, a name ending in `.` or `%20`, a `:` or `%3A`, or `%EF`
    /// (fullwidth forms): a case-insensitive Windows server may read another name.
    pub fold: bool,
}

/// One pass over a normalised path (upper-case escapes) telling which readings
/// [`without_params`] and [`folded`] could change; neither is needed for a plain lowercase
/// path, which is most traffic.
#[must_use]
pub fn rewrites(path: &str) -> Rewrites {
    let b = path.as_bytes();
    let mut r = Rewrites::default();
    let mut k = 0;
    while let Some(&c) = b.get(k) {
        match c {
            b';' => r.params = true,
            b':' | b'A'..=b'Z' => r.fold = true,
            b'.' if ends_name(&b[k + 1..]) => r.fold = true,
            b'%' => {
                // The escape's own hex digits are upper case and are not letters of the name.
                match b.get(k + 1..k + 3) {
                    Some(b"3B") => r.params = true,
                    Some(b"3A" | b"EF") => r.fold = true,
                    Some(b"20") if ends_name(b.get(k + 3..).unwrap_or_default()) => r.fold = true,
                    _ => {}
                }
                k += 3;
                continue;
            }
            _ => {}
        }
        k += 1;
    }
    r
}

/// True when `rest` starts where a segment's name ends: the end, a separator or a parameter.
fn ends_name(rest: &[u8]) -> bool {
    rest.is_empty() || separator_len(rest) > 0 || rest[0] == b';' || rest.starts_with(b"%3B")
}

/// The path as Tomcat, Jetty and Spring read it: every `;param` (raw, or `%3B` as Spring
/// decodes it) removed up to the next `/`. Refused when a removed parameter holds `\`, `%2F`
/// or `%5C`, since servers disagree about whether those end it.
pub fn without_params(path: &str) -> Result<String, AmbiguousPath> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let (mut k, mut run) = (0, 0);
    while k < b.len() {
        if b[k] != b';' && !b[k..].starts_with(b"%3B") {
            k += 1;
            continue;
        }
        out.push_str(&path[run..k]);
        let end = b[k..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(b.len(), |e| k + e);
        let param = &b[k..end];
        if param.contains(&b'\\') || param.windows(3).any(|w| w == b"%2F" || w == b"%5C") {
            return Err(AmbiguousPath::PARAM_SEPARATOR);
        }
        // Separators and escapes are ASCII, so `end` is a character boundary.
        (k, run) = (end, end);
    }
    out.push_str(&path[run..]);
    Ok(out)
}

/// The path as a case-insensitive Windows server (IIS) reads it: fullwidth forms
/// (`%EF%BC%81`..`%EF%BD%9E`) as the ASCII they best-fit to, ASCII case folded (escapes
/// included), each segment cut at an NTFS stream (`:` or `%3A`: `orders::$DATA` is `orders`)
/// and stripped of trailing dots and spaces (`%20`); every separator becomes `/`. Applied
/// alike to paths and to route prefixes. Refused when a segment is then only dots and spaces
/// (`%EF%BC%8E%EF%BC%8E` is `..`).
pub fn folded(path: &str) -> Result<String, AmbiguousPath> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut seg = FoldedSegment::default();
    let mut k = 0;
    while k < b.len() {
        // A fullwidth form stands for its ASCII character, a separator for itself.
        let (c, len) = match fullwidth(&b[k..]) {
            Some(c) => (c, 9),
            None => match separator_len(&b[k..]) {
                0 => (b[k], 1),
                n => (b'/', n),
            },
        };
        if c == b'/' || c == b'\\' {
            seg.finish(&mut out)?;
            out.push('/');
            seg = FoldedSegment {
                start: out.len(),
                cut: None,
            };
        } else {
            if c == b':' || b[k..].starts_with(b"%3A") {
                seg.cut.get_or_insert(out.len());
            }
            out.push(char::from(c.to_ascii_lowercase()));
        }
        k += len;
    }
    seg.finish(&mut out)?;
    Ok(out)
}

/// True when [`folded`] changes no more than ASCII case and the spelling of separators. A
/// route prefix must be so: one with a trailing dot or space, a `:` or a fullwidth form in a
/// segment could only match ambiguously.
#[must_use]
pub fn folds_to_case_only(prefix: &str) -> bool {
    let Ok(f) = folded(prefix) else {
        return false;
    };
    let b = prefix.as_bytes();
    let mut lower = String::with_capacity(prefix.len());
    let mut k = 0;
    while let Some(&c) = b.get(k) {
        match separator_len(&b[k..]) {
            0 => {
                lower.push(char::from(c.to_ascii_lowercase()));
                k += 1;
            }
            n => {
                lower.push('/');
                k += n;
            }
        }
    }
    f == lower
}

/// The segment [`folded`] is writing: where it starts in the output and where an NTFS stream
/// name begins in it.
#[derive(Default)]
struct FoldedSegment {
    start: usize,
    cut: Option<usize>,
}

impl FoldedSegment {
    /// Cuts the stream name, refuses a name of dots and spaces, strips trailing ones.
    fn finish(&self, out: &mut String) -> Result<(), AmbiguousPath> {
        if let Some(cut) = self.cut {
            out.truncate(cut);
        }
        if is_dot_component(&out.as_bytes()[self.start..]) {
            return Err(AmbiguousPath::DOTS);
        }
        loop {
            if out.len() > self.start && out.ends_with('.') {
                out.pop();
            } else if out.len() >= self.start + 3 && out.ends_with("%20") {
                out.truncate(out.len() - 3);
            } else {
                return Ok(());
            }
        }
    }
}

/// The ASCII character a percent-encoded fullwidth form (U+FF01..U+FF5E) at the start of `p`
/// stands for.
fn fullwidth(p: &[u8]) -> Option<u8> {
    let [b'%', b'E', b'F', b'%', b'B', m, b'%', h, l, ..] = *p else {
        return None;
    };
    let second = 0xB0 | hex_value(m)?;
    let third = (hex_value(h)? << 4) | hex_value(l)?;
    let cp = 0xF000 | (u32::from(second & 0x3F) << 6) | u32::from(third & 0x3F);
    if (0xFF01..=0xFF5E).contains(&cp) && (0x80..=0xBF).contains(&third) {
        u8::try_from(cp - 0xFEE0).ok()
    } else {
        None
    }
}

/// The index after the run of separators starting at `k` (`k` itself when there is none).
fn skip_separators(b: &[u8], mut k: usize) -> usize {
    loop {
        let n = separator_len(&b[k..]);
        if n == 0 {
            return k;
        }
        k += n;
    }
}

/// The length of a separator at the start of `p`: `/`, `\`, `%2F` or `%5C` (any case).
fn separator_len(p: &[u8]) -> usize {
    match p {
        [b'/' | b'\\', ..] => 1,
        [b'%', b'2', b'F' | b'f', ..] | [b'%', b'5', b'C' | b'c', ..] => 3,
        _ => 0,
    }
}

enum Segment {
    Empty,
    Dot,
    DotDot,
    Name,
}

fn classify(segment: &[u8]) -> Segment {
    match segment {
        b"" => Segment::Empty,
        b"." => Segment::Dot,
        b".." => Segment::DotDot,
        _ => Segment::Name,
    }
}

/// Removes the last segment of `out`, which ends with '/'; at the root there is nothing to
/// remove (`/..` is `/`).
fn pop_segment(out: &mut String) {
    let without_slash = out.len().saturating_sub(1);
    // Searching bytes for the ASCII '/' keeps the truncation on a char boundary.
    if let Some(slash) = out.as_bytes()[..without_slash]
        .iter()
        .rposition(|&b| b == b'/')
    {
        out.truncate(slash + 1);
    }
}

/// Appends `segment` to `out`, decoding escapes of unreserved characters and upper-casing
/// the hex digits of every escape kept.
fn decode_segment(segment: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = segment.as_bytes();
    // Unescaped bytes are copied in runs; run boundaries are always at ASCII bytes ('%' or
    // just past an escape), so slicing the str there cannot split a character.
    let mut run_start = 0;
    let mut i = 0;
    // Escaped bytes >= 0x80 must spell UTF-8: the continuation bytes still expected, and the
    // range the next one must fall in (RFC 3629 §4, which excludes overlong forms).
    let mut utf8 = Utf8::default();
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            if is_control(b) {
                return Err(PathError::ControlCharacter);
            }
            if !b.is_ascii() {
                return Err(PathError::NonAscii);
            }
            if utf8.pending > 0 {
                return Err(PathError::InvalidUtf8);
            }
            i += 1;
            continue;
        }
        out.push_str(&segment[run_start..i]);
        let hi = bytes.get(i + 1).copied().and_then(hex_value);
        let lo = bytes.get(i + 2).copied().and_then(hex_value);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::BadPercentEncoding);
        };
        let value = (hi << 4) | lo;
        if is_control(value) {
            return Err(PathError::ControlCharacter);
        }
        utf8.push(value)?;
        if is_unreserved(value) {
            out.push(char::from(value));
        } else {
            // Only unreserved escapes are decoded, and never twice: `%252e` stays `%252e`,
            // `%2f` becomes `%2F` and is never a separator.
            out.push('%');
            out.push(upper_hex(hi));
            out.push(upper_hex(lo));
        }
        i += 3;
        run_start = i;
    }
    if utf8.pending > 0 {
        return Err(PathError::InvalidUtf8);
    }
    out.push_str(&segment[run_start..]);
    Ok(())
}

/// Where a run of percent-encoded bytes stands in a UTF-8 sequence.
#[derive(Default)]
struct Utf8 {
    /// Continuation bytes still expected.
    pending: u8,
    /// The inclusive range the next continuation byte must fall in.
    next: (u8, u8),
}

impl Utf8 {
    /// Takes one decoded byte.
    fn push(&mut self, b: u8) -> Result<(), PathError> {
        if self.pending > 0 {
            if !(self.next.0..=self.next.1).contains(&b) {
                return Err(PathError::InvalidUtf8);
            }
            self.pending -= 1;
            self.next = (0x80, 0xBF);
            return Ok(());
        }
        // RFC 3629 §4: the lead byte fixes the length and the range of the second byte.
        (self.pending, self.next) = match b {
            0x00..=0x7F => return Ok(()),
            0xC2..=0xDF => (1, (0x80, 0xBF)),
            0xE0 => (2, (0xA0, 0xBF)),
            0xE1..=0xEC | 0xEE..=0xEF => (2, (0x80, 0xBF)),
            0xED => (2, (0x80, 0x9F)),
            0xF0 => (3, (0x90, 0xBF)),
            0xF1..=0xF3 => (3, (0x80, 0xBF)),
            0xF4 => (3, (0x80, 0x8F)),
            // Stray continuation bytes, the overlong leads C0 and C1, and F5..FF.
            _ => return Err(PathError::InvalidUtf8),
        };
        Ok(())
    }
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn upper_hex(nibble: u8) -> char {
    match nibble {
        0..=9 => char::from(b'0' + nibble),
        _ => char::from(b'A' + (nibble - 10)),
    }
}

/// True when a component between `/`, `\`, `%2F` or `%5C` reads as `.` or `..` to some
/// upstream (see [`is_dot_component`]; Tomcat resolves `..;x` as `..`).
fn has_ambiguous_component(path: &[u8]) -> bool {
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        // Only upper-case escapes need matching: `normalize` upper-cased every kept escape.
        let separator_len = match b {
            b'/' | b'\\' => 1,
            b'%' if matches!(
                (path.get(i + 1), path.get(i + 2)),
                (Some(b'2'), Some(b'F')) | (Some(b'5'), Some(b'C'))
            ) =>
            {
                3
            }
            _ => {
                i += 1;
                continue;
            }
        };
        if is_dot_component(&path[start..i]) {
            return true;
        }
        i += separator_len;
        start = i;
    }
    is_dot_component(path.get(start..).unwrap_or_default())
}

/// True for a component that some upstream reads as `.` or `..`: after dropping `;params`
/// (raw, or `%3B` as Spring decodes it), a name made only of dots and spaces (`%20`) with at
/// least one dot, since Windows drops trailing dots and spaces (`..%20` is `..` to IIS).
fn is_dot_component(component: &[u8]) -> bool {
    let mut dots = 0;
    let mut k = 0;
    while let Some(&b) = component.get(k) {
        match b {
            b';' => break,
            b'.' => {
                dots += 1;
                k += 1;
            }
            b'%' if component[k..].starts_with(b"%3B") => break,
            b'%' if component[k..].starts_with(b"%20") => k += 3,
            _ => return false,
        }
    }
    dots > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        match normalize(raw) {
            Ok(path) => path,
            Err(err) => panic!("normalize({raw:?}) failed: {err}"),
        }
    }

    fn err(raw: &str) -> PathError {
        match normalize(raw) {
            Ok(path) => panic!("normalize({raw:?}) accepted as {path:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn requires_origin_form() {
        assert_eq!(err(""), PathError::NotOriginForm);
        assert_eq!(err("admin"), PathError::NotOriginForm);
        assert_eq!(err("*"), PathError::NotOriginForm);
        assert_eq!(err("http://example.com/admin"), PathError::NotOriginForm);
        assert_eq!(err("%2Fadmin"), PathError::NotOriginForm);
        assert_eq!(err("\\admin"), PathError::NotOriginForm);
        assert_eq!(ok("/"), "/");
    }

    #[test]
    fn rejects_raw_control_characters() {
        for raw in ["/a\0b", "/a\nb", "/a\rb", "/\t", "/a\u{7f}", "/\u{1f}x"] {
            assert_eq!(err(raw), PathError::ControlCharacter, "{raw:?}");
        }
    }

    #[test]
    fn rejects_encoded_control_characters() {
        for raw in [
            "/%00", "/a%0a", "/a%0A", "/a%0D", "/a%0d/b", "/%1F", "/%1f", "/%7F", "/%7f",
        ] {
            assert_eq!(err(raw), PathError::ControlCharacter, "{raw:?}");
        }
    }

    #[test]
    fn control_characters_in_removed_segments_are_still_rejected() {
        assert_eq!(err("/a%00/../b"), PathError::ControlCharacter);
        assert_eq!(err("/a\n/../b"), PathError::ControlCharacter);
    }

    #[test]
    fn rejects_bad_percent_encoding() {
        for raw in [
            "/%zz", "/%4", "/%", "/a%", "/a%/b", "/%4/b", "/%g0", "/%0g", "/%%41", "/%é1",
        ] {
            assert_eq!(err(raw), PathError::BadPercentEncoding, "{raw:?}");
        }
        assert_eq!(err("/a%zz/../b"), PathError::BadPercentEncoding);
    }

    #[test]
    fn decodes_unreserved_escapes() {
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/%41%5a%30%39"), "/AZ09");
        assert_eq!(ok("/%2d%2E%5f%7e"), "/-._~");
        assert_eq!(ok("/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/%2E%2E/admin"), "/admin");
        assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/public/.%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2e/admin"), "/public/admin");
    }

    #[test]
    fn keeps_reserved_escapes_upper_cased() {
        assert_eq!(ok("/a%2fb"), "/a%2Fb");
        assert_eq!(ok("/a%2Fb"), "/a%2Fb");
        assert_eq!(ok("/a%5cb"), "/a%5Cb");
        assert_eq!(ok("/%c3%a9"), "/%C3%A9");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%3bb"), "/a%3Bb");
        assert_eq!(ok("/%3F%23"), "/%3F%23");
        assert_eq!(ok("/%25"), "/%25");
    }

    #[test]
    fn never_decodes_twice() {
        assert_eq!(ok("/%252e%252e/x"), "/%252e%252e/x");
        assert_eq!(ok("/%252E%252E/x"), "/%252E%252E/x");
        assert_eq!(ok("/%252f"), "/%252f");
        assert_eq!(ok("/%2561dmin"), "/%2561dmin");
        assert_eq!(ok("/a/%25%32%65"), "/a/%252e");
        assert_eq!(ok("/100%25"), "/100%25");
    }

    #[test]
    fn merges_slashes() {
        assert_eq!(ok("//admin"), "/admin");
        assert_eq!(ok("//a///b"), "/a/b");
        assert_eq!(ok("/a//"), "/a/");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("///"), "/");
        assert_eq!(ok("/a/b/"), "/a/b/");
    }

    #[test]
    fn removes_dot_segments() {
        assert_eq!(ok("/a/./b/../c"), "/a/c");
        assert_eq!(ok("/public/../admin"), "/admin");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/.."), "/");
        assert_eq!(ok("/../.."), "/");
        assert_eq!(ok("/../a"), "/a");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/../"), "/a/");
        assert_eq!(ok("/a/b/../.."), "/");
        assert_eq!(ok("/a/b/../../../c"), "/c");
        assert_eq!(ok("/a//../b"), "/b");
        assert_eq!(ok("/a/.//b"), "/a/b");
        assert_eq!(ok("/a/.b/c."), "/a/.b/c.");
        // RFC 3986 §5.4.1 examples, reduced to their paths.
        assert_eq!(ok("/b/c/./../../g"), "/g");
        assert_eq!(ok("/b/c/g;x=1/./y"), "/b/c/g;x=1/y");
        assert_eq!(ok("/b/c/g;x=1/../y"), "/b/c/y");
    }

    #[test]
    fn rejects_dots_next_to_encoded_slashes_or_backslashes() {
        for raw in [
            "/public/..%2fadmin",
            "/public/..%2Fadmin",
            "/public/%2e%2e%2fadmin",
            "/public/..%5cadmin",
            "/public/..%5Cadmin",
            "/public/..\\admin",
            "/a\\..\\b",
            "/a\\.\\b",
            "/a%2F.%2Fb",
            "/a%2F..",
            "/..%2F",
            "/%2F..",
            "/..\\",
            "/\\..",
            "/a/b\\..",
        ] {
            assert_eq!(err(raw), PathError::AmbiguousSegment, "{raw:?}");
        }
    }

    #[test]
    fn rejects_dots_with_path_parameters() {
        for raw in [
            "/public/..;/admin",
            "/public/..;x=1/admin",
            "/a/.;/b",
            "/..;",
            "/a/%2e%2e;/b",
        ] {
            assert_eq!(err(raw), PathError::AmbiguousSegment, "{raw:?}");
        }
        assert_eq!(ok("/a/..x;/b"), "/a/..x;/b");
        assert_eq!(ok("/a/;../b"), "/a/;../b");
    }

    #[test]
    fn ambiguity_is_judged_after_dot_removal() {
        assert_eq!(ok("/a/..%2Fx/../b"), "/a/b");
    }

    #[test]
    fn encoded_slash_is_not_a_separator() {
        assert_eq!(ok("/a%2Fb"), "/a%2Fb");
        assert_eq!(ok("/a%2Fb/../c"), "/c");
        assert_eq!(ok("/a\\b"), "/a\\b");
        assert_eq!(ok("/..a%2F.b"), "/..a%2F.b");
    }

    #[test]
    fn passes_other_characters_through() {
        assert_eq!(
            ok("/a;b=c/d+e:f@g!h$i&j'k(l)m*n,o=p"),
            "/a;b=c/d+e:f@g!h$i&j'k(l)m*n,o=p"
        );
        assert_eq!(ok("/admin;jsessionid=1"), "/admin;jsessionid=1");
    }

    #[test]
    fn refuses_raw_non_ascii() {
        for raw in [
            "/café",
            "/ünï/x",
            "/日本",
            "/🦀",
            "/a/\u{80}",
            "/\u{10ffff}/..",
        ] {
            assert_eq!(err(raw), PathError::NonAscii, "{raw:?}");
        }
        // Percent-encoded UTF-8 is the way to send it.
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(
            ok("/%E6%97%A5%E6%9C%AC/%F0%9F%A6%80"),
            "/%E6%97%A5%E6%9C%AC/%F0%9F%A6%80"
        );
    }

    #[test]
    fn refuses_percent_encoded_bytes_that_are_not_utf8() {
        for raw in [
            "/%C0%AF",         // overlong '/'
            "/%C0%AE%C0%AE/x", // overlong '..'
            "/%E0%80%AF",      // overlong '/', three bytes
            "/%F0%80%80%AF",   // overlong '/', four bytes
            "/%C1%9C",         // overlong '\\'
            "/%ED%A0%80",      // a surrogate
            "/%F4%90%80%80",   // above U+10FFFF
            "/%F5%80%80%80",
            "/%FF",
            "/%80",     // a stray continuation byte
            "/%C3",     // truncated
            "/%C3/%A9", // split by a separator
            "/%C3a",    // interrupted by a character
            "/%E6%97",
        ] {
            assert_eq!(err(raw), PathError::InvalidUtf8, "{raw:?}");
        }
    }

    #[test]
    fn refuses_segments_of_dots_and_spaces() {
        for raw in [
            "/a/.../b",
            "/a/..%20/b",
            "/public/..%20/admin",
            "/a/.%20/b",
            "/a/%20../b",
            "/a/.%20.%20",
            "/a/..%3B/b",
            "/a/..%3bx/b",
            "/a/.%3B",
        ] {
            assert_eq!(err(raw), PathError::AmbiguousSegment, "{raw:?}");
        }
        assert_eq!(ok("/a/%20/b"), "/a/%20/b");
        assert_eq!(ok("/a/b./c"), "/a/b./c");
        assert_eq!(ok("/a/.b%20/c"), "/a/.b%20/c");
    }

    #[test]
    fn u_encoding_is_bad_percent_encoding() {
        for raw in ["/%u0061dmin", "/%U002e%u002e/x", "/%uFF0F"] {
            assert_eq!(err(raw), PathError::BadPercentEncoding, "{raw:?}");
        }
    }

    #[test]
    fn rewrites_flags_only_what_can_change() {
        let none = Rewrites::default();
        for p in [
            "/",
            "/api/orders/1",
            "/a-b_c~d/%C3%A9/%2F/x.y/%20x",
            "/v1.2/x",
        ] {
            assert_eq!(rewrites(p), none, "{p}");
        }
        for p in ["/api;x/orders", "/api%3Bx", "/x;"] {
            assert!(rewrites(p).params, "{p}");
        }
        for p in [
            "/API",
            "/a/B",
            "/api./x",
            "/api%20/x",
            "/api.",
            "/a:b",
            "/a%3Ab",
            "/%EF%BC%A1",
            "/api.;x",
        ] {
            assert!(rewrites(p).fold, "{p}");
        }
    }

    #[test]
    fn without_params_drops_every_segment_parameter() {
        let ok = |p: &str| without_params(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(ok("/api;x/orders/1"), "/api/orders/1");
        assert_eq!(ok("/api;/orders"), "/api/orders");
        assert_eq!(ok("/;x/api/orders"), "//api/orders");
        assert_eq!(ok("/api;a;b/orders"), "/api/orders");
        assert_eq!(ok("/api%3Bx/orders"), "/api/orders");
        assert_eq!(ok("/a;x/b;y/c;z"), "/a/b/c");
        assert_eq!(ok("/a/b;jsessionid=1"), "/a/b");
        assert_eq!(
            without_params("/a;x%2Fb/c"),
            Err(AmbiguousPath::PARAM_SEPARATOR)
        );
        assert_eq!(
            without_params("/a;x\\b/c"),
            Err(AmbiguousPath::PARAM_SEPARATOR)
        );
        assert_eq!(
            without_params("/a;%5C/c"),
            Err(AmbiguousPath::PARAM_SEPARATOR)
        );
    }

    #[test]
    fn folded_reads_as_windows_does() {
        let ok = |p: &str| folded(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(ok("/API/Orders"), "/api/orders");
        assert_eq!(ok("/api./orders"), "/api/orders");
        assert_eq!(ok("/api%20/orders"), "/api/orders");
        assert_eq!(ok("/api.%20./orders"), "/api/orders");
        assert_eq!(ok("/api/orders::$DATA"), "/api/orders");
        assert_eq!(ok("/api/orders:x.txt"), "/api/orders");
        assert_eq!(ok("/api%3A%3A$DATA/x"), "/api/x");
        assert_eq!(ok("/%EF%BC%A1PI/orders"), "/api/orders");
        assert_eq!(ok("/api%EF%BC%8Forders"), "/api/orders");
        assert_eq!(ok("/a\\b%2Fc%5Cd"), "/a/b/c/d");
        assert_eq!(ok("/%C3%A9"), "/%c3%a9");
        assert_eq!(folded("/a/%EF%BC%8E%EF%BC%8E/b"), Err(AmbiguousPath::DOTS));
        assert_eq!(folded("/a/..::$DATA/b"), Err(AmbiguousPath::DOTS));
        assert!(folds_to_case_only("/API/Orders"));
        assert!(folds_to_case_only("/api/%2Fx"));
        assert!(!folds_to_case_only("/api."));
        assert!(!folds_to_case_only("/api%20/x"));
        assert!(!folds_to_case_only("/v1/x:run"));
        assert!(!folds_to_case_only("/%EF%BC%A1"));
    }

    #[test]
    fn has_prefix_root_matches_everything() {
        assert!(has_prefix("/", "/"));
        assert!(has_prefix("/anything/at/all", "/"));
    }

    #[test]
    fn has_prefix_is_segment_aware() {
        assert!(has_prefix("/api/orders", "/api/orders"));
        assert!(has_prefix("/api/orders/", "/api/orders"));
        assert!(has_prefix("/api/orders/7", "/api/orders"));
        assert!(has_prefix("/api/orders;x=1", "/api/orders"));
        assert!(has_prefix("/admin;x=1", "/admin"));
        assert!(!has_prefix("/api/ordersX", "/api/orders"));
        assert!(!has_prefix("/api/order", "/api/orders"));
        assert!(!has_prefix("/api", "/api/orders"));
        // Encoded slashes and backslashes separate segments for matching.
        assert!(has_prefix("/api%2Forders", "/api"));
        assert!(has_prefix("/api%2Forders", "/api/orders"));
        assert!(has_prefix("/api\\orders\\1", "/api/orders"));
        assert!(has_prefix("/api%5corders", "/api/orders"));
        assert!(!has_prefix("/api%2Fordersx", "/api/orders"));
        assert!(!has_prefix("/API", "/api"));
    }

    #[test]
    fn has_prefix_with_trailing_slash() {
        assert!(has_prefix("/api/", "/api/"));
        assert!(has_prefix("/api/orders", "/api/"));
        assert!(!has_prefix("/api", "/api/"));
        assert!(!has_prefix("/apix/", "/api/"));
    }

    #[test]
    fn has_prefix_on_encoded_unicode() {
        let p = "/%E6%97%A5%E6%9C%AC";
        assert!(has_prefix(&format!("{p}/x"), p));
        assert!(!has_prefix(&format!("{p}%E8%AA%9E"), p));
        assert!(!has_prefix("/%E6%97%A5", p));
    }

    const TRICKY: &[&str] = &[
        "",
        "/",
        "//",
        "/.",
        "/..",
        "/...",
        "/%",
        "/%2",
        "/%2e",
        "/%2E%2e",
        "/%2e%2e%2f",
        "/%2f%2e%2e",
        "/%5c..",
        "/..%5c",
        "/%252e",
        "/%25%32%65",
        "/a/b/c/../../..",
        "/a/b/c/../../../..",
        "/./././",
        "/.;/",
        "/..;/..;/",
        "/;/;/",
        "/\\",
        "/\\\\..",
        "/é%",
        "/é%e",
        "/%é",
        "/%%",
        "/%00",
        "/\u{0}",
        "/a\u{7f}",
        "/\u{80}",
        "/\u{85}",
        "/\u{10ffff}/..",
        "/%C3%A9/%c3%a9",
        "/%ff%FE",
        "/a%2Fb%2f..%2F",
        "/a/%2e./b",
        "/a/.%2E/b",
    ];

    /// Checks every invariant callers rely on; returns whether `raw` was accepted.
    fn check(raw: &str) -> bool {
        let Ok(out) = normalize(raw) else {
            return false;
        };
        assert!(out.starts_with('/'), "{raw:?} -> {out:?}: no leading slash");
        assert!(!out.contains("//"), "{raw:?} -> {out:?}: double slash");
        assert!(
            out.split('/').all(|c| c != "." && c != ".."),
            "{raw:?} -> {out:?}: dot segment"
        );
        assert!(
            !has_ambiguous_component(out.as_bytes()),
            "{raw:?} -> {out:?}: ambiguous"
        );
        assert!(
            !out.bytes().any(is_control),
            "{raw:?} -> {out:?}: control byte"
        );
        assert!(out.len() <= raw.len().max(1), "{raw:?} -> {out:?}: grew");
        assert_eq!(
            normalize(&out),
            Ok(out.clone()),
            "{raw:?} -> {out:?}: not idempotent"
        );
        assert!(has_prefix(&out, "/"));
        true
    }

    #[test]
    fn fuzz_tricky_inputs() {
        for raw in TRICKY {
            let _ = check(raw);
            let _ = check(&raw.replace('/', "//"));
            let _ = check(&format!("/x{raw}"));
        }
    }

    const ALPHABET: [char; 11] = ['/', '.', '%', '2', 'e', 'E', 'f', 'F', 'a', '\\', ';'];

    #[test]
    fn fuzz_exhaustive_short_strings() {
        // Every string of length 0..=5 over ALPHABET, after a leading '/'.
        let mut raw = String::with_capacity(8);
        let (mut accepted, mut refused) = (0u32, 0u32);
        for len in 0..=5u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                raw.clear();
                raw.push('/');
                for _ in 0..len {
                    raw.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                if check(&raw) {
                    accepted += 1;
                } else {
                    refused += 1;
                }
            }
        }
        // Guards against the generator degenerating into only one outcome.
        assert!(
            accepted > 10_000 && refused > 10_000,
            "{accepted} / {refused}"
        );
    }

    #[test]
    fn fuzz_pseudo_random_longer_strings() {
        // Deterministic xorshift so failures reproduce; includes non-ASCII and control chars.
        let alphabet: Vec<char> = ALPHABET
            .iter()
            .copied()
            .chain(['5', 'c', 'C', '0', 'é', '\n', '~'])
            .collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut raw = String::with_capacity(32);
        for _ in 0..50_000 {
            raw.clear();
            raw.push('/');
            let len = next() % 16;
            for _ in 0..len {
                let pick = usize::try_from(next() % alphabet.len() as u64).unwrap_or(0);
                raw.push(alphabet[pick]);
            }
            let _ = check(&raw);
        }
    }
}

//! Bytes as a request path → `jwtgate::path::normalize` and `has_prefix`. An input holding a
//! 0xff byte is split there into (prefix, path), both normalised, to check `has_prefix`.
//! Properties: never panics; the result starts with '/', has no '//' and no dot segment, is
//! idempotent and never longer than the input; `has_prefix` agrees with plain segment-wise
//! string comparison whenever neither side holds a character it treats as a separator.
#![no_main]

use jwtgate::path::{has_prefix, normalize};
use libfuzzer_sys::fuzz_target;

fn check(raw: &str) -> Option<String> {
    let out = normalize(raw).ok()?;
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    assert!(!out.contains("//"), "{raw:?} -> {out:?}");
    assert!(
        out.split('/').all(|s| s != "." && s != ".."),
        "{raw:?} -> {out:?}"
    );
    assert!(out.len() <= raw.len().max(1), "{raw:?} -> {out:?} grew");
    assert_eq!(
        normalize(&out).as_ref(),
        Ok(&out),
        "{raw:?} -> {out:?} not idempotent"
    );
    assert!(has_prefix(&out, "/"));
    assert!(has_prefix(&out, &out));
    Some(out)
}

/// Segment-wise prefix by plain string comparison.
fn plain_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (prefix.ends_with('/') && path.starts_with(prefix))
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

fn has_separator_like(s: &str) -> bool {
    let u = s.to_ascii_uppercase();
    s.contains('\\') || s.contains(';') || u.contains("%2F") || u.contains("%5C")
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(a) = std::str::from_utf8(a) else {
        return;
    };
    let first = check(a);
    let Some(b) = b.and_then(|b| std::str::from_utf8(b).ok()) else {
        return;
    };
    let (Some(prefix), Some(path)) = (first, check(b)) else {
        return;
    };
    let got = has_prefix(&path, &prefix);
    if plain_prefix(&path, &prefix) {
        assert!(got, "{path:?} is under {prefix:?} but has_prefix says no");
    } else if !has_separator_like(&path) && !has_separator_like(&prefix) {
        assert!(
            !got,
            "{path:?} is not under {prefix:?} but has_prefix says yes"
        );
    }
});

//! Claims into header values, and a route's claim requirements.

use http::HeaderValue;
use serde_json::{Map, Value};

use super::AuthError;
use crate::config::{ClaimPath, Requirement};

/// Longest claim header value sent to an upstream, in bytes; a longer one refuses the token
/// (many servers cap a header line at 4 to 8 KiB and would refuse or cut it).
pub const MAX_CLAIM_HEADER_BYTES: usize = 4096;

/// The header value for a claim: strings as they are, numbers and booleans as JSON text,
/// arrays of strings joined by `,`, anything else (objects, arrays holding non-strings) as
/// compact JSON. `Ok(None)` when the claim is absent or null.
///
/// A value that an upstream would read differently from the token makes the whole token
/// invalid (never dropped or rewritten): a control character (CR, LF, NUL, TAB, DEL, ...);
/// leading or trailing whitespace (every HTTP parser trims it) or an invisible format character
/// that some trims also remove (see [`is_trimmed_invisible`]); a string that starts with `"`
/// (read as a quoted string by some); in an array of strings, an element that is empty or holds
/// `,` or `"` (a comma-splitting upstream would see other elements); a value longer than
/// [`MAX_CLAIM_HEADER_BYTES`]; a number, alone or inside JSON text, beyond 2^53 in magnitude
/// (serde_json prints integers past `u64` as rounded floats, and JavaScript reads any integer
/// past 2^53 rounded, so the upstream would see another value). JSON text needs none of these checks beyond control bytes:
/// every string in it is quoted, so no piece of it read as a list is a bare value.
pub fn header_value(
    claims: &Map<String, Value>,
    path: &ClaimPath,
) -> Result<Option<HeaderValue>, AuthError> {
    let v = match path {
        ClaimPath::Name(n) => claims.get(n),
        ClaimPath::Pointer(p) => pointer(claims, p),
    };
    let unsafe_claim = |why: &'static str| AuthError::UnsafeClaim {
        claim: path.as_str().to_owned(),
        why,
    };
    let text = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => {
            check_text(s).map_err(unsafe_claim)?;
            if s.starts_with('"') {
                return Err(unsafe_claim(
                    "it starts with a double quote, which an upstream may read as a quoted string",
                ));
            }
            return to_header(s).map(Some).map_err(unsafe_claim);
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            let mut out = String::new();
            for (i, s) in items.iter().filter_map(Value::as_str).enumerate() {
                check_element(s).map_err(unsafe_claim)?;
                if i > 0 {
                    out.push(',');
                }
                out.push_str(s);
                if out.len() > MAX_CLAIM_HEADER_BYTES {
                    return Err(unsafe_claim(TOO_LONG));
                }
            }
            out
        }
        Some(other) => {
            if has_big_number(other) {
                return Err(unsafe_claim(
                    "it holds a number beyond 2^53, which an upstream would read rounded",
                ));
            }
            other.to_string()
        }
    };
    to_header(&text).map(Some).map_err(unsafe_claim)
}

/// Largest magnitude every JSON reader holds exactly (IEEE 754 doubles, JavaScript).
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// True when `v` is or holds a number beyond [`MAX_EXACT_INTEGER`] in magnitude.
fn has_big_number(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u > MAX_EXACT_INTEGER
            } else if let Some(i) = n.as_i64() {
                i.unsigned_abs() > MAX_EXACT_INTEGER
            } else {
                // A float: past 2^53 every double is an integer printed with an exponent.
                n.as_f64()
                    .is_none_or(|f| !f.is_finite() || f.abs() > MAX_EXACT_INTEGER as f64)
            }
        }
        Value::Array(items) => items.iter().any(has_big_number),
        Value::Object(members) => members.values().any(has_big_number),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

/// Default-ignorable characters that are not Unicode `White_Space` but that common trims
/// remove or that render as nothing: ZWSP, ZWNJ, ZWJ, WORD JOINER, BOM (JavaScript's `trim`),
/// MONGOLIAN VOWEL SEPARATOR (whitespace in older Unicode) and SOFT HYPHEN.
fn is_trimmed_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{180E}' | '\u{00AD}'
    )
}

const TOO_LONG: &str = "it is longer than 4096 bytes";

/// The rules every string value and array element follows.
fn check_text(s: &str) -> Result<(), &'static str> {
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("it holds a control character");
    }
    // Unicode whitespace too: Go's TrimSpace, Python's strip and .NET's Trim remove it.
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return Err("it has leading or trailing whitespace, which an upstream would trim");
    }
    if s.starts_with(is_trimmed_invisible) || s.ends_with(is_trimmed_invisible) {
        return Err(
            "it starts or ends with an invisible format character (such as U+200B or U+FEFF), which an upstream may trim",
        );
    }
    Ok(())
}

/// The rules for one element of an array joined by `,`.
fn check_element(s: &str) -> Result<(), &'static str> {
    check_text(s)?;
    if s.is_empty() {
        return Err(
            "an array element is empty, which a comma-splitting upstream drops or misreads",
        );
    }
    if s.contains(',') {
        return Err("an array element holds a comma, so the joined list would split differently");
    }
    if s.contains('"') {
        return Err(
            "an array element holds a double quote, which a list parser may read as quoting",
        );
    }
    Ok(())
}

/// The claim at `path` (a name or a JSON Pointer), if the token has one that is not null.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &ClaimPath) -> Option<&'a Value> {
    match path {
        ClaimPath::Name(n) => claims.get(n),
        ClaimPath::Pointer(p) => pointer(claims, p),
    }
    .filter(|v| !v.is_null())
}

fn pointer<'a>(claims: &'a Map<String, Value>, p: &str) -> Option<&'a Value> {
    // `Value::pointer` needs a `Value`; walk the first step by hand to avoid cloning the map.
    let rest = p.strip_prefix('/')?;
    let (first, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let first = first.replace("~1", "/").replace("~0", "~");
    let v = claims.get(&first)?;
    if tail.is_empty() {
        Some(v)
    } else {
        v.pointer(tail)
    }
}

fn to_header(s: &str) -> Result<HeaderValue, &'static str> {
    if s.len() > MAX_CLAIM_HEADER_BYTES {
        return Err(TOO_LONG);
    }
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("it holds a control character");
    }
    HeaderValue::from_str(s).map_err(|_| "it holds a byte a header value cannot carry")
}

/// Checks a route's requirements; the error names the first one that is not met.
pub fn check_requirements(
    claims: &Map<String, Value>,
    require: &[Requirement],
) -> Result<(), AuthError> {
    for req in require {
        let v = match &req.claim {
            ClaimPath::Name(n) => claims.get(n),
            ClaimPath::Pointer(p) => pointer(claims, p),
        };
        let name = req.claim.as_str();
        // `scope` (RFC 8693, RFC 9068) and `scp` hold space-separated lists.
        let space_list = matches!(name, "scope" | "scp");
        let has = |want: &str| match v {
            Some(Value::String(s)) if space_list => s.split(' ').any(|p| p == want),
            Some(Value::Array(items)) => items.iter().any(|i| scalar_eq(i, want)),
            Some(other) => scalar_eq(other, want),
            None => false,
        };
        if let Some(missing) = req.values.iter().find(|w| !has(w)) {
            return Err(AuthError::Insufficient(if v.is_none() {
                format!("claim {name} is missing")
            } else {
                format!("claim {name} does not contain {missing:?}")
            }));
        }
    }
    Ok(())
}

/// A required value (always written as a string in the config) against a claim value.
fn scalar_eq(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        Value::Number(n) => want.parse::<serde_json::Number>().is_ok_and(|w| w == *n),
        _ => false,
    }
}

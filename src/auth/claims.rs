//! Claims into header values, and a route's claim requirements.

use http::HeaderValue;
use serde_json::{Map, Value};

use super::AuthError;
use crate::config::{ClaimPath, Requirement};

/// The header value for a claim: strings as they are, numbers and booleans as JSON text,
/// arrays of strings joined by `,`, anything else as compact JSON. `Ok(None)` when the claim
/// is absent or null. A value holding a control character (CR, LF, NUL, TAB, DEL, ...) makes the
/// whole token invalid rather than being dropped or rewritten.
pub fn header_value(
    claims: &Map<String, Value>,
    path: &ClaimPath,
) -> Result<Option<HeaderValue>, AuthError> {
    let v = match path {
        ClaimPath::Name(n) => claims.get(n),
        ClaimPath::Pointer(p) => pointer(claims, p),
    };
    let text = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => return to_header(s, path).map(Some),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            let mut out = String::new();
            for (i, s) in items.iter().filter_map(Value::as_str).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(s);
            }
            out
        }
        Some(other) => other.to_string(),
    };
    to_header(&text, path).map(Some)
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

fn to_header(s: &str, path: &ClaimPath) -> Result<HeaderValue, AuthError> {
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(AuthError::UnsafeClaim {
            claim: path.as_str().to_owned(),
        });
    }
    HeaderValue::from_str(s).map_err(|_| AuthError::UnsafeClaim {
        claim: path.as_str().to_owned(),
    })
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

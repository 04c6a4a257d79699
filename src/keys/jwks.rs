//! JWK Set documents (RFC 7517) into [`Key`]s.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::RsaPublicKeyComponents;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::{Key, KeyError, Material, MAX_KEYS_PER_ISSUER};
use crate::alg::{Alg, Family};

/// Keys parsed from a JWKS, and the entries left out with the reason for each.
pub struct Parsed {
    pub keys: Vec<Key>,
    /// The first [`MAX_SKIPPED_LISTED`] skipped entries with their reasons, then one line
    /// counting the rest: a hostile or broken document never makes a huge log line.
    pub skipped: Vec<String>,
}

/// Skipped entries listed by name; the rest are only counted.
pub const MAX_SKIPPED_LISTED: usize = 5;
/// A skip reason quotes at most this many characters of the document (kid, kty, crv, ...).
const MAX_REASON_CHARS: usize = 160;

/// Parses a JWKS. `allow_oct` admits symmetric keys (a local file may hold them; a URL never).
/// Entries that are not for verifying signatures (`use` other than `sig`, `key_ops` without
/// `verify`), name an algorithm the issuer does not allow, or use a key type jwtgate does not
/// know are skipped, not fatal: providers publish such keys. A later entry whose `kid` an
/// earlier kept key of the same algorithms already has is skipped too (the first one wins), so
/// one kid always means one key. More than [`MAX_KEYS_PER_ISSUER`] usable keys refuse the whole
/// set: each kid-less token could otherwise cost a signature check per key.
pub fn parse(json: &[u8], allowed: &[Alg], allow_oct: bool) -> Result<Parsed, KeyError> {
    let doc: Value =
        serde_json::from_slice(json).map_err(|e| KeyError::Invalid(format!("not JSON: {e}")))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err(KeyError::Invalid(
            "not a JWK Set: it has no \"keys\" array".into(),
        ));
    };
    let mut keys: Vec<Key> = Vec::with_capacity(list.len().min(MAX_KEYS_PER_ISSUER));
    let mut skipped = Vec::new();
    let mut skipped_total = 0usize;
    for (i, jwk) in list.iter().enumerate() {
        let reason = match one(jwk, allowed, allow_oct) {
            Ok(Some(k)) => {
                let duplicate = k.kid.is_some()
                    && keys
                        .iter()
                        .any(|prev| prev.kid == k.kid && k.algs().any(|a| prev.allows(a)));
                if !duplicate {
                    if keys.len() == MAX_KEYS_PER_ISSUER {
                        return Err(KeyError::Invalid(format!(
                            "the JWK Set holds more than {MAX_KEYS_PER_ISSUER} usable keys for this issuer's algorithms; refused whole (publish fewer keys, or narrow algorithms)"
                        )));
                    }
                    keys.push(k);
                    continue;
                }
                "an earlier key has the same kid and algorithms (the first one is used)".to_owned()
            }
            Ok(None) => "not usable for this issuer's algorithms".to_owned(),
            Err(e) => e.to_string(),
        };
        skipped_total += 1;
        if skipped.len() < MAX_SKIPPED_LISTED {
            let name = match jwk.get("kid") {
                Some(Value::String(k)) => format!("key {i} (kid {:?})", clip(k, 64)),
                _ => format!("key {i}"),
            };
            skipped.push(clip(&format!("{name}: {reason}"), MAX_REASON_CHARS));
        }
    }
    if skipped_total > skipped.len() {
        skipped.push(format!(
            "and {} more entries skipped",
            skipped_total - skipped.len()
        ));
    }
    Ok(Parsed { keys, skipped })
}

/// At most `max` characters of `s`, control characters replaced, `...` marking a cut.
fn clip(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

fn field<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, KeyError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::Invalid(format!("missing string member {name:?}")))
}

fn b64(jwk: &Value, name: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(field(jwk, name)?)
        .map_err(|_| KeyError::Invalid(format!("member {name:?} is not base64url")))
}

/// The public key a DPoP proof embeds (its `jwk` header), usable for `alg` alone; `Ok(None)`
/// when the key's type or its own `alg` does not fit `alg`. Private keys and `oct` keys are
/// refused like in a JWK Set.
pub fn proof_key(jwk: &Value, alg: Alg) -> Result<Option<Key>, KeyError> {
    one(jwk, &[alg], false)
}

fn one(jwk: &Value, allowed: &[Alg], allow_oct: bool) -> Result<Option<Key>, KeyError> {
    if !jwk.is_object() {
        return Err(KeyError::Invalid("not a JSON object".into()));
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(KeyError::Invalid("kid is not a string".into())),
    };
    // RFC 7517 §4.2 and §4.3: a key published for encryption, or whose operations do not
    // include verifying, is not a signature key, whatever its type.
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err(KeyError::Invalid("use is not \"sig\"".into())),
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|o| o.as_str() == Some("verify")) => {}
        Some(_) => {
            return Err(KeyError::Invalid(
                "key_ops does not contain \"verify\"".into(),
            ))
        }
    }
    // A key that names its algorithm is used for that one alone (RFC 7517 §4.4).
    let allowed: Vec<Alg> = match jwk.get("alg") {
        None => allowed.to_vec(),
        Some(Value::String(a)) => match a.parse::<Alg>() {
            Ok(a) if allowed.contains(&a) => vec![a],
            _ => return Ok(None),
        },
        Some(_) => return Err(KeyError::Invalid("alg is not a string".into())),
    };
    let kty = field(jwk, "kty")?;
    if kty != "oct" && jwk.get("d").is_some() {
        return Err(KeyError::Invalid(
            "holds a private key (\"d\"); publish only the public part".into(),
        ));
    }
    let material = match kty {
        "RSA" => Material::Public(Family::Rsa, rsa_spki_der(&b64(jwk, "n")?, &b64(jwk, "e")?)?),
        "EC" => {
            let (family, len) = match field(jwk, "crv")? {
                "P-256" => (Family::EcP256, 32),
                "P-384" => (Family::EcP384, 48),
                other => return Err(KeyError::Invalid(format!("unsupported curve {other:?}"))),
            };
            let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
            // RFC 7518 §6.2.1.2: coordinates are exactly the curve's size.
            if x.len() != len || y.len() != len {
                return Err(KeyError::Invalid(
                    "EC coordinates have the wrong length".into(),
                ));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Material::Public(family, point)
        }
        "OKP" => {
            if field(jwk, "crv")? != "Ed25519" {
                return Err(KeyError::Invalid(
                    "only the Ed25519 OKP curve is supported".into(),
                ));
            }
            Material::Public(Family::Ed25519, b64(jwk, "x")?)
        }
        "oct" if allow_oct => Material::Secret(b64(jwk, "k")?),
        "oct" => {
            return Err(KeyError::Invalid(
                "symmetric (oct) keys are only accepted from a local jwks_file".into(),
            ))
        }
        other => return Err(KeyError::Invalid(format!("unsupported key type {other:?}"))),
    };
    let family = match &material {
        Material::Secret(_) => Family::Hmac,
        Material::Public(f, _) => *f,
    };
    if !allowed.iter().any(|a| a.family() == family) {
        return Ok(None);
    }
    Key::new(kid, material, &allowed).map(Some)
}

/// An RSA key from its JWK members, as SubjectPublicKeyInfo DER built by aws-lc-rs. Leading
/// zero octets are dropped first: RFC 7518 §6.3.1.1 forbids them, but some providers send them.
fn rsa_spki_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, KeyError> {
    fn minimal(b: &[u8]) -> &[u8] {
        &b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..]
    }
    let components = RsaPublicKeyComponents {
        n: minimal(n),
        e: minimal(e),
    };
    components
        .as_der()
        .map(|der| der.as_ref().to_vec())
        .map_err(|_| KeyError::Invalid("not a usable RSA public key".into()))
}

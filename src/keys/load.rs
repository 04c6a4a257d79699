//! Keys from local sources: PEM files, a JWKS file, an HMAC secret from the environment or a file.

use std::path::Path;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey};

use super::{jwks, Key, KeyError, KeySet, Material, MAX_KEYS_PER_ISSUER};
use crate::alg::Family;
use crate::config::{IssuerConfig, KeySource};
use crate::files::{MAX_JWKS_FILE_BYTES, MAX_KEY_FILE_BYTES};

fn read(path: &Path, cap: u64) -> Result<Vec<u8>, KeyError> {
    crate::files::read_capped(path, cap).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Loads an issuer's keys from a local source. Remote sources (`jwks_url`, `discovery_url`)
/// return `Ok(None)`: they are fetched by the key refresher.
/// The second value lists JWKS entries that were skipped, for `check` to print.
pub fn load_static(issuer: &IssuerConfig) -> Result<Option<(KeySet, Vec<String>)>, KeyError> {
    let allowed = &issuer.algorithms;
    match &issuer.source {
        KeySource::JwksUrl(_) | KeySource::DiscoveryUrl(_) => Ok(None),
        KeySource::PemFiles(files) => {
            if files.len() > MAX_KEYS_PER_ISSUER {
                return Err(KeyError::Invalid(format!(
                    "keys lists {} files; an issuer holds at most {MAX_KEYS_PER_ISSUER} keys",
                    files.len()
                )));
            }
            let mut keys: Vec<Key> = Vec::with_capacity(files.len());
            for f in files {
                let kid = f.file_stem().map(|s| s.to_string_lossy().into_owned());
                // One kid means one key: two files with the same stem would both answer it.
                if keys.iter().any(|k| k.kid.is_some() && k.kid == kid) {
                    return Err(KeyError::Invalid(format!(
                        "{}: another key file has the same name (kid {:?}); rename one",
                        f.display(),
                        kid.unwrap_or_default()
                    )));
                }
                let material = pem_public_key(&read(f, MAX_KEY_FILE_BYTES)?)
                    .map_err(|e| KeyError::Invalid(format!("{}: {e}", f.display())))?;
                keys.push(
                    Key::new(kid, material, allowed)
                        .map_err(|e| KeyError::Invalid(format!("{}: {e}", f.display())))?,
                );
            }
            Ok(Some((KeySet::new(keys), Vec::new())))
        }
        KeySource::JwksFile(f) => {
            let parsed = jwks::parse(&read(f, MAX_JWKS_FILE_BYTES)?, allowed, true)
                .map_err(|e| KeyError::Invalid(format!("{}: {e}", f.display())))?;
            if parsed.keys.is_empty() {
                return Err(KeyError::Invalid(format!(
                    "{}: no usable key for this issuer's algorithms{}",
                    f.display(),
                    if parsed.skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", parsed.skipped.join("; "))
                    }
                )));
            }
            Ok(Some((KeySet::new(parsed.keys), parsed.skipped)))
        }
        KeySource::HmacEnv(var) => {
            let secret = std::env::var_os(var).ok_or_else(|| {
                KeyError::Invalid(format!("environment variable {var} is not set"))
            })?;
            let key = Key::new(None, Material::Secret(secret.into_encoded_bytes()), allowed)
                .map_err(|e| KeyError::Invalid(format!("${var}: {e}")))?;
            Ok(Some((KeySet::new(vec![key]), Vec::new())))
        }
        KeySource::HmacFile(f) => {
            let secret = secret_file_bytes(read(f, MAX_KEY_FILE_BYTES)?);
            let key = Key::new(None, Material::Secret(secret), allowed)
                .map_err(|e| KeyError::Invalid(format!("{}: {e}", f.display())))?;
            Ok(Some((KeySet::new(vec![key]), Vec::new())))
        }
    }
}

/// The secret in a secret file: files written by editors, `echo` and Kubernetes tooling end
/// in a newline that is not part of the secret.
pub fn secret_file_bytes(mut secret: Vec<u8>) -> Vec<u8> {
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    secret
}

/// Reads a PEM public key and works out its type.
pub fn pem_public_key(text: &[u8]) -> Result<Material, KeyError> {
    let block = pem::parse(text).map_err(|e| KeyError::Invalid(format!("not PEM: {e}")))?;
    let der = block.contents().to_vec();
    match block.tag() {
        "RSA PUBLIC KEY" => return Ok(Material::Public(Family::Rsa, der)),
        "PUBLIC KEY" => {}
        t if t.contains("PRIVATE KEY") => {
            return Err(KeyError::Invalid(
                "this is a private key; configure the public key (openssl pkey -pubout)".into(),
            ))
        }
        t => {
            return Err(KeyError::Invalid(format!(
                "PEM block {t:?} is not a public key (expected \"PUBLIC KEY\")"
            )))
        }
    }
    if aws_lc_rs::rsa::PublicKey::from_der(&der).is_ok() {
        return Ok(Material::Public(Family::Rsa, der));
    }
    let candidates: [(Family, &'static dyn sig::VerificationAlgorithm); 3] = [
        (Family::EcP256, &sig::ECDSA_P256_SHA256_FIXED),
        (Family::EcP384, &sig::ECDSA_P384_SHA384_FIXED),
        (Family::Ed25519, &sig::ED25519),
    ];
    for (family, alg) in candidates {
        if ParsedPublicKey::new(alg, &der).is_ok() {
            return Ok(Material::Public(family, der));
        }
    }
    Err(KeyError::Invalid(
        "unsupported public key: expected RSA, EC P-256, EC P-384 or Ed25519".into(),
    ))
}

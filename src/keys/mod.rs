//! Verification keys: parsed once per snapshot, each pinned to the algorithms of its own type
//! that its issuer allows.

pub mod jwks;
mod load;
pub mod remote;

pub use load::{load_static, secret_file_bytes};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
use aws_lc_rs::{hmac, rsa};

use crate::alg::{Alg, Family};

/// An issuer holds at most this many keys: a larger JWK Set (or `keys` list) is refused.
pub const MAX_KEYS_PER_ISSUER: usize = 100;
/// A token is checked against at most this many keys. A token without a `kid` (or naming one
/// the issuer lacks) whose issuer has more candidate keys for its algorithm is refused as
/// `unknown_key` without any signature check.
pub const MAX_SIGNATURE_CHECKS: usize = 4;

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: crate::files::ReadError,
    },
    #[error("{0}")]
    Invalid(String),
}

/// One verification key, ready for each algorithm it may verify.
pub struct Key {
    /// The `kid` a token names to pick this key; `None` matches tokens without a usable kid.
    pub kid: Option<String>,
    /// What kind of key this is, for messages.
    pub family: Family,
    verifiers: Vec<(Alg, Verifier)>,
}

enum Verifier {
    Hmac(Box<hmac::Key>),
    Public(ParsedPublicKey),
}

impl std::fmt::Debug for Key {
    // Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("algs", &self.algs().collect::<Vec<_>>())
            .finish()
    }
}

/// Raw key material before it is pinned to algorithms.
pub enum Material {
    /// An HMAC secret.
    Secret(Vec<u8>),
    /// A public key in a form aws-lc-rs parses: SPKI or PKCS#1 DER for RSA, SPKI or an
    /// uncompressed point for EC, SPKI or 32 raw bytes for Ed25519.
    Public(Family, Vec<u8>),
}

fn verification_alg(alg: Alg) -> &'static dyn VerificationAlgorithm {
    match alg {
        Alg::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Alg::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Alg::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Alg::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Alg::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Alg::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        // The FIXED variants take only the 64/96-byte r||s form JWS uses (RFC 7518 §3.4): a DER
        // signature or one of the wrong length never verifies.
        Alg::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Alg::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Alg::EdDSA => &sig::ED25519,
        // HMAC never reaches here; any answer is safe because hmac keys never use it.
        Alg::HS256 | Alg::HS384 | Alg::HS512 => &sig::ED25519,
    }
}

fn hmac_alg(alg: Alg) -> hmac::Algorithm {
    match alg {
        Alg::HS384 => hmac::HMAC_SHA384,
        Alg::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

/// Minimum RSA modulus: smaller keys are factorable and aws-lc refuses them at verify anyway.
const MIN_RSA_BITS: usize = 2048;

impl Key {
    /// Builds a key allowed to verify those of `allowed` that fit its type.
    /// Fails when the material does not parse or no allowed algorithm fits it.
    pub fn new(kid: Option<String>, material: Material, allowed: &[Alg]) -> Result<Key, KeyError> {
        let family = match &material {
            Material::Secret(_) => Family::Hmac,
            Material::Public(f, _) => *f,
        };
        let algs: Vec<Alg> = allowed
            .iter()
            .copied()
            .filter(|a| a.family() == family)
            .collect();
        if algs.is_empty() {
            return Err(KeyError::Invalid(format!(
                "{} key, but the issuer allows only {}",
                family_name(family),
                allowed
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut verifiers = Vec::with_capacity(algs.len());
        match material {
            Material::Secret(secret) => {
                if secret.len() < crate::config::MIN_HMAC_SECRET_BYTES {
                    return Err(KeyError::Invalid(format!(
                        "HMAC secret is {} bytes; at least {} are required",
                        secret.len(),
                        crate::config::MIN_HMAC_SECRET_BYTES
                    )));
                }
                for a in algs {
                    verifiers.push((
                        a,
                        Verifier::Hmac(Box::new(hmac::Key::new(hmac_alg(a), &secret))),
                    ));
                }
            }
            Material::Public(family, der) => {
                if family == Family::Rsa {
                    let pk = rsa::PublicKey::from_der(&der).map_err(|e| {
                        KeyError::Invalid(format!("not a usable RSA public key: {e}"))
                    })?;
                    let bits = pk.modulus_len() * 8;
                    if bits < MIN_RSA_BITS {
                        return Err(KeyError::Invalid(format!(
                            "RSA key is {bits} bits; at least {MIN_RSA_BITS} are required"
                        )));
                    }
                }
                for a in algs {
                    let parsed = ParsedPublicKey::new(verification_alg(a), &der).map_err(|e| {
                        KeyError::Invalid(format!("not a usable {} key: {e}", family_name(family)))
                    })?;
                    verifiers.push((a, Verifier::Public(parsed)));
                }
            }
        }
        Ok(Key {
            kid,
            family,
            verifiers,
        })
    }

    /// The algorithms this key may verify.
    pub fn algs(&self) -> impl Iterator<Item = Alg> + '_ {
        self.verifiers.iter().map(|(a, _)| *a)
    }

    /// True when this key may verify `alg`.
    pub fn allows(&self, alg: Alg) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Checks `signature` over `message`; false for a wrong signature or an algorithm this key
    /// is not pinned to.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        match self.verifiers.iter().find(|(a, _)| *a == alg) {
            // Constant-time comparison inside aws-lc.
            Some((_, Verifier::Hmac(k))) => hmac::verify(k, message, signature).is_ok(),
            Some((_, Verifier::Public(k))) => k.verify_sig(message, signature).is_ok(),
            None => false,
        }
    }
}

/// A readable name for a key family.
pub fn family_name(f: Family) -> &'static str {
    match f {
        Family::Hmac => "an HMAC",
        Family::Rsa => "an RSA",
        Family::EcP256 => "an EC P-256",
        Family::EcP384 => "an EC P-384",
        Family::Ed25519 => "an Ed25519",
    }
}

/// Every key of one issuer.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Wraps loaded keys.
    pub fn new(keys: Vec<Key>) -> KeySet {
        KeySet { keys }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All keys.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// The keys a token may be verified with: those named by its `kid`, or, when no key
    /// carries that kid (or the token names none), the keys without a kid.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a Key> + 'a {
        let named = kid.is_some_and(|k| self.keys.iter().any(|key| key.kid.as_deref() == Some(k)));
        self.keys.iter().filter(move |key| match (named, kid) {
            (true, Some(k)) => key.kid.as_deref() == Some(k),
            // A token without a kid may use any key: an issuer with one key rarely sets kids.
            (_, None) => true,
            (false, Some(_)) => key.kid.is_none(),
        })
    }
}

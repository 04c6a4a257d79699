//! `jwtgate dev-token`: mint a signed token for tests and quick starts.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};

use crate::alg::{Alg, Family};

/// The issuer the shipped `gateway.toml` trusts for dev tokens.
pub const DEV_ISSUER: &str = "https://dev.jwtgate.local/";
/// The audience the shipped `gateway.toml` accepts for dev tokens.
pub const DEV_AUDIENCE: &str = "jwtgate-demo";

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum DevTokenError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: crate::files::ReadError,
    },
    #[error("key file {path} is not a usable {alg} signing key: {reason}")]
    Key {
        path: String,
        alg: Alg,
        reason: String,
    },
    #[error("--claims must be a JSON object: {0}")]
    Claims(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Mints a token signed with the private key (PKCS#8 PEM) or HMAC secret in `key_file`.
/// Default claims (`iss`, `aud`, `sub`, `iat`, `exp`) are those the shipped config accepts;
/// `claims` overrides or adds to them.
pub fn mint(
    key_file: &Path,
    alg: Alg,
    kid: Option<&str>,
    claims: Option<&str>,
    ttl: Duration,
) -> Result<String, DevTokenError> {
    let bytes = crate::files::read_capped(key_file, crate::files::MAX_KEY_FILE_BYTES).map_err(
        |source| DevTokenError::Read {
            path: key_file.display().to_string(),
            source,
        },
    )?;
    let key_err = |reason: String| DevTokenError::Key {
        path: key_file.display().to_string(),
        alg,
        reason,
    };
    let key = match alg.family() {
        Family::Hmac => EncodingKey::from_secret(&crate::keys::secret_file_bytes(bytes)),
        Family::Rsa => EncodingKey::from_rsa_pem(&bytes).map_err(|e| key_err(e.to_string()))?,
        Family::EcP256 | Family::EcP384 => {
            EncodingKey::from_ec_pem(&bytes).map_err(|e| key_err(e.to_string()))?
        }
        Family::Ed25519 => EncodingKey::from_ed_pem(&bytes).map_err(|e| key_err(e.to_string()))?,
    };
    let now = crate::unix_secs(crate::unix_now());
    let mut body = Map::new();
    body.insert("iss".into(), DEV_ISSUER.into());
    body.insert("aud".into(), DEV_AUDIENCE.into());
    body.insert("sub".into(), "dev-user".into());
    body.insert("iat".into(), now.into());
    body.insert("exp".into(), (now + ttl.as_secs()).into());
    if let Some(c) = claims {
        let extra: Map<String, Value> =
            serde_json::from_str(c).map_err(|e| DevTokenError::Claims(e.to_string()))?;
        body.extend(extra);
    }
    let jalg: jsonwebtoken::Algorithm = alg
        .as_str()
        .parse()
        .map_err(|e: jsonwebtoken::errors::Error| DevTokenError::Sign(e.to_string()))?;
    let mut header = Header::new(jalg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &body, &key).map_err(|e| DevTokenError::Sign(e.to_string()))
}

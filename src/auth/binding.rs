//! Which sender constraint a token's `cnf` claim (RFC 7800) carries, and the certificate-bound
//! check (RFC 8705 §3). Pure checks: the proof of a DPoP-bound token is checked by
//! [`super::dpop`], the replay cache lives with the caller.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::AuthError;

/// The confirmation members of a token's `cnf` that the gateway verifies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cnf<'a> {
    /// `cnf.jkt`: the RFC 7638 thumbprint of the client's DPoP key (RFC 9449 §6).
    pub jkt: Option<&'a str>,
    /// `cnf.x5t#S256`: the SHA-256 thumbprint of the client certificate (RFC 8705 §3.1).
    pub x5t: Option<&'a str>,
}

impl Cnf<'_> {
    /// True when the token carries no binding at all.
    pub fn is_unbound(&self) -> bool {
        self.jkt.is_none() && self.x5t.is_none()
    }
}

/// The binding a token's claims carry. A `cnf` that is not an object, a member of the wrong
/// type, or a `cnf` holding only confirmation methods the gateway cannot verify (`jwk`, `kid`,
/// ...) refuses the token: a binding it cannot check must not be dropped silently.
pub fn cnf(claims: &Map<String, Value>) -> Result<Cnf<'_>, AuthError> {
    let Some(cnf) = claims.get("cnf") else {
        return Ok(Cnf::default());
    };
    let Value::Object(cnf) = cnf else {
        return Err(AuthError::Malformed("cnf is not an object"));
    };
    let member = |name: &str, message: &'static str| match cnf.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(AuthError::Malformed(message)),
    };
    let found = Cnf {
        jkt: member("jkt", "cnf.jkt is not a string")?,
        x5t: member("x5t#S256", "cnf.x5t#S256 is not a string")?,
    };
    if found.is_unbound() {
        return Err(AuthError::BindingMismatch(
            "the token's cnf names a confirmation method the gateway cannot verify (only jkt and x5t#S256 are)",
        ));
    }
    Ok(found)
}

/// The SHA-256 of a certificate's DER, as `x5t#S256` hashes it.
pub fn cert_thumbprint(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
    out
}

/// RFC 8705 §3: the connection's client certificate must be the one the token names. The
/// comparison is constant-time over the digest.
pub fn check_certificate(x5t: &str, presented: Option<&[u8; 32]>) -> Result<(), AuthError> {
    let Some(presented) = presented else {
        return Err(AuthError::BindingMismatch(
            "the token is bound to a client certificate, and this connection presented none",
        ));
    };
    let want = URL_SAFE_NO_PAD
        .decode(x5t)
        .map_err(|_| AuthError::Malformed("cnf.x5t#S256 is not base64url"))?;
    verify_slices_are_equal(&want, presented).map_err(|_| {
        AuthError::BindingMismatch(
            "the client certificate of this connection is not the one the token is bound to",
        )
    })
}

/// Constant-time equality of two base64url texts (thumbprints, hashes).
pub fn same_text(a: &str, b: &str) -> bool {
    verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn cnf_members_are_read_and_unknown_methods_refused() {
        let c = claims(r#"{"cnf":{"jkt":"abc"}}"#);
        assert_eq!(cnf(&c).expect("jkt").jkt, Some("abc"));
        let c = claims(r#"{"cnf":{"x5t#S256":"xyz"}}"#);
        assert_eq!(cnf(&c).expect("x5t").x5t, Some("xyz"));
        assert!(cnf(&claims("{}")).expect("none").is_unbound());
        assert!(cnf(&claims(r#"{"cnf":"abc"}"#)).is_err());
        assert!(cnf(&claims(r#"{"cnf":{"jkt":1}}"#)).is_err());
        assert!(matches!(
            cnf(&claims(r#"{"cnf":{"kid":"k"}}"#)),
            Err(AuthError::BindingMismatch(_))
        ));
    }

    #[test]
    fn certificate_thumbprints_compare() {
        let digest = cert_thumbprint(b"certificate");
        let x5t = URL_SAFE_NO_PAD.encode(digest);
        assert!(check_certificate(&x5t, Some(&digest)).is_ok());
        assert!(check_certificate(&x5t, Some(&cert_thumbprint(b"other"))).is_err());
        assert!(check_certificate(&x5t, None).is_err());
        assert!(check_certificate("!!", Some(&digest)).is_err());
    }
}

//! The OpenID Connect client: discovery, the authorization URL (PKCE S256, `state`, `nonce`),
//! the token endpoint (code and refresh grants), RFC 7009 revocation, and the checks of ID
//! tokens and back-channel logout tokens. It runs on the gateway's fetch client, which never
//! follows a redirect, and the gateway's own JOSE code.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{self, AuthError, Issuer};
use crate::config::{SessionConfig, TokenAuth};
use crate::keys::remote::{self, FETCH_TIMEOUT};

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// A token endpoint answer larger than this is refused.
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 << 10;
/// The event a back-channel logout token must carry (OIDC Back-Channel Logout 1.0 §2.4).
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Percent-encodes a form or query value.
pub fn enc(v: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(v, FORM)
}

/// Why a call to the provider failed; logged, never shown with a token in it.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(transparent)]
    Fetch(#[from] remote::FetchError),
    #[error("the discovery document: {0}")]
    Discovery(String),
    #[error("the provider has no {0} in its discovery document")]
    NoEndpoint(&'static str),
    #[error("POST {url}: {message}")]
    Post { url: String, message: String },
    /// The provider refused the grant (`invalid_grant` and the like): the session cannot go on.
    #[error("the provider refused the grant: {error} ({status})")]
    Refused { status: u16, error: String },
    #[error("the token response: {0}")]
    Response(String),
    #[error("the ID token: {0}")]
    IdToken(String),
    #[error("the provider's keys are not loaded yet")]
    KeysNotLoaded,
}

/// What login needs from the provider's discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// Fetches and checks the discovery document: its `issuer` must equal the configured one
/// (OpenID Connect Discovery §4.3) and its endpoints must be http(s) URLs.
pub async fn discover(url: &str, expected_issuer: &str) -> Result<Discovery, OidcError> {
    let (body, _) = remote::get(url).await?;
    let d: Discovery = serde_json::from_slice(&body)
        .map_err(|e| OidcError::Discovery(format!("not the expected JSON: {e}")))?;
    if d.issuer != expected_issuer {
        return Err(OidcError::Discovery(format!(
            "its issuer {:?} does not equal the configured issuer {expected_issuer:?}",
            d.issuer.chars().take(200).collect::<String>()
        )));
    }
    for (name, u) in [
        ("authorization_endpoint", Some(&d.authorization_endpoint)),
        ("token_endpoint", Some(&d.token_endpoint)),
        ("end_session_endpoint", d.end_session_endpoint.as_ref()),
        ("revocation_endpoint", d.revocation_endpoint.as_ref()),
    ] {
        if let Some(u) = u {
            let ok = u
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| remote::key_url_problem(&u).is_none());
            if !ok {
                return Err(OidcError::Discovery(format!(
                    "{name} is not an http(s) URL without credentials"
                )));
            }
        }
    }
    Ok(d)
}

/// A random value of `n` bytes, base64url: `state`, `nonce`, PKCE verifiers and session ids.
pub fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).expect("the system random number generator works");
    URL_SAFE_NO_PAD.encode(b)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// Optional authorization request parameters, for step-up (RFC 9470): a fresh login
/// (`max_age`) or a stronger one (`acr_values`).
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    pub max_age: Option<u64>,
    pub acr_values: Option<String>,
}

/// The authorization request URL.
pub fn authorize_url(
    d: &Discovery,
    cfg: &SessionConfig,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
    opts: &LoginOptions,
) -> String {
    let mut u = d.authorization_endpoint.clone();
    u.push(if u.contains('?') { '&' } else { '?' });
    u.push_str(&format!(
        "response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}&code_challenge={}&code_challenge_method=S256",
        enc(&cfg.client_id),
        enc(redirect_uri),
        enc(&cfg.scopes.join(" ")),
        challenge(verifier),
    ));
    if let Some(m) = opts.max_age {
        u.push_str(&format!("&max_age={m}"));
    }
    if let Some(a) = &opts.acr_values {
        u.push_str(&format!("&acr_values={}", enc(a)));
    }
    u
}

/// A successful token endpoint answer (RFC 6749 §5.1).
#[derive(Debug, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<f64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
}

/// The client's credentials, resolved once per snapshot.
#[derive(Clone)]
pub struct Client {
    pub id: String,
    pub secret: Option<String>,
    pub auth: TokenAuth,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// POSTs a form to the provider with the client's authentication; returns status and body.
    async fn post(&self, url: &str, mut form: String) -> Result<(u16, Bytes), OidcError> {
        let err = |message: String| OidcError::Post {
            url: url.to_owned(),
            message,
        };
        let mut req = http::Request::post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("jwtgate/", env!("CARGO_PKG_VERSION")),
            );
        match (&self.secret, self.auth) {
            // RFC 6749 §2.3.1: each part form-encoded, then joined and base64-encoded.
            (Some(secret), TokenAuth::Basic) => {
                let pair = format!("{}:{}", enc(&self.id), enc(secret));
                req = req.header(
                    http::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(pair)),
                );
            }
            (Some(secret), TokenAuth::Post) => {
                form.push_str(&format!(
                    "&client_id={}&client_secret={}",
                    enc(&self.id),
                    enc(secret)
                ));
            }
            (None, _) => form.push_str(&format!("&client_id={}", enc(&self.id))),
        }
        let req = req
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| err(e.to_string()))?;
        let work = async {
            let res = remote::client()
                .request(req)
                .await
                .map_err(|e| err(remote::error_chain(&e)))?;
            let status = res.status().as_u16();
            let body = Limited::new(res.into_body(), MAX_TOKEN_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| err(format!("reading the body: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| err(format!("timed out after {FETCH_TIMEOUT:?}")))?
    }

    /// Calls the token endpoint with a grant; a 4xx is [`OidcError::Refused`].
    pub async fn token(&self, d: &Discovery, grant: &str) -> Result<Tokens, OidcError> {
        let (status, body) = self.post(&d.token_endpoint, grant.to_owned()).await?;
        if status != 200 {
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "no error code".into());
            let error: String = error.chars().take(100).collect();
            return Err(if (400..500).contains(&status) {
                OidcError::Refused { status, error }
            } else {
                OidcError::Response(format!("status {status}: {error}"))
            });
        }
        let t: Tokens = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Response(format!("not the expected JSON: {e}")))?;
        if t.access_token.is_empty() {
            return Err(OidcError::Response("access_token is empty".into()));
        }
        Ok(t)
    }

    /// The authorization code grant (with the PKCE verifier).
    pub async fn exchange_code(
        &self,
        d: &Discovery,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, OidcError> {
        let grant = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
            enc(code),
            enc(redirect_uri),
            enc(verifier)
        );
        self.token(d, &grant).await
    }

    /// The refresh token grant.
    pub async fn refresh(&self, d: &Discovery, refresh_token: &str) -> Result<Tokens, OidcError> {
        let grant = format!(
            "grant_type=refresh_token&refresh_token={}",
            enc(refresh_token)
        );
        self.token(d, &grant).await
    }

    /// RFC 7009: revokes a refresh token where the provider offers it; failures are logged
    /// only (the session is gone from the browser either way).
    pub async fn revoke(&self, d: &Discovery, refresh_token: &str) {
        let Some(url) = &d.revocation_endpoint else {
            return;
        };
        let form = format!("token={}&token_type_hint=refresh_token", enc(refresh_token));
        match self.post(url, form).await {
            Ok((200, _)) => {}
            Ok((status, _)) => {
                tracing::warn!(status, "the provider did not revoke the refresh token")
            }
            Err(e) => tracing::warn!(error = %e, "revoking the refresh token failed"),
        }
    }
}

/// The `exp` of a JWT without verifying it (for a token the gateway already verified or
/// received straight from the provider over its own connection); `None` when it is not a JWT.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

/// True when the token looks like a JWS (three dot-separated parts).
pub fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Verifies an ID token with the issuer's keys and rules, its audience being the client
/// (`issuers` is the session's one-issuer list whose audience is the client id), and at login
/// (`login`: the transaction it answers) its `nonce`, `auth_time` against the `max_age` asked
/// for and `acr` against the `acr_values` asked for; returns its claims.
pub async fn verify_id_token(
    token: &str,
    issuers: &[Issuer],
    login: Option<&super::cookie::Transaction>,
    max_token_bytes: usize,
    now: i64,
) -> Result<std::sync::Arc<Map<String, Value>>, OidcError> {
    let (v, _) = auth::verify_live(token, issuers, &[0], max_token_bytes, now)
        .await
        .map_err(|e| match e {
            auth::SignatureError::Auth(e) => OidcError::IdToken(e.to_string()),
            auth::SignatureError::NotLoaded { .. } => OidcError::KeysNotLoaded,
        })?;
    let Some(tx) = login else {
        return Ok(v.claims);
    };
    if v.claims.get("nonce").and_then(Value::as_str) != Some(tx.nonce.as_str()) {
        return Err(OidcError::IdToken(
            "its nonce does not match the login attempt".into(),
        ));
    }
    if let Some(max_age) = tx.max_age {
        let leeway = issuers[0].config.leeway.as_secs() as i64;
        let auth_time = v.claims.get("auth_time").and_then(Value::as_i64);
        if auth_time.is_none_or(|t| t + max_age as i64 + leeway < now) {
            return Err(OidcError::IdToken(
                "its auth_time is older than the max_age asked for".into(),
            ));
        }
    }
    // A provider that cannot authenticate as strongly as asked must not start a session that
    // the step-up route would send to log in again, in a loop.
    if let Some(wanted) = &tx.acr_values {
        let acr = v.claims.get("acr").and_then(Value::as_str);
        if !acr.is_some_and(|a| wanted.split(' ').any(|w| w == a)) {
            return Err(OidcError::IdToken(format!(
                "its acr ({}) is not one of the acr_values asked for ({wanted})",
                acr.unwrap_or("none")
            )));
        }
    }
    Ok(v.claims)
}

/// What a verified back-channel logout token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutTarget {
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: Option<String>,
    pub exp: Option<i64>,
}

/// How old a logout token's `iat` may be (plus the issuer's leeway).
pub const LOGOUT_TOKEN_MAX_AGE_SECS: i64 = 600;

/// Verifies a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.6): signed by the
/// issuer, its audience the client, `typ` `logout+jwt` when present, the logout event, a
/// `sid` or `sub`, and no `nonce`.
pub async fn verify_logout_token(
    token: &str,
    issuers: &[Issuer],
    max_token_bytes: usize,
    now: i64,
) -> Result<LogoutTarget, AuthError> {
    let parsed = auth::parse(token, issuers, &[0], max_token_bytes)?;
    let issuer = &issuers[0];
    issuer.check_signature(&parsed).await.map_err(|e| match e {
        auth::SignatureError::Auth(e) => e,
        auth::SignatureError::NotLoaded { .. } => AuthError::UnknownKey,
    })?;
    let claims = parsed.into_claims();
    let cfg = &issuer.config;
    let leeway = cfg.leeway.as_secs() as i64;
    if let Some(exp) = claims.get("exp") {
        if exp.as_i64().is_none_or(|e| e + leeway <= now) {
            return Err(AuthError::Malformed("the logout token has expired"));
        }
    }
    let iat = claims.get("iat").and_then(Value::as_i64);
    if !iat.is_some_and(|t| t - leeway <= now && now - t <= LOGOUT_TOKEN_MAX_AGE_SECS + leeway) {
        return Err(AuthError::Malformed(
            "the logout token's iat is missing or not within the last 10 minutes",
        ));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => cfg.audiences.contains(a),
        Some(Value::Array(a)) => a.iter().any(|x| {
            x.as_str()
                .is_some_and(|x| cfg.audiences.iter().any(|c| c == x))
        }),
        _ => false,
    };
    if !aud_ok {
        return Err(AuthError::WrongAudience);
    }
    if claims.contains_key("nonce") {
        return Err(AuthError::Malformed(
            "a logout token must not carry a nonce",
        ));
    }
    if !claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|e| e.get(BACKCHANNEL_EVENT).is_some_and(Value::is_object))
    {
        return Err(AuthError::Malformed(
            "the logout token lacks the back-channel logout event",
        ));
    }
    let text = |name: &str| -> Result<Option<String>, AuthError> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(AuthError::Malformed(
                "the logout token's sid, sub or jti is not a non-empty string",
            )),
        }
    };
    let target = LogoutTarget {
        sid: text("sid")?,
        sub: text("sub")?,
        jti: text("jti")?,
        exp: claims.get("exp").and_then(Value::as_i64),
    };
    if target.sid.is_none() && target.sub.is_none() {
        return Err(AuthError::Malformed(
            "the logout token names neither a sid nor a sub",
        ));
    }
    Ok(target)
}

/// How long the discovery document is reused before it is fetched again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}

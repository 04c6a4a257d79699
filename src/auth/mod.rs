//! Token verification: a compact JWS against the issuers a route accepts, every check of
//! SPEC.md "What every request gets", then claim requirements and claim header values.

pub mod binding;
pub mod cache;
pub mod claims;
pub mod dpop;
pub mod stepup;
mod strict_json;
pub mod verify;

pub use verify::{
    check_claims, parse, verify, verify_live, Issuer, IssuerKeys, Parsed, SignatureError, Verified,
};

/// The fixed set of failure reasons used in metrics labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    UnknownKey,
    AlgorithmNotAllowed,
    InsufficientClaims,
    // Step-up, one-time tokens, theft signals (issue 20).
    InsufficientUserAuthentication,
    Replayed,
    Anomaly,
    Revoked,
    // Sender-constrained tokens.
    DpopInvalid,
    DpopReplay,
    BindingMismatch,
}

impl Reason {
    /// Every reason, for metric series that exist from the first scrape.
    pub const ALL: [Reason; 17] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongIssuer,
        Reason::WrongAudience,
        Reason::UnknownKey,
        Reason::AlgorithmNotAllowed,
        Reason::InsufficientClaims,
        Reason::InsufficientUserAuthentication,
        Reason::Replayed,
        Reason::Anomaly,
        Reason::Revoked,
        Reason::DpopInvalid,
        Reason::DpopReplay,
        Reason::BindingMismatch,
    ];

    /// The label value, as SPEC.md names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::UnknownKey => "unknown_key",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::InsufficientClaims => "insufficient_claims",
            Reason::InsufficientUserAuthentication => "insufficient_user_authentication",
            Reason::Replayed => "replayed",
            Reason::Anomaly => "anomaly",
            Reason::Revoked => "revoked",
            Reason::DpopInvalid => "dpop_invalid",
            Reason::DpopReplay => "dpop_replay",
            Reason::BindingMismatch => "binding_mismatch",
        }
    }
}

/// Why a request's credentials were refused. The message is the `error_description`: it says
/// what failed and never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was sent")]
    Missing,
    #[error("the token is longer than max_token_bytes ({limit} bytes)")]
    TooLong { limit: usize },
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token is malformed: {0}")]
    MalformedJson(String),
    #[error("the token header is not accepted: {0}")]
    Header(&'static str),
    #[error("the token's typ {0:?} is not accepted by its issuer")]
    Typ(String),
    #[error("the token is signed with {0:?}, which its issuer does not allow")]
    AlgorithmNotAllowed(String),
    #[error("the key named by the token is not a key for {0} (the key type does not match the algorithm)")]
    KeyTypeMismatch(&'static str),
    #[error("the token was not issued by an issuer this route accepts")]
    WrongIssuer,
    #[error("the token names a key (kid) that its issuer does not have")]
    UnknownKey,
    #[error("the token names no key its issuer has (kid), and the issuer has {keys} keys for {alg}: a token must name its key when its issuer has more than {max}", max = crate::keys::MAX_SIGNATURE_CHECKS)]
    TooManyKeys { alg: &'static str, keys: usize },
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired at {exp} (now {now}, leeway {leeway}s)")]
    Expired { exp: i64, now: i64, leeway: u64 },
    #[error("the token is not valid before {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid { nbf: i64, now: i64, leeway: u64 },
    #[error("the token was issued in the future, at {iat} (now {now}, leeway {leeway}s)")]
    IssuedInFuture { iat: i64, now: i64, leeway: u64 },
    #[error(
        "the token is not meant for this service: its aud does not contain an accepted audience"
    )]
    WrongAudience,
    #[error("the token's claim {claim} cannot be sent as a header: {why}")]
    UnsafeClaim { claim: String, why: &'static str },
    #[error("the token lacks what this route requires: {0}")]
    Insufficient(String),
    // Step-up, one-time tokens, theft signals (issue 20).
    /// RFC 9470: the user must authenticate again, more recently or more strongly.
    #[error("{0}")]
    StepUp(Box<stepup::StepUpFailure>),
    #[error("the token has no jti, which this route needs to let each token pass only once")]
    NoJti,
    #[error("the token has been used before, and this route lets each token pass only once")]
    Replayed,
    #[error(
        "the token was used from more client addresses than allowed, a sign that it was stolen"
    )]
    Anomaly,
    /// A denylist entry refuses the token (SPEC "Revocation").
    #[error("the token has been revoked")]
    Revoked,
    // Sender-constrained tokens (RFC 9449 DPoP, RFC 8705 certificate-bound).
    #[error("the DPoP proof is not valid: {0}")]
    DpopInvalid(&'static str),
    #[error("the DPoP proof's iat {iat} is outside the accepted window (now {now}, {window}s either way)")]
    DpopTime { iat: i64, now: i64, window: i64 },
    #[error("the DPoP proof must carry the nonce the server provides in DPoP-Nonce")]
    DpopNonce,
    #[error("the DPoP proof was already used (its jti was seen before)")]
    DpopReplay,
    #[error(
        "the DPoP proof is signed by another key than the one the token is bound to (cnf.jkt)"
    )]
    DpopKeyMismatch,
    #[error("{0}")]
    BindingMismatch(&'static str),
}

impl AuthError {
    /// The metrics/log reason for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            AuthError::Missing => Reason::Missing,
            AuthError::TooLong { .. }
            | AuthError::Malformed(_)
            | AuthError::MalformedJson(_)
            | AuthError::Header(_)
            | AuthError::Typ(_)
            | AuthError::UnsafeClaim { .. } => Reason::Malformed,
            AuthError::AlgorithmNotAllowed(_) | AuthError::KeyTypeMismatch(_) => {
                Reason::AlgorithmNotAllowed
            }
            AuthError::WrongIssuer => Reason::WrongIssuer,
            AuthError::UnknownKey | AuthError::TooManyKeys { .. } => Reason::UnknownKey,
            AuthError::BadSignature => Reason::BadSignature,
            AuthError::Expired { .. } => Reason::Expired,
            AuthError::NotYetValid { .. } | AuthError::IssuedInFuture { .. } => Reason::NotYetValid,
            AuthError::WrongAudience => Reason::WrongAudience,
            AuthError::Insufficient(_) => Reason::InsufficientClaims,
            AuthError::StepUp(_) => Reason::InsufficientUserAuthentication,
            AuthError::NoJti => Reason::InsufficientClaims,
            AuthError::Replayed => Reason::Replayed,
            AuthError::Anomaly => Reason::Anomaly,
            AuthError::Revoked => Reason::Revoked,
            AuthError::DpopInvalid(_) | AuthError::DpopTime { .. } | AuthError::DpopNonce => {
                Reason::DpopInvalid
            }
            AuthError::DpopReplay => Reason::DpopReplay,
            AuthError::BindingMismatch(_) | AuthError::DpopKeyMismatch => Reason::BindingMismatch,
        }
    }
}

//! Sender-constrained tokens on the request path (SPEC "Sender-constrained tokens"): the `DPoP`
//! header taken out of every request, a verified token's binding (`cnf`) checked against its
//! DPoP proof or the connection's client certificate, on every request (verified-token cache
//! hits included), and refusals turned into `DPoP` challenges (RFC 9449 §7.1).

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::answer::{DpopRefusal, ProxyError};
use super::bearer::Source;
use super::headers::{X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PROTO};
use crate::auth::{binding, dpop, AuthError, Issuer, Verified};
use crate::config::RouteConfig;
use crate::replay::{ReplayCache, WhenDown};
use crate::server::ConnInfo;
use crate::state::Snapshot;
use crate::unix_now;

/// The `DPoP` request header (the proof).
pub static DPOP: HeaderName = HeaderName::from_static("dpop");
/// The `DPoP-Nonce` response header (RFC 9449 §8).
pub static DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");
/// The replay cache namespace of proof `jti`s.
const REPLAY_NAMESPACE: &str = "dpop";

/// Removes the `DPoP` header, so it never reaches the upstream on any route, and returns it.
/// Two are a 400 (RFC 9449 §4.3 step 1: exactly one).
pub fn take_proof(headers: &mut HeaderMap) -> Result<Option<HeaderValue>, ProxyError> {
    let mut all = headers.get_all(&DPOP).iter();
    if all.next().is_none() {
        return Ok(None);
    }
    let two = all.next().is_some();
    let proof = headers.remove(&DPOP);
    if two {
        return Err(ProxyError::BadRequest(
            "the request has more than one DPoP header: send exactly one proof",
        ));
    }
    Ok(proof)
}

/// What the binding checks read of one request.
pub struct Presented<'a> {
    pub parts: &'a http::request::Parts,
    pub conn: &'a ConnInfo,
    /// The request's authority as sent (Host or `:authority`).
    pub host: Option<&'a HeaderValue>,
    pub token: &'a str,
    /// Where the token came from: `Authorization: DPoP` is [`Source::DpopHeader`].
    pub source: Source,
    /// The `DPoP` header, taken out by [`take_proof`].
    pub proof: Option<&'a HeaderValue>,
}

impl Presented<'_> {
    /// True when the request used the `DPoP` authorization scheme.
    pub fn dpop_scheme(&self) -> bool {
        self.source == Source::DpopHeader
    }

    /// Checks a verified token's binding: a DPoP-bound token needs the `DPoP` scheme and a
    /// valid, unused proof; a certificate-bound one this connection's certificate; an unbound
    /// one neither the `DPoP` scheme nor a route with `require_binding`. Returns a fresh nonce
    /// for the answer when the proof's is about to expire.
    pub async fn check_binding(
        &self,
        replay: &ReplayCache,
        snap: &Snapshot,
        route: &RouteConfig,
        v: &Verified,
    ) -> Result<Option<String>, ProxyError> {
        let issuer = &snap.issuers[v.issuer];
        let cnf = binding::cnf(&v.claims).map_err(|e| self.refuse(e, issuer, false))?;
        let dpop_bound = cnf.jkt.is_some();
        let refuse = |e| self.refuse(e, issuer, dpop_bound || self.dpop_scheme());
        if self.dpop_scheme() && !dpop_bound {
            return Err(refuse(AuthError::BindingMismatch(
                "the token is not DPoP-bound (it has no cnf.jkt): send it with the Bearer scheme",
            )));
        }
        if cnf.is_unbound() {
            if route.require_binding {
                return Err(refuse(AuthError::BindingMismatch(
                    "this route requires a sender-constrained token (cnf: DPoP- or certificate-bound)",
                )));
            }
            return Ok(None);
        }
        if let Some(x5t) = cnf.x5t {
            binding::check_certificate(x5t, self.conn.client_cert_sha256.as_ref())
                .map_err(refuse)?;
        }
        let Some(jkt) = cnf.jkt else {
            return Ok(None);
        };
        if !self.dpop_scheme() {
            return Err(refuse(AuthError::BindingMismatch(
                "the token is DPoP-bound (cnf.jkt): send it as Authorization: DPoP with a DPoP proof",
            )));
        }
        let Some(proof) = self.proof else {
            return Err(refuse(AuthError::DpopInvalid(
                "no DPoP header (proof) was sent",
            )));
        };
        let proof = proof
            .to_str()
            .map_err(|_| refuse(AuthError::DpopInvalid("the DPoP header is not ASCII")))?;
        let htu = self.htu(snap).ok_or_else(|| {
            refuse(AuthError::DpopInvalid(
                "the request's scheme and host do not form a URI to compare htu with",
            ))
        })?;
        let now = unix_now();
        let request = dpop::ProofRequest {
            method: self.parts.method.as_str(),
            htu: &htu,
            access_token: self.token,
            jkt,
            now,
        };
        let checked = dpop::check(proof, &issuer.dpop, &request).map_err(refuse)?;
        // Last, so only proofs that passed everything else take room in the cache. While
        // Redis is down each replica remembers on its own (SPEC: logged, counted).
        let until = crate::unix_secs(checked.until);
        let first = match replay
            .first_use(REPLAY_NAMESPACE, &checked.replay_id, until, WhenDown::Local)
            .await
        {
            Ok(first) => first,
            // Only a memory cache full of unexpired ids gets here (Redis being down falls back
            // to memory): a proof that cannot be checked for replay never passes, and the
            // client may retry once ids expire (503, like a one_time route).
            Err(e) => {
                tracing::warn!(error = %e, "DPoP proof answered 503: its jti cannot be checked for replay");
                return Err(ProxyError::ReplayUnavailable {
                    retry_after_secs: super::defenses::REPLAY_RETRY_AFTER_SECS,
                });
            }
        };
        if !first {
            return Err(refuse(AuthError::DpopReplay));
        }
        Ok(checked
            .nonce_stale
            .then(|| issuer.dpop.nonce.as_ref().map(|k| k.issue(now)))
            .flatten())
    }

    fn refuse(&self, error: AuthError, issuer: &Issuer, dpop_context: bool) -> ProxyError {
        if !dpop_context {
            return ProxyError::Auth(error);
        }
        let nonce = match error {
            AuthError::DpopNonce => issuer.dpop.nonce.as_ref().map(|k| k.issue(unix_now())),
            _ => None,
        };
        ProxyError::Dpop(Box::new(DpopRefusal {
            error,
            algs: issuer.dpop.algs.clone(),
            nonce,
        }))
    }

    /// The URI the client used, normalised: the listener's scheme and the Host, or the
    /// `X-Forwarded-Proto`/`-Host`/`-Port` of a peer in `trusted_proxies` (their first value:
    /// the proxy nearest the client), and the path as sent.
    fn htu(&self, snap: &Snapshot) -> Option<String> {
        let headers = &self.parts.headers;
        let trusted = snap.headers.is_trusted(self.conn.peer.ip());
        let forwarded = |name: &HeaderName| -> Option<&str> {
            if !trusted {
                return None;
            }
            let v = headers.get(name)?.to_str().ok()?;
            Some(v.split(',').next()?.trim()).filter(|v| !v.is_empty())
        };
        let scheme =
            forwarded(&X_FORWARDED_PROTO).unwrap_or(if self.conn.tls { "https" } else { "http" });
        let host: Cow<'_, str> = match forwarded(&X_FORWARDED_HOST) {
            Some(h) => match forwarded(&X_FORWARDED_PORT) {
                Some(port) if !has_port(h) => Cow::Owned(format!("{h}:{port}")),
                _ => Cow::Borrowed(h),
            },
            None => Cow::Borrowed(self.host?.to_str().ok()?),
        };
        dpop::request_htu(scheme, &host, self.parts.uri.path())
    }
}

/// True when an authority names a port (`host:8443`, `[::1]:8443`).
fn has_port(authority: &str) -> bool {
    authority
        .rfind(':')
        .is_some_and(|i| !authority[i..].contains(']'))
}

/// A refusal of the token itself (verification, denylist, requirements, step-up, one_time) as
/// the answer to a token that came from `source`: a `DPoP` challenge naming the algorithms of
/// the route's issuers when the request used the `DPoP` scheme, else unchanged.
pub fn challenge(
    source: Source,
    e: ProxyError,
    snap: &Snapshot,
    route: &RouteConfig,
) -> ProxyError {
    match e {
        ProxyError::Auth(error) if source == Source::DpopHeader => {
            let mut algs: Vec<&str> = Vec::new();
            for &i in &route.issuers {
                for a in &snap.issuers[i].dpop.algorithms {
                    if !algs.contains(&a.as_str()) {
                        algs.push(a.as_str());
                    }
                }
            }
            ProxyError::Dpop(Box::new(DpopRefusal {
                error,
                algs: algs.join(" "),
                nonce: None,
            }))
        }
        e => e,
    }
}

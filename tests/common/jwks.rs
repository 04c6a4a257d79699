//! A JWKS (and discovery) provider whose documents, health and speed tests change at runtime,
//! and EC signing keys made in the test (keys the gateway has never seen, for rotation).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{b64, claims};

/// An EC P-256 signing key with its kid.
pub struct Signer {
    pub kid: String,
    kp: EcdsaKeyPair,
}

impl Signer {
    /// A new key named `kid`.
    pub fn new(kid: &str) -> Signer {
        Signer {
            kid: kid.to_owned(),
            kp: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec keygen"),
        }
    }

    /// The public JWK (`kid` and `use: sig`), as a provider publishes it.
    pub fn jwk(&self) -> Value {
        self.jwk_with(json!({ "kid": self.kid, "use": "sig" }))
    }

    /// The bare public JWK (`kty`, `crv`, `x`, `y`) with the members of `extra` added.
    pub fn jwk_with(&self, extra: Value) -> Value {
        let p = self.kp.public_key().as_ref();
        let mut j = json!({ "kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..]) });
        if let (Some(o), Value::Object(e)) = (j.as_object_mut(), extra) {
            o.extend(e);
        }
        j
    }

    /// The public key as an SPKI PEM file.
    pub fn pem(&self) -> String {
        let der = self.kp.public_key().as_der().expect("spki der");
        pem::encode(&pem::Pem::new("PUBLIC KEY", der.as_ref().to_vec()))
    }

    /// ES256 over `header.payload`, both raw JSON text.
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = self
            .kp
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("es256 sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }

    /// ES256 with `header` (raw JSON text) over the default valid claims.
    pub fn sign_header(&self, header: &str) -> String {
        self.sign_raw(header, &claims().to_string())
    }

    /// A valid token for the default issuer, signed now, naming this key's kid.
    pub fn token(&self) -> String {
        self.token_with_kid(&self.kid)
    }

    /// A token signed with this key but naming `kid`.
    pub fn token_with_kid(&self, kid: &str) -> String {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
        self.sign_header(&header.to_string())
    }
}

/// A JWK Set holding `signers`' public keys.
pub fn jwks_of(signers: &[&Signer]) -> String {
    json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() }).to_string()
}

/// The path of an OpenID discovery document (under any prefix).
const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

/// What a [`Provider`] serves and records.
#[derive(Default)]
pub struct ProviderState {
    /// The document served at each path (404 elsewhere).
    docs: Mutex<HashMap<String, String>>,
    /// `Cache-Control` on key-set answers (not on discovery documents).
    pub cache_control: Mutex<Option<String>>,
    /// Answer 503 to every known path.
    pub down: AtomicBool,
    /// Answer this late (the document is read when the request arrives).
    pub delay_ms: AtomicU64,
    /// When each key-set request (a known path other than discovery) arrived.
    fetches: Mutex<Vec<Instant>>,
    /// Discovery documents served.
    pub discovery_fetches: AtomicUsize,
    /// Every request, answered or 404.
    pub hits: AtomicUsize,
}

fn reply(status: u16, body: String, cache: Option<String>) -> http::Response<Full<Bytes>> {
    let mut b = http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(c) = cache {
        b = b.header("cache-control", c);
    }
    b.body(Full::new(Bytes::from(body))).expect("response")
}

impl ProviderState {
    async fn answer(&self, path: &str) -> http::Response<Full<Bytes>> {
        self.hits.fetch_add(1, SeqCst);
        let Some(body) = self.docs.lock().expect("lock").get(path).cloned() else {
            return reply(404, "{}".into(), None);
        };
        let cache = if path.ends_with(DISCOVERY_SUFFIX) {
            self.discovery_fetches.fetch_add(1, SeqCst);
            None
        } else {
            self.fetches.lock().expect("lock").push(Instant::now());
            self.cache_control.lock().expect("lock").clone()
        };
        let delay = self.delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.down.load(SeqCst) {
            return reply(503, "{\"error\":\"down\"}".into(), None);
        }
        reply(200, body, cache)
    }
}

/// A running provider on 127.0.0.1; stops when dropped.
pub struct Provider {
    pub addr: SocketAddr,
    pub s: Arc<ProviderState>,
    _stop: oneshot::Sender<()>,
}

/// The key-set URL of a provider at `addr`.
pub fn jwks_url(addr: SocketAddr) -> String {
    format!("http://{addr}/jwks.json")
}

impl Provider {
    /// A provider serving nothing yet (see [`Provider::set`]).
    pub async fn start() -> Provider {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind provider");
        Provider::serve_on(l)
    }

    /// A provider serving `jwks` at `/jwks.json` and `/keys`.
    pub async fn with_jwks(jwks: String) -> Provider {
        let p = Provider::start().await;
        p.set_jwks(jwks);
        p
    }

    /// A provider on a listener the test bound (and maybe started listening on late).
    pub fn serve_on(listener: TcpListener) -> Provider {
        let addr = listener.local_addr().expect("provider addr");
        let s = Arc::new(ProviderState::default());
        let (stop, mut stopped) = oneshot::channel::<()>();
        let state = s.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = &mut stopped => return,
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.answer(req.uri().path()).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Provider {
            addr,
            s,
            _stop: stop,
        }
    }

    /// Its key-set URL (`/jwks.json`).
    pub fn url(&self) -> String {
        jwks_url(self.addr)
    }

    /// Serves `doc` at `path`.
    pub fn set(&self, path: &str, doc: String) {
        self.s.docs.lock().expect("lock").insert(path.into(), doc);
    }

    /// Serves `jwks` at `/jwks.json` and `/keys`.
    pub fn set_jwks(&self, jwks: String) {
        self.set("/keys", jwks.clone());
        self.set("/jwks.json", jwks);
    }

    /// Serves `doc` at `/.well-known/openid-configuration`.
    pub fn set_discovery(&self, doc: String) {
        self.set(DISCOVERY_SUFFIX, doc);
    }

    /// Key-set requests so far.
    pub fn fetches(&self) -> usize {
        self.s.fetches.lock().expect("lock").len()
    }

    /// When each key-set request arrived.
    pub fn fetch_times(&self) -> Vec<Instant> {
        self.s.fetches.lock().expect("lock").clone()
    }

    /// Answers 503 (or again 200).
    pub fn set_down(&self, down: bool) {
        self.s.down.store(down, SeqCst);
    }
}

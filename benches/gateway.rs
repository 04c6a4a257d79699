//! Micro-benchmarks of the request path (issue 6), run with
//! `cargo bench --bench gateway` (add `-- --warm-up-time 1 --measurement-time 2` for a short
//! run, or a filter such as `-- verify/`):
//!
//! - `verify/*`: one token through `jwtgate::auth::verify` (structure, issuer, algorithm,
//!   signature, times, audience, subject) per algorithm, next to `jsonwebtoken::decode` with
//!   the same key as a reference, and `parse` alone (everything but the signature).
//! - `routes/*`: `RouteTable::find` on a table of 1,000 routes (exact hosts, wildcard hosts,
//!   host-less prefixes; a segment trie per host group): a hit, a host hit, a miss, path
//!   normalisation plus lookup, and compiling the table.
//! - `headers/*`: the header plan of a 1,000-route config: stripping a client's headers, and
//!   strip plus claim headers (claim values read from verified claims, then `prepare`).
//! - `handle/*`: one HTTP/1.1 round trip over a kept-alive connection through the whole
//!   gateway (`jwtgate::run`) to the in-process echo upstream, for a route without auth and a
//!   `required` route per algorithm (a repeated token, so `auth_required/*` is served from the
//!   verified-token cache; `auth_required_uncached/*` is a second gateway with
//!   `token_cache_entries = 0`), with the echo upstream called directly as the floor.
//!
//! - `handle/session_*`: a `auth = "session"` route answering a request with a sealed session
//!   cookie next to the same request with the same (repeated) token as a bearer token.
//!
//! The same binary has a second use: `benches/load.sh` mints its token lists with it, since
//! signing 20,000 RS256 tokens one `jwtgate dev-token` process at a time is slow. That mode
//! runs only when `JWTGATE_BENCH_MINT` is set (see [`mint`]).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use aws_lc_rs::{hmac, rsa};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use jwtgate::auth::{self, claims as auth_claims};
use jwtgate::proxy::bearer::Source;
use jwtgate::proxy::headers::Forward;
use jwtgate::routes::RouteTable;
use jwtgate::{Config, Snapshot};

const ISS: &str = "https://issuer.bench/";
const AUD: &str = "bench-api";
const ROUTES: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// Keys and tokens (the same construction as tests/common/mod.rs)
// ---------------------------------------------------------------------------------------------

struct Keys {
    rsa: RsaKeyPair,
    ec256: EcdsaKeyPair,
    ed25519: Ed25519KeyPair,
    hmac_secret: Vec<u8>,
}

impl Keys {
    fn generate() -> Keys {
        let mut secret = vec![0u8; 48];
        aws_lc_rs::rand::fill(&mut secret).expect("rand");
        Keys {
            rsa: RsaKeyPair::generate(rsa::KeySize::Rsa2048).expect("rsa keygen"),
            ec256: EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec256"),
            ed25519: Ed25519KeyPair::generate().expect("ed25519"),
            hmac_secret: secret
                .iter()
                .map(|b| b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(*b) % 36])
                .collect(),
        }
    }

    /// Writes `jwks.json` (kids `rsa`, `ec256`, `ed25519`, `hmac`) into `dir`.
    fn write_jwks(&self, dir: &Path) {
        let comps = rsa::PublicKeyComponents::<Vec<u8>>::from(self.rsa.public_key());
        let p256 = self.ec256.public_key().as_ref().to_vec();
        let jwks = json!({ "keys": [
            { "kty": "RSA", "kid": "rsa", "n": b64(&comps.n), "e": b64(&comps.e) },
            { "kty": "EC", "kid": "ec256", "crv": "P-256", "x": b64(&p256[1..33]), "y": b64(&p256[33..]) },
            { "kty": "OKP", "kid": "ed25519", "crv": "Ed25519", "x": b64(self.ed25519.public_key().as_ref()) },
            { "kty": "oct", "kid": "hmac", "k": b64(&self.hmac_secret) },
        ]});
        std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("write jwks.json");
    }

    fn sign(&self, alg: &str, claims: &Value) -> String {
        let kid = match alg {
            "HS256" => "hmac",
            "RS256" => "rsa",
            "ES256" => "ec256",
            "EdDSA" => "ed25519",
            other => panic!("no bench key for {other}"),
        };
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let msg = input.as_bytes();
        let rng = SystemRandom::new();
        let signature = match alg {
            "HS256" => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.hmac_secret), msg)
                .as_ref()
                .to_vec(),
            "RS256" => {
                let mut out = vec![0u8; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(&sig::RSA_PKCS1_SHA256, &rng, msg, &mut out)
                    .expect("rsa sign");
                out
            }
            "ES256" => self.ec256.sign(&rng, msg).expect("es256").as_ref().to_vec(),
            _ => self.ed25519.sign(msg).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }

    /// The same key as a `jsonwebtoken` decoding key, for the reference measurement.
    fn decoding_key(&self, alg: &str) -> jsonwebtoken::DecodingKey {
        match alg {
            "HS256" => jsonwebtoken::DecodingKey::from_secret(&self.hmac_secret),
            "RS256" => {
                let c = rsa::PublicKeyComponents::<Vec<u8>>::from(self.rsa.public_key());
                jsonwebtoken::DecodingKey::from_rsa_components(&b64(&c.n), &b64(&c.e))
                    .expect("rsa components")
            }
            "ES256" => {
                let p = self.ec256.public_key().as_ref();
                jsonwebtoken::DecodingKey::from_ec_components(&b64(&p[1..33]), &b64(&p[33..]))
                    .expect("ec components")
            }
            _ => jsonwebtoken::DecodingKey::from_ed_der(self.ed25519.public_key().as_ref()),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Claims of a typical access token: the registered ones, an e-mail, realm roles and a scope.
fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "iat": now(), "exp": now() + 3600,
        "email": "alice@example.com",
        "realm_access": { "roles": ["orders:read", "orders:write", "admin"] },
        "scope": "openid profile orders:read",
    })
}

const ALGS: [&str; 4] = ["HS256", "RS256", "ES256", "EdDSA"];

/// A config whose one issuer reads `jwks.json` and accepts every benchmarked algorithm.
fn issuer_toml() -> String {
    format!(
        r#"
[[issuer]]
name = "bench"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["HS256", "RS256", "ES256", "EdDSA"]
jwks_file = "jwks.json"
"#
    )
}

/// 1,000 routes: 100 on ten exact hosts, 100 on ten wildcard hosts, 800 without a host
/// (`/api/team{t}/svc{s}`), none of them a catch-all, so a miss looks at every candidate.
/// Every route names the same three claim headers and every tenth route one of its own.
fn thousand_routes(upstream: &str) -> String {
    let mut s = String::with_capacity(ROUTES * 220);
    for i in 0..ROUTES {
        let (host, prefix) = match i {
            0..=99 => (
                format!("host = \"svc{}.example.com\"\n", i % 10),
                format!("/v{}/items", i / 10),
            ),
            100..=199 => (
                format!("host = \"*.tenant{}.example.com\"\n", i % 10),
                format!("/v{}/things", i / 10),
            ),
            _ => (String::new(), format!("/api/team{}/svc{}", i / 10, i % 10)),
        };
        s.push_str(&format!(
            "\n[[route]]\nname = \"r{i}\"\n{host}path_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\nauth = \"required\"\n[route.claim_headers]\n\"X-Auth-Sub\" = \"sub\"\n\"X-Auth-Email\" = \"email\"\n\"X-Auth-Roles\" = \"/realm_access/roles\"\n"
        ));
        if i % 10 == 0 {
            s.push_str(&format!("\"X-Tenant-{}\" = \"tenant\"\n", i / 10));
        }
    }
    s
}

/// Writes the keys and parses `body` (issuer and routes) as a config file in `dir`.
fn config(dir: &Path, keys: &Keys, body: &str) -> Config {
    keys.write_jwks(dir);
    let text = format!("[listen]\naddr = \"127.0.0.1:0\"\n{}{body}", issuer_toml());
    let path = dir.join("gateway.toml");
    std::fs::write(&path, &text).expect("write config");
    Config::parse(&path, &text).unwrap_or_else(|e| panic!("bench config refused:\n{e}"))
}

// ---------------------------------------------------------------------------------------------
// verify/*
// ---------------------------------------------------------------------------------------------

fn bench_verify(c: &mut Criterion, keys: &Keys) {
    let dir = tempfile::tempdir().expect("tempdir");
    let route = r#"
[[route]]
name = "all"
path_prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "required"
"#;
    let snapshot = Snapshot::build(config(dir.path(), keys, route)).expect("snapshot");
    let claims = claims();
    let mut g = c.benchmark_group("verify");
    for alg in ALGS {
        let token = keys.sign(alg, &claims);
        let t = now();
        auth::verify(&token, &snapshot.issuers, &[0], 8192, t).expect("bench token verifies");
        g.bench_function(format!("jwtgate/{alg}"), |b| {
            b.iter(|| auth::verify(black_box(&token), &snapshot.issuers, &[0], 8192, t))
        });

        let key = keys.decoding_key(alg);
        let mut validation = jsonwebtoken::Validation::new(alg.parse().expect("jsonwebtoken alg"));
        validation.set_issuer(&[ISS]);
        validation.set_audience(&[AUD]);
        jsonwebtoken::decode::<Map<String, Value>>(&token, &key, &validation)
            .expect("jsonwebtoken accepts the bench token");
        g.bench_function(format!("jsonwebtoken/{alg}"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<Map<String, Value>>(black_box(&token), &key, &validation)
            })
        });
    }
    let token = keys.sign("ES256", &claims);
    g.bench_function("parse_only/ES256", |b| {
        b.iter(|| auth::parse(black_box(&token), &snapshot.issuers, &[0], 8192).map(|p| p.alg))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// routes/*
// ---------------------------------------------------------------------------------------------

fn bench_routes(c: &mut Criterion, keys: &Keys) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), keys, &thousand_routes("http://127.0.0.1:9"));
    let routes = &cfg.routes;
    assert_eq!(routes.len(), ROUTES);
    let table = RouteTable::new(routes);
    let get = Method::GET;
    let cases: [(&str, &str, &str, Option<&str>); 4] = [
        // A host-less route in the middle of the 800.
        (
            "hit_prefix",
            "api.example.com",
            "/api/team47/svc3/orders/42",
            Some("r473"),
        ),
        // An exact host: its own small group is searched first.
        (
            "hit_exact_host",
            "svc3.example.com",
            "/v5/items/7",
            Some("r53"),
        ),
        // A wildcard host.
        (
            "hit_wildcard_host",
            "a.tenant4.example.com",
            "/v19/things/x",
            Some("r194"),
        ),
        // No route: one wildcard lookup per label of the Host, then all 800 host-less prefixes.
        ("miss", "api.example.com", "/nothing/here", None),
    ];
    let mut g = c.benchmark_group("routes");
    for (name, host, path, want) in cases {
        let found = table
            .find(routes, host, path, &get)
            .map(|i| routes[i].name.as_str());
        assert_eq!(found, want, "route case {name}");
        g.bench_function(format!("find_1000/{name}"), |b| {
            b.iter(|| table.find(routes, black_box(host), black_box(path), &get))
        });
    }
    // What the request path does per request: normalise the raw path, then look it up.
    let raw = "/api/team47/./svc3/%6Frders//42";
    assert_eq!(
        jwtgate::path::normalize(raw).ok().as_deref(),
        Some("/api/team47/svc3/orders/42")
    );
    g.bench_function("normalize_and_find_1000", |b| {
        b.iter(|| {
            let path = jwtgate::path::normalize(black_box(raw)).expect("normalizes");
            table.find(routes, "api.example.com", &path, &get)
        })
    });
    // What a config reload pays to compile the table.
    g.bench_function("build_table_1000", |b| {
        b.iter(|| RouteTable::new(black_box(routes)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// headers/*
// ---------------------------------------------------------------------------------------------

/// The claim headers of `route` for verified `claims`, as the request path computes them.
fn claim_values<'r>(
    route: &'r jwtgate::config::RouteConfig,
    claims: &Map<String, Value>,
) -> Vec<(&'r HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(route.claim_headers.len());
    for (name, path) in &route.claim_headers {
        if let Some(v) = auth_claims::header_value(claims, path).expect("claim value") {
            out.push((name, v));
        }
    }
    out
}

/// A typical API client's request headers, with a token, a spoofed claim header in both
/// spellings, a `Connection` list and an existing `X-Forwarded-For`.
fn inbound_headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |n: &'static str, v: &str| {
        h.append(
            HeaderName::from_static(n),
            HeaderValue::from_str(v).expect("header value"),
        );
    };
    add("host", "api.example.com");
    add("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0");
    add("accept", "application/json, text/plain, */*");
    add("accept-encoding", "gzip, deflate, br");
    add("accept-language", "en-GB,en;q=0.9");
    add("authorization", &format!("Bearer {token}"));
    add("connection", "keep-alive, x-debug");
    add("x-debug", "1");
    add("x-forwarded-for", "203.0.113.7");
    add("x-request-id", "7f3c2a9e-5d41-4c9b-8a6e-1b2c3d4e5f60");
    add(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    add("cookie", "theme=dark; session=abc123");
    add("content-type", "application/json");
    add("x-auth-sub", "mallory");
    add("x_auth_email", "mallory@example.com");
    h
}

fn bench_headers(c: &mut Criterion, keys: &Keys) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), keys, &thousand_routes("http://127.0.0.1:9"));
    let plan = jwtgate::proxy::headers::HeaderPlan::new(&cfg);
    let route = &cfg.routes[473];
    let token = keys.sign("ES256", &claims());
    let verified = claims().as_object().cloned().expect("claims object");
    let inbound = inbound_headers(&token);
    let host = HeaderValue::from_static("api.example.com");
    let client_ip = HeaderValue::from_static("198.51.100.23");
    let request_id = jwtgate::proxy::headers::request_id(&inbound);
    let forward = Forward {
        route,
        token_source: Some(Source::Header),
        tls: true,
        peer: std::net::IpAddr::from([198, 51, 100, 23]),
        client_ip: &client_ip,
        client_cert: None,
        host: Some(&host),
        websocket: false,
        request_id: &request_id,
    };
    // Check once that the plan does what the bench claims to measure.
    let mut check = inbound.clone();
    plan.prepare(&mut check, &forward, claim_values(route, &verified));
    assert_eq!(check.get_all("x-auth-sub").iter().count(), 1);
    assert_eq!(check["x-auth-sub"], "alice");
    assert_eq!(check["x-auth-roles"], "orders:read,orders:write,admin");
    assert!(check.get("x_auth_email").is_none() && check.get("authorization").is_none());
    assert!(check.get("x-debug").is_none());

    let mut g = c.benchmark_group("headers");
    g.bench_function("strip_1000_routes", |b| {
        b.iter_batched(
            || inbound.clone(),
            |mut h| {
                plan.strip_request(&mut h, false);
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("strip_and_claims_1000_routes", |b| {
        b.iter_batched(
            || inbound.clone(),
            |mut h| {
                plan.prepare(&mut h, &forward, claim_values(route, &verified));
                h
            },
            BatchSize::SmallInput,
        )
    });
    // The clone that feeds each iteration above, to subtract.
    g.bench_function("clone_headers_only", |b| {
        b.iter(|| black_box(&inbound).clone())
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// handle/*
// ---------------------------------------------------------------------------------------------

/// The echo upstream and the gateway on 127.0.0.1:0, served by `rt` until dropped.
struct Running {
    gateway: String,
    echo: String,
    _dir: tempfile::TempDir,
    _stop: Vec<oneshot::Sender<()>>,
}

/// `limits` is the gateway's `[limits]` table (empty for the defaults).
fn start(rt: &tokio::runtime::Runtime, keys: &Keys, limits: &str) -> Running {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let echo = format!("http://{}", up.local_addr().expect("addr"));
        // `limits` may hold more routes to the same echo upstream.
        let limits = limits.replace("{echo}", &echo);
        let (stop_echo, echo_stopped) = oneshot::channel::<()>();
        tokio::spawn(jwtgate::echo::serve(up, async move {
            let _ = echo_stopped.await;
        }));
        let body = format!(
            r#"
{limits}
[[route]]
name = "open"
path_prefix = "/open"
upstream = "{echo}"
auth = "none"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "api"
path_prefix = "/api"
upstream = "{echo}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Roles" = "/realm_access/roles"
"#
        );
        let metrics = jwtgate::metrics::Metrics::new();
        let snapshot = Snapshot::build_from(config(dir.path(), keys, &body), None, &metrics)
            .expect("snapshot");
        let app = std::sync::Arc::new(
            jwtgate::App::new(snapshot, metrics, None).expect("gateway starts"),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let gateway = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop_gw, gw_stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            jwtgate::run(listener, app, async move {
                let _ = gw_stopped.await;
            })
            .await;
        });
        Running {
            gateway,
            echo,
            _dir: dir,
            _stop: vec![stop_echo, stop_gw],
        }
    })
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One GET, read whole; panics unless it is a 200 (a bench of 401s would measure nothing).
async fn round_trip(client: &HttpClient, url: &str, auth: Option<&HeaderValue>) -> usize {
    let mut req = http::Request::get(url);
    if let Some(a) = auth {
        req = req.header(http::header::AUTHORIZATION, a.clone());
    }
    let res = client
        .request(req.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("gateway answers");
    let status = res.status();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body.len()
}

fn bench_handle(c: &mut Criterion, keys: &Keys) {
    // One thread runs the client, the gateway and the echo upstream: the differences between
    // the cases are the gateway's work, not scheduling between threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let running = start(&rt, keys, "");
    // The same gateway without its verified-token cache: every request verifies in full, as
    // when every request carries a token the gateway has not seen.
    let uncached = start(&rt, keys, "[limits]\ntoken_cache_entries = 0\n");
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(300))
        .build_http();
    let claims = claims();

    let mut cases: Vec<(String, String, Option<HeaderValue>)> = vec![
        (
            "echo_direct".into(),
            format!("{}/open/x", running.echo),
            None,
        ),
        (
            "auth_none".into(),
            format!("{}/open/x", running.gateway),
            None,
        ),
    ];
    for alg in ["HS256", "RS256", "ES256"] {
        let bearer = format!("Bearer {}", keys.sign(alg, &claims));
        cases.push((
            format!("auth_required/{alg}"),
            format!("{}/api/x", running.gateway),
            Some(HeaderValue::from_str(&bearer).expect("bearer")),
        ));
        cases.push((
            format!("auth_required_uncached/{alg}"),
            format!("{}/api/x", uncached.gateway),
            Some(HeaderValue::from_str(&bearer).expect("bearer")),
        ));
    }
    let mut g = c.benchmark_group("handle");
    for (name, url, auth) in &cases {
        // Warms the pooled connection and proves the case answers 200.
        rt.block_on(round_trip(&client, url, auth.as_ref()));
        g.bench_function(name.as_str(), |b| {
            b.iter(|| rt.block_on(round_trip(&client, url, auth.as_ref())))
        });
    }
    g.finish();
    drop(client);
    drop(running);
    drop(uncached);
}

// ---------------------------------------------------------------------------------------------
// Token minting for benches/load.sh
// ---------------------------------------------------------------------------------------------

/// `JWTGATE_BENCH_MINT=1 <bench binary> ALG PKCS8_PEM_OR_SECRET_FILE COUNT OUT ISS AUD KID`
/// writes COUNT distinct tokens (subject `user-<n>`, valid for two hours), one a line, to OUT,
/// signing on every CPU. ALG is HS256, RS256 or ES256; the key file holds a PKCS#8 PEM
/// private key, or the HMAC secret.
mod mint {
    use super::*;

    enum Signer {
        Hmac(Box<hmac::Key>),
        Rsa(RsaKeyPair),
        Ec(EcdsaKeyPair),
    }

    impl Signer {
        fn sign(&self, msg: &[u8], rng: &SystemRandom) -> Vec<u8> {
            match self {
                Signer::Hmac(k) => hmac::sign(k, msg).as_ref().to_vec(),
                Signer::Rsa(k) => {
                    let mut out = vec![0u8; k.public_modulus_len()];
                    k.sign(&sig::RSA_PKCS1_SHA256, rng, msg, &mut out)
                        .expect("rsa sign");
                    out
                }
                Signer::Ec(k) => k.sign(rng, msg).expect("ecdsa sign").as_ref().to_vec(),
            }
        }
    }

    fn pkcs8(path: &str) -> Vec<u8> {
        let text = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        pem::parse(text)
            .unwrap_or_else(|e| panic!("{path} is not PEM: {e}"))
            .into_contents()
    }

    pub fn run(args: &[String]) -> Result<(), String> {
        let [alg, key, count, out, iss, aud, kid] = args else {
            return Err(
                "usage: JWTGATE_BENCH_MINT=1 gateway ALG KEY_FILE COUNT OUT ISS AUD KID".into(),
            );
        };
        let count: usize = count.parse().map_err(|e| format!("COUNT: {e}"))?;
        let signer = match alg.as_str() {
            "HS256" => {
                let mut secret = std::fs::read(key).map_err(|e| format!("{key}: {e}"))?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                Signer::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, &secret)))
            }
            "RS256" => {
                Signer::Rsa(RsaKeyPair::from_pkcs8(&pkcs8(key)).map_err(|e| format!("{key}: {e}"))?)
            }
            "ES256" => Signer::Ec(
                EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8(key))
                    .map_err(|e| format!("{key}: {e}"))?,
            ),
            other => return Err(format!("ALG {other}: use HS256, RS256 or ES256")),
        };
        let header = b64(json!({ "alg": alg, "typ": "JWT", "kid": kid })
            .to_string()
            .as_bytes());
        let t = now();
        let text = lines_on_every_cpu(count as u64, |n| {
            let claims = json!({
                "iss": iss, "aud": aud, "sub": format!("user-{n}"),
                "iat": t, "exp": t + 7200,
            });
            let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
            let signature = signer.sign(input.as_bytes(), &SystemRandom::new());
            format!("{input}.{}", b64(&signature))
        });
        std::fs::write(out, text).map_err(|e| format!("{out}: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// dpop/* (issue 16): the cost of a DPoP request over the same request with a repeated bearer
// token. `dpop/check` is one proof through `auth::dpop::check` (structure, the proof's key,
// one ES256 signature, htm/htu/iat/ath); `dpop/handle_repeated_token` is a whole round trip
// with a repeated DPoP-bound token (a verified-token cache hit) and a fresh proof each time
// (made outside the measurement). Baselines in the same run: `verify/jwtgate/ES256` and
// `handle/auth_required/ES256` (repeated bearer) and `handle/auth_required_uncached/ES256`
// (a bearer token verified in full: one signature).
// ---------------------------------------------------------------------------------------------

/// A DPoP client key and proofs made with it.
struct ProofKey {
    kp: EcdsaKeyPair,
    jwk: Value,
    jkt: String,
}

impl ProofKey {
    fn new() -> ProofKey {
        let kp = EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec256");
        let p = kp.public_key().as_ref().to_vec();
        let (x, y) = (b64(&p[1..33]), b64(&p[33..]));
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let jkt = b64(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
        );
        let jwk = json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
        ProofKey { kp, jwk, jkt }
    }

    fn proof(&self, method: &str, htu: &str, token: &str, n: u64) -> String {
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk });
        let claims = json!({
            "jti": format!("bench-{n}"), "htm": method, "htu": htu, "iat": now(),
            "ath": auth::dpop::token_hash(token),
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .kp
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

fn bench_dpop(c: &mut Criterion, keys: &Keys) {
    let pk = ProofKey::new();
    let token = keys.sign("ES256", &{
        let mut c = claims();
        c["cnf"] = json!({ "jkt": pk.jkt });
        c
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let route = "[[route]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"required\"\n";
    let snapshot = Snapshot::build(config(dir.path(), keys, route)).expect("snapshot");
    let dpop = &snapshot.issuers[0].dpop;
    let htu = "http://127.0.0.1:8080/api/x";
    let mut g = c.benchmark_group("dpop");
    let proof = pk.proof("GET", htu, &token, 0);
    let request = auth::dpop::ProofRequest {
        method: "GET",
        htu,
        access_token: &token,
        jkt: &pk.jkt,
        now: now(),
    };
    auth::dpop::check(&proof, dpop, &request).expect("bench proof passes");
    g.bench_function("check/ES256", |b| {
        b.iter(|| auth::dpop::check(black_box(&proof), dpop, &request).map(|c| c.until))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let running = start(&rt, keys, "");
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(300))
        .build_http();
    let url = format!("{}/api/x", running.gateway);
    let auth_value = HeaderValue::from_str(&format!("DPoP {token}")).expect("header");
    let mut n = 0u64;
    let mut next_proof = || {
        n += 1;
        HeaderValue::from_str(&pk.proof("GET", &url, &token, n)).expect("proof header")
    };
    let send = |proof: HeaderValue| {
        let req = http::Request::get(&url)
            .header(http::header::AUTHORIZATION, auth_value.clone())
            .header("dpop", proof)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let client = &client;
        async move {
            let res = client.request(req).await.expect("gateway answers");
            let status = res.status();
            let body = res.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            body.len()
        }
    };
    rt.block_on(send(next_proof()));
    g.bench_function("handle_repeated_token/ES256", |b| {
        b.iter_batched(
            &mut next_proof,
            |proof| rt.block_on(send(proof)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(client);
    drop(running);
}

/// `line(n)` for n in 0..count, one a line, made on every CPU (minting signs a lot).
fn lines_on_every_cpu(count: u64, line: impl Fn(u64) -> String + Sync) -> String {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|w| {
                let line = &line;
                s.spawn(move || {
                    let mut text = String::new();
                    for n in (w..count).step_by(threads) {
                        text.push_str(&line(n));
                        text.push('\n');
                    }
                    text
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("minting thread"))
            .collect()
    });
    chunks.concat()
}

/// `JWTGATE_BENCH_MINT_DPOP=1 <bench binary> ES256_PKCS8_PEM COUNT TOKEN_OUT PROOFS_OUT ISS AUD KID HTU`
/// writes one ES256 access token bound (cnf.jkt) to a fresh DPoP key to TOKEN_OUT, and COUNT
/// proofs of that key for `GET HTU` with that token (distinct jti, iat now), one a line, to
/// PROOFS_OUT: the DPoP row of benches/load.sh.
fn mint_dpop(args: &[String]) -> Result<(), String> {
    let [key, count, token_out, proofs_out, iss, aud, kid, htu] = args else {
        return Err("usage: JWTGATE_BENCH_MINT_DPOP=1 gateway ES256_KEY COUNT TOKEN_OUT PROOFS_OUT ISS AUD KID HTU".into());
    };
    let count: u64 = count.parse().map_err(|e| format!("COUNT: {e}"))?;
    let issuer_key = es256_key(key)?;
    let pk = ProofKey::new();
    let t = now();
    let claims = json!({
        "iss": iss, "aud": aud, "sub": "dpop-user", "iat": t, "exp": t + 7200,
        "cnf": { "jkt": pk.jkt },
    });
    let token = sign_es256(&issuer_key, kid, &claims)?;
    std::fs::write(token_out, &token).map_err(|e| format!("{token_out}: {e}"))?;
    let proofs = lines_on_every_cpu(count, |n| pk.proof("GET", htu, &token, n));
    std::fs::write(proofs_out, proofs).map_err(|e| format!("{proofs_out}: {e}"))
}

/// A live session of `sub` created at `t` around `token` (two hours, no refresh token).
fn bench_session_of(token: &str, sub: &str, t: i64) -> jwtgate::session::cookie::Session {
    jwtgate::session::cookie::Session {
        id: "bench".into(),
        sub: sub.into(),
        sid: Some("sid-1".into()),
        iat: t,
        exp: t + 7200,
        idle: t + 3600,
        at: token.into(),
        at_iat: t,
        at_exp: t + 3600,
        rt: None,
        idt: None,
    }
}

/// The ES256 key of a PKCS#8 PEM file (the load script's issuer key).
fn es256_key(path: &str) -> Result<EcdsaKeyPair, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let der = pem::parse(pem)
        .map_err(|e| format!("{path}: {e}"))?
        .into_contents();
    EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|e| format!("{path}: {e}"))
}

/// A compact ES256 JWS of `claims` with `kid` in its header.
fn sign_es256(key: &EcdsaKeyPair, kid: &str, claims: &Value) -> Result<String, String> {
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(format!("{input}.{}", b64(signature.as_ref())))
}

/// `JWTGATE_BENCH_MINT_SESSION=1 <bench binary> ES256_PKCS8_PEM ISS AUD KID OUT_DIR` writes
/// into OUT_DIR what the session row of benches/load.sh needs: `cookie-keys` (one random
/// key), `token.txt` (an ES256 access token of ISS for AUD, 2 h), `cookie.txt` (a `Cookie`
/// header value with that token sealed in a session) and `jwks.json` (the key's public JWK).
fn mint_session(args: &[String]) -> Result<(), String> {
    use jwtgate::session::cookie::{Keyring, SESSION_COOKIE};
    let [key, iss, aud, kid, out] = args else {
        return Err(
            "usage: JWTGATE_BENCH_MINT_SESSION=1 gateway ES256_KEY ISS AUD KID OUT_DIR".into(),
        );
    };
    let out = Path::new(out);
    let signer = es256_key(key)?;
    let t = now();
    let claims = json!({ "iss": iss, "aud": aud, "sub": "session-user", "iat": t, "exp": t + 7200,
        "email": "session-user@example.com" });
    let token = sign_es256(&signer, kid, &claims)?;
    let mut ring_key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut ring_key).map_err(|e| e.to_string())?;
    let session = bench_session_of(&token, "session-user", t);
    let plain = serde_json::to_vec(&session).map_err(|e| e.to_string())?;
    let sealed = Keyring::new(&[ring_key]).seal(SESSION_COOKIE, &plain);
    let p = signer.public_key().as_ref();
    let jwks = json!({ "keys": [{ "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
        "x": b64(&p[1..33]), "y": b64(&p[33..]) }] });
    let write = |name: &str, text: String| {
        std::fs::write(out.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write(
        "cookie-keys",
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(ring_key)
        ),
    )?;
    write("token.txt", token)?;
    write("cookie.txt", format!("{SESSION_COOKIE}={sealed}"))?;
    write("jwks.json", jwks.to_string())
}

fn main() {
    // The minting modes of benches/load.sh and benches/callgrind.sh.
    type Mint = fn(&[String]) -> Result<(), String>;
    let modes: [(&str, Mint); 3] = [
        ("JWTGATE_BENCH_MINT_SESSION", mint_session),
        ("JWTGATE_BENCH_MINT_DPOP", mint_dpop),
        ("JWTGATE_BENCH_MINT", mint::run),
    ];
    if let Some((_, mint)) = modes.iter().find(|(v, _)| std::env::var_os(v).is_some()) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let Err(e) = mint(&args) {
            eprintln!("mint: {e}");
            std::process::exit(2);
        }
        return;
    }
    let keys = Keys::generate();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_verify(&mut c, &keys);
    bench_signature(&mut c, &keys);
    bench_routes(&mut c, &keys);
    bench_headers(&mut c, &keys);
    bench_handle(&mut c, &keys);
    bench_edge(&mut c, &keys);
    bench_denylist(&mut c, &keys);
    bench_defenses(&mut c, &keys);
    bench_dpop(&mut c, &keys);
    bench_session(&mut c, &keys);
    c.final_summary();
}

// ---------------------------------------------------------------------------------------------
// denylist/* (issue 14): the revocation lookup on the request path, empty and with 1,000,000
// entries; and the repeated-token round trip through a gateway holding them, next to
// handle/auth_required/ES256 measured in the same run. Prints the index's memory per entry.
// ---------------------------------------------------------------------------------------------

/// Entries of the large denylist under `cargo bench`: 900,000 jti, 50,000 sub and 50,000
/// sid, ids of 36 bytes (a UUID's length). `cargo test --benches` runs each row once as a
/// smoke test, with 10,000.
fn denylist_entries() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    }
}

fn denylist_line(n: usize, until: i64) -> String {
    let (kind, extra) = match n % 20 {
        0 => ("sub", format!(r#","before":{}"#, until - 7200)),
        1 => ("sid", String::new()),
        _ => ("jti", String::new()),
    };
    format!(r#"{{"issuer":"bench","{kind}":"{n:036}"{extra},"until":{until}}}"#)
}

/// The process's resident memory in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn bench_denylist(c: &mut Criterion, keys: &Keys) {
    use jwtgate::denylist::{Entry, Index, Layer};
    let until = now() + 86_400;
    let entries = denylist_entries();
    let before = rss_bytes();
    let mut layer = Layer::default();
    let mut key_text = 0;
    for n in 0..entries {
        let e = Entry::parse(&denylist_line(n, until)).expect("entry");
        key_text += e.id.len();
        layer.insert(&e);
    }
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "denylist memory: {entries} entries, resident growth {} MiB, {:.0} bytes per entry beyond the key text ({} bytes each)",
        grown >> 20,
        (grown as f64 - key_text as f64) / entries as f64,
        key_text / entries
    );
    let leeway = Arc::new(vec![("bench".into(), 0)]);
    let full = Index {
        base: Arc::new(layer),
        leeway: leeway.clone(),
        ..Index::default()
    }
    .with_layers();
    let empty = Index {
        leeway,
        ..Index::default()
    }
    .with_layers();
    let mut claims = claims();
    claims["jti"] = json!(format!("{:036}", entries + 1));
    claims["sid"] = json!(format!("{:036}", entries + 3));
    let claims: Map<String, Value> = claims.as_object().cloned().expect("object");
    let t = now() as u64;
    let mut g = c.benchmark_group("denylist");
    g.bench_function("lookup_empty", |b| {
        b.iter(|| black_box(empty.check(black_box("bench"), black_box(&claims), t)))
    });
    g.bench_function("lookup_1m_entries", |b| {
        b.iter(|| black_box(full.check(black_box("bench"), black_box(&claims), t)))
    });
    drop(full);

    // The round trip: the plain gateway and one whose [denylist] file holds the 1M entries.
    let files = tempfile::tempdir().expect("tempdir");
    let path = files.path().join("deny-1m.jsonl");
    let mut text = String::with_capacity(entries * 100);
    for n in 0..entries {
        text.push_str(&denylist_line(n, until));
        text.push('\n');
    }
    std::fs::write(&path, text).expect("write denylist");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let plain = start(&rt, keys, "");
    let denied = start(
        &rt,
        keys,
        &format!("[denylist]\nfile = {:?}\n", path.display().to_string()),
    );
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(300))
        .build_http();
    // Loaded once a token the file revokes is refused.
    let mut revoked = self::claims();
    revoked["jti"] = json!(format!("{:036}", 2));
    let probe =
        HeaderValue::from_str(&format!("Bearer {}", keys.sign("ES256", &revoked))).expect("bearer");
    let loaded_by = std::time::Instant::now() + Duration::from_secs(60);
    rt.block_on(async {
        loop {
            let req = http::Request::get(format!("{}/api/x", denied.gateway))
                .header(http::header::AUTHORIZATION, probe.clone())
                .body(Full::new(Bytes::new()))
                .expect("request");
            let res = client.request(req).await.expect("gateway answers");
            let status = res.status();
            let _ = res.into_body().collect().await;
            if status == 401 {
                break;
            }
            assert!(
                std::time::Instant::now() < loaded_by,
                "the 1M-entry denylist did not load within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let bearer = HeaderValue::from_str(&format!("Bearer {}", keys.sign("ES256", &self::claims())))
        .expect("bearer");
    for (name, base) in [
        ("round_trip_empty/ES256", &plain.gateway),
        ("round_trip_1m_entries/ES256", &denied.gateway),
    ] {
        let url = format!("{base}/api/x");
        rt.block_on(round_trip(&client, &url, Some(&bearer)));
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(round_trip(&client, &url, Some(&bearer))))
        });
    }
    g.finish();
    drop(client);
    drop(plain);
    drop(denied);
}

// ---------------------------------------------------------------------------------------------
// defenses/*: step-up, theft signals, response headers (issue 20)
// ---------------------------------------------------------------------------------------------

/// What issue 20's defenses add to a request. `defenses/handle/*` are whole round trips like
/// `handle/*`, with a repeated ES256 token (served from the verified-token cache, so the
/// difference is the defense, not the signature): `baseline` is a plain `required` route,
/// `step_up` one with `max_auth_age` and `acr_values`, `response_headers` one setting three
/// headers on the answer, and `anomaly` the baseline route on a second gateway with
/// `[anomaly]` (every verified token's address tracked). `handle/one_time` sends a new HS256
/// token (own `jti`) each time to a `one_time` route, against `handle/unique_baseline`, the
/// same to the plain route. `defenses/check/*` are the checks
/// alone: `StepUp::check` and `Anomalies::observe` for a token already tracked.
fn bench_defenses(c: &mut Criterion, keys: &Keys) {
    use jwtgate::anomaly::{Anomalies, Sighting};
    use jwtgate::auth::stepup::StepUp;
    use jwtgate::config::{AnomalyAction, AnomalyConfig};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let routes = r#"
[[route]]
name = "stepup"
path_prefix = "/stepup"
upstream = "{echo}"
auth = "required"
max_auth_age = "1h"
acr_values = ["mfa", "phr"]
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Roles" = "/realm_access/roles"

[[route]]
name = "once"
path_prefix = "/once"
upstream = "{echo}"
auth = "required"
one_time = true
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Roles" = "/realm_access/roles"

[[route]]
name = "secure"
path_prefix = "/secure"
upstream = "{echo}"
auth = "required"
response_headers = { "Strict-Transport-Security" = "max-age=31536000", "Content-Security-Policy" = "default-src 'self'", "X-Content-Type-Options" = "nosniff" }
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Roles" = "/realm_access/roles"
"#;
    let plain = start(&rt, keys, routes);
    let watched = start(&rt, keys, "[anomaly]\nmax_addresses = 3\n");
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(300))
        .build_http();
    let mut stepped = claims();
    stepped["auth_time"] = json!(now());
    stepped["acr"] = json!("mfa");
    let bearer =
        HeaderValue::from_str(&format!("Bearer {}", keys.sign("ES256", &stepped))).expect("bearer");
    let cases = [
        ("baseline", format!("{}/api/x", plain.gateway)),
        ("step_up", format!("{}/stepup/x", plain.gateway)),
        ("response_headers", format!("{}/secure/x", plain.gateway)),
        ("anomaly", format!("{}/api/x", watched.gateway)),
    ];
    let mut g = c.benchmark_group("defenses");
    for (name, url) in &cases {
        rt.block_on(round_trip(&client, url, Some(&bearer)));
        g.bench_function(format!("handle/{name}"), |b| {
            b.iter(|| rt.block_on(round_trip(&client, url, Some(&bearer))))
        });
    }
    // One-time tokens: every request a new HS256 token with its own jti (minted in the loop,
    // in both cases), to the plain route and to the `one_time` route (the in-memory replay
    // cache: one SHA-256 and a sharded map insert).
    let next = std::cell::Cell::new(0u64);
    let fresh = || {
        next.set(next.get() + 1);
        let mut c = claims();
        c["jti"] = json!(format!("bench-{}", next.get()));
        HeaderValue::from_str(&format!("Bearer {}", keys.sign("HS256", &c))).expect("bearer")
    };
    for (name, path) in [("unique_baseline", "/api/x"), ("one_time", "/once/x")] {
        let url = format!("{}{path}", plain.gateway);
        rt.block_on(round_trip(&client, &url, Some(&fresh())));
        g.bench_function(format!("handle/{name}"), |b| {
            b.iter(|| rt.block_on(round_trip(&client, &url, Some(&fresh()))))
        });
    }

    let step_up = StepUp::new(
        Some(Duration::from_secs(3600)),
        vec!["mfa".into(), "phr".into()],
    )
    .expect("step-up");
    let map = stepped.as_object().cloned().expect("claims object");
    g.bench_function("check/step_up", |b| {
        b.iter(|| black_box(step_up.check(black_box(&map), Duration::from_secs(30), now())))
    });
    let anomalies = Anomalies::new(
        prometheus::IntCounterVec::new(prometheus::Opts::new("bench", "bench"), &["issuer"])
            .expect("counter"),
    );
    let cfg = AnomalyConfig {
        max_addresses: 3,
        window: Duration::from_secs(600),
        action: AnomalyAction::Log,
    };
    let token = keys.sign("ES256", &stepped);
    let sighting = Sighting {
        token: &token,
        addr: std::net::IpAddr::from([198, 51, 100, 7]),
        until: now() + 3600,
        issuer: "bench",
        jti: None,
        sub: Some("alice"),
    };
    g.bench_function("check/anomaly_observe", |b| {
        b.iter(|| black_box(anomalies.observe(&cfg, black_box(&sighting), now())))
    });
    g.finish();
    drop(client);
    drop(plain);
    drop(watched);
}

// ---------------------------------------------------------------------------------------------
// edge/*: identity assertions and rate limits (issue 17)
// ---------------------------------------------------------------------------------------------

/// `edge/*`: one gateway with three `required` routes that differ only in what issue 17 adds,
/// the same repeated ES256 token on each (so verification is a token-cache hit everywhere):
/// `baseline` (claim headers only), `assertion` (`assertion = true`: a cached assertion per
/// request after the first) and `rate_limit` (`[route.rate_limit]` keyed by `sub`, a rate the
/// bench never reaches). Then the pieces alone: `assertion_sign` (a new ES256 assertion) and
/// `rate_limit_check` (one GCRA decision). `edge/rate_limit_keys_1m` reports the resident
/// memory that 1,000,000 distinct keys add (printed, not timed).
fn bench_edge(c: &mut Criterion, keys: &Keys) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec");
    std::fs::write(
        dir.path().join("assertion.pem"),
        pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            signing.to_pkcs8v1().expect("pkcs8").as_ref().to_vec(),
        )),
    )
    .expect("write assertion key");
    let route = |name: &str, extra: &str| {
        format!(
            "\n[[route]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"{{echo}}\"\nauth = \"required\"\n{extra}[route.claim_headers]\n\"X-Auth-Sub\" = \"sub\"\n\"X-Auth-Email\" = \"email\"\n\"X-Auth-Roles\" = \"/realm_access/roles\"\n"
        )
    };
    let body = format!(
        "[assertion]\nkeys = [{:?}]\nissuer = \"https://jwtgate.bench\"\n{}{}{}[route.rate_limit]\nkey = \"sub\"\nrate = \"1000000000/s\"\nburst = 1000000\n",
        dir.path().join("assertion.pem").display().to_string(),
        route("baseline", ""),
        route("assertion", "assertion = true\n"),
        route("rate_limit", ""),
    );
    let running = start(&rt, keys, &body);
    let gateway = &running.gateway;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(300))
        .build_http();
    let bearer = HeaderValue::from_str(&format!("Bearer {}", keys.sign("ES256", &claims())))
        .expect("bearer");
    let mut g = c.benchmark_group("edge");
    for name in ["baseline", "assertion", "rate_limit"] {
        let url = format!("{gateway}/{name}/x");
        rt.block_on(round_trip(&client, &url, Some(&bearer)));
        g.bench_function(format!("{name}/ES256"), |b| {
            b.iter(|| rt.block_on(round_trip(&client, &url, Some(&bearer))))
        });
    }

    let cfg = config(dir.path(), keys, "[assertion]\nkeys = [\"assertion.pem\"]\nissuer = \"https://jwtgate.bench\"\n[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"required\"\nassertion = true\n[route.claim_headers]\n\"X-Auth-Email\" = \"email\"\n");
    let signer = jwtgate::assertion::Signer::load(cfg.assertion.as_ref().expect("[assertion]"))
        .expect("assertion key");
    let route = cfg.routes[0].assertion.clone().expect("assertion route");
    let verified: Map<String, Value> = match claims() {
        Value::Object(m) => m,
        _ => unreachable!("claims() is an object"),
    };
    g.bench_function("assertion_sign/ES256", |b| {
        b.iter(|| black_box(signer.sign(&route, &verified, now())))
    });

    let limit = jwtgate::config::RateLimit {
        key: jwtgate::config::ClaimPath::Name("sub".into()),
        interval: Duration::from_nanos(1),
        burst: 1_000_000,
        rate: "1000000000/s".into(),
    };
    let store = jwtgate::ratelimit::BoundedStore::new(jwtgate::ratelimit::MAX_KEYS);
    let limiter = jwtgate::ratelimit::RouteLimiter::new("bench", &limit, &store);
    let alice = Value::from("alice");
    g.bench_function("rate_limit_check", |b| {
        b.iter(|| black_box(limiter.check_local(jwtgate::ratelimit::LimitKey::Claim(&alice))))
    });
    g.finish();

    // Memory: 1,000,000 distinct client addresses, then as many more (the store stays at its
    // bound; the least recently used keys are dropped).
    let before = rss_bytes();
    for n in 0..2_000_000u32 {
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(n));
        black_box(limiter.check_local(jwtgate::ratelimit::LimitKey::Addr(ip)));
        if n == 999_999 {
            println!(
                "edge/rate_limit_keys_1m: {} keys, resident memory +{:.1} MiB",
                store.len(),
                (rss_bytes().saturating_sub(before)) as f64 / (1 << 20) as f64
            );
        }
    }
    println!(
        "edge/rate_limit_keys_2m_offered: {} keys kept (bound {}), resident memory +{:.1} MiB",
        store.len(),
        jwtgate::ratelimit::MAX_KEYS,
        (rss_bytes().saturating_sub(before)) as f64 / (1 << 20) as f64
    );
    drop(client);
}

// ---------------------------------------------------------------------------------------------
// handle/session_*: a request with a browser session cookie next to the same request with a
// repeated bearer token, on one gateway (issue 15's target: at most 1.3x)
// ---------------------------------------------------------------------------------------------

/// Serves a discovery document naming `ISS` and a JWKS with the ES256 key on 127.0.0.1: the
/// session issuer must have a `discovery_url`.
async fn serve_discovery(keys: &Keys) -> (String, oneshot::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind discovery");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    let p = keys.ec256.public_key().as_ref().to_vec();
    let jwks = json!({ "keys": [{ "kty": "EC", "kid": "ec256", "crv": "P-256",
        "x": b64(&p[1..33]), "y": b64(&p[33..]) }] })
    .to_string();
    let doc = json!({ "issuer": ISS, "jwks_uri": format!("{base}/jwks"),
        "authorization_endpoint": format!("{base}/auth"), "token_endpoint": format!("{base}/token") })
    .to_string();
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = l.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                _ = &mut stopped => return,
            };
            let (jwks, doc) = (jwks.clone(), doc.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let body = if req.uri().path() == "/jwks" {
                            jwks.clone()
                        } else {
                            doc.clone()
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (base, stop)
}

/// One GET with one extra header, read whole; panics unless it is a 200.
async fn round_trip_with(client: &HttpClient, url: &str, name: &str, value: &HeaderValue) {
    let req = http::Request::get(url)
        .header(name, value.clone())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = client.request(req).await.expect("gateway answers");
    let status = res.status();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

fn bench_session(c: &mut Criterion, keys: &Keys) {
    use jwtgate::session::cookie::{Keyring, Session, SESSION_COOKIE};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = [9u8; 32];
    std::fs::write(
        dir.path().join("cookie-keys"),
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
    )
    .expect("keys");
    let (gateway, _stops) = rt.block_on(async {
        let (discovery, stop_discovery) = serve_discovery(keys).await;
        let up = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let echo = format!("http://{}", up.local_addr().expect("addr"));
        let (stop_echo, echo_stopped) = oneshot::channel::<()>();
        tokio::spawn(jwtgate::echo::serve(up, async move {
            let _ = echo_stopped.await;
        }));
        let text = format!(
            r#"[listen]
addr = "127.0.0.1:0"
[[issuer]]
name = "oidc"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
discovery_url = "{discovery}/.well-known/openid-configuration"
[session]
issuer = "oidc"
client_id = "bench-web"
cookie_keys_file = "cookie-keys"
external_url = "http://localhost"
[[route]]
name = "app"
path_prefix = "/"
upstream = "{echo}"
auth = "session"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Roles" = "/realm_access/roles"
"#
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).expect("write config");
        let app = Arc::new(jwtgate::App::load(&path).expect("bench config"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let gateway = format!("http://{}/x", listener.local_addr().expect("addr"));
        let (stop_gw, gw_stopped) = oneshot::channel::<()>();
        tokio::spawn(jwtgate::run(listener, app, async move {
            let _ = gw_stopped.await;
        }));
        (gateway, vec![stop_discovery, stop_echo, stop_gw])
    });
    let token = keys.sign("ES256", &claims());
    let n = now();
    let session = Session {
        rt: Some("r".repeat(43)),
        idt: Some(token.clone()),
        ..bench_session_of(&token, "alice", n)
    };
    let sealed =
        Keyring::new(&[key]).seal(SESSION_COOKIE, &serde_json::to_vec(&session).expect("json"));
    let cookie =
        HeaderValue::from_str(&format!("theme=dark; {SESSION_COOKIE}={sealed}")).expect("cookie");
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).expect("bearer");
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(300))
        .build_http();
    // The remote keys arrive a moment after start.
    rt.block_on(async {
        for _ in 0..200 {
            let req = http::Request::get(&gateway)
                .header("authorization", bearer.clone())
                .body(Full::new(Bytes::new()))
                .expect("request");
            if client.request(req).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the bench gateway never verified a token");
    });
    let mut g = c.benchmark_group("handle");
    for (name, header, value) in [
        ("session_bearer/ES256", "authorization", &bearer),
        ("session_cookie/ES256", "cookie", &cookie),
    ] {
        // Warms the connections; a pooled upstream connection the previous case left idle
        // may be closed under it once (a 502 "reset"), so the warm-up retries.
        rt.block_on(async {
            for _ in 0..3 {
                let req = http::Request::get(&gateway)
                    .header(header, value.clone())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                if client.request(req).await.is_ok_and(|r| r.status() == 200) {
                    break;
                }
            }
        });
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(round_trip_with(&client, &gateway, header, value)))
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// signature/*: one signature verification per implementation (issue 18)
// ---------------------------------------------------------------------------------------------

/// One `signature/*` case: the algorithm, the public key, the signature, and each
/// implementation's verification algorithm.
type SignatureCase<'a> = (
    &'a str,
    &'a [u8],
    &'a [u8],
    &'static dyn sig::VerificationAlgorithm,
    &'static dyn ring::signature::VerificationAlgorithm,
);

/// `signature/<impl>/<alg>`: the same JWS signature over the same signing input, verified by
/// aws-lc-rs (what jwtgate uses) and by ring, each from a public key parsed once, so the rows
/// compare the primitives alone. OpenSSL's figure for the same curves comes from `openssl
/// speed` (benches/README.md); jsonwebtoken's from `verify/jsonwebtoken/*`.
fn bench_signature(c: &mut Criterion, keys: &Keys) {
    let input = keys.sign("ES256", &claims());
    let message = input.rsplit_once('.').map_or("", |(m, _)| m).as_bytes();
    let rng = SystemRandom::new();
    let es = keys.ec256.sign(&rng, message).expect("sign");
    let mut rs = vec![0; keys.rsa.public_modulus_len()];
    keys.rsa
        .sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut rs)
        .expect("sign");
    let ed = keys.ed25519.sign(message);
    let (ec_pub, rsa_pub, ed_pub) = (
        keys.ec256.public_key().as_ref().to_vec(),
        keys.rsa.public_key().as_ref().to_vec(),
        keys.ed25519.public_key().as_ref().to_vec(),
    );
    let cases: [SignatureCase; 3] = [
        (
            "ES256",
            &ec_pub,
            es.as_ref(),
            &sig::ECDSA_P256_SHA256_FIXED,
            &ring::signature::ECDSA_P256_SHA256_FIXED,
        ),
        (
            "RS256",
            &rsa_pub,
            &rs,
            &sig::RSA_PKCS1_2048_8192_SHA256,
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        ),
        (
            "EdDSA",
            &ed_pub,
            ed.as_ref(),
            &sig::ED25519,
            &ring::signature::ED25519,
        ),
    ];
    let mut g = c.benchmark_group("signature");
    for (alg, public, signature, aws, ring_alg) in cases {
        let aws_key = sig::UnparsedPublicKey::new(aws, public.to_vec());
        let ring_key = ring::signature::UnparsedPublicKey::new(ring_alg, public.to_vec());
        aws_key
            .verify(message, signature)
            .expect("aws-lc-rs verifies");
        ring_key.verify(message, signature).expect("ring verifies");
        g.bench_function(format!("aws_lc_rs/{alg}"), |b| {
            b.iter(|| aws_key.verify(black_box(message), black_box(signature)))
        });
        g.bench_function(format!("ring/{alg}"), |b| {
            b.iter(|| ring_key.verify(black_box(message), black_box(signature)))
        });
    }
    g.finish();
}

//! Bytes as a bearer token → `jwtgate::auth::verify` against fixed keys (fuzz/keys/), at a
//! fixed time so the valid seeds in corpus/token/ stay valid. Properties: never panics; a token
//! that verifies satisfies every check SPEC.md lists; claim headers built from it never carry a
//! control character.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use jwtgate::auth::claims::{check_requirements, header_value};
use jwtgate::{Config, Snapshot};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Must match NOW in make_seeds.py.
const NOW: i64 = 1_700_000_100;

const CONFIG: &str = r#"
[listen]
addr = "127.0.0.1:0"

[[issuer]]
name = "fuzz"
issuer = "https://fuzz.jwtgate.test/"
audiences = ["fuzz-api"]
algorithms = ["HS256", "ES256", "EdDSA", "RS256", "PS256"]
jwks_file = "fuzz.jwks.json"
leeway = "30s"

[[issuer]]
name = "other"
issuer = "https://other.jwtgate.test/"
audiences = ["fuzz-api"]
algorithms = ["ES256"]
jwks_file = "other.jwks.json"
typ = ["JWT"]

[[route]]
name = "api"
path_prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "required"
require = { scope = "read", "/org/id" = "7" }
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Roles" = "roles"
"X-Auth-Org" = "/org/name"
"X-Auth-Exp" = "exp"
"#;

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("jwtgate-fuzz-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/keys");
        for f in ["fuzz.jwks.json", "other.jwks.json"] {
            std::fs::copy(format!("{keys}/{f}"), dir.join(f)).expect("copy fuzz keys");
        }
        let path = dir.join("gateway.toml");
        let config = Config::parse(&path, CONFIG).expect("fuzz config");
        // Static keys only: nothing is spawned, so no Tokio runtime is needed.
        let snap = Snapshot::build(config).expect("fuzz snapshot");
        let _ = std::fs::remove_dir_all(&dir);
        snap
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let snap = snapshot();
    let route = &snap.config.routes[0];
    let max = snap.config.limits.max_token_bytes;
    let Ok(v) = jwtgate::auth::verify(token, &snap.issuers, &route.issuers, max, NOW) else {
        return;
    };
    let issuer = &snap.issuers[v.issuer].config;
    assert!(token.len() <= max);
    assert_eq!(
        v.claims.get("iss").and_then(Value::as_str),
        Some(issuer.issuer.as_str())
    );
    assert!(matches!(v.claims.get("sub"), Some(Value::String(s)) if !s.is_empty()));
    let exp = v
        .claims
        .get("exp")
        .and_then(Value::as_f64)
        .expect("exp is a number");
    assert!(
        (NOW as f64) < exp + issuer.leeway.as_secs() as f64,
        "expired token verified"
    );
    let aud_ok = match v.claims.get("aud") {
        Some(Value::String(a)) => issuer.audiences.contains(a),
        Some(Value::Array(l)) => l.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| issuer.audiences.iter().any(|x| x == a))
        }),
        _ => false,
    };
    assert!(aud_ok, "wrong audience verified");
    let _ = check_requirements(&v.claims, &route.require);
    for (_, path) in &route.claim_headers {
        if let Ok(Some(h)) = header_value(&v.claims, path) {
            assert!(
                !h.as_bytes().iter().any(|b| *b < 0x20 || *b == 0x7f),
                "control byte in a claim header"
            );
        }
    }
});

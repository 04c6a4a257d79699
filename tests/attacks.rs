//! Attack suites (issue 8): forged, confused and malformed tokens, and HTTP-level attacks
//! (request smuggling, path tricks, oversized and slow requests), each against the running
//! gateway with keys generated at test time.
//!
//! The upstream is a [`Recorder`]: a raw TCP server that parses every request it receives with
//! strict framing and keeps its head and body. Every test asserts exactly how many requests
//! reached it, so "refused" always also means "the upstream never saw it".
//!
//! Cases that tests/verify.rs, tests/routing.rs, tests/headers.rs and tests/upstream.rs
//! already hold (alg `none` in the four casings on the default issuer, HS256 keyed with the
//! RSA PEM/DER/n||e on the default issuer, non-string kid, `crit` arrays/strings/null,
//! `b64: false`, plain duplicate members, padding and alphabet errors, the signature's
//! trailing bits, token length limits, most path normalisation tricks, two Host headers, two
//! Authorization headers, claim headers in trailers, `Connection: X-Auth-Sub`, 200 headers,
//! slow headers) are not repeated here.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::KeyPair;
use aws_lc_rs::{hmac, rsa};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::der::{der_seq, der_uint};
use common::*;

// =============================================================================================
// The recording upstream
// =============================================================================================

/// One request as the upstream parsed it.
#[derive(Debug, Clone)]
struct Received {
    /// Request line and header lines, as received (CRLF-separated, without the blank line).
    head: String,
    /// The body, once complete (empty until then).
    body: Vec<u8>,
}

impl Received {
    fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// Every value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// A raw TCP upstream that records every request (counted as soon as its head is read) and
/// answers each complete one `200 {"recorder":true,...}`. Framing is strict: Content-Length
/// and Transfer-Encoding together, several or non-digit Content-Lengths, or a Transfer-Encoding
/// that does not end in `chunked` make it close the connection, as a careful server would.
#[derive(Clone)]
struct Recorder {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recorder");
        let addr = l.local_addr().expect("recorder addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_recorded(s, g.clone()));
            }
        });
        Recorder { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().expect("recorder lock").clone()
    }

    fn count(&self) -> usize {
        self.got.lock().expect("recorder lock").len()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16384];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(line);
        }
        if !fill(s, buf).await {
            return None;
        }
    }
}

async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(s, buf).await?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        if size == 0 {
            loop {
                if read_line(s, buf).await?.is_empty() {
                    return Some(body);
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(s, buf).await {
                return None;
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    Invalid,
}

/// How a strict HTTP/1.1 server frames the body of a request with this head.
fn framing(head: &str) -> Framing {
    let (mut te, mut cl) = (Vec::new(), Vec::new());
    for line in head.split("\r\n").skip(1) {
        let Some((n, v)) = line.split_once(':') else {
            return Framing::Invalid;
        };
        if n != n.trim() {
            return Framing::Invalid;
        }
        if n.eq_ignore_ascii_case("transfer-encoding") {
            te.push(v.trim().to_owned());
        } else if n.eq_ignore_ascii_case("content-length") {
            cl.push(v.trim().to_owned());
        }
    }
    if !te.is_empty() {
        if !cl.is_empty() {
            return Framing::Invalid;
        }
        let joined = te.join(",");
        let last = joined.rsplit(',').next().unwrap_or("").trim();
        return if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            Framing::Invalid
        };
    }
    match cl.as_slice() {
        [] => Framing::Empty,
        [v] if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            v.parse().map_or(Framing::Invalid, Framing::Length)
        }
        _ => Framing::Invalid,
    }
}

async fn serve_recorded(mut s: TcpStream, got: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if !fill(&mut s, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let idx = {
            let mut g = got.lock().expect("recorder lock");
            g.push(Received {
                head: head.clone(),
                body: Vec::new(),
            });
            g.len() - 1
        };
        let body = match framing(&head) {
            Framing::Empty => Vec::new(),
            Framing::Length(n) => {
                while buf.len() < n {
                    if !fill(&mut s, &mut buf).await {
                        return;
                    }
                }
                buf.drain(..n).collect()
            }
            Framing::Chunked => match read_chunked(&mut s, &mut buf).await {
                Some(b) => b,
                None => return,
            },
            Framing::Invalid => return,
        };
        got.lock().expect("recorder lock")[idx].body = body;
        let path = head.split(' ').nth(1).unwrap_or("");
        let answer = json!({ "recorder": true, "n": idx + 1, "path": path }).to_string();
        let res = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if s.write_all(res.as_bytes()).await.is_err() {
            return;
        }
    }
}

// =============================================================================================
// Configs and answers
// =============================================================================================

/// `issuer_block` and one `required` route `/` named `main` to the recorder, mapping `sub` to
/// `X-Auth-Sub`.
fn main_config(issuer_block: &str) -> String {
    format!(
        r#"{issuer_block}
[[route]]
name = "main"
path_prefix = "/"
upstream = "{{rec}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"#
    )
}

/// Starts a recorder and the gateway on `config`, where `{rec}` is the recorder's URL.
async fn start(config: &str) -> (Harness, Recorder) {
    let rec = Recorder::start().await;
    let h = Harness::start(&config.replace("{rec}", &rec.url())).await;
    (h, rec)
}

/// The gateway's own JSON error body (never the recorder's answer), with nothing injected.
fn gateway_body(a: &Answer, case: &str) -> Value {
    assert_ne!(a.status, 500, "{case}: a 500: {}", a.body);
    let v: Value = serde_json::from_str(&a.body)
        .unwrap_or_else(|e| panic!("{case}: body is not JSON ({e}): {}", a.body));
    assert!(
        v.get("recorder").is_none(),
        "{case}: the upstream answered: {}",
        a.body
    );
    assert!(
        v["error"].is_string() && v["error_description"].is_string(),
        "{case}: not the gateway's error body: {}",
        a.body
    );
    assert!(
        a.headers.get("x-injected").is_none(),
        "{case}: a header was injected into the answer: {:?}",
        a.headers
    );
    v
}

/// Asserts SPEC's no-token answer: 401 with a bare Bearer challenge.
fn assert_missing(a: &Answer, case: &str) {
    assert_eq!(a.status, 401, "{case}: {}", a.body);
    let v = gateway_body(a, case);
    assert_eq!(v["error"], "missing_token", "{case}: {}", a.body);
    assert_eq!(
        a.header("www-authenticate"),
        Some("Bearer realm=\"jwtgate\""),
        "{case}"
    );
}

/// Asserts the recorder answered (the request passed the gateway).
fn assert_passed(a: &Answer, case: &str) {
    assert_eq!(a.status, 200, "{case}: expected 200, got body {}", a.body);
    assert_eq!(
        a.json()["recorder"],
        true,
        "{case}: not the upstream's answer: {}",
        a.body
    );
}

async fn expect_200(h: &Harness, token: &str, case: &str) {
    let a = h.get_with_token("/t", token).await;
    assert_passed(&a, case);
}

/// Sends every (token, case) concurrently (32 at a time) and asserts each is invalid_token.
async fn expect_all_401(h: &Harness, cases: Vec<(String, String)>) {
    let client = client::new();
    for batch in cases.chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for (t, case) in batch.iter().cloned() {
            let (c, addr) = (client.clone(), h.addr);
            set.spawn(async move {
                let url = format!("http://{addr}/t");
                let a = client::try_get_url(&c, &url, Some(&t)).await;
                (a.unwrap_or_else(|e| panic!("{case}: {e}")), t, case)
            });
        }
        while let Some(done) = set.join_next().await {
            let (a, t, case) = done.expect("request task");
            assert_invalid(&a, &t, &case);
        }
    }
}

// =============================================================================================
// Token crafting
// =============================================================================================

fn seg(json_text: &str) -> String {
    b64(json_text.as_bytes())
}

fn payload() -> String {
    claims().to_string()
}

/// `input.HMAC(key, input)` for HS256/HS384/HS512, over the exact text `input`.
fn hs_with_key(alg: &str, key: &[u8], input: &str) -> String {
    let a = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        other => panic!("not an HMAC alg: {other}"),
    };
    let tag = hmac::sign(&hmac::Key::new(a, key), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// HS256 with the harness secret over the exact text `input`.
fn hs_over(input: &str) -> String {
    hs_with_key("HS256", &keys().hmac_secret, input)
}

/// The signing input and the decoded signature of `token`.
fn split_sig(token: &str) -> (String, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').expect("a three-segment token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .expect("signature is base64url");
    (input.to_owned(), bytes)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `a + b` for equal-length big-endian integers; `None` when it overflows that length.
fn add_be(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    assert_eq!(a.len(), b.len());
    let mut out = vec![0u8; a.len()];
    let mut carry = 0u16;
    for i in (0..a.len()).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = (s & 0xff) as u8;
        carry = s >> 8;
    }
    (carry == 0).then_some(out)
}

/// `a + b` for equal-length little-endian integers (must not overflow).
fn add_le(a: &[u8], b: &[u8]) -> Vec<u8> {
    let (ra, rb): (Vec<u8>, Vec<u8>) = (
        a.iter().rev().copied().collect(),
        b.iter().rev().copied().collect(),
    );
    let mut sum = add_be(&ra, &rb).expect("no overflow");
    sum.reverse();
    sum
}

/// The integer `v` as `len` big-endian bytes.
fn be_small(v: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    out[len - 1] = v;
    out
}

// --- DER and OpenSSH wire encodings, by hand --------------------------------------------------

fn ssh_string(b: &[u8]) -> Vec<u8> {
    let len = u32::try_from(b.len()).expect("short").to_be_bytes();
    [len.as_slice(), b].concat()
}

fn ssh_mpint(b: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
    if v.first().is_some_and(|x| x & 0x80 != 0) {
        v.insert(0, 0);
    }
    ssh_string(&v)
}

fn ssh_rsa_text(n: &[u8], e: &[u8]) -> String {
    let blob = [ssh_string(b"ssh-rsa"), ssh_mpint(e), ssh_mpint(n)].concat();
    format!("ssh-rsa {}", STANDARD.encode(blob))
}

fn ssh_ec_text(curve: &str, point: &[u8]) -> String {
    let name = format!("ecdsa-sha2-{curve}");
    let blob = [
        ssh_string(name.as_bytes()),
        ssh_string(curve.as_bytes()),
        ssh_string(point),
    ]
    .concat();
    format!("{name} {}", STANDARD.encode(blob))
}

/// `ssh-keygen -y` on a PKCS#8 private key, when ssh-keygen exists; the public key line.
fn ssh_keygen_public(pkcs8: &[u8], dir: &Path, name: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec())),
    )
    .expect("write private key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&path)
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&path);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// PEM text in every line-ending spelling: LF and CRLF, with and without the final newline.
fn pem_spellings(text: &str) -> Vec<(String, Vec<u8>)> {
    let lf = text.replace("\r\n", "\n");
    let lf = if lf.ends_with('\n') {
        lf
    } else {
        format!("{lf}\n")
    };
    let crlf = lf.replace('\n', "\r\n");
    vec![
        ("PEM (LF)".to_owned(), lf.clone().into_bytes()),
        (
            "PEM (LF, no final newline)".to_owned(),
            lf.trim_end().as_bytes().to_vec(),
        ),
        ("PEM (CRLF)".to_owned(), crlf.clone().into_bytes()),
        (
            "PEM (CRLF, no final newline)".to_owned(),
            crlf.trim_end().as_bytes().to_vec(),
        ),
    ]
}

/// Every encoding of the issuer's RSA, P-256 and P-384 public keys an attacker could use as an
/// HMAC secret: (kid of the key, what, bytes).
fn public_key_encodings(h: &Harness) -> Vec<(&'static str, String, Vec<u8>)> {
    let k = keys();
    let jwks_text = std::fs::read_to_string(h.path("jwks.json")).expect("read jwks.json");
    let jwks: Value = serde_json::from_str(&jwks_text).expect("jwks json");
    let jwk = |kid: &str| -> Value {
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|j| j["kid"] == kid)
            .unwrap_or_else(|| panic!("no jwk {kid}"))
            .clone()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let add_common = |kid: &'static str, spki: &[u8], ssh: String, pkcs8: &[u8]| {
        let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
        let pem_text = std::fs::read_to_string(h.path(&format!("{kid}.pem"))).expect("read pem");
        for (what, bytes) in pem_spellings(&pem_text) {
            out.push((kid, what, bytes));
        }
        out.push((kid, "SPKI DER".into(), spki.to_vec()));
        out.push((
            kid,
            "SPKI DER as base64 text".into(),
            STANDARD.encode(spki).into_bytes(),
        ));
        let j = jwk(kid);
        out.push((kid, "JWK (compact)".into(), j.to_string().into_bytes()));
        out.push((
            kid,
            "JWK (pretty)".into(),
            serde_json::to_string_pretty(&j)
                .expect("pretty")
                .into_bytes(),
        ));
        out.push((
            kid,
            "the whole JWKS file".into(),
            jwks_text.clone().into_bytes(),
        ));
        out.push((kid, "OpenSSH public key".into(), ssh.clone().into_bytes()));
        out.push((
            kid,
            "OpenSSH public key with newline".into(),
            format!("{ssh}\n").into_bytes(),
        ));
        out.push((
            kid,
            "OpenSSH public key with comment".into(),
            format!("{ssh} user@host\n").into_bytes(),
        ));
        if let Some(line) = ssh_keygen_public(pkcs8, tmp.path(), kid) {
            // The hand-built wire format is what ssh-keygen prints.
            assert_eq!(
                line.split(' ').nth(1),
                ssh.split(' ').nth(1),
                "hand-built OpenSSH key for {kid}"
            );
            out.push((
                kid,
                "ssh-keygen -y output".into(),
                format!("{line}\n").into_bytes(),
            ));
        }
        out
    };

    // RSA.
    let c = rsa::PublicKeyComponents::<Vec<u8>>::from(k.rsa.public_key());
    let pkcs1 = der_seq(&[der_uint(&c.n), der_uint(&c.e)]);
    assert!(
        k.rsa_spki.ends_with(&pkcs1),
        "hand-built PKCS#1 is the SPKI's key"
    );
    let rsa_pkcs8: Pkcs8V1Der = k.rsa.as_der().expect("rsa pkcs8");
    let mut out = add_common(
        "rsa",
        &k.rsa_spki,
        ssh_rsa_text(&c.n, &c.e),
        rsa_pkcs8.as_ref(),
    );
    out.push(("rsa", "PKCS#1 DER".into(), pkcs1.clone()));
    out.push((
        "rsa",
        "PKCS#1 PEM (RSA PUBLIC KEY)".into(),
        pem::encode(&pem::Pem::new("RSA PUBLIC KEY", pkcs1)).into_bytes(),
    ));
    out.push((
        "rsa",
        "raw n||e".into(),
        [c.n.clone(), c.e.clone()].concat(),
    ));
    out.push(("rsa", "raw n".into(), c.n.clone()));

    // EC P-256 and P-384.
    for (kid, kp, curve, len) in [
        ("ec256", &k.ec256, "nistp256", 32usize),
        ("ec384", &k.ec384, "nistp384", 48usize),
    ] {
        let point = kp.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 1 + 2 * len);
        let spki = kp.public_key().as_der().expect("ec spki").as_ref().to_vec();
        let pkcs8 = kp.to_pkcs8v1().expect("ec pkcs8");
        out.extend(add_common(
            kid,
            &spki,
            ssh_ec_text(curve, &point),
            pkcs8.as_ref(),
        ));
        let mut compressed = vec![0x02 | (point[2 * len] & 1)];
        compressed.extend_from_slice(&point[1..=len]);
        out.push((
            kid,
            format!("raw uncompressed point ({} bytes)", point.len()),
            point.clone(),
        ));
        out.push((kid, "raw compressed point".into(), compressed));
        out.push((kid, "raw x||y".into(), point[1..].to_vec()));
    }
    out
}

// =============================================================================================
// alg: none
// =============================================================================================

/// `none` spelled in ways a lenient parser might still read as `none`.
const NONE_SPELLINGS: [&str; 11] = [
    "none",
    "None",
    "NONE",
    "nOnE",
    " none",
    "none ",
    "none\u{0}",
    "\u{0}none",
    "none\t",
    "NONE\n",
    "n\u{043e}ne", // Cyrillic o
];

#[tokio::test]
async fn alg_none_in_every_spelling_is_refused_by_hmac_only_and_rsa_only_issuers() {
    let hs_only = format!(
        "[[issuer]]\nname = \"hs-only\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"HS256\"]\nhmac_secret_file = \"hmac.secret\"\n"
    );
    let rs_only = format!(
        "[[issuer]]\nname = \"rs-only\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"RS256\"]\nkeys = [\"rsa.pem\"]\n"
    );
    let body = payload();
    for (issuer, good, kid) in [(hs_only, "HS256", "hmac"), (rs_only, "RS256", "rsa")] {
        let (h, rec) = start(&main_config(&issuer)).await;
        expect_200(&h, &token(good, &claims()), &format!("{good} sanity")).await;
        for none in NONE_SPELLINGS {
            for header in [
                json!({ "alg": none }),
                json!({ "alg": none, "typ": "JWT" }),
                json!({ "alg": none, "kid": kid }),
            ] {
                let htext = header.to_string();
                let input = format!("{}.{}", seg(&htext), seg(&body));
                for (t, how) in [
                    (format!("{input}."), "empty signature"),
                    (hs_over(&input), "HMAC-SHA256 with the real secret"),
                    (sign_raw("RS256", &htext, &body), "RS256 with the real key"),
                    (format!("{input}.AA"), "one zero byte"),
                ] {
                    expect_401(
                        &h,
                        "/t",
                        &t,
                        &format!("{good} issuer, header {htext}, {how}"),
                    )
                    .await;
                }
            }
        }
        assert_eq!(rec.count(), 1, "only the sanity token reached the upstream");
    }
}

// =============================================================================================
// Algorithm confusion: HMAC keyed with a public key
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hmac_keyed_with_any_encoding_of_the_public_keys_is_refused() {
    // An issuer's public keys are public: an HS* token keyed with any spelling of them must
    // never verify, whether the issuer allows HS* at all (default: JWKS with an oct key;
    // jwks-public: HS* allowed but only public keys) or not (pem: RS256/ES256/ES384 from PEM).
    let k = keys();
    let rsa_c = rsa::PublicKeyComponents::<Vec<u8>>::from(k.rsa.public_key());
    let point = |kp: &aws_lc_rs::signature::EcdsaKeyPair| kp.public_key().as_ref().to_vec();
    let (p256, p384) = (point(&k.ec256), point(&k.ec384));
    let public_jwks = json!({ "keys": [
        { "kty": "RSA", "kid": "rsa", "use": "sig", "n": b64(&rsa_c.n), "e": b64(&rsa_c.e) },
        { "kty": "EC", "kid": "ec256", "crv": "P-256", "x": b64(&p256[1..33]), "y": b64(&p256[33..]) },
        { "kty": "EC", "kid": "ec384", "crv": "P-384", "x": b64(&p384[1..49]), "y": b64(&p384[49..]) },
    ]});
    let own = tempfile::tempdir().expect("tempdir");
    let public_path = own.path().join("jwks-public.json");
    std::fs::write(&public_path, public_jwks.to_string()).expect("write jwks-public.json");

    let issuers = [
        ("jwks with oct key", default_issuer()),
        (
            "jwks-public (HS* allowed, public keys only)",
            format!(
                "[[issuer]]\nname = \"pub\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"HS256\",\"HS384\",\"HS512\",\"RS256\",\"ES256\",\"ES384\"]\njwks_file = \"{}\"\n",
                public_path.display()
            ),
        ),
        (
            "pem keys (no HS*)",
            format!(
                "[[issuer]]\nname = \"pem\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"RS256\",\"ES256\",\"ES384\"]\nkeys = [\"rsa.pem\", \"ec256.pem\", \"ec384.pem\"]\n"
            ),
        ),
    ];
    let body = payload();
    for (issuer_name, issuer) in issuers {
        let (h, rec) = start(&main_config(&issuer)).await;
        for alg in ["RS256", "ES256", "ES384"] {
            expect_200(
                &h,
                &token(alg, &claims()),
                &format!("{issuer_name}: {alg} sanity"),
            )
            .await;
        }
        let encodings = public_key_encodings(&h);
        assert!(encodings.len() >= 40, "{} encodings", encodings.len());
        let mut cases: Vec<(String, String)> = Vec::new();
        for (kid, what, key) in &encodings {
            for alg in ["HS256", "HS384", "HS512"] {
                for header in [
                    json!({ "alg": alg, "typ": "JWT", "kid": kid }),
                    json!({ "alg": alg, "typ": "JWT" }),
                ] {
                    let input = format!("{}.{}", seg(&header.to_string()), seg(&body));
                    cases.push((
                        hs_with_key(alg, key, &input),
                        format!("{issuer_name}: {alg} keyed with {kid} as {what}, header {header}"),
                    ));
                }
            }
        }
        expect_all_401(&h, cases).await;
        assert_eq!(
            rec.count(),
            3,
            "{issuer_name}: only the sanity tokens passed"
        );
    }
}

// =============================================================================================
// kid injection
// =============================================================================================

const HOSTILE_KIDS: [&str; 14] = [
    "../../../../etc/passwd",
    "/dev/null",
    "' OR 1=1 --",
    "\" OR \"\"=\"",
    "$(id)",
    "`id`",
    "a\r\nX-Injected: 1",
    "a\u{0}b",
    "rsa\u{0}",
    "rsa ",
    "RSA",
    "file:///etc/passwd",
    "http://127.0.0.1:1/jwks.json",
    "%2e%2e/rsa",
];

#[tokio::test]
async fn hostile_kids_are_unknown_keys_on_keyed_sources() {
    // JWKS and PEM sources give every key a kid: a kid naming none of them is "unknown kid",
    // a 401 (never a file read, a fetch, a 500 or an injected header).
    let pem_issuer = format!(
        "[[issuer]]\nname = \"pem\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"RS256\",\"ES256\"]\nkeys = [\"rsa.pem\", \"ec256.pem\"]\n"
    );
    let body = payload();
    for (name, issuer, algs) in [
        ("jwks", default_issuer(), vec!["HS256", "RS256", "ES256"]),
        ("pem", pem_issuer, vec!["RS256", "ES256"]),
    ] {
        let (h, rec) = start(&main_config(&issuer)).await;
        for kid in HOSTILE_KIDS {
            for alg in &algs {
                let header = json!({ "alg": alg, "typ": "JWT", "kid": kid }).to_string();
                let t = sign_raw(alg, &header, &body);
                let a = h.get_with_token("/t", &t).await;
                let case = format!("{name}: {alg} kid {kid:?}");
                let d = assert_invalid(&a, &t, &case);
                assert!(
                    d.contains("kid") || d.contains("key"),
                    "{case}: description {d:?}"
                );
                assert!(
                    !a.body.contains("X-Injected") && !a.body.contains("/etc/passwd"),
                    "{case}: the kid is echoed: {}",
                    a.body
                );
            }
        }
        assert_eq!(rec.count(), 0, "{name}: nothing reached the upstream");
    }
}

#[tokio::test]
async fn hostile_kid_on_a_kidless_secret_is_ignored_not_used() {
    // An hmac_secret_file key has no kid, so a token's kid selects nothing and the secret is
    // tried (src/keys: a key without a kid serves tokens whose kid no key carries; SPEC is
    // silent, jsonwebtoken-style single-secret setups behave the same). A hostile kid on a
    // correctly signed token is therefore harmless: 200, and nothing of it reaches a header.
    let issuer = format!(
        "[[issuer]]\nname = \"hs\"\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"HS256\"]\nhmac_secret_file = \"hmac.secret\"\n"
    );
    let (h, rec) = start(&main_config(&issuer)).await;
    for kid in HOSTILE_KIDS {
        let header = json!({ "alg": "HS256", "kid": kid }).to_string();
        let a = h
            .get_with_token("/t", &sign_raw("HS256", &header, &payload()))
            .await;
        assert_passed(&a, &format!("kid {kid:?}"));
    }
    let got = rec.requests();
    assert_eq!(got.len(), HOSTILE_KIDS.len());
    for r in got {
        assert_eq!(r.header("x-auth-sub"), ["alice"], "{}", r.head);
        assert!(r.header("x-injected").is_empty(), "{}", r.head);
    }
}

/// An HS256 token (harness secret) whose header has a kid of `len` bytes.
fn token_with_kid_len(len: usize) -> String {
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": "k".repeat(len) }).to_string();
    sign_raw("HS256", &header, &payload())
}

#[tokio::test]
async fn long_kids_are_unknown_or_over_the_size_limit() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    // The longest kid that keeps the token within the default 8192 bytes: unknown kid.
    let fits = (5000..7000)
        .rev()
        .find(|&n| token_with_kid_len(n).len() <= 8192)
        .expect("a kid length that fits");
    assert!(fits > 5500, "{fits}");
    let t = token_with_kid_len(fits);
    expect_401_saying(
        &h,
        "/t",
        &t,
        &["kid"],
        &format!("{fits}-byte kid, {}-byte token", t.len()),
    )
    .await;
    // A 9000-byte kid: the token is over max_token_bytes before anything is decoded.
    expect_401_saying(
        &h,
        "/t",
        &token_with_kid_len(9000),
        &["max_token_bytes"],
        "9000-byte kid",
    )
    .await;
    // A 100 KB kid: the request head is over max_header_bytes (16 KiB): 431 (or a closed
    // connection), never the upstream.
    let t = token_with_kid_len(100_000);
    let req = format!("GET /t HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {t}\r\n\r\n");
    let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 431 "),
        "100 KB kid: {:?}",
        &out[..out.len().min(200)]
    );
    assert_eq!(rec.count(), 0, "nothing reached the upstream");

    // With max_token_bytes raised, an 8000-byte kid is read, and unknown.
    let (h, rec) = start(&format!(
        "[limits]\nmax_token_bytes = 12288\n{}",
        main_config(&default_issuer())
    ))
    .await;
    let t = token_with_kid_len(8000);
    assert!(t.len() > 8192 && t.len() <= 12288, "{}", t.len());
    expect_401_saying(&h, "/t", &t, &["kid"], "8000-byte kid, limit 12288").await;
    assert_eq!(rec.count(), 0);
}

// =============================================================================================
// crit, b64, duplicate members spelled with escapes
// =============================================================================================

#[tokio::test]
async fn crit_and_b64_forms_not_covered_elsewhere_are_refused() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let body = payload();
    for header in [
        // An unknown extension, present and listed.
        r#"{"alg":"HS256","kid":"hmac","crit":["https://example.com/ext"],"https://example.com/ext":true}"#,
        // b64 true is the default meaning, but still an extension we do not implement.
        r#"{"alg":"HS256","kid":"hmac","crit":["b64"],"b64":true}"#,
        r#"{"alg":"HS256","kid":"hmac","b64":true}"#,
        r#"{"alg":"HS256","kid":"hmac","crit":["alg"]}"#,
        r#"{"alg":"HS256","kid":"hmac","crit":["x","x"],"x":1}"#,
        r#"{"alg":"HS256","kid":"hmac","crit":[""]}"#,
        r#"{"alg":"HS256","kid":"hmac","crit":false}"#,
        // The member names spelled with JSON escapes decode to crit and b64.
        r#"{"alg":"HS256","kid":"hmac","cr\u0069t":["b64"],"b64":false}"#,
        r#"{"alg":"HS256","kid":"hmac","\u0063rit":[]}"#,
        r#"{"alg":"HS256","kid":"hmac","b\u0036\u0034":false}"#,
    ] {
        expect_401(
            &h,
            "/t",
            &sign_raw("HS256", header, &body),
            &format!("header {header}"),
        )
        .await;
    }
    // A claim named crit in the payload is just a claim.
    let c = with(claims(), "crit", json!(["b64"]));
    expect_200(
        &h,
        &sign_raw("HS256", r#"{"alg":"HS256","kid":"hmac"}"#, &c.to_string()),
        "crit claim",
    )
    .await;
    assert_eq!(rec.count(), 1);
}

#[tokio::test]
async fn duplicate_members_spelled_with_different_escapes_are_refused() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let (iat, exp) = (now(), now() + 300);
    let base = format!(r#""iss":"{ISS}","aud":"{AUD}","iat":{iat},"exp":{exp}"#);
    let good_header = r#"{"alg":"HS256","kid":"hmac"}"#;
    // Escaped names that are not duplicates are plain JSON: accepted, and read as decoded.
    let escaped_only = format!(r#"{{"s\u0075b":"alice",{base}}}"#);
    let a = h
        .get_with_token("/t", &sign_raw("HS256", good_header, &escaped_only))
        .await;
    assert_passed(&a, "escaped sub alone");
    assert_eq!(rec.requests()[0].header("x-auth-sub"), ["alice"]);
    // "sub\u0000" is another name, not a second sub: accepted, and sub is alice.
    let other_name = format!(r#"{{"sub":"alice","sub\u0000":"admin",{base}}}"#);
    expect_200(
        &h,
        &sign_raw("HS256", good_header, &other_name),
        "sub and sub\\u0000",
    )
    .await;
    for (header, body, case) in [
        (
            r#"{"alg":"HS256","\u0061lg":"none","kid":"hmac"}"#.to_owned(),
            format!(r#"{{"sub":"alice",{base}}}"#),
            "header alg and \\u0061lg",
        ),
        (
            r#"{"\u0061lg":"none","alg":"HS256","kid":"hmac"}"#.to_owned(),
            format!(r#"{{"sub":"alice",{base}}}"#),
            "header \\u0061lg then alg",
        ),
        (
            r#"{"alg":"HS256","kid":"hmac","k\u0069d":"rsa"}"#.to_owned(),
            format!(r#"{{"sub":"alice",{base}}}"#),
            "header kid and k\\u0069d",
        ),
        (
            r#"{"alg":"HS256","kid":"hmac","\u006b\u0069\u0064":"hmac"}"#.to_owned(),
            format!(r#"{{"sub":"alice",{base}}}"#),
            "header kid fully escaped, same value",
        ),
        (
            good_header.to_owned(),
            format!(r#"{{"sub":"alice","s\u0075b":"admin",{base}}}"#),
            "payload sub and s\\u0075b",
        ),
        (
            good_header.to_owned(),
            format!(r#"{{"s\u0075b":"admin","sub":"alice",{base}}}"#),
            "payload s\\u0075b then sub",
        ),
        (
            good_header.to_owned(),
            format!(r#"{{"sub":"alice",{base},"e\u0078p":9999999999}}"#),
            "payload exp and e\\u0078p",
        ),
        (
            good_header.to_owned(),
            format!(r#"{{"\u0069ss":"https://evil.test/","sub":"alice",{base}}}"#),
            "payload iss and \\u0069ss",
        ),
        (
            good_header.to_owned(),
            format!(r#"{{"sub":"alice",{base},"\u0061ud":"other"}}"#),
            "payload aud and \\u0061ud",
        ),
        (
            good_header.to_owned(),
            format!(
                r#"{{"sub":"alice",{base},"realm_access":{{"roles":["a"],"r\u006fles":["admin"]}}}}"#
            ),
            "nested roles and r\\u006fles",
        ),
    ] {
        expect_401(&h, "/t", &sign_raw("HS256", &header, &body), case).await;
    }
    let got = rec.requests();
    assert_eq!(got.len(), 2, "only the two non-duplicate tokens passed");
    assert!(got.iter().all(|r| r.header("x-auth-sub") == ["alice"]));
}

// =============================================================================================
// Malformed base64url beyond the signature
// =============================================================================================

/// A base64url string of the same bytes with non-zero unused trailing bits, when it has any.
fn respell_trailing_bits(s: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused_bits = match s.len() % 4 {
        2 => 4,
        3 => 2,
        _ => return None,
    };
    let last = *s.as_bytes().last()?;
    let idx = ALPHABET.iter().position(|c| *c == last)?;
    assert_eq!(idx & ((1 << unused_bits) - 1), 0, "canonical input");
    let mut out = s[..s.len() - 1].to_owned();
    out.push(char::from(ALPHABET[idx | 1]));
    Some(out)
}

#[tokio::test]
async fn header_and_payload_base64url_must_be_canonical_and_unbroken() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    // A header and a payload whose encodings have unused trailing bits.
    let header = (0..3)
        .map(|i| json!({ "alg": "HS256", "kid": "hmac", "x": "h".repeat(i) }).to_string())
        .find(|t| !seg(t).len().is_multiple_of(4))
        .expect("a header needing padding");
    let body = (0..3)
        .map(|i| with(claims(), "p", json!("p".repeat(i))).to_string())
        .find(|t| !seg(t).len().is_multiple_of(4))
        .expect("a payload needing padding");
    let (hd, pl) = (seg(&header), seg(&body));
    expect_200(&h, &hs_over(&format!("{hd}.{pl}")), "the canonical token").await;
    let hd2 = respell_trailing_bits(&hd).expect("header respelling");
    let pl2 = respell_trailing_bits(&pl).expect("payload respelling");
    let mid = |s: &str, ins: &str| format!("{}{ins}{}", &s[..s.len() / 2], &s[s.len() / 2..]);
    for (t, case) in [
        (
            hs_over(&format!("{hd2}.{pl}")),
            "header with non-zero trailing bits",
        ),
        (
            hs_over(&format!("{hd}.{pl2}")),
            "payload with non-zero trailing bits",
        ),
        (
            hs_over(&format!("{}.{pl}", mid(&hd, "="))),
            "= inside the header",
        ),
        (
            hs_over(&format!("{hd}.{}", mid(&pl, "="))),
            "= inside the payload",
        ),
        (
            hs_over(&format!("{hd}.{}", mid(&pl, "=="))),
            "== inside the payload",
        ),
        (
            hs_over(&format!("{hd}.{}", mid(&pl, " "))),
            "space inside the payload",
        ),
        (
            hs_over(&format!("{hd}.{}", mid(&pl, "\t"))),
            "tab inside the payload",
        ),
        (hs_over(&format!("{} .{pl}", hd)), "space before a dot"),
        (hs_over(&format!("{hd}. {pl}")), "space after a dot"),
    ] {
        expect_401(&h, "/t", &t, case).await;
    }
    // Line breaks inside the token cannot be sent in a header line: obs-fold and a bare LF
    // both break the request itself (400 from the HTTP parser), never a passed token.
    let sig_ok = hs_over(&format!("{hd}.{pl}"));
    let (input, _) = sig_ok.rsplit_once('.').expect("token");
    let sig = sig_ok.rsplit('.').next().expect("sig");
    for (auth, case) in [
        (
            format!("Bearer {hd}.\r\n {pl}.{sig}"),
            "obs-fold inside the token",
        ),
        (
            format!("Bearer {hd}.\n{pl}.{sig}"),
            "bare LF inside the token",
        ),
        (
            format!("Bearer {input}.\r\n\t{sig}"),
            "obs-fold before the signature",
        ),
    ] {
        let req = format!(
            "GET /t HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{case}: {out:?}");
    }
    assert_eq!(rec.count(), 1, "only the canonical token passed");
}

// =============================================================================================
// JWE-shaped tokens
// =============================================================================================

#[tokio::test]
async fn jwe_shaped_tokens_are_refused_at_once() {
    // A PBES2 header with p2c = 2^31-1 would cost minutes of key derivation in a library that
    // tries to decrypt. The answer must come at once: 1 s is a hang check, not a benchmark.
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let pbes2 = r#"{"alg":"PBES2-HS512+A256KW","p2c":2147483647,"p2s":"c2FsdHNhbHRzYWx0c2FsdA","enc":"A256GCM","kid":"hmac"}"#;
    let dir = r#"{"alg":"dir","enc":"A128GCM","kid":"hmac"}"#;
    let five = |header: &str| {
        [
            seg(header),
            b64(&[7u8; 40]),
            b64(&[1u8; 12]),
            seg(&payload()),
            b64(&[9u8; 16]),
        ]
        .join(".")
    };
    let five_empty_key = |header: &str| {
        format!(
            "{}..{}.{}.{}",
            seg(header),
            b64(&[1u8; 12]),
            seg(&payload()),
            b64(&[9u8; 16])
        )
    };
    for (t, case) in [
        (five(pbes2), "5 segments, PBES2 p2c 2^31-1"),
        (
            five_empty_key(pbes2),
            "5 segments, PBES2, empty key segment",
        ),
        (five(dir), "5 segments, dir/A128GCM"),
        (five_empty_key(dir), "5 segments, dir, empty key segment"),
        // The same headers on a three-segment token, signed with the real secret.
        (
            sign_raw("HS256", pbes2, &payload()),
            "3 segments, PBES2 header",
        ),
        (sign_raw("HS256", dir, &payload()), "3 segments, dir header"),
    ] {
        let a = tokio::time::timeout(Duration::from_secs(1), h.get_with_token("/t", &t))
            .await
            .unwrap_or_else(|_| panic!("{case}: no answer within 1 s"));
        assert_invalid(&a, &t, case);
    }
    // p2c means nothing on a JWS: an ignored header member on a good HS256 token.
    let stray = sign_raw(
        "HS256",
        r#"{"alg":"HS256","kid":"hmac","p2c":2147483647,"p2s":"AAAA"}"#,
        &payload(),
    );
    let a = tokio::time::timeout(Duration::from_secs(1), h.get_with_token("/t", &stray))
        .await
        .expect("HS256 with a stray p2c: no answer within 1 s");
    assert_passed(&a, "HS256 with a stray p2c");
    assert_eq!(rec.count(), 1);
}

// =============================================================================================
// ECDSA: psychic signatures (CVE-2022-21449), DER, wrong lengths
// =============================================================================================

const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const P384_N: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";

#[tokio::test]
async fn ecdsa_psychic_der_and_wrong_length_signatures_are_refused() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let mut passed = 0;
    for (alg, n_hex) in [("ES256", P256_N), ("ES384", P384_N)] {
        let valid = token(alg, &claims());
        expect_200(&h, &valid, &format!("{alg} valid")).await;
        passed += 1;
        let (input, sig) = split_sig(&valid);
        let w = sig.len() / 2;
        let n = hex(n_hex);
        assert_eq!(n.len(), w);
        let (r, s) = (sig[..w].to_vec(), sig[w..].to_vec());
        let (zero, one, ff) = (vec![0u8; w], be_small(1, w), vec![0xffu8; w]);
        let mut cases: Vec<(Vec<u8>, String)> = vec![
            ([zero.clone(), zero.clone()].concat(), "r = s = 0".into()),
            ([one.clone(), one.clone()].concat(), "r = s = 1".into()),
            ([n.clone(), n.clone()].concat(), "r = s = n".into()),
            ([n.clone(), one.clone()].concat(), "r = n, s = 1".into()),
            ([one.clone(), n.clone()].concat(), "r = 1, s = n".into()),
            ([n.clone(), zero.clone()].concat(), "r = n, s = 0".into()),
            ([zero.clone(), n.clone()].concat(), "r = 0, s = n".into()),
            ([ff.clone(), ff.clone()].concat(), "r = s = 2^k - 1".into()),
            ([zero.clone(), s.clone()].concat(), "r = 0, real s".into()),
            ([r.clone(), zero.clone()].concat(), "real r, s = 0".into()),
            ([r.clone(), n.clone()].concat(), "real r, s = n".into()),
            ([n.clone(), s.clone()].concat(), "r = n, real s".into()),
            ([s.clone(), r.clone()].concat(), "r and s swapped".into()),
            (
                der_seq(&[der_uint(&r), der_uint(&s)]),
                "the valid signature, DER-encoded".into(),
            ),
            (
                sig[..sig.len() - 1].to_vec(),
                format!("{} bytes (one short)", sig.len() - 1),
            ),
            (
                [sig.clone(), vec![0]].concat(),
                format!("{} bytes (zero appended)", sig.len() + 1),
            ),
            (
                [vec![0], sig.clone()].concat(),
                format!("{} bytes (zero prepended)", sig.len() + 1),
            ),
            (
                [sig.clone(), sig.clone()].concat(),
                "the signature twice".into(),
            ),
            (Vec::new(), "0 bytes".into()),
        ];
        // The same r or s plus the order: equal mod n, but out of range.
        if let Some(s_n) = add_be(&s, &n) {
            cases.push(([r.clone(), s_n].concat(), "real r, s + n".into()));
        }
        if let Some(r_n) = add_be(&r, &n) {
            cases.push(([r_n, s.clone()].concat(), "r + n, real s".into()));
        }
        for (bad, what) in cases {
            let t = format!("{input}.{}", b64(&bad));
            expect_401(&h, "/t", &t, &format!("{alg}: {what}")).await;
        }
    }
    // The ES384 signature size on an ES256 token and the other way round.
    let (i256, s256) = split_sig(&token("ES256", &claims()));
    let (i384, s384) = split_sig(&token("ES384", &claims()));
    expect_401(
        &h,
        "/t",
        &format!("{i256}.{}", b64(&s384)),
        "ES256 token, ES384-sized signature",
    )
    .await;
    expect_401(
        &h,
        "/t",
        &format!("{i384}.{}", b64(&s256)),
        "ES384 token, ES256-sized signature",
    )
    .await;
    assert_eq!(rec.count(), passed);
}

// =============================================================================================
// Ed25519 malleability
// =============================================================================================

/// The Ed25519 group order L, little-endian.
fn ed25519_l() -> Vec<u8> {
    let mut l = hex("1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed");
    l.reverse();
    l
}

#[tokio::test]
async fn ed25519_malleated_signatures_are_refused() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let valid = token("EdDSA", &claims());
    expect_200(&h, &valid, "EdDSA valid").await;
    let (input, sig) = split_sig(&valid);
    assert_eq!(sig.len(), 64);
    let (r, s) = (sig[..32].to_vec(), sig[32..].to_vec());
    let l = ed25519_l();
    let s_plus_l = add_le(&s, &l);
    let s_plus_2l = add_le(&s_plus_l, &l);
    let flip = |v: &[u8], byte: usize, mask: u8| {
        let mut v = v.to_vec();
        v[byte] ^= mask;
        v
    };
    let mut identity = vec![0u8; 32];
    identity[0] = 1;
    for (bad, what) in [
        ([r.clone(), s_plus_l].concat(), "S + L"),
        ([r.clone(), s_plus_2l].concat(), "S + 2L"),
        ([flip(&r, 0, 1), s.clone()].concat(), "R low bit flipped"),
        (
            [flip(&r, 31, 0x80), s.clone()].concat(),
            "R sign bit flipped",
        ),
        ([r.clone(), flip(&s, 31, 0x80)].concat(), "S top bit set"),
        ([r.clone(), flip(&s, 0, 1)].concat(), "S low bit flipped"),
        (vec![0u8; 64], "all zero"),
        (
            [identity.clone(), vec![0u8; 32]].concat(),
            "R = identity, S = 0",
        ),
        ([identity, s.clone()].concat(), "R = identity, real S"),
        ([r.clone(), l.clone()].concat(), "real R, S = L"),
        (sig[..63].to_vec(), "63 bytes"),
        ([sig.clone(), vec![0]].concat(), "65 bytes"),
    ] {
        expect_401(
            &h,
            "/t",
            &format!("{input}.{}", b64(&bad)),
            &format!("EdDSA: {what}"),
        )
        .await;
    }
    assert_eq!(rec.count(), 1);
}

// =============================================================================================
// exp / nbf / iat
// =============================================================================================

/// The default issuer's leeway.
const LEEWAY: i64 = 30;

#[tokio::test]
async fn time_claims_just_outside_the_leeway_are_refused_and_just_inside_accepted() {
    // Margins of 2 and 5 s keep the test off the exact second boundary.
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let t = |name: &str, v: i64| token("ES256", &with(claims(), name, json!(v)));
    expect_401_saying(
        &h,
        "/t",
        &t("exp", now() - LEEWAY - 2),
        &["expired"],
        "exp = now - leeway - 2",
    )
    .await;
    expect_200(&h, &t("exp", now() - LEEWAY + 5), "exp = now - leeway + 5").await;
    expect_401(
        &h,
        "/t",
        &t("nbf", now() + LEEWAY + 5),
        "nbf = now + leeway + 5",
    )
    .await;
    expect_200(&h, &t("nbf", now() + LEEWAY - 5), "nbf = now + leeway - 5").await;
    expect_401(
        &h,
        "/t",
        &t("iat", now() + LEEWAY + 5),
        "iat = now + leeway + 5",
    )
    .await;
    expect_200(&h, &t("iat", now() + LEEWAY - 5), "iat = now + leeway - 5").await;
    assert_eq!(rec.count(), 3);
}

#[tokio::test]
async fn time_claims_that_are_not_json_numbers_are_refused() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let later = now() + 300;
    for (name, v) in [
        ("exp", json!("1e10")),
        ("exp", json!(format!("{later}.0"))),
        ("exp", json!("")),
        ("exp", json!({})),
        ("exp", json!([])),
        ("exp", json!(false)),
        ("nbf", json!([now()])),
        ("nbf", json!({ "t": now() })),
        ("nbf", json!(null)),
        ("nbf", json!(true)),
        ("nbf", json!("0")),
        ("iat", json!(true)),
        ("iat", json!([])),
        ("iat", json!({})),
        ("iat", json!("1e10")),
    ] {
        let c = with(claims(), name, v.clone());
        expect_401(&h, "/t", &token("ES256", &c), &format!("{name} = {v}")).await;
    }
    // Not JSON at all: NaN, Infinity, a number serde cannot hold, hex, a leading +.
    let (iat, sub) = (now(), "alice");
    for exp in [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "0x7fffffff",
        "+9999999999",
        "9999999999.",
    ] {
        let body =
            format!(r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"{sub}","iat":{iat},"exp":{exp}}}"#);
        let t = sign_raw("HS256", r#"{"alg":"HS256","kid":"hmac"}"#, &body);
        expect_401(&h, "/t", &t, &format!("exp {exp}")).await;
    }
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn huge_negative_and_fractional_time_values() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let t = |name: &str, v: Value| token("ES256", &with(claims(), name, v));
    // Refused: an exp in the past however far, an nbf or iat in the future however far, and
    // (SPEC, issue 13) any time claim outside a signed 64-bit count of seconds.
    for (name, v) in [
        ("exp", json!(-1e308)),
        ("exp", json!(-1)),
        ("exp", json!(0)),
        ("exp", json!(-0.0)),
        ("exp", json!(i64::MIN)),
        ("exp", json!(1e308)),
        ("exp", json!(u64::MAX)),
        ("nbf", json!(1e308)),
        ("nbf", json!(u64::MAX)),
        ("nbf", json!(-1e308)),
        ("iat", json!(1e308)),
        ("iat", json!(u64::MAX)),
        ("iat", json!(-1e308)),
    ] {
        expect_401(&h, "/t", &t(name, v.clone()), &format!("{name} = {v}")).await;
    }
    // Accepted: an exp far in the future (within range) is the issuer's (signed) choice;
    // nbf/iat far in the past are simply past; fractional and exponent-form numbers are numbers.
    let mut passed = 0;
    for (name, v) in [
        ("exp", json!(9e18)),
        ("exp", json!(i64::MAX)),
        ("exp", json!(now() as f64 + 300.75)),
        ("exp", json!(1e11)),
        ("nbf", json!(-9e18)),
        ("nbf", json!(-1)),
        ("iat", json!(i64::MIN)),
        ("iat", json!(now() as f64 - 0.5)),
    ] {
        expect_200(&h, &t(name, v.clone()), &format!("{name} = {v}")).await;
        passed += 1;
    }
    assert_eq!(rec.count(), passed);
}

// =============================================================================================
// iss / aud look-alikes not covered elsewhere
// =============================================================================================

#[tokio::test]
async fn iss_and_aud_look_alikes_are_refused() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    assert_eq!(ISS, "https://issuer.test/");
    assert_eq!(AUD, "test-api");
    for iss in [
        "https://issu\u{0435}r.test/", // Cyrillic e
        "https://\u{0456}ssuer.test/", // Cyrillic i
        "https://issuer.test/\u{0}",
        "https://issuer.test/\u{200b}", // zero-width space
        "\u{feff}https://issuer.test/", // BOM
        "https://issuer\u{ff0e}test/",  // fullwidth full stop
        "https://issuer%2Etest/",
        "https://issuer.test/.",
        "https://issuer.test/%2F",
        "https://issuer.test:443/",
        "https://user@issuer.test/",
        "https://issuer.test/\t",
        "https://issuer.test/\n",
    ] {
        let c = with(claims(), "iss", json!(iss));
        expect_401_saying(
            &h,
            "/t",
            &token("ES256", &c),
            &["issuer"],
            &format!("iss {iss:?}"),
        )
        .await;
    }
    for aud in [
        json!("t\u{0435}st-api"),
        json!("test-api\u{0}"),
        json!("test-api/"),
        json!(" test-api"),
        json!("test-ap"),
        json!("test-api2"),
        json!("Test-Api"),
        json!("test-api\u{200b}"),
        json!(["t\u{0435}st-api"]),
        json!([""]),
        json!(["test-api/", "TEST-API"]),
        json!(["test-api,other"]),
        json!("test-api other"),
        json!([AUD, {}]),
        json!([AUD, []]),
        json!([AUD, false]),
        json!([AUD, 0]),
        json!([{ "aud": AUD }]),
    ] {
        let c = with(claims(), "aud", aud.clone());
        expect_401(&h, "/t", &token("ES256", &c), &format!("aud {aud}")).await;
    }
    assert_eq!(rec.count(), 0);
}

// =============================================================================================
// sub with control characters
// =============================================================================================

#[tokio::test]
async fn sub_with_control_characters_is_refused_only_when_it_becomes_a_header() {
    let (h, rec) = start(&format!(
        r#"{}
[[route]]
name = "mapped"
path_prefix = "/mapped"
upstream = "{{rec}}"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "unmapped"
path_prefix = "/unmapped"
upstream = "{{rec}}"
auth = "required"
"#,
        default_issuer()
    ))
    .await;
    let subs = [
        "alice\r\nX-Injected: 1",
        "alice\nX-Injected: 1",
        "alice\rX-Injected: 1",
        "alice\u{0}admin",
        "\r\n",
        "alice\u{7f}",
        "ali\u{85}ce", // NEL inside: a C1 control, valid UTF-8 (at an edge it is whitespace: refused)
    ];
    for sub in subs {
        let t = token("ES256", &with(claims(), "sub", json!(sub)));
        let case = format!("sub {sub:?}");
        let a = h.get_with_token("/mapped/x", &t).await;
        if sub == "ali\u{85}ce" {
            // Not an ASCII control byte: a UTF-8 header value (SPEC: strings as they are).
            assert_passed(&a, &case);
            continue;
        }
        let d = assert_invalid(&a, &t, &format!("{case} mapped"));
        assert!(d.contains("sub"), "{case}: description {d:?}");
        let a = h.get_with_token("/unmapped/x", &t).await;
        assert_passed(&a, &format!("{case} unmapped"));
    }
    let got = rec.requests();
    assert_eq!(
        got.len(),
        subs.len(),
        "one pass per sub: unmapped, or the NEL mapped"
    );
    for r in &got {
        assert!(r.header("x-injected").is_empty(), "injected: {}", r.head);
        assert!(
            !r.head.contains("admin") && !r.head.contains('\u{0}'),
            "{}",
            r.head
        );
        if r.target().starts_with("/unmapped") {
            assert!(r.header("x-auth-sub").is_empty(), "{}", r.head);
        }
    }
}

// =============================================================================================
// Authorization scheme variants
// =============================================================================================

#[tokio::test]
async fn authorization_scheme_variants_get_deterministic_answers() {
    let (h, rec) = start(&main_config(&default_issuer())).await;
    let t = token("ES256", &claims());
    // Expected answers (RFC 6750 §2.1 / RFC 9110 §11: `Bearer` 1*SP token68, scheme
    // case-insensitive; bearer.rs trims spaces around the token):
    //  200      the value is a Bearer credential with a good token;
    //  missing  401 with a bare challenge: no Bearer credential at all (another scheme, no
    //           space after the scheme, or no scheme);
    //  invalid  401 invalid_token: a Bearer credential whose token text is not a valid token.
    // (Scheme casing, Basic, and `Bearer` with no token are in tests/headers.rs.)
    enum Want {
        Pass,
        Missing,
        Invalid,
    }
    let cases: Vec<(String, Want, &str)> = vec![
        (format!("Bearer  {t}"), Want::Pass, "two spaces"),
        (format!("Bearer     {t}"), Want::Pass, "five spaces"),
        (format!("Bearer {t}   "), Want::Pass, "trailing spaces"),
        (format!("   Bearer {t}"), Want::Pass, "leading spaces (OWS)"),
        (
            format!("Bearer\t{t}"),
            Want::Missing,
            "tab after the scheme",
        ),
        (format!("Bearer {t} extra"), Want::Invalid, "a second word"),
        (format!("Bearer {t}\textra"), Want::Invalid, "tab inside"),
        (
            format!("Bearer {t}, Bearer {t}"),
            Want::Invalid,
            "two credentials in one value",
        ),
        (format!("Bearer {t},"), Want::Invalid, "trailing comma"),
        (format!("Bearer \"{t}\""), Want::Invalid, "quoted token"),
        (
            format!("Bearer token={t}"),
            Want::Invalid,
            "auth-param form",
        ),
        (
            format!("Bearer,{t}"),
            Want::Missing,
            "comma after the scheme",
        ),
        (
            format!("Bearer:{t}"),
            Want::Missing,
            "colon after the scheme",
        ),
        (
            format!("Bearer={t}"),
            Want::Missing,
            "equals after the scheme",
        ),
        (format!("Bearerx {t}"), Want::Missing, "Bearerx scheme"),
        (format!("Token {t}"), Want::Missing, "Token scheme"),
        (format!("JWT {t}"), Want::Missing, "JWT scheme"),
        (t.clone(), Want::Missing, "the bare token"),
        (String::new(), Want::Missing, "empty header"),
    ];
    let mut passed = 0;
    for (value, want, case) in &cases {
        let a = h.get("/t", &[("authorization", value.as_str())]).await;
        match want {
            Want::Pass => {
                assert_passed(&a, case);
                passed += 1;
            }
            Want::Missing => assert_missing(&a, case),
            Want::Invalid => {
                assert_invalid(&a, &t, case);
            }
        }
        assert!(!a.body.contains(&t), "{case}: token echoed");
    }
    // `DPoP` is a scheme the gateway reads (SPEC "Sender-constrained tokens"): a token that is
    // not DPoP-bound sent with it is refused with a DPoP challenge.
    let a = h
        .get("/t", &[("authorization", &format!("DPoP {t}"))])
        .await;
    assert_eq!(a.status, 401, "DPoP scheme: {}", a.body);
    assert_eq!(gateway_body(&a, "DPoP scheme")["error"], "invalid_token");
    assert!(
        a.header("www-authenticate")
            .unwrap_or_default()
            .starts_with("DPoP realm=\"jwtgate\", error=\"invalid_token\""),
        "DPoP scheme: {:?}",
        a.header("www-authenticate")
    );
    assert!(!a.body.contains(&t), "DPoP scheme: token echoed");
    // On the wire: no space after the colon is fine (OWS), obs-fold is refused by the HTTP
    // parser, a non-ASCII byte in the value is a 400 from the gateway.
    let raw = |auth: &[u8]| {
        [
            b"GET /t HTTP/1.1\r\nHost: gw.test\r\nAuthorization:".as_slice(),
            auth,
            b"\r\nConnection: close\r\n\r\n",
        ]
        .concat()
    };
    let (out, _) = raw_exchange(
        h.addr,
        &raw(format!("Bearer {t}").as_bytes()),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200 "),
        "no space after the colon: {out:?}"
    );
    passed += 1;
    let (out, _) = raw_exchange(
        h.addr,
        &raw(format!(" Bearer\r\n {t}").as_bytes()),
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 "), "obs-fold: {out:?}");
    let nbsp = [b" Bearer\xc2\xa0".as_slice(), t.as_bytes()].concat();
    let (out, _) = raw_exchange(h.addr, &raw(&nbsp), Duration::from_secs(5)).await;
    assert!(
        out.starts_with("HTTP/1.1 400 "),
        "NBSP after the scheme: {out:?}"
    );
    assert!(out.contains("invalid_request"), "{out}");
    assert_eq!(rec.count(), passed);
}

// =============================================================================================
// Raw HTTP helpers
// =============================================================================================

/// Index just past the first whole response in `buf` (Content-Length framed), if complete.
fn first_response_end(buf: &[u8]) -> Option<usize> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let cl = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())?;
    (buf.len() >= end + 4 + cl).then_some(end + 4 + cl)
}

/// Sends `bytes` and reads the first whole answer; if the connection is still open, sends a
/// probe (`GET /admin/probe`, `Connection: close`, which the gateway answers 401 itself) and
/// reads to the end. Returns everything read and whether the connection ended within 5 s.
async fn exchange_with_probe(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut probed = false;
        loop {
            if !probed && first_response_end(&out).is_some() {
                probed = true;
                let _ = s
                    .write_all(
                        b"GET /admin/probe HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), ended)
}

/// The status codes of every response in `out`, in order.
fn statuses(out: &str) -> Vec<u16> {
    out.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| out.get(i + 9..i + 13))
        .filter(|s| s.ends_with(' '))
        .filter_map(|s| s[..3].parse().ok())
        .collect()
}

// =============================================================================================
// Request smuggling
// =============================================================================================

/// `/admin` required, everything else public, all to the recorder under `/r-NAME`.
fn admin_public_config(catch_all: bool) -> String {
    let mut c = format!(
        r#"{}
[[route]]
name = "admin"
path_prefix = "/admin"
upstream = "{{rec}}/r-admin"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"

[[route]]
name = "public"
path_prefix = "/public"
upstream = "{{rec}}/r-public"
auth = "none"
"#,
        default_issuer()
    );
    if catch_all {
        c.push_str(
            "\n[[route]]\nname = \"root\"\npath_prefix = \"/\"\nupstream = \"{rec}/r-root\"\nauth = \"none\"\n",
        );
    }
    c
}

/// A request for the protected route, hidden where a confused parser might find it.
const SMUGGLED: &str = "GET /admin/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";

#[tokio::test]
async fn request_smuggling_never_delivers_a_second_request_upstream() {
    let (h, rec) = start(&admin_public_config(true)).await;
    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len());
    let head = "POST /public/x HTTP/1.1\r\nHost: gw.test\r\n";
    // (case, raw request, expected first status, forwarded body when forwarded)
    let cases: Vec<(&str, String, u16, Option<String>)> = vec![
        (
            "CL.TE: Content-Length 6 + chunked, 0-chunk then G",
            format!("{head}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
            200,
            Some(String::new()),
        ),
        (
            "CL.TE with a whole request after the 0-chunk",
            format!(
                "{head}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
                5 + SMUGGLED.len()
            ),
            200,
            Some(String::new()),
        ),
        (
            "TE.CL: Content-Length 4 + chunked body holding a request",
            format!(
                "{head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
            200,
            Some(SMUGGLED.to_owned()),
        ),
        (
            "TE then CL",
            format!(
                "{head}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
            200,
            Some(SMUGGLED.to_owned()),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!(
                "{head}Transfer-Encoding: chunked, identity\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
            400,
            None,
        ),
        (
            "Transfer-Encoding: identity, chunked (chunked last: valid)",
            format!(
                "{head}Transfer-Encoding: identity, chunked\r\n\r\n{}",
                chunk("abc")
            ),
            200,
            Some("abc".to_owned()),
        ),
        (
            "Transfer-Encoding: xchunked",
            format!(
                "{head}Transfer-Encoding: xchunked\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
            400,
            None,
        ),
        (
            "Transfer-Encoding: chunkedx",
            format!(
                "{head}Transfer-Encoding: chunkedx\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
            400,
            None,
        ),
        (
            "Transfer-Encoding with extra OWS",
            format!("{head}Transfer-Encoding:   chunked\r\n\r\n{}", chunk("abc")),
            200,
            Some("abc".to_owned()),
        ),
        (
            "Transfer-Encoding: CHUNKED",
            format!("{head}Transfer-Encoding: CHUNKED\r\n\r\n{}", chunk("abc")),
            200,
            Some("abc".to_owned()),
        ),
        (
            "space before the colon: Transfer-Encoding : chunked",
            format!(
                "{head}Transfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
            400,
            None,
        ),
        (
            "two Transfer-Encoding headers, the last not chunked",
            format!(
                "{head}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
            400,
            None,
        ),
        (
            "Transfer-Encoding chunked on HTTP/1.0",
            format!(
                "POST /public/x HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
            400,
            None,
        ),
        (
            "two Content-Length headers, different values",
            format!("{head}Content-Length: 6\r\nContent-Length: 7\r\n\r\n123456{SMUGGLED}"),
            400,
            None,
        ),
        (
            "two Content-Length headers, same value",
            format!("{head}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
            200,
            Some("abc".to_owned()),
        ),
        (
            "Content-Length: +6",
            format!("{head}Content-Length: +6\r\n\r\n123456{SMUGGLED}"),
            400,
            None,
        ),
        (
            "Content-Length: 6, 6",
            format!("{head}Content-Length: 6, 6\r\n\r\n123456{SMUGGLED}"),
            400,
            None,
        ),
        (
            "Content-Length: -1",
            format!("{head}Content-Length: -1\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
        (
            "Content-Length larger than u64",
            format!("{head}Content-Length: 99999999999999999999999\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
        (
            "Content-Length in hex",
            format!("{head}Content-Length: 0x6\r\n\r\n123456{SMUGGLED}"),
            400,
            None,
        ),
        (
            "Content-Length with a space inside",
            format!("{head}Content-Length: 1 2\r\n\r\n{SMUGGLED}"),
            400,
            None,
        ),
    ];
    let mut expected_upstream = 0;
    for (case, req, want_status, want_body) in cases {
        let before = rec.count();
        let (out, ended) = exchange_with_probe(h.addr, req.as_bytes()).await;
        let got = statuses(&out);
        // After a 400 the gateway closes. After an answered request it reads the next one (the
        // probe, 401) — except when the request carried both Content-Length and
        // Transfer-Encoding: then it closes after answering (RFC 9112 §6.1: such a message
        // "ought to be handled as an error"; hyper turns keep-alive off).
        let both = req.contains("\r\nContent-Length:") && req.contains("\r\nTransfer-Encoding:");
        let want = match (want_status, both) {
            (400, _) => vec![400],
            (_, true) => vec![want_status],
            _ => vec![want_status, 401],
        };
        assert_eq!(got, want, "{case}: answers\n{out}");
        assert!(
            ended,
            "{case}: the connection neither closed nor answered the probe: {out}"
        );
        // A request through the gateway after the attack: the recorder is in sync.
        let a = h.get("/public/sync", &[]).await;
        assert_passed(&a, &format!("{case}: sync"));
        let all = rec.requests();
        let new = &all[before..];
        let forwarded = new.len() - 1;
        assert_eq!(
            forwarded,
            usize::from(want_body.is_some()),
            "{case}: upstream received {new:#?}"
        );
        if let Some(body) = &want_body {
            expected_upstream += 1;
            let r = &new[0];
            assert_eq!(r.target(), "/r-public/public/x", "{case}");
            assert_ne!(
                framing(&r.head),
                Framing::Invalid,
                "{case}: ambiguous framing upstream:\n{}",
                r.head
            );
            assert!(r.header("content-length").len() <= 1, "{case}: {}", r.head);
            assert_eq!(String::from_utf8_lossy(&r.body), *body, "{case}: body");
        }
        expected_upstream += 1;
        assert_eq!(
            new.last().map(Received::target),
            Some("/r-public/public/sync"),
            "{case}"
        );
        assert!(
            all.iter().all(|r| !r.target().contains("admin")),
            "{case}: a smuggled request reached the upstream: {all:#?}"
        );
    }
    assert_eq!(rec.count(), expected_upstream);
}

// =============================================================================================
// Path tricks not covered by routing.rs
// =============================================================================================

/// A raw GET with `Connection: close`; returns (first status, raw text).
async fn raw_get(h: &Harness, target: &str, extra: &str) -> (u16, String) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\n{extra}Connection: close\r\n\r\n");
    let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
    let status = statuses(&out)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no answer to {target:?}: {out:?}"));
    (status, out)
}

#[tokio::test]
async fn path_tricks_never_reach_admin_without_a_token() {
    // Without a catch-all: anything not under /admin or /public is 404.
    let (h, rec) = start(&admin_public_config(false)).await;
    for (target, want, case) in [
        // /ADMIN is no route as forwarded but /admin to a case-insensitive upstream: the
        // readings disagree, so it is refused (tests/attacks_paths.rs has the whole class).
        ("/ADMIN", 400, "upper case"),
        ("/Admin/x", 400, "mixed case"),
        ("/admin%00", 400, "encoded NUL"),
        ("/admin%00/x", 400, "encoded NUL, then more"),
        ("/admin%0a", 400, "encoded LF"),
        ("/admin%2f", 401, "encoded slash after the prefix"),
        (
            "/admin%2F",
            401,
            "encoded slash after the prefix, upper case",
        ),
        ("/admin%5c", 401, "encoded backslash after the prefix"),
        ("/admin/", 401, "trailing slash"),
        (
            "http://evil.example/admin",
            401,
            "absolute-form, another authority",
        ),
        (
            "http://evil.example/public/../admin",
            401,
            "absolute-form with dot segments",
        ),
        ("admin", 400, "no leading slash"),
        ("*", 400, "asterisk-form"),
    ] {
        let (status, out) = raw_get(&h, target, "").await;
        assert_eq!(status, want, "{case} ({target:?}): {out}");
        let error = match want {
            400 => "\"invalid_request\"",
            401 => "\"missing_token\"",
            _ => "\"not_found\"",
        };
        assert!(out.contains(error), "{case} ({target:?}): {out}");
    }
    // A fragment is not part of a request target: the HTTP layer drops it, so it can neither
    // hide /admin nor carry dot segments past the router.
    let (status, out) = raw_get(&h, "/admin#frag", "").await;
    assert_eq!(status, 401, "/admin#frag: {out}");
    assert!(out.contains("\"missing_token\""), "{out}");
    let (status, out) = raw_get(&h, "/public/x#/../../admin", "").await;
    assert_eq!(status, 200, "/public/x#/../../admin: {out}");
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].target(), "/r-public/public/x");
}

#[tokio::test]
async fn with_a_public_catch_all_case_variants_of_a_protected_prefix_are_refused() {
    // /ADMIN is the public catch-all's as forwarded, but /admin to a case-insensitive upstream
    // (IIS): the readings disagree, so it is a 400, never forwarded.
    let (h, rec) = start(&admin_public_config(true)).await;
    let a = h.get("/ADMIN", &[]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("ambiguous"), "{}", a.body);
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn encoded_separator_before_a_protected_prefix_stays_protected() {
    // `//admin` is normalised to /admin (401). Its encoded spellings are not: the gateway
    // forwards `/%2Fadmin` on the public catch-all without a token, and nginx (which decodes
    // %2F before merging slashes) or IIS (`\` and %5C as `/`) serve /admin for it. SPEC: an
    // encoded `/` never lets a request escape a route; here it lets one into another.
    let (h, rec) = start(&admin_public_config(true)).await;
    let mut leaked = Vec::new();
    for target in [
        "/%2Fadmin",
        "/%2fadmin/secret",
        "/%2F%2Fadmin",
        "/%5Cadmin",
        "/%5cadmin/secret",
        "/\\admin",
        "/\\admin/secret",
        "/public/..%2F%2Fadmin",
        "/public/../%2Fadmin",
    ] {
        let (status, out) = raw_get(&h, target, "").await;
        if !matches!(status, 400 | 401) {
            leaked.push(format!(
                "{target} -> {status} {}",
                out.rsplit("\r\n\r\n").next().unwrap_or("")
            ));
        }
    }
    assert!(
        leaked.is_empty(),
        "reached the upstream without a token:\n{}",
        leaked.join("\n")
    );
    assert_eq!(rec.count(), 0, "{:#?}", rec.requests());
}

#[tokio::test]
async fn absolute_form_authority_wins_over_a_conflicting_host_header() {
    let (h, rec) = start(&format!(
        r#"{}
[[route]]
name = "internal"
host = "internal.example"
path_prefix = "/"
upstream = "{{rec}}/r-internal"
auth = "required"

[[route]]
name = "open"
path_prefix = "/"
upstream = "{{rec}}/r-open"
auth = "none"
"#,
        default_issuer()
    ))
    .await;
    let send = |target: &'static str, host: &'static str| {
        let addr = h.addr;
        async move {
            let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            raw_exchange(addr, req.as_bytes(), Duration::from_secs(5))
                .await
                .0
        }
    };
    // The authority names the protected host: protected, whatever Host says.
    let out = send("http://internal.example/x", "public.example").await;
    assert_eq!(statuses(&out).first(), Some(&401), "{out}");
    assert!(out.contains("missing_token"), "{out}");
    // The authority names another host: the open route, and the upstream's Host is that
    // authority, never the internal name from the Host header (a virtual-hosting upstream
    // must not serve internal.example content for it).
    let out = send("http://public.example/x", "internal.example").await;
    assert_eq!(statuses(&out).first(), Some(&200), "{out}");
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].target(), "/r-open/x");
    assert_eq!(got[0].header("host"), ["public.example"], "{}", got[0].head);
    assert_eq!(
        got[0].header("x-forwarded-host"),
        ["public.example"],
        "{}",
        got[0].head
    );
    assert!(!got[0].head.contains("internal.example"), "{}", got[0].head);
}

// =============================================================================================
// Header lines and sizes
// =============================================================================================

#[tokio::test]
async fn oversized_and_malformed_header_lines_never_reach_the_upstream() {
    let (h, rec) = start(&admin_public_config(true)).await;
    // 1 MiB header value: 431, or the connection closed before an answer.
    let big = "a".repeat(1 << 20);
    let req = format!("GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-Big: {big}\r\n\r\n");
    let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 431 "),
        "1 MiB header: {:?}",
        &out[..out.len().min(200)]
    );
    for (line, case) in [
        ("NoColonHere", "a header line without a colon"),
        ("X-Space : v", "whitespace before the colon"),
        (": no-name", "an empty header name"),
        ("X-Nul: a\u{0}b", "NUL in a value"),
        ("X Bad: v", "space inside a header name"),
        ("X-Bad\u{1}: v", "control character in a header name"),
    ] {
        let req = format!(
            "GET /public/x HTTP/1.1\r\nHost: gw.test\r\n{line}\r\nConnection: close\r\n\r\n"
        );
        let (out, _) = raw_exchange(h.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{case}: {out:?}");
    }
    assert_eq!(rec.count(), 0, "{:#?}", rec.requests());
}

// =============================================================================================
// Slow request bodies
// =============================================================================================

/// Writes a POST that promises 1000 body bytes and sends 10, then reads until the gateway
/// closes the connection or 10 s pass. Returns (what arrived, closed within 10 s).
async fn stalled_post(addr: SocketAddr, path: &str) -> (String, bool) {
    let req =
        format!("POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1000\r\n\r\n0123456789");
    raw_exchange(addr, req.as_bytes(), Duration::from_secs(10)).await
}

#[tokio::test]
async fn stalled_request_body_is_answered_504_after_upstream_timeout_and_closed() {
    // The client promises 1000 bytes, sends 10 and stalls; the recorder waits for the rest.
    // With upstream_timeout = 2s the gateway answers 504 and closes (the unread body makes the
    // connection unusable), well within the 10 s bound.
    let (h, rec) = start(&format!(
        "[limits]\nupstream_timeout = \"2s\"\n{}",
        admin_public_config(true)
    ))
    .await;
    let (text, closed) = stalled_post(h.addr, "/public/slow").await;
    assert!(closed, "the connection is still open after 10 s: {text:?}");
    assert!(text.starts_with("HTTP/1.1 504 "), "{text:?}");
    assert!(text.contains("\"upstream_timeout\""), "{text}");
    // The upstream saw the head of the streamed request, never a complete body.
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].target(), "/r-public/public/slow");
    assert!(got[0].body.is_empty(), "{got:#?}");
}

/// An upstream that answers `200 ok` as soon as it has a request head, then keeps reading
/// (draining) whatever body follows, as many frameworks do.
async fn early_answer_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while find(&buf, b"\r\n\r\n").is_none() {
                    if !fill(&mut s, &mut buf).await {
                        return;
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                while fill(&mut s, &mut buf).await {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn stalled_request_body_after_an_early_answer_is_eventually_closed() {
    // The upstream answers before the body; the gateway relays that 200 at once, but then
    // waits for the other 990 bytes with no time limit, holding the client connection and the
    // upstream connection open for as long as the client likes (slowloris on bodies). Envoy
    // (stream_idle_timeout), HAProxy (timeout client) and nginx (client_body_timeout) all close
    // such a connection. With every configured timeout at 2 s or less it must be closed within
    // 10 s.
    let up = early_answer_upstream().await;
    let h = Harness::start(&format!(
        "[limits]\nupstream_timeout = \"2s\"\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"2s\"\nupstream_connect_timeout = \"1s\"\n{}\n[[route]]\nname = \"early\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"none\"\n",
        default_issuer()
    ))
    .await;
    let (text, closed) = stalled_post(h.addr, "/slow").await;
    assert!(
        text.starts_with("HTTP/1.1 200 "),
        "the early answer is relayed: {text:?}"
    );
    assert!(
        closed,
        "the connection is still held open after 10 s: {text:?}"
    );
}

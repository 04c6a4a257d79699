#!/usr/bin/env python3
"""Regenerates the fuzz keys (fuzz/keys/*.jwks.json) and the seed corpora (fuzz/corpus/*).

The keys are derived deterministically from fixed labels, so running this again gives the same
files; they are FUZZING-ONLY keys whose private halves anyone can recompute. The `token` target
verifies at a fixed time (NOW below), so the valid seeds stay valid forever.

Needs the `cryptography` package (python3 -m pip install cryptography). The generated files are
committed; CI never runs this.
"""

import base64
import hashlib
import hmac
import json
import os
import random

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1_700_000_100  # must match NOW in fuzz_targets/token.rs and tests/properties.rs
ISS = "https://fuzz.jwtgate.test/"
OTHER_ISS = "https://other.jwtgate.test/"
AUD = "fuzz-api"


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def derive(label: str) -> bytes:
    return hashlib.sha256(b"jwtgate-fuzz/" + label.encode()).digest()


def is_probable_prime(n: int, rng: random.Random) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(40):
        a = rng.randrange(2, n - 1)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def rsa_key(label: str) -> rsa.RSAPrivateKey:
    rng = random.Random(derive(label))
    e = 65537

    def prime() -> int:
        while True:
            p = rng.getrandbits(1024) | (3 << 1022) | 1
            if (p - 1) % e != 0 and is_probable_prime(p, rng):
                return p

    p, q = prime(), prime()
    d = pow(e, -1, (p - 1) * (q - 1))
    nums = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    return nums.private_key()


def ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(derive(label), "big") % (2**255)
    return ec.derive_private_key(scalar, ec.SECP256R1())


KEYS = {
    "hs": derive("hs256-secret"),  # 32 bytes
    "es": ec_key("es256"),
    "ed": ed25519.Ed25519PrivateKey.from_private_bytes(derive("ed25519")),
    "rs": rsa_key("rsa2048"),
    "other": ec_key("other-es256"),
}


def jwk_public(kid, key):
    if isinstance(key, bytes):
        j = {"kty": "oct", "k": b64(key)}
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        n = key.public_key().public_numbers()
        j = {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        j = {"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))}
    else:
        n = key.public_key().public_numbers()
        j = {"kty": "RSA", "n": b64(n.n.to_bytes(256, "big")), "e": b64(n.e.to_bytes(3, "big"))}
    if kid is not None:
        j["kid"] = kid
    return j


def sign(alg: str, key, header: str, payload: str) -> str:
    si = (b64(header.encode()) + "." + b64(payload.encode())).encode()
    if alg == "HS256":
        sig = hmac.new(key, si, hashlib.sha256).digest()
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(si, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "EdDSA":
        sig = key.sign(si)
    elif alg == "RS256":
        sig = key.sign(si, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        sig = key.sign(si, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    else:
        raise ValueError(alg)
    return si.decode() + "." + b64(sig)


def claims(**extra):
    c = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "iat": NOW - 100,
        "exp": NOW + 3600,
        "scope": "read write",
        "roles": ["admin", "dev"],
        "email": "alice@example.com",
        "org": {"id": 7, "name": "acme"},
    }
    c.update(extra)
    return json.dumps(c, separators=(",", ":"))


def hdr(alg, kid, **extra):
    h = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        h["kid"] = kid
    h.update(extra)
    return json.dumps(h, separators=(",", ":"))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def main():
    keys_dir = os.path.join(HERE, "keys")
    os.makedirs(keys_dir, exist_ok=True)
    with open(os.path.join(keys_dir, "fuzz.jwks.json"), "w") as f:
        json.dump({"keys": [jwk_public(k, KEYS[k]) for k in ("hs", "es", "ed", "rs")]}, f, indent=1)
        f.write("\n")
    with open(os.path.join(keys_dir, "other.jwks.json"), "w") as f:
        json.dump({"keys": [jwk_public(None, KEYS["other"])]}, f, indent=1)
        f.write("\n")

    # --- token ---
    for alg, kid in (("HS256", "hs"), ("ES256", "es"), ("EdDSA", "ed"), ("RS256", "rs"), ("PS256", "rs")):
        write("token", f"valid_{alg.lower()}", sign(alg, KEYS[kid], hdr(alg, kid), claims()))
    write("token", "valid_other_issuer_no_kid", sign("ES256", KEYS["other"], hdr("ES256", None), claims(iss=OTHER_ISS)))
    write("token", "valid_aud_array_at_jwt", sign("ES256", KEYS["es"], hdr("ES256", "es", typ="at+jwt"), claims(aud=["x", AUD])))
    write("token", "expired", sign("ES256", KEYS["es"], hdr("ES256", "es"), claims(exp=NOW - 3600)))
    write("token", "wrong_aud", sign("HS256", KEYS["hs"], hdr("HS256", "hs"), claims(aud="nope")))
    write("token", "crit", sign("HS256", KEYS["hs"], hdr("HS256", "hs", crit=["exp"]), claims()))
    write("token", "kid_null", sign("HS256", KEYS["hs"], hdr("HS256", None)[:-1] + ',"kid":null}', claims()))
    write("token", "unknown_kid", sign("HS256", KEYS["hs"], hdr("HS256", "nope"), claims()))
    write("token", "alg_confusion_hs_with_rsa_kid", sign("HS256", KEYS["hs"], hdr("HS256", "rs"), claims()))
    write("token", "valid_but_unsafe_email_claim", sign("HS256", KEYS["hs"], hdr("HS256", "hs"), claims(email="a\r\nX: y")))
    write("token", "duplicate_claim", sign("HS256", KEYS["hs"], hdr("HS256", "hs"), claims()[:-1] + ',"sub":"mallory"}'))
    write("token", "valid_float_times", sign("HS256", KEYS["hs"], hdr("HS256", "hs"), claims(exp=9.0e18, nbf=-9.0e18, iat=0.5)))
    write("token", "time_out_of_i64_range", sign("HS256", KEYS["hs"], hdr("HS256", "hs"), claims(exp=1e300, nbf=-1e300, iat=0.5)))
    write("token", "alg_none", b64(b'{"alg":"none"}') + "." + b64(claims().encode()) + ".")
    write("token", "jwe_five_segments", "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d")
    write("token", "two_segments", b64(hdr("HS256", "hs").encode()) + "." + b64(claims().encode()))
    write("token", "padded_base64", sign("HS256", KEYS["hs"], hdr("HS256", "hs"), claims()) + "==")

    # --- config ---
    route = '''
[[route]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:9000"
auth = "required"
require = { scope = "read" }
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Roles" = "/realm_access/roles"
'''
    write("config", "minimal", f'''[listen]
addr = "127.0.0.1:8080"

[[issuer]]
name = "a"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
jwks_url = "https://idp.example/jwks.json"
{route}''')
    write("config", "full", f'''[listen]
addr = "127.0.0.1:8443"
tls = {{ cert = "server.crt", key = "server.key", client_ca = "ca.crt" }}

[admin]
addr = "127.0.0.1:9901"

[limits]
max_token_bytes = 4096
max_header_bytes = 16384
header_read_timeout = "10s"
upstream_connect_timeout = "250ms"
upstream_timeout = "30s"
shutdown_grace = "5s"

[[issuer]]
name = "corp"
issuer = "{ISS}"
audiences = ["{AUD}", "other"]
algorithms = ["ES256", "RS256", "PS256", "EdDSA"]
discovery_url = "https://idp.example/.well-known/openid-configuration"
leeway = "30s"
refresh = "5m"
typ = ["JWT", "at+jwt"]

[[issuer]]
name = "local"
issuer = "{OTHER_ISS}"
audiences = ["{AUD}"]
algorithms = ["HS256"]
hmac_secret_env = "JWT_SECRET"

[[route]]
name = "orders"
path_prefix = "/api/orders"
host = "*.example.com"
methods = ["GET", "POST"]
upstream = "https://orders.internal:8443/base"
auth = "required"
issuers = ["corp"]
require = {{ scope = "orders:read", "/realm_access/roles" = ["admin"] }}
forward_token = true
websocket = false
upstream_http2 = true
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"

[[route]]
name = "public"
path_prefix = "/"
upstream = "http://127.0.0.1:9000"
auth = "none"
''')
    write("config", "errors_everywhere", '''[listen]
addr = "nope"
bogus = 1
[[issuer]]
name = ""
issuer = 7
algorithms = ["none", "HS256"]
keys = []
leeway = "1h"
[[route]]
name = "x"
path_prefix = "/a/../b"
upstream = "ftp://x"
auth = "sometimes"
''')
    write("config", "bad_toml", 'a = "unterminated\n[[route]\n= 3\n')

    # --- path ---
    for i, p in enumerate([
        "/", "//a///b/", "/a/./b/../c", "/public/..%2fadmin", "/%2e%2e/admin", "/a%2Fb",
        "/a/..;/b", "/caf%C3%A9/%7e", "/a\\..\\b", "/%00", "/%zz", "/api/orders;x=1",
    ]):
        write("path", f"seed_{i:02}", p)
    # Two-part inputs: the path target splits at the first 0xff byte into (prefix, path).
    write("path", "prefix_pair", b"/api\xff/api/orders/1")
    write("path", "prefix_pair_encoded", b"/api/orders\xff/api%2Forders")


if __name__ == "__main__":
    main()

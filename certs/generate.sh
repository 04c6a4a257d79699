#!/usr/bin/env bash
# (Re)generates DEVELOPMENT-ONLY TLS and JWT key material for jwtgate.
# Everything this script writes is intentionally public. NEVER use it in production.
#
# Usage: certs/generate.sh   (works from any directory; writes next to this script)
# Requires: openssl (1.1.1+; tested with 3.0)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

umask 022
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Generate an EC P-256 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----).
gen_ec_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$1"
}

# Sign a leaf certificate with the dev CA.
# $1 = name (writes $1.key/$1.crt), $2 = subject, $3 = extensions text, $4 = days
issue_leaf() {
    local name="$1" subj="$2" exts="$3" days="$4"
    gen_ec_key "$name.key"
    openssl req -new -key "$name.key" -subj "$subj" -out "$TMP/$name.csr"
    printf '%s\n' "$exts" > "$TMP/$name.ext"
    openssl x509 -req -in "$TMP/$name.csr" \
        -CA dev-ca.crt -CAkey dev-ca.key -CAcreateserial -CAserial "$TMP/ca.srl" \
        -days "$days" -sha256 -extfile "$TMP/$name.ext" -out "$name.crt"
}

# ---------------------------------------------------------------- dev CA
gen_ec_key dev-ca.key
openssl req -x509 -new -key dev-ca.key -sha256 -days 3650 \
    -subj "/CN=jwtgate development CA (NOT FOR PRODUCTION)" \
    -addext "basicConstraints=critical,CA:true" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out dev-ca.crt

# ---------------------------------------------------------------- server cert
issue_leaf server "/CN=localhost" "basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:*.localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" 825

# ---------------------------------------------------------------- second server cert (SNI tests)
issue_leaf other "/CN=other.localhost" "basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:other.localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" 825

# ---------------------------------------------------------------- client cert (mTLS)
issue_leaf client "/CN=dev-client" "basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" 825

# ---------------------------------------------------------------- JWT signing keys
gen_ec_key dev-signing-es256.key
openssl pkey -in dev-signing-es256.key -pubout -out dev-signing-es256.pem

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dev-signing-rs256.key
openssl pkey -in dev-signing-rs256.key -pubout -out dev-signing-rs256.pem

# ---------------------------------------------------------------- HMAC secret
# 64 printable hex characters, no trailing newline.
printf '%s' "$(openssl rand -hex 32)" > dev-hmac.secret

# Dev material is public on purpose; keep everything world-readable so that
# containers / test runners under another uid can read it (git does not track
# these modes anyway).
chmod 0644 ./*.crt ./*.key ./*.pem dev-hmac.secret

openssl verify -CAfile dev-ca.crt server.crt other.crt client.crt
echo "Development material regenerated in $(pwd). DO NOT USE IN PRODUCTION."

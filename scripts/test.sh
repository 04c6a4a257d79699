#!/usr/bin/env bash
# Runs every test: unit, integration (real sockets on 127.0.0.1) and doc tests.
# README's second command and .ci/run both call this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# The OpenID-provider end-to-end test (tests/oidc.rs) runs a real provider on node with the
# npm packages pinned by tests/oidc/package-lock.json: install them on a fresh clone (or after
# the lockfile changed) where node and npm exist; otherwise say in one line what is skipped.
oidc=tests/oidc
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "test.sh: skipping the OpenID-provider end-to-end test (tests/oidc.rs): node and npm are not installed"
elif [ ! -d "$oidc/node_modules" ] || [ "$oidc/package-lock.json" -nt "$oidc/node_modules/.package-lock.json" ]; then
    echo "test.sh: installing the OpenID-provider test's npm packages (npm ci --prefix $oidc)"
    if ! npm ci --prefix "$oidc" --no-audit --no-fund; then
        echo "test.sh: npm ci failed: the OpenID-provider end-to-end test (tests/oidc.rs) will be skipped"
    fi
fi

# The identity-assertion tests (tests/assertion.rs) verify with PyJWT, installed in a venv under
# target/ so nothing is installed system-wide; without python3 those tests fail and say so.
venv=target/pyjwt-venv
if ! command -v python3 >/dev/null; then
    echo "test.sh: python3 is not installed: tests/assertion.rs will fail (install python3 and python3-venv)"
elif ! "$venv/bin/python" -c "import jwt, cryptography" 2>/dev/null; then
    echo "test.sh: installing PyJWT for tests/assertion.rs (python3 -m venv $venv; pip install pyjwt[crypto])"
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "pyjwt[crypto]" ||
        echo "test.sh: installing PyJWT failed: tests/assertion.rs will fail"
fi

# Real components the end-to-end tests drive: Redis (shared state), a headless Chromium and its
# WebDriver (browser sessions, CORS). Installed from the Debian archive when missing and this
# runs as root with apt-get; otherwise the tests that need them fail, naming the package.
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${need[*]} (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "test.sh: ${need[*]} missing and cannot be installed here: the tests that need them will fail"
    fi
fi

cargo test --locked --all-targets "$@"
cargo test --locked --doc

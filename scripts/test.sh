#!/usr/bin/env bash
# Runs every test: unit, integration (real sockets on 127.0.0.1) and doc tests.
# README's second command and .ci/run both call this script.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets "$@"
cargo test --locked --doc

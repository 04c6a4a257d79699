#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 30): ./fuzz/run.sh [SECONDS] [TARGET...]
# Needs a nightly toolchain and cargo-fuzz (`cargo +nightly install cargo-fuzz`); without them
# it says so and exits 0, so CI may call it unconditionally. New corpus entries go to a scratch
# directory; the committed seeds in fuzz/corpus/<target>/ are only read. A crash leaves the
# input under fuzz/artifacts/<target>/ and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(token config path)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: skipped (needs 'cargo +nightly fuzz': rustup toolchain install nightly && cargo +nightly install cargo-fuzz)"
  exit 0
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cargo +nightly fuzz build
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "== fuzz target $t for ${secs}s"
  cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=8192 -timeout=10 -print_final_stats=1
done

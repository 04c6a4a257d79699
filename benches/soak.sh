#!/usr/bin/env bash
# Soak harness of issue 18: steady load through jwtgate while everything around it changes.
#
#   benches/soak.sh [--minutes N] [--rate R] [--no-build]
#
# For N minutes (default 10) on 127.0.0.1 only: a load client sends about R requests per
# second (default 400) through jwtgate, a repeated-token mix (one token per signing key, reused)
# and unique tokens, while a local JWKS provider rotates its signing key every second (the next
# key is published a second before use; old keys stay published for 3 s), the config is
# rewritten every 5 s (a route added or removed), SIGHUP is sent every 7 s, the nginx upstream is
# restarted once (at 40%) and, when this build accepts a `[redis]` section and redis-server is
# installed, Redis is restarted once (at 60%).
#
# Reports per 10 s window: requests, failed valid requests, p50/p99 latency, jwtgate's RSS and
# open file descriptors (report.txt, windows.tsv, soak.svg and soak.png in target/soak). Exits non-zero
# when a valid request failed outside the upstream's restart gap (a connection refused while
# nginx is down is counted apart, as `during upstream restart`), or when RSS or open fds grew
# (last window above the larger of 1.5x and +32 MiB / +64 fds of the second window).
# Everything it starts is stopped on exit, by PID.
#
# Needs: cargo, python3 with `cryptography`, nginx, curl, gnuplot (installed when missing);
# redis-server optional.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK="${SOAK_WORK:-$ROOT/target/soak}"
MINUTES=10
RATE=400
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift ;;
        --rate) RATE="$2"; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
install_missing nginx
# gnuplot draws target/soak/soak.png; Debian's gnuplot-nox has it without X.
command -v gnuplot >/dev/null 2>&1 || install_missing gnuplot-nox
require_tools cargo python3 nginx curl
python3 -c 'import cryptography' 2>/dev/null \
    || die "python3's cryptography module is required (Debian package python3-cryptography)"

cd "$ROOT"
if [[ $BUILD -eq 1 ]]; then
    log "building jwtgate (cargo build --release)"
    cargo build --release --bin jwtgate >&2
fi
rm -rf "$WORK"
mkdir -p "$WORK"
exec python3 "$ROOT/benches/soak/soak.py" --binary "$ROOT/target/release/jwtgate" \
    --work "$WORK" --minutes "$MINUTES" --rate "$RATE"

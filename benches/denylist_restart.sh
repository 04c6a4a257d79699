#!/usr/bin/env bash
# Issue 14's restart target: a gateway whose Redis holds 1,000,000 denylist entries is ready
# (/readyz 200, the whole set loaded) within 5 s of its start.
#
#   benches/denylist_restart.sh [--entries N] [--no-build]
#
# Starts a redis-server on 127.0.0.1 (its own port and data directory), writes N entries
# (default 1,000,000: 900,000 jti, 50,000 sub, 50,000 sid, ids of 36 bytes) into
# jwtgate:denylist:entries with redis-cli --pipe, then starts the release jwtgate with [redis]
# three times and prints the time from exec to /readyz and the resident memory once ready,
# next to the same gateway without [redis] (the baseline, same run). Everything it starts is
# stopped on exit, by PID. Needs: cargo, python3, curl, redis-server, redis-cli (apt-get
# installs them when missing). Work files go to target/denylist-bench.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK="${BENCH_WORK:-$ROOT/target/denylist-bench}"
ENTRIES=1000000
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --entries) ENTRIES="$2"; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "denylist_restart.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
trap stop_started EXIT
install_missing redis-server curl python3
command -v redis-cli >/dev/null 2>&1 || install_missing redis-tools
require_tools cargo python3 curl redis-server redis-cli

rm -rf "$WORK"
mkdir -p "$WORK/redis"
cd "$ROOT"
if [[ $BUILD -eq 1 ]]; then
    log "building jwtgate (cargo build --release)"
    cargo build --release --bin jwtgate >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; die "build failed"; }
fi
JWTGATE="$ROOT/target/release/jwtgate"
[[ -x $JWTGATE ]] || die "$JWTGATE not found"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly no --logfile "$WORK/redis/redis.log" &
PIDS+=("$!")
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

log "writing $ENTRIES entries to Redis"
python3 - "$ENTRIES" <<'PY' | redis-cli -p "$REDIS_PORT" --pipe >"$WORK/pipe.log"
import sys, time
n_all, until = int(sys.argv[1]), int(time.time()) + 86400
out = sys.stdout.buffer
def cmd(*args):
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    out.write(b"".join(parts))
key = "jwtgate:denylist:entries"
for start in range(0, n_all, 1000):
    args = ["ZADD", key]
    for n in range(start, min(start + 1000, n_all)):
        kind = "sub" if n % 20 == 0 else "sid" if n % 20 == 1 else "jti"
        before = f',"before":{until - 7200}' if kind == "sub" else ""
        args += [str(until), f'{{"issuer":"corp","{kind}":"{n:036d}"{before},"until":{until}}}']
    cmd(*args)
PY
log "$(redis-cli -p "$REDIS_PORT" zcard jwtgate:denylist:entries) entries in Redis"

openssl_free_key() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
openssl_free_key >"$WORK/hs256.secret"
write_config() { # write_config FILE PORT ADMIN REDIS_LINE
    cat >"$1" <<TOML
[listen]
addr = "127.0.0.1:$2"

[admin]
addr = "127.0.0.1:$3"
$4

[[issuer]]
name = "corp"
issuer = "https://issuer.bench/"
audiences = ["bench"]
algorithms = ["HS256"]
hmac_secret_file = "hs256.secret"

[[route]]
name = "api"
path_prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "required"
TOML
}

# start_until_ready CONFIG ADMIN_PORT -> "seconds rss_kib", then stops the gateway.
start_until_ready() {
    local t0 t1 pid rss
    t0=$(date +%s.%N)
    "$JWTGATE" run --config "$1" >/dev/null 2>>"$WORK/jwtgate.log" &
    pid=$!
    PIDS+=("$pid")
    until curl -sf -o /dev/null "http://127.0.0.1:$2/readyz"; do
        kill -0 "$pid" 2>/dev/null || die "jwtgate exited; see $WORK/jwtgate.log"
        sleep 0.01
    done
    t1=$(date +%s.%N)
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk -v a="$t0" -v b="$t1" -v r="$rss" 'BEGIN { printf "%.3f %d\n", b - a, r }'
}

report() { # report NAME LINES...
    local name="$1"
    shift
    printf '%s\n' "$@" | awk -v name="$name" '
        { t[NR] = $1; r[NR] = $2 }
        END { printf "  %-28s ready in %s / %s / %s s, RSS %.1f MiB\n", name, t[1], t[2], t[3], r[NR] / 1024 }'
}

P1=$(free_port) A1=$(free_port)
write_config "$WORK/plain.toml" "$P1" "$A1" ""
write_config "$WORK/redis.toml" "$P1" "$A1" "
[redis]
url = \"redis://127.0.0.1:$REDIS_PORT/0\""
log "starting jwtgate three times each, without and with [redis] ($ENTRIES entries)"
plain=() with=()
for _ in 1 2 3; do plain+=("$(start_until_ready "$WORK/plain.toml" "$A1")"); done
for _ in 1 2 3; do with+=("$(start_until_ready "$WORK/redis.toml" "$A1")"); done
echo "start to /readyz (3 runs), resident memory once ready:"
report "no denylist (baseline)" "${plain[@]}"
report "$ENTRIES entries in Redis" "${with[@]}"
awk -v p="${plain[2]}" -v w="${with[2]}" -v n="$ENTRIES" 'BEGIN {
    split(p, a, " "); split(w, b, " ");
    printf "  memory added per entry: %.0f bytes (key text: 36 bytes)\n", (b[2] - a[2]) * 1024 / n }'

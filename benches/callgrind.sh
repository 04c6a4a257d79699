#!/usr/bin/env bash
# benches/callgrind.sh: jwtgate's user-space instructions per request, counted by
# valgrind --tool=callgrind. Wall-clock figures on a shared 2-core machine move by 10% from
# run to run; instruction counts repeat to a fraction of a percent, so this is the tool for
# deciding whether a change to the request path helps, and for finding where the time goes.
#
#   benches/callgrind.sh [--requests N] [--path /open/x] [--token-alg RS256] [--no-access-log]
#                        [--binary PATH] [--dpop]
#
# It builds jwtgate with line tables (cargo, target/callgrind), starts an nginx backend (the
# one benches/load.sh uses) and jwtgate under callgrind on 127.0.0.1, sends 200 warm-up
# requests and then N (default 3,000) on one keep-alive connection, and prints the
# instructions per request with the 25 most costly functions (inclusive). With --token-alg,
# the requests carry one token of that algorithm on a `required` route (served from the
# verified-token cache after the first). The profile of the measured requests stays in
# target/callgrind/profile for callgrind_annotate or kcachegrind. --binary PATH measures that
# jwtgate build instead (say, an earlier commit's release binary, to compare; the counts are
# the same without line tables, only the function names lose their lines). Everything it starts is stopped on exit, by PID.
# Needs valgrind, nginx, python3, curl, openssl (apt-get installs valgrind and nginx).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK="$ROOT/target/callgrind"
BASE="${BENCH_PORT_BASE:-18100}"
REQUESTS=3000
REQ_PATH=/open/x
ALG=""
LOG="info"
BINARY=""
DPOP=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --requests) REQUESTS="$2"; shift ;;
        --path) REQ_PATH="$2"; shift ;;
        --token-alg) ALG="$2"; REQ_PATH=/api/x; shift ;;
        --no-access-log) LOG="info,access=off" ;;
        --binary) BINARY="$2"; shift ;;
        # A DPoP-bound ES256 token (a cache hit after the first) with a fresh proof per request,
        # minted by the release bench binary (cargo build --release --bench gateway).
        --dpop) DPOP=1; ALG=ES256; REQ_PATH=/api/x ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "callgrind.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

install_missing valgrind nginx
require_tools cargo valgrind callgrind_annotate nginx python3 curl openssl

trap stop_started EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/nginx-tmp"
if [[ -n $BINARY ]]; then
    JWTGATE="$BINARY"
    [[ -x $JWTGATE ]] || die "--binary $BINARY is not an executable"
else
    log "building jwtgate with line tables (target/callgrind)"
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --bin jwtgate \
        --target-dir "$WORK/target" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; die "build failed"; }
    JWTGATE="$WORK/target/release/jwtgate"
fi

P_BACKEND=$BASE P_GW=$((BASE + 1)) P_ADMIN=$((BASE + 2))
# The backend config is load.sh's; it wants a certificate for its TLS port.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1
sed -e "s|@WORK@|$WORK|g" -e "s|@BACKEND@|$P_BACKEND|g" -e "s|@BACKEND_TLS@|$((BASE + 3))|g" \
    -e "s|@NOFILE@|1024|g" -e "s|@WORKER_CONNS@|512|g" \
    "$ROOT/benches/load/nginx-backend.conf.tmpl" >"$WORK/nginx-backend.conf"
printf "%s" "$(openssl rand -hex 24)" >"$WORK/hs256.secret"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rs256.key" 2>/dev/null
openssl pkey -in "$WORK/rs256.key" -pubout -out "$WORK/rs256.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/es256.key" 2>/dev/null
openssl pkey -in "$WORK/es256.key" -pubout -out "$WORK/es256.pem"
sed -e "s|@PORT@|$P_GW|" -e "s|@ADMIN@|$P_ADMIN|" -e "s|@TLS@||" -e "s|@LIMITS@||" \
    -e "s|@ISS@|https://issuer.example/|" -e "s|@AUD@|bench|" -e "s|@BACKEND@|$P_BACKEND|g" \
    "$ROOT/benches/load/jwtgate.toml.tmpl" >"$WORK/jwtgate.toml"

TOKEN=""
if [[ -n "$ALG" ]]; then
    lower=$(tr '[:upper:]' '[:lower:]' <<<"$ALG")
    case "$ALG" in HS256) key="$WORK/hs256.secret" ;; *) key="$WORK/$lower.key" ;; esac
    TOKEN=$("$JWTGATE" dev-token --alg "$ALG" --key "$key" \
        --claims "{\"iss\":\"https://issuer.example/$lower\",\"aud\":\"bench\",\"sub\":\"bench-user\"}" \
        --ttl 1h) || die "dev-token failed"
fi

SCHEME=Bearer
PROOFS=""
if [[ $DPOP == 1 ]]; then
    MINT=$(ls -t "$ROOT"/target/release/deps/gateway-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
    [[ -x $MINT ]] || die "--dpop needs the release bench binary: cargo build --release --bench gateway"
    PROOFS="$WORK/dpop-proofs.txt"
    # The client sends `Host: 127.0.0.1`, so that is the proofs' htu.
    JWTGATE_BENCH_MINT_DPOP=1 "$MINT" "$WORK/es256.key" $((REQUESTS + 200)) "$WORK/dpop-token.txt" \
        "$PROOFS" "https://issuer.example/es256" bench es256 "http://127.0.0.1$REQ_PATH" || die "minting DPoP proofs failed"
    TOKEN=$(cat "$WORK/dpop-token.txt")
    SCHEME=DPoP
fi

nginx -p "$WORK" -c "$WORK/nginx-backend.conf" -e "$WORK/nginx-backend.error.log" &
PIDS+=($!)
env JWTGATE_LOG="$LOG" TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/exit-dump" "$JWTGATE" run --config "$WORK/jwtgate.toml" \
    >/dev/null 2>"$WORK/jwtgate.log" &
GW=$!
PIDS+=("$GW")
for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:$P_ADMIN/readyz" && break
    sleep 0.2
done
curl -s -o /dev/null "http://127.0.0.1:$P_ADMIN/readyz" || die "jwtgate did not start (see $WORK/jwtgate.log)"

client() { # client N SKIP: N sequential requests (DPoP: proofs from SKIP on) on one keep-alive connection; every one must be 200
    python3 - "$P_GW" "$1" "$REQ_PATH" "$TOKEN" "$SCHEME" "$PROOFS" "$2" <<'EOF'
import socket, sys
port, n, path, token, scheme, proofs, skip = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                               sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7]))
auth = f"Authorization: {scheme} {token}\r\n" if token else ""
proof = open(proofs).read().split() if proofs else []
prefix = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: callgrind\r\nAccept: */*\r\n{auth}"
s = socket.create_connection(("127.0.0.1", port))
for i in range(n):
    dpop = f"DPoP: {proof[skip + i]}\r\n" if proof else ""
    s.sendall((prefix + dpop + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit("not 200: " + head.split(b"\r\n")[0].decode())
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        body += s.recv(65536)
EOF
}
client 200 0
callgrind_control -z "$GW" >/dev/null
client "$REQUESTS" 200
callgrind_control -d "$GW" >/dev/null
sleep 1
PROFILE=$(ls -t "$WORK"/exit-dump.* 2>/dev/null | head -1)
[[ -n "$PROFILE" ]] || die "no callgrind dump"
mv "$PROFILE" "$WORK/profile"
callgrind_annotate --inclusive=yes "$WORK/profile" >"$WORK/annotate.txt" 2>/dev/null
total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$WORK/annotate.txt")
echo "path $REQ_PATH${ALG:+ with one $ALG token}$([[ $DPOP == 1 ]] && echo " (DPoP-bound, a fresh proof each)"), access log ${LOG#info}${LOG#info,access=off}"
python3 -c "print(f'{$total / $REQUESTS:,.0f} instructions per request ({$total:,} for $REQUESTS)')"
echo "most costly functions, inclusive (full list: $WORK/annotate.txt):"
grep -E '^ *[0-9,]+ \( *[0-9.]+%\)  ' "$WORK/annotate.txt" | grep -v "PROGRAM TOTALS" \
    | grep -E 'jwtgate::|hyper|tracing|aws_lc|tokio::net|memcpy|malloc' | head -25 | cut -c1-160

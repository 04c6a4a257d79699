#!/usr/bin/env bash
# Load benchmark of issue 6: jwtgate against HAProxy's jwt_verify and a plain nginx proxy.
#
#   benches/load.sh [--quick] [--duration S] [--tokens N] [--no-access-log] [--keep] [--no-build]
#                   [--alt-binary PATH]
#
# On 127.0.0.1 it starts an nginx backend (answers 200 "ok"), nginx as a plain proxy,
# HAProxy (a no-auth frontend and one jwt_verify frontend per algorithm) and jwtgate
# (release build; plain and TLS), all forwarding to that backend. wrk then drives each, back
# to back, for HS256 / RS256 / ES256, over plain HTTP and TLS, with one repeated token and
# with a list of distinct tokens, and once more with one connection for latency. It prints
# rps, p50/p99 latency and the proxy's CPU time per request (/proc/PID/stat utime+stime before
# and after each run), the jwtgate/peer ratios, and checks the targets of issue 6, including
# jwtgate's RSS with 10,000 idle keep-alive connections.
#
# Needs: cargo, openssl, python3, curl, taskset (optional), and wrk, haproxy (>= 2.5 for
# jwt_verify), nginx: installed with apt-get when missing (root). Time, after the release
# build: about 9 minutes with 10 s runs, about 4 with --quick (3 s runs). Everything it starts
# is stopped on exit, by PID. Configs, logs, results.tsv and report.txt go to target/load-bench
# (the token lists too with --keep). --no-build uses the binaries already in target/release.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/benches/load"
WORK="${BENCH_WORK:-$ROOT/target/load-bench}"
BASE="${BENCH_PORT_BASE:-18000}"
DUR=10
LAT_DUR=5
TOKENS=20000
THREADS=2
CONNS=64
IDLE_CONNS=10000
ACCESS_LOG=1
KEEP=0
BUILD=1
ALT_BINARY=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) DUR=3; LAT_DUR=2 ;;
        --duration) DUR="$2"; LAT_DUR="$2"; shift ;;
        --tokens) TOKENS="$2"; shift ;;
        --no-access-log) ACCESS_LOG=0 ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        --alt-binary) ALT_BINARY="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "load.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

# --- tools ---------------------------------------------------------------------------------
install_missing wrk haproxy nginx
require_tools cargo openssl python3 curl wrk haproxy nginx
HAPROXY_VERSION=$(haproxy -v | sed -n 's/^HA-\{0,1\}Proxy version \([0-9][0-9.]*\).*/\1/p' | head -1)
IFS=. read -r hmaj hmin _ <<<"$HAPROXY_VERSION"
if (( hmaj < 2 || (hmaj == 2 && hmin < 5) )); then
    die "haproxy $HAPROXY_VERSION has no jwt_verify (needs 2.5 or later)"
fi
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///')

# The proxy under test gets one CPU to itself (the second one this script may use); wrk and
# the backend share the others (on a 2-CPU machine: proxy on CPU 1, wrk and backend on CPU 0).
read -ra ALLOWED <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
CPUS=${#ALLOWED[@]}
if command -v taskset >/dev/null 2>&1 && (( CPUS >= 2 )); then
    SERVER_CPU=${ALLOWED[1]}
    CLIENT_CPUS=$(printf '%s\n' "${ALLOWED[@]}" | grep -vx "$SERVER_CPU" | paste -sd,)
    PIN_SERVER=(taskset -c "$SERVER_CPU")
    PIN_CLIENT=(taskset -c "$CLIENT_CPUS")
    PINNING="proxy under test pinned to CPU $SERVER_CPU; wrk and the nginx backend on CPU $CLIENT_CPUS"
    if (( CPUS > 3 )); then THREADS=$(( CPUS - 2 < 8 ? CPUS - 2 : 8 )); fi
else
    PIN_SERVER=()
    PIN_CLIENT=()
    PINNING="no pinning (taskset missing or a single CPU): figures are noisier"
fi
CLK_TCK=$(getconf CLK_TCK)

# jwtgate, HAProxy and nginx each need a descriptor per connection (10,000 in the idle test).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < IDLE_CONNS + 1000 )); then
    IDLE_CONNS=$(( $(ulimit -n) - 1000 ))
    log "ulimit -n is $(ulimit -n): the idle-connection test opens $IDLE_CONNS connections"
fi

# --- processes: every one we start is recorded and stopped on exit --------------------------
cleanup() {
    stop_started
    if [[ $KEEP -eq 0 && -d "$WORK" ]]; then
        rm -rf "$WORK/tokens-"*.txt
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in the background with its output in $WORK/NAME.log; sets LAST_PID.
start() {
    local name="$1"
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_http URL: until it answers (any status), for at most 15 s.
wait_http() {
    local i
    for i in $(seq 150); do
        if curl -sk -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.1
    done
    die "$1 did not answer within 15 s"
}

# ticks PID: utime+stime of PID and its children (nginx workers), in clock ticks.
ticks() {
    local total=0 p line f
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        [[ -r /proc/$p/stat ]] || continue
        read -r line <"/proc/$p/stat" || continue
        # Fields after "comm)": state is field 3, utime 14, stime 15.
        read -ra f <<<"${line##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# --- build, keys, tokens -------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK/nginx-tmp"
cd "$ROOT"
JWTGATE="$ROOT/target/release/jwtgate"
if [[ $BUILD -eq 1 ]]; then
    log "building jwtgate and the bench helper (cargo build --release)"
    cargo build --release --bin jwtgate --bench gateway --message-format=json-render-diagnostics \
        >"$WORK/build.json" 2>"$WORK/build.log" || { tail -30 "$WORK/build.log"; die "build failed"; }
    MINT=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gateway" and m.get("executable"):
        print(m["executable"])
' "$WORK/build.json" | tail -1)
else
    # --no-build: the binaries of the last `cargo build --release --bin jwtgate --bench gateway`.
    MINT=$(ls -t "$ROOT"/target/release/deps/gateway-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
fi
[[ -x "$JWTGATE" && -x "$MINT" ]] || die "build artefacts not found"

ISS="https://issuer.load.bench/"
AUD="load-bench"
log "generating keys and a self-signed certificate (openssl)"
(
    cd "$WORK"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rs256.key 2>/dev/null
    openssl pkey -in rs256.key -pubout -out rs256.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out es256.key 2>/dev/null
    openssl pkey -in es256.key -pubout -out es256.pem
    printf '%s' "$(openssl rand -hex 24)" >hs256.secret
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout tls.key -out tls.crt -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
    cat tls.crt tls.key >tls.pem
)
HS256_SECRET=$(cat "$WORK/hs256.secret")

for alg in HS256 RS256 ES256; do
    lower=$(tr 'A-Z' 'a-z' <<<"$alg")
    key="$WORK/$lower.key"
    [[ $alg == HS256 ]] && key="$WORK/hs256.secret"
    log "minting $TOKENS $alg tokens"
    JWTGATE_BENCH_MINT=1 "$MINT" "$alg" "$key" "$TOKENS" "$WORK/tokens-$alg.txt" "$ISS$lower" "$AUD" "$lower"
    # One token, the same for every request, for the "repeated" rows.
    head -1 "$WORK/tokens-$alg.txt" >"$WORK/token-$alg.txt"
done

# --- configs and servers -------------------------------------------------------------------
P_BACKEND=$BASE P_BACKEND_TLS=$((BASE + 1))
P_NGINX=$((BASE + 10)) P_NGINX_TLS=$((BASE + 11))
P_NOAUTH=$((BASE + 20)) P_NOAUTH_TLS=$((BASE + 21))
P_HS256=$((BASE + 22)) P_HS256_TLS=$((BASE + 23))
P_RS256=$((BASE + 24)) P_RS256_TLS=$((BASE + 25))
P_ES256=$((BASE + 26)) P_ES256_TLS=$((BASE + 27))
P_GW=$((BASE + 30)) P_GW_ADMIN=$((BASE + 31))
P_GW_TLS=$((BASE + 32)) P_GW_TLS_ADMIN=$((BASE + 33))
P_GWU=$((BASE + 34)) P_GWU_ADMIN=$((BASE + 35))
P_GWU_TLS=$((BASE + 36)) P_GWU_TLS_ADMIN=$((BASE + 37))
P_GW_IDLE=$((BASE + 40)) P_GW_IDLE_ADMIN=$((BASE + 41))
for p in $(seq "$BASE" $((BASE + 41))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p is in use; set BENCH_PORT_BASE"
    fi
done

render() { # render TEMPLATE OUT [NAME VALUE]...
    local tmpl="$1" out="$2" text
    shift 2
    text=$(<"$tmpl")
    while [[ $# -gt 0 ]]; do
        text=${text//@$1@/$2}
        shift 2
    done
    printf '%s\n' "$text" >"$out"
}
NOFILE=$(ulimit -n)
# HAProxy reserves two descriptors per connection and refuses to start if maxconn needs more.
HAPROXY_MAXCONN=$(( (NOFILE - 200) / 2 < 40000 ? (NOFILE - 200) / 2 : 40000 ))
COMMON=(WORK "$WORK" BACKEND "$P_BACKEND" BACKEND_TLS "$P_BACKEND_TLS" ISS "$ISS" AUD "$AUD"
    NOFILE "$NOFILE" WORKER_CONNS "$((NOFILE - 100))" MAXCONN "$HAPROXY_MAXCONN")
render "$HERE/nginx-backend.conf.tmpl" "$WORK/nginx-backend.conf" "${COMMON[@]}"
render "$HERE/nginx-proxy.conf.tmpl" "$WORK/nginx-proxy.conf" "${COMMON[@]}" \
    P_NGINX "$P_NGINX" P_NGINX_TLS "$P_NGINX_TLS"
render "$HERE/haproxy.cfg.tmpl" "$WORK/haproxy.cfg" "${COMMON[@]}" \
    P_NOAUTH "$P_NOAUTH" P_NOAUTH_TLS "$P_NOAUTH_TLS" P_HS256 "$P_HS256" P_HS256_TLS "$P_HS256_TLS" \
    P_RS256 "$P_RS256" P_RS256_TLS "$P_RS256_TLS" P_ES256 "$P_ES256" P_ES256_TLS "$P_ES256_TLS" \
    HS256_SECRET "$HS256_SECRET"
TLS_LINE='tls = { cert = "tls.crt", key = "tls.key" }'
# The unique-token rows must measure tokens jwtgate has not verified before. A list long
# enough for every request of a run is too slow to mint for RS256, so the lists are walked
# more than once; those instances get a verified-token cache of 1,000 entries, far below the
# list length, so a token is long evicted when it comes round again (the hit% column shows
# it): every request pays the full miss path, cache lookup and insert included.
SMALL_CACHE=$'[limits]\ntoken_cache_entries = 1000'
render "$HERE/jwtgate.toml.tmpl" "$WORK/jwtgate-plain.toml" "${COMMON[@]}" PORT "$P_GW" ADMIN "$P_GW_ADMIN" TLS "" LIMITS ""
render "$HERE/jwtgate.toml.tmpl" "$WORK/jwtgate-tls.toml" "${COMMON[@]}" PORT "$P_GW_TLS" ADMIN "$P_GW_TLS_ADMIN" TLS "$TLS_LINE" LIMITS ""
render "$HERE/jwtgate.toml.tmpl" "$WORK/jwtgate-unique-plain.toml" "${COMMON[@]}" PORT "$P_GWU" ADMIN "$P_GWU_ADMIN" TLS "" LIMITS "$SMALL_CACHE"
render "$HERE/jwtgate.toml.tmpl" "$WORK/jwtgate-unique-tls.toml" "${COMMON[@]}" PORT "$P_GWU_TLS" ADMIN "$P_GWU_TLS_ADMIN" TLS "$TLS_LINE" LIMITS "$SMALL_CACHE"
render "$HERE/jwtgate.toml.tmpl" "$WORK/jwtgate-idle.toml" "${COMMON[@]}" PORT "$P_GW_IDLE" ADMIN "$P_GW_IDLE_ADMIN" TLS "" LIMITS ""

haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected $WORK/haproxy.cfg"
for f in jwtgate-tls jwtgate-unique-tls; do
    "$JWTGATE" check --config "$WORK/$f.toml" >"$WORK/$f-check.log" 2>&1 \
        || { cat "$WORK/$f-check.log"; die "jwtgate check failed on $WORK/$f.toml"; }
done

if [[ $ACCESS_LOG -eq 1 ]]; then
    JWTGATE_LOG_SETTING="info"
    ACCESS_LOG_NOTE="on (JSON lines to /dev/null)"
else
    JWTGATE_LOG_SETTING="info,access=off"
    ACCESS_LOG_NOTE="off (--no-access-log)"
fi
start_jwtgate() { # start_jwtgate NAME CONFIG ADMIN_PORT; sets LAST_PID
    # One worker thread, like HAProxy's nbthread 1 and nginx's one worker process.
    "${PIN_SERVER[@]}" env JWTGATE_LOG="$JWTGATE_LOG_SETTING" TOKIO_WORKER_THREADS=1 "$JWTGATE" run --config "$2" >/dev/null 2>"$WORK/$1.log" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$3/readyz"
}

log "starting the backend, nginx, HAProxy $HAPROXY_VERSION and jwtgate"
start nginx-backend "${PIN_CLIENT[@]}" nginx -p "$WORK" -c "$WORK/nginx-backend.conf" -e "$WORK/nginx-backend.error.log"
PID_BACKEND=$LAST_PID
start nginx-proxy "${PIN_SERVER[@]}" nginx -p "$WORK" -c "$WORK/nginx-proxy.conf" -e "$WORK/nginx-proxy.error.log"
PID_NGINX=$LAST_PID
start haproxy "${PIN_SERVER[@]}" haproxy -db -f "$WORK/haproxy.cfg"
PID_HAPROXY=$LAST_PID
start_jwtgate jwtgate-plain "$WORK/jwtgate-plain.toml" "$P_GW_ADMIN"
PID_GW=$LAST_PID
start_jwtgate jwtgate-tls "$WORK/jwtgate-tls.toml" "$P_GW_TLS_ADMIN"
PID_GW_TLS=$LAST_PID
start_jwtgate jwtgate-unique-plain "$WORK/jwtgate-unique-plain.toml" "$P_GWU_ADMIN"
PID_GWU=$LAST_PID
start_jwtgate jwtgate-unique-tls "$WORK/jwtgate-unique-tls.toml" "$P_GWU_TLS_ADMIN"
PID_GWU_TLS=$LAST_PID
for p in "$P_BACKEND" "$P_NGINX" "$P_NOAUTH" "$P_HS256"; do
    wait_http "http://127.0.0.1:$p/"
done

# Every proxy must accept the benchmark's tokens and refuse a forged one before anything is
# measured: a benchmark of 401s would measure nothing.
check_status() { # check_status WANT URL [TOKEN_FILE]
    local auth=() got
    [[ -n "${3:-}" ]] && auth=(-H "Authorization: Bearer $(cat "$3")")
    got=$(curl -sk -o /dev/null -w '%{http_code}' "${auth[@]}" "$2")
    [[ "$got" == "$1" ]] || die "$2 answered $got, expected $1"
}
printf 'x' >"$WORK/forged.txt"
for alg in HS256 RS256 ES256; do
    port_var="P_$alg"
    port_tls_var="P_${alg}_TLS"
    for url in "http://127.0.0.1:${!port_var}/api/bench" "https://127.0.0.1:${!port_tls_var}/api/bench" \
               "http://127.0.0.1:$P_GW/api/bench" "https://127.0.0.1:$P_GW_TLS/api/bench" \
               "http://127.0.0.1:$P_GWU/api/bench" "https://127.0.0.1:$P_GWU_TLS/api/bench"; do
        check_status 200 "$url" "$WORK/token-$alg.txt"
        check_status 401 "$url"
        # The same token with its last signature character changed.
        tok=$(cat "$WORK/token-$alg.txt")
        last=${tok: -1}
        [[ $last == A ]] && repl=Q || repl=A
        printf '%s' "${tok%?}$repl" >"$WORK/forged.txt"
        check_status 401 "$url" "$WORK/forged.txt"
    done
done
check_status 200 "http://127.0.0.1:$P_GW/open/bench"
check_status 200 "https://127.0.0.1:$P_NGINX_TLS/open/bench"
check_status 200 "https://127.0.0.1:$P_NOAUTH_TLS/open/bench"
check_status 200 "https://127.0.0.1:$P_BACKEND_TLS/open/bench"

# --- runs ----------------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
printf 'kind\ttls\tserver\tauth\ttokens\trps\tp50_us\tp99_us\tcpu_us\tcpu_pct\trequests\tnon2xx\terrors\tcache_hit\n' >"$RESULTS"

cache_counts() { # cache_counts ADMIN_PORT -> "hits misses" (empty when there is no such metric)
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null | awk '
        /^jwtgate_token_cache_total\{/ {
            if ($0 ~ /result="hit"/) h += $NF; else if ($0 ~ /result="miss"/) m += $NF; seen = 1
        }
        END { if (seen) printf "%d %d\n", h, m }'
}

# run KIND TLS SERVER AUTH TOKENS PORT PATH PID [ADMIN_PORT]
run() {
    local kind="$1" tls="$2" server="$3" auth="$4" tokens="$5" port="$6" path="$7" pid="$8" admin="${9:-}"
    local scheme=http threads=$THREADS conns=$CONNS dur=$DUR
    [[ $tls == tls ]] && scheme=https
    [[ $kind == lat ]] && { threads=1; conns=1; dur=$LAT_DUR; }
    local url="$scheme://127.0.0.1:$port$path"
    local header=() env=(WRK_THREADS="$threads")
    case "$tokens" in
        repeated) header=(-H "Authorization: Bearer $(cat "$WORK/token-$auth.txt")") ;;
        unique) env+=(WRK_TOKENS="$WORK/tokens-$auth.txt") ;;
    esac
    local wrk=("${PIN_CLIENT[@]}" env "${env[@]}" wrk -t"$threads" -c"$conns" --timeout 5s -s "$HERE/wrk.lua" "${header[@]}")
    if [[ $kind == tp ]]; then
        # Warm-up: connections and upstream pools. Unique-token runs warm up with the repeated
        # token, so the measured run starts with tokens the gateway has not seen.
        local warm=("${PIN_CLIENT[@]}" env WRK_THREADS="$threads" wrk -t"$threads" -c"$conns" --timeout 5s -s "$HERE/wrk.lua")
        if [[ $tokens != - ]]; then warm+=(-H "Authorization: Bearer $(cat "$WORK/token-$auth.txt")"); fi
        "${warm[@]}" -d1s "$url" >/dev/null 2>&1 || true
    fi
    local c0="" c1="" t0 t1 s0 s1 out
    [[ -n $admin ]] && c0=$(cache_counts "$admin")
    t0=$(ticks "$pid")
    s0=$(date +%s.%N)
    out=$("${wrk[@]}" -d"${dur}s" "$url" 2>&1) || { echo "$out" >&2; die "wrk failed on $url"; }
    s1=$(date +%s.%N)
    t1=$(ticks "$pid")
    [[ -n $admin ]] && c1=$(cache_counts "$admin")
    local result
    result=$(grep '^RESULT' <<<"$out") || { echo "$out" >&2; die "no result from wrk on $url"; }
    local requests duration p50 p99 non2xx errors
    eval "$(sed 's/^RESULT //; s/duration_us/duration/; s/p50_us/p50/; s/p99_us/p99/' <<<"$result" | tr ' ' '\n' | sed 's/^/local /')"
    local hit="-"
    if [[ -n $c0 && -n $c1 ]]; then
        hit=$(awk -v a="$c0" -v b="$c1" 'BEGIN {
            split(a, x, " "); split(b, y, " "); h = y[1] - x[1]; m = y[2] - x[2];
            if (h + m > 0) printf "%.0f", 100 * h / (h + m); else printf "-" }')
    fi
    awk -v OFS='\t' -v kind="$kind" -v tls="$tls" -v server="$server" -v auth="$auth" -v tokens="$tokens" \
        -v req="$requests" -v dur="$duration" -v p50="$p50" -v p99="$p99" -v dt="$((t1 - t0))" \
        -v tck="$CLK_TCK" -v s0="$s0" -v s1="$s1" -v non2xx="$non2xx" -v errors="$errors" -v hit="$hit" \
        'BEGIN {
            rps = req / (dur / 1e6); cpu = req ? dt / tck * 1e6 / req : 0; pct = 100 * dt / tck / (s1 - s0)
            printf "%s\t%s\t%s\t%s\t%s\t%.1f\t%d\t%d\t%.2f\t%.1f\t%d\t%d\t%d\t%s\n",
                kind, tls, server, auth, tokens, rps, p50, p99, cpu, pct, req, non2xx, errors, hit
        }' >>"$RESULTS"
    tail -1 "$RESULTS" | awk -F'\t' '{ printf "  %-3s %-5s %-8s %-5s %-8s %8.0f rps  p50 %6d us  p99 %6d us  %6.1f us/req  cpu %3.0f%%  hit %s%s\n",
        $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $14, ($12 + $13 > 0 ? "  !! non-2xx/errors: " $12 "/" $13 : "") }' >&2
}

# Where a case runs: port, PID whose CPU is counted, and admin port (jwtgate's metrics).
# jwtgate's unique-token cases run on the small-cache instances.
case_run() { # case_run KIND TLS SERVER AUTH TOKENS
    local kind="$1" tls="$2" server="$3" auth="$4" tokens="$5" path=/api/bench v pid admin=""
    [[ $auth == none ]] && path=/open/bench
    case "$server" in
        direct) v=P_BACKEND; pid=$PID_BACKEND ;;
        nginx) v=P_NGINX; pid=$PID_NGINX ;;
        haproxy) pid=$PID_HAPROXY; v=P_NOAUTH; [[ $auth != none ]] && v="P_$auth" ;;
        jwtgate)
            if [[ $tokens == unique ]]; then v=P_GWU; else v=P_GW; fi
            pid_var="PID_${v#P_}"
            admin_var="${v}_ADMIN"
            [[ $tls == tls ]] && { pid_var="${pid_var}_TLS"; admin_var="${v}_TLS_ADMIN"; }
            pid=${!pid_var}
            admin=${!admin_var}
            ;;
    esac
    [[ $tls == tls ]] && v="${v}_TLS"
    run "$kind" "$tls" "$server" "$auth" "$tokens" "${!v}" "$path" "$pid" "$admin"
}

log "throughput runs ($DUR s each, $CONNS connections)"
for tls in plain tls; do
    for s in direct nginx haproxy jwtgate; do
        case_run tp "$tls" "$s" none -
    done
    for tokens in repeated unique; do
        for alg in HS256 RS256 ES256; do
            case_run tp "$tls" haproxy "$alg" "$tokens"
            case_run tp "$tls" jwtgate "$alg" "$tokens"
        done
    done
done

log "latency runs ($LAT_DUR s each, one connection)"
for tls in plain tls; do
    for s in direct nginx haproxy jwtgate; do
        case_run lat "$tls" "$s" none -
    done
    for alg in HS256 RS256 ES256; do
        case_run lat "$tls" haproxy "$alg" unique
        case_run lat "$tls" jwtgate "$alg" unique
    done
done

log "idle keep-alive connections ($IDLE_CONNS)"
start_jwtgate jwtgate-idle "$WORK/jwtgate-idle.toml" "$P_GW_IDLE_ADMIN"
PID_GW_IDLE=$LAST_PID
: >"$WORK/idle.json"
idle() { # idle NAME PORT PIDS COUNT
    local out
    out=$("${PIN_CLIENT[@]}" python3 "$HERE/idle_conns.py" --port "$2" --count "$4" --pids "$3") \
        || die "idle-connection test against $1 failed"
    echo "$1 $out" >>"$WORK/idle.json"
}
idle jwtgate "$P_GW_IDLE" "$PID_GW_IDLE" "$IDLE_CONNS"
# For comparison only; HAProxy's count is capped by its maxconn.
idle nginx "$P_NGINX" "$PID_NGINX,$(pgrep -P "$PID_NGINX" | paste -sd,)" "$IDLE_CONNS"
idle haproxy "$P_NOAUTH" "$PID_HAPROXY" \
    "$(( IDLE_CONNS < HAPROXY_MAXCONN - 100 ? IDLE_CONNS : HAPROXY_MAXCONN - 100 ))"

cat >"$WORK/meta.txt" <<EOF
cpus=$CPUS
pinning=$PINNING
versions=jwtgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (release), HAProxy $HAPROXY_VERSION, nginx $NGINX_VERSION, $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)
threads=$THREADS
conns=$CONNS
duration=$DUR
lat_duration=$LAT_DUR
tokens=$TOKENS
access_log=$ACCESS_LOG_NOTE
EOF
python3 "$HERE/report.py" "$WORK" | tee "$WORK/report.txt"

# --- issue 17: identity assertions and rate limits, on vs off ----------------------------------
# One more jwtgate, three `required` routes that differ only in what issue 17 adds, driven with
# the same repeated ES256 token (a verified-token cache hit on each): /base (claim headers
# only), /assert (`assertion = true`, an ES256 key from openssl; the assertion is reused per
# token) and /limited (`[route.rate_limit]` by sub, a rate wrk never reaches). Targets: CPU
# per request within 10% (assertion) and 5% (rate limit) of /base. Rows go to results.tsv
# (server edge-off, edge-assertion, edge-ratelimit) and edge.txt.
P_EDGE=$((BASE + 50)) P_EDGE_ADMIN=$((BASE + 51))
for p in "$P_EDGE" "$P_EDGE_ADMIN"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use; set BENCH_PORT_BASE"; fi
done
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/assertion.key" 2>/dev/null
edge_route() { # edge_route NAME EXTRA
    printf '\n[[route]]\nname = "%s"\npath_prefix = "/%s"\nupstream = "http://127.0.0.1:%s"\nauth = "required"\n%s[route.claim_headers]\n"X-Auth-Sub" = "sub"\n' \
        "$1" "$1" "$P_BACKEND" "$2"
}
{
    printf '[listen]\naddr = "127.0.0.1:%s"\n[admin]\naddr = "127.0.0.1:%s"\n' "$P_EDGE" "$P_EDGE_ADMIN"
    printf '[assertion]\nkeys = ["assertion.key"]\nissuer = "https://jwtgate.load.bench"\n'
    printf '[[issuer]]\nname = "es256"\nissuer = "%ses256"\naudiences = ["%s"]\nalgorithms = ["ES256"]\nkeys = ["es256.pem"]\n' "$ISS" "$AUD"
    edge_route base ""
    edge_route assert $'assertion = true\n'
    edge_route limited ""
    printf '[route.rate_limit]\nkey = "sub"\nrate = "1000000/s"\nburst = 1000000\n'
} >"$WORK/jwtgate-edge.toml"
"$JWTGATE" check --config "$WORK/jwtgate-edge.toml" >"$WORK/jwtgate-edge-check.log" 2>&1 \
    || { cat "$WORK/jwtgate-edge-check.log"; die "jwtgate check failed on $WORK/jwtgate-edge.toml"; }
start_jwtgate jwtgate-edge "$WORK/jwtgate-edge.toml" "$P_EDGE_ADMIN"
PID_EDGE=$LAST_PID
for path in base assert limited; do
    check_status 200 "http://127.0.0.1:$P_EDGE/$path/bench" "$WORK/token-ES256.txt"
done
log "issue 17 rows ($DUR s each, $CONNS connections, repeated ES256 token), twice in alternation"
for round in 1 2; do
    run tp plain edge-off ES256 repeated "$P_EDGE" /base/bench "$PID_EDGE" "$P_EDGE_ADMIN"
    run tp plain edge-assertion ES256 repeated "$P_EDGE" /assert/bench "$PID_EDGE" "$P_EDGE_ADMIN"
    run tp plain edge-ratelimit ES256 repeated "$P_EDGE" /limited/bench "$PID_EDGE" "$P_EDGE_ADMIN"
done
awk -F'\t' '
    $3 ~ /^edge-/ { cpu[$3] += $9; rps[$3] += $6; n[$3]++ }
    END {
        base = cpu["edge-off"] / n["edge-off"]
        printf "issue 17 rows (mean of %d runs each; CPU per request of the pinned jwtgate)\n", n["edge-off"]
        printf "%-16s %10s %12s %8s %8s\n", "case", "rps", "cpu us/req", "ratio", "target"
        split("edge-off edge-assertion edge-ratelimit", order, " ")
        split("- 1.10 1.05", target, " ")
        for (i = 1; i <= 3; i++) {
            s = order[i]; c = cpu[s] / n[s]; r = c / base
            verdict = (target[i] == "-") ? "" : (r <= target[i] ? "  met" : "  NOT met")
            printf "%-16s %10.0f %12.2f %7.3fx %8s%s\n", s, rps[s] / n[s], c, r, target[i], verdict
        }
    }' "$RESULTS" | tee "$WORK/edge.txt"
# --- issue 14: a 1,000,000-entry denylist on the hot path ------------------------------------
# The repeated-token rows once more, back to back in this run: the plain jwtgate, then one
# whose [denylist] file holds 1,000,000 entries (900,000 jti, 50,000 sub, 50,000 sid; none
# matches the benchmark's tokens, so every request is looked up and passes). Prints CPU per
# request of both and the ratio, the time to /readyz with the file (its load gates
# readiness), and the resident memory the entries add.
P_GW_DENY=$((BASE + 42)) P_GW_DENY_ADMIN=$((BASE + 43))
for p in "$P_GW_DENY" "$P_GW_DENY_ADMIN"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use; set BENCH_PORT_BASE"; fi
done
log "denylist: writing 1,000,000 entries"
python3 - "$WORK/deny-1m.jsonl" <<'PY'
import sys, time
until = int(time.time()) + 86400
with open(sys.argv[1], "w") as f:
    for n in range(1_000_000):
        kind = "sub" if n % 20 == 0 else "sid" if n % 20 == 1 else "jti"
        before = f',"before":{until - 7200}' if kind == "sub" else ""
        f.write(f'{{"issuer":"es256","{kind}":"{n:036d}"{before},"until":{until}}}\n')
PY
render "$HERE/jwtgate.toml.tmpl" "$WORK/jwtgate-deny.toml" "${COMMON[@]}" PORT "$P_GW_DENY" ADMIN "$P_GW_DENY_ADMIN" TLS "" \
    LIMITS $'[denylist]\nfile = "deny-1m.jsonl"'
deny_start=$(date +%s.%N)
start_jwtgate jwtgate-deny "$WORK/jwtgate-deny.toml" "$P_GW_DENY_ADMIN"
PID_GW_DENY=$LAST_PID
until curl -sf -o /dev/null "http://127.0.0.1:$P_GW_DENY_ADMIN/readyz"; do sleep 0.05; done
deny_ready=$(awk -v a="$deny_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
check_status 200 "http://127.0.0.1:$P_GW_DENY/api/bench" "$WORK/token-ES256.txt"
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
log "denylist: repeated-token runs, plain jwtgate vs 1,000,000 entries ($DUR s each)"
for alg in HS256 ES256; do
    run tp plain jwtgate "$alg" repeated "$P_GW" /api/bench "$PID_GW" "$P_GW_ADMIN"
    run tp plain jwtgate-deny1m "$alg" repeated "$P_GW_DENY" /api/bench "$PID_GW_DENY" "$P_GW_DENY_ADMIN"
done
python3 - "$RESULTS" "$deny_ready" "$(rss_kib "$PID_GW")" "$(rss_kib "$PID_GW_DENY")" <<'PY' | tee -a "$WORK/report.txt"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("\ndenylist with 1,000,000 entries (issue 14), plain HTTP, repeated token, same run:")
for alg in ("HS256", "ES256"):
    pick = lambda server: [r for r in rows if r["kind"] == "tp" and r["tls"] == "plain"
                           and r["server"] == server and r["auth"] == alg and r["tokens"] == "repeated"][-1]
    base, deny = pick("jwtgate"), pick("jwtgate-deny1m")
    print(f"  {alg}: CPU per request {float(base['cpu_us']):.2f} -> {float(deny['cpu_us']):.2f} us "
          f"(ratio {float(deny['cpu_us']) / float(base['cpu_us']):.3f}), "
          f"rps {float(base['rps']):.0f} -> {float(deny['rps']):.0f}")
ready, rss_plain, rss_deny = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"  start to /readyz with the file: {ready:.2f} s")
print(f"  resident memory: {rss_plain / 1024:.1f} -> {rss_deny / 1024:.1f} MiB "
      f"({(rss_deny - rss_plain) * 1024 / 1e6:.0f} bytes per entry, key text of 36 bytes included)")
PY
# --- DPoP (issue 16) -----------------------------------------------------------------------
# A DPoP request against the same request with a repeated bearer token, back to back on the
# plain jwtgate instance (ES256): one DPoP-bound token (a verified-token cache hit) and a fresh
# proof per request, minted beforehand. Target: the extra CPU per request is at most one
# signature verification, which the unique-token ES256 row above measures (a full verification
# per request). The growth of jwtgate's RSS over the DPoP run, per proof remembered, sizes the
# replay cache (target: one minute at 20,000 requests a second within 64 MiB).
DPOP_DUR=$(( DUR < 5 ? DUR : 5 ))
DPOP_PROOFS=${DPOP_PROOFS:-200000}
DPOP_URL="http://127.0.0.1:$P_GW/api/bench"
log "DPoP: minting one bound ES256 token and $DPOP_PROOFS proofs"
JWTGATE_BENCH_MINT_DPOP=1 "$MINT" "$WORK/es256.key" "$DPOP_PROOFS" "$WORK/dpop-token.txt" \
    "$WORK/dpop-proofs.txt" "${ISS}es256" "$AUD" es256 "$DPOP_URL"
DPOP_TOKEN=$(cat "$WORK/dpop-token.txt")
# The last proof (wrk reaches it last, if at all) must pass once and then be a replay.
last_proof=$(tail -1 "$WORK/dpop-proofs.txt")
for want in 200 401; do
    got=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: DPoP $DPOP_TOKEN" -H "DPoP: $last_proof" "$DPOP_URL")
    [[ $got == "$want" ]] || die "DPoP check: $DPOP_URL answered $got, expected $want"
done
header_run() { # header_run PID URL SECONDS NAME [WRK_ENV...] -> "rps cpu_us requests non2xx"
    # wrk with the headers in RUN_HEADER, CPU of PID per request.
    local pid="$1" url="$2" dur="$3" name="$4" out t0 t1 result
    shift 4
    t0=$(ticks "$pid")
    out=$("${PIN_CLIENT[@]}" env WRK_THREADS="$THREADS" "$@" wrk -t"$THREADS" -c"$CONNS" --timeout 5s \
        -s "$HERE/wrk.lua" "${RUN_HEADER[@]}" -d"${dur}s" "$url" 2>&1) || { echo "$out" >&2; die "wrk failed ($name)"; }
    t1=$(ticks "$pid")
    result=$(grep '^RESULT' <<<"$out") || { echo "$out" >&2; die "no result from wrk ($name)"; }
    sed 's/^RESULT //' <<<"$result" | tr ' ' '\n' | awk -F= -v dt="$((t1 - t0))" -v tck="$CLK_TCK" '
        { v[$1] = $2 }
        END { printf "%.1f %.2f %d %d\n", v["requests"] / (v["duration_us"] / 1e6),
              v["requests"] ? dt / tck * 1e6 / v["requests"] : 0, v["requests"], v["non2xx"] + v["errors"] }'
}
dpop_run() { header_run "$PID_GW" "$DPOP_URL" "$DPOP_DUR" "$@"; }
RUN_HEADER=(-H "Authorization: Bearer $(cat "$WORK/token-ES256.txt")")
read -r b_rps b_cpu _ b_bad <<<"$(dpop_run bearer)"
RUN_HEADER=()
rss0=$(rss_kib "$PID_GW")
read -r d_rps d_cpu d_req d_bad <<<"$(dpop_run dpop WRK_PROOFS="$WORK/dpop-proofs.txt" WRK_AUTH="DPoP $DPOP_TOKEN")"
rss1=$(rss_kib "$PID_GW")
# The latest row of each (the denylist section repeats the repeated-token rows).
u_cpu=$(awk -F'\t' '$1 == "tp" && $2 == "plain" && $3 == "jwtgate" && $4 == "ES256" && $5 == "unique" { v = $9 } END { print v }' "$RESULTS")
r_cpu=$(awk -F'\t' '$1 == "tp" && $2 == "plain" && $3 == "jwtgate" && $4 == "ES256" && $5 == "repeated" { v = $9 } END { print v }' "$RESULTS")
{
    echo
    echo "DPoP (issue 16), plain HTTP, ES256, ${DPOP_DUR} s each, back to back on one jwtgate:"
    printf '  repeated bearer token        %8.0f rps  %6.2f us CPU/request%s\n' "$b_rps" "$b_cpu" "$([[ $b_bad -gt 0 ]] && echo "  !! $b_bad non-2xx/errors")"
    printf '  DPoP, repeated token + proof %8.0f rps  %6.2f us CPU/request%s\n' "$d_rps" "$d_cpu" "$([[ $d_bad -gt 0 ]] && echo "  !! $d_bad non-2xx/errors (raise DPOP_PROOFS)")"
    awk -v b="$b_cpu" -v d="$d_cpu" -v u="$u_cpu" -v r="$r_cpu" 'BEGIN {
        printf "  extra CPU per DPoP request: %.2f us; one signature verification (unique - repeated ES256 rows above): %.2f us; ratio %.2f (target <= 1: at most one extra verification)\n",
            d - b, u - r, (u - r > 0 ? (d - b) / (u - r) : 0) }'
    awk -v a="$rss0" -v z="$rss1" -v n="$d_req" 'BEGIN {
        per = n ? (z - a) * 1024 / n : 0
        printf "  RSS grew %.1f MiB over %d remembered proofs: %.0f bytes each; one minute at 20,000/s: %.0f MiB (target <= 64 MiB)\n",
            (z - a) / 1024, n, per, per * 1200000 / 1048576 }'
} | tee -a "$WORK/report.txt"

# --- browser sessions (issue 15) ---------------------------------------------------------------
# One more jwtgate with [session]: the same ES256 access token as a repeated bearer token on an
# `auth = "required"` route and sealed in a session cookie on an `auth = "session"` route, rows
# alternating twice. The session issuer needs discovery: a python http.server on 127.0.0.1
# serves the discovery document and the JWKS. Target: a cookie request at most 1.3x the
# bearer one's CPU (a cookie scan, one AES-256-GCM open, a small JSON parse).
P_SESS=$((BASE + 52)) P_SESS_ADMIN=$((BASE + 53)) P_DISC=$((BASE + 54))
for p in "$P_SESS" "$P_SESS_ADMIN" "$P_DISC"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use; set BENCH_PORT_BASE"; fi
done
mkdir -p "$WORK/session/.well-known"
SESS_ISS="http://127.0.0.1:$P_DISC"
JWTGATE_BENCH_MINT_SESSION=1 "$MINT" "$WORK/es256.key" "$SESS_ISS" "$AUD" sess "$WORK/session" \
    || die "minting the session cookie failed"
printf '{"issuer":"%s","jwks_uri":"%s/jwks.json","authorization_endpoint":"%s/auth","token_endpoint":"%s/token"}' \
    "$SESS_ISS" "$SESS_ISS" "$SESS_ISS" "$SESS_ISS" >"$WORK/session/.well-known/openid-configuration"
start discovery "${PIN_CLIENT[@]}" python3 -m http.server "$P_DISC" --bind 127.0.0.1 --directory "$WORK/session"
wait_http "$SESS_ISS/jwks.json"
cat >"$WORK/session/gateway.toml" <<EOF
[listen]
addr = "127.0.0.1:$P_SESS"
[admin]
addr = "127.0.0.1:$P_SESS_ADMIN"
[[issuer]]
name = "sess"
issuer = "$SESS_ISS"
audiences = ["$AUD"]
algorithms = ["ES256"]
discovery_url = "$SESS_ISS/.well-known/openid-configuration"
[session]
issuer = "sess"
client_id = "load-bench"
cookie_keys_file = "cookie-keys"
external_url = "http://localhost"
[[route]]
name = "bearer"
path_prefix = "/api"
upstream = "http://127.0.0.1:$P_BACKEND"
auth = "required"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
[[route]]
name = "app"
path_prefix = "/app"
upstream = "http://127.0.0.1:$P_BACKEND"
auth = "session"
[route.claim_headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
EOF
start_jwtgate jwtgate-session "$WORK/session/gateway.toml" "$P_SESS_ADMIN"
PID_SESS=$LAST_PID
SESS_TOKEN=$(cat "$WORK/session/token.txt")
SESS_COOKIE=$(cat "$WORK/session/cookie.txt")
# The remote keys arrive a moment after start: wait for a 200 on both routes.
for _ in $(seq 100); do
    a=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SESS_TOKEN" "http://127.0.0.1:$P_SESS/api/bench")
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $SESS_COOKIE" "http://127.0.0.1:$P_SESS/app/bench")
    [[ $a == 200 && $c == 200 ]] && break
    sleep 0.1
done
[[ $a == 200 && $c == 200 ]] || die "session gateway: bearer $a, cookie $c (see $WORK/jwtgate-session.log)"
log "sessions: bearer vs cookie rows ($DUR s each, twice in alternation)"
sb_cpu=0 sc_cpu=0 sb_rps=0 sc_rps=0 s_bad=0
for round in 1 2; do
    RUN_HEADER=(-H "Authorization: Bearer $SESS_TOKEN")
    read -r rps cpu _ bad <<<"$(header_run "$PID_SESS" "http://127.0.0.1:$P_SESS/api/bench" "$DUR" session-bearer)"
    sb_cpu=$(awk -v a="$sb_cpu" -v b="$cpu" 'BEGIN { print a + b / 2 }')
    sb_rps=$(awk -v a="$sb_rps" -v b="$rps" 'BEGIN { print a + b / 2 }')
    s_bad=$((s_bad + bad))
    RUN_HEADER=(-H "Cookie: $SESS_COOKIE")
    read -r rps cpu _ bad <<<"$(header_run "$PID_SESS" "http://127.0.0.1:$P_SESS/app/bench" "$DUR" session-cookie)"
    sc_cpu=$(awk -v a="$sc_cpu" -v b="$cpu" 'BEGIN { print a + b / 2 }')
    sc_rps=$(awk -v a="$sc_rps" -v b="$rps" 'BEGIN { print a + b / 2 }')
    s_bad=$((s_bad + bad))
done
RUN_HEADER=()
{
    echo
    echo "browser sessions (issue 15), plain HTTP, ES256, one jwtgate, mean of 2 runs each:"
    printf '  bearer token   %8.0f rps  %6.2f us CPU/request\n' "$sb_rps" "$sb_cpu"
    printf '  session cookie %8.0f rps  %6.2f us CPU/request%s\n' "$sc_rps" "$sc_cpu" "$([[ $s_bad -gt 0 ]] && echo "  !! $s_bad non-2xx/errors")"
    awk -v b="$sb_cpu" -v c="$sc_cpu" 'BEGIN { printf "  cookie / bearer CPU per request: %.3f (target <= 1.3)\n", c / b }'
} | tee -a "$WORK/report.txt" "$WORK/session.txt"

# --- --alt-binary PATH: another jwtgate build against this one, in this run ------------------
# For build-level trials (issue 18: the allocator): the same plain configs served by the binary
# at PATH (rows `jwtgate-alt`, `jwtgate-alt-unique`), each row alternating with this build's
# twice: repeated and unique ES256 tokens. Prints CPU per request and rps of both, and ratios.
if [[ -n $ALT_BINARY ]]; then
    [[ -x $ALT_BINARY ]] || die "--alt-binary $ALT_BINARY is not an executable"
    P_ALT=$((BASE + 60)) P_ALT_ADMIN=$((BASE + 61)) P_ALTU=$((BASE + 62)) P_ALTU_ADMIN=$((BASE + 63))
    for p in "$P_ALT" "$P_ALT_ADMIN" "$P_ALTU" "$P_ALTU_ADMIN"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use; set BENCH_PORT_BASE"; fi
    done
    render "$HERE/jwtgate.toml.tmpl" "$WORK/jwtgate-alt.toml" "${COMMON[@]}" PORT "$P_ALT" ADMIN "$P_ALT_ADMIN" TLS "" LIMITS ""
    render "$HERE/jwtgate.toml.tmpl" "$WORK/jwtgate-alt-unique.toml" "${COMMON[@]}" PORT "$P_ALTU" ADMIN "$P_ALTU_ADMIN" TLS "" LIMITS "$SMALL_CACHE"
    main_binary=$JWTGATE
    JWTGATE=$ALT_BINARY
    start_jwtgate jwtgate-alt "$WORK/jwtgate-alt.toml" "$P_ALT_ADMIN"
    PID_ALT=$LAST_PID
    start_jwtgate jwtgate-alt-unique "$WORK/jwtgate-alt-unique.toml" "$P_ALTU_ADMIN"
    PID_ALTU=$LAST_PID
    JWTGATE=$main_binary
    log "--alt-binary $ALT_BINARY: ES256 rows alternating with this build ($DUR s each, twice)"
    for round in 1 2; do
        run tp plain jwtgate-main ES256 repeated "$P_GW" /api/bench "$PID_GW" "$P_GW_ADMIN"
        run tp plain jwtgate-alt ES256 repeated "$P_ALT" /api/bench "$PID_ALT" "$P_ALT_ADMIN"
        run tp plain jwtgate-main-unique ES256 unique "$P_GWU" /api/bench "$PID_GWU" "$P_GWU_ADMIN"
        run tp plain jwtgate-alt-unique ES256 unique "$P_ALTU" /api/bench "$PID_ALTU" "$P_ALTU_ADMIN"
    done
    awk -F'\t' -v alt="$ALT_BINARY" '
        $3 ~ /^jwtgate-(main|alt)/ { cpu[$3] += $9; rps[$3] += $6; n[$3]++ }
        END {
            printf "\n--alt-binary %s against this build (plain HTTP, ES256, mean of %d runs each):\n", alt, n["jwtgate-main"]
            printf "%-22s %10s %12s\n", "row", "rps", "cpu us/req"
            split("jwtgate-main jwtgate-alt jwtgate-main-unique jwtgate-alt-unique", order, " ")
            for (i = 1; i <= 4; i++) { s = order[i]; printf "%-22s %10.0f %12.2f\n", s, rps[s] / n[s], cpu[s] / n[s] }
            printf "alt / main CPU per request: repeated %.3f, unique %.3f\n",
                cpu["jwtgate-alt"] / cpu["jwtgate-main"], cpu["jwtgate-alt-unique"] / cpu["jwtgate-main-unique"]
        }' "$RESULTS" | tee -a "$WORK/report.txt" "$WORK/alt.txt"
fi

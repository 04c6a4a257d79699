# Shared by benches/load.sh and benches/callgrind.sh (sourced, not run): logging, installing
# missing Debian packages, and stopping every process a script started, by PID.

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# install_missing TOOL...: installs with apt-get the tools that are not on PATH (each tool's
# Debian package has its name).
install_missing() {
    local missing=() tool sudo=""
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    log "installing ${missing[*]} (apt-get)"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# require_tools TOOL...: dies naming the first tool that is not on PATH.
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
    done
}

# Every background process a script starts goes into PIDS; stop_started stops them (on exit).
PIDS=()
stop_started() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

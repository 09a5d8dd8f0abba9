# SPDX-License-Identifier: MIT
# Shared helpers for the tests/cli_*.sh scripts (sourced): a temp dir, bounded runs of the tool,
# checks with clear failure messages, and cleanup of every background process. Ports, waits and
# background redis-server / pkmcom serve come from services.sh (shared with tests/cluster.sh).
set -u
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

PKMCOM=${1:?usage: bash $0 <path-to-pkmcom>}
T=$(mktemp -d "${TMPDIR:-/tmp}/pkmcom-cli.XXXXXX")
export PKMCOM_HOME="$T/home"
BG_PIDS=()
CHECKS=0

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${BG_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    for f in "$T"/*.err; do [ -f "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }; done
    exit 1
}

ok() {
    CHECKS=$((CHECKS + 1))
}

# run NAME CMD...: runs the tool (bounded by timeout 10) with stdout in $T/NAME.out, stderr in
# $T/NAME.err; sets RC.
run() {
    local name=$1
    shift
    timeout 10 "$PKMCOM" "$@" >"$T/$name.out" 2>"$T/$name.err"
    RC=$?
}

# expect_rc NAME WANT: the last run's exit status.
expect_rc() {
    [ "$RC" -eq "$2" ] || fail "$1: exit status $RC, expected $2"
    ok
}

# expect_one_error NAME [SUBSTRING]: stderr is exactly one line starting with "pkmcom: ",
# containing SUBSTRING when given; stdout is empty.
expect_one_error() {
    local name=$1 lines
    lines=$(wc -l <"$T/$name.err")
    [ "$lines" -eq 1 ] || fail "$name: $lines lines on stderr, expected 1"
    grep -q '^pkmcom: ' "$T/$name.err" || fail "$name: stderr does not start with 'pkmcom: '"
    if [ $# -ge 2 ]; then
        grep -qF -- "$2" "$T/$name.err" || fail "$name: stderr lacks '$2': $(cat "$T/$name.err")"
    fi
    [ ! -s "$T/$name.out" ] || fail "$name: unexpected stdout: $(cat "$T/$name.out")"
    ok
}

# expect_out NAME EXPECTED: stdout equals EXPECTED exactly (lines).
expect_out() {
    local got
    got=$(cat "$T/$1.out")
    [ "$got" = "$2" ] || fail "$1: stdout
got:  $got
want: $2"
    ok
}

# start_server NAME ARGS...: starts `pkmcom serve ARGS` in the background (stdout $T/NAME.out,
# stderr $T/NAME.err), waits for its "listening on HOST:PORT" line and sets PORT and SERVER_PID.
start_server() {
    local name=$1 rc
    shift
    start_serve "$T/$name.out" "$T/$name.err" "$@"
    SERVER_PID=$SERVE_PID
    wait_serving "$T/$name.err" "$SERVER_PID" 10
    rc=$?
    [ "$rc" -eq 1 ] && fail "$name: server exited: $(cat "$T/$name.err")"
    [ "$rc" -eq 2 ] && fail "$name: no 'listening on' line within 10 s"
    return 0
}

# stop_server: SIGTERM, and the server must exit 0 within 10 s.
stop_server() {
    local name=$1 rc
    kill -TERM "$SERVER_PID"
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && fail "$name: still running 10 s after SIGTERM"
    wait "$SERVER_PID"
    rc=$?
    [ "$rc" -eq 0 ] || fail "$name: exit status $rc after SIGTERM, expected 0"
    ok
}

# wait_for_line FILE PATTERN: waits (10 s at most) until FILE has a line matching PATTERN (grep -E).
wait_for_line() {
    wait_for "$1" "$2" 10 || fail "no line matching '$2' in $1 within 10 s"
}

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Soak test of `pkmcom serve` (issue 6, part 4; `make soak`, not part of `make test`): hundreds of
# clients for about a minute, many disconnecting abruptly; afterwards the server's descriptors and
# RSS must be back near where they were after warm-up, and a fresh client must be served.
#
# Usage: bash tests/soak.sh [BUILD_DIR]   (default build/)
# Environment: SOAK_SECONDS (default 60), SOAK_WORKERS (8), SOAK_THREADS (24 per worker),
#   SOAK_HOLDERS (25 per worker), SOAK_MAX_CONNECTS (100000), SOAK_RSS_SLACK_KIB (20480),
#   SOAK_FD_SLACK (3).
# Everything runs on 127.0.0.1 only. Exit status 0 when every check passes, 1 otherwise.
set -u

BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
PKMCOM=$(cd "$BUILD" 2>/dev/null && pwd)/pkmcom
PY=/usr/bin/python3
SECONDS_MAIN=${SOAK_SECONDS:-60}
WORKERS=${SOAK_WORKERS:-8}
THREADS=${SOAK_THREADS:-24}
HOLDERS=${SOAK_HOLDERS:-25}
MAX_CONNECTS=${SOAK_MAX_CONNECTS:-100000}
RSS_SLACK_KIB=${SOAK_RSS_SLACK_KIB:-20480}
FD_SLACK=${SOAK_FD_SLACK:-3}

[ -x "$PKMCOM" ] || { echo "soak: no $PKMCOM (run make first)" >&2; exit 1; }
$PY -c 'import cryptography' 2>/dev/null || { echo "soak: $PY lacks cryptography" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/pkmcom-soak.XXXXXX")
export PKMCOM_HOME="$T/home"
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

FAILED=0
check() { # check OK|FAIL message
    echo "soak: $2: $1"
    [ "$1" = ok ] || FAILED=1
}

fd_count() { ls "/proc/$SERVER_PID/fd" 2>/dev/null | wc -l; }
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SERVER_PID/status"; }
hwm_kib() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SERVER_PID/status"; }

# Waits (up to $1 s) until the descriptor count stays the same for 1 s and is at most $2.
settle() {
    local limit=$1 most=$2 prev=-1 now i
    for i in $(seq $((limit * 4))); do
        now=$(fd_count)
        if [ "$now" -le "$most" ] && [ "$now" -eq "$prev" ]; then return 0; fi
        prev=$now
        sleep 0.25
    done
    return 1
}

# Keys: the server's, and four client keys shared by every client (no client makes a key).
FP=$("$PKMCOM" keygen -o "$T/server.pem" 2>/dev/null | grep -o 'SHA256:[A-Za-z0-9+/=]*' | head -1)
[ -n "$FP" ] || { echo "soak: keygen failed" >&2; exit 1; }
KEYS=
for i in 1 2 3 4; do
    "$PKMCOM" keygen -o "$T/client$i.pem" >/dev/null 2>&1 || exit 1
    KEYS="$KEYS${KEYS:+,}$T/client$i.pem"
done

# Every soak client is on 127.0.0.1: the per-source limits of `pkmcom serve` (connections
# open, connection rate) would refuse most of them, so they are off here.
"$PKMCOM" serve --listen 127.0.0.1:0 --key "$T/server.pem" -q --max-conns-per-source 0 \
    --conn-rate-per-source 0 >"$T/serve.out" 2>"$T/serve.err" &
SERVER_PID=$!
PORT=
for _ in $(seq 100); do
    PORT=$(sed -n 's/^pkmcom: listening on [^ ]*:\([0-9][0-9]*\) .*/\1/p' "$T/serve.err")
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$T/serve.err" >&2; exit 1; }
    sleep 0.1
done
[ -n "$PORT" ] || { echo "soak: no 'listening on' line" >&2; exit 1; }
echo "soak: pkmcom serve pid $SERVER_PID on 127.0.0.1:$PORT"

clients() { # clients SECONDS WORKERS THREADS HOLDERS SEED
    timeout $(($1 + 120)) "$PY" "$HERE/soak_clients.py" --port "$PORT" --keys "$KEYS" \
        --seconds "$1" --workers "$2" --threads "$3" --holders "$4" \
        --max-connects "$MAX_CONNECTS" --seed "$5"
}

# Warm-up: the same mix at the same concurrency for 5 s, so that the thread pool, OpenSSL's
# per-thread state and the heap's arenas (which glibc keeps after free) exist at their working
# size; the baseline is taken once every warm-up connection is closed.
clients 5 "$WORKERS" "$THREADS" "$HOLDERS" 1 >"$T/warm.json" ||
    { echo "soak: warm-up failed: $(cat "$T/warm.json")" >&2; exit 1; }
settle 30 100000
FD0=$(fd_count)
RSS0=$(rss_kib)
echo "soak: after warm-up: $FD0 open descriptors, VmRSS $RSS0 KiB"

# The soak.
START=$(date +%s)
clients "$SECONDS_MAIN" "$WORKERS" "$THREADS" "$HOLDERS" 2 >"$T/soak.json"
CLIENTS_RC=$?
ELAPSED=$(($(date +%s) - START))
PEAK=$(hwm_kib)
echo "soak: clients ran ${ELAPSED} s: $(cat "$T/soak.json")"
check "$([ "$CLIENTS_RC" -eq 0 ] && echo ok || echo FAIL)" \
    "every client the server is responsible for was served (status $CLIENTS_RC)"
kill -0 "$SERVER_PID" 2>/dev/null
check "$([ $? -eq 0 ] && echo ok || echo FAIL)" "the server is still running"

# After: descriptors back (every connection closed by the server), RSS near the baseline.
settle 30 $((FD0 + FD_SLACK))
FD1=$(fd_count)
RSS1=$(rss_kib)
echo "soak: after the soak: $FD1 open descriptors, VmRSS $RSS1 KiB (peak VmHWM $PEAK KiB)"
check "$([ "$FD1" -le $((FD0 + FD_SLACK)) ] && [ "$FD1" -ge $((FD0 - FD_SLACK)) ] && echo ok || echo FAIL)" \
    "descriptors $FD0 -> $FD1 (within +-$FD_SLACK)"
check "$([ "$RSS1" -lt $((RSS0 + RSS_SLACK_KIB)) ] && echo ok || echo FAIL)" \
    "VmRSS $RSS0 -> $RSS1 KiB (bound: start + $RSS_SLACK_KIB KiB; +$((RSS1 - RSS0)) KiB)"

# A fresh client is served.
timeout 30 "$PKMCOM" send "127.0.0.1:$PORT" --pin "$FP" --id 16 string:after-the-soak --timeout 20 \
    >"$T/send.out" 2>"$T/send.err"
RC=$?
check "$([ $RC -eq 0 ] && grep -q '"id":16' "$T/send.out" && echo ok || echo FAIL)" \
    "a fresh pkmcom send is served (status $RC$([ $RC -ne 0 ] && echo ": $(cat "$T/send.err")"))"

# Stop: SIGTERM, exit 0, and the server's own totals.
kill -TERM "$SERVER_PID"
for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
wait "$SERVER_PID"
RC=$?
SERVER_PID=
check "$([ $RC -eq 0 ] && echo ok || echo FAIL)" "the server stopped on SIGTERM with status $RC"
grep '^pkmcom: stopped' "$T/serve.err" | sed 's/^/soak: server: /'
if grep -v -e '^pkmcom: stopped' -e 'listening on' -e 'handshake failed' -e 'closed' "$T/serve.err" |
    grep -q .; then
    echo "soak: other server messages:"
    grep -v -e '^pkmcom: stopped' -e 'listening on' "$T/serve.err" | sort | uniq -c | sort -rn | head -10
fi
[ "$FAILED" -eq 0 ] && echo "soak: PASS" || echo "soak: FAIL"
exit "$FAILED"

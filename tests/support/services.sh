# SPDX-License-Identifier: MIT
# Shared shell helpers (sourced by tests/support/cli.sh and tests/cluster.sh): free loopback
# ports, bounded waits on log files and processes, redis-server and `pkmcom serve` started in the
# background. Policy-free: each returns a status and the caller decides how to fail. Every
# process started is appended to the caller's BG_PIDS array, which the caller's cleanup stops.

# free_port: prints a free loopback port below 32768 (the kernel gives ephemeral ports from
# 32768 up), or nothing.
free_port() {
    python3 -c '
import random, socket
for _ in range(500):
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
'
}

# wait_for FILE REGEX SECONDS: 0 once a line of FILE matches (grep -E), 1 after SECONDS.
wait_for() {
    local file=$1 re=$2 end=$((SECONDS + $3))
    while [ "$SECONDS" -le "$end" ]; do
        grep -qE -- "$re" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# count FILE REGEX: lines of FILE that match.
count() { grep -cE -- "$2" "$1" 2>/dev/null || true; }
# wait_count FILE REGEX N SECONDS: 0 once N lines of FILE match, 1 after SECONDS.
wait_count() {
    local end=$((SECONDS + $4))
    while [ "$SECONDS" -le "$end" ]; do
        [ "$(count "$1" "$2")" -ge "$3" ] && return 0
        sleep 0.1
    done
    return 1
}
# wait_exit PID SECONDS: 0 once PID has exited, 1 after SECONDS.
wait_exit() {
    local end=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        [ "$SECONDS" -le "$end" ] || return 1
        sleep 0.1
    done
    return 0
}

# start_redis PORT LOG [ARGS...]: starts redis-server on 127.0.0.1:PORT (no persistence; ARGS
# added, e.g. --requirepass PW), its output appended to LOG, and sets REDIS_PID; 0 once LOG has
# one more "Ready to accept connections" line than before (a restart on the same LOG works), 1
# after 10 s.
start_redis() {
    local port=$1 log=$2 ready
    shift 2
    ready=$(count "$log" "Ready to accept connections")
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no "$@" \
        >>"$log" 2>&1 &
    REDIS_PID=$!
    BG_PIDS+=("$REDIS_PID")
    wait_count "$log" "Ready to accept connections" $((ready + 1)) 10
}

# start_serve OUT ERR ARGS...: starts `$PKMCOM serve ARGS` in the background (stdout OUT,
# stderr ERR) and sets SERVE_PID.
start_serve() {
    local out=$1 err=$2
    shift 2
    "$PKMCOM" serve "$@" >"$out" 2>"$err" &
    SERVE_PID=$!
    BG_PIDS+=("$SERVE_PID")
}

# wait_serving ERR PID SECONDS: waits for the "pkmcom: listening on HOST:PORT" line of the
# server PID in ERR and sets PORT; 0 then, 1 when PID exited first, 2 after SECONDS.
wait_serving() {
    local end=$((SECONDS + $3))
    PORT=
    while [ "$SECONDS" -le "$end" ]; do
        PORT=$(sed -n 's/^pkmcom: listening on [^ ]*:\([0-9][0-9]*\) .*/\1/p' "$1" 2>/dev/null |
            head -n 1)
        [ -n "$PORT" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 2
}

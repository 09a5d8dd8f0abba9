#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# make test-cluster (issue 14): two `pkmcom serve --relay --redis` instances behind HAProxy (mode
# tcp, send-proxy-v2, health checks) and a real redis-server, all on loopback; one PASS, FAIL or
# SKIPPED line per check; exit 1 on any FAIL. Independent of ctest. Usage:
#   tests/cluster.sh [PKMCOM]   (default: build/pkmcom; or $PKMCOM)
# Bounded in time (the whole run is under `timeout`, every wait has its own bound) and cleans up
# (every process it started, its directory) on every exit path. Ports: redis and HAProxy on
# free loopback ports below 32768 (outside Linux's ephemeral range), the instances on ports the
# kernel picks (--listen 127.0.0.1:0).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PKMCOM=${1:-${PKMCOM:-$here/../build/pkmcom}}
LIMIT=${CLUSTER_TIMEOUT:-240}

# The whole run under timeout(1): past LIMIT seconds it gets SIGTERM (then SIGKILL), and the
# trap below cleans up.
if [ -z "${PKM_CLUSTER_TIMED:-}" ]; then
    export PKM_CLUSTER_TIMED=1
    exec timeout -k 10 "$LIMIT" bash "$0" "$@"
fi

pass=0 failed=0 skipped=0
PASS() { echo "PASS: $*"; pass=$((pass + 1)); }
FAIL() { echo "FAIL: $*"; failed=$((failed + 1)); }
SKIP() { echo "SKIPPED: $*"; skipped=$((skipped + 1)); }
# check DESCRIPTION COMMAND...: PASS or FAIL by the command's status.
check() {
    local what=$1
    shift
    if "$@"; then PASS "$what"; else FAIL "$what"; fi
}
# checkx DESCRIPTION 'SHELL CONDITION': the same for a condition with && (evaluated here).
checkx() {
    if eval "$2"; then PASS "$1"; else FAIL "$1"; fi
}

T=$(mktemp -d "${TMPDIR:-/tmp}/pkm-cluster.XXXXXX")
BG_PIDS=()
cleanup() {
    local st=$?
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for _ in $(seq 30); do # up to 3 s to stop on SIGTERM, then SIGKILL
        local alive=0
        for p in "${BG_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$failed" -gt 0 ] || [ "$st" -ne 0 ]; then
        for f in "$T"/*.log; do
            [ -f "$f" ] || continue
            echo "---- $(basename "$f") (last 30 lines) ----"
            tail -n 30 "$f"
        done
    fi
    if [ -n "${CLUSTER_KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
    exit "$st"
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted or out of time (${LIMIT} s)"; failed=$((failed + 1)); exit 1' INT TERM

die() {
    FAIL "$*"
    exit 1
}

# free_port, wait_for, count, wait_count, wait_exit, start_redis, start_serve, wait_serving
source "$here/support/services.sh"

# ---- what is needed -------------------------------------------------------------------------
[ -x "$PKMCOM" ] || die "no pkmcom at $PKMCOM (run make first)"
for b in redis-server haproxy python3; do
    command -v "$b" >/dev/null || die "$b not installed (scripts/deps.sh test installs it)"
done
help=$("$PKMCOM" serve --help)
have_redis=0 have_proxy=0
grep -q -- '--redis' <<<"$help" && have_redis=1
grep -q -- '--proxy-trusted' <<<"$help" && have_proxy=1
grep -q -- '--bind' <<<"$("$PKMCOM" send --help)" || die "pkmcom send has no --bind"
no_redis="pkmcom serve has no --redis (the relay across instances is not built in)"
no_proxy="pkmcom serve has no --proxy-trusted (no PROXY protocol on the listener)"

export PKMCOM_HOME=$T/home
mkdir -m 700 "$PKMCOM_HOME"
# One server key for both instances: a client pins one fingerprint whichever it lands on.
"$PKMCOM" keygen -o "$T/server.pem" >"$T/fp" 2>/dev/null || die "keygen"
FP=$(cat "$T/fp")

# ---- Redis ----------------------------------------------------------------------------------
RPORT=$(free_port)
[ -n "$RPORT" ] || die "no free port for redis"
start_redis "$RPORT" "$T/redis.log" || die "redis-server did not start on 127.0.0.1:$RPORT"
CHANNEL=pkmcom-cluster-test-$$
echo "redis-server on 127.0.0.1:$RPORT, channel $CHANNEL"

# ---- two instances --------------------------------------------------------------------------
serve_args=(--listen 127.0.0.1:0 --key "$T/server.pem" --relay)
[ "$have_redis" = 1 ] && serve_args+=(--redis "redis://127.0.0.1:$RPORT/$CHANNEL")
# Two event loops each (where serve has --loops): what arrives from Redis on loop 0 must reach
# the clients of both.
grep -q -- '--loops' <<<"$help" && serve_args+=(--loops 2)
# Per-source cap 1: what a limit sees as the source shows (checks below). Without the PROXY
# protocol every client would be HAProxy's 127.0.0.1: no cap then.
[ "$have_proxy" = 1 ] && serve_args+=(--proxy-trusted 127.0.0.1/32 --max-conns-per-source 1)
declare -A SPORT SPID
for s in s1 s2; do
    start_serve "$T/$s.out" "$T/$s.log" "${serve_args[@]}"
    SPID[$s]=$SERVE_PID
done
for s in s1 s2; do
    wait_serving "$T/$s.log" "${SPID[$s]}" 15 || die "instance $s did not start"
    SPORT[$s]=$PORT
done
echo "instances: s1 on 127.0.0.1:${SPORT[s1]}, s2 on 127.0.0.1:${SPORT[s2]}"
if [ "$have_redis" = 1 ]; then
    ok=1
    for s in s1 s2; do wait_for "$T/$s.log" "connected to Redis at" 10 || ok=0; done
    check "both instances connected to Redis (log: \"connected to Redis at ...\")" [ $ok = 1 ]
else
    SKIP "instances connected to Redis: $no_redis"
fi

# ---- HAProxy --------------------------------------------------------------------------------
HPORT=$(free_port)
[ -n "$HPORT" ] || die "no free port for haproxy"
sed -e "s/@FRONT_PORT@/$HPORT/" -e "s/@S1_PORT@/${SPORT[s1]}/" -e "s/@S2_PORT@/${SPORT[s2]}/" \
    "$here/cluster/haproxy.cfg.in" >"$T/haproxy.cfg"
if [ "$have_proxy" = 0 ]; then
    # The instances would take a PROXY header for packet bytes: HAProxy without it.
    sed -i -e 's/ send-proxy-v2//' -e 's/ check-send-proxy//' "$T/haproxy.cfg"
fi
haproxy -c -q -f "$T/haproxy.cfg" >"$T/haproxy-check.log" 2>&1 ||
    die "haproxy rejects its configuration: $(cat "$T/haproxy-check.log")"
haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
HA_PID=$!
BG_PIDS+=("$HA_PID")
# Listening, as /proc/net/tcp says (a test connection would go through to an instance).
end=$((SECONDS + 10))
until grep -qE "^ *[0-9]+: 0100007F:$(printf '%04X' "$HPORT") 00000000:0000 0A" /proc/net/tcp; do
    [ "$SECONDS" -le "$end" ] && kill -0 "$HA_PID" 2>/dev/null || die "haproxy did not start"
    sleep 0.1
done
echo "haproxy on 127.0.0.1:$HPORT"
FRONT=127.0.0.1:$HPORT

# Health checks (every 300 ms) for a second: the instances log nothing for them.
sleep 1.2
if [ "$have_proxy" = 1 ]; then
    # No client has connected yet: any line past the start-up ones is about a health check.
    hc=$(grep -hvE 'listening on|open-file limit|relay: connected to Redis' "$T/s1.log" "$T/s2.log" |
        head -3)
    checkx "health checks (PROXY v2 LOCAL) cost the instances no log line${hc:+: $hc}" \
        '[ -z "$hc" ]'
else
    SKIP "health checks are silent: $no_proxy"
fi

# client NAME SOURCE ARGS...: pkmcom send through HAProxy from SOURCE, in the background
# (stdout NAME.out, stderr NAME.log, pid in CPID).
client() {
    local name=$1 src=$2
    shift 2
    "$PKMCOM" send "$FRONT" --bind "$src" --pin "$FP" "$@" >"$T/$name.out" 2>"$T/$name.log" &
    CPID=$!
    BG_PIDS+=("$CPID")
}
# listener NAME SOURCE: a client that sends nothing and waits (up to 60 s) for one packet.
listener() { client "$1" "$2" --id 16 --count 0 --expect 1 --timeout 60; }
# landed SOURCE N: the instance (s1 or s2) whose log has the N-th connection from SOURCE (with
# the PROXY protocol the instances log the client's address; without it, HAProxy's log says).
landed() {
    local src=$1 n=$2 s
    for s in s1 s2; do
        if [ "$have_proxy" = 1 ]; then
            [ "$(count "$T/$s.log" "\\[#[0-9]+ ${src//./\\.}:[0-9]+\\] connected")" -ge "$n" ] &&
                echo "$s" && return
        fi
    done
    [ "$have_proxy" = 1 ] && return
    sed -nE "s/^${src//./\\.}:[0-9]+ .* pkmcom pkmcom_instances\\/(s[12]) .*/\\1/p" "$T/haproxy.log" |
        sed -n "${n}p"
}
# wait_landed SOURCE N: the instance, once it is known (10 s at most); empty if never.
wait_landed() {
    local end=$((SECONDS + 10)) s
    while [ "$SECONDS" -le "$end" ]; do
        s=$(landed "$1" "$2")
        [ -n "$s" ] && echo "$s" && return
        sleep 0.1
    done
}
# settled: waits (10 s at most) until every client connection the live instances logged has
# been logged closed too, so that HAProxy's leastconn counts start from zero again.
settled() {
    local end=$((SECONDS + 10)) s busy
    while [ "$SECONDS" -le "$end" ]; do
        busy=0
        for s in "$@"; do
            [ "$(count "$T/$s.log" '\] connected')" = \
                "$(count "$T/$s.log" '\] (disconnected|closed)')" ] || busy=1
        done
        [ $busy = 0 ] && return 0
        sleep 0.1
    done
    echo "warning: connections still open on $*" >&2
}

# The packet A sends, as pkmcom prints it (id, hash and content as A made them).
PKT_ARGS=(--id 0x30 string:hello-from-A uint:7)
"$PKMCOM" send --dry-run "${PKT_ARGS[@]}" >"$T/expected.json" || die "send --dry-run"
EXPECTED=$(cat "$T/expected.json")

# ---- 1. a packet from A reaches B (on the other instance), not A -----------------------------
listener B 127.0.0.3
B_PID=$CPID
B_ON=$(wait_landed 127.0.0.3 1)
[ -n "$B_ON" ] || die "client B (127.0.0.3) did not connect through HAProxy: $(cat "$T/B.log")"
client A 127.0.0.2 "${PKT_ARGS[@]}" --expect 1 --timeout 3
A_PID=$CPID
A_ON=$(wait_landed 127.0.0.2 1)
echo "client B (127.0.0.3) is on $B_ON, client A (127.0.0.2) on ${A_ON:-?}"
checkx "A and B land on different instances (B on $B_ON, A on ${A_ON:-none})" \
    '[ -n "$A_ON" ] && [ "$A_ON" != "$B_ON" ]'
if [ "$have_redis" = 1 ]; then
    wait_exit "$B_PID" 15
    check "B (on $B_ON) receives A's packet (from $A_ON) with its id, hash and content" \
        [ "$(cat "$T/B.out")" = "$EXPECTED" ]
else
    SKIP "a packet from A reaches B on another instance: $no_redis"
    kill "$B_PID" 2>/dev/null
fi
wait_exit "$A_PID" 10
check "A does not receive its own packet (A's output: '$(head -c 200 "$T/A.out")')" [ ! -s "$T/A.out" ]
if [ "$have_proxy" = 1 ]; then
    n=$(grep -hE '\] connected' "$T/s1.log" "$T/s2.log" | grep -cvE '\[#[0-9]+ 127\.0\.0\.[23]:' || true)
    m=$(grep -hE '\] connected' "$T/s1.log" "$T/s2.log" | grep -cE '\[#[0-9]+ 127\.0\.0\.[23]:' || true)
    checkx "the instances log the clients' addresses 127.0.0.2/3, not HAProxy's ($m real, $n other)" \
        '[ "$n" = 0 ] && [ "$m" -ge 2 ]'
else
    SKIP "the instances see the clients' addresses: $no_proxy"
fi

# ---- 2. Redis stopped: the local relay goes on, nothing crosses, logged once ------------------
if [ "$have_redis" = 1 ]; then
    kill "$REDIS_PID"
    wait_exit "$REDIS_PID" 10
    ok=1
    for s in s1 s2; do wait_for "$T/$s.log" "lost Redis at" 10 || ok=0; done
    check "both instances say Redis is lost" [ $ok = 1 ]
    # B and D wait, one on each instance (leastconn); A lands on one of them.
    settled s1 s2
    listener B2 127.0.0.7
    B2_PID=$CPID
    B2_ON=$(wait_landed 127.0.0.7 1)
    listener D 127.0.0.4
    D_PID=$CPID
    D_ON=$(wait_landed 127.0.0.4 1)
    client A2 127.0.0.8 "${PKT_ARGS[@]}" --count 3 --expect 0 --timeout 10
    A2_PID=$CPID
    A2_ON=$(wait_landed 127.0.0.8 1)
    wait_exit "$A2_PID" 10
    echo "Redis away: B2 on ${B2_ON:-?}, D on ${D_ON:-?}, A2 on ${A2_ON:-?}"
    if [ -n "$B2_ON" ] && [ -n "$D_ON" ] && [ "$B2_ON" != "$D_ON" ] && [ -n "$A2_ON" ]; then
        if [ "$A2_ON" = "$B2_ON" ]; then
            near=B2 near_pid=$B2_PID far=D far_pid=$D_PID
        else
            near=D near_pid=$D_PID far=B2 far_pid=$B2_PID
        fi
        wait_exit "$near_pid" 10
        check "Redis away: the local relay goes on ($near, on A2's instance, gets the packet)" \
            [ "$(head -1 "$T/$near.out")" = "$EXPECTED" ]
        sleep 1
        check "Redis away: nothing crosses to the other instance ($far gets nothing)" \
            [ ! -s "$T/$far.out" ]
        kill "$far_pid" 2>/dev/null
    else
        FAIL "Redis away: the listeners did not land one on each instance"
        kill "$B2_PID" "$D_PID" 2>/dev/null
    fi
    ok=1
    for s in s1 s2; do [ "$(count "$T/$s.log" 'lost Redis|cannot reach Redis')" = 1 ] || ok=0; done
    check "the loss is logged once per instance, not per packet or attempt" [ $ok = 1 ]

    # ---- 3. Redis back: the relay resumes -------------------------------------------------
    start_redis "$RPORT" "$T/redis.log" || die "redis-server did not restart on 127.0.0.1:$RPORT"
    ok=1
    for s in s1 s2; do wait_for "$T/$s.log" "Redis at [^ ]* is back: relaying" 15 || ok=0; done
    check "both instances reconnect to the restarted Redis (log: \"... is back\")" [ $ok = 1 ]
    settled s1 s2 # the listeners of step 2 are gone
    listener B3 127.0.0.5
    B3_PID=$CPID
    B3_ON=$(wait_landed 127.0.0.5 1)
    client A3 127.0.0.6 "${PKT_ARGS[@]}" --expect 0 --timeout 10
    A3_ON=$(wait_landed 127.0.0.6 1)
    wait_exit "$B3_PID" 15
    checkx "after the restart a packet crosses again (A3 on ${A3_ON:-?} to B3 on ${B3_ON:-?})" \
        '[ -n "$A3_ON" ] && [ "$A3_ON" != "$B3_ON" ] && [ "$(cat "$T/B3.out")" = "$EXPECTED" ]'
else
    SKIP "Redis stopped and restarted, the relay resumes: $no_redis"
fi

# ---- 4. one instance killed: new clients go to the other --------------------------------------
{
    kill -KILL "${SPID[s1]}"
    wait "${SPID[s1]}"
} 2>/dev/null
check "HAProxy's health check marks the killed instance s1 DOWN" \
    wait_for "$T/haproxy.log" "pkmcom_instances/s1 is DOWN" 10
ok=1
for k in 1 2 3; do
    "$PKMCOM" send "$FRONT" --bind "127.0.0.1$k" --pin "$FP" --id 16 --expect 0 --timeout 10 \
        >"$T/K$k.out" 2>"$T/K$k.log" || ok=0
done
check "with s1 killed, three new clients connect (handshake through HAProxy)" [ $ok = 1 ]
n=0
for k in 1 2 3; do [ "$(landed "127.0.0.1$k" 1)" = s2 ] && n=$((n + 1)); done
check "they are all served by s2 ($n of 3)" [ $n = 3 ]

# ---- 5. per-source limits see 127.0.0.x, not HAProxy's address ----------------------------------
if [ "$have_proxy" = 1 ]; then
    listener P1 127.0.0.20
    P1_PID=$CPID
    [ "$(wait_landed 127.0.0.20 1)" = s2 ] || FAIL "the first client from 127.0.0.20 is not on s2"
    "$PKMCOM" send "$FRONT" --bind 127.0.0.20 --pin "$FP" --id 16 --expect 0 --timeout 5 \
        >"$T/P2.out" 2>"$T/P2.log"
    rc=$?
    check "a second connection from 127.0.0.20 is refused (cap 1 per source; exit $rc)" \
        [ $rc = 1 ]
    check "s2 logs the refusal with the client's address 127.0.0.20" \
        wait_for "$T/s2.log" "refused .*127\.0\.0\.20" 5
    "$PKMCOM" send "$FRONT" --bind 127.0.0.21 --pin "$FP" --id 16 --expect 0 --timeout 5 \
        >"$T/P3.out" 2>"$T/P3.log"
    rc=$?
    check "meanwhile 127.0.0.21 gets in (exit $rc): the limit is per client, not per HAProxy" \
        [ $rc = 0 ]
    kill "$P1_PID" 2>/dev/null
else
    SKIP "per-source limits see the clients' addresses: $no_proxy"
fi

# ---- 6. the survivor stops cleanly --------------------------------------------------------------
kill -TERM "${SPID[s2]}"
wait "${SPID[s2]}"
rc=$?
checkx "s2 stops on SIGTERM with exit 0 (exit $rc), its relay's counters logged" \
    '[ $rc = 0 ] && { [ "$have_redis" = 0 ] || grep -q "relay: published" "$T/s2.log"; }'

echo "cluster: $pass passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]

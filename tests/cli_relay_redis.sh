# SPDX-License-Identifier: MIT
# pkmcom serve --relay --redis: two instances on one redis-server (on a free loopback port) make
# one lobby (a packet reaches the other instance's clients and the sender's neighbours, once each,
# never the sender); the relay's counters at SIGTERM; Redis unreachable: the local relay works and
# the log says so once; usage errors. (With HAProxy in front: tests/cluster.sh, make test-cluster.)
source "$(dirname "$0")/support/cli.sh"

command -v redis-server >/dev/null || fail "redis-server not installed (scripts/deps.sh test)"

# ---- usage errors ----
run u1 serve --listen 127.0.0.1:0 --redis redis://127.0.0.1:6379
expect_rc u1 2
expect_one_error u1 "--redis relays across instances: it needs --relay"
run u2 serve --listen 127.0.0.1:0 --relay --redis http://127.0.0.1:6379
expect_rc u2 2
expect_one_error u2 "--redis 'http://127.0.0.1:6379'"
run u3 serve --listen 127.0.0.1:0 --relay --redis 'redis://127.0.0.1:6379/bad channel'
expect_rc u3 2

run k keygen -o "$T/server.pem"
expect_rc k 0
FP=$(cat "$T/k.out")

RPORT=$(free_port)
[ -n "$RPORT" ] || fail "no free port for redis-server"
start_redis "$RPORT" "$T/redis.err" || fail "redis-server did not start on 127.0.0.1:$RPORT"
URL="redis://127.0.0.1:$RPORT/cli-relay-$$"

# Two event loops each: a packet from Redis reaches the clients of both loops.
start_server s1 --listen 127.0.0.1:0 --key "$T/server.pem" --relay --redis "$URL" --loops 2
P1=$PORT S1=$SERVER_PID
start_server s2 --listen 127.0.0.1:0 --key "$T/server.pem" --relay --redis "$URL" --loops 2
P2=$PORT S2=$SERVER_PID
grep -qF "relay, across instances over Redis" "$T/s1.err" || fail "the listening line does not say so"
ok
wait_for_line "$T/s1.err" "relay: connected to Redis at $URL \\(instance [0-9a-f]{16}\\)"
wait_for_line "$T/s2.err" "relay: connected to Redis at $URL"

# listen NAME PORT: a client that sends nothing and waits for up to 2 packets for 4 s.
listen() {
    timeout 20 "$PKMCOM" send "127.0.0.1:$2" --pin "$FP" --id 16 --count 0 --expect 2 --timeout 4 \
        >"$T/$1.out" 2>"$T/$1.err" &
    BG_PIDS+=($!)
    LPID=$!
}
listen B "$P2"
B_PID=$LPID
wait_for_line "$T/s2.err" '\[#1 .*\] connected'
# A second listener on s2: on its other loop (a new connection goes to the loop with fewest).
listen B2 "$P2"
B2_PID=$LPID
listen C "$P1"
C_PID=$LPID
wait_for_line "$T/s2.err" '\[#2 .*\] connected'
wait_for_line "$T/s1.err" '\[#1 .*\] connected'
run dry send --dry-run --id 0x30 string:across uint:7
expect_rc dry 0
PKT=$(cat "$T/dry.out")
# A on s1 sends one packet and waits 3 s for anything (it must get nothing).
run A send "127.0.0.1:$P1" --pin "$FP" --id 0x30 string:across uint:7 --expect 1 --timeout 3
expect_rc A 1
[ ! -s "$T/A.out" ] || fail "the sender received: $(cat "$T/A.out")"
ok
wait "$B_PID"
wait "$B2_PID"
wait "$C_PID"
# Exactly once each (a second copy would be an instance hearing its own message).
expect_out B "$PKT"
expect_out B2 "$PKT"
expect_out C "$PKT"

SERVER_PID=$S1
stop_server s1
grep -qF "relay: published 1, received 0, dropped 0 (Redis lost 0 times)" "$T/s1.err" ||
    fail "s1's relay counters: $(grep 'relay: published' "$T/s1.err")"
ok
SERVER_PID=$S2
stop_server s2
grep -qF "relay: published 0, received 1, dropped 0 (Redis lost 0 times)" "$T/s2.err" ||
    fail "s2's relay counters: $(grep 'relay: published' "$T/s2.err")"
ok

# ---- Redis unreachable: the local relay goes on, said once ----
DEAD=$(free_port)
start_server s3 --listen 127.0.0.1:0 --key "$T/server.pem" --relay --redis "redis://127.0.0.1:$DEAD"
wait_for_line "$T/s3.err" "relay: warning: cannot reach Redis at redis://127.0.0.1:$DEAD/pkmcom"
listen D "$PORT"
D_PID=$LPID
wait_for_line "$T/s3.err" '\[#1 .*\] connected'
run E send "127.0.0.1:$PORT" --pin "$FP" --id 0x30 string:across uint:7 --count 2 --expect 0
expect_rc E 0
wait "$D_PID"
expect_out D "$PKT
$PKT"
stop_server s3
[ "$(grep -c 'relay: ' "$T/s3.err")" -eq 2 ] ||
    fail "Redis away: expected the 'cannot reach' line and the counters only: $(grep 'relay: ' "$T/s3.err")"
ok
grep -qF "relay: published 0, received 0, dropped 2 (Redis lost 1 times)" "$T/s3.err" ||
    fail "s3's relay counters: $(grep 'relay: published' "$T/s3.err")"
ok
echo "cli_relay_redis: $CHECKS checks passed"

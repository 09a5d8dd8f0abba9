# SPDX-License-Identifier: MIT
# pkmcom serve --relay --redis: two instances on one redis-server (on a free loopback port) make
# one lobby (a packet reaches the other instance's clients and the sender's neighbours, once each,
# never the sender); the relay's counters at SIGTERM; Redis unreachable: the local relay works and
# the log says so once; usage errors; a Redis with a password (--redis-password-file, or in the
# URL): the right one relays, a wrong one and none are refused by Redis, said once, and no log line
# or process list shows the password. (With HAProxy in front: tests/cluster.sh, make test-cluster.)
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
printf 'pw\n' >"$T/rpw"
run u4 serve --listen 127.0.0.1:0 --relay --redis-password-file "$T/rpw"
expect_rc u4 2
expect_one_error u4 "--redis-password-file is the password of --redis URL: it needs --redis"
run u5 serve --listen 127.0.0.1:0 --relay --redis redis://:pw@127.0.0.1:6379 --redis-password-file "$T/rpw"
expect_rc u5 2
expect_one_error u5 "give the Redis password in --redis URL or with --redis-password-file, not both"
# A malformed URL with a password: the error names the problem, never the password.
run u6 serve --listen 127.0.0.1:0 --relay --redis 'redis://bob:Xyzzy42%zz@127.0.0.1:6379'
expect_rc u6 2
expect_one_error u6 "--redis 'redis://bob:***@127.0.0.1:6379': redis://bob:***@127.0.0.1:6379: bad percent-escape in the password"
! grep -q Xyzzy42 "$T/u6.err" || fail "u6: the error shows the password: $(cat "$T/u6.err")"
ok
run u7 serve --listen 127.0.0.1:0 --relay --redis redis://bob@127.0.0.1:1 --redis-password-file "$T/none"
expect_rc u7 1
expect_one_error u7 "$T/none: No such file or directory"

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
# ---- Redis with a password ----
APORT=$(free_port)
[ -n "$APORT" ] || fail "no free port for redis-server"
start_redis "$APORT" "$T/redis-auth.err" --requirepass 'Pa55:w@rd' ||
    fail "redis-server did not start on 127.0.0.1:$APORT"
printf 'Pa55:w@rd\n' >"$T/redis.pw"
chmod 600 "$T/redis.pw"
AURL="redis://127.0.0.1:$APORT/cli-auth-$$"
# s4: the password from a file; s5: in the URL (percent-encoded), with a warning
start_server s4 --listen 127.0.0.1:0 --key "$T/server.pem" --relay --redis "$AURL" \
    --redis-password-file "$T/redis.pw"
P4=$PORT S4=$SERVER_PID
start_server s5 --listen 127.0.0.1:0 --key "$T/server.pem" --relay \
    --redis "redis://:Pa55:w%40rd@127.0.0.1:$APORT/cli-auth-$$"
P5=$PORT S5=$SERVER_PID
wait_for_line "$T/s4.err" "relay: connected to Redis at $AURL"
wait_for_line "$T/s5.err" "relay: connected to Redis at $AURL"
grep -qF "warning: the password in --redis URL is where other users of this machine can see it" \
    "$T/s5.err" || fail "s5: no warning about the password in the URL"
ok
grep -qF "Pa55" "/proc/$S5/cmdline" && fail "s5: the process list still shows the password"
grep -qF "redis://:***********@127.0.0.1:$APORT" "/proc/$S5/cmdline" ||
    fail "s5: the URL in the process list is not masked: $(tr '\0' ' ' <"/proc/$S5/cmdline")"
ok
listen F "$P5"
F_PID=$LPID
wait_for_line "$T/s5.err" '\[#1 .*\] connected'
run G send "127.0.0.1:$P4" --pin "$FP" --id 0x30 string:across uint:7 --expect 0
expect_rc G 0
wait "$F_PID"
expect_out F "$PKT"
# s6: a wrong password; s7: none. Refused by Redis, said once each, the relay retrying.
printf 'wrong-pw\n' >"$T/wrong.pw"
start_server s6 --listen 127.0.0.1:0 --key "$T/server.pem" --relay --redis "$AURL" \
    --redis-password-file "$T/wrong.pw"
S6=$SERVER_PID
start_server s7 --listen 127.0.0.1:0 --key "$T/server.pem" --relay --redis "$AURL"
S7=$SERVER_PID
wait_for_line "$T/s6.err" "relay: warning: Redis at $AURL refused the relay's AUTH \(WRONGPASS"
wait_for_line "$T/s7.err" "relay: warning: Redis at $AURL wants a password \(NOAUTH"
sleep 1 # several reconnection attempts, each refused
SERVER_PID=$S4
stop_server s4
SERVER_PID=$S5
stop_server s5
SERVER_PID=$S6
stop_server s6
SERVER_PID=$S7
stop_server s7
for n in s6 s7; do
    [ "$(grep -c 'relay: ' "$T/$n.err")" -eq 2 ] ||
        fail "$n: expected the refusal line once and the counters: $(grep 'relay: ' "$T/$n.err")"
done
ok
grep -qF "relay: published 1, received 0, dropped 0 (Redis lost 0 times)" "$T/s4.err" ||
    fail "s4's relay counters: $(grep 'relay: published' "$T/s4.err")"
grep -qF "relay: published 0, received 1, dropped 0 (Redis lost 0 times)" "$T/s5.err" ||
    fail "s5's relay counters: $(grep 'relay: published' "$T/s5.err")"
ok
for n in s4 s5 s6 s7; do
    ! grep -qE "Pa55|w%40rd|wrong-pw" "$T/$n.err" || fail "$n: a log line shows a password: $(cat "$T/$n.err")"
done
ok
echo "cli_relay_redis: $CHECKS checks passed"

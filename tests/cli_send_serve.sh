# SPDX-License-Identifier: MIT
# pkmcom serve + send over loopback: echo of typed fields, --print, --relay, passwords, --pin,
# known_hosts trust on first use (and the loud refusal of a changed key), --max-conns, SIGTERM.
source "$(dirname "$0")/support/cli.sh"
DATA=${PKM_SOURCE_DIR:-$(dirname "$0")/..}/tests/data

# Two server keys, made once (RSA-2048 generation is the slow part).
run k1 keygen -o "$T/k1.pem"
expect_rc k1 0
FP1=$(cat "$T/k1.out")
run k2 keygen -o "$T/k2.pem"
expect_rc k2 0
FP2=$(cat "$T/k2.out")
KH="$T/known_hosts"

# Expected lines, worked out by hand in tests/cli_fields.sh:
# byte 1, string "hi", bool true, id 16.
L1='{"id":16,"hash":105993,"size":6,"content":"010002686901"}'
# uuid 123e4567-e89b-42d3-a456-426614174000 (hashcode 171766066), instant 1,2 (33), bytes 0102ff
# (1278), id 0x20: hashsum = (171766066*31 + 33)*31 + 1278 = 1858434479 (mod 2^32);
# Hash = 32*31 + that = 1858435471.
L2='{"id":32,"hash":1858435471,"size":31,"content":"123e4567e89b42d3a4564266141740000000000000000001000000020102ff"}'

# ---- echo, with --print ----
start_server echo --listen 127.0.0.1:0 --key "$T/k1.pem" --print
grep -qF "fingerprint $FP1" "$T/echo.err" || fail "serve does not log its key's fingerprint"
ok
run e1 send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true --known-hosts "$KH"
expect_rc e1 0
expect_out e1 "$L1"
# First contact recorded its key, and said so on stderr.
[ "$(cat "$KH")" = "127.0.0.1:$PORT $FP1" ] || fail "known_hosts after first contact: $(cat "$KH")"
ok
grep -qF "first contact with 127.0.0.1:$PORT" "$T/e1.err" || fail "first contact not reported"
ok
# Second contact: the same key, nothing added, nothing said.
run e2 send "127.0.0.1:$PORT" --id 0x20 uuid:123e4567-e89b-42d3-a456-426614174000 instant:1,2 \
    bytes:0102ff --known-hosts "$KH"
expect_rc e2 0
expect_out e2 "$L2"
[ "$(wc -l <"$KH")" -eq 1 ] || fail "known_hosts grew on a second contact"
ok
[ ! -s "$T/e2.err" ] || fail "second contact wrote to stderr: $(cat "$T/e2.err")"
ok
# --count 3: three echoes.
run e3 send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true --count 3 --known-hosts "$KH"
expect_rc e3 0
expect_out e3 "$L1
$L1
$L1"
# The server printed every packet it received, in order.
wait_for_line "$T/echo.out" "^$L1\$"
expect_out echo "$L1
$L2
$L1
$L1
$L1"
# The default known_hosts file lives in $PKMCOM_HOME.
run e4 send "127.0.0.1:$PORT" --id 5
expect_rc e4 0
expect_out e4 '{"id":5,"hash":155,"size":0,"content":""}'
[ "$(cat "$PKMCOM_HOME/known_hosts")" = "127.0.0.1:$PORT $FP1" ] || fail "default known_hosts"
ok
[ "$(stat -c %a "$PKMCOM_HOME")" = 700 ] || fail "configuration directory mode $(stat -c %a "$PKMCOM_HOME")"
ok

# --bind: the connection comes from that local address (the server's log names it).
run bind1 send "127.0.0.1:$PORT" --bind 127.0.0.2 --id 16 byte:1 string:hi bool:true --pin "$FP1"
expect_rc bind1 0
expect_out bind1 "$L1"
wait_for_line "$T/echo.err" '\[#[0-9]+ 127\.0\.0\.2:[0-9]+\] connected'
ok
run bind2 send "127.0.0.1:$PORT" --bind ::1 --id 16 --pin "$FP1"
expect_rc bind2 1
expect_one_error bind2 "the family of --bind"
run bind3 send "127.0.0.1:$PORT" --bind not-an-address --id 16 --pin "$FP1"
expect_rc bind3 1
expect_one_error bind3 "--bind not-an-address: not a numeric address"

# --pin: the right fingerprint connects (and known_hosts is not consulted), a wrong one is refused.
run pin_ok send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true --pin "$FP1"
expect_rc pin_ok 0
expect_out pin_ok "$L1"
run pin_bad send "127.0.0.1:$PORT" --id 16 byte:1 --pin "$FP2"
expect_rc pin_bad 1
expect_one_error pin_bad "does not match the pinned fingerprint"
grep -qF "$FP1" "$T/pin_bad.err" && grep -qF "$FP2" "$T/pin_bad.err" ||
    fail "pin mismatch does not name both fingerprints"
ok
# A packet too few: --expect 2 with one echo times out, exit 1.
run short send "127.0.0.1:$PORT" --id 1 --expect 2 --timeout 3 --pin "$FP1"
expect_rc short 1
grep -qF '{"id":1,"hash":31,"size":0,"content":""}' "$T/short.out" || fail "--expect 2: no echo"
ok
grep -q '^pkmcom: .*timed out.*got 1 of 2' "$T/short.err" || fail "--expect: $(cat "$T/short.err")"
ok
# The server logged each connection.
grep -qE '^pkmcom: \[#1 127\.0\.0\.1:[0-9]+\] connected' "$T/echo.err" || fail "no connect log"
ok

# ---- a different key on the same host:port: refused loudly, both fingerprints named ----
OLDPORT=$PORT
stop_server echo
grep -q '^pkmcom: stopped on SIGTERM' "$T/echo.err" || fail "serve: no stop line"
ok
start_server impostor --listen "127.0.0.1:$OLDPORT" --key "$T/k2.pem"
run changed send "127.0.0.1:$PORT" --id 16 byte:1 --known-hosts "$KH"
expect_rc changed 1
expect_one_error changed "HAS CHANGED"
grep -qF "$FP1" "$T/changed.err" && grep -qF "$FP2" "$T/changed.err" ||
    fail "changed key: both fingerprints not named: $(cat "$T/changed.err")"
ok
grep -qF "$KH line 1" "$T/changed.err" || fail "changed key: the known_hosts line is not named"
ok
[ "$(cat "$KH")" = "127.0.0.1:$PORT $FP1" ] || fail "known_hosts changed after a refusal"
ok
# The refusal happened before the handshake: the server saw the client leave at ClientKey.
wait_for_line "$T/impostor.err" 'handshake failed at step ClientKey'
ok
# ... and says the client closed it, at which step, and not "wrong secret".
grep -q 'the client closed the connection during handshake step 2 (ClientKey), before sending its ClientKey' "$T/impostor.err" ||
    fail "serve: the client's leaving is not said: $(cat "$T/impostor.err")"
grep -q 'wrong secret' "$T/impostor.err" && fail "serve: a client that left is logged as a wrong secret"
ok
stop_server impostor

# ---- passwords: --password-file, $PKMCOM_PASSWORD, --password (works, but warns) ----
printf 'sesame\n' >"$T/pwfile"
printf 'hunter2\n' >"$T/pwbad"
start_server pw --listen 127.0.0.1:0 --key "$T/k1.pem" --password-file "$T/pwfile"
grep -q 'warning' "$T/pw.err" && fail "serve --password-file warned: $(cat "$T/pw.err")"
ok
run pw_file send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true --password-file "$T/pwfile" \
    --pin "$FP1"
expect_rc pw_file 0
expect_out pw_file "$L1"
[ ! -s "$T/pw_file.err" ] || fail "send --password-file wrote to stderr: $(cat "$T/pw_file.err")"
ok
PKMCOM_PASSWORD=sesame run pw_env send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true \
    --pin "$FP1"
expect_rc pw_env 0
expect_out pw_env "$L1"
[ ! -s "$T/pw_env.err" ] || fail "send with PKMCOM_PASSWORD wrote to stderr: $(cat "$T/pw_env.err")"
ok
# An option wins over the environment.
PKMCOM_PASSWORD=wrong run pw_prec send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true \
    --password-file "$T/pwfile" --pin "$FP1"
expect_rc pw_prec 0
expect_out pw_prec "$L1"
run pw_ok send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true --password sesame --pin "$FP1"
expect_rc pw_ok 0
expect_out pw_ok "$L1"
[ "$(wc -l <"$T/pw_ok.err")" -eq 1 ] && grep -q '^pkmcom: warning: --password puts the password' \
    "$T/pw_ok.err" || fail "send --password: no warning: $(cat "$T/pw_ok.err")"
ok
grep -q sesame "$T/pw_ok.err" && fail "the warning shows the password"
ok
# A pipe works as the file (the password never touches the disk); an empty file is refused.
run pw_pipe send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true \
    --password-file <(printf 'sesame\r\n') --pin "$FP1"
expect_rc pw_pipe 0
expect_out pw_pipe "$L1"
: >"$T/pwempty"
run pw_empty send "127.0.0.1:$PORT" --id 16 --password-file "$T/pwempty" --pin "$FP1"
expect_rc pw_empty 1
expect_one_error pw_empty "$T/pwempty: the password file is empty"
run pw_both send "127.0.0.1:$PORT" --id 16 --password sesame --password-file "$T/pwfile"
expect_rc pw_both 2
expect_one_error pw_both "not both"
run pw_bad send "127.0.0.1:$PORT" --id 16 byte:1 --password-file "$T/pwbad" --pin "$FP1"
expect_rc pw_bad 1
expect_one_error pw_bad "the server could not prove it holds its key $FP1"
PKMCOM_PASSWORD=hunter2 run pw_bad_env send "127.0.0.1:$PORT" --id 16 byte:1 --pin "$FP1"
expect_rc pw_bad_env 1
expect_one_error pw_bad_env "could not prove it holds its key"
run pw_none send "127.0.0.1:$PORT" --id 16 byte:1 --pin "$FP1"
expect_rc pw_none 1
expect_one_error pw_none "could not prove it holds its key"
# The server logs the failures with the step, never the password.
wait_for_line "$T/pw.err" 'handshake failed at step confirmation \(0xFF\)'
grep -q "the client's confirmation (0xFF) did not check at handshake step 5: its secret differs" "$T/pw.err" ||
    fail "serve: a wrong secret is not said: $(cat "$T/pw.err")"
for _ in $(seq 50); do [ "$(grep -c 'handshake failed' "$T/pw.err")" -ge 3 ] && break; sleep 0.1; done
[ "$(grep -c 'handshake failed' "$T/pw.err")" -eq 3 ] || fail "server: expected 3 handshake failures"
ok
grep -qE 'sesame|hunter2' "$T/pw.err" && fail "the server log holds a password"
ok
stop_server pw
# serve takes the password from the environment, and wipes it there: /proc/PID/environ no longer
# shows it. With --password it warns, and wipes its argument: /proc/PID/cmdline no longer shows it.
PKMCOM_PASSWORD=sesame start_server pwenv --listen 127.0.0.1:0 --key "$T/k1.pem"
grep -qF 'password required' "$T/pwenv.err" || fail "serve did not take PKMCOM_PASSWORD"
ok
tr '\0' '\n' <"/proc/$SERVER_PID/environ" | grep -q sesame && fail "serve: password in its environ"
ok
run pwenv_ok send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true --password-file "$T/pwfile" \
    --pin "$FP1"
expect_rc pwenv_ok 0
stop_server pwenv
start_server pwarg --listen 127.0.0.1:0 --key "$T/k1.pem" --password sesame
grep -q '^pkmcom: warning: --password puts the password' "$T/pwarg.err" || fail "serve --password: no warning"
ok
tr '\0' ' ' <"/proc/$SERVER_PID/cmdline" | grep -q sesame && fail "serve: password in its cmdline"
ok
run pwarg_ok send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true --password-file "$T/pwfile" \
    --pin "$FP1"
expect_rc pwarg_ok 0
stop_server pwarg

# ---- relay: a packet goes to every other client, not back ----
start_server relay --listen 127.0.0.1:0 --key "$T/k1.pem" --relay
# Two listeners that send nothing and wait for one packet each.
"$PKMCOM" send "127.0.0.1:$PORT" --id 1 --count 0 --expect 1 --pin "$FP1" >"$T/ra.out" 2>"$T/ra.err" &
RA=$!
BG_PIDS+=("$RA")
wait_for_line "$T/relay.err" '\[#1 .*connected'
"$PKMCOM" send "127.0.0.1:$PORT" --id 1 --count 0 --expect 1 --pin "$FP1" >"$T/rb.out" 2>"$T/rb.err" &
RB=$!
BG_PIDS+=("$RB")
wait_for_line "$T/relay.err" '\[#2 .*connected'
# The speaker expects nothing back (and must get nothing: --expect 1 --timeout 1 times out).
run rc send "127.0.0.1:$PORT" --id 16 byte:1 string:hi bool:true --pin "$FP1" --expect 1 --timeout 3
expect_rc rc 1
[ ! -s "$T/rc.out" ] || fail "relay: the sender got its own packet back: $(cat "$T/rc.out")"
ok
for p in RA RB; do
    pid=${!p}
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    wait "$pid"
    [ $? -eq 0 ] || fail "relay: listener $p failed: $(cat "$T/r${p:1:1}.err" 2>/dev/null)"
    ok
done
[ "$(cat "$T/ra.out")" = "$L1" ] || fail "relay: listener A got: $(cat "$T/ra.out")"
ok
[ "$(cat "$T/rb.out")" = "$L1" ] || fail "relay: listener B got: $(cat "$T/rb.out")"
ok
stop_server relay

# ---- --max-conns 1: a second client is turned away ----
start_server cap --listen 127.0.0.1:0 --key "$T/k1.pem" --max-conns 1
"$PKMCOM" send "127.0.0.1:$PORT" --id 1 --count 0 --expect 1 --pin "$FP1" >"$T/c1.out" 2>"$T/c1.err" &
C1=$!
BG_PIDS+=("$C1")
wait_for_line "$T/cap.err" '\[#1 .*connected'
run c2 send "127.0.0.1:$PORT" --id 1 --pin "$FP1"
expect_rc c2 1
expect_one_error c2 "closed the connection before sending its key"
# ---- SIGTERM with a client connected: the client is closed, serve exits 0 ----
stop_server cap
for _ in $(seq 100); do kill -0 "$C1" 2>/dev/null || break; sleep 0.1; done
wait "$C1"
[ $? -eq 1 ] || fail "the connected client did not fail when the server stopped"
ok
grep -qF "the server closed the connection after 0 of 1 replies" "$T/c1.err" ||
    fail "client of a stopped server: $(cat "$T/c1.err")"
ok

# ---- SIGINT stops it too; the default key is made in $PKMCOM_HOME and said so ----
start_server dflt --listen 127.0.0.1:0
grep -qF "created a new server key $PKMCOM_HOME/server_key.pem" "$T/dflt.err" ||
    fail "default key creation not reported: $(cat "$T/dflt.err")"
ok
[ "$(stat -c %a "$PKMCOM_HOME/server_key.pem")" = 600 ] || fail "default key mode"
ok
run dflt_fp fingerprint "$PKMCOM_HOME/server_key.pem"
grep -qF "fingerprint $(cat "$T/dflt_fp.out")" "$T/dflt.err" || fail "default key fingerprint"
ok
kill -INT "$SERVER_PID"
for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
wait "$SERVER_PID"
[ $? -eq 0 ] || fail "serve: nonzero exit after SIGINT"
ok
# A second start reuses it.
start_server dflt2 --listen 127.0.0.1:0
grep -qF "key $PKMCOM_HOME/server_key.pem" "$T/dflt2.err" || fail "default key not reused"
ok
grep -q 'created' "$T/dflt2.err" && fail "default key made twice"
ok
# Flow control: 100 packets of 60000 bytes (6 MB, more than the server queues for one client)
# all come back, in order, identical.
BIG=$(head -c 60000 /dev/zero | tr '\0' '\252' | od -An -v -tx1 | tr -d ' \n')
run big send "127.0.0.1:$PORT" --id 9 "bytes:$BIG" --count 100 --timeout 30
expect_rc big 0
[ "$(sort -u "$T/big.out" | wc -l)" -eq 1 ] && [ "$(wc -l <"$T/big.out")" -eq 100 ] ||
    fail "big: $(wc -l <"$T/big.out") lines, $(sort -u "$T/big.out" | wc -l) distinct"
ok
grep -q '^{"id":9,"hash":[0-9]*,"size":60000,"content":"aaaaaaaa' "$T/big.out" || fail "big: content"
ok
stop_server dflt2

# ---- serve usage and runtime errors ----
run s_nolisten serve
expect_rc s_nolisten 2
expect_one_error s_nolisten "missing --listen"
run s_badaddr serve --listen nowhere
expect_rc s_badaddr 2
expect_one_error s_badaddr "bad address"
run s_nokey serve --listen 127.0.0.1:0 --key "$T/none.pem"
expect_rc s_nokey 1
expect_one_error s_nokey "No such file or directory"
openssl pkey -in "$T/k1.pem" -pubout -out "$T/k1.pub.pem" 2>/dev/null
run s_pubkey serve --listen 127.0.0.1:0 --key "$T/k1.pub.pem"
expect_rc s_pubkey 1
expect_one_error s_pubkey "public key only"
start_server busy --listen 127.0.0.1:0 --key "$T/k1.pem"
run s_inuse serve --listen "127.0.0.1:$PORT" --key "$T/k1.pem"
expect_rc s_inuse 1
grep -q "^pkmcom: cannot listen on 127.0.0.1:$PORT: Address already in use" "$T/s_inuse.err" || fail "address in use: $(cat "$T/s_inuse.err")"
ok
stop_server busy

echo "cli_send_serve: $CHECKS checks passed"

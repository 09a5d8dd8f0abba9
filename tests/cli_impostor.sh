# SPDX-License-Identifier: MIT
# pkmcom send against the echoing impostor of issue 11 (it shows the real server's public key and
# echoes the client's bytes): refused at the confirmation, pinned, with known_hosts, with a password.
source "$(dirname "$0")/support/cli.sh"
IMPOSTOR=${PKM_BUILD_DIR:-$(dirname "$PKMCOM")}/test_engine_auth
[ -x "$IMPOSTOR" ] || fail "no impostor program at $IMPOSTOR"

# start_impostor NAME KEY [PORT]: runs the impostor (it stops when its stdin closes), sets PORT.
start_impostor() {
    local name=$1
    rm -f "$T/$name.in"
    mkfifo "$T/$name.in"
    "$IMPOSTOR" --impostor "$2" "${3:-0}" <"$T/$name.in" >"$T/$name.out" 2>"$T/$name.err" &
    BG_PIDS+=("$!")
    IMP_PID=$!
    exec 9>"$T/$name.in" # holds the impostor's stdin open
    PORT=
    for _ in $(seq 100); do
        PORT=$(sed -n 's/^impostor listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$T/$name.out")
        [ -n "$PORT" ] && return 0
        kill -0 "$IMP_PID" 2>/dev/null || fail "$name: impostor exited: $(cat "$T/$name.err")"
        sleep 0.1
    done
    fail "$name: no 'listening on' line within 10 s"
}

# stop_impostor NAME: closes its stdin; it must exit 0 and have echoed some bytes.
stop_impostor() {
    exec 9>&-
    wait "$IMP_PID" || fail "$1: impostor exit status $?"
    grep -qE '^echoed [1-9][0-9]*$' "$T/$1.out" || fail "$1: the impostor echoed nothing: $(cat "$T/$1.out")"
    ok
}

run keygen keygen -o "$T/server.pem"
expect_rc keygen 0
FP=$(cat "$T/keygen.out")

# ---- pinned: the impostor shows exactly the pinned key, and is refused at the confirmation ----
start_impostor imp "$T/server.pem"
run pinned send "127.0.0.1:$PORT" --id 16 byte:1 --pin "$FP"
expect_rc pinned 1
expect_one_error pinned "the server could not prove it holds its key"
grep -qF "confirmation (0xFF)" "$T/pinned.err" || fail "pinned: step not named: $(cat "$T/pinned.err")"
ok
run pinned_pw send "127.0.0.1:$PORT" --id 16 byte:1 --pin "$FP" --password sesame
expect_rc pinned_pw 1
expect_one_error pinned_pw "the server could not prove it holds its key"
stop_impostor imp

# ---- known_hosts: the real server is recorded, then the impostor takes its port ----
KH="$T/known_hosts"
start_server real --listen 127.0.0.1:0 --key "$T/server.pem"
run first send "127.0.0.1:$PORT" --id 16 byte:1 --known-hosts "$KH"
expect_rc first 0
RPORT=$PORT
stop_server real
start_impostor imp2 "$T/server.pem" "$RPORT"
[ "$PORT" = "$RPORT" ] || fail "impostor on port $PORT, expected $RPORT"
run kh send "127.0.0.1:$PORT" --id 16 byte:1 --known-hosts "$KH"
expect_rc kh 1
expect_one_error kh "the server could not prove it holds its key"
stop_impostor imp2

echo "cli_impostor: $CHECKS checks passed"

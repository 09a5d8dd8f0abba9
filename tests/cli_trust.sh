# SPDX-License-Identifier: MIT
# pkmcom send's trust decisions: known_hosts fails closed (malformed or conflicting entries,
# --strict), and an echoing impostor showing the real server's public key is refused at step 5.
source "$(dirname "$0")/support/cli.sh"
SRC=${PKM_SOURCE_DIR:-$(dirname "$0")/..}
DATA=$SRC/tests/data
PY=/usr/bin/python3
"$PY" -c 'import cryptography' 2>/dev/null ||
    fail "$PY cannot import cryptography (Debian python3-cryptography: scripts/deps.sh test)"

cp "$DATA/server_key.pem" "$T/real.pem"
chmod 600 "$T/real.pem"
run fp fingerprint "$T/real.pem"
FP=$(cat "$T/fp.out")
OTHER=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA # well-formed, no key has it

# ---- known_hosts against the real server ----
start_server real --listen 127.0.0.1:0 --key "$T/real.pem"
HP="127.0.0.1:$PORT"
# --strict: an unknown server is refused, showing its key and how to trust it; nothing recorded.
run strict_unknown send "$HP" --id 1 --known-hosts "$T/kh" --strict
expect_rc strict_unknown 1
expect_one_error strict_unknown "$HP is not in $T/kh and --strict refuses unknown servers"
grep -qF -- "--pin $FP" "$T/strict_unknown.err" || fail "--strict: the offered key is not shown"
ok
[ ! -e "$T/kh" ] || fail "--strict recorded the server"
ok
# Default: trust on first use, said on stderr; then --strict accepts it.
run tofu send "$HP" --id 1 --known-hosts "$T/kh"
expect_rc tofu 0
grep -qF "first contact with $HP: recorded its key $FP" "$T/tofu.err" || fail "no first-contact line"
ok
run strict_known send "$HP" --id 1 --known-hosts "$T/kh" --strict
expect_rc strict_known 0
expect_out strict_known '{"id":1,"hash":31,"size":0,"content":""}'
run strict_pin send "$HP" --id 1 --pin "$FP" --strict
expect_rc strict_pin 2
expect_one_error strict_pin "not used with --pin"

# A malformed entry for this host is an error naming the file and line; the file is unchanged.
kh_case() { # NAME CONTENT EXPECTED-SUBSTRING
    printf '%b' "$2" >"$T/$1.kh"
    cp "$T/$1.kh" "$T/$1.kh.orig"
    run "$1" send "$HP" --id 1 --known-hosts "$T/$1.kh"
    expect_rc "$1" 1
    expect_one_error "$1" "$3"
    cmp -s "$T/$1.kh" "$T/$1.kh.orig" || fail "$1: known_hosts changed: $(cat "$T/$1.kh")"
    ok
}
kh_case short "$HP SHA256:tooshort\n" "$T/short.kh line 1: the entry for $HP is malformed"
kh_case nokey "# a comment\n\n$HP\n" "$T/nokey.kh line 3: the entry for $HP is malformed"
kh_case junk "$HP ${FP}x\n" "line 1: the entry for $HP is malformed"
kh_case md5 "$HP MD5:00:11:22\n" "line 1: the entry for $HP is malformed"
kh_case long "$HP SHA256:$(head -c 1200 /dev/zero | tr '\0' A)\n" "line 1: the entry for $HP is too long"
kh_case twice "$HP $FP\n$HP $OTHER\n" "lines 1 and 2 record different keys for $HP"
kh_case twice2 "$HP $OTHER\n$HP $FP\n" "lines 1 and 2 record different keys for $HP"
# The same key twice is fine; a malformed line for another server is skipped with a warning.
printf '%s %s\n%s %s\n' "$HP" "$FP" "$HP" "$FP" >"$T/dup.kh"
run dup send "$HP" --id 1 --known-hosts "$T/dup.kh"
expect_rc dup 0
printf 'otherhost:1 SHA256:bad\n127.0.0.2:%s\n' "$PORT" >"$T/other.kh"
run other send "$HP" --id 1 --known-hosts "$T/other.kh"
expect_rc other 0
grep -qF "warning: $T/other.kh line 1: malformed line, ignored" "$T/other.err" || fail "no warning"
ok
grep -qF "first contact with $HP" "$T/other.err" || fail "other host's bad line stopped first use"
ok
# A changed key: both fingerprints, the file and the line to edit.
printf '# servers\n%s %s\n' "$HP" "$OTHER" >"$T/changed.kh"
run changed send "$HP" --id 1 --known-hosts "$T/changed.kh"
expect_rc changed 1
expect_one_error changed "THE SERVER KEY OF $HP HAS CHANGED: $T/changed.kh line 2 records $OTHER but the server now offers $FP"
stop_server real

# A password at first contact: it works (trust on first use stays automatic), with a warning
# that the password went to a server not verified yet; a known server gets no warning.
printf 'sesame\n' >"$T/pw"
start_server realpw --listen 127.0.0.1:0 --key "$T/real.pem" --password-file "$T/pw"
run pw_first send "127.0.0.1:$PORT" --id 1 --known-hosts "$T/pw.kh" --password-file "$T/pw"
expect_rc pw_first 0
grep -qF "warning: first contact with 127.0.0.1:$PORT: the password goes to a server whose key $FP nothing has verified yet" \
    "$T/pw_first.err" || fail "no first-contact password warning: $(cat "$T/pw_first.err")"
ok
run pw_known send "127.0.0.1:$PORT" --id 1 --known-hosts "$T/pw.kh" --password-file "$T/pw"
expect_rc pw_known 0
[ ! -s "$T/pw_known.err" ] || fail "known server with a password: $(cat "$T/pw_known.err")"
ok
stop_server realpw

# ---- the echoing impostor: the real server's public key, random KeyShare, echoes all ----
# start_impostor NAME: sets IPORT and IMP_PID.
start_impostor() {
    "$PY" "$SRC/tests/interop/impostor.py" --port 0 --key "$DATA/server_key.pub.pem" \
        --timeout 10 >"$T/$1.out" 2>"$T/$1.err" &
    IMP_PID=$!
    BG_PIDS+=("$IMP_PID")
    IPORT=
    for _ in $(seq 100); do
        IPORT=$(sed -n 's/^PORT \([0-9][0-9]*\)$/\1/p' "$T/$1.out")
        [ -n "$IPORT" ] && return 0
        kill -0 "$IMP_PID" 2>/dev/null || fail "$1: impostor exited: $(cat "$T/$1.err")"
        sleep 0.1
    done
    fail "$1: impostor printed no port"
}
# impostor_done NAME: it exited 0 after echoing some bytes (the client's 0xFF at least: 16).
impostor_done() {
    wait "$IMP_PID"
    [ $? -eq 0 ] || fail "$1: impostor failed: $(cat "$T/$1.err")"
    n=$(sed -n 's/^ECHOED \([0-9]*\)$/\1/p' "$T/$1.out")
    [ -n "$n" ] && [ "$n" -ge 16 ] || fail "$1: the impostor echoed ${n:-nothing}"
    ok
}
start_impostor imp1
run imp_pin send "127.0.0.1:$IPORT" --id 16 byte:1 --pin "$FP" --timeout 5
expect_rc imp_pin 1
expect_one_error imp_pin "the server could not prove it holds its key $FP (pinned)"
impostor_done imp1
# Unpinned, with known_hosts recording the real server's key for that address.
start_impostor imp2
printf '127.0.0.1:%s %s\n' "$IPORT" "$FP" >"$T/imp.kh"
cp "$T/imp.kh" "$T/imp.kh.orig"
run imp_kh send "127.0.0.1:$IPORT" --id 16 byte:1 --known-hosts "$T/imp.kh" --timeout 5
expect_rc imp_kh 1
expect_one_error imp_kh "the server could not prove it holds its key $FP (as known_hosts records)"
cmp -s "$T/imp.kh" "$T/imp.kh.orig" || fail "known_hosts changed after the impostor"
ok
impostor_done imp2
# First contact (no known_hosts entry) with the impostor: refused the same way, nothing recorded.
start_impostor imp4
run imp_first send "127.0.0.1:$IPORT" --id 16 byte:1 --known-hosts "$T/first.kh" --timeout 5
expect_rc imp_first 1
expect_one_error imp_first "could not prove it holds its key $FP (first contact: not recorded)"
[ ! -e "$T/first.kh" ] || fail "first contact with the impostor was recorded: $(cat "$T/first.kh")"
ok
impostor_done imp4
# With a password too: it changes nothing for the impostor.
start_impostor imp3
PKMCOM_PASSWORD=sesame run imp_pw send "127.0.0.1:$IPORT" --id 16 byte:1 --pin "$FP" --timeout 5
expect_rc imp_pw 1
expect_one_error imp_pw "could not prove it holds its key"
impostor_done imp3

echo "cli_trust: $CHECKS checks passed"

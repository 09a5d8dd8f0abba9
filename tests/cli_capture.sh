# SPDX-License-Identifier: MIT
# The capture test: tcpdump on loopback while `pkmcom send` talks to `pkmcom serve` (password) and
# pkm_capture_peer runs a session with a re-establishment, with PKMCOM_KEYLOGFILE set; then tshark
# with the plugin (and pkmcom dump, when built) must show exactly the packets that were sent.
source "$(dirname "$0")/support/cli.sh"
BUILD=${PKM_BUILD_DIR:-$(dirname "$PKMCOM")}
PLUGIN="$BUILD/wireshark/plugins/4.0/epan/pkmcom.so"
PEER="$BUILD/wireshark/pkm_capture_peer"

skip() {
    echo "SKIP: cli_capture: $* (the CI installs everything: scripts/deps.sh all, run as root)"
    exit 0
}
[ "$(id -u)" -eq 0 ] || skip "not root: cannot capture on loopback"
command -v tcpdump >/dev/null || skip "no tcpdump (apt-get install tcpdump)"
command -v tshark >/dev/null || skip "no tshark (apt-get install tshark)"
command -v setpriv >/dev/null || skip "no setpriv (util-linux)"
[ -f "$PLUGIN" ] || skip "the Wireshark plugin is not built ($PLUGIN; needs wireshark-dev)"
[ -x "$PEER" ] || skip "no $PEER"

chmod 755 "$T"
# Wireshark loads personal plugins only when not run as root: tshark runs as nobody, with a home
# of its own holding the plugin.
WSHOME="$T/wshome"
mkdir -p "$WSHOME/.local/lib/wireshark/plugins/4.0/epan"
cp "$PLUGIN" "$WSHOME/.local/lib/wireshark/plugins/4.0/epan/"
chmod -R a+rX "$WSHOME"
tshark_() {
    HOME="$WSHOME" timeout 60 setpriv --reuid=nobody --regid=nogroup --clear-groups \
        tshark -n -r "$T/cap.pcap" "$@" 2>"$T/tshark.err"
}

# A free port, fixed for the whole test.
PORT=
for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    if ! ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null | grep -q .; then PORT=$p; break; fi
done
[ -n "$PORT" ] || fail "no free port"

run keygen keygen -o "$T/key.pem"
expect_rc keygen 0
FP=$(cat "$T/keygen.out")

timeout 60 tcpdump -i lo -n -U --immediate-mode -s 0 -w "$T/cap.pcap" "tcp port $PORT" 2>"$T/tcpdump.err" &
TCPDUMP=$!
BG_PIDS+=("$TCPDUMP")
for _ in $(seq 100); do grep -q "listening on" "$T/tcpdump.err" && break; sleep 0.1; done
grep -q "listening on" "$T/tcpdump.err" || fail "tcpdump did not start"
ok

export PKMCOM_KEYLOGFILE="$T/keys.log"
# Session 1: the tools, with a password: one packet, echoed.
timeout 20 "$PKMCOM" serve --listen "127.0.0.1:$PORT" --key "$T/key.pem" --password pw --print \
    >"$T/serve.out" 2>"$T/serve.err" &
SERVE=$!
BG_PIDS+=("$SERVE")
for _ in $(seq 100); do grep -q "listening on" "$T/serve.err" && break; sleep 0.1; done
grep -q "listening on" "$T/serve.err" || fail "serve did not start"
run send send "127.0.0.1:$PORT" --pin "$FP" --password pw --id 0x20 string:hello uint:7 bool:true
expect_rc send 0
# A second connection: the Complete Definition's 0x05 (Reason 1), which serve --print names.
run send2 send "127.0.0.1:$PORT" --pin "$FP" --password pw --id 5 byte:1
expect_rc send2 0
kill -TERM "$SERVE"
wait "$SERVE" 2>/dev/null
cat "$T/send.out" "$T/send2.out" >"$T/sends.out"
[ "$(sed 's/,"hash_ok":.*}$/}/' "$T/serve.out")" = "$(cat "$T/sends.out")" ] || fail "serve --print and send disagree"
ok
grep -qxF '{"id":5,"hash":156,"size":1,"content":"01","hash_ok":true,"name":"Re-establish Secret","fields":{"Reason":"1 (Password)"}}' "$T/serve.out" ||
    fail "serve --print does not name the Complete Definition's fields: $(cat "$T/serve.out")"
ok
# Session 2: Complete Definition packets and a re-establishment (with a second password).
timeout 20 "$PEER" "$PORT" "$T/key.pem" >"$T/peer.out" 2>"$T/peer.err" || fail "pkm_capture_peer failed"
ok
unset PKMCOM_KEYLOGFILE
sleep 1
kill -INT "$TCPDUMP"
wait "$TCPDUMP" 2>/dev/null
[ -s "$T/cap.pcap" ] || fail "empty capture"
ok

# The key log: mode 0600, two lines per derivation (client and server are both this machine's),
# four derivations (the two connections of session 1, session 2 and its re-establishment).
[ "$(stat -c %a "$T/keys.log")" = 600 ] || fail "key log mode $(stat -c %a "$T/keys.log")"
ok
[ "$(grep -c '^PKMCOM_KEYS_V2 [0-9a-f]\{32\} [0-9a-f]\{64\} [0-9a-f]\{64\} [0-9a-f]\{32\}$' "$T/keys.log")" -eq 8 ] ||
    fail "key log: $(cat "$T/keys.log")"
ok
[ "$(sort -u "$T/keys.log" | wc -l)" -eq 4 ] || fail "key log: expected 4 distinct lines"
ok
cp "$T/keys.log" "$T/keys.ro"
chmod 644 "$T/keys.ro" "$T/cap.pcap"

# What was sent, as "dir id hash size content" lines, in order per session.
{
    sed -E 's/^\{"id":([0-9]+),"hash":([0-9]+),"size":([0-9]+),"content":"([0-9a-f]*)"\}$/c2s \1 \2 \3 \4/' "$T/sends.out"
    sed -E 's/^\{"id":([0-9]+),"hash":([0-9]+),"size":([0-9]+),"content":"([0-9a-f]*)"(,.*)?\}$/s2c \1 \2 \3 \4/' "$T/serve.out"
    sed -E 's/^\{"dir":"(c2s|s2c)","id":([0-9]+),"hash":([0-9]+),"size":([0-9]+),"content":"([0-9a-f]*)"\}$/\1 \2 \3 \4 \5/' "$T/peer.out"
} >"$T/sent.txt"
[ "$(wc -l <"$T/sent.txt")" -eq 8 ] || fail "sent: $(cat "$T/sent.txt")"
ok

# tshark with the key log: every application packet (not the 0xFF confirmations), in capture
# order; one frame may carry several packets (fields are then comma-separated).
tshark_ -o "pkmcom.keylog_file:$T/keys.ro" -Y pkmcom.id -T fields -E occurrence=a -E 'separator=|' \
    -e tcp.srcport -e pkmcom.id -e pkmcom.hash -e pkmcom.size -e pkmcom.content >"$T/ts.raw" ||
    fail "tshark failed: $(cat "$T/tshark.err")"
while IFS='|' read -r sport ids hashes sizes contents; do
    IFS=, read -r -a ia <<<"$ids"
    IFS=, read -r -a ha <<<"$hashes"
    IFS=, read -r -a sa <<<"$sizes"
    IFS=, read -r -a ca <<<"$contents"
    ci=0
    for k in "${!ia[@]}"; do
        id=$((ia[k]))
        [ "$id" -eq 255 ] && continue
        dir=c2s
        [ "$sport" = "$PORT" ] && dir=s2c
        c=
        [ "${sa[k]}" -gt 0 ] && { c=${ca[ci]}; ci=$((ci + 1)); }
        echo "$dir $id $((ha[k])) ${sa[k]} $c"
    done
done <"$T/ts.raw" >"$T/ts.txt"
# Each session's order per direction is what counts; sort both sides the same way.
[ -n "${KEEP_CAPTURE:-}" ] && { rm -rf "$KEEP_CAPTURE"; cp -r "$T" "$KEEP_CAPTURE"; }
diff <(sort "$T/sent.txt") <(sort "$T/ts.txt") >"$T/diff.err" || fail "tshark shows other packets than were sent"
ok

# The same packets with the heuristic off, by the port preference and by "Decode As".
for how in "-o pkmcom.tcp.port:$PORT" "-d tcp.port==$PORT,pkmcom"; do
    # shellcheck disable=SC2086
    tshark_ --disable-heuristic pkmcom_tcp $how -o "pkmcom.keylog_file:$T/keys.ro" -Y pkmcom.id \
        -T fields -E occurrence=a -E 'separator=|' -e tcp.srcport -e pkmcom.id -e pkmcom.hash \
        -e pkmcom.size -e pkmcom.content >"$T/ts2.raw" || fail "tshark $how failed: $(cat "$T/tshark.err")"
    cmp -s "$T/ts.raw" "$T/ts2.raw" || fail "tshark $how shows other packets"
    ok
done
tshark_ --disable-heuristic pkmcom_tcp -o "pkmcom.keylog_file:$T/keys.ro" -Y pkmcom >"$T/ts3.raw"
[ ! -s "$T/ts3.raw" ] || fail "pkmcom dissected with neither heuristic nor port"
ok

# The Complete Definition's fields by name, with their Hash checked.
tshark_ -o "pkmcom.keylog_file:$T/keys.ro" -Y pkmcom.field -T fields -E occurrence=a -E 'separator=|' \
    -e pkmcom.name -e pkmcom.hash.good -e pkmcom.field >"$T/fields.txt" || fail "tshark failed"
for want in 'Connect Request|1|PkmVersion: 1.0,TrainerInfo: "{\"trainer\":\"Red\"}",SentryAccount: 01234567-89ab-cdef-fedc-ba9876543210' \
    'Re-establish Secret|1|Reason: 1 (Password)' \
    'Keep Alive (Serverbound)|1|Keep Alive Id: 42,Encoding Time: 1700000000.000000005s,Server Packets Recieved: 1,Last Packet Id: 5,Last Packet Hashcode: 155' \
    'Connect Success|1|Server Info: "{\"name\":\"capture\"}",Available Actions: 0x5 (Trade|IRC)'; do
    grep -qxF -- "$want" "$T/fields.txt" || fail "tshark lacks the fields: $want
got: $(cat "$T/fields.txt")"
    ok
done
# The re-establishment was followed in both directions, and no expert error was raised.
[ "$(tshark_ -o "pkmcom.keylog_file:$T/keys.ro" -Y 'pkmcom.keyshare.rekey == 1 && pkmcom.keyshare.keys_found == 1' | wc -l)" -eq 2 ] ||
    fail "the re-establishment's KeyShares were not both found"
ok
[ "$(tshark_ -o "pkmcom.keylog_file:$T/keys.ro" -Y '_ws.expert.severity >= warning && pkmcom' | wc -l)" -eq 0 ] ||
    fail "expert warnings with the right key log"
ok

# Without the key log: ciphertext only, and it says why.
[ "$(tshark_ -Y pkmcom.id | wc -l)" -eq 0 ] || fail "packets decrypted without a key log"
ok
[ "$(tshark_ -Y pkmcom.encrypted | wc -l)" -gt 0 ] || fail "no ciphertext shown without a key log"
ok
tshark_ -Y pkmcom.keyshare.iv -T fields -e _ws.expert.message >"$T/nokl.txt"
grep -q "No key log" "$T/nokl.txt" || fail "no note about the missing key log: $(cat "$T/nokl.txt")"
ok

# A wrong key log (right format, other keys): nothing decrypted, and each KeyShare says so (the
# first of each direction of the three connections; what follows is opaque).
printf '# wrong keys\nPKMCOM_KEYS_V2 %s %s %s %s\n' "$(printf '%032d' 0)" "$(printf '%064d' 1)" \
    "$(printf '%064d' 2)" "$(printf '%032d' 3)" >"$T/wrong.log"
chmod 644 "$T/wrong.log"
[ "$(tshark_ -o "pkmcom.keylog_file:$T/wrong.log" -Y pkmcom.id | wc -l)" -eq 0 ] ||
    fail "packets decrypted with a wrong key log"
ok
tshark_ -o "pkmcom.keylog_file:$T/wrong.log" -Y pkmcom.keyshare.iv -T fields -e _ws.expert.message >"$T/wrong.txt"
[ "$(grep -c "No key-log line matches" "$T/wrong.txt")" -eq 6 ] ||
    fail "wrong key log: expected 6 KeyShares without keys: $(cat "$T/wrong.txt")"
ok

# pkmcom dump: the same packets, in the JSON of send / serve --print plus dir, ts and the fields.
timeout 30 "$PKMCOM" dump --keylog "$T/keys.log" "$T/cap.pcap" --port "$PORT" >"$T/dump.out" 2>"$T/dump.err"
RC=$?
if grep -q "without libpcap" "$T/dump.err"; then
    echo "SKIP: cli_capture: pkmcom dump was built without libpcap (libpcap-dev): dump not checked"
else
    expect_rc dump 0
    sed -E 's/^\{"id":([0-9]+),"hash":([0-9]+),"size":([0-9]+),"content":"([0-9a-f]*)","dir":"(c2s|s2c)","ts":[0-9]+\.[0-9]{6}(,.*)?\}$/\5 \1 \2 \3 \4/' \
        "$T/dump.out" >"$T/dump.txt"
    diff "$T/ts.txt" "$T/dump.txt" >"$T/diff.err" || fail "pkmcom dump and tshark disagree"
    ok
    for want in '"name":"Re-establish Secret","fields":{"Reason":"1 (Password)"}' \
        '"Available Actions":"0x5 (Trade|IRC)"' '"SentryAccount":"01234567-89ab-cdef-fedc-ba9876543210"'; do
        grep -qF -- "$want" "$T/dump.out" || fail "dump lacks $want"
        ok
    done
    timeout 30 "$PKMCOM" dump --keylog "$T/wrong.log" "$T/cap.pcap" >"$T/dumpw.out" 2>"$T/dumpw.err"
    RC=$?
    expect_rc dumpw 1
    [ ! -s "$T/dumpw.out" ] || fail "dump decrypted something with a wrong key log"
    [ "$(grep -c 'no key-log line matches its KeyShare' "$T/dumpw.err")" -eq 6 ] ||
        fail "dump with a wrong key log: $(cat "$T/dumpw.err")"
    ok
fi

echo "cli_capture: $CHECKS checks passed"

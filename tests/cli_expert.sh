# SPDX-License-Identifier: MIT
# A synthetic capture (tests/support/pkm_synth_pcap.py) with a Hash that does not check, a bad
# padding and a Size over the limit, and server messages cut across segments: the plugin's expert
# info and pkmcom dump must report each fault and reassemble the rest.
source "$(dirname "$0")/support/cli.sh"
SRC=${PKM_SOURCE_DIR:-$(dirname "$0")/..}
BUILD=${PKM_BUILD_DIR:-$(dirname "$PKMCOM")}
PLUGIN="$BUILD/wireshark/plugins/4.0/epan/pkmcom.so"

python3 -c 'import cryptography' 2>/dev/null || { echo "SKIP: cli_expert: no python3-cryptography"; exit 0; }
chmod 755 "$T"
python3 "$SRC/tests/support/pkm_synth_pcap.py" "$T/s.pcap" "$T/k.log" || fail "pkm_synth_pcap.py failed"
chmod 644 "$T/s.pcap" "$T/k.log"
ok

# pkmcom dump: the good packet with its fields, the bad Hash flagged, the other two reported.
timeout 30 "$PKMCOM" dump --keylog "$T/k.log" "$T/s.pcap" >"$T/dump.out" 2>"$T/dump.err"
RC=$?
if grep -q "without libpcap" "$T/dump.err"; then
    echo "SKIP: cli_expert: pkmcom dump built without libpcap"
else
    expect_rc dump 1
    grep -qF '"id":1,"hash":122110,"size":8,"content":"00027b7d00000001","dir":"s2c","ts":1700000006.000000,"hash_ok":true,"name":"Connect Success","fields":{"Server Info":"\"{}\"","Available Actions":"0x1 (Trade)"}}' "$T/dump.out" ||
        fail "dump: no good Connect Success: $(cat "$T/dump.out")"
    ok
    grep -qF '"id":5,"hash":157,"size":1,"content":"01","dir":"c2s","ts":1700000008.000000,"hash_ok":false' "$T/dump.out" ||
        fail "dump: the bad Hash is not flagged"
    ok
    [ "$(wc -l <"$T/dump.out")" -eq 2 ] || fail "dump: expected 2 lines"
    ok
    for want in "Hash does not check" "bad padding" "Size is negative or over the limit"; do
        grep -qF "$want" "$T/dump.err" || fail "dump does not report: $want"
        ok
    done
fi

command -v tshark >/dev/null || { echo "SKIP: cli_expert: no tshark, plugin not checked ($CHECKS checks passed)"; exit 0; }
[ -f "$PLUGIN" ] || { echo "SKIP: cli_expert: plugin not built, not checked ($CHECKS checks passed)"; exit 0; }
WSHOME="$T/wshome"
mkdir -p "$WSHOME/.local/lib/wireshark/plugins/4.0/epan"
cp "$PLUGIN" "$WSHOME/.local/lib/wireshark/plugins/4.0/epan/"
chmod -R a+rX "$WSHOME"
# Wireshark ignores personal plugins when run as root: then run tshark as nobody.
AS=()
if [ "$(id -u)" -eq 0 ]; then
    command -v setpriv >/dev/null || { echo "SKIP: cli_expert: root without setpriv"; exit 0; }
    AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi
HOME="$WSHOME" timeout 60 "${AS[@]}" tshark -n -r "$T/s.pcap" -o "pkmcom.keylog_file:$T/k.log" \
    -T fields -E 'separator=|' -e pkmcom.id -e pkmcom.hash.good -e _ws.expert.message \
    -Y pkmcom.id >"$T/ts.out" 2>"$T/ts.err" || fail "tshark failed"
for want in '0xff||' '0xff,0x01|1|' '0x05|0|Hash 0x0000009d does not check against the Re-establish Secret schema' \
    '0x30||Bad PKCS#7 padding: a receiver closes the connection' \
    '0x31||Size 2147483632 is over the limit (pref pkmcom.max_size): the rest of this direction cannot be followed'; do
    grep -qxF -- "$want" "$T/ts.out" || fail "tshark lacks: $want
got: $(cat "$T/ts.out")"
    ok
done
echo "cli_expert: $CHECKS checks passed"

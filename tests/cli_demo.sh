# SPDX-License-Identifier: MIT
# pkmcom demo: runs with no arguments and no setup, exits 0, and shows the handshake's real
# messages (ServerKey 4 + 294 bytes, KeyShares of 528 bytes, the 0xFF confirmation), typed
# packets, the password re-establishment, the wrong password refused, and the summary.
source "$(dirname "$0")/support/cli.sh"

run demo demo
expect_rc demo 0
[ ! -s "$T/demo.err" ] || fail "demo wrote to stderr: $(cat "$T/demo.err")"
ok
want() {
    grep -qF -- "$1" "$T/demo.out" || fail "demo output lacks: $1"
    ok
}
want "<- ServerKey: 4-byte length (294) + 294 bytes of DER SubjectPublicKeyInfo"
want "30 82 01 22 30 0D 06 09 2A 86 48 86 F7 0D 01 01 01 05 00"
want ": the pinned one"
want "-> ClientKey: 4 + 294 bytes"
want "-> KeyShare: 528 bytes"
want "<- KeyShare: 528 bytes"
want "13 bytes FF 50 4B 6B E1 00 00 00 04 50 4B 4D 00"
want "AES-256-CBC encrypted under K_cs with PKCS#7 padding: 16 bytes"
want "decrypt under K_sc to the same 0xFF packet"
want "checked the client's confirmation and answered it: established"
want "-> 0x20 Chat: Text \"Hello from pkmcom demo!\""
want "<- 0x20 echo, decoded with the Chat schema (Hash checked)"
want "-> 0x21 Trade Offer: Species 25, Level 42, Shiny true, Weight 6, Nature 0x0b0e0a0d"
# Trade Offer content, by hand: Species 25 = 00 19, Level 42 = 2A, Shiny 01, Weight 6.0f =
# 40 C0 00 00, Nature 0B 0E 0A 0D. Hash: hashsum(25, 42, 1337, 0x40C00000, hashsum(11,14,10,13))
# where hashsum(11,14,10,13) = ((11*31+14)*31+10)*31+13 = 341478; fold:
# ((((25*31+42)*31+1337)*31+0x40C00000)*31+341478) = 0xD8CC340E (mod 2^32); + 0x21*31 = 0xD8CC380D.
# (The demo's Chat and Trade Offer use ids 0x20 and 0x21, which the Complete Definition leaves free.)
want "Hash 0xD8CC380D, Size 12, content 00 19 2A 01 40 C0 00 00 0B 0E 0A 0D"
want "32 bytes on the wire: ((9 + 12) / 16 + 1) * 16"
want "<- 0x05 Re-establish Secret, Reason 1 (Password): the server requires a password"
want "established again, under K' derived with the password"
want "re-establishment failed at step confirmation (0xFF)"
want "<- KeyShare: 528 bytes from the server"
want "-> confirmation: the 0xFF packet under K'_cs"
want "client2 re-establishment refused after"
want "Summary (real timings on this machine)"
want "typed packets echoed: 3"
want "server: 2 connections, 2 handshakes ok, 1 failed, 5 packets in, 5 out"
# The fingerprint shown for the server's key is the one the client pinned and saw.
fp=$(sed -n 's/.*server  generated its long-term RSA-2048 key in [0-9.]* ms: \(SHA256:[A-Za-z0-9+\/]*\)$/\1/p' "$T/demo.out")
[ -n "$fp" ] || fail "demo: no server fingerprint line"
ok
want "fingerprint $fp: the pinned one"

# The codec-only demo.
run codec demo --codec
expect_rc codec 0
grep -qF "Decoded (Size, Hash and every precondition checked)" "$T/codec.out" || fail "demo --codec"
ok
run bad demo --frob
expect_rc bad 2
expect_one_error bad "unexpected argument '--frob'"

echo "cli_demo: $CHECKS checks passed"

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Writes tests/interop/sample-vectors.json (pkmpeer.py check-vectors format) with the openssl CLI
# only, so its expected values do not come from pkmpeer.py nor from libpkmcom. Run by hand.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data="$here/../data"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

hex() { od -An -v -tx1 | tr -d ' \n'; }
unhex() { sed 's/\([0-9a-f][0-9a-f]\)/\\x\1/g' | xargs -0 printf '%b'; }
seq_bytes() { # seq_bytes START COUNT: bytes START, START+1, ... (mod 256), as hex
  local i out=""
  for ((i = 0; i < $2; i++)); do out+=$(printf '%02x' $((($1 + i) % 256))); done
  echo "$out"
}

# --- kdf (WIRE-PROFILE version 2): K_cs = SHA-256(M || S || 'C'), K_sc = SHA-256(M || S || 'S'),
# without a secret and with S = "hunter2"
dkey() { # dkey MHEX SECRET C|S: the direction key
  (echo -n "$1" | unhex; echo -n "$2$3") | openssl dgst -sha256 -binary | hex
}
m=$(seq_bytes 0 256)
kcs_plain=$(dkey "$m" "" C)
ksc_plain=$(dkey "$m" "" S)
secret=$(echo -n hunter2 | hex)
kcs_secret=$(dkey "$m" hunter2 C)
ksc_secret=$(dkey "$m" hunter2 S)

# --- handshake: client KeyShare under the server key, server KeyShare under a client key
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/client.pem" 2>/dev/null
openssl pkey -in "$tmp/client.pem" -pubout -out "$tmp/client.pub.pem"
mc=$(seq_bytes 1 256)
ms=$(seq_bytes 7 256)
ivc=$(seq_bytes 100 16)
ivs=$(seq_bytes 200 16)
enc() { # enc PUBPEM HEX: RSAES-PKCS1-v1_5 ciphertext
  echo -n "$2" | unhex | openssl pkeyutl -encrypt -pubin -inkey "$1" \
    -pkeyopt rsa_padding_mode:pkcs1 | hex
}
ks_c=$(enc "$data/server_key.pub.pem" "${mc:0:256}")$(enc "$data/server_key.pub.pem" "${mc:256:256}")$ivc
ks_s=$(enc "$tmp/client.pub.pem" "${ms:0:256}")$(enc "$tmp/client.pub.pem" "${ms:256:256}")$ivs
xorhex() { # byte-wise XOR of two equal-length hex strings
  local i out=""
  for ((i = 0; i < ${#1}; i += 2)); do out+=$(printf '%02x' $((16#${1:i:2} ^ 16#${2:i:2}))); done
  echo "$out"
}
m_hs=$(xorhex "$mc" "$ms")
iv_hs=$(xorhex "$ivc" "$ivs")
kcs_hs=$(dkey "$m_hs" hunter2 C)
ksc_hs=$(dkey "$m_hs" hunter2 S)

# --- channel: three packets on one chain. Plaintexts with PKCS#7 padding, written by hand:
#   0xFF confirmation: ff 504b6be1 00000004 504b4d00 + 03 03 03              (16 bytes)
#   trigger Id 5, empty: Hash 5*31 = 155 = 0x9b: 05 0000009b 00000000 + 7 x 07 (16 bytes)
#   Id 1, "hello": hashsum = ((((104*31+101)*31+108)*31+108)*31+111) = 99162322,
#     Hash = 31 + 99162322 = 99162353 = 0x05e918f1 (recomputed below with shell arithmetic)
h=0
for b in 104 101 108 108 111; do h=$(((h * 31 + b) & 0xffffffff)); done
hash_hello=$(printf '%08x' $(((31 + h) & 0xffffffff)))
p1="ff504b6be100000004504b4d00030303"
p2="050000009b00000000$(printf '07%.0s' 1 2 3 4 5 6 7)"
p3="01${hash_hello}0000000568656c6c6f0202" # 9 + 5 = 14 bytes, 2 bytes of 02
kc=$(seq_bytes 32 32)
ivch=$(seq_bytes 64 16)
ct=$(echo -n "$p1$p2$p3" | unhex | openssl enc -aes-256-cbc -nopad -K "$kc" -iv "$ivch" | hex)

jq_pem() { awk '{printf "%s\\n", $0}' "$1"; }
cat >"$here/sample-vectors.json" <<EOF
{
  "kdf": [
    {"m": "$m", "k_cs": "$kcs_plain", "k_sc": "$ksc_plain"},
    {"m": "$m", "secret": "$secret", "k_cs": "$kcs_secret", "k_sc": "$ksc_secret"}
  ],
  "keyshare": [
    {"private_key_file": "../data/server_key.pem", "keyshare": "$ks_c", "m": "$mc", "iv": "$ivc"}
  ],
  "handshake": [
    {"server_key_file": "../data/server_key.pem", "client_key_pem": "$(jq_pem "$tmp/client.pem")",
     "client_keyshare": "$ks_c", "server_keyshare": "$ks_s", "secret": "$secret",
     "m": "$m_hs", "k_cs": "$kcs_hs", "k_sc": "$ksc_hs", "iv": "$iv_hs"}
  ],
  "channel": [
    {"k": "$kc", "iv": "$ivch",
     "packets": [{"id": 255, "hash": 1347120097, "content": "504b4d00"},
                 {"id": 5, "content": ""},
                 "01${hash_hello}0000000568656c6c6f"],
     "ciphertext": "$ct"}
  ]
}
EOF
echo "wrote $here/sample-vectors.json"

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Measures the anchors of a benchmark run with `openssl speed` on this machine, now, and writes
# them as JSON for the bench programs (PKM_BENCH_ANCHORS) and for bench/report.py.
#
# Usage: bash bench/anchors.sh OUT.json
#   AES-256-CBC (EVP, encryption, one thread) at each size in PKM_ANCHOR_AES_SIZES (default: the
#   channel throughput sizes of figure 1), one second each, and RSA-2048 (sign and verify, one
#   second each): about 10 s in all.
# Output:
#   {"openssl": "OpenSSL 3.0.x ...",
#    "aes-256-cbc": {"command": "...", "MB/s by block": {"64": 986.5, ...}},
#    "rsa2048": {"command": "...", "sign/s": 4086, "sign s": 0.000245, "verify/s": 61462}}
#   MB are 10^6 bytes, as `openssl speed` counts them.
set -euo pipefail

out=${1:?usage: anchors.sh OUT.json}
sizes=${PKM_ANCHOR_AES_SIZES:-64 256 1024 4096 16384 65536 262144 1048576}

command -v openssl >/dev/null || { echo "anchors.sh: openssl not found" >&2; exit 1; }
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

for n in $sizes; do
  # -mr prints "+F:<idx>:AES-256-CBC:<bytes per second>" for the one block size asked.
  line=$(openssl speed -mr -seconds 1 -bytes "$n" -evp aes-256-cbc 2>/dev/null | grep '^+F:') ||
    { echo "anchors.sh: openssl speed -evp aes-256-cbc -bytes $n failed" >&2; exit 1; }
  echo "aes $n ${line##*:}" >>"$tmp"
done
# "+F2:<idx>:2048:<sign/s>:<verify/s>"
line=$(openssl speed -mr -seconds 1 rsa2048 2>/dev/null | grep '^+F2:') ||
  { echo "anchors.sh: openssl speed rsa2048 failed" >&2; exit 1; }
IFS=: read -r _ _ _ sign verify <<<"$line"
echo "rsa $sign $verify" >>"$tmp"

python3 - "$tmp" "$out" "$(openssl version)" <<'EOF'
import json, sys
src, out, version = sys.argv[1:4]
aes, rsa = {}, None
for line in open(src):
    f = line.split()
    if f[0] == "aes":
        aes[f[1]] = round(float(f[2]) / 1e6, 2)
    else:
        sign, verify = float(f[1]), float(f[2])
        rsa = {"command": "openssl speed -seconds 1 rsa2048",
               "sign/s": sign, "sign s": 1.0 / sign, "verify/s": verify}
if not aes or not rsa or rsa["sign/s"] <= 0 or min(aes.values()) <= 0:
    sys.exit("anchors.sh: could not parse openssl speed output")
doc = {"openssl": version,
       "aes-256-cbc": {"command": "openssl speed -seconds 1 -bytes N -evp aes-256-cbc",
                       "MB/s by block": aes},
       "rsa2048": rsa}
with open(out, "w") as fh:
    json.dump(doc, fh, indent=2)
    fh.write("\n")
EOF

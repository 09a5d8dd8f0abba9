#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make bench`: measures the anchors, runs every benchmark program, and writes bench/results.json,
# the generated parts of BENCHMARKS.md and bench/throughput.png (through bench/report.py).
#
# Usage: bash bench/run.sh [BUILD] [bench_NAME...]
#   BUILD defaults to build; its bench/ holds the programs (bench/bench_*.c, built by `make`).
#   With program names, runs only those and writes nothing under version control: the figures go
#   to BUILD/bench/results.partial.json and the table to stdout. PKM_BENCH_ANCHORS=FILE then
#   reuses anchors measured earlier instead of spending ~10 s on new ones.
#
# Contract for a bench program (bench/bench_common.h implements it):
#   - it prints on stdout only figures, one JSON object per line (bench_emit / bench_report):
#       name, value, unit, anchor, anchor_value, ratio   (ratio = value / anchor_value)
#     and optionally figure (a number listed in bench/report.py's FIGURES) and goal, conditions on
#     "value" or "ratio" joined by " and ", e.g. "ratio >= 0.85" or "value >= 1e6 and ratio > 1";
#     the report marks each figure with a goal met / not met. Anything else goes to stderr;
#   - every figure has its anchor measured in the same run on this machine (anchor_value > 0, in
#     the same unit as value);
#     anchors from `openssl speed` are measured once per run by bench/anchors.sh, and the file
#     is named in PKM_BENCH_ANCHORS (read it with bench_anchor_aes_cbc / bench_anchor_rsa2048_sign);
#   - figure names are unique; exit status 0. A failure, a timeout (PKM_BENCH_TIMEOUT seconds
#     each, default 150) or a malformed line fails the whole run, naming the program.
# Naming conventions:
#   figure 1: "throughput <N> B", N the content bytes per packet (64 ... 1048576), unit "MB/s"
#             (10^6 bytes of content delivered per second), anchor
#             "openssl speed -evp aes-256-cbc <M> B", M the anchored block size nearest to N;
#             goal "ratio >= 0.85" from N = 16384; "throughput <N> B, one thread" (same unit and
#             anchor, no goal) is the same sender without its writer thread. These, and only
#             these, make the plot.
#   figure 2: "pipelined 32 B packets" (packets/s, anchor: the TLS 1.3 peer from tls_peer.h
#             run in the same process); the peer itself is "TLS 1.3 pipelined 32 B messages".
#   figure 7: for each of two floods, "connect p50 under <F> (of <N>)" and "connect p99 under <F>
#             (of <N>)" (ms, anchors: the same good client's quiet p50 / p99 in the same run; goal
#             on p99 "ratio <= 4"), "failed good connects under <T>" (goal "value <= 0") and
#             "<T>: rate sent (...)" (connections/s actually sent, anchor: the server's measured
#             handshake capacity; goal "ratio >= 2"), where <F>/<T> is "a flood paced at 3 x
#             capacity"/"the paced flood" or "the unpaced flood"/"the unpaced flood"; and without
#             goal that capacity against cores / (2 x RSA-2048 sign) (bench_flood).
#   figure 9: the server's RSS growth at the peak and after the partial-packet deadline closed
#             40 connections holding 1 MiB packets less 16 bytes (MiB; goal on the latter
#             "value <= 4"), and "pinning connections closed by the deadline" (goal "ratio >= 1")
#             (bench_flood).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-build}
shift || true
case "$build" in /*) ;; *) build="$root/$build" ;; esac
timeout_s=${PKM_BENCH_TIMEOUT:-150}

[ -d "$build/bench" ] || { echo "run.sh: no $build/bench: run make first" >&2; exit 1; }
if [ $# -gt 0 ]; then
  progs=()
  for p in "$@"; do
    [ -x "$build/bench/$p" ] || { echo "run.sh: no program $build/bench/$p" >&2; exit 1; }
    progs+=("$build/bench/$p")
  done
else
  mapfile -t progs < <(find "$build/bench" -maxdepth 1 -type f -name 'bench_*' -perm -u+x | sort)
  [ ${#progs[@]} -gt 0 ] || { echo "run.sh: no bench programs in $build/bench" >&2; exit 1; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/out"
start=$(date +%s)

if [ $# -gt 0 ] && [ -n "${PKM_BENCH_ANCHORS:-}" ] && [ -f "$PKM_BENCH_ANCHORS" ]; then
  anchors=$PKM_BENCH_ANCHORS
  echo "run.sh: reusing anchors $anchors" >&2
else
  anchors="$work/anchors.json"
  echo "run.sh: measuring anchors (openssl speed, ~10 s)" >&2
  bash "$here/anchors.sh" "$anchors"
fi

for prog in "${progs[@]}"; do
  name=$(basename "$prog")
  echo "run.sh: $name" >&2
  t0=$EPOCHREALTIME
  status=0
  PKM_BENCH_ANCHORS="$anchors" timeout "$timeout_s" "$prog" >"$work/out/$name.out" || status=$?
  if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && why="timed out after ${timeout_s} s" || why="exited with status $status"
    echo "run.sh: FAILED: $name $why; its output:" >&2
    cat "$work/out/$name.out" >&2
    exit 1
  fi
  cat "$work/out/$name.out"
  awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" \
    'BEGIN { printf "run.sh: %s done in %.1f s\n", n, b - a }' >&2
done

seconds=$(($(date +%s) - start))
if [ $# -gt 0 ]; then
  python3 "$here/report.py" --outputs "$work/out" --anchors "$anchors" --build "$build" \
    --seconds "$seconds" --partial "$build/bench/results.partial.json"
  echo "run.sh: partial run: wrote $build/bench/results.partial.json only" >&2
else
  cp "$anchors" "$here/anchors.json"
  python3 "$here/report.py" --outputs "$work/out" --anchors "$here/anchors.json" \
    --build "$build" --seconds "$seconds" --results "$here/results.json" \
    --md "$root/BENCHMARKS.md" --png "$here/throughput.png"
  echo "run.sh: wrote bench/results.json, bench/anchors.json and BENCHMARKS.md in ${seconds} s" >&2
fi

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for N seconds (default 30),
# starting from its seed corpus in fuzz/corpus/<target>/. Fails on the first crash.
# Prints one summary line per target: executions, exec/s, coverage (cov: edges, ft: features).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
build=build-fuzz
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPKM_FUZZ=ON -DPKM_TESTS=OFF \
  -DPKM_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null
mkdir -p fuzz/artifacts
status=0
for bin in "$build"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  work="$build/corpus/$name"
  mkdir -p "$work"
  [ -d "fuzz/corpus/$name" ] && cp -n fuzz/corpus/"$name"/* "$work"/ 2>/dev/null || true
  echo "fuzz: $name for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$name-" \
      "$work" >"$build/$name.log" 2>&1; then
    echo "fuzz: $name FAILED; see $build/$name.log and fuzz/artifacts/" >&2
    tail -40 "$build/$name.log" >&2
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/$name.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$build/$name.log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$build/$name.log" | tail -1)
  echo "  $name: ${execs:-?} execs, ${rate:-?} exec/s, ${cov:-no coverage line}"
done
exit $status

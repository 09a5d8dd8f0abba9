#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages a make target needs, only when they are missing (idempotent).
# Usage: scripts/deps.sh [build|test|cluster|asan|valgrind|fuzz|bench|package|wireshark|all]...  (default: build)
# build: a working C compiler (gcc and libc6-dev: gcc's C library headers and crt files are only a
# "Recommends", which --no-install-recommends leaves out), CMake, and the library's dependencies.
set -euo pipefail

pkgs_for() {
  case "$1" in
    build) echo "gcc libc6-dev make cmake pkg-config libssl-dev libjansson-dev libuv1-dev openssl libhiredis-dev" ;;
    test) echo "$(pkgs_for build) libcmocka-dev python3-cryptography haproxy redis-server libpcap-dev $(pkgs_for package)" ;;
    # make test-cluster (tests/cluster.sh): the tool, redis-server, haproxy, python3 (free ports).
    cluster) echo "$(pkgs_for build) redis-server haproxy python3" ;;
    asan) echo "$(pkgs_for test) libclang-rt-14-dev" ;;
    valgrind) echo "$(pkgs_for test) valgrind" ;;
    fuzz) echo "$(pkgs_for build) clang libclang-rt-14-dev" ;;
    bench) echo "$(pkgs_for build) gnuplot-nox python3" ;;
    # make package (and its test): CPack's DEB generator, which needs file; dpkg-shlibdeps
    # (dpkg-dev) works out the Depends.
    package) echo "$(pkgs_for build) dpkg-dev file" ;;
    # The Wireshark plugin (make wireshark) and the capture test (tests/cli_capture.sh).
    wireshark) echo "$(pkgs_for build) wireshark-dev libwireshark-dev libgcrypt20-dev tshark tcpdump libpcap-dev" ;;
    all) echo "$(pkgs_for test) $(pkgs_for cluster) $(pkgs_for fuzz) $(pkgs_for bench) $(pkgs_for package) $(pkgs_for wireshark) valgrind" ;;
    *) echo "deps.sh: unknown group '$1' (build, test, cluster, asan, valgrind, fuzz, bench, package, wireshark, all)" >&2; return 1 ;;
  esac
}

want=""
for group in "${@:-build}"; do want="$want $(pkgs_for "$group")"; done

missing=""
for p in $(echo "$want" | tr ' ' '\n' | sort -u); do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$status" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps.sh: missing packages:$missing; this is not a Debian system, install their equivalents by hand" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "deps.sh: missing packages:$missing; run as root: apt-get update && apt-get install -y$missing" >&2
  exit 1
fi
echo "deps.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A shared library's ABI surface: it exports exactly the functions its public headers declare
# with PKM_API (all pkm_*, never an internal pkm__* helper or a symbol of a dependency), under the
# version node PKMCOM_0, and its SONAME carries the major version. The core (libpkmcom) owns every
# header but server.h and does not link libuv; libpkmcom-server owns server.h and links the core.
# Usage: pkg_symbols.sh LIB.so INCLUDE_DIR MIN_DECLARED (--only|--except) HEADER
set -euo pipefail
usage="usage: $0 LIB.so include/pkmcom MIN_DECLARED (--only|--except) HEADER"
so=${1:?$usage}
inc=${2:?$usage}
min=${3:?$usage}
mode=${4:?$usage}
header=${5:?$usage}
T=$(mktemp -d "${TMPDIR:-/tmp}/pkg_symbols.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Defined dynamic symbols, without the version suffix; the version node itself (type A) aside.
nm -D --defined-only "$so" | awk '$2 != "A" {print $3}' | sed 's/@.*//' | sort -u >"$T/exported"
[ -s "$T/exported" ] || fail "$so exports no symbol at all"
# Functions the library's headers declare as API (PKM_API ... pkm_name( on one line).
case "$mode" in
--only) headers=("$inc/$header") ;;
--except) mapfile -t headers < <(ls "$inc"/*.h | grep -vxF "$inc/$header") ;;
*) fail "$usage" ;;
esac
[ -f "${headers[0]}" ] || fail "no header ${headers[0]}"
grep -hoE 'PKM_API[^(;]*[^a-zA-Z0-9_]pkm_[a-zA-Z0-9_]+\(' "${headers[@]}" |
    grep -oE 'pkm_[a-zA-Z0-9_]+\($' | tr -d '(' | sort -u >"$T/declared"
[ "$(wc -l <"$T/declared")" -ge "$min" ] || fail "found only $(wc -l <"$T/declared") PKM_API declarations in $inc"

bad=$(grep -vE '^pkm_[a-z0-9]' "$T/exported" || true)
[ -z "$bad" ] || fail "exported symbols outside the pkm_ API: $(echo $bad)"
extra=$(comm -23 "$T/exported" "$T/declared")
[ -z "$extra" ] || fail "exported but not declared PKM_API in $inc: $(echo $extra)"
missing=$(comm -13 "$T/exported" "$T/declared")
[ -z "$missing" ] || fail "declared PKM_API but not exported: $(echo $missing)"

# Nothing internal of another library is needed: the core's .so exports no pkm__ helper.
und=$(nm -D --undefined-only "$so" | awk '{print $2}' | grep -E '^pkm__' || true)
[ -z "$und" ] || fail "$so needs internal symbols it cannot get: $(echo $und)"

# Symbol versioning (cmake/libpkmcom.map) and the SONAME.
nm -D --defined-only "$so" >"$T/nm.out"
first=$(head -1 "$T/declared")
grep -q " $first@@PKMCOM_0\$" "$T/nm.out" || fail "$first is not versioned PKMCOM_0"
name=$(basename "$so" | sed 's/\.so.*//')
soname=$(objdump -p "$so" | awk '$1 == "SONAME" {print $2}')
case "$soname" in "$name".so.[0-9]*) ;; *) fail "SONAME is '$soname', expected $name.so.MAJOR" ;; esac
# What it links: the core never libuv (a codec user needs libcrypto and jansson only); the server
# links the core.
needed=$(objdump -p "$so" | awk '$1 == "NEEDED" {print $2}' | tr '\n' ' ')
case "$name" in
libpkmcom) case "$needed" in *libuv*) fail "$name links libuv: $needed" ;; esac ;;
libpkmcom-server) case "$needed" in *libpkmcom.so.*) ;; *) fail "$name does not link libpkmcom: $needed" ;; esac ;;
esac
real=$(readlink -f "$so")
case "$(basename "$real")" in "$soname".*.*) ;; *) fail "$(basename "$real") does not carry VERSION after $soname" ;; esac
echo "pkg_symbols: $(wc -l <"$T/exported") symbols exported, all declared API; SONAME $soname; NEEDED $needed"

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The shared library's ABI surface: it exports exactly the functions the public headers declare
# with PKM_API (all pkm_*, never an internal pkm__* helper or a symbol of a dependency), under the
# version node PKMCOM_0, and its SONAME carries the major version.
# Usage: pkg_symbols.sh LIBPKMCOM.so INCLUDE_DIR
set -euo pipefail
so=${1:?usage: $0 libpkmcom.so include/pkmcom}
inc=${2:?usage: $0 libpkmcom.so include/pkmcom}
T=$(mktemp -d "${TMPDIR:-/tmp}/pkg_symbols.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Defined dynamic symbols, without the version suffix; the version node itself (type A) aside.
nm -D --defined-only "$so" | awk '$2 != "A" {print $3}' | sed 's/@.*//' | sort -u >"$T/exported"
[ -s "$T/exported" ] || fail "$so exports no symbol at all"
# Functions the headers declare as API (PKM_API ... pkm_name( on one line).
grep -hoE 'PKM_API[^(;]*[^a-zA-Z0-9_]pkm_[a-zA-Z0-9_]+\(' "$inc"/*.h |
    grep -oE 'pkm_[a-zA-Z0-9_]+\($' | tr -d '(' | sort -u >"$T/declared"
[ "$(wc -l <"$T/declared")" -ge 50 ] || fail "found only $(wc -l <"$T/declared") PKM_API declarations in $inc"

bad=$(grep -vE '^pkm_[a-z0-9]' "$T/exported" || true)
[ -z "$bad" ] || fail "exported symbols outside the pkm_ API: $(echo $bad)"
extra=$(comm -23 "$T/exported" "$T/declared")
[ -z "$extra" ] || fail "exported but not declared PKM_API in $inc: $(echo $extra)"
missing=$(comm -13 "$T/exported" "$T/declared")
[ -z "$missing" ] || fail "declared PKM_API but not exported: $(echo $missing)"

# Symbol versioning (cmake/libpkmcom.map) and the SONAME.
nm -D --defined-only "$so" >"$T/nm.out"
grep -q ' pkm_version@@PKMCOM_0$' "$T/nm.out" || fail "pkm_version is not versioned PKMCOM_0"
soname=$(objdump -p "$so" | awk '$1 == "SONAME" {print $2}')
case "$soname" in libpkmcom.so.[0-9]*) ;; *) fail "SONAME is '$soname', expected libpkmcom.so.MAJOR" ;; esac
real=$(readlink -f "$so")
case "$(basename "$real")" in "$soname".*.*) ;; *) fail "$(basename "$real") does not carry VERSION after $soname" ;; esac
echo "pkg_symbols: $(wc -l <"$T/exported") symbols exported, all declared API; SONAME $soname"

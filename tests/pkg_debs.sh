#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make package`'s Debian packages, made the same way (prefix /usr, CPack DEB) in a temporary tree
# and inspected with dpkg-deb: names, contents (multiarch libdir), dependencies, shlibs, .pc paths.
# Exit 77 (skipped) where dpkg-deb is missing.
set -euo pipefail
src=${PKM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
command -v dpkg-deb >/dev/null || { echo "pkg_debs: no dpkg-deb, skipped"; exit 77; }
command -v file >/dev/null ||
    { echo "FAIL: CPack's DEB generator needs file: apt-get install file (or bash scripts/deps.sh test)" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/pkg_debs.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
CHECKS=0
ok() { CHECKS=$((CHECKS + 1)); }

cmake -S "$src" -B "$T/b" --log-level=WARNING -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_INSTALL_PREFIX=/usr -DPKM_DEBIAN=ON -DPKM_TESTS=OFF -DPKM_BENCH=OFF >"$T/configure.log" ||
    { cat "$T/configure.log" >&2; fail "configure"; }
cmake --build "$T/b" -j 2 >"$T/build.log" || { tail -30 "$T/build.log" >&2; fail "build"; }
(cd "$T/b" && cpack -G DEB >"$T/cpack.log" 2>&1) || { cat "$T/cpack.log" >&2; fail "cpack"; }

v=$(sed -n 's/^CMAKE_PROJECT_VERSION:[A-Z]*=//p' "$T/b/CMakeCache.txt")
major=${v%%.*}
arch=$(dpkg --print-architecture)
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
lib="./usr/lib/$ma"
[ "$(cd "$T/b" && ls ./*.deb | sort | tr '\n' ' ')" = \
  "./libpkmcom-dev_${v}_$arch.deb ./libpkmcom-server${major}_${v}_$arch.deb ./libpkmcom${major}_${v}_$arch.deb ./pkmcom_${v}_$arch.deb " ] ||
    fail "packages: $(cd "$T/b" && ls ./*.deb)"
ok
field() { dpkg-deb --field "$T/b/$1_${v}_$arch.deb" "$2"; }
files() { dpkg-deb --contents "$T/b/$1_${v}_$arch.deb" | awk '{print $6}' | grep -v '/$' | sort; }
# grep -q reads here-strings, never a pipe: under pipefail, a writer that grep's early exit cuts
# off (SIGPIPE) would fail the check.
has() { grep -qxF "$2" <<<"$(files "$1")" || fail "$1 lacks $2; it holds: $(files "$1" | tr '\n' ' ')"; ok; }

# libpkmcomN: the shared library alone, in the multiarch libdir, with a shlibs file.
L=libpkmcom$major
[ "$(files $L | tr '\n' ' ')" = "$lib/libpkmcom.so.$major $lib/libpkmcom.so.$v ./usr/share/doc/$L/copyright " ] ||
    fail "$L holds: $(files $L | tr '\n' ' ')"
ok
[ "$(field $L Section)" = libs ] || fail "$L section $(field $L Section)"
ok
grep -qxF "libpkmcom $major $L (= $v)" <<<"$(dpkg-deb --info "$T/b/${L}_${v}_$arch.deb" shlibs)" ||
    fail "$L shlibs: $(dpkg-deb --info "$T/b/${L}_${v}_$arch.deb" shlibs 2>&1)"
ok
# libpkmcom-serverN: the libuv server's shared library alone, with its shlibs file.
S=libpkmcom-server$major
[ "$(files $S | tr '\n' ' ')" = "$lib/libpkmcom-server.so.$major $lib/libpkmcom-server.so.$v ./usr/share/doc/$S/copyright " ] ||
    fail "$S holds: $(files $S | tr '\n' ' ')"
ok
[ "$(field $S Section)" = libs ] || fail "$S section $(field $S Section)"
ok
grep -qxF "libpkmcom-server $major $S (= $v)" <<<"$(dpkg-deb --info "$T/b/${S}_${v}_$arch.deb" shlibs)" ||
    fail "$S shlibs: $(dpkg-deb --info "$T/b/${S}_${v}_$arch.deb" shlibs 2>&1)"
ok
# Runtime dependencies on Debian's library packages (worked out by dpkg-shlibdeps): the core
# without libuv, the server library with it and with the core.
has_dep() { grep -qE "^ *$2( |$)" <<<"$(field $1 Depends | tr ',' '\n')"; }
if command -v dpkg-shlibdeps >/dev/null; then
    for p in $L $S pkmcom; do
        for d in libc6 libssl3; do
            has_dep $p $d || fail "$p Depends lacks $d: $(field $p Depends)"
            ok
        done
    done
    for p in $L pkmcom; do
        has_dep $p libjansson4 || fail "$p Depends lacks libjansson4: $(field $p Depends)"
        ok
    done
    for p in $S pkmcom; do
        has_dep $p libuv1 || fail "$p Depends lacks libuv1: $(field $p Depends)"
        ok
    done
    ! has_dep $L libuv1 || fail "$L depends on libuv1: $(field $L Depends)"
    ok
    has_dep $S "$L" || fail "$S Depends lacks $L: $(field $S Depends)"
    ok
else
    echo "pkg_debs: no dpkg-shlibdeps (dpkg-dev), runtime Depends not checked"
fi

# libpkmcom-dev: headers, static library, .so link, .pc, CMake package; depends on the library
# (this very version) and on the -dev packages of what the static library and .pc need.
D=libpkmcom-dev
for f in ./usr/include/pkmcom/pkmcom.h ./usr/include/pkmcom/server.h "$lib/libpkmcom.a" \
    "$lib/libpkmcom.so" "$lib/pkgconfig/pkmcom.pc" "$lib/libpkmcom-server.a" "$lib/libpkmcom-server.so" \
    "$lib/pkgconfig/pkmcom-server.pc" "$lib/cmake/pkmcom/pkmcom-config.cmake" \
    "$lib/cmake/pkmcom/pkmcom-config-version.cmake" "$lib/cmake/pkmcom/pkmcom-targets.cmake"; do
    has $D "$f"
done
! grep -q "libpkmcom.so.$major" <<<"$(files $D)" || fail "$D holds the shared library itself"
ok
deps=$(field $D Depends)
for d in "$L (= $v)" "$S (= $v)" libssl-dev libjansson-dev libuv1-dev "pkgconf | pkg-config"; do
    grep -qE "^ *$(printf '%s' "$d" | sed 's/[().=|]/\\&/g')" <<<"$(tr ',' '\n' <<<"$deps")" ||
        fail "$D Depends lacks '$d': $deps"
    ok
done
dpkg-deb --fsys-tarfile "$T/b/${D}_${v}_$arch.deb" | tar -xO "$lib/pkgconfig/pkmcom.pc" >"$T/pkmcom.pc"
grep -qx 'prefix=/usr' "$T/pkmcom.pc" || fail "pkmcom.pc: $(cat "$T/pkmcom.pc")"
ok
grep -qx "libdir=\${prefix}/lib/$ma" "$T/pkmcom.pc" || fail "pkmcom.pc libdir: $(grep libdir "$T/pkmcom.pc")"
ok
grep -q '^Requires.private:.*libcrypto.*jansson' "$T/pkmcom.pc" || fail "pkmcom.pc Requires.private"
ok
! grep -q libuv "$T/pkmcom.pc" || fail "pkmcom.pc names libuv: $(cat "$T/pkmcom.pc")"
ok
dpkg-deb --fsys-tarfile "$T/b/${D}_${v}_$arch.deb" | tar -xO "$lib/pkgconfig/pkmcom-server.pc" >"$T/server.pc"
grep -qx 'Requires: pkmcom' "$T/server.pc" && grep -q '^Requires.private:.*libuv' "$T/server.pc" &&
    grep -q -- '-lpkmcom-server' "$T/server.pc" || fail "pkmcom-server.pc: $(cat "$T/server.pc")"
ok

# pkmcom: the tool and its man page.
has pkmcom ./usr/bin/pkmcom
has pkmcom ./usr/share/man/man1/pkmcom.1.gz
has pkmcom ./usr/share/doc/pkmcom/copyright
has $D ./usr/share/doc/$D/copyright
dpkg-deb --fsys-tarfile "$T/b/pkmcom_${v}_$arch.deb" | tar -xO ./usr/share/man/man1/pkmcom.1.gz |
    gzip -dc >"$T/pkmcom.1"
cmp -s "$T/pkmcom.1" "$src/man/pkmcom.1" || fail "pkmcom.1.gz is not man/pkmcom.1"
ok
echo "pkg_debs: $CHECKS checks passed"

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the build into a temporary prefix, builds every examples/*.c against the INSTALLED
# library twice (pkg-config, and examples/CMakeLists.txt with find_package), and runs them: the
# client and the engine example against the echo server example, and the client against the
# installed `pkmcom serve` (127.0.0.1, free ports, every run bounded, everything removed after).
# Usage: pkg_install_examples.sh BUILD_DIR
set -uo pipefail
build=${1:?usage: $0 BUILD_DIR}
src=${PKM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
T=$(mktemp -d "${TMPDIR:-/tmp}/pkg_install.XXXXXX")
P="$T/prefix"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    for f in "$T"/*.err; do [ -s "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }; done
    exit 1
}
CHECKS=0
ok() { CHECKS=$((CHECKS + 1)); }

# One component at a time: each writes its own install_manifest_<component>.txt, so the build's
# install_manifest.txt (what `make uninstall` removes) stays the last real `make install`'s.
for c in lib serverlib dev tool; do
    cmake --install "$build" --prefix "$P" --component $c >"$T/install-$c.log" ||
        { cat "$T/install-$c.log" >&2; fail "cmake --install --component $c"; }
done
pc=$(find "$P" -name pkmcom.pc)
[ -n "$pc" ] || fail "no pkmcom.pc installed under $P"
libdir=$(dirname "$(dirname "$pc")")
grep -qx "prefix=$P" "$pc" || fail "pkmcom.pc does not name the prefix $P: $(grep ^prefix "$pc")"
ok
[ -e "$libdir/libpkmcom.so" ] && [ -e "$libdir/libpkmcom.a" ] || fail "libraries not in $libdir"
ok
[ -e "$libdir/libpkmcom-server.so" ] && [ -e "$libdir/libpkmcom-server.a" ] &&
    [ -f "$libdir/pkgconfig/pkmcom-server.pc" ] || fail "server library or its .pc not in $libdir"
ok
[ -x "$P/bin/pkmcom" ] && [ -f "$P/share/man/man1/pkmcom.1" ] || fail "tool or man page not installed"
ok

# 1. pkg-config (the installed prefix first; rpath since it is not a system libdir).
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --variable=libdir pkmcom)" = "$libdir" ] || fail "pkg-config libdir $(pkg-config --variable=libdir pkmcom)"
ok
mkdir -p "$T/pc"
# The echo and lobby servers use the server library (pkmcom-server), the others the core alone
# (pkmcom), and those must not load libuv.
for f in "$src"/examples/*.c; do
    name=$(basename "$f" .c)
    mod=pkmcom
    case $name in echo_server | lobby_server) mod=pkmcom-server ;; esac
    # shellcheck disable=SC2046
    cc -std=c11 -Wall -Wextra -Wpedantic -Werror $(pkg-config --cflags $mod) "$f" -o "$T/pc/$name" \
        $(pkg-config --libs $mod) -Wl,-rpath,"$libdir" 2>"$T/cc-$name.err" || fail "pkg-config build of $name"
    ok
    ldd "$T/pc/$name" >"$T/ldd.out" 2>&1
    grep -qF "$libdir/libpkmcom.so" "$T/ldd.out" || fail "$name does not load $libdir/libpkmcom.so: $(cat "$T/ldd.out")"
    ok
    if [ $mod = pkmcom-server ]; then
        grep -qF "$libdir/libpkmcom-server.so" "$T/ldd.out" || fail "$name does not load libpkmcom-server.so: $(cat "$T/ldd.out")"
    else
        ! grep -q 'libuv\|libpkmcom-server' "$T/ldd.out" || fail "$name, a core user, loads libuv: $(cat "$T/ldd.out")"
    fi
    ok
done
[ -n "$(ls "$T/pc")" ] || fail "no examples built"

# 2. CMake, find_package(pkmcom CONFIG) from examples/CMakeLists.txt.
cmake -S "$src/examples" -B "$T/cm" --log-level=WARNING -DCMAKE_PREFIX_PATH="$P" \
    -DCMAKE_C_FLAGS="-Wall -Wextra -Wpedantic -Werror" >"$T/cm-configure.err" 2>&1 ||
    fail "find_package configure"
cmake --build "$T/cm" >"$T/cm-build.err" 2>&1 || fail "find_package build"
for name in client chat_client lobby_client echo_server lobby_server engine_poll client_static; do
    [ -x "$T/cm/$name" ] || fail "CMake build made no $name"
    ok
done
# (ldd into a file, then grep: under pipefail grep -q's early exit could fail the pipeline.)
ldd "$T/cm/client_static" >"$T/ldd.out" 2>&1
! grep -q libpkmcom "$T/ldd.out" || fail "client_static loads a shared libpkmcom: $(cat "$T/ldd.out")"
ok

# start_server NAME CMD...: starts CMD in the background, waits for "listening on 127.0.0.1:PORT
# ..." on its stdout or stderr; sets PORT and FP (the fingerprint it prints, if any).
start_server() {
    local name=$1 line
    shift
    "$@" >"$T/$name.out" 2>"$T/$name.err" &
    PIDS+=("$!")
    PORT=
    for _ in $(seq 200); do
        line=$(cat "$T/$name.out" "$T/$name.err" | grep -m1 -oE 'listening on 127\.0\.0\.1:[0-9]+.*')
        [ -n "$line" ] && break
        kill -0 "$!" 2>/dev/null || fail "$name exited early"
        sleep 0.05
    done
    [ -n "$line" ] || fail "$name did not start listening"
    PORT=$(echo "$line" | sed -E 's/listening on 127\.0\.0\.1:([0-9]+).*/\1/')
    FP=$(echo "$line" | grep -oE 'SHA256:[A-Za-z0-9+/]{43}' | head -1)
}
# expect NAME WANT_LINE CMD...: CMD (at most 20 s) exits 0 and prints WANT_LINE.
expect() {
    local name=$1 want=$2
    shift 2
    timeout 20 "$@" >"$T/$name.out" 2>"$T/$name.err" || fail "$name: exit status $?"
    grep -qxF "$want" "$T/$name.out" || fail "$name: no line '$want' in: $(cat "$T/$name.out")"
    ok
}

for server in pc cm; do
    other=$([ $server = pc ] && echo cm || echo pc)
    start_server srv-$server "$T/$server/echo_server" 0
    [ -n "$FP" ] || fail "echo_server printed no fingerprint"
    for b in pc cm; do
        expect client-$b-$server "got packet 0x10, 5 bytes: hello" "$T/$b/client" 127.0.0.1 "$PORT" "$FP"
        expect engine-$b-$server "got packet 0x20, 4 bytes: ping" "$T/$b/engine_poll" 127.0.0.1 "$PORT" "$FP"
        # The chat client: a line on stdin goes out as a typed packet and comes back.
        # shellcheck disable=SC2016
        expect chat-$b-$server "> hello chat" bash -c 'printf "hello chat\n" | "$0" 127.0.0.1 "$1" "$2"' \
            "$T/$b/chat_client" "$PORT" "$FP"
    done
    expect client_static-$server "got packet 0x10, 5 bytes: hello" "$T/cm/client_static" 127.0.0.1 "$PORT"
    # A wrong pin: refused with a sentence, exit status 1.
    bad=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
    timeout 20 "$T/$other/client" 127.0.0.1 "$PORT" "$bad" >"$T/pin.out" 2>"$T/pin.err"
    [ $? -eq 1 ] || fail "client with a wrong pin: exit status not 1"
    grep -q '^client: connect: .\+' "$T/pin.err" || fail "client with a wrong pin said: $(cat "$T/pin.err")"
    ok
    timeout 20 "$T/$other/engine_poll" 127.0.0.1 "$PORT" "$bad" >"$T/pin.out" 2>"$T/pin.err"
    [ $? -eq 1 ] || fail "engine_poll with a wrong pin: exit status not 1"
    ok
done
rm -f "$T"/pin.err

# The lobby chat: alice joins and stays (her stdin a FIFO held open here), bob joins and says a
# line and a last one without its newline; alice gets both (and the join and leave), bob does not
# get his lines back.
for b in pc cm; do
    start_server lobby-$b "$T/$b/lobby_server" 0
    [ -n "$FP" ] || fail "lobby_server printed no fingerprint"
    rm -f "$T/alice.in"
    mkfifo "$T/alice.in"
    timeout 30 "$T/$b/lobby_client" 127.0.0.1 "$PORT" alice "$FP" <"$T/alice.in" >"$T/alice.out" 2>"$T/alice.err" &
    apid=$!
    PIDS+=("$apid")
    exec 3>"$T/alice.in"
    for _ in $(seq 200); do grep -q '^alice joined$' "$T/lobby-$b.err" && break; sleep 0.05; done
    grep -q '^alice joined$' "$T/lobby-$b.err" || { exec 3>&-; fail "lobby: alice did not join"; }
    # shellcheck disable=SC2016
    timeout 20 bash -c 'printf "hello lobby\nno newline" | "$0" 127.0.0.1 "$1" bob "$2"' "$T/$b/lobby_client" \
        "$PORT" "$FP" >"$T/bob.out" 2>"$T/bob.err" || { exec 3>&-; fail "lobby: bob exit status $?"; }
    for _ in $(seq 200); do grep -q '^lobby: bob left$' "$T/alice.out" && break; sleep 0.05; done
    exec 3>&- # alice's end of input: she leaves a second later
    wait "$apid" || fail "lobby: alice exit status $?"
    [ "$(cat "$T/alice.out")" = "$(printf 'lobby: bob joined\nbob: hello lobby\nbob: no newline\nlobby: bob left')" ] ||
        fail "lobby: alice saw: $(cat "$T/alice.out")"
    ok
    [ ! -s "$T/bob.out" ] || fail "lobby: bob got his own line back: $(cat "$T/bob.out")"
    ok
    # A wrong pin: the client says both fingerprints; the server says the client left at step 2.
    timeout 20 "$T/$b/lobby_client" 127.0.0.1 "$PORT" eve SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA \
        </dev/null >"$T/eve.out" 2>"$T/eve.err"
    [ $? -eq 1 ] && grep -qF "the peer presented $FP" "$T/eve.err" || fail "lobby: eve with a wrong pin"
    for _ in $(seq 200); do grep -q 'the client closed the connection during handshake step 2' "$T/lobby-$b.err" && break; sleep 0.05; done
    grep -q 'the client closed the connection during handshake step 2 (ClientKey)' "$T/lobby-$b.err" ||
        fail "lobby server: no sentence for the client that left"
    ok
    rm -f "$T"/alice.* "$T"/bob.* "$T"/eve.*
done

# The README's client against the installed tool's echo server.
export PKMCOM_HOME="$T/home"
"$P/bin/pkmcom" keygen -o "$T/server.pem" >"$T/keygen.out" 2>"$T/keygen.err" || fail "pkmcom keygen"
start_server serve "$P/bin/pkmcom" serve --listen 127.0.0.1:0 --key "$T/server.pem"
expect client-serve "got packet 0x10, 5 bytes: hello" "$T/pc/client" 127.0.0.1 "$PORT" "$(cat "$T/keygen.out")"
expect engine-serve "got packet 0x20, 4 bytes: ping" "$T/cm/engine_poll" 127.0.0.1 "$PORT"
echo "pkg_install_examples: $CHECKS checks passed"

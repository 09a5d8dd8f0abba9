#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# DESIGN's layering rule, checked on the sources (docs/ARCHITECTURE.md, "Layers"): which files of
# src/ and include/pkmcom/ may include libuv, OpenSSL and jansson, directly or through one of the
# project's own headers that does; and which of the core's internal headers the server library may
# use. Any other include fails, naming the file and the line.
# Usage: layering.sh [SOURCE_DIR]
set -euo pipefail
root=${1:-${PKM_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
cd "$root"
fail=0
checks=0

# Who may include what (paths from the repository's root). Keep these lists minimal: a new entry
# is a design decision, to be written down in docs/ARCHITECTURE.md.
# libuv: the server library's loop, listener and connections.
allowed_uv="src/server.c src/server_loops.c src/server_conn.c src/server_jobs.c src/server_proxy.c
    src/server_internal.h"
# OpenSSL: the key code, the channel's ciphers, the engine (RSA jobs, derivation), the key log and
# stream decoder, the one wipe helper, and the admission table's random hash seed.
allowed_openssl="src/keys.c src/keys_internal.h src/channel.c src/channel_internal.h src/engine.c
    src/engine_state.h src/engine_stream.c src/keylog.c src/wipe.c src/limits.c"
# jansson: the APL (JSON) codec.
allowed_jansson="src/apl.c"
# The server library's files (CMakeLists.txt) and the core's internal headers they may include:
# the stateless helpers the server links in itself (wipe.c, buf.c, net.c) and the allocation macros.
server_files="src/server.c src/server_loops.c src/server_conn.c src/server_jobs.c src/server_proxy.c
    src/server_internal.h src/proxy.c src/proxy_internal.h src/limits.c src/limits_internal.h"
server_may_include="internal.h buf.h net_internal.h server_internal.h proxy_internal.h limits_internal.h"

files=$(ls src/*.c src/*.h include/pkmcom/*.h)

# includes_of FILE: the quoted project headers FILE includes, as paths under src/ (or include/).
includes_of() {
    sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1/p' "$1" | while read -r h; do
        if [ -f "src/$h" ]; then echo "src/$h"; elif [ -f "include/$h" ]; then echo "include/$h"; fi
    done
}

# check NAME REGEX ALLOWED: every file that includes <REGEX> directly, or a project header that
# does (to any depth), must be in ALLOWED.
check() {
    local name=$1 re=$2 allowed=" $(echo $3) " f changed tainted="" h line
    # Headers that bring the dependency in, to a fixed point.
    for f in $files; do grep -qE "^[[:space:]]*#[[:space:]]*include[[:space:]]*<$re" "$f" && tainted+=" $f"; done
    changed=1
    while [ $changed = 1 ]; do
        changed=0
        for f in $files; do
            case " $tainted " in *" $f "*) continue ;; esac
            for h in $(includes_of "$f"); do
                case " $tainted " in *" $h "*) tainted+=" $f"; changed=1; break ;; esac
            done
        done
    done
    for f in $tainted; do
        checks=$((checks + 1))
        case "$allowed" in *" $f "*) continue ;; esac
        line=$(grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*<$re" "$f" | head -1 || true)
        [ -n "$line" ] || line="through $(for h in $(includes_of "$f"); do case " $tainted " in *" $h "*) echo "$h" ;; esac; done | tr '\n' ' ')"
        echo "FAIL: $f includes $name ($line); allowed only in: $(echo $allowed)" >&2
        fail=1
    done
}
check libuv 'uv\.h>' "$allowed_uv"
check OpenSSL 'openssl/' "$allowed_openssl"
check jansson 'jansson\.h>' "$allowed_jansson"

# The installed headers include none of them (a codec user needs no libuv, OpenSSL or jansson
# headers), and only each other.
for f in include/pkmcom/*.h; do
    checks=$((checks + 1))
    bad=$(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*(<(uv|jansson)\.h>|<openssl/|")' "$f" |
        grep -vE '"pkmcom/[a-z_]+\.h"' || true)
    [ -z "$bad" ] || { echo "FAIL: public header $f includes: $bad" >&2; fail=1; }
done

# The server library reaches the core through its API: of the core's internal headers only those
# listed (what it links in itself).
for f in $server_files; do
    [ -f "$f" ] || continue
    for h in $(includes_of "$f"); do
        checks=$((checks + 1))
        case "$h" in include/pkmcom/*) continue ;; esac
        case " $server_may_include " in *" $(basename "$h") "*) continue ;; esac
        echo "FAIL: $f (server library) includes the core's internal $h; allowed: $server_may_include" >&2
        fail=1
    done
done

[ $fail = 0 ] || exit 1
echo "layering: $checks includes checked, every one allowed"

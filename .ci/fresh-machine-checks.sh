#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What a new user does on a brand-new Debian 12, run by .ci/run inside ../shared/tools/fresh-machine.sh
# (a minimal chroot with a fresh clone of HEAD): the README's two commands, make test-cluster, then make install into
# a prefix with the examples built against it, make uninstall, and make package with the .deb
# packages installed by apt-get and an example built against them.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "=== fresh-machine: $* ($(( $(date +%s) - T0 )) s)"; }
T0=$(date +%s)

step "make demo (the README's first command, on a machine with nothing installed)"
make demo >/tmp/demo.log 2>&1 || { cat /tmp/demo.log; exit 1; }
tail -3 /tmp/demo.log
step "make test"
make test
step "make test-cluster (HAProxy, two instances, Redis)"
make test-cluster

step "make install PREFIX=/tmp/pkm-prefix, then the examples built against it"
make install PREFIX=/tmp/pkm-prefix >/dev/null
pcdir=$(dirname "$(find /tmp/pkm-prefix -name pkmcom.pc)")
mkdir -p /tmp/ex
for f in examples/*.c; do
    mod=pkmcom
    # The servers (echo_server.c, lobby_server.c) link the libuv server library, as in
    # examples/CMakeLists.txt.
    case "$(basename "$f")" in *_server.c) mod=pkmcom-server ;; esac
    cc -std=c11 -Wall -Wextra -Werror "$f" -o "/tmp/ex/$(basename "$f" .c)" \
        $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs $mod) -Wl,-rpath,"$(dirname "$pcdir")"
done
cmake -S examples -B /tmp/ex-cmake --log-level=WARNING -DCMAKE_PREFIX_PATH=/tmp/pkm-prefix >/dev/null
cmake --build /tmp/ex-cmake >/dev/null
ls /tmp/ex /tmp/ex-cmake | tr '\n' ' '; echo
step "make uninstall"
make uninstall >/dev/null
left=$(find /tmp/pkm-prefix -type f -o -type l)
[ -z "$left" ] || { echo "make uninstall left: $left"; exit 1; }

step "make package, apt-get install ./build-package/*.deb"
make package
apt-get install -y -qq ./build-package/*.deb >/dev/null
dpkg -l libpkmcom0 libpkmcom-server0 libpkmcom-dev pkmcom | tail -4
step "an example built against the installed packages (pkg-config and find_package), run"
cc -std=c11 -Wall -Wextra -Werror examples/client.c -o /tmp/client-deb $(pkg-config --cflags --libs pkmcom)
cc -std=c11 -Wall -Wextra -Werror examples/echo_server.c -o /tmp/server-deb $(pkg-config --cflags --libs pkmcom-server)
cmake -S examples -B /tmp/ex-deb --log-level=WARNING >/dev/null && cmake --build /tmp/ex-deb >/dev/null
ldd /tmp/client-deb | grep libpkmcom
/tmp/server-deb 0 >/tmp/server.out &
srv=$!
for _ in $(seq 100); do grep -q listening /tmp/server.out && break; sleep 0.1; done
port=$(sed -nE 's/^listening on 127\.0\.0\.1:([0-9]+).*/\1/p' /tmp/server.out)
timeout 20 /tmp/client-deb 127.0.0.1 "$port"
timeout 20 /tmp/ex-deb/engine_poll 127.0.0.1 "$port"
kill "$srv"; wait "$srv" || true
pkmcom --help >/dev/null && test -f /usr/share/man/man1/pkmcom.1.gz && test -f /usr/share/doc/libpkmcom0/copyright &&
    test -f /usr/share/doc/libpkmcom-server0/copyright
step "all fresh-machine checks passed"

# SPDX-License-Identifier: MIT
# pkmcom serve --proxy-trusted: a bad list refused (exit 2, the entry named); behind a trusted
# balancer the header's client is the name in the log, health checks log nothing, a malformed
# header one line; from an untrusted address a PROXY header is refused and a plain client served.
source "$(dirname "$0")/support/cli.sh"
command -v python3 >/dev/null || { echo "cli_proxy: python3 not installed, skipped"; exit 0; }

run k keygen -o "$T/k.pem"
expect_rc k 0

run bad serve --listen 127.0.0.1:0 --key "$T/k.pem" --proxy-trusted "127.0.0.1,10.0.0.1/8"
expect_rc bad 2
grep -qF '"10.0.0.1/8" is not' "$T/bad.err" || fail "bad list: entry not named: $(cat "$T/bad.err")"
ok

# peer.py PORT MODE...: connects from 127.0.0.1 and, per MODE, sends bytes then closes.
cat >"$T/peer.py" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
V2 = b"\r\n\r\n\x00\r\nQUIT\n"
for mode in sys.argv[2:]:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    lport = s.getsockname()[1]
    if mode == "local":        # HAProxy's send-proxy-v2 health check
        s.sendall(V2 + b"\x20\x00\x00\x00")
    elif mode == "self":       # HAProxy's send-proxy health check: its own endpoints
        s.sendall(b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (lport, port))
    elif mode == "client":     # a client relayed from 203.0.113.7:40000, gone at once
        s.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
        s.recv(4)              # the ServerKey starts: it was admitted
    elif mode == "malformed":
        s.sendall(b"PROXY TCP4 203.0.113.777 127.0.0.1 40000 443\r\n")
    elif mode == "forged":     # an untrusted client: ServerKey first, then a header
        s.recv(4)
        s.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
    if mode in ("malformed", "forged"):
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    s.close()
    time.sleep(0.05)
PY

# ---- behind a trusted balancer (127.0.0.1) ----
start_server px --listen 127.0.0.1:0 --key "$T/k.pem" --proxy-trusted 127.0.0.1/32
grep -qF "PROXY protocol from 127.0.0.1/32" "$T/px.err" || fail "no PROXY in the listening line"
ok
timeout 20 python3 "$T/peer.py" "$PORT" plain local self malformed malformed client ||
    fail "peer.py failed"
ok
wait_for_line "$T/px.err" "203\.0\.113\.7:40000"
stop_server px
grep -c "malformed PROXY header" "$T/px.err" | grep -qx 1 || fail "malformed: not exactly one line"
ok
# listening, the malformed line, the client's, stopped (and the open-file limit): the three
# health checks said nothing.
[ "$(grep -vc "open-file limit" "$T/px.err")" -eq 4 ] || fail "unexpected log lines: $(cat "$T/px.err")"
ok
grep -qF "connections 1 " "$T/px.err" || fail "health checks counted as connections"
ok

# ---- the balancer is someone else: 127.0.0.1 is a plain client ----
start_server un --listen 127.0.0.1:0 --key "$T/k.pem" --proxy-trusted 127.0.0.2/32
timeout 20 python3 "$T/peer.py" "$PORT" forged forged || fail "peer.py failed"
ok
run s send "127.0.0.1:$PORT" --id 16 byte:1 --known-hosts "$T/kh"
expect_rc s 0
stop_server un
grep -c "not trusted to send one" "$T/un.err" | grep -qx 1 || fail "forged: not exactly one line"
ok
# ... and no line per forged connection.
! grep -q "handshake failed\|closed during" "$T/un.err" || fail "forged: a line per connection"
ok
echo "cli_proxy: $CHECKS checks passed"

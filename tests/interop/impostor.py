#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# impostor.py: an echoing impostor for the CLI tests: it shows a real server's PUBLIC key, sends
# random bytes as its KeyShare and echoes everything; a version-2 client must refuse it at step 5.
"""Echoing impostor (WIRE-PROFILE version 2, section 6).

  impostor.py --port P --key FILE [--connections N] [--timeout S]

Listens on 127.0.0.1:P (P = 0: a free port, printed as "PORT <n>" on stdout). For each of N
connections (default 1): sends ServerKey = the public key in FILE (a PEM public or private key:
only its public half is used, as an impostor has no more), reads the client's ClientKey (checked
as section 3 requires) and its 528-byte KeyShare, sends 528 random bytes as its own KeyShare,
then echoes every byte the client sends until the client closes. Under version 1 this passed the
handshake: the echoed 0xFF packet was the client's own block under the one key. Under version 2
the answer must be encrypted under K_sc, which needs M_client, which needs the private key.

Prints one line per connection on stdout, "ECHOED <bytes>", and exits 0 once N connections were
served; any failure prints one line on stderr and exits 1.
"""

import argparse
import os
import socket
import struct
import sys

from cryptography.hazmat.primitives import serialization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pkmpeer  # noqa: E402  (the peer's framing, key checks and stream helpers)


def load_public_der(path):
    """The DER SubjectPublicKeyInfo of the key in a PEM file (public or private key)."""
    with open(path, "rb") as f:
        pem = f.read()
    try:
        pub = serialization.load_pem_public_key(pem)
    except ValueError:
        pub = serialization.load_pem_private_key(pem, password=None).public_key()
    return pub.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def serve_one(sock, server_der):
    """One impostor connection; returns the number of bytes echoed."""
    stream = pkmpeer.Stream(sock)
    stream.send(struct.pack(">i", len(server_der)) + server_der)
    pkmpeer.read_key(stream, "ClientKey")
    stream.recv_exact(pkmpeer.KEYSHARE_LEN, "the client's KeyShare")
    stream.send(os.urandom(pkmpeer.KEYSHARE_LEN))
    echoed = 0
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise pkmpeer.PeerError("timed out waiting for the client to close") from None
        except OSError:  # a reset: the client closed hard
            break
        if not data:
            break
        try:
            sock.sendall(data)
        except OSError:
            break
        echoed += len(data)
    return echoed


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True, help="PEM file with the real server's key")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    try:
        server_der = load_public_der(args.key)
        srv = pkmpeer.listen(args.port)
        print(f"PORT {srv.getsockname()[1]}", flush=True)
        srv.settimeout(args.timeout)
        for _ in range(args.connections):
            try:
                sock, _ = srv.accept()
            except socket.timeout:
                raise pkmpeer.PeerError("no client connected before the timeout") from None
            sock.settimeout(args.timeout)
            try:
                print(f"ECHOED {serve_one(sock, server_der)}", flush=True)
            finally:
                sock.close()
        srv.close()
    except (pkmpeer.PeerError, OSError, ValueError) as e:
        print(f"impostor: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

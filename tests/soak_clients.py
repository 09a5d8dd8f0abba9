#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# soak_clients.py: the client side of `make soak` (tests/soak.sh): for a bounded time, hundreds of
# PkmCom/TCP clients against one server on 127.0.0.1, built from tests/interop/pkmpeer.py.
"""Soak clients (run by tests/soak.sh; not a unit test).

  soak_clients.py --port P --keys K1.pem,K2.pem,... --seconds S [--workers W] [--threads T]
                  [--holders H] [--max-connects N] [--seed SEED]

W worker processes each run T client threads and keep H long-lived connections ("holders",
established at the start, one echo every few seconds, closed at the end: half with FIN, half with
RST). Each client thread loops until the time or the connection budget is spent, picking one
behaviour per connection:

  echo          handshake, 1..4 echoes of 0..4096 random bytes (each checked), clean close
  hs_partial    part of the ClientKey (sometimes before reading the ServerKey), then RST
  hs_keyshare   ClientKey + KeyShare (sometimes after reading the server's KeyShare), then RST
  mid_packet    handshake, maybe one echo, then half of a packet's ciphertext, then RST
  garbage       1..600 random bytes instead of a ClientKey, then RST or FIN
  connect_only  connect, then RST or FIN without a byte
  stop_reading  handshake, then 16 KiB packets sent and no reply read (SO_RCVBUF 4 KiB) until the
                server drops the connection (its send queue overflows): a send then fails
  silent        connect, say nothing for 1..3 s, FIN

Client keys are loaded from the given PEM files (made once by `pkmcom keygen`): no client makes
a key. Prints one JSON line with the totals on stdout; exit status 1 if any client failed in a
way the server is responsible for (connect refused or timed out, a handshake or echo of a
well-behaved client failing, a wrong echo, a non-reading client never dropped).
"""

import argparse
import json
import multiprocessing
import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "interop"))
import pkmpeer as pp  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402

TIMEOUT = 30.0  # seconds: bound on every socket operation of a client

BEHAVIOURS = [  # (name, weight)
    ("echo", 40),
    ("hs_partial", 14),
    ("hs_keyshare", 10),
    ("mid_packet", 14),
    ("garbage", 8),
    ("connect_only", 8),
    ("stop_reading", 2),
    ("silent", 1),
]
ABRUPT = {"hs_partial", "hs_keyshare", "mid_packet", "garbage", "connect_only", "stop_reading"}


class Failure(Exception):
    """A failure the server is responsible for."""


def rst_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def connect(port, rcvbuf=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(TIMEOUT)
    try:
        s.connect(("127.0.0.1", port))
    except OSError as e:
        s.close()
        raise Failure(f"connect: {e}") from None
    return s


def handshake(port, key, rcvbuf=0):
    sock = connect(port, rcvbuf)
    peer = pp.Peer(sock, "client", key)
    try:
        peer.handshake()
    except pp.PeerError as e:
        peer.close()
        raise Failure(f"handshake: {e}") from None
    return peer


def echo(peer, rng):
    pid = rng.randrange(0, 0xFF)
    content = rng.randbytes(rng.choice([0, 1, 15, 16, 17, rng.randrange(0, 4097)]))
    phash = pp.packet_hash(pid, content)
    try:
        peer.send(pid, phash, content)
        got = peer.recv()
    except pp.PeerError as e:
        raise Failure(f"echo: {e}") from None
    if got != (pid, phash, content):
        raise Failure(f"echo: wrong reply to Id {pid} ({len(content)} bytes)")


def run_echo(port, key, rng):
    peer = handshake(port, key)
    try:
        for _ in range(rng.randrange(1, 5)):
            echo(peer, rng)
    finally:
        peer.close()


def run_hs_partial(port, key, rng):
    sock = connect(port)
    msg = pp.key_message(key)
    try:
        if rng.random() < 0.7:
            pp.read_key(pp.Stream(sock), "ServerKey")
        sock.sendall(msg[: rng.randrange(1, len(msg))])
    except (OSError, pp.PeerError) as e:
        rst_close(sock)
        raise Failure(f"hs_partial: {e}") from None
    rst_close(sock)


def run_hs_keyshare(port, key, rng):
    sock = connect(port)
    stream = pp.Stream(sock)
    try:
        server_pub = pp.read_key(stream, "ServerKey")
        share, _, _ = pp.make_keyshare(server_pub)
        stream.send(pp.key_message(key) + share)
        if rng.random() < 0.5:
            stream.recv_exact(pp.KEYSHARE_LEN, "the server's KeyShare")
    except pp.PeerError as e:
        rst_close(sock)
        raise Failure(f"hs_keyshare: {e}") from None
    rst_close(sock)


def run_mid_packet(port, key, rng):
    peer = handshake(port, key)
    try:
        if rng.random() < 0.5:
            echo(peer, rng)
        content = rng.randbytes(rng.randrange(20, 5000))
        wire = peer.chan.seal(0x42, pp.packet_hash(0x42, content), content)
        peer.stream.send(wire[: rng.randrange(1, len(wire))])
    except pp.PeerError as e:
        rst_close(peer.stream.sock)
        raise Failure(f"mid_packet: {e}") from None
    rst_close(peer.stream.sock)


def run_garbage(port, key, rng):
    sock = connect(port)
    try:
        sock.sendall(rng.randbytes(rng.randrange(1, 601)))
    except OSError:
        pass  # the server may already have refused it and reset
    if rng.random() < 0.5:
        rst_close(sock)
    else:
        sock.close()


def run_connect_only(port, key, rng):
    sock = connect(port)
    if rng.random() < 0.5:
        rst_close(sock)
    else:
        sock.close()


def run_stop_reading(port, key, rng):
    """Sends until the server drops us. The kernel's socket buffers on both sides may take several
    MiB before the server has even read them, so the end is a send failing with a reset or a
    broken pipe (the server closed with our bytes unread), not a byte count; a send that times
    out (the server stopped reading without dropping us) or 64 MiB sent is a failure."""
    peer = handshake(port, key, rcvbuf=4096)
    content = rng.randbytes(16384)
    sent, why = 0, None
    try:
        while sent < (64 << 20):
            try:
                peer.send(0x50, 0, content)  # the echo server does not check hashes
            except pp.PeerError as e:
                why = str(e)
                break
            sent += len(content)
    finally:
        rst_close(peer.stream.sock)
    if why is None:
        raise Failure(f"stop_reading: {sent} bytes sent and never dropped")
    if "reset" not in why.lower() and "broken pipe" not in why.lower():
        raise Failure(f"stop_reading: after {sent} bytes: {why}")


def run_silent(port, key, rng):
    sock = connect(port)
    time.sleep(rng.uniform(1.0, 3.0))
    sock.close()


RUN = {
    "echo": run_echo,
    "hs_partial": run_hs_partial,
    "hs_keyshare": run_hs_keyshare,
    "mid_packet": run_mid_packet,
    "garbage": run_garbage,
    "connect_only": run_connect_only,
    "stop_reading": run_stop_reading,
    "silent": run_silent,
}


class Budget:
    """Shared across one worker's threads: the deadline and the connection budget."""

    def __init__(self, deadline, connects):
        self.deadline = deadline
        self.left = connects
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            if self.left <= 0 or time.monotonic() >= self.deadline:
                return False
            self.left -= 1
            return True


def load_keys(paths):
    keys = []
    for path in paths.split(","):
        with open(path, "rb") as f:
            keys.append(serialization.load_pem_private_key(f.read(), password=None))
    return keys


def worker(index, args, out):
    keys = load_keys(args.keys)
    rng0 = random.Random(args.seed * 1000 + index)
    names = [b[0] for b in BEHAVIOURS]
    weights = [b[1] for b in BEHAVIOURS]
    counts = {n: 0 for n in names}
    counts.update(failures=0, holders=0, holder_echoes=0)
    samples = []
    lock = threading.Lock()
    budget = Budget(time.monotonic() + args.seconds, args.max_connects // args.workers)

    def fail(msg):
        with lock:
            counts["failures"] += 1
            if len(samples) < 5:
                samples.append(msg)

    def client_thread(t):
        rng = random.Random(rng0.random() + t)
        key = keys[(index + t) % len(keys)]
        while budget.take():
            name = rng.choices(names, weights)[0]
            try:
                RUN[name](args.port, key, rng)
            except Failure as e:
                fail(f"{name}: {e}")
            except Exception as e:  # a bug here, not in the server: still reported
                fail(f"{name}: unexpected {type(e).__name__}: {e}")
            with lock:
                counts[name] += 1

    # Holders: established first, an echo every few seconds each, closed at the end.
    holders = []
    for h in range(args.holders):
        try:
            holders.append(handshake(args.port, keys[h % len(keys)]))
        except Failure as e:
            fail(f"holder {h}: {e}")
    counts["holders"] = len(holders)
    threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(args.threads)]
    for th in threads:
        th.start()
    hr = random.Random(rng0.random())
    end = time.monotonic() + args.seconds
    alive = list(holders)
    while time.monotonic() < end and alive:
        for p in list(alive):
            if time.monotonic() >= end:
                break
            try:
                echo(p, hr)
                counts["holder_echoes"] += 1
            except Failure as e:
                fail(f"holder echo: {e}")
                alive.remove(p)
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
    for th in threads:
        th.join()
    for i, p in enumerate(holders):
        if i % 2:
            rst_close(p.stream.sock)
        else:
            p.close()
    out.put((counts, samples))


def main(argv):
    ap = argparse.ArgumentParser(description="soak clients for tests/soak.sh")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--keys", required=True, help="client key PEM files, comma-separated")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=24)
    ap.add_argument("--holders", type=int, default=25)
    ap.add_argument("--max-connects", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    load_keys(args.keys)  # fail early on a bad key file
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(i, args, out))
             for i in range(args.workers)]
    for p in procs:
        p.start()
    total, samples = {}, []
    for _ in procs:
        counts, s = out.get()
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
        samples += s
    for p in procs:
        p.join()
    connects = sum(total[b[0]] for b in BEHAVIOURS) + total["holders"]
    abrupt = sum(total[n] for n in ABRUPT) + total["holders"] // 2
    summary = {
        "clients_at_once": args.workers * (args.threads + args.holders),
        "connects": connects,
        "abrupt_disconnects": abrupt,
        "by_behaviour": {b[0]: total[b[0]] for b in BEHAVIOURS},
        "holders": total["holders"],
        "holder_echoes": total["holder_echoes"],
        "failures": total["failures"],
        "failure_samples": samples[:5],
    }
    print(json.dumps(summary))
    return 1 if total["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# pkmpeer.py: an independent PkmCom/TCP peer, written from WIRE-PROFILE.md and spec/TCP.md only
# (never from libpkmcom's sources), used by tests/test_interop.c to prove the two interoperate.
"""PkmCom/TCP test peer (WIRE-PROFILE version 2).

  pkmpeer.py server --port P [--key PEM] [--secret S] [--count N]
                    [--rekey-after N --rekey-secret S2 --trigger-id ID] [--v1-keys] [--stray-ff]
                    [--bad-key KIND]
  pkmpeer.py client --port P [--key PEM] [--secret S] [--count N] [--size B[,B...]]
                    [--expect-rekey --trigger-id ID --rekey-secret S2] [--v1-keys]
                    [--reflect-confirm] [--stray-ff] [--bad-key KIND]
  pkmpeer.py selftest
  pkmpeer.py check-vectors FILE

Exit status 0 only on full success; any failure prints one line on stderr and exits 1.
Test convention: application packets carry Byte-Array-like content, so Hash = Id*31 +
hashsum(content bytes); the server checks that on every packet it echoes, the client on every
echo it receives. Only the standard library and `cryptography` are used.

Version 2 (WIRE-PROFILE section 7): one AES key per direction, K_cs = SHA-256(M || S || 'C') and
K_sc = SHA-256(M || S || 'S'), both chains from IV; a ServerKey/ClientKey must have the public
exponent 65537 and be the canonical DER; a 0xFF packet outside step 5 is a protocol error.
--v1-keys (a test of the other side only) derives version 1's single K = SHA-256(M || S) for
both directions: such a peer must fail at step 5 against a version-2 one. --stray-ff (test
only) sends one more, valid, encrypted 0xFF packet right after the handshake: the other side must
close the connection (a 0xFF packet outside step 5 is a protocol error). --bad-key KIND (test
only) sends, as ServerKey or ClientKey, our modulus with a refused exponent (e3, n-2, 65539) or a
non-canonical encoding of our key (no-null, long-len), and then requires the peer to close
without sending one more byte: no KeyShare, so no RSA operation was spent on the key.
"""

import argparse
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

M32 = 0xFFFFFFFF
HEADER = 9  # Id (Byte) | Hash (Unsigned Int) | Size (Int)
BLOCK = 16
MAGIC = 0x504B4D00
HS_ID = 0xFF
HS_HASH = (HS_ID * 31 + MAGIC) & M32  # 0x504B6BE1 (WIRE-PROFILE section 2)
HALF = 128  # each half of M
RSA_BYTES = 256  # one RSA-2048 ciphertext
KEYSHARE_LEN = 2 * RSA_BYTES + BLOCK  # 528
MAX_KEY_LEN = 1024
DEFAULT_MAX_SIZE = 1 << 20
DEFAULT_TIMEOUT = 10.0


class PeerError(Exception):
    """Any failure: the connection is closed with no message (section 3 step 5, section 4)."""


# ---------------------------------------------------------------- APL hash, packet framing


def hashsum_bytes(data):
    """hashsum() of n unsigned Bytes: 0 for n = 0, else the fold h = h*31 + b from the first."""
    h = 0
    for b in data:  # 0*31 + b0 == b0, so starting from 0 gives the same left fold
        h = (h * 31 + b) & M32
    return h


def packet_hash(pid, content):
    return (pid * 31 + hashsum_bytes(content)) & M32


def frame(pid, phash, content):
    """Plaintext of one packet: 9-byte header, content, PKCS#7 padding (1..16 bytes)."""
    body = struct.pack(">BIi", pid, phash, len(content)) + bytes(content)
    pad = BLOCK - len(body) % BLOCK  # equals ((9+Size)/16+1)*16 - (9+Size): 1..16
    return body + bytes([pad]) * pad


def wire_length(size):
    return ((HEADER + size) // BLOCK + 1) * BLOCK


HS_PLAIN = struct.pack(">BIiI", HS_ID, HS_HASH, 4, MAGIC)  # the 13 plaintext bytes


# ---------------------------------------------------------------- stream and channel


class Stream:
    """Exact reads and full writes on a socket that has a timeout. With dribble, every write goes
    out in 1..7-byte pieces (TCP_NODELAY), to exercise the peer's reassembly."""

    def __init__(self, sock, dribble=False):
        self.sock = sock
        self.timeout = sock.gettimeout()
        self.deadline = None  # set while a handshake runs: it bounds the handshake as a whole
        self.dribble = dribble
        if dribble:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data):
        try:
            if not self.dribble:
                self.sock.sendall(data)
            i = 0
            while self.dribble and i < len(data):
                n = 1 + os.urandom(1)[0] % 7
                self.sock.sendall(data[i : i + n])
                i += n
        except OSError as e:
            raise PeerError(f"send failed: {e}") from None

    def recv_exact(self, n, what, eof_ok=False):
        """n bytes, or None if eof_ok and the peer closed before the first byte."""
        buf = bytearray()
        while len(buf) < n:
            try:
                if self.deadline is not None:
                    left = self.deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout
                    self.sock.settimeout(min(self.timeout, left))
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                raise PeerError(f"timed out reading {what}") from None
            except OSError as e:
                raise PeerError(f"reading {what}: {e}") from None
            if not chunk:
                if eof_ok and not buf:
                    return None
                raise PeerError(f"peer closed the connection while we read {what}")
            buf += chunk
        return bytes(buf)


class Channel:
    """AES-256-CBC, one chain per direction (section 4): what we send under send_key, what we
    receive under recv_key, both chains started from IV. The encryptor/decryptor objects are
    kept, so each update() continues its direction's chain. A client sends under K_cs and
    receives under K_sc; a server the other way round."""

    def __init__(self, send_key, recv_key, iv, max_size=DEFAULT_MAX_SIZE):
        self.enc = Cipher(algorithms.AES(send_key), modes.CBC(iv)).encryptor()
        self.dec = Cipher(algorithms.AES(recv_key), modes.CBC(iv)).decryptor()
        self.max_size = max_size

    def seal(self, pid, phash, content):
        return self.enc.update(frame(pid, phash, content))

    def send(self, stream, pid, phash, content):
        stream.send(self.seal(pid, phash, content))

    def recv(self, stream, eof_ok=False):
        """One packet (id, hash, content), or None on a clean EOF between packets if eof_ok."""
        first = stream.recv_exact(BLOCK, "a packet", eof_ok)
        if first is None:
            return None
        plain = self.dec.update(first)
        pid, phash, size = struct.unpack(">BIi", plain[:HEADER])
        if size < 0:
            raise PeerError(f"negative packet Size {size}")
        if size > self.max_size:
            raise PeerError(f"packet Size {size} above the maximum {self.max_size}")
        total = wire_length(size)
        if total > BLOCK:
            plain += self.dec.update(stream.recv_exact(total - BLOCK, "a packet's rest"))
        pad = total - HEADER - size
        if plain[-pad:] != bytes([pad]) * pad:
            raise PeerError("bad PKCS#7 padding")
        return pid, phash, plain[HEADER : HEADER + size]

    def send_confirm(self, stream):
        self.send(stream, HS_ID, HS_HASH, struct.pack(">I", MAGIC))

    def recv_confirm(self, stream):
        """The 0xFF packet is exactly one block (13 bytes + 3 pad bytes): read that block only,
        never more on the word of a header that may be garbage under a wrong key. Returns the
        ciphertext block."""
        ct = stream.recv_exact(BLOCK, "the 0xFF confirmation")
        if self.dec.update(ct) != HS_PLAIN + b"\x03" * 3:
            raise PeerError("handshake failed: the 0xFF confirmation did not decrypt correctly")
        return ct


# ---------------------------------------------------------------- keys and KeyShare


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_message(private_key):
    """ServerKey / ClientKey: Int n, then the DER SubjectPublicKeyInfo."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return struct.pack(">i", len(der)) + der


def der_header(der, at=0):
    """(header length, content length) of the DER SEQUENCE at der[at:]."""
    if len(der) < at + 2 or der[at] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    if der[at + 1] < 0x80:
        return 2, der[at + 1]
    k = der[at + 1] & 0x7F
    if not 1 <= k <= 2 or len(der) < at + 2 + k:
        raise ValueError("bad DER length")
    return 2 + k, int.from_bytes(der[at + 2 : at + 2 + k], "big")


def der_length(der):
    """Total length of the DER SEQUENCE at the start of der (tag, length octets, contents)."""
    return sum(der_header(der))


RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")  # 1.2.840.113549.1.1.1


def is_rsa_encryption(der):
    """The AlgorithmIdentifier's OID is rsaEncryption (cryptography also loads RSA-PSS keys, whose
    OID restricts them to PSS signatures, as RSAPublicKey)."""
    outer, _ = der_header(der)
    inner, _ = der_header(der, outer)
    return der[outer + inner : outer + inner + len(RSA_ENCRYPTION_OID)] == RSA_ENCRYPTION_OID


PUBLIC_EXPONENT = 65537  # the only one accepted (section 3 step 2)


def read_key(stream, what):
    """Reads ServerKey/ClientKey and applies every check of section 3 step 2, all of them before
    the key is used for anything: n in 1..1024, canonical DER (the parsed key re-encoded by
    `cryptography` must give back exactly the bytes received: rsaEncryption with NULL
    parameters, minimal lengths), rsaEncryption, an odd 2048-bit modulus, exponent 65537."""
    (n,) = struct.unpack(">i", stream.recv_exact(4, what + " length"))
    if not 1 <= n <= MAX_KEY_LEN:
        raise PeerError(f"{what}: length {n} outside 1..{MAX_KEY_LEN}")
    der = stream.recv_exact(n, what)
    try:
        if der_length(der) != n:  # the n bytes must be exactly one DER value
            raise ValueError("bytes after the SubjectPublicKeyInfo")
        key = serialization.load_der_public_key(der)
    except Exception:
        raise PeerError(f"{what}: DER SubjectPublicKeyInfo does not parse") from None
    if not isinstance(key, rsa.RSAPublicKey) or not is_rsa_encryption(der):
        raise PeerError(f"{what}: not an rsaEncryption key")
    canonical = key.public_bytes(serialization.Encoding.DER,
                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    if canonical != der:
        raise PeerError(f"{what}: not the canonical DER encoding of its key")
    nums = key.public_numbers()
    if nums.n.bit_length() != 2048 or nums.n % 2 == 0:
        raise PeerError(f"{what}: modulus of {nums.n.bit_length()} bits (or even), not an odd "
                        "2048-bit one")
    if nums.e != PUBLIC_EXPONENT:
        raise PeerError(f"{what}: public exponent {nums.e}, not {PUBLIC_EXPONENT}")
    return key


def make_keyshare(peer_public, corrupt=False):
    """(528-byte KeyShare, M, IV): two PKCS#1 v1.5 ciphertexts of M's halves, then the IV.
    corrupt (a test of the peer's implicit rejection) flips one bit of the first ciphertext."""
    m, iv = os.urandom(2 * HALF), os.urandom(BLOCK)
    cts = [peer_public.encrypt(m[i : i + HALF], padding.PKCS1v15()) for i in (0, HALF)]
    assert all(len(c) == RSA_BYTES for c in cts)
    share = bytearray(cts[0] + cts[1] + iv)
    if corrupt:
        share[100] ^= 0x01
    return bytes(share), m, iv


def open_keyshare(private_key, share):
    """(M, IV) from a received KeyShare. A half that fails to decrypt or is not 128 bytes is
    replaced by 128 random bytes, silently (implicit rejection): the handshake then fails at the
    0xFF step like a wrong key would. (Python cannot promise constant time; this is a test peer.)"""
    halves = []
    for i in (0, RSA_BYTES):
        try:
            half = private_key.decrypt(share[i : i + RSA_BYTES], padding.PKCS1v15())
        except ValueError:
            half = b""
        halves.append(half if len(half) == HALF else os.urandom(HALF))
    return halves[0] + halves[1], share[2 * RSA_BYTES :]


def xor(a, b):
    assert len(a) == len(b)
    return bytes(x ^ y for x, y in zip(a, b))


DIR_CS, DIR_SC = b"\x43", b"\x53"  # 'C': client to server, 'S': server to client


def direction_keys(m, secret=b""):
    """(K_cs, K_sc) = (SHA-256(M || S || 0x43), SHA-256(M || S || 0x53)) (section 3 step 4)."""
    return (hashlib.sha256(m + secret + DIR_CS).digest(),
            hashlib.sha256(m + secret + DIR_SC).digest())


def derive(m_client, m_server, iv_client, iv_server, secret=b"", v1=False):
    """(K_cs, K_sc, IV): M = Mc XOR Ms, the direction keys from M and S, IV = IVc XOR IVs.
    v1 (test only): version 1's single K = SHA-256(M || S) for both directions."""
    m = xor(m_client, m_server)
    if v1:
        k = hashlib.sha256(m + secret).digest()
        return k, k, xor(iv_client, iv_server)
    k_cs, k_sc = direction_keys(m, secret)
    return k_cs, k_sc, xor(iv_client, iv_server)


# ---------------------------------------------------------------- one connection, either role


class Peer:
    """One connection. Test behaviours: late = read the peer's KeyShare before sending ours (checks
    that the peer sends its own without waiting); corrupt = send a KeyShare whose first ciphertext
    does not decrypt; stray = (client) send a packet right after reading the trigger, before the
    new KeyShare, which section 5 says must make the re-establishment fail."""

    def __init__(self, sock, role, own_key, secret=b"", max_size=DEFAULT_MAX_SIZE,
                 late=False, corrupt=False, stray=False, dribble=False, v1=False):
        self.stream = Stream(sock, dribble)
        self.late, self.corrupt, self.stray, self.v1 = late, corrupt, stray, v1
        self.last_confirm = None  # (client) the ciphertext of the server's 0xFF answer
        self.role = role
        self.own_key = own_key  # server: long-term key; client: this connection's ephemeral key
        self.peer_key = None
        self.secret = secret
        self.max_size = max_size
        self.chan = None

    def _keyshares(self, secret):
        """Step 3-4 with both keys known: exchange KeyShares in this role's order, derive K, IV."""
        mine, m_own, iv_own = make_keyshare(self.peer_key, self.corrupt)
        if not self.late:
            self.stream.send(mine)  # both roles send theirs without waiting for the peer's
        theirs = self.stream.recv_exact(KEYSHARE_LEN, "the peer's KeyShare")
        if self.late:
            self.stream.send(mine)
        m_peer, iv_peer = open_keyshare(self.own_key, theirs)
        if self.role == "client":
            k_cs, k_sc, iv = derive(m_own, m_peer, iv_own, iv_peer, secret, self.v1)
            self.chan = Channel(k_cs, k_sc, iv, self.max_size)
        else:
            k_cs, k_sc, iv = derive(m_peer, m_own, iv_peer, iv_own, secret, self.v1)
            self.chan = Channel(k_sc, k_cs, iv, self.max_size)

    def _confirm(self):
        """Step 5: the client sends 0xFF and checks the answer; the server checks and answers."""
        if self.role == "client":
            self.chan.send_confirm(self.stream)
            self.last_confirm = self.chan.recv_confirm(self.stream)
        else:
            self.chan.recv_confirm(self.stream)
            self.chan.send_confirm(self.stream)

    def _bounded(self, steps):
        """Runs a handshake under one deadline of the socket's timeout (section 3 step 5)."""
        self.stream.deadline = time.monotonic() + self.stream.timeout
        try:
            steps()
        finally:
            self.stream.deadline = None
            self.stream.sock.settimeout(self.stream.timeout)

    def handshake(self):
        self._bounded(self._handshake)

    def _handshake(self):
        if self.role == "server":
            self.stream.send(key_message(self.own_key))
            self.peer_key = read_key(self.stream, "ClientKey")
        else:
            self.peer_key = read_key(self.stream, "ServerKey")
            self.stream.send(key_message(self.own_key))
        self._keyshares(self.secret)
        self._confirm()

    def bad_key_handshake(self, kind):
        """Test only: offers a refused key (BAD_KEYS[kind]) in this role's key message, then
        requires the peer to close with nothing more sent: a peer that checks the key before
        using it sends no KeyShare (server) and no ClientKey (client) for it."""
        n = self.own_key.public_key().public_numbers().n
        der = BAD_KEYS[kind](n)
        bad = struct.pack(">i", len(der)) + der
        if self.role == "server":
            self.stream.send(bad)
        else:
            read_key(self.stream, "ServerKey")
            self.stream.send(bad)
        what = "ServerKey" if self.role == "server" else "ClientKey"
        got = self.stream.recv_exact(1, f"the peer's answer to a refused {what}", eof_ok=True)
        if got is not None:
            raise PeerError(f"the peer answered a {what} with {kind} instead of closing")

    def send(self, pid, phash, content):
        if pid == HS_ID:
            raise PeerError("Id 0xFF is the handshake packet")
        self.chan.send(self.stream, pid, phash, content)

    def send_stray_ff(self):
        """Test only: a correctly encrypted 0xFF packet outside step 5, which is a protocol error."""
        self.chan.send_confirm(self.stream)

    def recv(self, eof_ok=False):
        pkt = self.chan.recv(self.stream, eof_ok)
        if pkt is not None and pkt[0] == HS_ID:
            raise PeerError("an 0xFF packet outside the handshake")
        return pkt

    def rekey_server(self, trigger_id, secret):
        """Section 5, server: the trigger packet, then at once our new KeyShare in the clear."""
        self.send(trigger_id, trigger_id * 31 & M32, b"")
        self._bounded(lambda: (self._keyshares(secret), self._confirm()))

    def rekey_client(self, secret):
        """Section 5, client, called once the trigger packet was read: our new KeyShare first."""
        if self.stray:
            self.send(0x42, 0x42 * 31 & M32, b"")
        self._bounded(lambda: (self._keyshares(secret), self._confirm()))

    def close(self):
        try:
            self.stream.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- the two CLI roles


def listen(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    return srv


def run_server(srv, args, key, out=sys.stdout):
    """Accepts one connection on the listening socket srv, handshakes, echoes packets."""
    srv.settimeout(args.timeout)
    try:
        sock, _ = srv.accept()
    except socket.timeout:
        raise PeerError("no client connected before the timeout") from None
    finally:
        srv.close()
    sock.settimeout(args.timeout)
    peer = Peer(sock, "server", key, args.secret, late=args.late_keyshare,
                corrupt=args.corrupt_keyshare, dribble=args.dribble, v1=args.v1_keys)
    try:
        if args.bad_key:
            peer.bad_key_handshake(args.bad_key)
            print(f"OK server: the client closed on a ServerKey with {args.bad_key}", file=out)
            return
        peer.handshake()
        if args.stray_ff:
            peer.send_stray_ff()
        echoed, rekeyed = 0, False
        while args.count is None or echoed < args.count:
            if args.rekey_after is not None and echoed == args.rekey_after and not rekeyed:
                peer.rekey_server(args.trigger_id, args.rekey_secret)
                rekeyed = True
                continue
            pkt = peer.recv(eof_ok=True)
            if pkt is None:
                break
            pid, phash, content = pkt
            if phash != packet_hash(pid, content):
                raise PeerError(f"packet {echoed}: Hash {phash:#x} is not Id*31+hashsum(content)")
            peer.send(pid, phash, content)
            echoed += 1
        if args.count is not None and echoed < args.count:
            raise PeerError(f"client closed after {echoed} of {args.count} packets")
        if args.rekey_after is not None and not rekeyed:
            raise PeerError(f"client closed after {echoed} packets, before re-establishment")
    finally:
        peer.close()
    print(f"OK server echoed {echoed} packets" + (", re-established" if rekeyed else ""), file=out)


def expect_close(peer, what, out):
    """Half-closes and expects the server to close without sending a byte."""
    peer.stream.sock.shutdown(socket.SHUT_WR)
    if peer.stream.recv_exact(1, f"the server's answer to {what}", eof_ok=True) is not None:
        raise PeerError(f"the server answered {what} instead of closing")
    print(f"OK client: the server closed the connection on {what}", file=out)


def reflect(peer, out):
    """Sends the server's own 0xFF answer back to it (what a version-1 reflection would do):
    under version 2 the server decrypts it under K_cs, where it is garbage, and must close the
    connection without sending anything."""
    peer.stream.send(peer.last_confirm)
    expect_close(peer, "its reflected 0xFF answer", out)


def run_client(args, out=sys.stdout):
    try:
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    except OSError as e:
        raise PeerError(f"connect to 127.0.0.1:{args.port}: {e}") from None
    sock.settimeout(args.timeout)
    peer = Peer(sock, "client", args.key or new_key(), args.secret, late=args.late_keyshare,
                corrupt=args.corrupt_keyshare, stray=args.stray_before_rekey, dribble=args.dribble,
                v1=args.v1_keys)
    sizes = [int(s) for s in str(args.size).split(",")]
    ids = [i for i in range(0xFF) if i != args.trigger_id]
    sent = 0

    def exchange(n):
        nonlocal sent
        for _ in range(n):
            pid, content = ids[sent % len(ids)], os.urandom(sizes[sent % len(sizes)])
            phash = packet_hash(pid, content)
            peer.send(pid, phash, content)
            echo = peer.recv()
            if echo != (pid, phash, content):
                raise PeerError(f"packet {sent} (Id {pid}, {len(content)} bytes): bad echo")
            sent += 1

    try:
        if args.bad_key:
            peer.bad_key_handshake(args.bad_key)
            print(f"OK client: the server closed on a ClientKey with {args.bad_key}", file=out)
            return
        peer.handshake()
        if args.reflect_confirm:
            reflect(peer, out)
            return
        if args.stray_ff:
            peer.send_stray_ff()
            expect_close(peer, "a 0xFF packet after the handshake", out)
            return
        exchange(args.count)
        if args.expect_rekey:
            pid, phash, content = peer.recv()
            if (pid, phash, content) != (args.trigger_id, args.trigger_id * 31 & M32, b""):
                raise PeerError(f"expected the trigger packet {args.trigger_id}, got Id {pid}")
            peer.rekey_client(args.rekey_secret)
            exchange(args.count)
    finally:
        peer.close()
    print(f"OK client exchanged {sent} packets" + (", re-established" if args.expect_rekey else ""),
          file=out)


# ---------------------------------------------------------------- selftest


class _Bytes:
    """A Stream stand-in over fixed bytes, for the key checks."""

    def __init__(self, data):
        self.data = data

    def recv_exact(self, n, what, eof_ok=False):
        if len(self.data) < n:
            raise PeerError(f"short {what}")
        out, self.data = self.data[:n], self.data[n:]
        return out


def der_tlv(tag, body, long_form=False):
    """One DER (or, with long_form, BER-only non-minimal length) tag-length-value."""
    n = len(body)
    if n < 0x80 and not long_form:
        return bytes([tag, n]) + body
    ln = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    return bytes([tag, 0x80 | len(ln)]) + ln + body


def der_uint(v, long_form=False):
    b = v.to_bytes((v.bit_length() + 8) // 8, "big")  # a leading 0 when the top bit is set
    return der_tlv(0x02, b, long_form)


def spki(n, e, null_params=True, long_form=False):
    """A SubjectPublicKeyInfo for (n, e), built by hand: rsaEncryption, NULL parameters unless
    null_params is false, and with long_form the exponent's length in long form (81 03: BER,
    not the minimal DER length)."""
    alg = der_tlv(0x30, RSA_ENCRYPTION_OID + (b"\x05\x00" if null_params else b""))
    rsakey = der_tlv(0x30, der_uint(n) + der_uint(e, long_form))
    return der_tlv(0x30, alg + der_tlv(0x03, b"\x00" + rsakey))


# Refused keys for --bad-key, from our own modulus n (section 3 step 2).
BAD_KEYS = {
    "e3": lambda n: spki(n, 3),
    "n-2": lambda n: spki(n, n - 2),
    "65539": lambda n: spki(n, 2**16 + 3),
    "no-null": lambda n: spki(n, 65537, null_params=False),
    "long-len": lambda n: spki(n, 65537, long_form=True),
}


def selftest_key_checks(key):
    """ServerKey/ClientKey receiver checks (section 3): one accepted key, then refusals."""
    good = key_message(key)
    assert read_key(_Bytes(good), "key").key_size == 2048
    n = key.public_key().public_numbers().n
    keymsg = lambda der: struct.pack(">i", len(der)) + der  # noqa: E731
    assert keymsg(spki(n, 65537)) == good  # the hand-built encoding is the canonical one
    hand_made = [keymsg(spki(n, e)) for e in (3, n - 2, 2**16 + 3, 2**16 + 1 + 2**32)]
    hand_made += [keymsg(spki(n, 65537, null_params=False)), keymsg(spki(n, 65537, long_form=True)),
                  keymsg(spki(n + 1, 65537)), keymsg(spki(n >> 1, 65537))]
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
    files = {}
    for name in ("rsa2048_e3", "rsa1024", "rsa4096", "rsa_pss2048", "ec_p256"):
        path = os.path.join(data, name + ".pub.der")
        if os.path.exists(path):
            with open(path, "rb") as f:
                files[name] = struct.pack(">i", os.path.getsize(path)) + f.read()
    bad = hand_made + [struct.pack(">i", 0), struct.pack(">i", -1), struct.pack(">i", 1025) + bytes(1025),
           struct.pack(">i", len(good) - 3) + good[4:] + b"\0",  # a byte after the DER
           good[:-1] + b"\x00"]  # e = 65537 -> 65536: even
    for msg in bad + list(files.values()):
        try:
            read_key(_Bytes(msg), "key")
        except PeerError:
            continue
        raise AssertionError(f"key message accepted: {msg[:12].hex()}...")


def selftest():
    assert HS_PLAIN == bytes.fromhex("FF504B6BE10000000450 4B4D00".replace(" ", "")), HS_PLAIN.hex()
    assert frame(HS_ID, HS_HASH, struct.pack(">I", MAGIC)) == HS_PLAIN + b"\x03" * 3
    assert hashsum_bytes(b"") == 0 and hashsum_bytes(b"\x07") == 7
    assert hashsum_bytes(b"ab") == 97 * 31 + 98
    assert [wire_length(s) for s in (0, 6, 7, 22, 23)] == [16, 16, 32, 32, 48]
    server_key, client_key = new_key(), new_key()
    selftest_key_checks(server_key)

    def pair(sv, cl):
        """Runs server args sv against client args cl in two threads; returns (srv_err, cli_err)."""
        srv = listen(0)
        base = dict(port=srv.getsockname()[1], timeout=10.0, count=None, secret=b"",
                    trigger_id=0x05, rekey_secret=b"", rekey_after=None, expect_rekey=False,
                    size="0,1,15,16,17,1000,65536", key=client_key, late_keyshare=False,
                    corrupt_keyshare=False, stray_before_rekey=False, dribble=False,
                    v1_keys=False, reflect_confirm=False, stray_ff=False, bad_key=None)
        errs = {}
        sink = open(os.devnull, "w")

        def run(name, fn, *a):
            try:
                fn(*a, out=sink)
            except PeerError as e:
                errs[name] = str(e)

        t = threading.Thread(target=run, args=("server", run_server, srv,
                                               argparse.Namespace(**{**base, **sv}), server_key))
        t.start()
        run("client", run_client, argparse.Namespace(**{**base, **cl}))
        t.join(30)
        sink.close()
        return errs.get("server"), errs.get("client")

    cases = [
        ("plain", {}, {"count": 7, "key": None}, True),  # this one generates its own key
        ("secret", {"secret": b"hunter2"}, {"count": 7, "secret": b"hunter2"}, True),
        ("wrong secret", {"secret": b"a"}, {"count": 1, "secret": b"b"}, False),
        ("rekey", {"rekey_after": 3}, {"count": 3, "expect_rekey": True}, True),
        ("rekey new secret", {"secret": b"s", "rekey_after": 2, "rekey_secret": b"t"},
         {"count": 2, "secret": b"s", "expect_rekey": True, "rekey_secret": b"t"}, True),
        ("rekey wrong secret", {"rekey_after": 1, "rekey_secret": b"x"},
         {"count": 1, "expect_rekey": True, "rekey_secret": b"y"}, False),
        ("late client, dribbling server", {"rekey_after": 1, "dribble": True},
         {"count": 1, "expect_rekey": True, "late_keyshare": True}, True),
        ("late server, dribbling client", {"late_keyshare": True, "rekey_after": 1},
         {"count": 1, "expect_rekey": True, "dribble": True, "size": "300"}, True),
        ("corrupt KeyShare", {}, {"count": 1, "corrupt_keyshare": True}, False),
        ("stray packet before the new KeyShare", {"rekey_after": 1},
         {"count": 1, "expect_rekey": True, "stray_before_rekey": True}, False),
        ("version-1 client", {}, {"count": 1, "v1_keys": True}, False),
        ("version-1 server", {"v1_keys": True}, {"count": 1}, False),
        ("both version 1 (the derivation switch works)", {"v1_keys": True},
         {"count": 3, "v1_keys": True}, True),
        ("server's answer reflected", {}, {"reflect_confirm": True}, "server"),
        ("0xFF from the client after the handshake", {}, {"stray_ff": True}, "server"),
        ("0xFF from the server after the handshake", {"stray_ff": True}, {"count": 1}, "client"),
    ] + [(f"ClientKey {k}", {}, {"bad_key": k}, "server") for k in BAD_KEYS] + [
        (f"ServerKey {k}", {"bad_key": k}, {}, "client") for k in BAD_KEYS]
    for name, sv, cl, ok in cases:
        se, ce = pair(sv, cl)
        if ok in ("server", "client"):  # only that side must fail
            if not (se if ok == "server" else ce) or (ce if ok == "server" else se):
                raise PeerError(f"selftest {name}: only the {ok} must fail (server: {se}; "
                                f"client: {ce})")
            continue
        if ok and (se or ce):
            raise PeerError(f"selftest {name}: server: {se}; client: {ce}")
        if not ok and not (se and ce):
            raise PeerError(f"selftest {name}: should fail on both sides (server: {se}; client: {ce})")
    print(f"OK selftest: {len(cases)} connection cases")


# ---------------------------------------------------------------- test vectors
#
# Format of tests/interop/sample-vectors.json (made with the openssl CLI alone by
# make-sample-vectors.sh; docs/test-vectors/ has its own format and checker):
#   {"kdf": [{"m": hex256, "secret": hex (optional), "k_cs": hex32, "k_sc": hex32}],
#    "keyshare": [{"private_key_pem": PEM (or "private_key_file": path relative to the JSON),
#                  "keyshare": hex528, "m": hex256, "iv": hex16}],
#    "handshake": [{"server_key_pem"|"server_key_file", "client_key_pem"|"client_key_file",
#                   "client_keyshare": hex528, "server_keyshare": hex528, "secret": hex (optional),
#                   "m": hex256, "k_cs": hex32, "k_sc": hex32, "iv": hex16}],
#    "channel": [{"k": hex32, "iv": hex16,   (one direction's chain under its key)
#                 "packets": [{"id": int, "hash": int (default Id*31+hashsum), "content": hex}
#                             or a hex string of one packet's unpadded plaintext (header+content)],
#                 "ciphertext": hex of the whole stream, packet after packet}]}
# Hex strings may contain spaces. Every entry of every known section is checked.


def unhex(s):
    return bytes.fromhex("".join(s.split()))


def _private_key(entry, prefix, base):
    if prefix + "_pem" in entry:
        pem = entry[prefix + "_pem"].encode()
    else:
        with open(os.path.join(base, entry[prefix + "_file"]), "rb") as f:
            pem = f.read()
    return serialization.load_pem_private_key(pem, password=None)


def _expect(what, got, want):
    if got != want:
        raise PeerError(f"{what}: got {got.hex()}, expected {want.hex()}")


def check_kdf(entry, base):
    k_cs, k_sc = direction_keys(unhex(entry["m"]), unhex(entry.get("secret", "")))
    _expect("K_cs", k_cs, unhex(entry["k_cs"]))
    _expect("K_sc", k_sc, unhex(entry["k_sc"]))


def check_keyshare(entry, base):
    share = unhex(entry["keyshare"])
    if len(share) != KEYSHARE_LEN:
        raise PeerError(f"KeyShare of {len(share)} bytes, not {KEYSHARE_LEN}")
    m, iv = open_keyshare(_private_key(entry, "private_key", base), share)
    _expect("M (decrypted halves)", m, unhex(entry["m"]))
    _expect("IV", iv, unhex(entry["iv"]))


def check_handshake(entry, base):
    mc, ivc = open_keyshare(_private_key(entry, "server_key", base), unhex(entry["client_keyshare"]))
    ms, ivs = open_keyshare(_private_key(entry, "client_key", base), unhex(entry["server_keyshare"]))
    k_cs, k_sc, iv = derive(mc, ms, ivc, ivs, unhex(entry.get("secret", "")))
    _expect("M", xor(mc, ms), unhex(entry["m"]))
    _expect("K_cs", k_cs, unhex(entry["k_cs"]))
    _expect("K_sc", k_sc, unhex(entry["k_sc"]))
    _expect("IV", iv, unhex(entry["iv"]))


def check_channel(entry, base):
    chan = Channel(unhex(entry["k"]), unhex(entry["k"]), unhex(entry["iv"]))
    stream = b""
    for p in entry["packets"]:
        if isinstance(p, str):  # unpadded plaintext: header + content
            raw = unhex(p)
            pid, phash, size = struct.unpack(">BIi", raw[:HEADER])
            if size != len(raw) - HEADER:
                raise PeerError(f"plaintext packet with Size {size} but {len(raw) - HEADER} bytes")
            stream += chan.seal(pid, phash, raw[HEADER:])
        else:
            content = unhex(p.get("content", ""))
            stream += chan.seal(p["id"], p.get("hash", packet_hash(p["id"], content)), content)
    _expect("ciphertext stream", stream, unhex(entry["ciphertext"]))


CHECKERS = {"kdf": check_kdf, "keyshare": check_keyshare, "handshake": check_handshake,
            "channel": check_channel}


def check_vectors(path):
    with open(path) as f:
        doc = json.load(f)
    base, done = os.path.dirname(os.path.abspath(path)), 0
    for section, entries in doc.items():
        if section not in CHECKERS:
            print(f"skipped section {section!r} (no checker)")
            continue
        for i, entry in enumerate(entries):
            try:
                CHECKERS[section](entry, base)
            except PeerError as e:
                raise PeerError(f"{section}[{i}]: {e}") from None
            except (KeyError, ValueError, TypeError, struct.error) as e:
                raise PeerError(f"{section}[{i}]: malformed entry: {e!r}") from None
            done += 1
    if done == 0:
        raise PeerError(f"{path}: no vector checked")
    print(f"OK {done} vectors")


# ---------------------------------------------------------------- main


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    secret = lambda s: s.encode("utf-8")  # noqa: E731  (a password's UTF-8 bytes)
    for name in ("server", "client"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--secret", type=secret, default=b"")
        p.add_argument("--count", type=int, default=None if name == "server" else 5)
        p.add_argument("--trigger-id", type=lambda s: int(s, 0), default=0x05)
        p.add_argument("--rekey-secret", type=secret, default=b"")
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
        p.add_argument("--late-keyshare", action="store_true",
                       help="read the peer's KeyShare before sending ours")
        p.add_argument("--corrupt-keyshare", action="store_true",
                       help="send a KeyShare whose first ciphertext does not decrypt")
        p.add_argument("--dribble", action="store_true", help="write in 1..7-byte pieces")
        p.add_argument("--v1-keys", action="store_true",
                       help="test only: one key K = SHA-256(M || S) both ways, as version 1")
        p.add_argument("--stray-ff", action="store_true",
                       help="test only: send a 0xFF packet right after the handshake")
        p.add_argument("--bad-key", choices=sorted(BAD_KEYS),
                       help="test only: offer a refused key and require the peer to close")
        p.add_argument("--key", help="PEM private key (default: a fresh RSA-2048 key; a client's "
                       "key should be fresh per connection, a file only saves test time)")
    srv = sub.choices["server"]
    srv.add_argument("--rekey-after", type=int, default=None)
    cli = sub.choices["client"]
    cli.add_argument("--size", default="16", help="content size, or a comma list to cycle")
    cli.add_argument("--expect-rekey", action="store_true")
    cli.add_argument("--stray-before-rekey", action="store_true",
                     help="send a packet after the trigger, before the new KeyShare")
    cli.add_argument("--reflect-confirm", action="store_true",
                     help="after the handshake, send the server's 0xFF answer back to it and "
                     "expect the server to close")
    sub.add_parser("selftest")
    sub.add_parser("check-vectors").add_argument("file")
    args = ap.parse_args(argv)
    try:
        if args.mode in ("server", "client") and args.key:
            with open(args.key, "rb") as f:
                args.key = serialization.load_pem_private_key(f.read(), password=None)
        if args.mode == "server":
            s = listen(args.port)
            if args.port == 0:
                print(f"PORT {s.getsockname()[1]}", flush=True)
            run_server(s, args, args.key or new_key())
        elif args.mode == "client":
            run_client(args)
        elif args.mode == "selftest":
            selftest()
        else:
            check_vectors(args.file)
    except (PeerError, OSError, AssertionError) as e:
        print(f"pkmpeer {args.mode}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

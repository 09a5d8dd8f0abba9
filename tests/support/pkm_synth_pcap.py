# SPDX-License-Identifier: MIT
# Writes a synthetic PkmCom/TCP capture (pcap, Ethernet) and its key log, with faults a real peer
# never sends: a Hash that does not check, a bad padding, a Size over the limit (tests/cli_expert.sh).
import os
import struct
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SRV = (bytes([10, 0, 0, 1]), 5555)
CLI = (bytes([10, 0, 0, 2]), 40000)


def spki():
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return k.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def key_msg(der):
    return struct.pack(">i", len(der)) + der


def hashsum_bytes(b):
    h = 0
    for i, x in enumerate(b):
        h = x if i == 0 else (h * 31 + x) & 0xFFFFFFFF
    return h


def record(id_, hash_, content, pad=None, size=None):
    size = len(content) if size is None else size
    plain = struct.pack(">BIi", id_, hash_, size) + content
    n = 16 - len(plain) % 16
    plain += bytes([n]) * n if pad is None else pad(n)
    return plain


class Chain:
    def __init__(self, key, iv):
        self.c = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()

    def enc(self, plain):
        return self.c.update(plain)


def ip_tcp(src, dst, seq, ack, flags, payload):
    tcp = struct.pack(">HHIIBBHHH", src[1], dst[1], seq, ack, 5 << 4, flags, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0, src[0], dst[0])
    return b"\0" * 12 + b"\x08\x00" + ip + tcp + payload


def main():
    out, keylog = sys.argv[1], sys.argv[2]
    k_cs, k_sc = os.urandom(32), os.urandom(32)
    civ, siv = os.urandom(16), os.urandom(16)
    iv = bytes(a ^ b for a, b in zip(civ, siv))
    with open(keylog, "w") as f:
        f.write("# synthetic\nPKMCOM_KEYS_V2 %s %s %s %s\n" % (civ.hex(), k_cs.hex(), k_sc.hex(), iv.hex()))
    cs, sc = Chain(k_cs, iv), Chain(k_sc, iv)
    confirm = record(0xFF, 0x504B6BE1, bytes.fromhex("504b4d00"))
    ok_content = struct.pack(">H", 2) + b"{}" + struct.pack(">I", 1)
    ok_hash = (1 * 31 + ((hashsum_bytes(b"{}") * 31 + 1) & 0xFFFFFFFF)) & 0xFFFFFFFF
    flow = [
        ("s", key_msg(spki())),
        ("c", key_msg(spki()) + os.urandom(512) + civ),
        ("c", cs.enc(confirm)),
    ]
    # The server's KeyShare, its confirmation and the 0x01 packet, cut across three segments at
    # odd places: a reader must reassemble them.
    s2c = os.urandom(512) + siv + sc.enc(confirm) + sc.enc(record(0x01, ok_hash, ok_content))
    flow[2:2] = [("s", s2c[:300]), ("s", s2c[300:533]), ("s", s2c[533:])]
    flow += [
        # 0x05 Re-establish Secret, reason 1: its Hash is 5*31+1 = 156, not 157.
        ("c", cs.enc(record(0x05, 157, b"\x01"))),
        # Padding bytes that are not all equal to the pad length.
        ("c", cs.enc(record(0x30, hashsum_bytes(b"abc"), b"abc", pad=lambda n: bytes([n]) * (n - 1) + b"\x00"))),
        # A header whose Size is over the 1 MiB limit: the rest cannot be followed.
        ("c", cs.enc(record(0x31, 0, b"", size=0x7FFFFFF0))),
    ]
    seq = {"c": 1000, "s": 5000}
    frames = [ip_tcp(CLI, SRV, seq["c"] - 1, 0, 0x02, b""), ip_tcp(SRV, CLI, seq["s"] - 1, seq["c"], 0x12, b"")]
    for who, data in flow:
        src, dst = (CLI, SRV) if who == "c" else (SRV, CLI)
        other = "s" if who == "c" else "c"
        frames.append(ip_tcp(src, dst, seq[who], seq[other], 0x18, data))
        seq[who] += len(data)
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(fr), len(fr)) + fr)


if __name__ == "__main__":
    main()

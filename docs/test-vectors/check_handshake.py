#!/usr/bin/env python3
# Checks handshake.json with Python only (hashlib, and the `cryptography` package for RSA and
# AES): a cross-check of the vectors independent of libpkmcom and of OpenSSL's C API.
"""Usage: python3 check_handshake.py [handshake.json]     (needs: pip install cryptography)

For every session: K = SHA-256(M_client XOR M_server || S), IV = IV_client XOR IV_server; each
KeyShare decrypts (RSA PKCS#1 v1.5, the receiver's private key) to the sender's M halves; each
direction's encrypted bytes under each key decrypt as one AES-256-CBC run to the recorded
plaintexts; each packet plaintext is header | content | PKCS#7 padding with the right Hash."""
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

H = bytes.fromhex
CONFIRM = H("ff504b6be100000004504b4d00030303")


def hashsum(b):
    h = 0
    for i, x in enumerate(b):
        h = x if i == 0 else (h * 31 + x) & 0xFFFFFFFF
    return h


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                              "handshake.json")
    doc = json.load(open(path, encoding="utf-8"))
    priv = {r: serialization.load_pem_private_key(doc["keys"][r]["private_key_pem"].encode(), None)
            for r in ("server", "client")}
    checks = 0
    for s in doc["sessions"]:
        for ep in s["epochs"]:
            m = bytes(a ^ b for a, b in zip(H(ep["client"]["M"]), H(ep["server"]["M"])))
            sec = b"" if ep["secret"] is None else ep["secret"]["utf8"].encode("utf-8")
            assert m == H(ep["M"]) and len(m) == 256
            assert hashlib.sha256(m + sec).digest() == H(ep["K"]), s["name"]
            iv = bytes(a ^ b for a, b in zip(H(ep["client"]["IV"]), H(ep["server"]["IV"])))
            assert iv == H(ep["IV"])
            checks += 3
        runs = {}
        for msg in s["messages"]:
            b = H(msg["bytes"])
            if msg["kind"] == "KeyShare":
                sender = "client" if msg["dir"] == "c2s" else "server"
                receiver = "server" if sender == "client" else "client"
                ep = s["epochs"][msg["epoch"]]
                half = [priv[receiver].decrypt(b[i * 256:(i + 1) * 256], padding.PKCS1v15())
                        for i in (0, 1)]
                assert half[0] + half[1] == H(ep[sender]["M"]) and b[512:] == H(ep[sender]["IV"])
                checks += 1
            elif msg["kind"] in ("Confirm", "Packet"):
                pt = H(msg["plaintext"])
                if msg["kind"] == "Confirm":
                    assert pt == CONFIRM
                else:
                    c = H(msg["content"])
                    total = ((9 + len(c)) // 16 + 1) * 16
                    pad = total - 9 - len(c)
                    h = (msg["id"] * 31 + hashsum(c)) & 0xFFFFFFFF
                    assert pt == (bytes([msg["id"]]) + h.to_bytes(4, "big") +
                                  len(c).to_bytes(4, "big") + c + bytes([pad]) * pad)
                    assert h == msg["hash"]
                run = runs.setdefault((msg["dir"], msg["epoch"]), [b"", b""])
                run[0] += b
                run[1] += pt
        for (d, e), (ct, pt) in runs.items():
            ep = s["epochs"][e]
            dec = Cipher(algorithms.AES(H(ep["K"])), modes.CBC(H(ep["IV"]))).decryptor()
            assert dec.update(ct) + dec.finalize() == pt, (s["name"], d, e)
            checks += 1
        for d in ("c2s", "s2c"):
            assert b"".join(H(m["bytes"]) for m in s["messages"] if m["dir"] == d) == \
                H(s["transcript"][d])
    print(f"{path}: {checks} checks passed")


if __name__ == "__main__":
    main()

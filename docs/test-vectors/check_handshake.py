#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Checks handshake.json with Python only (hashlib, and the `cryptography` package for RSA and
# AES), from WIRE-PROFILE version 2: a cross-check independent of libpkmcom and its C code.
"""Usage: python3 check_handshake.py [handshake.json]     (needs: pip install cryptography)

Computed here from the profile and compared with the file, for every session:
- the keys: each public_der is the canonical DER of the committed private key (rsaEncryption,
  NULL parameters, an odd 2048-bit modulus, e = 65537), its fingerprint is SHA256: + unpadded
  base64 of SHA-256(DER); ServerKey and ClientKey carry exactly Int n || that DER;
- each epoch: M = M_client XOR M_server, K_cs = SHA-256(M || S || 0x43),
  K_sc = SHA-256(M || S || 0x53), IV = IV_client XOR IV_server, and K_cs != K_sc;
- each KeyShare decrypts (RSAES-PKCS1-v1_5, the receiver's private key) to the sender's M halves
  and ends with the sender's IV;
- the encrypted bytes of each direction and epoch, decrypted as ONE AES-256-CBC stream from IV
  under that direction's key (c2s: K_cs, s2c: K_sc), give the recorded plaintexts; each
  message's chain_iv is IV for the first, else the previous message's last block;
- each plaintext is the 13-byte 0xFF packet + 03 03 03 (Confirm) or header | content | PKCS#7
  padding with Hash = Id*31 + hashsum(content bytes) (Packet); 0xFF appears in Confirms only;
- the server's 0xFF answer is not the client's block (what version 1 let anyone reflect);
- the transcripts are the concatenation of each direction's messages.
Exit status 0 and one summary line if all hold; otherwise the first failure and exit 1."""
import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

H = bytes.fromhex
M32 = 0xFFFFFFFF
# WIRE-PROFILE section 2: Id 0xFF, Hash 0x504B6BE1, Size 4, magic 0x504B4D00; 3 bytes of padding.
CONFIRM = H("ff504b6be100000004504b4d00") + b"\x03" * 3
LABEL = {"c2s": b"\x43", "s2c": b"\x53"}  # 'C': K_cs, 'S': K_sc


class Bad(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Bad(what)


def hashsum(b):
    h = 0
    for i, x in enumerate(b):
        h = x if i == 0 else (h * 31 + x) & M32
    return h


def xor(a, b):
    check(len(a) == len(b), "XOR of different lengths")
    return bytes(x ^ y for x, y in zip(a, b))


def check_key(role, k):
    """The committed key: canonical DER, RSA-2048 with an odd modulus, e = 65537, fingerprint."""
    priv = serialization.load_pem_private_key(k["private_key_pem"].encode(), None)
    check(isinstance(priv, rsa.RSAPrivateKey), f"{role} key is not RSA")
    der = priv.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    check(der == H(k["public_der"]), f"{role} public_der is not the key's canonical DER")
    check(len(der) == 294, f"{role} public_der is {len(der)} bytes, not 294")
    nums = priv.public_key().public_numbers()
    check(nums.n.bit_length() == 2048 and nums.n % 2 == 1, f"{role}: not an odd 2048-bit modulus")
    check(nums.e == 65537, f"{role}: exponent {nums.e}, not 65537")
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    check(fp == k["fingerprint"], f"{role} fingerprint {k['fingerprint']}, computed {fp}")
    return priv, der


def check_epoch(name, i, ep):
    m = xor(H(ep["client"]["M"]), H(ep["server"]["M"]))
    check(len(m) == 256 and m == H(ep["M"]), f"{name} epoch {i}: M")
    sec = b"" if ep["secret"] is None else ep["secret"]["utf8"].encode("utf-8")
    if ep["secret"] is not None:
        check(sec == H(ep["secret"]["hex"]), f"{name} epoch {i}: secret hex vs utf8")
    k_cs = hashlib.sha256(m + sec + LABEL["c2s"]).digest()
    k_sc = hashlib.sha256(m + sec + LABEL["s2c"]).digest()
    check(k_cs == H(ep["K_cs"]), f"{name} epoch {i}: K_cs")
    check(k_sc == H(ep["K_sc"]), f"{name} epoch {i}: K_sc")
    check(k_cs != k_sc, f"{name} epoch {i}: K_cs == K_sc")
    iv = xor(H(ep["client"]["IV"]), H(ep["server"]["IV"]))
    check(len(iv) == 16 and iv == H(ep["IV"]), f"{name} epoch {i}: IV")
    return {"c2s": k_cs, "s2c": k_sc}, iv


def check_session(s, priv, der):
    name = s["name"]
    keys = [check_epoch(name, i, ep) for i, ep in enumerate(s["epochs"])]
    checks = 5 * len(keys)
    runs = {}  # (dir, epoch) -> [ciphertext, plaintext, last block]
    confirms = {}
    for n, msg in enumerate(s["messages"]):
        where = f"{name} message {n} ({msg['kind']} {msg['dir']})"
        b = H(msg["bytes"])
        sender = "client" if msg["dir"] == "c2s" else "server"
        receiver = "server" if sender == "client" else "client"
        kind = msg["kind"]
        if kind in ("ServerKey", "ClientKey"):
            check((kind == "ServerKey") == (sender == "server"), f"{where}: wrong direction")
            check(b == len(der[sender]).to_bytes(4, "big") + der[sender], f"{where}: bytes")
            checks += 1
        elif kind == "KeyShare":
            check(len(b) == 528, f"{where}: {len(b)} bytes, not 528")
            ep = s["epochs"][msg["epoch"]]
            half = [priv[receiver].decrypt(b[i * 256:(i + 1) * 256], padding.PKCS1v15())
                    for i in (0, 1)]
            check(half[0] + half[1] == H(ep[sender]["M"]), f"{where}: M halves")
            check(b[512:] == H(ep[sender]["IV"]), f"{where}: IV")
            checks += 2
        elif kind in ("Confirm", "Packet"):
            pt = H(msg["plaintext"])
            if kind == "Confirm":
                check(pt == CONFIRM, f"{where}: not the 0xFF packet")
                confirms.setdefault(msg["epoch"], {})[msg["dir"]] = b
            else:
                c = H(msg["content"])
                check(msg["id"] != 0xFF, f"{where}: a 0xFF packet outside step 5")
                total = ((9 + len(c)) // 16 + 1) * 16
                pad = total - 9 - len(c)
                h = (msg["id"] * 31 + hashsum(c)) & M32
                check(h == msg["hash"], f"{where}: Hash")
                check(pt == bytes([msg["id"]]) + h.to_bytes(4, "big") +
                      len(c).to_bytes(4, "big") + c + bytes([pad]) * pad, f"{where}: plaintext")
                check(len(b) == total, f"{where}: {len(b)} bytes, not {total}")
            k, iv = keys[msg["epoch"]]
            run = runs.setdefault((msg["dir"], msg["epoch"]), [b"", b"", iv])
            check(H(msg["chain_iv"]) == run[2], f"{where}: chain_iv")
            run[0] += b
            run[1] += pt
            run[2] = b[-16:]
            checks += 2
        else:
            raise Bad(f"{where}: unknown kind")
    for (d, e), (ct, pt, _) in runs.items():
        k, iv = keys[e]
        dec = Cipher(algorithms.AES(k[d]), modes.CBC(iv)).decryptor()
        check(dec.update(ct) + dec.finalize() == pt, f"{name} {d} epoch {e}: AES-256-CBC under "
              f"K_{'cs' if d == 'c2s' else 'sc'}")
        checks += 1
    for e, c in confirms.items():
        check(set(c) == {"c2s", "s2c"}, f"{name} epoch {e}: a Confirm is missing")
        check(c["c2s"] != c["s2c"], f"{name} epoch {e}: the server's 0xFF answer is the "
              "client's own block (reflectable, as in version 1)")
        checks += 1
    for d in ("c2s", "s2c"):
        check(b"".join(H(m["bytes"]) for m in s["messages"] if m["dir"] == d) ==
              H(s["transcript"][d]), f"{name}: {d} transcript")
        checks += 1
    return checks


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                              "handshake.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        check(doc["format"] == "pkmcom-test-vectors/handshake/2",
              f"format {doc['format']!r}: this checker knows wire profile 2's handshake/2")
        priv, der = {}, {}
        for r in ("server", "client"):
            priv[r], der[r] = check_key(r, doc["keys"][r])
        check(doc["sessions"], "no session")
        checks = sum(check_session(s, priv, der) for s in doc["sessions"])
    except (Bad, KeyError, ValueError, TypeError) as e:
        print(f"{path}: FAILED: {e!r}" if not isinstance(e, Bad) else f"{path}: FAILED: {e}",
              file=sys.stderr)
        return 1
    print(f"{path}: {len(doc['sessions'])} sessions, {checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

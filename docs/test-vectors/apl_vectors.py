#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes apl.json, the APL codec test vectors, from first principles (struct.pack, a Java-style
# hash fold, Python's own UTF-16 and json modules): independent of libpkmcom's C code.
"""Usage: python3 apl_vectors.py [OUT.json]   (default: apl.json next to this script)
       python3 apl_vectors.py --check [FILE]  (exit 0 only if FILE is exactly what this writes)

Every expected byte string and hashcode in apl.json is computed here, not copied from the
library. tests/test_vectors.c then checks libpkmcom's codec against the file."""
import json
import os
import struct
import sys

M32 = 0xFFFFFFFF


def hashsum(codes):
    """hashsum(): 0 for none, else the left fold h = h*31 + next from the first hashcode."""
    h = 0
    for i, c in enumerate(codes):
        h = c & M32 if i == 0 else (h * 31 + c) & M32
    return h


def h_long(v):
    u = v & 0xFFFFFFFFFFFFFFFF
    return (u >> 32) ^ (u & M32)


def mutf8(s):
    """Java's Modified UTF-8 (DataOutput.writeUTF without the length): per UTF-16 code unit."""
    b = s.encode("utf-16-be", "surrogatepass")
    out = bytearray()
    for i in range(0, len(b), 2):
        u = (b[i] << 8) | b[i + 1]
        if 0x01 <= u <= 0x7F:
            out.append(u)
        elif u <= 0x7FF:  # includes U+0000 -> C0 80
            out += bytes([0xC0 | (u >> 6), 0x80 | (u & 0x3F)])
        else:
            out += bytes([0xE0 | (u >> 12), 0x80 | ((u >> 6) & 0x3F), 0x80 | (u & 0x3F)])
    return bytes(out)


INT_FMT = {
    "Byte": ">B", "Signed Byte": ">b", "Short": ">h", "Unsigned Short": ">H",
    "Int": ">i", "Unsigned Int": ">I", "Long": ">q",
}


def enc(t, v):
    """(bytes, hashcode) of value v of type description t."""
    name = t["type"]
    if name in INT_FMT:
        iv = int(v)
        b = struct.pack(INT_FMT[name], iv)
        return b, (h_long(iv) if name == "Long" else iv & M32)
    if name in ("Enum", "Bitflag"):
        return enc({"type": t["base"]}, v)
    if name == "Float":
        b = bytes.fromhex(v["bits"])
        return b, struct.unpack(">I", b)[0]
    if name == "Double":
        b = bytes.fromhex(v["bits"])
        return b, h_long(struct.unpack(">q", b)[0])
    if name == "Boolean":
        return bytes([1 if v else 0]), 1337 if v else 1331
    if name in ("String", "Json", "Long String", "Long Json"):
        if name.endswith("Json"):
            obj = json.loads(v)  # the text must be one JSON object
            assert isinstance(obj, dict)
        m = mutf8(v)
        prefix = struct.pack(">H", len(m)) if name in ("String", "Json") else struct.pack(">i", len(m))
        return prefix + m, hashsum(m)
    if name == "Version":
        major, minor = v["major"], v["minor"]
        return bytes([major - 1, minor]), hashsum([major, minor])
    if name == "UUID":
        hexs = v.replace("-", "")
        msb, lsb = struct.unpack(">qq", bytes.fromhex(hexs))
        return bytes.fromhex(hexs), hashsum([h_long(msb), h_long(lsb)])
    if name in ("Instant", "Duration"):
        s, n = int(v["seconds"]), v["nanos"]
        return struct.pack(">qi", s, n), hashsum([h_long(s), n & M32])
    if name == "Array":
        parts = [enc(t["elem"], x) for x in v]
        return b"".join(p[0] for p in parts), hashsum([p[1] for p in parts])
    if name == "Structure":
        parts = [enc(ft, x) for ft, x in zip(t["fields"], v)]
        return b"".join(p[0] for p in parts), hashsum([p[1] for p in parts])
    raise ValueError(name)


def fl(x):
    return {"decimal": repr(x), "bits": struct.pack(">f", x).hex()}


def db(x):
    return {"decimal": repr(x), "bits": struct.pack(">d", x).hex()}


T = lambda name, **kw: dict(type=name, **kw)  # noqa: E731

VALUES = [
    ("Byte 200", T("Byte"), 200),
    ("Signed Byte -2 (hashcode sign-extended)", T("Signed Byte"), -2),
    ("Short -300", T("Short"), -300),
    ("Unsigned Short 65000 (hashcode zero-extended)", T("Unsigned Short"), 65000),
    ("Int -123456789", T("Int"), -123456789),
    ("Unsigned Int 0xDEADBEEF", T("Unsigned Int"), 0xDEADBEEF),
    ("Long 0x0123456789ABCDEF (high XOR low)", T("Long"), str(0x0123456789ABCDEF)),
    ("Long -1 (hashcode 0)", T("Long"), "-1"),
    ("Float 1.5", T("Float"), fl(1.5)),
    ("Float -0.0 (a bit pattern, not a number)", T("Float"), fl(-0.0)),
    ("Double pi", T("Double"), db(3.141592653589793)),
    ("Boolean true", T("Boolean"), True),
    ("Boolean false", T("Boolean"), False),
    ("String empty", T("String"), ""),
    ("String ASCII", T("String"), "Hi"),
    ("String NUL, e-acute, U+1F600 (Modified UTF-8: C0 80, 2 bytes, two 3-byte surrogates)",
     T("String"), "a\u0000\u00e9\U0001F600"),
    ("Json object", T("Json"), '{"a":1}'),
    ("Long String", T("Long String"), "Long"),
    ("Long Json", T("Long Json"), " {} "),
    ("Version 1.2 (first byte = major - 1)", T("Version"), {"major": 1, "minor": 2}),
    ("Version 256.255", T("Version"), {"major": 256, "minor": 255}),
    ("UUID", T("UUID"), "123e4567-e89b-12d3-a456-426614174000"),
    ("Instant 2023-11-14T22:13:20.123456789Z", T("Instant"),
     {"seconds": "1700000000", "nanos": 123456789}),
    ("Duration -0.5 s (seconds -1, nanos 500000000)", T("Duration"),
     {"seconds": "-1", "nanos": 500000000}),
    ("Byte Enum {0,1,2} = 2", T("Enum", base="Byte", enum_values=[0, 1, 2]), 2),
    ("Unsigned Int Bitflag, reserved 0xFF000000", T("Bitflag", base="Unsigned Int",
                                                    reserved_mask=0xFF000000), 5),
    ("Short Array of 3 (fixed length)", T("Array", elem=T("Short"), length=3), [1, -1, 300]),
]

# Bytes a receiver must reject (the connection is closed), with the rule they break.
INVALID = [
    ("Boolean 2", T("Boolean"), "02", "Boolean other than 0 or 1"),
    ("Byte Enum {0,1,2} = 3", T("Enum", base="Byte", enum_values=[0, 1, 2]), "03",
     "undeclared Enum value"),
    ("Bitflag with a reserved bit set", T("Bitflag", base="Unsigned Int",
                                          reserved_mask=0xFF000000), "01000000", "reserved bit set"),
    ("Float NaN", T("Float"), "7fc00000", "NaN"),
    ("Double NaN (signalling, negative)", T("Double"), "fff0000000000001", "NaN"),
    ("Instant nanos 1000000000", T("Instant"), "0000000000000000" "3b9aca00",
     "nanos outside [0, 1e9)"),
    ("Duration nanos -1", T("Duration"), "0000000000000000" "ffffffff", "nanos outside [0, 1e9)"),
    ("Instant seconds -31556889864401400", T("Instant"),
     struct.pack(">qi", -31556889864401400, 0).hex(), "seconds outside the spec's range"),
    ("String with a 00 byte", T("String"), "0001" "00", "NUL byte"),
    ("String with an F0 byte", T("String"), "0001" "f0", "byte F0-FF"),
    ("String with a stray continuation byte", T("String"), "0001" "80", "stray continuation"),
    ("String with a truncated sequence", T("String"), "0002" "e0" "80", "truncated sequence"),
    ("Json that is an array", T("Json"), "0003" + b"[1]".hex(), "not an object"),
    ("Json with trailing text", T("Json"), "0004" + b"{} x".hex(), "not one object"),
    ("Long String with a negative length", T("Long String"), "ffffffff", "negative length"),
]

# Packets: a Structure content with one field of several kinds, to show that each field's
# hashcode (itself a hashsum for a String, a nested Structure, an Array) enters the fold once.
INNER = T("Structure", fields=[T("Byte"), T("Boolean")])
PACKETS = [
    ("the handshake packet 0xFF", 0xFF,
     [T("Enum", base="Unsigned Int", enum_values=[0x504B4D00])], [0x504B4D00]),
    ("empty content", 0x01, [], []),
    ("a String, a nested Structure, an empty Byte Array and a Long", 0x42,
     [T("String"), INNER, T("Byte"), T("Array", elem=T("Byte"), length_field=2), T("Long")],
     ["Red", [7, True], 0, [], "-2"]),
    ("a Version, a Json and a 4-byte Byte Array after its length", 0x00,
     [T("Version"), T("Json"), T("Byte"), T("Array", elem=T("Byte"), length_field=2)],
     [{"major": 1, "minor": 0}, '{"name":"Red"}', 4, [0xDE, 0xAD, 0xBE, 0xEF]]),
]


def main():
    args = sys.argv[1:]
    checking = bool(args) and args[0] == "--check"
    if checking:
        args = args[1:]
    out = args[0] if args else os.path.join(os.path.dirname(__file__), "apl.json")
    values = []
    for name, t, v in VALUES:
        b, h = enc(t, v)
        values.append({"name": name, "type": t, "value": v, "bytes": b.hex(), "hashcode": h})
    invalid = [{"name": n, "type": t, "bytes": b, "rule": r} for n, t, b, r in INVALID]
    packets = []
    for name, pid, fields, vals in PACKETS:
        content, ch = enc(T("Structure", fields=fields), vals)
        h = (pid * 31 + ch) & M32  # hashsum(Id as Byte, content)
        header = struct.pack(">BIi", pid, h, len(content))
        packets.append({"name": name, "id": pid, "fields": fields, "values": vals,
                        "content": content.hex(), "content_hash": ch, "hash": h,
                        "packet": (header + content).hex()})
    doc = {
        "format": "pkmcom-test-vectors/apl/1",
        "generated_by": "docs/test-vectors/apl_vectors.py (Python: struct, json, utf-16; "
                        "independent of libpkmcom)",
        "values": values,
        "invalid": invalid,
        "packets": packets,
    }
    text = json.dumps(doc, indent=1, ensure_ascii=True) + "\n"
    if checking:  # the committed file must be exactly this generator's output
        with open(out, encoding="utf-8") as f:
            same = f.read() == text
        print(f"{out}: {'matches' if same else 'DIFFERS from'} apl_vectors.py's output "
              f"({len(values)} values, {len(invalid)} invalid, {len(packets)} packets)")
        return 0 if same else 1
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

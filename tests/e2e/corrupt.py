"""Deterministic damage to a file for the checkpoint fault tests (no randomness).
usage: corrupt.py FILE flip OFFSET | zero OFFSET LEN | truncate PERCENT | append TEXT | zero-used VISIT
Negative offsets count from the end. zero-used clears the `used` byte of the warp record of VISIT in a
decision checkpoint (visit i64, scale f32, weight f32, used u8) -- issue 13's first reproduction."""
import struct
import sys

path, op = sys.argv[1], sys.argv[2]
b = bytearray(open(path, "rb").read())


def at(s):
    o = int(s)
    return o + len(b) if o < 0 else o


if op == "flip":
    b[at(sys.argv[3])] ^= 0x10
elif op == "zero":
    o = at(sys.argv[3])
    b[o:o + int(sys.argv[4])] = bytes(min(int(sys.argv[4]), len(b) - o))
elif op == "truncate":
    del b[len(b) * int(sys.argv[3]) // 100:]
elif op == "append":
    b += sys.argv[3].encode()
elif op == "zero-used":
    pat = struct.pack("<q", int(sys.argv[3]))
    i = b.find(pat)
    while i >= 0 and b[i + 16] != 1:
        i = b.find(pat, i + 1)
    if i < 0:
        sys.exit("no used record of visit " + sys.argv[3])
    b[i + 16] = 0
else:
    sys.exit("unknown operation " + op)
open(path, "wb").write(b)

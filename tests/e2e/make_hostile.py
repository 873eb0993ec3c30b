#!/usr/bin/python3
"""Make hostile copies of a good afw-layout warp for tests/e2e/test_hostile_input.sh.

usage: make_hostile.py GOOD.fits OUTDIR
Writes into OUTDIR:
  naxis_lies.fits    IMAGE header says 4096x4096 but the file holds the original (smaller) data
  huge.fits          IMAGE header says NAXIS1 = NAXIS2 = 200000 (file holds far less)
  huge_sparse.fits   a complete, sparse warp of 200000x200000 planes (480 GB apparent size) whose
                     size is consistent with its headers; only written when the file system
                     allows it (else huge_sparse.skipped)
  allnan.fits        IMAGE all NaN
  allinf.fits        IMAGE all +inf, VARIANCE all NaN
  zerovar.fits       VARIANCE all 0
  negvar.fits        VARIANCE all -1
  longname.fits      a HIERARCH MP_ card with a 63-character plane name (the longest that fits)
  toolong.fits       a HIERARCH MP_ card whose plane name fills the card (no "= value")
  toolong2.fits      a HIERARCH MP_ card cut after "=" (no value)
  dupname.fits       two MP_ cards with the same plane name
  dupbits.fits       two MP_ cards with the same bit (MP_SAT = MP_BAD's bit)
Uses Debian's python3-astropy (the python3 first on PATH may be a bare pyenv).
"""
import os
import sys
import warnings

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

warnings.simplefilter("ignore", VerifyWarning)
good, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)


def path(name):
    return os.path.join(out, name)


def load():
    with fits.open(good) as h:
        return [x.copy() for x in h]


def save(name, hdus):
    fits.HDUList(hdus).writeto(path(name), overwrite=True, output_verify="silentfix")


def ext(hdus, name):
    for x in hdus:
        if x.header.get("EXTNAME") == name:
            return x
    raise KeyError(name)


raw = open(good, "rb").read()


def set_card(data, hdu_index, key, value):
    """Overwrite the value of fixed-format card KEY in the HDU-th header of raw FITS bytes."""
    pos = 0
    for _ in range(hdu_index):  # skip headers+data of earlier HDUs: find each END card
        end = pos
        while data[end:end + 3] != b"END" or (end - pos) % 80:
            end += 80
        hdr = fits.Header.fromstring(data[pos:end + 80].decode("ascii"))
        nbytes = abs(hdr.get("BITPIX", 8)) // 8
        size = nbytes
        for i in range(1, hdr.get("NAXIS", 0) + 1):
            size *= hdr["NAXIS%d" % i]
        if hdr.get("NAXIS", 0) == 0:
            size = 0
        hdr_len = ((end + 80 - pos + 2879) // 2880) * 2880
        pos += hdr_len + ((size + 2879) // 2880) * 2880
    k = pos
    key8 = key.ljust(8).encode()
    while data[k:k + 8] != key8:
        k += 80
    card = (key.ljust(8) + "= " + str(value).rjust(20)).ljust(80).encode()
    return data[:k] + card + data[k + 80:]


# HDU order in the simulator's warps: primary, IMAGE, MASK, VARIANCE.
with open(path("naxis_lies.fits"), "wb") as f:
    d = set_card(raw, 1, "NAXIS1", 4096)
    f.write(set_card(d, 1, "NAXIS2", 4096))
with open(path("huge.fits"), "wb") as f:
    d = set_card(raw, 1, "NAXIS1", 200000)
    f.write(set_card(d, 1, "NAXIS2", 200000))

# A sparse file whose headers and size agree: 3 planes of 200000^2 pixels.
try:
    hdus = load()
    n = 200000
    with open(path("huge_sparse.fits"), "wb") as f:
        f.write(hdus[0].header.tostring().encode())
        for name, bitpix in (("IMAGE", -32), ("MASK", 32), ("VARIANCE", -32)):
            h = ext(hdus, name).header.copy()
            h["BITPIX"] = bitpix
            h["NAXIS1"] = n
            h["NAXIS2"] = n
            f.write(h.tostring().encode())
            size = ((n * n * 4 + 2879) // 2880) * 2880
            f.seek(size - 1, os.SEEK_CUR)
            f.write(b"\0")
except OSError as e:
    if os.path.exists(path("huge_sparse.fits")):
        os.remove(path("huge_sparse.fits"))
    open(path("huge_sparse.skipped"), "w").write(str(e))

h = load()
ext(h, "IMAGE").data[:] = np.nan
save("allnan.fits", h)

h = load()
ext(h, "IMAGE").data[:] = np.inf
ext(h, "VARIANCE").data[:] = np.nan
save("allinf.fits", h)

h = load()
ext(h, "VARIANCE").data[:] = 0.0
save("zerovar.fits", h)

h = load()
ext(h, "VARIANCE").data[:] = -1.0
save("negvar.fits", h)

# Mask plane names at and beyond what a FITS card can hold: astropy will not write them, so a
# placeholder card is replaced in the file's bytes (cards are 80 bytes: nothing moves).
def replace_card(name, placeholder, card):
    h = load()
    ext(h, "MASK").header[placeholder] = 20
    save(name, h)
    data = open(path(name), "rb").read()
    old = (placeholder.ljust(8) + "= " + "20".rjust(20)).ljust(80).encode()
    assert data.count(old) == 1, name
    assert len(card) == 80, card
    open(path(name), "wb").write(data.replace(old, card.encode()))


# longname: a 63-character plane name, the most a HIERARCH card "HIERARCH MP_<name> = 21" holds.
replace_card("longname.fits", "MP_XX", ("HIERARCH MP_" + "L" * 63 + " = 21").ljust(80))
# toolong: the name fills the card, leaving no room for "= value".
replace_card("toolong.fits", "MP_XX", ("HIERARCH MP_" + "T" * 68)[:80].ljust(80))
# toolong2: a name truncated by the card end right after "=", without a value.
replace_card("toolong2.fits", "MP_XX", ("HIERARCH MP_" + "U" * 66 + " =")[:80].ljust(80))

h = load()
ext(h, "MASK").header.append(("MP_BAD", 17), bottom=True)
save("dupname.fits", h)

h = load()
ext(h, "MASK").header["MP_SAT"] = ext(h, "MASK").header["MP_BAD"]
save("dupbits.fits", h)

#!/usr/bin/python3
"""Make damaged copies of a good afw-layout warp for the bad-input tests.

usage: make_bad_warps.py GOOD.fits OUTDIR
Writes OUTDIR/{notfits,truncated,nomask,novariance,nomp,dupbits,smaller,otherwcs,badvar,nozeropoint}.fits.
Uses Debian's python3-astropy (the python3 first on PATH may be a bare pyenv).
"""
import os
import sys

from astropy.io import fits

good, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)


def save(name, hdus):
    fits.HDUList(hdus).writeto(os.path.join(out, name), overwrite=True)


with open(os.path.join(out, "notfits.fits"), "w") as f:
    f.write("this is a text file, not FITS\n" * 200)
raw = open(good, "rb").read()
with open(os.path.join(out, "truncated.fits"), "wb") as f:
    f.write(raw[: len(raw) // 2])

with fits.open(good) as h:
    hdus = [x.copy() for x in h]
byname = {x.header.get("EXTNAME", "PRIMARY"): i for i, x in enumerate(hdus)}

save("nomask.fits", [x for x in hdus if x.header.get("EXTNAME") != "MASK"])
save("novariance.fits", [x for x in hdus if x.header.get("EXTNAME") != "VARIANCE"])

nomp = [x.copy() for x in hdus]
m = nomp[byname["MASK"]].header
for k in [k for k in m.keys() if k.startswith("MP_")]:
    del m[k]
save("nomp.fits", nomp)

dup = [x.copy() for x in hdus]
dup[byname["MASK"]].header["MP_SAT"] = dup[byname["MASK"]].header["MP_BAD"]
save("dupbits.fits", dup)

small = []
for x in hdus:
    if x.header.get("EXTNAME") in ("IMAGE", "MASK", "VARIANCE"):
        y = fits.ImageHDU(data=x.data[:-8, :-8], header=x.header.copy())
        small.append(y)
    else:
        small.append(x.copy())
save("smaller.fits", small)

shifted = [x.copy() for x in hdus]
for x in shifted:
    if "CRVAL1" in x.header and x.header.get("EXTNAME") in ("IMAGE", "MASK", "VARIANCE"):
        x.header["CRVAL1"] = x.header["CRVAL1"] + 0.01  # another sky position: not the same grid
save("otherwcs.fits", shifted)

badvar = [x.copy() for x in hdus]
v = badvar[byname["VARIANCE"]].data
v[10:20, 10:20] = -1.0  # negative variance where the image is finite
save("badvar.fits", badvar)

nozp = [x.copy() for x in hdus]
for x in nozp:
    for k in ("FLUXMAG0", "FLUXMAG0ERR"):
        if k in x.header:
            del x.header[k]
save("nozeropoint.fits", nozp)

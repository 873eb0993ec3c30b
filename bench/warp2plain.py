#!/usr/bin/python3
"""Convert safeclip (afw-layout) warps into the plain inputs the peer tools need.

usage: warp2plain.py OUTDIR WARP.fits...

For warp number k (in the order given) it writes
  OUTDIR/warp_KKK.fits         float32 image at the common zero point 27: IMAGE * s, NaN where NO_DATA
  OUTDIR/warp_KKK.weight.fits  float32 inverse variance 1 / (VARIANCE * s^2), 0 where the mask has
                               BAD, SAT, NO_DATA or EDGE (or the value is not finite)
with s = 10^(0.4*27) / FLUXMAG0 (the warp's primary-HDU zero point), and the celestial WCS of the
IMAGE HDU, so SWarp (MAP_WEIGHT, *.weight.fits suffix), Montage (_area = weight) and numpy read
the same pixels that safeclip stacks. Run with Debian's /usr/bin/python3 (numpy + astropy).
"""
import os
import sys

import numpy as np
from astropy.io import fits

WCS_KEYS = ("CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1",
            "CD2_2", "CUNIT1", "CUNIT2", "RADESYS", "EQUINOX")
BAD_PLANES = ("BAD", "SAT", "NO_DATA", "EDGE")


def convert(path, out_img, out_wt):
    with fits.open(path, memmap=False) as hl:
        fluxmag0 = float(hl[0].header["FLUXMAG0"])
        scale = 10.0 ** (0.4 * 27.0) / fluxmag0
        img = hl["IMAGE"].data.astype(np.float32)
        msk = hl["MASK"].data.astype(np.int64)
        var = hl["VARIANCE"].data.astype(np.float32)
        mh = hl["MASK"].header
        bits = {k[3:]: int(v) for k, v in mh.items() if k.startswith("MP_")}
        bad = 0
        for p in BAD_PLANES:
            if p in bits:
                bad |= 1 << bits[p]
        nodata = (msk & (1 << bits["NO_DATA"])) != 0 if "NO_DATA" in bits else np.zeros(img.shape, bool)
        hdr = fits.Header()
        for k in WCS_KEYS:
            if k in hl["IMAGE"].header:
                hdr[k] = hl["IMAGE"].header[k]
    s = np.float32(scale)
    im = img * s
    im[nodata] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        wt = (1.0 / (var.astype(np.float64) * float(s) * float(s))).astype(np.float32)
    wt[((msk & bad) != 0) | ~np.isfinite(wt) | ~np.isfinite(img) | ~(var > 0)] = 0.0
    hdr["FLXSCALE"] = (1.0, "already at zero point 27")
    fits.PrimaryHDU(im, header=hdr).writeto(out_img, overwrite=True)
    fits.PrimaryHDU(wt, header=hdr).writeto(out_wt, overwrite=True)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for k, path in enumerate(sys.argv[2:]):
        convert(path, os.path.join(out, "warp_%03d.fits" % k), os.path.join(out, "warp_%03d.weight.fits" % k))


if __name__ == "__main__":
    main()

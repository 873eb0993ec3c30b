#!/usr/bin/python3
"""Static-star flux of two coadds of one simulated patch, and cosmic-ray flags on star cores.

usage: star_flux.py DATADIR PATCH OFF.fits ON.fits
Star pixels: where the simulator's static truth of the first warp, at the coadd's zero point, is
above 20 x the median coadd noise (sqrt of the median VARIANCE of OFF), leaving out pixels within
2 px of any warp's transient (a cosmic ray on a star is rightly removed by ON). Prints the relative
flux change ON/OFF - 1 over those pixels, and how many CR_SPANS pixels of ON fall on star cores
(static truth above 100 x the noise) where that warp has no transient. Benchmark only: asserts
nothing.
"""
import json
import sys

import numpy as np
from astropy.io import fits


def main():
    data, patch, off, on = sys.argv[1:5]
    truth = json.load(open(data + "/truth.json"))
    p = next(q for q in truth["patches"] if q["name"] == patch)
    x0, y0 = p["box"][0], p["box"][1]
    w0 = p["warps"][0]
    with fits.open(data + "/" + w0["path"]) as hl:
        scale = 10.0 ** (0.4 * 27.0) / float(hl[0].header["FLUXMAG0"])
    with fits.open(data + "/" + patch + "/truth.fits") as tf:
        static = tf["STATIC_" + str(w0["visit"])].data.astype(np.float64) * scale
        transient = {}
        for w in p["warps"]:
            t = tf["TRANSIENT_" + str(w["visit"])].data != 0
            grown = t.copy()
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    grown |= np.roll(np.roll(t, dy, 0), dx, 1)
            transient[int(w["visit"])] = grown
    anyTransient = np.logical_or.reduce(list(transient.values()))
    with fits.open(off) as a, fits.open(on) as b:
        ia = a["IMAGE"].data.astype(np.float64)
        ib = b["IMAGE"].data.astype(np.float64)
        noise = float(np.sqrt(np.nanmedian(a["VARIANCE"].data)))
        spans = b["CR_SPANS"].data if "CR_SPANS" in b else None
    stars = static > 20 * noise
    cores = static > 100 * noise
    ok = stars & ~anyTransient & np.isfinite(ia) & np.isfinite(ib)
    rel = ib[ok].sum() / ia[ok].sum() - 1.0
    flagged = 0
    if spans is not None:
        for v, y, xa, xb in zip(spans["visit"], spans["y"], spans["x0"], spans["x1"]):
            row = slice(xa - x0, xb - x0 + 1)
            flagged += int((cores[y - y0, row] & ~transient[int(v)][y - y0, row]).sum())
    print(f"star pixels {int(ok.sum())} (noise {noise:.3g}): flux on/off - 1 = {rel:+.2e}; "
          f"CR pixels on star cores ({int(cores.sum())} core px): {flagged}")


if __name__ == "__main__":
    main()

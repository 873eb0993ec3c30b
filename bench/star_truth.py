#!/usr/bin/python3
"""Static-star flux of a coadd against the simulator's truth (issue 15's target: within 0.2 %).

usage: star_truth.py DATADIR PATCH COADD.fits [COADD2.fits ...]
The truth coadd is the coadd's own weighted mean of the warps' noise-free static skies
(truth.fits STATIC_<visit>, weighted with the
INPUTS weight of each used warp; STATIC is in zero-point-27 units), so it has the same PSF mix as
the coadd. Stars: 8-connected regions where that truth is above 50 x the median coadd noise, away
(2 px) from every warp's transients and SAT/BAD/NO_DATA pixels (saturated cores have no flux to
compare). Prints, per coadd, the flux ratio coadd/truth - 1 summed over all star regions and the
worst single region. Benchmark only: asserts nothing.
"""
import json
import sys

import numpy as np
from astropy.io import fits


def label(mask):
    """8-connected labels of a boolean image (flood fill; small images only)."""
    lab = np.zeros(mask.shape, dtype=np.int32)
    n = 0
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if lab[y0, x0]:
            continue
        n += 1
        stack = [(y0, x0)]
        lab[y0, x0] = n
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not lab[yy, xx]:
                        lab[yy, xx] = n
                        stack.append((yy, xx))
    return lab, n


def main():
    data, patch, coadds = sys.argv[1], sys.argv[2], sys.argv[3:]
    truth = json.load(open(data + "/truth.json"))
    p = next(q for q in truth["patches"] if q["name"] == patch)
    with fits.open(data + "/" + patch + "/truth.fits") as tf:
        static = {int(w["visit"]): tf["STATIC_" + str(w["visit"])].data.astype(np.float64) for w in p["warps"]}
        transient = np.zeros_like(next(iter(static.values())), dtype=bool)
        for w in p["warps"]:
            transient |= tf["TRANSIENT_" + str(w["visit"])].data != 0
    # Saturated stars are left out (their cores are masked SAT in some warps: no flux to compare).
    for w in p["warps"]:
        with fits.open(data + "/" + w["path"]) as hl:
            bits = {k[3:]: int(val) for k, val in hl["MASK"].header.items() if k.startswith("MP_")}
            bad = sum(1 << bits[b] for b in ("SAT", "BAD", "NO_DATA") if b in bits)
            transient |= (hl["MASK"].data.astype(np.int64) & bad) != 0
    grown = transient.copy()
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            grown |= np.roll(np.roll(transient, dy, 0), dx, 1)
    for path in coadds:
        with fits.open(path) as f:
            img = f["IMAGE"].data.astype(np.float64)
            noise = float(np.sqrt(np.nanmedian(f["VARIANCE"].data)))
            inp = f["INPUTS"].data
            num = np.zeros_like(img)
            den = 0.0
            for v, s, wt, st in zip(inp["visit"], inp["scale"], inp["weight"], inp["status"]):
                if str(st).strip() != "used":
                    continue
                num += wt * static[int(v)]  # STATIC is in zero-point-27 units already
                den += wt
        ref = num / den
        lab, n = label((ref > 50 * noise) & ~grown)
        tot_c = tot_r = 0.0
        worst = 0.0
        for k in range(1, n + 1):
            m = (lab == k) & np.isfinite(img)
            c, r = img[m].sum(), ref[m].sum()
            tot_c += c
            tot_r += r
            if abs(c / r - 1) > abs(worst):
                worst = c / r - 1
        print(f"{path}: {n} star regions: flux/truth - 1 = {tot_c / tot_r - 1:+.2e} (worst region {worst:+.2e})")


if __name__ == "__main__":
    main()

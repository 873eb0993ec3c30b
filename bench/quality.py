#!/usr/bin/python3
"""Score coadds of one simulated patch against the simulator's truth.

usage: quality.py DATADIR PATCH LABEL=COADD[:HDU] ...   (prints one row per coadd, '|'-separated)

DATADIR is a `safeclip simulate` output (truth.json, PATCH/truth.fits with STATIC_<visit> and
TRANSIENT_<visit> in zero-point-27 units, the warps). Per pixel, w_i = 1 / (VARIANCE_i s_i^2)
(0 where BAD/SAT/NO_DATA/EDGE), the ideal coadd is T = sum w_i STATIC_i / sum w_i with
sigma_T = sum(w_i)^-1/2. With one weight per warp W_i = 1 / median(VARIANCE_i s_i^2) (as safeclip
weighs warps), T_W = sum W_i STATIC_i / sum W_i and I = sum W_i TRANSIENT_i / sum W_i is what a
plain per-warp-weighted mean keeps of the transients (the simulator's variance planes include the
transients' photon noise, so per-pixel 1/var weights already damp bright cosmic rays: those tools
can score below 1 without any rejection).
  noise      robust std (1.4826 MAD) of (coadd - T) / sigma_T over clean pixels (every w_i > 0,
             no transient in any warp); 1.000 = the ideal weighted mean
  trail left sum(coadd - T_W) / sum(I) over trail pixels where |T| < 3 sigma_T (TRANSIENT of the trail's warp above 1 sigma
             of that warp's sky); core = at least half of the trail's peak, wings = the rest
  CR left    the same over cosmic-ray pixels
  trail alone  trail left over the trail pixels where no other warp has a transient (its cosmic
             rays): "trail left" also counts other warps' unclipped cosmic rays that land on the
             trail (on B64 most of what it reports), this one measures the trail's own rejection
"""
import json
import sys

import numpy as np
from astropy.io import fits

BAD_PLANES = ("BAD", "SAT", "NO_DATA", "EDGE")


def load(spec):
    f, _, h = spec.partition(":")
    with fits.open(f, memmap=False) as hl:
        if h:
            d = hl[int(h) if h.isdigit() else h].data
        else:
            d = next(x.data for x in hl if x.data is not None and getattr(x.data, "ndim", 0) >= 2)
        return np.squeeze(d).astype(np.float64)


def main():
    data, patch = sys.argv[1], sys.argv[2]
    truth = json.load(open(data + "/truth.json"))
    p = next(q for q in truth["patches"] if q["name"] == patch)
    x0, y0 = p["box"][0], p["box"][1]
    tf = fits.open(data + "/" + patch + "/truth.fits", memmap=True)
    sw = swS = None
    sW = sWS = sWT = None
    clean = None
    trail_core = trail_wing = crpix = None
    info = {}
    for w in p["warps"]:
        v = str(w["visit"])
        with fits.open(data + "/" + w["path"], memmap=False) as hl:
            scale = 10.0 ** (0.4 * 27.0) / float(hl[0].header["FLUXMAG0"])
            var = hl["VARIANCE"].data.astype(np.float64)
            msk = hl["MASK"].data.astype(np.int64)
            bits = {k[3:]: int(val) for k, val in hl["MASK"].header.items() if k.startswith("MP_")}
        bad = sum(1 << bits[b] for b in BAD_PLANES if b in bits)
        s = float(np.float32(scale))
        with np.errstate(divide="ignore", invalid="ignore"):
            wi = 1.0 / (var * s * s)
        ok = ((msk & bad) == 0) & np.isfinite(wi) & (var > 0)
        wi[~ok] = 0.0
        S = tf["STATIC_" + v].data.astype(np.float64)
        TR = tf["TRANSIENT_" + v].data.astype(np.float64)
        if sw is None:
            sw = np.zeros_like(wi); swS = np.zeros_like(wi)
            clean = np.ones(wi.shape, bool)
            trail_core = np.zeros(wi.shape, bool); trail_wing = np.zeros(wi.shape, bool)
            crpix = np.zeros(wi.shape, bool)
            ntr = np.zeros(wi.shape, np.int32)
        S = np.nan_to_num(S)
        TR = np.nan_to_num(TR)
        W = 1.0 / np.median(var[ok] * s * s)  # one weight per warp, like safeclip's (spec §3.4)
        if sW is None:
            sW = np.zeros_like(wi); sWS = np.zeros_like(wi); sWT = np.zeros_like(wi)
        sw += wi
        swS += np.where(ok, wi * S, 0.0)
        sW += np.where(ok, W, 0.0)
        sWS += np.where(ok, W * S, 0.0)
        sWT += np.where(ok, W * TR, 0.0)
        clean &= ok & (TR == 0)
        ntr += (TR != 0)
        sky1 = float(w["sky_sigma"]) * s  # 1 sigma of this warp's sky in ZP27 units
        arts = [a for a in p["artifacts"] if str(a["visit"]) == v]
        other = np.zeros(wi.shape, bool)  # pixels of this warp's non-trail artifacts
        for a in arts:
            bx, by, bw, bh = a["bbox"]
            sl = (slice(by - y0, by - y0 + bh), slice(bx - x0, bx - x0 + bw))
            if a["type"] != "trail":
                other[sl] |= TR[sl] > 0
            if a["type"] in ("cosmic_ray", "cosmic_ray_track"):  # hits/clusters, tracks
                crpix[sl] |= TR[sl] > 0
        for a in arts:
            if a["type"] != "trail":
                continue
            bx, by, bw, bh = a["bbox"]
            sl = (slice(by - y0, by - y0 + bh), slice(bx - x0, bx - x0 + bw))
            t = TR[sl]
            reg = (t > sky1) & ~other[sl]
            if not reg.any():
                continue
            pk = t[reg].max()
            trail_core[sl] |= reg & (t >= 0.5 * pk)
            trail_wing[sl] |= reg & (t < 0.5 * pk)
    with np.errstate(divide="ignore", invalid="ignore"):
        T = swS / sw
        sigT = 1.0 / np.sqrt(sw)
        TW = sWS / sW
        I = sWT / sW
    faint = np.abs(T) < 3.0 * sigT  # leave static sources out of the transient regions
    clean &= sw > 0
    print("tool | noise (1.000 = ideal) | trail flux left all / core / wings | CR flux left | clean px"
          " | trail alone left")
    for arg in sys.argv[3:]:
        label, _, spec = arg.partition("=")
        c = load(spec)
        fin = np.isfinite(c)
        r = (c - T) / sigT
        rc = r[clean & fin]
        med = np.median(rc)
        noise = 1.4826 * np.median(np.abs(rc - med))

        def left(m):
            m = m & fin & (sw > 0) & faint
            return float((c[m] - TW[m]).sum() / I[m].sum()) if m.any() else float("nan")
        tr = trail_core | trail_wing
        print("%s | %.4f | %+.4f / %+.4f / %+.4f | %+.4f | %d | %+.4f" % (
            label, noise, left(tr), left(trail_core), left(trail_wing), left(crpix), int(rc.size),
            left(tr & (ntr == 1))))


if __name__ == "__main__":
    main()

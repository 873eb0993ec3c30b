#!/usr/bin/python3
"""Independent numpy reference of CompareWarpAssembleCoaddTask (spec algorithm.md §10).

Written from ../shared/spec/algorithm.md §10 (and the §3, §4, §6.1, §7.2, §8 it refers to) only,
without reading safeclip's C++ sources, so that the C++ `coadd.mode = "comparewarp"` can be checked
against it on small cases (issue 15 item 8). It is slow (pure numpy + a Python flood fill) and is
meant for images of a few hundred pixels on a side.

usage:
  comparewarp_ref.py OUT.fits --pair DIRECT.fits PSFMATCHED.fits [--pair ...] [options]
  comparewarp_ref.py OUT.fits --warp WARP.fits [--warp ...]        (same file for both roles)
  comparewarp_ref.py OUT.fits --manifest manifest.json [--patch NAME]
      (a safeclip manifest; a warp entry's "psf_matched" names its companion, else the direct
       warp itself is used as its own PSF-matched warp: the reference never PSF-matches)
  --summary OUT.json   per-candidate decisions (default: OUT.fits with .json)
Options carry §10's defaults (upstream names in the help texts). Run with -h for the list.

Outputs (OUT.fits): empty primary (FLUXMAG0 = 10^(0.4*27), REFMODE, counts), IMAGE, MASK (MP_* for
every plane), VARIANCE, NIMAGE (uint16, §7.2 3d), NIMAGE_APPROX (§10 step 3), EPOCHCOUNT (§10 step 6),
TEMPLATE (the §10 step 1 template image, after the variance fix), INPUTS, CANDIDATES and
CLIPPED_SPANS (visit, y, x0, x1; PARENT coordinates, x1 inclusive) tables.

Every place where the spec is silent and this file had to choose is marked "CHOICE:" below and
listed in tests/reference/README.md.  Summary of those choices:
  C1  mask planes: canonical BAD..NO_DATA = bits 0..8, other planes in order of first appearance
      (files in input order, direct then PSF-matched; within a file by bit index); then REJECTED,
      CLIPPED, SENSOR_EDGE, INEXACT_PSF. Set bits with no MP_ card are dropped (with a warning).
  C2  ScaleVariance background (spec: "subtract a background (binSize 32)"): nx = ceil(W/32),
      ny = ceil(H/32) bins with integer edges floor(k*W/nx); bin value = MEDIAN of the finite pixels
      without DETECTED|DETECTED_NEGATIVE|BAD|SAT|NO_DATA|INTRP; an empty bin takes the median of the
      other bins (0 if all are empty); bilinear interpolation between bin centres
      ((lo+hi-1)/2), linearly extrapolated beyond the outer centres, constant along an axis with
      one bin. (Upstream uses a MEANCLIP bin statistic and an Akima spline reduced to linear when
      under-sampled; for flat-sky test cases the factor is insensitive to this.)
  C3  ScaleVariance good pixels: mask without those six planes AND var > 0 AND img/sqrt(var)
      finite; quartiles by numpy.percentile (linear). No good pixel, or both estimates > limit:
      warn and leave the variance unchanged (spec: "On failure, warn and continue").
      var is multiplied in double and cast to float32.
  C4  Template is NOT interpolated (§8.1 is not ported): where every PSF-matched warp lacks data
      the template is NaN, so Δ_i is NaN and the warp gets a NO_DATA span there. The template's
      variance does get the §8.2 fix (var > 0 else +inf). The final coadd is not interpolated
      either (NO_DATA pixels stay NaN, no INTRP, variance +inf): compare only pixels without
      NO_DATA against a C++ run, or run the C++ side with its interpolation switched off.
  C5  Detection thresholds are evaluated in double on the float32 Δ planes: Δ >= t*sqrt(var)
      (positive) and -Δ >= t*sqrt(var) (negative), NaN/inf variance never detects.
  C6  detectTemplate PSF σ (the template's CoaddPsf): the adaptive-moment (determinant radius)
      fixed point of the template-weighted mixture of the PSF-matched warps' PSFSIGMA Gaussians
      (= σ_m when they all agree), or --template-psf-sigma. Smoothing in double, cast to float32.
      STDEVCLIP of the smoothed interior: unweighted §4.2 with σ 3, 3 iterations (afw
      StatisticsControl defaults), NaN skipped. Non-isotropic growth = Manhattan (diamond) stencil.
  C7  Visit ids: manifest "visit", else the VISIT card of the direct warp, else the input index.
  C8  "mean nImage < 2.5" warning: the mean of NIMAGE_APPROX over the whole patch.
"""
import argparse
import json
import math
import os
import sys
from collections import deque

import numpy as np
from astropy.io import fits

CANONICAL = ["BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT", "NO_DATA"]
COADD_PLANES = ["REJECTED", "CLIPPED", "SENSOR_EDGE", "INEXACT_PSF"]
IQR_TO_SIGMA = 0.741301109252802  # §4.2
ZP = 27.0


def warn(msg):
    print("comparewarp_ref: warning: " + msg, file=sys.stderr)


def log(msg):
    print("comparewarp_ref: " + msg, file=sys.stderr)


# ----------------------------------------------------------------------------------------- I/O
class Warp:
    """One afw-layout warp: float32 image/variance, int64 mask (canonical bits), xy0, cards."""

    def __init__(self, path):
        self.path = path
        with fits.open(path) as h:
            names = {}
            for x in h[1:]:  # afw writes EXTTYPE (and usually EXTNAME)
                n = str(x.header.get("EXTNAME", x.header.get("EXTTYPE", ""))).strip()
                names.setdefault(n, x)
                names.setdefault(str(x.header.get("EXTTYPE", "")).strip(), x)
            for need in ("IMAGE", "MASK", "VARIANCE"):
                if need not in names:
                    raise SystemExit(f"{path}: no {need} HDU")
            prim = h[0].header
            self.image = np.array(names["IMAGE"].data, dtype=np.float32)
            self.variance = np.array(names["VARIANCE"].data, dtype=np.float32)
            self.rawmask = np.array(names["MASK"].data, dtype=np.int64) & 0xFFFFFFFF
            mh = names["MASK"].header
            self.planes = sorted(((int(mh[k]), k[3:]) for k in mh if k.startswith("MP_")))
            ih = names["IMAGE"].header
            self.x0 = int(round(ih.get("CRVAL1A", -ih.get("LTV1", 0))))
            self.y0 = int(round(ih.get("CRVAL2A", -ih.get("LTV2", 0))))
            if "FLUXMAG0" in prim:
                self.fluxmag0 = float(prim["FLUXMAG0"])
            elif "FLUXMAG0" in ih:
                self.fluxmag0 = float(ih["FLUXMAG0"])
            else:
                raise SystemExit(f"{path}: no FLUXMAG0 card (the reference reads legacy zero points only)")
            self.psfsigma = float(prim.get("PSFSIGMA", ih.get("PSFSIGMA", float("nan"))))
            self.visit = prim.get("VISIT")
            self.wcs_cards = [(k, ih[k]) for k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
                                                   "CD1_1", "CD1_2", "CD2_1", "CD2_2") if k in ih]
        self.mask = None

    def conform(self, bitof):
        """CHOICE C1: remap the file's MP_ bits to the canonical dictionary."""
        out = np.zeros(self.rawmask.shape, dtype=np.int64)
        known = 0
        for b, name in self.planes:
            known |= 1 << b
            out |= ((self.rawmask >> b) & 1) << bitof[name]
        stray = self.rawmask & ~known
        if np.any(stray):
            warn(f"{self.path}: mask bits {int(np.bitwise_or.reduce(stray.ravel())):#x} have no MP_ card; dropped")
        self.mask = out
        del self.rawmask


def build_dictionary(warps):
    order = list(CANONICAL)
    for w in warps:
        for _, name in w.planes:
            if name not in order:
                order.append(name)
    for name in COADD_PLANES:
        if name not in order:
            order.append(name)
    if len(order) > 32:
        raise SystemExit("more than 32 mask planes")
    return order, {n: i for i, n in enumerate(order)}


# ------------------------------------------------------------------------------ §4 the stacker
def _weighted(sel, x, w, v):
    """Weighted mean, debiased weighted variance s², input-variance V over the selection (double)."""
    wsel = np.where(sel, w, 0.0)
    sw = wsel.sum(axis=0)
    sw2 = (wsel * wsel).sum(axis=0)
    xs = np.where(sel, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = (wsel * xs).sum(axis=0) / sw
        d = np.where(sel, x - mu, 0.0)
        s2 = ((wsel * d * d).sum(axis=0) / sw) * (sw * sw) / (sw * sw - sw2)
        vs = np.where(sel, v, 0.0)
        V_in = (wsel * wsel * vs).sum(axis=0) / (sw * sw)
        V_s2 = s2 * sw2 / (sw * sw)
    return mu, s2, V_in, V_s2


def clip_stats(x, w, v, acc, sigma, iters, err_from_input=True):
    """§4.2 MEANCLIP along axis 0 over the accepted set `acc`. Returns (mu, V, s2, nclipped)."""
    x = x.astype(np.float64)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)
    v = v.astype(np.float64)
    n0 = acc.sum(axis=0)
    vals = np.where(acc, x, np.nan)
    with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
        sup.filter(RuntimeWarning)
        q1, med, q3 = np.nanquantile(vals, [0.25, 0.5, 0.75], axis=0)
    iqr_h = sigma * IQR_TO_SIGMA * (q3 - q1)
    mu = s2 = V = None
    sel = acc
    for k in range(1, iters + 1):
        if k == 1:
            c, h = med, iqr_h
        else:
            c = mu
            with np.errstate(invalid="ignore"):
                h = np.where(n0 > 1, sigma * np.sqrt(s2), iqr_h)
        with np.errstate(invalid="ignore"):
            sel = acc & (np.abs(x - c) <= h)  # NaN c or h selects nothing -> NaN result
        mu, s2, V_in, V_s2 = _weighted(sel, x, w, v)
        V = V_in if err_from_input else V_s2
    return mu, V, s2, n0 - sel.sum(axis=0)


def mean_stack(x, m, v, w, A, bit, mask_map, thresholds):
    """§4.1 + §4.3 MEAN. x, v float32 (N,H,W); m int64; w float32 (N,). Returns img, var, mask."""
    N = x.shape[0]
    acc = np.isfinite(x) & ((m & A) == 0)
    n0 = acc.sum(axis=0)
    M = np.bitwise_or.reduce(np.where(acc, m, 0), axis=0)
    wf = np.asarray(w, dtype=np.float64).reshape(-1, 1, 1) * np.ones(x.shape)
    wacc = np.where(acc, wf, 0.0).sum(axis=0)
    for b, t in thresholds.items():
        R = np.where(~acc & ((m & b) != 0), wf, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            M = np.where(R / (wacc + R) > t, M | b, M)
    mu, _, V, _ = _weighted(acc, x.astype(np.float64), wf, v.astype(np.float64))
    M = np.where(n0 == 0, bit["NO_DATA"], M)
    masked = n0 < N
    for src, dst in mask_map:
        anyin = np.bitwise_or.reduce(m & src, axis=0) != 0
        M = np.where(masked & anyin, M | dst, M)
    return mu.astype(np.float32), V.astype(np.float32), M


def warp_weight(var, mask, bad, sigma, iters):
    """§3 step 4: 1 / MEANCLIP of the scaled variance plane, unweighted, over (m & B) == 0 and finite."""
    good = ((mask & bad) == 0) & np.isfinite(var)
    vals = var[good].astype(np.float64)
    if vals.size == 0:
        return float("nan")
    mu, _, _, _ = clip_stats(vals.reshape(-1, 1), np.ones(vals.size), vals.reshape(-1, 1),
                             np.ones((vals.size, 1), bool), sigma, iters)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float32(1.0 / mu[0]))


def scale_of(fluxmag0):
    """§3 step 2/3: s = 10^(0.4*27) / FLUXMAG0, cast to float32."""
    return np.float32(10.0 ** (0.4 * ZP) / fluxmag0)


# ------------------------------------------------------------------------- footprints (§6.1)
def label8(mask):
    """8-connected components of a boolean image: list of (ys, xs) index arrays, in raster order."""
    H, W = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        q = deque([(y0, x0)])
        seen[y0, x0] = True
        ys, xs = [], []
        while q:
            y, x = q.popleft()
            ys.append(y)
            xs.append(x)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < H and 0 <= xx < W and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        q.append((yy, xx))
        comps.append((np.array(ys), np.array(xs)))
    return comps


def dilate(mask, n, isotropic=True):
    """Grow by n with the disk stencil |dx| <= floor(sqrt(n²-dy²)) (or Manhattan |dx|+|dy| <= n),
    clipped to the box (§6.1.7)."""
    if n <= 0:
        return mask.copy()
    H, W = mask.shape
    out = mask.copy()
    for dy in range(-n, n + 1):
        r = int(math.floor(math.sqrt(n * n - dy * dy))) if isotropic else n - abs(dy)
        for dx in range(-r, r + 1):
            ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
            xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
            out[yd, xd] |= mask[ys, xs]
    return out


def footprints_from(P, min_pixels, ngrow, isotropic):
    """Components >= min_pixels, grown (combined), re-segmented: a boolean union image."""
    keep = np.zeros_like(P)
    for ys, xs in label8(P):
        if ys.size >= min_pixels:
            keep[ys, xs] = True
    return dilate(keep, ngrow, isotropic)


def detect_pixel_stdev(img, var, thresh, min_pixels, ngrow):
    """§10 step 4: no smoothing, per-pixel threshold, both polarities, grown, polarities merged."""
    img64 = img.astype(np.float64)
    with np.errstate(invalid="ignore"):
        t = thresh * np.sqrt(var.astype(np.float64))
        ok = np.isfinite(img64) & np.isfinite(t)
        Pp = ok & (img64 >= t)
        Pn = ok & (-img64 >= t)
    union = footprints_from(Pp, min_pixels, ngrow, True) | footprints_from(Pn, min_pixels, ngrow, True)
    return label8(union)


def gauss_kernel(sigma):
    K = 2 * int(math.floor(math.floor(7 * sigma + 0.5) / 2)) + 1
    r = (K - 1) // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-t * t / (2 * sigma * sigma))
    return g / g.sum(), r


def smooth_valid(img, sigma):
    """§6.1.3-4 separable smoothing; NaN under the kernel gives NaN; returns (S, r) on the full box,
    only [r:H-r, r:W-r] is valid."""
    g, r = gauss_kernel(sigma)
    H, W = img.shape
    a = img.astype(np.float64)
    tmp = np.full((H, W), np.nan)
    for y in range(H):
        for x in range(r, W - r):
            tmp[y, x] = np.dot(g, a[y, x - r:x + r + 1])
    out = np.full((H, W), np.nan)
    for y in range(r, H - r):
        out[y, :] = g @ tmp[y - r:y + r + 1, :]
    return out.astype(np.float32), r


def determinant_radius(sigmas, weights):
    """CHOICE C6: adaptive-moment fixed point of a weighted mixture of round Gaussians."""
    s = max(sigmas)
    for _ in range(500):
        t2 = [1.0 / (1.0 / x ** 2 + 1.0 / s ** 2) for x in sigmas]
        c = [a * t / x ** 2 for a, t, x in zip(weights, t2, sigmas)]
        s_new = math.sqrt(2.0 * sum(ci * ti for ci, ti in zip(c, t2)) / sum(c))
        if abs(s_new - s) < 1e-12:
            break
        s = s_new
    return s


def detect_template(img, sigma, thresh, ngrow_sigma, stats_sigma=3.0, stats_iter=3):
    """§10 detectTemplate: smooth, threshold = thresh * STDEVCLIP(smoothed interior), positive
    polarity, minPixels 1, Manhattan growth int(nSigmaToGrow*σ + 0.5). Returns a label image
    (0 = none, k = footprint k) and the threshold."""
    S, r = smooth_valid(img, sigma)
    H, W = img.shape
    interior = np.zeros((H, W), bool)
    interior[r:H - r, r:W - r] = True
    vals = S[interior & np.isfinite(S)].astype(np.float64)
    _, _, s2, _ = clip_stats(vals.reshape(-1, 1), np.ones(vals.size), vals.reshape(-1, 1),
                             np.ones((vals.size, 1), bool), stats_sigma, stats_iter)
    thr = thresh * math.sqrt(s2[0])
    with np.errstate(invalid="ignore"):
        P = interior & np.isfinite(S) & (S.astype(np.float64) >= thr)
    union = footprints_from(P, 1, int(ngrow_sigma * sigma + 0.5), False)
    lab = np.zeros((H, W), np.int32)
    for k, (ys, xs) in enumerate(label8(union), start=1):
        lab[ys, xs] = k
    return lab, thr


# -------------------------------------------------------------------- ScaleVariance (§10 2b)
def _interp_axis(centres, vals, n):
    """Linear interpolation at 0..n-1 from values at `centres`, extrapolated linearly (CHOICE C2)."""
    x = np.arange(n, dtype=np.float64)
    if len(centres) == 1:
        return np.full(n, vals[0])
    out = np.empty(n)
    for i in range(n):
        k = np.searchsorted(centres, x[i]) - 1
        k = min(max(k, 0), len(centres) - 2)
        f = (x[i] - centres[k]) / (centres[k + 1] - centres[k])
        out[i] = vals[k] + f * (vals[k + 1] - vals[k])
    return out


def background(img, good, bin_size):
    H, W = img.shape
    nx, ny = -(-W // bin_size), -(-H // bin_size)
    ex = [(k * W) // nx for k in range(nx + 1)]
    ey = [(k * H) // ny for k in range(ny + 1)]
    grid = np.full((ny, nx), np.nan)
    for j in range(ny):
        for i in range(nx):
            sub = img[ey[j]:ey[j + 1], ex[i]:ex[i + 1]]
            g = good[ey[j]:ey[j + 1], ex[i]:ex[i + 1]]
            if g.any():
                grid[j, i] = np.median(sub[g].astype(np.float64))
    if np.all(np.isnan(grid)):
        return np.zeros((H, W))
    grid = np.where(np.isnan(grid), np.nanmedian(grid), grid)
    cx = np.array([(ex[i] + ex[i + 1] - 1) / 2.0 for i in range(nx)])
    cy = np.array([(ey[j] + ey[j + 1] - 1) / 2.0 for j in range(ny)])
    rows = np.array([_interp_axis(cx, grid[j], W) for j in range(ny)])  # (ny, W)
    return np.array([_interp_axis(cy, rows[:, x], H) for x in range(W)]).T


def scale_variance(img, var, mask, bit, bin_size=32, limit=10.0):
    """ScaleVarianceTask, simplified (CHOICES C2, C3). Returns the factor applied (1.0 on failure)."""
    planes = 0
    for n in ("DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA", "INTRP"):
        planes |= 1 << bit[n]
    clean = (mask & planes) == 0
    bg = background(img, clean & np.isfinite(img), bin_size)
    sub = img.astype(np.float64) - bg
    v64 = var.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = sub / np.sqrt(v64)
        good = clean & (v64 > 0) & np.isfinite(snr)
    if not good.any():
        warn("ScaleVariance: no good pixels; variance left as is")
        return 1.0
    q1, q3 = np.percentile(snr[good], (25, 75))
    factor = (0.74 * (q3 - q1)) ** 2
    if factor > limit:
        q1, q3 = np.percentile(sub[good], (25, 75))
        factor = (0.74 * (q3 - q1) / math.sqrt(np.median(v64[good]))) ** 2
        if factor > limit:
            warn(f"ScaleVariance: factor {factor} exceeds {limit}; variance left as is")
            return 1.0
    var[...] = (v64 * factor).astype(np.float32)
    return float(factor)


# ------------------------------------------------------------------------------------- spans
def to_spans(ys, xs, x0, y0):
    """Pixel lists -> [(y, x0, x1)] in PARENT coordinates, x1 inclusive, sorted by (y, x)."""
    if len(ys) == 0:
        return []
    order = np.lexsort((xs, ys))
    ys, xs = ys[order], xs[order]
    spans = []
    sy, sx, px = int(ys[0]), int(xs[0]), int(xs[0])
    for y, x in zip(ys[1:].tolist(), xs[1:].tolist()):
        if y == sy and x == px + 1:
            px = x
            continue
        spans.append((sy + y0, sx + x0, px + x0))
        sy, sx, px = y, x, x
    spans.append((sy + y0, sx + x0, px + x0))
    return spans


# -------------------------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--pair", nargs=2, action="append", default=[], metavar=("DIRECT", "PSFMATCHED"))
    ap.add_argument("--warp", action="append", default=[], help="a warp used as direct and PSF-matched")
    ap.add_argument("--manifest")
    ap.add_argument("--patch", help="patch name in --manifest (default: the first)")
    ap.add_argument("--summary")
    a = ap.add_argument
    a("--template-sigma", type=float, default=2.5, help="assembleStaticSkyModel.sigmaClip")
    a("--template-iter", type=int, default=3, help="assembleStaticSkyModel.clipIter")
    a("--sigma-clip", type=float, default=3.0, help="sigmaClip (final-stack weights)")
    a("--clip-iter", type=int, default=2, help="clipIter (final-stack weights)")
    a("--detect-threshold", type=float, default=5.0, help="detect.thresholdValue (pixel_stdev)")
    a("--detect-grow", type=float, default=0.4, help="detect.nSigmaToGrow")
    a("--detect-min-pixels", type=int, default=4, help="detect.minPixels")
    a("--max-num-epochs", type=float, default=2, help="maxNumEpochs")
    a("--max-fraction-epochs-low", type=float, default=0.4, help="maxFractionEpochsLow")
    a("--max-fraction-epochs-high", type=float, default=0.03, help="maxFractionEpochsHigh")
    a("--spatial-threshold", type=float, default=0.5, help="spatialThreshold")
    a("--no-scale-warp-variance", action="store_true", help="doScaleWarpVariance = False")
    a("--no-preserve-contained", action="store_true", help="doPreserveContainedBySource = False")
    a("--no-prefilter", action="store_true", help="doPrefilterArtifacts = False")
    a("--prefilter-ratio", type=float, default=0.05, help="prefilterArtifactsRatio")
    a("--prefilter-planes", default="NO_DATA,BAD,SAT,SUSPECT", help="prefilterArtifactsMaskPlanes")
    a("--bad-mask-planes", default="NO_DATA,BAD,SAT", help="badMaskPlanes")
    a("--template-threshold", type=float, default=5.0, help="detectTemplate.thresholdValue (stdev)")
    a("--template-grow", type=float, default=2.4, help="detectTemplate.nSigmaToGrow")
    a("--template-psf-sigma", type=float, default=0.0, help="0 = CHOICE C6")
    a("--sat-threshold", type=float, default=0.1, help="maskPropagationThresholds SAT")
    a("--variance-limit", type=float, default=10.0, help="scaleWarpVariance.limit")
    a("--background-bin", type=int, default=32, help="scaleWarpVariance.background.binSize")
    return ap.parse_args(argv)


def load_inputs(args):
    """[(visit, direct path, psf path)] in direct-warp order."""
    items = []
    if args.manifest:
        man = json.load(open(args.manifest))
        base = os.path.dirname(os.path.abspath(args.manifest))
        patches = man["patches"]
        p = next((q for q in patches if q["name"] == args.patch), None) if args.patch else patches[0]
        if p is None:
            raise SystemExit(f"no patch {args.patch} in {args.manifest}")
        for w in p["warps"]:
            d = os.path.join(base, w["path"])
            items.append((w.get("visit"), d, os.path.join(base, w["psf_matched"]) if "psf_matched" in w else d))
    for d, m in args.pair:
        items.append((None, d, m))
    for d in args.warp:
        items.append((None, d, d))
    if not items:
        raise SystemExit("no warps given (--pair, --warp or --manifest)")
    return items


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    items = load_inputs(args)
    direct = [Warp(d) for _, d, _ in items]
    psfm = [Warp(m) if m != d else None for _, d, m in items]
    allw = []
    for dw, pw in zip(direct, psfm):
        allw.append(dw)
        if pw is not None:
            allw.append(pw)
    order, bitof = build_dictionary(allw)
    for w in allw:
        w.conform(bitof)
    psfm = [pw if pw is not None else dw for dw, pw in zip(direct, psfm)]
    visits = []
    for k, ((v, _, _), dw) in enumerate(zip(items, direct)):  # CHOICE C7
        visits.append(int(v) if v is not None else int(dw.visit) if dw.visit is not None else k)
    H, W = direct[0].image.shape
    X0, Y0 = direct[0].x0, direct[0].y0
    for w in allw:
        if w.image.shape != (H, W) or (w.x0, w.y0) != (X0, Y0):
            raise SystemExit(f"{w.path}: box differs from {direct[0].path} (the reference needs one box)")

    def bits(names):
        r = 0
        for n in names:
            r |= 1 << bitof[n]
        return r

    NO_DATA = bits(["NO_DATA"])
    BADMASK = bits(args.bad_mask_planes.split(","))
    CLIPPED = bits(["CLIPPED"])
    EDGE = bits(["EDGE"])

    # ---- prepareInputs for the final stack (direct warps: σ 3, 2 iterations, A = badMaskPlanes)
    inputs = []
    used = []
    for k, dw in enumerate(direct):
        row = {"visit": visits[k], "direct": dw.path, "psf_matched": psfm[k].path}
        if np.all(np.isnan(dw.image)):
            row["status"] = "skipped: all NaN"
            inputs.append(row)
            continue
        s = scale_of(dw.fluxmag0)
        v = dw.variance * np.float32(s * s)
        wt = warp_weight(v, dw.mask, BADMASK, args.sigma_clip, args.clip_iter)
        row.update(scale=float(s), weight=wt)
        if not math.isfinite(wt):
            row["status"] = "skipped: weight not finite"
        else:
            row["status"] = "used"
            used.append(k)
        inputs.append(row)

    # ---- §10 step 1: template = MEANCLIP of the PSF-matched warps, its own prepareInputs
    tscale, tweight, tused = {}, {}, []
    for k, pw in enumerate(psfm):
        if np.all(np.isnan(pw.image)):
            continue
        s = scale_of(pw.fluxmag0)
        wt = warp_weight(pw.variance * np.float32(s * s), pw.mask, NO_DATA, args.template_sigma,
                         args.template_iter)
        if math.isfinite(wt):
            tscale[k], tweight[k] = s, wt
            tused.append(k)
        inputs[k]["template_scale"] = float(s)
        inputs[k]["template_weight"] = wt
    if not tused:
        raise SystemExit("no usable PSF-matched warp for the template")
    tx = np.stack([psfm[k].image * tscale[k] for k in tused])
    tv = np.stack([psfm[k].variance * np.float32(tscale[k] * tscale[k]) for k in tused])
    tm = np.stack([psfm[k].mask for k in tused])
    tacc = np.isfinite(tx) & ((tm & NO_DATA) == 0)
    tw = np.array([tweight[k] for k in tused], dtype=np.float32)
    mu, V, _, _ = clip_stats(tx, tw, tv, tacc, args.template_sigma, args.template_iter, err_from_input=False)
    T = mu.astype(np.float32)
    TV = V.astype(np.float32)
    with np.errstate(invalid="ignore"):
        TV = np.where(TV > 0, TV, np.float32(np.inf)).astype(np.float32)  # §8.2 (CHOICE C4: no interp)
    # template mask: cleared (all bits 0)
    template_lab = None
    tpsf = None
    if not args.no_preserve_contained:
        tpsf = args.template_psf_sigma or determinant_radius([psfm[k].psfsigma for k in tused],
                                                             [tweight[k] for k in tused])
        template_lab, tthr = detect_template(T, tpsf, args.template_threshold, args.template_grow)
        log(f"template: PSF sigma {tpsf:.4f}, threshold {tthr:.5g}, {template_lab.max()} footprints")

    # ---- §10 steps 2-7, per warp in direct order
    nimage_approx = np.zeros((H, W), np.int64)
    epoch = np.zeros((H, W), np.int64)
    cands = {}      # k -> list of (ys, xs, record)
    nodata = {}     # k -> boolean image
    edge = {}       # k -> boolean image
    prefilter_bad = bits(args.prefilter_planes.split(","))
    det_clear = bits(["DETECTED", "DETECTED_NEGATIVE"])
    for k in used:
        if k not in tscale:  # PSF-matched warp missing: the whole box is NO_DATA
            nodata[k] = np.ones((H, W), bool)
            edge[k] = np.zeros((H, W), bool)
            cands[k] = []
            inputs[k]["variance_factor"] = None
            continue
        pw = psfm[k]
        s = tscale[k]
        img = pw.image * s
        var = pw.variance * np.float32(s * s)
        if not args.no_scale_warp_variance:
            inputs[k]["variance_factor"] = scale_variance(img, var, pw.mask, bitof, args.background_bin,
                                                          args.variance_limit)
        dimg = (img - T).astype(np.float32)
        dvar = (var + TV).astype(np.float32)
        dmask = pw.mask.copy()
        with np.errstate(invalid="ignore"):
            nimage_approx += (np.isfinite(dimg) & ((dmask & (BADMASK | CLIPPED)) == 0))
        dmask &= ~det_clear
        ngrow = int(args.detect_grow * pw.psfsigma + 0.5)
        fps = detect_pixel_stdev(dimg, dvar, args.detect_threshold, args.detect_min_pixels, ngrow)
        goodarr = (dmask & prefilter_bad) == 0
        slate = np.zeros((H, W), bool)
        lst = []
        for ys, xs in fps:
            area = ys.size
            ngood = int(np.count_nonzero(goodarr[ys, xs]))
            rec = {"visit": visits[k], "warp_index": k, "area": int(area),
                   "bbox": [int(xs.min()) + X0, int(ys.min()) + Y0, int(xs.max()) + X0, int(ys.max()) + Y0],
                   "good_fraction": ngood / area, "grow": ngrow}
            if not args.no_prefilter and not (ngood / area > args.prefilter_ratio):
                rec.update(decision="prefiltered", reason="dropped: prefilter")
                lst.append((ys, xs, rec))
                continue
            slate[ys, xs] = True
            lst.append((ys, xs, rec))
        epoch += slate
        cands[k] = lst
        nodata[k] = np.isnan(dimg)
        edge[k] = (dmask & EDGE) != 0

    mean_n = float(nimage_approx.mean())
    if mean_n < 2.5:
        log(f"mean nImage {mean_n:.3f} < 2.5: E = 0 everywhere, nothing can be clipped")

    # ---- §10 step 8: the filter
    clipped = {k: np.zeros((H, W), bool) for k in used}
    for k in used:
        for ys, xs, rec in cands[k]:
            if rec.get("decision") == "prefiltered":
                continue
            nbar = float(nimage_approx[ys, xs].mean())
            E = int(min(args.max_fraction_epochs_low * nbar, args.max_num_epochs + args.max_fraction_epochs_high * nbar))
            ec = epoch[ys, xs]
            frac = np.count_nonzero((ec > 0) & (ec <= E)) / ys.size
            rec.update(mean_nimage=nbar, max_epochs=E, epoch_fraction=frac,
                       epoch_count_min=int(ec.min()), epoch_count_max=int(ec.max()))
            if not frac > args.spatial_threshold:
                rec.update(decision="kept", reason="kept: spatial")
                continue
            if template_lab is not None:
                labs = np.unique(template_lab[ys, xs])
                if labs.size == 1 and labs[0] != 0:
                    rec.update(decision="kept", reason="kept: contained by source", template_footprint=int(labs[0]))
                    continue
            rec.update(decision="artefact", reason="artefact")
            clipped[k][ys, xs] = True

    # ---- §10 step 9: final stack (§7.2) with alt masks
    REJ, SEDGE, INEXACT = bits(["REJECTED"]), bits(["SENSOR_EDGE"]), bits(["INEXACT_PSF"])
    A = BADMASK | CLIPPED
    remove = bits(["EDGE"]) | (bits(["NOT_DEBLENDED"]) if "NOT_DEBLENDED" in bitof else 0)
    xs_, ms_, vs_, ws_ = [], [], [], []
    nimage = np.zeros((H, W), np.int64)
    for k in used:
        dw = direct[k]
        m = dw.mask.copy()
        m = np.where(nodata[k], m & ~BADMASK, m)           # doUsePsfMatchedPolygons: clear B first
        m = np.where(clipped[k], m | CLIPPED, m)
        m = np.where(nodata[k], m | NO_DATA, m)
        m = np.where(edge[k], m | EDGE, m)
        s = np.float32(inputs[k]["scale"])
        x = dw.image * s
        v = dw.variance * np.float32(s * s)
        nimage += (m & A) == 0
        m &= ~remove
        xs_.append(x)
        ms_.append(m)
        vs_.append(v)
        ws_.append(inputs[k]["weight"])
        inputs[k]["n_clipped_pixels"] = int(clipped[k].sum())
    mask_map = [(A & ~NO_DATA & ~EDGE & ~CLIPPED, REJ), (EDGE, SEDGE), (CLIPPED, CLIPPED)]
    img, var, cmask = mean_stack(np.stack(xs_), np.stack(ms_), np.stack(vs_), np.array(ws_, np.float32), A,
                                 {"NO_DATA": NO_DATA}, mask_map, {bits(["SAT"]): args.sat_threshold})
    cmask = np.where((cmask & (SEDGE | CLIPPED | REJ)) != 0, cmask | INEXACT, cmask)   # setInexactPsf
    cmask = np.where(var == 0, cmask | NO_DATA, cmask)                                # setCoaddEdgeBits
    for k in used:                                                                    # applyAltEdgeMask
        cmask = np.where(edge[k], cmask | SEDGE | INEXACT, cmask)
    with np.errstate(invalid="ignore"):
        var = np.where(var > 0, var, np.float32(np.inf)).astype(np.float32)           # §8.2

    write_outputs(args, order, X0, Y0, direct[0], img, cmask, var, nimage, nimage_approx, epoch, T, inputs,
                  cands, clipped, visits, used, mean_n, tpsf)
    return 0


def write_outputs(args, order, X0, Y0, ref, img, cmask, var, nimage, nimage_approx, epoch, T, inputs, cands,
                  clipped, visits, used, mean_n, tpsf):
    def pix_hdu(data, name):
        h = fits.ImageHDU(data=data, name=name)
        hd = h.header
        hd["EXTTYPE"] = name
        hd["INHERIT"] = True
        hd["LTV1"], hd["LTV2"] = -X0, -Y0
        for ax, val in (("1", X0), ("2", Y0)):
            hd["CTYPE" + ax + "A"] = "LINEAR"
            hd["CRPIX" + ax + "A"] = 1.0
            hd["CRVAL" + ax + "A"] = float(val)
            hd["CUNIT" + ax + "A"] = "PIXEL"
        for key, val in ref.wcs_cards:
            hd[key] = val
        return h

    prim = fits.PrimaryHDU()
    ph = prim.header
    ph["FLUXMAG0"] = 10.0 ** (0.4 * ZP)
    ph["ZEROPNT"] = ZP
    ph["REFMODE"] = ("comparewarp-ref", "tests/reference/comparewarp_ref.py")
    ph["NWARPS"] = len(inputs)
    ph["NUSED"] = len(used)
    ph["MEANNIMG"] = (mean_n, "mean NIMAGE_APPROX (nothing clips below 2.5)")
    if tpsf is not None:
        ph["TPLPSF"] = (tpsf, "detectTemplate PSF sigma")
    mh = pix_hdu(cmask.astype(np.int64).astype(np.uint32).view(np.int32), "MASK")
    for i, n in enumerate(order):
        mh.header["HIERARCH MP_" + n if len(n) > 5 else "MP_" + n] = i
    hdus = [prim, pix_hdu(img.astype(np.float32), "IMAGE"), mh, pix_hdu(var.astype(np.float32), "VARIANCE"),
            pix_hdu(nimage.astype(np.uint16), "NIMAGE"), pix_hdu(nimage_approx.astype(np.int32), "NIMAGE_APPROX"),
            pix_hdu(epoch.astype(np.int32), "EPOCHCOUNT"), pix_hdu(T.astype(np.float32), "TEMPLATE")]

    cols = {"visit": [], "y": [], "x0": [], "x1": []}
    for k in used:
        ys, xs = np.nonzero(clipped[k])
        for y, a, b in to_spans(ys, xs, X0, Y0):
            cols["visit"].append(visits[k])
            cols["y"].append(y)
            cols["x0"].append(a)
            cols["x1"].append(b)
    hdus.append(fits.BinTableHDU.from_columns(
        [fits.Column(name=n, format="K", array=np.array(cols[n], dtype=np.int64)) for n in ("visit", "y", "x0", "x1")],
        name="CLIPPED_SPANS"))
    inp = fits.BinTableHDU.from_columns([
        fits.Column(name="visit", format="K", array=np.array([r["visit"] for r in inputs], np.int64)),
        fits.Column(name="file", format="256A", array=np.array([r["direct"] for r in inputs])),
        fits.Column(name="psf_matched", format="256A", array=np.array([r["psf_matched"] for r in inputs])),
        fits.Column(name="scale", format="D", array=np.array([r.get("scale", np.nan) for r in inputs])),
        fits.Column(name="weight", format="D", array=np.array([r.get("weight", np.nan) for r in inputs])),
        fits.Column(name="template_weight", format="D",
                    array=np.array([r.get("template_weight", np.nan) for r in inputs])),
        fits.Column(name="variance_factor", format="D",
                    array=np.array([r.get("variance_factor") or np.nan for r in inputs])),
        fits.Column(name="n_clipped_pixels", format="K",
                    array=np.array([r.get("n_clipped_pixels", 0) for r in inputs], np.int64)),
        fits.Column(name="status", format="40A", array=np.array([r["status"] for r in inputs])),
    ], name="INPUTS")
    hdus.append(inp)
    recs = [rec for k in used for _, _, rec in cands[k]]
    fields = [("visit", "K"), ("area", "K"), ("bbox_x0", "K"), ("bbox_y0", "K"), ("bbox_x1", "K"),
              ("bbox_y1", "K"), ("mean_nimage", "D"), ("max_epochs", "K"), ("epoch_fraction", "D"),
              ("decision", "12A"), ("reason", "32A")]

    def get(r, n):
        if n.startswith("bbox_"):
            return r["bbox"][["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"].index(n)]
        return r.get(n, -1 if n == "max_epochs" else np.nan)

    hdus.append(fits.BinTableHDU.from_columns(
        [fits.Column(name=n, format=f, array=np.array([get(r, n) for r in recs])) for n, f in fields]
        if recs else [fits.Column(name=n, format=f) for n, f in fields], name="CANDIDATES"))
    fits.HDUList(hdus).writeto(args.out, overwrite=True)

    summary = {"format": "comparewarp-ref-summary", "version": 1, "mean_nimage": mean_n,
               "nothing_can_clip": mean_n < 2.5, "template_psf_sigma": tpsf,
               "mask_planes": order, "inputs": inputs, "candidates": recs}
    path = args.summary or os.path.splitext(args.out)[0] + ".json"
    with open(path, "w") as f:
        json.dump(summary, f, indent=1, default=float)
    n_art = sum(1 for r in recs if r.get("decision") == "artefact")
    log(f"{len(recs)} candidates, {n_art} artefacts; wrote {args.out} and {path}")


if __name__ == "__main__":
    sys.exit(main())

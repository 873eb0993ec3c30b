#!/usr/bin/python3
"""Write tiny synthetic CompareWarp cases in the afw layout (spec §13) for comparewarp_ref.py and
for the C++ comparewarp mode.

usage: make_cw_cases.py OUTDIR
Writes OUTDIR/<case>/warp-<visit>.fits (direct), OUTDIR/<case>/psfm-<visit>.fits (PSF-matched
companion, case "psf_matched" only), OUTDIR/<case>/manifest.json (safeclip manifest; warp entries
name "psf_matched" when there is a companion) and OUTDIR/<case>/truth.json.

Cases (64x64, xy0 = (1000, 2000), unit-ish Gaussian noise with fixed seeds):
  same_psf     8 warps, PSF σ 1.5 in all, each warp is its own PSF-matched warp. A static star,
               a one-warp transient, a two-warp ghost, a faint transient on top of the static star
               (inside the template's source footprint), a BAD column, a SAT box, a NaN+NO_DATA
               strip, an EDGE band, extra mask planes at different bits in different files,
               different zero points and noise levels.
  psf_matched  8 warps with PSF σ 1.0 .. 2.6 and PSF-matched companions (σ_m = 2.8: the direct
               warp convolved with a Gaussian of sqrt(σ_m² − σ_i²), variance with k², mask bits
               OR-grown by the kernel radius; each warp is simulated on a field padded by 12 px so
               the convolution needs no border rule). Static star, one-warp transient, two-warp
               ghost, an EDGE band (x 0..2) in the first warp, grown by r in its companion.
  few_warps    4 warps, PSF σ 1.5: a one-warp transient (clipped: E = int(min(0.4·4, 2 + 0.03·4))
               = 1) and a two-warp ghost, which cannot be clipped (E = 1 < 2 epochs; in fact a
               4-warp 2.5σ MEANCLIP template keeps half the ghost, and the template's sample variance
               then hides it from the 5σ detection).
Uses Debian's python3-numpy and python3-astropy.
"""
import json
import math
import os
import sys

import numpy as np
from astropy.io import fits

CANON = ["BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT", "NO_DATA"]
W = H = 64
X0, Y0 = 1000, 2000
F27 = 10.0 ** (0.4 * 27.0)


PAD = 12  # warps are simulated on a padded field so that PSF matching needs no border rule


def _grid():
    y, x = np.mgrid[0:H + 2 * PAD, 0:W + 2 * PAD]
    return x - PAD, y - PAD  # box coordinates (0..W-1 inside)


def gauss(cx, cy, flux, sigma):
    x, y = _grid()
    return flux / (2 * np.pi * sigma * sigma) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))


def ghost(cx, cy, r, amp):
    """A flat disk with a soft (1 px) edge: an optical ghost."""
    x, y = _grid()
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return amp * np.clip(r + 0.5 - d, 0.0, 1.0)


def crop(a):
    return a[PAD:PAD + H, PAD:PAD + W]


def write_warp(path, img, var, mask, planes, visit, psf_sigma, scale):
    """img/var in coadd units (zero point 27) are written in the warp's own units (FLUXMAG0 = F27/scale)."""
    prim = fits.PrimaryHDU()
    prim.header["FLUXMAG0"] = (F27 / scale, "zero point")
    prim.header["VISIT"] = visit
    prim.header["PSFSIGMA"] = (psf_sigma, "px")
    hdus = [prim]
    for name, data in (("IMAGE", (img / scale).astype(np.float32)), ("MASK", mask.astype(np.int32)),
                       ("VARIANCE", (var / (scale * scale)).astype(np.float32))):
        h = fits.ImageHDU(data=data, name=name)
        hd = h.header
        hd["EXTTYPE"] = name
        hd["INHERIT"] = True
        hd["LTV1"], hd["LTV2"] = -X0, -Y0
        for ax, v in (("1", X0), ("2", Y0)):
            hd["CTYPE%sA" % ax] = "LINEAR"
            hd["CRPIX%sA" % ax] = 1.0
            hd["CRVAL%sA" % ax] = float(v)
            hd["CUNIT%sA" % ax] = "PIXEL"
        for k, v in (("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("CRVAL1", 150.0), ("CRVAL2", 2.0),
                     ("CRPIX1", 32.0), ("CRPIX2", 32.0), ("CD1_1", -5.0e-05), ("CD1_2", 0.0),
                     ("CD2_1", 0.0), ("CD2_2", 5.0e-05)):
            hd[k] = v
        if name == "MASK":
            for i, p in enumerate(planes):
                hd["HIERARCH MP_" + p if len(p) > 5 else "MP_" + p] = i  # as afw writes them
        hdus.append(h)
    fits.HDUList(hdus).writeto(path, overwrite=True)


def psf_match(img, var, mask, sig_i, sig_m):
    """Gaussian PSF matching of a padded warp, cropped to the box: image convolved with
    k = N(sqrt(σ_m² − σ_i²)), variance with k², mask bits OR-grown by the kernel radius."""
    sk = math.sqrt(max(sig_m * sig_m - sig_i * sig_i, 0.0))
    if sk == 0:
        return crop(img).copy(), crop(var).copy(), crop(mask).copy()
    r = int(math.ceil(3.5 * sk))
    assert r <= PAD
    t = np.arange(-r, r + 1)
    g = np.exp(-t * t / (2 * sk * sk))
    g /= g.sum()

    def conv(a, k):
        a = a.astype(np.float64)
        tmp = sum(k[i] * a[:, PAD - r + i:PAD - r + i + W] for i in range(2 * r + 1))
        return sum(k[i] * tmp[PAD - r + i:PAD - r + i + H, :] for i in range(2 * r + 1))

    om = np.zeros((H, W), mask.dtype)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            om |= mask[PAD - r + dy:PAD - r + dy + H, PAD - r + dx:PAD - r + dx + W]
    return conv(img, g), conv(var, g * g), om


def make_case(out, name, n, psf_sigmas, transient, ghost_warps, psf_match_to=None, extras=False,
              contained=None, edge=False, seed0=0):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    star = (20, 20, 2000.0)
    gh = (44, 16, 5, 25.0)
    visits = [100 + i for i in range(n)]
    manifest = {"format": "safeclip-manifest", "version": 1,
                "patches": [{"name": name, "box": [X0, Y0, W, H], "warps": []}]}
    truth = {"case": name, "xy0": [X0, Y0], "star": {"x": star[0] + X0, "y": star[1] + Y0},
             "transient": {"visit": visits[transient[0]], "x": transient[1] + X0, "y": transient[2] + Y0,
                           "flux": transient[3]},
             "ghost": {"visits": [visits[i] for i in ghost_warps], "x": gh[0] + X0, "y": gh[1] + Y0,
                       "r": gh[2], "amp": gh[3]},
             "n_warps": n, "masks": []}
    if contained is not None:
        truth["contained"] = {"visit": visits[contained[0]], "x": contained[1] + X0, "y": contained[2] + Y0,
                              "flux": contained[3]}
    for i in range(n):
        rng = np.random.default_rng(1000 * seed0 + i + 1)
        sig = psf_sigmas[i]
        varlev = [1.0, 1.3, 0.8, 1.1, 0.9, 1.2, 1.0, 1.5][i % 8]
        scale = [1.0, 1.25, 0.8, 1.1, 0.95, 1.0, 1.05, 0.9][i % 8]
        planes = list(CANON)
        if extras:  # extra planes at different bits in different files (remapping)
            planes += ["CROSSTALK"] if i < n // 2 else ["UNMASKEDNAN", "CROSSTALK"]
        bit = {p: 1 << k for k, p in enumerate(planes)}
        model = gauss(star[0], star[1], star[2], sig)
        det = np.zeros(model.shape, np.int64)
        sd = math.sqrt(varlev)
        det |= np.where(model > 3 * sd, bit["DETECTED"], 0)
        if i == transient[0]:
            t = gauss(transient[1], transient[2], transient[3], sig)
            model = model + t
            det |= np.where(t > 3 * sd, bit["DETECTED"], 0)
        if i in ghost_warps:
            gmod = ghost(gh[0], gh[1], gh[2], gh[3])
            model = model + gmod
            det |= np.where(gmod > 3 * sd, bit["DETECTED"], 0)
        if contained is not None and i == contained[0]:
            t = gauss(contained[1], contained[2], contained[3], sig)
            model = model + t
            det |= np.where(t > 3 * sd, bit["DETECTED"], 0)
        img = model + rng.normal(0.0, sd, model.shape)  # padded field
        var = np.full(model.shape, varlev)
        mask = det

        def box(y0, y1, x0, x1):  # box coordinates (end exclusive) -> padded-array slices
            return slice(PAD + y0, PAD + y1), slice(PAD + x0, PAD + x1)

        if (extras or edge) and i == 0:
            mask[box(-PAD, H + PAD, 0, 3)] |= bit["EDGE"]
            truth["masks"].append({"visit": visits[i], "plane": "EDGE", "x": [X0, X0 + 2]})
        if extras:
            if i == 1:
                mask[box(-PAD, H + PAD, 55, 56)] |= bit["BAD"]
                truth["masks"].append({"visit": visits[i], "plane": "BAD", "x": [X0 + 55, X0 + 55]})
            if i == 3:
                mask[box(50, 54, 10, 14)] |= bit["SAT"]
                truth["masks"].append({"visit": visits[i], "plane": "SAT", "box": [X0 + 10, Y0 + 50, 4, 4]})
            if i == n - 1:
                img[box(-PAD, 6, -PAD, W + PAD)] = np.nan
                var[box(-PAD, 6, -PAD, W + PAD)] = np.inf
                mask[box(-PAD, 6, -PAD, W + PAD)] |= bit["NO_DATA"]
                truth["masks"].append({"visit": visits[i], "plane": "NO_DATA", "y": [Y0, Y0 + 5]})
            mask[box(30, 32, 58, 61)] |= bit["CROSSTALK"]
        path = os.path.join(d, "warp-%d.fits" % visits[i])
        write_warp(path, crop(img), crop(var), crop(mask), planes, visits[i], sig, scale)
        entry = {"visit": visits[i], "path": os.path.basename(path)}
        if psf_match_to is not None:
            pi, pv, pmk = psf_match(img, var, mask, sig, psf_match_to)
            ppath = os.path.join(d, "psfm-%d.fits" % visits[i])
            write_warp(ppath, pi, pv, pmk, planes, visits[i], psf_match_to, scale)
            entry["psf_matched"] = os.path.basename(ppath)
        manifest["patches"][0]["warps"].append(entry)
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(os.path.join(d, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "cw_cases"
    make_case(out, "same_psf", 8, [1.5] * 8, transient=(2, 44, 44, 800.0), ghost_warps=[4, 5], extras=True,
              contained=(6, 22, 21, 150.0), seed0=1)
    make_case(out, "psf_matched", 8, [1.0, 1.2, 1.5, 1.8, 2.0, 2.2, 2.4, 2.6], transient=(1, 44, 44, 3000.0),
              ghost_warps=[3, 6], psf_match_to=2.8, edge=True, seed0=2)
    make_case(out, "few_warps", 4, [1.5] * 4, transient=(0, 44, 44, 800.0), ghost_warps=[1, 2], seed0=3)
    print("wrote same_psf, psf_matched, few_warps under " + out)


if __name__ == "__main__":
    main()

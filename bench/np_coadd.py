#!/usr/bin/python3
# Copied unchanged (apart from this line) from the peer study (shared/reference/peers/py/np_coadd.py).
"""Plain numpy inverse-variance weighted mean with astropy.stats.sigma_clip.

usage: np_coadd.py OUT.fits WARP.fits [WARP.fits ...]
         [--sigma 3] [--maxiters 2] [--cenfunc median] [--stdfunc mad_std]
         [--no-clip] [--rows R] [--weights pixel|image] [--plain]
Inputs: 3-HDU warps (IMAGE/MASK/VARIANCE extensions) or, with --plain,
        single-HDU images with WARP.weight.fits inverse-variance maps.
--rows R : process R output rows at a time (bounds memory to ~N*R*W*~40 B); 0 = all
Output: IMAGE (float32), VARIANCE (1/sum w over kept inputs), NEXP (int16 count of kept
inputs), NCLIP (int16 count of inputs rejected by clipping).
"""
import argparse
import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("warps", nargs="+")
    ap.add_argument("--sigma", type=float, default=3.0)
    ap.add_argument("--maxiters", type=int, default=2)
    ap.add_argument("--cenfunc", default="median")
    ap.add_argument("--stdfunc", default="mad_std")
    ap.add_argument("--no-clip", action="store_true")
    ap.add_argument("--rows", type=int, default=0)
    ap.add_argument("--weights", choices=["pixel", "image"], default="pixel",
                    help="per-pixel 1/var, or one 1/median(var) per warp (LSST AssembleCoadd style)")
    ap.add_argument("--plain", action="store_true")
    a = ap.parse_args()

    # open everything memory-mapped; each chunk reads only its rows
    hls, imgs, msks, vars_ = [], [], [], []
    for f in a.warps:
        if a.plain:
            hi = fits.open(f, memmap=True)
            hw = fits.open(f.replace(".fits", ".weight.fits"), memmap=True)
            hls += [hi, hw]
            imgs.append(hi[0].data)
            msks.append(None)
            vars_.append(("w", hw[0].data))
        else:
            h = fits.open(f, memmap=True)
            hls.append(h)
            imgs.append(h["IMAGE"].data)
            msks.append(h["MASK"].data)
            vars_.append(("v", h["VARIANCE"].data))
    hdr = (fits.getheader(a.warps[0], 0) if a.plain else fits.getheader(a.warps[0], "IMAGE"))
    N = len(imgs)
    H, W = imgs[0].shape
    rows = a.rows if a.rows > 0 else H

    img_w = None
    if a.weights == "image":
        img_w = []
        for k, v in vars_:
            vv = v if k == "v" else 1.0 / v
            img_w.append(1.0 / np.nanmedian(vv[np.isfinite(vv) & (vv > 0)]))
        img_w = np.array(img_w, np.float32)

    out = np.empty((H, W), np.float32)
    ovar = np.empty((H, W), np.float32)
    nexp = np.empty((H, W), np.int16)
    nclip = np.zeros((H, W), np.int16)
    for y0 in range(0, H, rows):
        y1 = min(H, y0 + rows)
        x = np.empty((N, y1 - y0, W), np.float32)
        w = np.empty((N, y1 - y0, W), np.float32)
        bad = np.zeros((N, y1 - y0, W), bool)
        for i in range(N):
            x[i] = imgs[i][y0:y1]
            k, v = vars_[i]
            if k == "v":
                vv = v[y0:y1]
                bad[i] = (msks[i][y0:y1] != 0) | ~(vv > 0)
                with np.errstate(divide="ignore"):
                    w[i] = 1.0 / vv
            else:
                w[i] = v[y0:y1]
                bad[i] = ~(w[i] > 0)
        bad |= ~np.isfinite(x)
        if img_w is not None:
            var_pix = np.where(bad, 0, 1.0 / np.where(w > 0, w, 1))
            w[:] = img_w[:, None, None]
        else:
            var_pix = None
        if a.no_clip:
            rej = bad
        else:
            mx = np.ma.MaskedArray(x, mask=bad)
            c = sigma_clip(mx, sigma=a.sigma, maxiters=a.maxiters, cenfunc=a.cenfunc,
                           stdfunc=a.stdfunc, axis=0, masked=True, copy=False)
            rej = np.ma.getmaskarray(c)
            nclip[y0:y1] = (rej & ~bad).sum(0)
        w[rej] = 0
        x[rej] = 0
        sw = w.sum(0, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[y0:y1] = (w * x).sum(0, dtype=np.float64) / sw
            if var_pix is None:
                ovar[y0:y1] = 1.0 / sw
            else:   # scalar weights: propagate per-pixel variance
                var_pix[rej] = 0
                ovar[y0:y1] = (w * w * var_pix).sum(0, dtype=np.float64) / (sw * sw)
        nexp[y0:y1] = (~rej).sum(0)
        del x, w, bad, rej
    hdr = hdr.copy()
    for k in ("EXTNAME", "EXPID", "SKYSIG", "PSFSIG"):
        hdr.pop(k, None)
    hl = fits.HDUList([fits.PrimaryHDU(),
                       fits.ImageHDU(out, header=hdr, name="IMAGE"),
                       fits.ImageHDU(ovar, header=hdr, name="VARIANCE"),
                       fits.ImageHDU(nexp, header=hdr, name="NEXP"),
                       fits.ImageHDU(nclip, header=hdr, name="NCLIP")])
    hl.writeto(a.out, overwrite=True)


if __name__ == "__main__":
    main()

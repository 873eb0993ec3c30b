#!/bin/bash
# Smoke test of the independent CompareWarp reference (tests/reference/comparewarp_ref.py):
# generate the tiny cases, run the reference on them and check the obvious properties.
# Registered in CTest as `reference_comparewarp` (the C++ comparewarp mode does not exist yet: this
# checks the reference itself); by hand: tests/reference/test_comparewarp_ref.sh [SCRATCH_DIR]
# Exits non-zero if any check fails. Needs Debian's /usr/bin/python3 with numpy and astropy.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
WORK="${1:-$(mktemp -d "${TMPDIR:-/tmp}/cwref.XXXXXX")}"
mkdir -p "$WORK"
echo "scratch: $WORK"

"$PY" "$HERE/make_cw_cases.py" "$WORK"
ref() { "$PY" "$HERE/comparewarp_ref.py" "$@"; }
for c in same_psf psf_matched few_warps; do
  ref "$WORK/$c/out.fits" --manifest "$WORK/$c/manifest.json" 2> "$WORK/$c/log.txt"
done
# variants: no template-source preservation; a smaller maxFractionEpochsLow (E = 1 at nImage 8);
# two warps only (mean nImage 2 < 2.5: nothing can be clipped)
ref "$WORK/same_psf/nopreserve.fits" --manifest "$WORK/same_psf/manifest.json" --no-preserve-contained \
  2> "$WORK/same_psf/nopreserve.log"
ref "$WORK/same_psf/elow.fits" --manifest "$WORK/same_psf/manifest.json" --max-fraction-epochs-low 0.2 \
  2> "$WORK/same_psf/elow.log"
ref "$WORK/few_warps/two.fits" --warp "$WORK/few_warps/warp-100.fits" --warp "$WORK/few_warps/warp-101.fits" \
  2> "$WORK/few_warps/two.log"

# the stacker against the afw unit-test vectors of spec §12 (and §4 / §11 edge cases)
"$PY" - "$HERE" <<'EOF'
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import comparewarp_ref as R

bad = 0
def check(c, what):
    global bad
    print(("ok: " if c else "FAIL: ") + what)
    bad += not c

def col(vals):
    return np.array(vals, dtype=np.float64).reshape(-1, 1)

x = col([0] * 9 + [1]); acc = np.ones_like(x, bool)
mu, V, s2, ncl = R.clip_stats(x, np.ones(10), x, acc, 3.0, 2)
check(mu[0] == 0 and ncl[0] == 1, "MEANCLIP: nine 0 and one 1 -> 0, one clipped (IQR = 0)")
mu, V, s2, ncl = R.clip_stats(col([5.0]), np.ones(1), col([2.0]), np.ones((1, 1), bool), 1.5, 3)
check(mu[0] == 5 and ncl[0] == 0 and V[0] == 2.0, "MEANCLIP of one value = the value, V = its variance")
mu, V, s2, ncl = R.clip_stats(col([1.0, 3.0]), np.ones(2), col([1.0, 1.0]), np.ones((2, 1), bool), 1.5, 3)
check(mu[0] == 2 and ncl[0] == 0, "MEANCLIP n0 = 2, sigma 1.5 keeps both")
xs = np.array([1, 2, 3, 4, 5], np.float32).reshape(5, 1, 1)
w = np.array([1, 2, 1, 2, 1], np.float32)
SAT, NOD, REJ = 2, 256, 1 << 11
for nrej, expect in ((1, False), (2, True)):
    m = np.zeros((5, 1, 1), np.int64)
    m[:nrej] = SAT  # rejected weight 1/7 (w = 1) or 3/7 (w = 1 + 2)
    img, var, M = R.mean_stack(xs, m, xs, w, SAT | NOD, {"NO_DATA": NOD}, [(SAT, REJ)], {SAT: 0.3})
    keep = slice(nrej, 5)
    ok_mean = abs(img[0, 0] - float((w[keep] * xs[keep, 0, 0]).sum() / w[keep].sum())) < 1e-6
    check(bool(M[0, 0] & SAT) == expect and bool(M[0, 0] & REJ) and ok_mean,
          f"MEAN: SAT propagates at threshold 0.3 only when the rejected weight fraction is "
          f"{'3/7' if expect else '1/7'}; REJECTED mapped; mean of the rest")
m = np.full((5, 1, 1), NOD, np.int64)
img, var, M = R.mean_stack(xs, m, xs, w, NOD, {"NO_DATA": NOD}, [], {})
check(np.isnan(img[0, 0]) and M[0, 0] == NOD, "MEAN: nothing accepted -> NaN, mask = NO_DATA")
img, var, M = R.mean_stack(xs, np.zeros((5, 1, 1), np.int64), xs, np.ones(5, np.float32), NOD,
                           {"NO_DATA": NOD}, [], {})
check(abs(var[0, 0] - 15 / 25) < 1e-7, "MEAN: V = sum w^2 v / (sum w)^2")
check(abs(R.determinant_radius([1, 1, 2.6, 2.6], [1] * 4) - 1.22) < 0.01,
      "CoaddPsf determinant radius of sigma 1,1,2.6,2.6 ~ 1.22 (spec §0.3)")
sys.exit(1 if bad else 0)
EOF

"$PY" - "$WORK" <<'EOF'
import json
import sys

import numpy as np
from astropy.io import fits

work = sys.argv[1]
failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures += 1


class Out:
    def __init__(self, path):
        h = fits.open(path)
        self.x0, self.y0 = int(h["IMAGE"].header["CRVAL1A"]), int(h["IMAGE"].header["CRVAL2A"])
        self.img = h["IMAGE"].data.astype(np.float64)
        self.var = h["VARIANCE"].data.astype(np.float64)
        self.mask = h["MASK"].data.astype(np.int64) & 0xFFFFFFFF
        self.bit = {k[3:]: 1 << int(v) for k, v in h["MASK"].header.items() if k.startswith("MP_")}
        self.nimage = h["NIMAGE"].data.astype(np.int64)
        self.napprox = h["NIMAGE_APPROX"].data.astype(np.int64)
        sp = h["CLIPPED_SPANS"].data
        self.clipped = {}
        for v, y, a, b in zip(sp["visit"], sp["y"], sp["x0"], sp["x1"]):
            s = self.clipped.setdefault(int(v), set())
            for x in range(int(a), int(b) + 1):
                s.add((x, int(y)))
        self.summary = json.load(open(path[:-5] + ".json"))

    def at(self, arr, x, y):  # PARENT coordinates
        return arr[y - self.y0, x - self.x0]

    def has(self, plane, x, y):
        return bool(self.at(self.mask, x, y) & self.bit[plane])

    def clipped_visits_at(self, x, y):
        return sorted(v for v, s in self.clipped.items() if (x, y) in s)

    def cands(self, visit):
        return [c for c in self.summary["candidates"] if c["visit"] == visit]


def near(c, x, y):
    b = c["bbox"]
    return b[0] <= x <= b[2] and b[1] <= y <= b[3]


# ------------------------------------------------------------------------------ same_psf
d = work + "/same_psf"
t = json.load(open(d + "/truth.json"))
o = Out(d + "/out.fits")
tr, gh, st, ct = t["transient"], t["ghost"], t["star"], t["contained"]
print("same_psf: clipped visits", sorted(o.clipped), "pixels", {v: len(s) for v, s in o.clipped.items()})
check(sorted(o.clipped) == sorted([tr["visit"]] + gh["visits"]),
      "same_psf: only the transient's and the ghost's warps have CLIPPED spans")
check(o.clipped_visits_at(tr["x"], tr["y"]) == [tr["visit"]], "same_psf: one-warp transient CLIPPED in its warp only")
check(o.clipped_visits_at(gh["x"], gh["y"]) == sorted(gh["visits"]),
      "same_psf: two-warp ghost CLIPPED in both its warps (8 warps: E = int(min(3.2, 2.24)) = 2)")
ghc = [c for v in gh["visits"] for c in o.cands(v) if near(c, gh["x"], gh["y"])]
check(len(ghc) == 2 and all(c["max_epochs"] == 2 and c["decision"] == "artefact" for c in ghc),
      "same_psf: ghost candidates have E = 2 and are artefacts")
sy0, sx0 = st["y"] - o.y0, st["x"] - o.x0
star_clip = [v for v, s in o.clipped.items() for (x, y) in s if abs(x - st["x"]) <= 6 and abs(y - st["y"]) <= 6]
check(not star_clip, "same_psf: static star not clipped in any warp")
check(not o.has("CLIPPED", st["x"], st["y"]), "same_psf: coadd has no CLIPPED on the star")
flux = o.img[sy0 - 8:sy0 + 9, sx0 - 8:sx0 + 9].sum()
check(abs(flux / 2000.0 - 1) < 0.03, f"same_psf: star flux in the coadd {flux:.1f} within 3% of 2000")
cc = [c for c in o.cands(ct["visit"]) if near(c, ct["x"], ct["y"])]
check(len(cc) == 1 and cc[0]["reason"] == "kept: contained by source",
      "same_psf: transient on the star is 'kept: contained by source'")
check(o.clipped_visits_at(ct["x"], ct["y"]) == [], "same_psf: transient on the star not clipped")
tv = o.at(o.img, tr["x"], tr["y"]) / np.sqrt(o.at(o.var, tr["x"], tr["y"]))
check(abs(tv) < 5, f"same_psf: transient gone from the coadd ({tv:.2f} sigma at its centre)")
check(o.has("CLIPPED", tr["x"], tr["y"]) and o.has("INEXACT_PSF", tr["x"], tr["y"]),
      "same_psf: coadd CLIPPED|INEXACT_PSF at the transient")
# nImage (final, §7.2 3d) and approximate (§10 step 3)
quiet = (o.x0 + 30, o.y0 + 40)
check(o.at(o.nimage, *quiet) == 8 and o.at(o.napprox, *quiet) == 8, "same_psf: NIMAGE = NIMAGE_APPROX = 8 on clean sky")
check(o.at(o.nimage, st["x"], st["y"]) == 8, "same_psf: NIMAGE = 8 on the star")
check(o.at(o.nimage, tr["x"], tr["y"]) == 7 and o.at(o.napprox, tr["x"], tr["y"]) == 8,
      "same_psf: NIMAGE 7 / NIMAGE_APPROX 8 at the transient")
check(o.at(o.nimage, gh["x"], gh["y"]) == 6, "same_psf: NIMAGE 6 at the ghost")
masks = {m["plane"]: m for m in t["masks"]}
bx = masks["BAD"]["x"][0]
check(o.at(o.nimage, bx, o.y0 + 30) == 7 and o.has("REJECTED", bx, o.y0 + 30)
      and o.has("INEXACT_PSF", bx, o.y0 + 30), "same_psf: BAD column -> NIMAGE 7, REJECTED|INEXACT_PSF")
sb = masks["SAT"]["box"]
check(o.has("SAT", sb[0] + 1, sb[1] + 1) and o.has("REJECTED", sb[0] + 1, sb[1] + 1),
      "same_psf: SAT box -> SAT (rejected weight > 10%) and REJECTED")
ny = masks["NO_DATA"]["y"][0]
check(o.at(o.nimage, o.x0 + 30, ny + 2) == 7 and o.at(o.napprox, o.x0 + 30, ny + 2) == 7
      and not o.has("NO_DATA", o.x0 + 30, ny + 2), "same_psf: NaN/NO_DATA strip in one warp -> NIMAGE 7, coadd has data")
ex = masks["EDGE"]["x"][0]
check(o.has("SENSOR_EDGE", ex, o.y0 + 30) and o.has("INEXACT_PSF", ex, o.y0 + 30)
      and o.at(o.nimage, ex, o.y0 + 30) == 8 and not o.has("EDGE", ex, o.y0 + 30),
      "same_psf: EDGE band -> SENSOR_EDGE|INEXACT_PSF, EDGE removed, still stacked (NIMAGE 8)")
check(not o.has("SENSOR_EDGE", ex + 10, o.y0 + 30), "same_psf: no SENSOR_EDGE away from the EDGE band")
check(o.has("CROSSTALK", o.x0 + 59, o.y0 + 30), "same_psf: CROSSTALK (bit 9 or 10 by file) remapped by name")

o2 = Out(d + "/nopreserve.fits")
check(o2.clipped_visits_at(ct["x"], ct["y"]) == [ct["visit"]],
      "same_psf --no-preserve-contained: transient on the star is clipped in its warp")
o3 = Out(d + "/elow.fits")
g3 = [c for v in gh["visits"] for c in o3.cands(v) if near(c, gh["x"], gh["y"])]
check(len(g3) == 2 and all(c["max_epochs"] == 1 and c["reason"] == "kept: spatial" for c in g3)
      and o3.clipped_visits_at(gh["x"], gh["y"]) == [],
      "same_psf --max-fraction-epochs-low 0.2 (E = 1): ghost 'kept: spatial', not clipped")
check(o3.clipped_visits_at(tr["x"], tr["y"]) == [tr["visit"]], "same_psf E = 1: one-warp transient still clipped")

# ---------------------------------------------------------------------------- psf_matched
d = work + "/psf_matched"
t = json.load(open(d + "/truth.json"))
o = Out(d + "/out.fits")
tr, gh, st = t["transient"], t["ghost"], t["star"]
print("psf_matched: clipped visits", sorted(o.clipped), "pixels", {v: len(s) for v, s in o.clipped.items()})
check(sorted(o.clipped) == sorted([tr["visit"]] + gh["visits"]),
      "psf_matched: only the transient's and the ghost's warps have CLIPPED spans")
check(o.clipped_visits_at(tr["x"], tr["y"]) == [tr["visit"]], "psf_matched: transient CLIPPED in its warp only")
check(o.clipped_visits_at(gh["x"], gh["y"]) == sorted(gh["visits"]), "psf_matched: ghost CLIPPED in both warps")
check(o.clipped_visits_at(st["x"], st["y"]) == [] and not o.has("CLIPPED", st["x"], st["y"]),
      "psf_matched: static star not clipped (PSF sigma 1.0 .. 2.6)")
sy0, sx0 = st["y"] - o.y0, st["x"] - o.x0
flux = o.img[sy0 - 12:sy0 + 13, sx0 - 12:sx0 + 13].sum()
check(abs(flux / 2000.0 - 1) < 0.03, f"psf_matched: star flux {flux:.1f} within 3% of 2000")
check(o.has("SENSOR_EDGE", o.x0 + 8, o.y0 + 30) and not o.has("SENSOR_EDGE", o.x0 + 20, o.y0 + 30),
      "psf_matched: the companion's grown EDGE band -> SENSOR_EDGE (x = 8 yes, x = 20 no)")
check(int(o.nimage.min()) == 6 and o.at(o.nimage, gh["x"], gh["y"]) == 6 and o.at(o.nimage, tr["x"], tr["y"]) == 7
      and int(o.napprox.min()) == 8, "psf_matched: NIMAGE 6 at the ghost, 7 at the transient; NIMAGE_APPROX = 8")

# ------------------------------------------------------------------------------ few_warps
d = work + "/few_warps"
t = json.load(open(d + "/truth.json"))
o = Out(d + "/out.fits")
tr, gh = t["transient"], t["ghost"]
print("few_warps: clipped visits", sorted(o.clipped), "candidates",
      [(c["visit"], c["reason"], c.get("max_epochs")) for c in o.summary["candidates"]])
check(o.clipped_visits_at(tr["x"], tr["y"]) == [tr["visit"]], "few_warps: transient CLIPPED in its warp (E = 1)")
check(sorted(o.clipped) == [tr["visit"]], "few_warps: nothing else clipped")
check(o.clipped_visits_at(gh["x"], gh["y"]) == [], "few_warps: two-warp ghost not clipped with 4 warps")
check(all(c["max_epochs"] == 1 for c in o.summary["candidates"] if "max_epochs" in c), "few_warps: E = 1")
check(int(o.nimage.max()) == 4 and o.summary["mean_nimage"] == 4.0, "few_warps: NIMAGE <= 4, mean NIMAGE_APPROX 4")
o4 = Out(d + "/two.fits")
check(o4.summary["nothing_can_clip"] and not o4.clipped and o4.summary["mean_nimage"] == 2.0,
      "two warps: mean nImage 2 < 2.5, flagged, nothing clipped")
check("nothing can be clipped" in open(d + "/two.log").read(), "two warps: the log says nothing can be clipped")

print(f"{failures} failure(s)" if failures else "all checks passed")
sys.exit(1 if failures else 0)
EOF

#!/usr/bin/env bash
# output.weight_map (issue 16 item 9): <patch>.weight.fits next to each coadd, 1/VARIANCE (0 where
# there is none) with the coadd's WCS and valid checksums; not written without the key; --resume
# over a finished patch writes it again when it is missing, without recoadding.
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
"$SAFECLIP" simulate --out data --warps 3 --size 96x80 --seed 6 --log-level warn
printf '[input]\nmanifest = "data/manifest.json"\n[output]\ndir = "out"\nweight_map = true\n' > w.toml
"$SAFECLIP" run w.toml --log-level warn || fail "run failed"
$PY - out/p000.fits out/p000.weight.fits <<'PY' && pass "weight map = 1/VARIANCE (0 without data), the coadd's WCS, checksums valid" || fail "weight map content"
import sys
import numpy as np
from astropy.io import fits
with fits.open(sys.argv[1]) as c, fits.open(sys.argv[2], checksum=True) as w:
    v = c["VARIANCE"].data
    want = np.where(np.isfinite(v) & (v > 0), (np.float32(1) / v).astype(np.float32), np.float32(0))
    ok = np.array_equal(w["WEIGHT"].data, want)
    ok &= all(w["WEIGHT"].header[k] == c["IMAGE"].header[k] for k in ("CTYPE1", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2"))
    sys.exit(0 if ok else 1)
PY
"$SAFECLIP" run w.toml --set output.dir=\"plain\" --set output.weight_map=false --log-level warn || fail "run without weight map failed"
[ ! -e plain/p000.weight.fits ] && pass "no weight map without output.weight_map" || fail "a weight map without the key"
rm out/p000.weight.fits
: > out/p000.weight.fits.tmp.999999  # left by a killed writer (no such pid): swept
"$SAFECLIP" run w.toml --resume --log-level info 2>res.log || fail "--resume failed"
[ ! -e out/p000.weight.fits.tmp.999999 ] && pass "a stale weight-map temporary is removed" || fail "stale weight-map temporary kept"
grep -q "1 skipped" res.log && grep -q "weight map .*p000.weight.fits (it was missing" res.log && [ -s out/p000.weight.fits ] \
  && pass "--resume writes a missing weight map, the patch skipped" || fail "--resume and the weight map: $(grep -E 'weight|summary' res.log)"
finish

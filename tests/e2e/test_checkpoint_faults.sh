#!/usr/bin/env bash
# Checkpoint faults (issue 13 items 1, 2, 3, 9, 11), every case under `timeout`, every damage at a
# fixed offset: damaged decision and tile checkpoints are reported and recomputed to byte-identical
# coadds (never a silently different one, never a hang); a stop signal ends a run whose call never
# returns with 75 after the grace period; a full checkpoint disk is exit 4 naming the file and the
# reason (no segfault); a finished patch's leftover checkpoints are removed, foreign files never.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
CORRUPT="python3 $HERE/corrupt.py"
"$SAFECLIP" simulate --out data --patches 2 --warps 6 --size 512x384 --seed 13 --log-level warn
cat > run.toml <<TOML
[input]
manifest = "data/manifest.json"
[output]
dir = "ref"
[checkpoint]
tile_interval = 0.0
[tile]
size = 128
TOML
timeout 300 "$SAFECLIP" run run.toml --log-level warn || fail "reference run failed"
same_as_ref() {  # $1 dir, $2 label
  local p bad=0
  for p in p000 p001; do
    cmp -s "ref/$p.fits" "$1/$p.fits" || { bad=1; fail "$2: $p.fits differs or is missing"; }
  done
  [ "$bad" = 0 ] && pass "$2: both patches byte-identical to the uninterrupted run"
  [ -z "$(find "$1" -name '*.tmp.*')" ] || fail "$2: temporary files left: $(find "$1" -name '*.tmp.*')"
}
# Item 11: a successful run leaves no (empty) checkpoint directory behind.
[ ! -e ref/checkpoints ] && pass "no checkpoint dir left after a successful run" \
  || fail "checkpoint dir left after success: $(ls -R ref/checkpoints)"

# Decision checkpoints kept by a failure after them (both patches on rank 0 fail in "final").
set +e
SAFECLIP_FAIL_AT=0:final timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"dec\" --log-level warn 2>dec.log
rc=$?
set -e
[ "$rc" -ne 0 ] && [ -f dec/checkpoints/p000.reduced.h5 ] || fail "no decision checkpoint kept (exit $rc)"
visit=$(python3 -c "import json; print(json.load(open('data/manifest.json'))['patches'][0]['warps'][0]['visit'])")

# Items 1, 2: each damage is caught before HDF5 parses the file; the stage is recomputed.
size=$(stat -c %s dec/checkpoints/p000.reduced.h5)
n=0
for damage in "zero-used $visit" "flip 600" "flip $((size / 2))" "flip -3" "zero 4096 4096" "zero 8192 4096" "zero 0 1" \
  "truncate 90" "truncate 50" "append garbage" "fifo"; do
  n=$((n + 1))
  rm -rf "c$n" && cp -r dec "c$n"
  f="c$n/checkpoints/p000.reduced.h5"
  if [ "$damage" = fifo ]; then rm "$f" && mkfifo "$f"; else $CORRUPT "$f" $damage; fi
  set +e
  timeout 120 "$SAFECLIP" run run.toml --set output.dir=\"c$n\" --resume --log-level info 2>"c$n.log"
  rc=$?
  set -e
  if [ "$rc" -eq 0 ] && grep -q "ignoring invalid checkpoint: .*/c$n/checkpoints/p000.reduced.h5: " "c$n.log"; then
    pass "decision checkpoint, $damage: $(grep -o -m1 'p000.reduced.h5: .*' "c$n.log" | cut -c1-110)"
  else
    fail "decision checkpoint, $damage: exit $rc (124 = hang): $(grep -i -m2 'error\|warn' "c$n.log")"
  fi
  same_as_ref "c$n" "decision checkpoint, $damage"
done

# Item 9: damaged tile checkpoints (kept by a failure right after the first one) are reported and
# the tile recomputed once: byte-identical coadds, INPUTS n_used_pixels included.
set +e
SAFECLIP_FAIL_AT=0:tile-checkpoint timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"til\" \
  --log-level warn 2>til.log
set -e
tile=$(find til/checkpoints -path '*p000.tiles/tile_*.h5' | head -1)
[ -n "$tile" ] || fail "no tile checkpoint kept: $(ls -R til)"
for damage in "flip 700" "flip -100" "zero 2048 4096" "truncate 99" "append x"; do
  n=$((n + 1))
  rm -rf "c$n" && cp -r til "c$n"
  $CORRUPT "c$n/${tile#til/}" $damage
  set +e
  timeout 120 "$SAFECLIP" run run.toml --set output.dir=\"c$n\" --resume --log-level info 2>"c$n.log"
  rc=$?
  set -e
  [ "$rc" -eq 0 ] && grep -q "ignoring tile checkpoint: .*/c$n/checkpoints/p000.tiles/tile_" "c$n.log" \
    && pass "tile checkpoint, $damage: reported and recomputed" \
    || fail "tile checkpoint, $damage: exit $rc: $(grep -i -m2 'error\|warn' "c$n.log")"
  same_as_ref "c$n" "tile checkpoint, $damage"
done

# Item 2: a stop signal while a call never returns (test hook) -> exit 75 after the grace period.
for sig in USR1 TERM; do
  rm -rf "h$sig"
  SAFECLIP_TEST_HANG_AT=final SAFECLIP_STOP_GRACE_SECONDS=2 "$SAFECLIP" run run.toml \
    --set output.dir=\"h$sig\" --log-level info 2>"h$sig.log" &
  pid=$!
  for _ in $(seq 1 600); do grep -q "test hook: hanging" "h$sig.log" && break; sleep 0.1; done
  kill "-$sig" "$pid"
  t0=$(date +%s)
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null && fail "SIG$sig: still running 30 s after the signal (killed)"
  set +e; wait "$pid"; rc=$?; set -e
  took=$(($(date +%s) - t0))
  [ "$rc" -eq 75 ] && [ "$took" -le 15 ] && grep -q "exiting 75" "h$sig.log" \
    && pass "SIG$sig during a call that never returns: exit 75 after ${took} s ($(grep -o -m1 'still running.*' "h$sig.log" | cut -c1-60))" \
    || fail "SIG$sig during a hang: exit $rc after ${took} s"
  timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"h$sig\" --resume --log-level warn \
    || fail "resume after the watchdog exit"
  same_as_ref "h$sig" "SIG$sig watchdog exit, then --resume"
done

# Item 3: checkpoint dir on a full file system -> exit 4 naming the file and the reason, no segfault.
mkdir -p full
if mount -t tmpfs -o size=1m tmpfs full 2>/dev/null; then
  trap 'umount full 2>/dev/null || true' EXIT
  head -c $((255 * 4096)) /dev/zero > full/filler  # leaves one 4 KiB page
  reason="No space left on device"
  set +e
  timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"nospace\" --set checkpoint.dir=\"full\" \
    --log-level warn 2>nospace.log
  rc=$?
  set -e
  [ "$rc" -eq 4 ] && grep -q "full/p00[01][^ ]*: cannot write the checkpoint: .*$reason" nospace.log \
    && pass "full checkpoint disk: exit 4: $(grep -o -m1 'full/p00.*' nospace.log | cut -c1-120)" \
    || fail "full checkpoint disk: exit $rc (139 = segfault): $(head -c 600 nospace.log)"
  [ -z "$(find full -name '*.tmp.*')" ] || fail "temporaries left on the full disk: $(ls full)"
  [ -f full/filler ] || fail "foreign file removed from the checkpoint dir"
  # The coadd itself on the full disk (its pixels, then the DATASUM/CHECKSUM pass): exit 4 with the
  # system's reason, whichever cfitsio call meets the full disk first.
  set +e
  timeout 300 "$SAFECLIP" coadd -o full/out.fits data/p000/warp-*.fits --log-level warn 2>nospace-out.log
  rc=$?
  set -e
  [ "$rc" -eq 4 ] && grep -q "full/out.fits.*$reason" nospace-out.log \
    && pass "coadd onto a full disk: exit 4: $(grep -o -m1 'full/out.*' nospace-out.log | cut -c1-140)" \
    || fail "coadd onto a full disk: exit $rc: $(head -c 400 nospace-out.log)"
  [ -z "$(find full -name '*.tmp.*')" ] || fail "temporaries left on the full disk: $(ls full)"
  umount full
  trap - EXIT
else
  echo "note: mount -t tmpfs refused; RLIMIT_FSIZE instead"
  set +e
  (trap '' XFSZ; ulimit -f 16; timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"nospace\" \
    --log-level warn 2>nospace.log)
  rc=$?
  set -e
  [ "$rc" -eq 4 ] && grep -q "File too large" nospace.log \
    && pass "file size limit: exit 4: $(grep -o -m1 'nospace/.*' nospace.log | cut -c1-120)" \
    || fail "file size limit: exit $rc (139 = segfault): $(head -c 600 nospace.log)"
fi

# Item 11: a finished patch's leftover checkpoints (killed after the FITS rename, before the cleanup)
# are removed on --resume; foreign files in the checkpoint dirs are never touched.
rm -rf left && cp -r ref left && mkdir -p left/checkpoints
cp dec/checkpoints/p000.reduced.h5 left/checkpoints/
cp -r til/checkpoints/p000.tiles left/checkpoints/
echo mine > left/checkpoints/notes.txt
echo mine > left/checkpoints/p000.reduced.h5.bak
echo mine > left/checkpoints/p000.tiles/keep.me
timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"left\" --resume --log-level warn || fail "resume of a finished run"
[ ! -e left/checkpoints/p000.reduced.h5 ] && [ -z "$(find left/checkpoints -name 'tile_*')" ] \
  && pass "a skipped patch's checkpoints are removed" || fail "checkpoints left: $(ls -R left/checkpoints)"
[ -f left/checkpoints/notes.txt ] && [ -f left/checkpoints/p000.reduced.h5.bak ] && [ -f left/checkpoints/p000.tiles/keep.me ] \
  && pass "foreign files kept" || fail "a foreign file was removed: $(ls -R left/checkpoints)"
rm left/checkpoints/notes.txt left/checkpoints/p000.reduced.h5.bak left/checkpoints/p000.tiles/keep.me
timeout 300 "$SAFECLIP" run run.toml --set output.dir=\"left\" --resume --log-level warn || fail "second resume"
[ ! -e left/checkpoints ] && pass "empty checkpoint dirs removed" || fail "left: $(ls -R left/checkpoints)"
same_as_ref left "finished run resumed twice"
finish

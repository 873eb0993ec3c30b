#!/usr/bin/env bash
# Same inputs -> byte-identical coadds for any rank count (1..4), memory budget, tile and chunk size.
source "$(dirname "$0")/common.sh"
"$SAFECLIP" simulate --out data --patches 3 --warps 6 --size 160x128 --seed 7 --log-level warn
cat > base.toml <<TOML
[input]
manifest = "data/manifest.json"
[output]
dir = "ref"
TOML
"$SAFECLIP" run base.toml --log-level warn || fail "serial run failed"
ls ref/p000.fits ref/p001.fits ref/p002.fits >/dev/null || fail "serial run did not write 3 patches"
compare() {  # $1 = label, $2 = output dir
  for p in p000 p001 p002; do
    cmp -s "ref/$p.fits" "$2/$p.fits" || { fail "$1: $p.fits differs from the 1-rank run"; return; }
  done
  pass "$1: 3 patches byte-identical"
}
for n in 2 3 4; do
  mpirun -n "$n" "$SAFECLIP" run base.toml --set output.dir=\"np$n\" --log-level warn || fail "np$n run failed"
  compare "mpirun -n $n" "np$n"
done
"$SAFECLIP" run base.toml --set output.dir=\"rows16\" --set tile.size=16 --log-level warn || fail "tile.size=16 failed"
compare "tile.size=16 (16-px tiles, smaller than the halo)" rows16
# 340 KiB: the gathered patch (280 KiB), then tiles and row chunks derived from what is left.
"$SAFECLIP" run base.toml --set output.dir=\"budget\" --set memory.max_per_rank=\"340KiB\" --log-level debug \
  2>budget.log || fail "340KiB budget failed: $(grep error budget.log)"
grep -qE "in ([2-9]|[1-9][0-9]+) tiles of" budget.log && pass "340KiB budget: $(grep -o -m1 'in [0-9]* tiles of [0-9]* px' budget.log), $(grep -o -m1 '([0-9]* rows per chunk)' budget.log)" \
  || fail "340KiB budget did not give small tiles: $(grep -m1 'tiles of' budget.log)"
compare "memory.max_per_rank=340KiB" budget
"$SAFECLIP" run base.toml --set output.dir=\"tiles24\" --set tile.size=24 --log-level warn || fail "tile.size=24 failed"
compare "tile.size=24 (smaller than the trail footprints; 4-tile corners everywhere)" tiles24
mpirun -n 3 "$SAFECLIP" run base.toml --set output.dir=\"np3tiles\" --set tile.size=40 --log-level warn \
  || fail "np3 tile.size=40 failed"
compare "mpirun -n 3, tile.size=40" np3tiles
mpirun -n 2 "$SAFECLIP" run base.toml --set output.dir=\"np2small\" --set tile.size=16 \
  --set memory.max_per_rank=\"340KiB\" --log-level warn || fail "np2 small chunks failed"
compare "mpirun -n 2, 16-row chunks, 340KiB" np2small
# A budget too small for even one row is refused before any work, naming the key.
if out=$("$SAFECLIP" run base.toml --set output.dir=\"tiny\" --set memory.max_per_rank=\"1KiB\" 2>&1); then
  fail "1KiB budget was accepted"
else
  echo "$out" | grep -q "memory.max_per_rank" && pass "1KiB budget refused: $(echo "$out" | grep -m1 memory)" \
    || fail "1KiB budget error does not name memory.max_per_rank: $out"
fi
finish

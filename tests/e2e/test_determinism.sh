#!/usr/bin/env bash
# Same inputs -> byte-identical coadds for any rank count (1..4), memory budget and chunk size.
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
compare "tile.size=16 (16-row chunks)" rows16
# 400 KiB: the full-patch planes (280 KiB) plus ~7 rows of 6 warps.
"$SAFECLIP" run base.toml --set output.dir=\"budget\" --set memory.max_per_rank=\"400KiB\" --log-level debug \
  2>budget.log || fail "400KiB budget failed"
grep -q "chunks of [1-9] rows" budget.log && pass "400KiB budget streams in small chunks: $(grep -o -m1 'in [0-9]* chunks of [0-9]* rows' budget.log)" \
  || fail "400KiB budget did not give small chunks: $(grep -m1 'final stack' budget.log)"
compare "memory.max_per_rank=400KiB" budget
mpirun -n 2 "$SAFECLIP" run base.toml --set output.dir=\"np2small\" --set tile.size=16 \
  --set memory.max_per_rank=\"400KiB\" --log-level warn || fail "np2 small chunks failed"
compare "mpirun -n 2, 16-row chunks, 400KiB" np2small
# A budget too small for even one row is refused before any work, naming the key.
if out=$("$SAFECLIP" run base.toml --set output.dir=\"tiny\" --set memory.max_per_rank=\"1KiB\" 2>&1); then
  fail "1KiB budget was accepted"
else
  echo "$out" | grep -q "memory.max_per_rank" && pass "1KiB budget refused: $(echo "$out" | grep -m1 memory)" \
    || fail "1KiB budget error does not name memory.max_per_rank: $out"
fi
finish

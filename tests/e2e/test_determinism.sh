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
"$SAFECLIP" run base.toml --set output.dir=\"rows5\" --set tile.size=5 --log-level warn || fail "tile.size=5 failed"
compare "tile.size=5 (5-row chunks)" rows5
"$SAFECLIP" run base.toml --set output.dir=\"budget\" --set memory.max_per_rank=\"2MiB\" --log-level warn \
  || fail "2MiB budget failed"
compare "memory.max_per_rank=2MiB" budget
mpirun -n 2 "$SAFECLIP" run base.toml --set output.dir=\"np2small\" --set tile.size=3 \
  --set memory.max_per_rank=\"2MiB\" --log-level warn || fail "np2 small chunks failed"
compare "mpirun -n 2, 3-row chunks, 2MiB" np2small
# A budget too small for even one row is refused before any work, naming the key.
if out=$("$SAFECLIP" run base.toml --set output.dir=\"tiny\" --set memory.max_per_rank=\"1KiB\" 2>&1); then
  fail "1KiB budget was accepted"
else
  echo "$out" | grep -q "memory.max_per_rank" && pass "1KiB budget refused: $(echo "$out" | grep -m1 memory)" \
    || fail "1KiB budget error does not name memory.max_per_rank: $out"
fi
finish

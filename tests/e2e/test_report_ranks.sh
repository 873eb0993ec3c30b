#!/usr/bin/env bash
# report.json is made from one description of a patch's outcome (pipeline::PatchResult::fields),
# gathered over MPI with the same description: a 2-patch run at 1, 2 and 3 ranks gives the same
# report apart from the fields that depend on execution (ranks, timings, RSS, the rank a patch ran
# on, its group's tile plan and the warp bytes it read). At 2 and 3 ranks a patch is coadded away from world rank 0,
# so a field lost in the gather (as clipped_by_rule once was) would show here.
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
"$SAFECLIP" simulate --out data --patches 2 --warps 6 --size 256x192 --seed 9 --log-level warn
cat >cfg.toml <<TOML
[input]
manifest = "data/manifest.json"
[memory]
max_per_rank = "64MiB"
TOML
for n in 1 2 3; do
  mpirun -n "$n" "$SAFECLIP" run cfg.toml --set output.dir=out$n --log-level warn || fail "run on $n ranks failed"
done
$PY - <<'PYEOF' && pass "report.json identical at 1, 2 and 3 ranks apart from execution fields" || fail "report.json differs between rank counts"
import json, sys
# per patch: where and how long it ran, where it went, and the tile plan of its rank group (the
# tiles and the bytes read follow the group's size; the halo does not)
EXEC = {"rank", "seconds", "output", "tile_size", "tiles", "warp_bytes_read"}
def norm(path):
    j = json.load(open(path))
    for k in ("wall_seconds", "ranks", "rank_count", "config", "segments"):
        j.pop(k, None)
    for p in j["patches"]:
        for k in EXEC:
            p.pop(k, None)
    return j
ref = norm("out1/report.json")
assert len(ref["patches"]) == 2, ref
clipped = [p["clipped_by_rule"] for p in ref["patches"]]
assert all(sum(c.values()) > 0 for c in clipped), f"no clipped footprints to compare: {clipped}"
ok = True
for n in (2, 3):
    other = norm(f"out{n}/report.json")
    if other != ref:
        ok = False
        for a, b in zip(ref["patches"], other["patches"]):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    print(f"{n} ranks, patch {a.get('name')}: {k}: 1 rank {a.get(k)!r}, {n} ranks {b.get(k)!r}")
    ranks = sorted({p["rank"] for p in json.load(open(f"out{n}/report.json"))["patches"]})
    print(f"{n} ranks: patches reported from world ranks {ranks}")
sys.exit(0 if ok else 1)
PYEOF
for n in 2 3; do
  for p in p000 p001; do
    cmp -s out1/$p.fits out$n/$p.fits && pass "$p.fits identical at 1 and $n ranks" || fail "$p.fits differs between 1 and $n ranks"
  done
done
finish

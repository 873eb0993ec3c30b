#!/usr/bin/env bash
# Benchmark (not a test): the same one-patch run at 1 and 2 ranks (the patch's tiles shared by the
# ranks), and the peak RSS of every rank at two memory budgets (from safeclip's own report.json).
# usage: bench/scaling.sh [WARPS] [SIZE] [REPEATS]        (default 16 4096x4096 2)
set -euo pipefail
cd "$(dirname "$0")/.."
WARPS=${1:-16}
SIZE=${2:-4096x4096}
REPEATS=${3:-2}
BIN=${SAFECLIP_BIN:-build/safeclip}
DIR=${BENCH_DIR:-build/bench}/scaling-$WARPS-$SIZE
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
[ -x "$BIN" ] || scripts/build.sh
if [ ! -f "$DIR/data/manifest.json" ]; then
  "$BIN" simulate --out "$DIR/data" --warps "$WARPS" --size "$SIZE" --seed 1 --log-level warn
fi
echo "data: 1 patch, $WARPS warps of $SIZE; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-8s %-7s %-4s %8s %10s  %s\n' budget ranks run wall_s efficiency "peak RSS per rank (MiB)"
declare -A best
for budget in ${BUDGETS:-1GiB 512MiB}; do
  for r in $(seq 1 "$REPEATS"); do
    for n in 1 2; do
      cat > "$DIR/run.toml" <<TOML
[input]
manifest = "data/manifest.json"
[output]
dir = "out-$n"
[memory]
max_per_rank = "$budget"
TOML
      start=$(date +%s.%N)
      mpirun -n "$n" "$BIN" run "$DIR/run.toml" --log-level warn
      end=$(date +%s.%N)
      wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
      key="$budget-$n"
      if [ -z "${best[$key]:-}" ] || awk -v a="$wall" -v b="${best[$key]}" 'BEGIN { exit !(a < b) }'; then
        best[$key]=$wall
      fi
      rss=$(/usr/bin/python3 -c "import json; r=json.load(open('$DIR/out-$n/report.json'))['ranks']; print(' '.join('%.0f' % (x['peak_rss_bytes']/1048576) for x in r))")
      eff="-"
      if [ "$n" = 2 ] && [ -n "${best[$budget-1]:-}" ]; then
        eff=$(awk -v a="${best[$budget-1]}" -v b="$wall" 'BEGIN { printf "%.0f%%", 100 * a / (2 * b) }')
      fi
      printf '%-8s %-7s %-4s %8s %10s  %s\n' "$budget" "$n" "$r" "$wall" "$eff" "$rss"
    done
  done
  cmp -s "$DIR/out-1/p000.fits" "$DIR/out-2/p000.fits" && echo "$budget: 1-rank and 2-rank outputs byte-identical" \
    || echo "$budget: OUTPUTS DIFFER"
done
echo "efficiency = wall(1 rank, best) / (2 x wall(2 ranks)); wall includes MPI start-up"

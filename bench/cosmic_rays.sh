#!/usr/bin/env bash
# The cosmic_rays stage on the benchmark sets (issue 14 targets): SafeClip at 2 ranks with the stage
# off and on, interleaved, REPEATS rounds after one warm-up; wall time (median, min-max), then the
# quality of both coadds against the simulator's truth (bench/quality.py: CR flux left, noise,
# trail flux left) and the static-star flux and star-core flags (bench/star_flux.py).
# Benchmark only: prints figures, asserts nothing.
#
# usage: bench/cosmic_rays.sh [REPEATS]        (default 5)
#   env: SETS="B16 B64"  BUDGET=256MiB  BENCH_DIR=build/bench/compare  SAFECLIP_BIN=build/safeclip
#   The sets are the ones bench/compare.sh makes (run it once first, or make them the same way).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
SETS=${SETS:-"B16 B64"}
BUDGET=${BUDGET:-256MiB}
BENCH_DIR=${BENCH_DIR:-build/bench/compare}
BIN=${SAFECLIP_BIN:-build/safeclip}
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mkdir -p "$BENCH_DIR/ompi-tmp"
export TMPDIR="$PWD/$BENCH_DIR/ompi-tmp"
echo "cosmic_rays bench: $(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores; budget $BUDGET; $REPEATS rounds; $($BIN --version)"
for s in $SETS; do
  D="$BENCH_DIR/$s"
  [ -f "$D/manifest.json" ] || { echo "missing $D (run bench/compare.sh first)"; exit 2; }
  out="$BENCH_DIR/cr-$s"
  mkdir -p "$out"
  run() {  # $1 = off|on
    local extra=()
    [ "$1" = on ] && extra=(--set cosmic_rays.detect=true)
    /usr/bin/time -f "%e" -o "$out/t.$1" mpirun -n 2 "$BIN" coadd --overwrite --log-level warn \
      --set memory.max_per_rank=\""$BUDGET"\" "${extra[@]}" -o "$out/$1.fits" "$D"/p000/warp-*.fits
    cat "$out/t.$1"
  }
  run off >/dev/null; run on >/dev/null  # warm-up (page cache)
  offs=(); ons=()
  for ((r = 0; r < REPEATS; r++)); do
    offs+=("$(run off)"); ons+=("$(run on)")
  done
  med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.3f (%.3f-%.3f)", a[int((NR+1)/2)], a[1], a[NR]}'; }
  mo=$(printf '%s\n' "${offs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  mn=$(printf '%s\n' "${ons[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo
  echo "### $s: SafeClip, mpirun -n 2"
  echo "| cosmic_rays.detect | wall median (min-max) s |"
  echo "|---|---|"
  echo "| false | $(med "${offs[@]}") |"
  echo "| true | $(med "${ons[@]}") |"
  awk -v a="$mo" -v b="$mn" 'BEGIN {printf "stage cost: %+.1f %% of the run without it\n", 100 * (b / a - 1)}'
  echo
  $PY bench/quality.py "$D" p000 "off=$out/off.fits" "on=$out/on.fits" | sed 's/^/| /; s/$/ |/' | sed '2i |---|---|---|---|---|---|'
  $PY bench/star_flux.py "$D" p000 "$out/off.fits" "$out/on.fits"
done

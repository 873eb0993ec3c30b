#!/usr/bin/env bash
# Benchmark (not a test): time `safeclip coadd` on one simulated patch and print wall time,
# pixel-warps per second and peak RSS, for SafeClip and the plain weighted mean side by side.
# usage: bench/bench_coadd.sh [WARPS] [SIZE] [REPEATS]      (default 16 2048x2048 3)
set -euo pipefail
cd "$(dirname "$0")/.."
WARPS=${1:-16}
SIZE=${2:-2048x2048}
REPEATS=${3:-3}
BIN=${SAFECLIP_BIN:-build/safeclip}
DATA=${BENCH_DIR:-build/bench}/data-$WARPS-$SIZE
[ -x "$BIN" ] || scripts/build.sh
[ -x /usr/bin/time ] || { echo "bench: installing GNU time"; apt-get install -y -q time >/dev/null; }
if [ ! -f "$DATA/manifest.json" ]; then
  "$BIN" simulate --out "$DATA" --warps "$WARPS" --size "$SIZE" --seed 1 --log-level warn
fi
WARPFILES=("$DATA"/p000/warp-*.fits)
W=${SIZE%x*}; H=${SIZE#*x}
pixwarps=$((W * H * WARPS))
bytes=$(cat "${WARPFILES[@]}" | wc -c)
echo "data: $WARPS warps of $SIZE ($((bytes / 1048576)) MiB); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-28s %8s %8s %8s %14s %12s\n' mode run wall_s user_s Mpixwarp/s peakRSS_MiB
for r in $(seq 1 "$REPEATS"); do
  for mode in safeclip mean readfloor; do
    if [ "$mode" = readfloor ]; then
      cmd=(cat "${WARPFILES[@]}")
    else
      cmd=("$BIN" coadd --log-level warn --set coadd.mode=\"$mode\" --set memory.max_per_rank=\"${BUDGET:-1GiB}\" \
           -o "$DATA/coadd-$mode.fits" "${WARPFILES[@]}")
    fi
    rm -f "$DATA/coadd-$mode.fits"  # `coadd` refuses to replace a file without --overwrite
    /usr/bin/time -f '%e %U %M' -o "$DATA/time.txt" "${cmd[@]}" >/dev/null
    read -r wall user rss <"$DATA/time.txt"
    awk -v m="$mode" -v r="$r" -v w="$wall" -v u="$user" -v k="$rss" -v p="$pixwarps" \
      'BEGIN { printf "%-28s %8d %8.2f %8.2f %14.1f %12.1f\n", m, r, w, u, (w > 0 ? p / w / 1e6 : 0), k / 1024 }'
  done
done

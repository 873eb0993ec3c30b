#!/usr/bin/env bash
# Performance and quality of safeclip side by side with SWarp, Montage and numpy/astropy (issue #7).
# Benchmark only: prints tables, asserts nothing.
#
# usage: bench/compare.sh [REPEATS]            (default 3)
#   env: SETS="B16 B64"  BUDGET=256MiB  BENCH_DIR=build/bench/compare  SAFECLIP_BIN=build/safeclip
#        TOOLS="sc_r1 sc_r2 sc_mean sc_cw sc_cw_cr swarp montage numpy cat"
#        (sc_cw: coadd.mode = "comparewarp" at mpirun -n 2; sc_cw_cr: the same with cosmic_rays.detect)
#        BASE_BIN=<another safeclip build>: adds base_r1 base_r2 base_mean (the same three runs with that
#        binary, interleaved with the others in every round), to compare two commits side by side
#
# Data sets (made once, with `safeclip simulate --seed 1`): B16 = 16 warps of 2048x2048, B64 = 64 warps
# of 1024x1024; the peers get the same pixels as plain FITS at zero point 27 plus 1/var weight maps
# (bench/warp2plain.py). Every tool runs REPEATS times, interleaved, after one untimed warm-up
# round that also fills the page cache. Wall time and peak RSS come from /usr/bin/time
# (%e, %M: for mpirun, the largest rank). Quality is scored against the simulator's truth
# by bench/quality.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REPEATS=${1:-3}
SETS=${SETS:-B16 B64}
BUDGET=${BUDGET:-256MiB}
BD=${BENCH_DIR:-build/bench/compare}
BIN=${SAFECLIP_BIN:-build/safeclip}
TOOLS=${TOOLS:-sc_r1 sc_r2 sc_mean sc_cw sc_cw_cr swarp montage numpy cat}
BASE=${BASE_BIN:-}
if [ -n "$BASE" ]; then
  BASE=$(cd "$(dirname "$BASE")" && pwd)/$(basename "$BASE")
  TOOLS="$TOOLS base_r1 base_r2 base_mean"
fi
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

# ---- peers and tools: Debian packages, installed only when missing
need=()
for p in swarp montage python3-astropy python3-numpy time openmpi-bin; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "compare: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
fi
[ -x "$BIN" ] || scripts/build.sh
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
mkdir -p "$BD"
BD=$(cd "$BD" && pwd)

shape() { case $1 in B16) echo "16 2048x2048" ;; B64) echo "64 1024x1024" ;; *) echo "bad set $1" >&2; exit 1 ;; esac; }

prepare() {  # make data set $1 (idempotent)
  local D=$BD/$1; read -r n size <<<"$(shape "$1")"
  if [ ! -f "$D/manifest.json" ]; then
    echo "compare: simulating $1 ($n x $size)"
    "$BIN" simulate --out "$D" --warps "$n" --size "$size" --seed 1 --log-level warn
  fi
  if [ ! -f "$D/plain/.done" ]; then
    echo "compare: writing plain images + weight maps for the peers ($1)"
    rm -rf "$D/plain"; $PY bench/warp2plain.py "$D/plain" "$D"/p000/warp-*.fits; touch "$D/plain/.done"
  fi
  mkdir -p "$D/montage" "$D/out"
  for f in "$D"/plain/warp_???.fits; do b=$(basename "$f" .fits)
    ln -sf "../plain/$b.fits" "$D/montage/$b.fits"; ln -sf "../plain/$b.weight.fits" "$D/montage/${b}_area.fits"; done
  [ -f "$D/out/images.tbl" ] || (cd "$D" && mImgtbl montage out/images.tbl >/dev/null && mGetHdr plain/warp_000.fits out/template.hdr >/dev/null)
  cat >"$D/safeclip.toml" <<TOML
[input]
manifest = "manifest.json"
[memory]
max_per_rank = "$BUDGET"
[log]
level = "warn"
TOML
}

cmdline() {  # the command of tool $1 on data set dir $2
  local D=$2
  case $1 in
    sc_r1) echo "mpirun -n 1 $BIN run $D/safeclip.toml --set output.dir=\"$D/out/r1\"" ;;
    sc_r2) echo "mpirun -n 2 $BIN run $D/safeclip.toml --set output.dir=\"$D/out/r2\"" ;;
    sc_cw) echo "mpirun -n 2 $BIN run $D/safeclip.toml --set coadd.mode=\"comparewarp\" --set output.dir=\"$D/out/cw\"" ;;
    sc_cw_cr) echo "mpirun -n 2 $BIN run $D/safeclip.toml --set coadd.mode=\"comparewarp\" --set cosmic_rays.detect=true --set output.dir=\"$D/out/cwcr\"" ;;
    base_r1) echo "mpirun -n 1 $BASE run $D/safeclip.toml --set output.dir=\"$D/out/b1\"" ;;
    base_r2) echo "mpirun -n 2 $BASE run $D/safeclip.toml --set output.dir=\"$D/out/b2\"" ;;
    base_mean) echo "$BASE coadd --log-level warn --set coadd.mode=\"mean\" --set memory.max_per_rank=\"$BUDGET\" -o $D/out/bmean/p000.fits $D/p000/warp-*.fits" ;;
    sc_mean) echo "$BIN coadd --log-level warn --set coadd.mode=\"mean\" --set memory.max_per_rank=\"$BUDGET\" -o $D/out/mean/p000.fits $D/p000/warp-*.fits" ;;
    swarp) echo "SWarp $D/plain/warp_???.fits -RESAMPLE N -SUBTRACT_BACK N -WEIGHT_TYPE MAP_WEIGHT -RESCALE_WEIGHTS N -FSCALASTRO_TYPE NONE -GAIN_DEFAULT 1e6 -COMBINE_TYPE CLIPPED -CLIP_SIGMA 4.0 -CLIP_AMPFRAC 0.3 -COMBINE_BUFSIZE 256 -NTHREADS 2 -WRITE_XML N -VERBOSE_TYPE QUIET -IMAGEOUT_NAME $D/out/swarp_CLIPPED.fits -WEIGHTOUT_NAME $D/out/swarp_CLIPPED.weight.fits" ;;
    montage) echo "mAdd -e -p $D/montage $D/out/images.tbl $D/out/template.hdr $D/out/montage_mean.fits" ;;
    numpy) echo "$PY $ROOT/bench/np_coadd.py $D/out/np_clip.fits $D/plain/warp_???.fits --plain --sigma 3 --maxiters 2 --rows 256" ;;
    cat) echo "cat $D/p000/warp-*.fits" ;;
  esac
}

label() {
  case $1 in
    sc_r1) echo "safeclip SafeClip, mpirun -n 1" ;; sc_r2) echo "safeclip SafeClip, mpirun -n 2" ;;
    sc_mean) echo "safeclip weighted mean" ;;
    sc_cw) echo "safeclip CompareWarp, mpirun -n 2" ;; sc_cw_cr) echo "safeclip CompareWarp + cosmic rays, -n 2" ;;
    base_r1) echo "BASE_BIN SafeClip, mpirun -n 1" ;; base_r2) echo "BASE_BIN SafeClip, mpirun -n 2" ;;
    base_mean) echo "BASE_BIN weighted mean" ;; swarp) echo "SWarp CLIPPED (NTHREADS 2)" ;;
    montage) echo "Montage mAdd mean" ;; numpy) echo "numpy + astropy sigma_clip" ;;
    cat) echo "cat inputs (read floor)" ;;
  esac
}

run_one() {  # tool, set, round -> appends "set tool round wall rss" to $RES
  local D=$BD/$2 c; c=$(cmdline "$1" "$D")
  mkdir -p "$D/out/mean" "$D/out/bmean"
  rm -rf "$D/out/r1" "$D/out/r2" "$D/out/b1" "$D/out/b2" "$D/out/cw" "$D/out/cwcr"
  rm -f "$D/out/mean/p000.fits" "$D/out/bmean/p000.fits"  # `coadd` refuses to replace a file without --overwrite
  local t0 t1
  t0=$(date +%s%N)
  if ! /usr/bin/time -f '%e %M' -o "$D/time.txt" bash -c "$c" >/dev/null 2>"$D/err.txt"; then
    echo "compare: $1 on $2 failed:" >&2; tail -5 "$D/err.txt" >&2; echo "$2 $1 $3 nan nan" >>"$RES"; return
  fi
  t1=$(date +%s%N)
  read -r _ rss <"$D/time.txt"
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')  # ns clock; %e has 10 ms steps
  echo "$2 $1 $3 $wall $rss" >>"$RES"
}

RES=$BD/times.txt
: >"$RES"
echo "compare: $(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); budget $BUDGET; $REPEATS rounds"
for s in $SETS; do prepare "$s"; done
for r in $(seq 0 "$REPEATS"); do    # round 0 is the warm-up, not reported
  for s in $SETS; do for t in $TOOLS; do run_one "$t" "$s" "$r"; done; done
done

for s in $SETS; do
  read -r n size <<<"$(shape "$s")"
  echo
  echo "### $s: $n warps of $size, $(du -cm "$BD/$s"/p000/warp-*.fits | tail -1 | cut -f1) MiB of warp files (safeclip, afw layout); peers read $(du -smL "$BD/$s/plain" | cut -f1) MiB"
  echo
  awk -v set="$s" -v tools="$TOOLS" -v lbl="$(for t in $TOOLS; do printf '%s=%s;' "$t" "$(label "$t")"; done)" '
    function median(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                                         return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    $1 == set && $3 > 0 { k = $2; n[k]++; w[k, n[k]] = $4; if ($4 < mn[k] || n[k] == 1) mn[k] = $4; if ($4 > mx[k]) mx[k] = $4; if ($5 > rss[k]) rss[k] = $5 }
    END {
      split(lbl, L, ";"); for (i in L) { split(L[i], kv, "="); name[kv[1]] = kv[2] }
      nt = split(tools, T, " ")
      for (i = 1; i <= nt; i++) { k = T[i]; for (j = 1; j <= n[k]; j++) v[j] = w[k, j]; med[k] = n[k] ? median(v, n[k]) : -1 }
      printf "| tool | wall median (min-max) s | peak RSS MiB | / SWarp CLIPPED | / read floor |\n|---|---|---|---|---|\n"
      for (i = 1; i <= nt; i++) { k = T[i]; if (!n[k]) { printf "| %s | failed | | | |\n", name[k]; continue }
        printf "| %s | %.3f (%.3f-%.3f) | %s | %s | %s |\n", name[k], med[k], mn[k], mx[k],
          (k == "cat" ? "-" : sprintf("%.0f", rss[k] / 1024)),
          (med["swarp"] > 0 ? sprintf("%.3f", med[k] / med["swarp"]) : "-"),
          (med["cat"] > 0 ? sprintf("%.1f", med[k] / med["cat"]) : "-") }
    }' "$RES"
  D=$BD/$s
  echo
  echo "Quality against the truth ($s; bench/quality.py):"
  echo
  args=()
  [ -f "$D/out/r2/p000.fits" ] || mpirun -n 1 "$BIN" run "$D/safeclip.toml" --set output.dir=\""$D/out/r2"\" >/dev/null 2>&1 || true
  [ -f "$D/out/cw/p000.fits" ] || mpirun -n 2 "$BIN" run "$D/safeclip.toml" --set coadd.mode=\"comparewarp\" --set output.dir=\""$D/out/cw"\" >/dev/null 2>&1 || true
  [ -f "$D/out/cwcr/p000.fits" ] || mpirun -n 2 "$BIN" run "$D/safeclip.toml" --set coadd.mode=\"comparewarp\" --set cosmic_rays.detect=true --set output.dir=\""$D/out/cwcr"\" >/dev/null 2>&1 || true
  for kv in "safeclip SafeClip=$D/out/r2/p000.fits:1" "safeclip weighted mean=$D/out/mean/p000.fits:1" \
            "safeclip CompareWarp=$D/out/cw/p000.fits:1" "safeclip CompareWarp + CR=$D/out/cwcr/p000.fits:1" \
            "SWarp CLIPPED=$D/out/swarp_CLIPPED.fits:0" "Montage mAdd mean=$D/out/montage_mean.fits:0" \
            "numpy + sigma_clip=$D/out/np_clip.fits:1"; do
    [ -f "${kv#*=}" ] || [ -f "$(echo "${kv#*=}" | sed 's/:[0-9]*$//')" ] && args+=("$kv")
  done
  $PY bench/quality.py "$D" p000 "${args[@]}" | sed 's/^/| /; s/$/ |/' | sed '2i |---|---|---|---|---|---|'
done

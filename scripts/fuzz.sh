#!/usr/bin/env bash
# Fuzzes the input parsers with libFuzzer: FITS headers and mask planes (io::WarpReader), the run
# manifest (io::readManifest) and the TOML config (app::Config). Installs Debian's clang and
# libFuzzer runtime when missing (about 53 MB, ~20 s), builds every library with
# -fsanitize=address,fuzzer-no-link in ${FUZZ_BUILD_DIR:-build-fuzz}, and runs each target for
# ${FUZZ_SECONDS:-20} s from its seed corpus tests/fuzz/corpus/<target>/ (new inputs go to
# <build>/corpus/<target>/, crash reproducers to <build>/crashes/). Non-zero on any crash.
#   scripts/fuzz.sh                      # all three targets, 20 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh manifest
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-20}
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(warp_reader manifest config)

PKGS=(clang libclang-rt-14-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "fuzz: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
fi

if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_C_FLAGS="-fsanitize=address,fuzzer-no-link" -DCMAKE_CXX_FLAGS="-fsanitize=address,fuzzer-no-link" \
    -DSAFECLIP_ENABLE_TESTS=OFF -DSAFECLIP_FUZZ=ON >/dev/null
fi
cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]/#/fuzz_}"

mkdir -p "$BUILD/crashes"
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "$BUILD/corpus/$t"
  echo "fuzz: $t for ${SECONDS_EACH} s"
  # detect_leaks=0: cfitsio keeps process-wide buffers that LeakSanitizer would report at exit;
  # allocator_may_return_null=1: an overflowing calloc returns NULL as in production (cfitsio then
  # reports MEMORY_ALLOCATION, a clean InputError) instead of aborting.
  # FUZZ_RUNS/FUZZ_SEED (used by ctest): a fixed number of inputs from a fixed seed, so that the
  # CI run explores exactly what a local run of the same commit explored (no flaky findings).
  extra=()
  [ -n "${FUZZ_RUNS:-}" ] && extra+=(-runs="$FUZZ_RUNS")
  [ -n "${FUZZ_SEED:-}" ] && extra+=(-seed="$FUZZ_SEED")
  if ! ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 "$BUILD/tests/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=10 "${extra[@]}" \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$BUILD/crashes/$t-" \
      "$BUILD/corpus/$t" "tests/fuzz/corpus/$t" >"$BUILD/fuzz-$t.log" 2>&1; then
    failed+=("$t")
    echo "fuzz: $t FAILED; log $BUILD/fuzz-$t.log, reproducer(s):" $(ls "$BUILD/crashes/$t-"* 2>/dev/null)
    grep -E "ERROR|SUMMARY|==[0-9]+==" "$BUILD/fuzz-$t.log" | head -5
  else
    grep -E "stat::number_of_executed_units|cov:" "$BUILD/fuzz-$t.log" | tail -2 | tr '\n' ' '; echo
  fi
done
rm -f /tmp/safeclip-fuzz-*
if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]}"
  exit 1
fi
echo "fuzz: no crash in ${TARGETS[*]}"

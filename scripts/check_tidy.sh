#!/usr/bin/env bash
# ctest `tidy` (label lint): clang-tidy (the checks of .clang-tidy, all warnings are errors) over
# every src/**/*.cpp, with the build's compile_commands.json, JOBS (default 2) files at a time.
# Headers under include/safeclip and src/ are checked through the sources that include them
# (HeaderFilterRegex). A source missing from compile_commands.json is an error, not a skip.
# Usage: check_tidy.sh <source dir> <build dir> [clang-tidy binary]
set -euo pipefail
src=${1:?source dir}
build=${2:?build dir}
tidy=${3:-clang-tidy-14}
jobs=${JOBS:-2}
command -v "$tidy" >/dev/null || { echo "tidy: $tidy not found (apt-get install clang-tidy; scripts/deps.sh does)"; exit 1; }
db="$build/compile_commands.json"
[ -r "$db" ] || { echo "tidy: no $db (configure with CMAKE_EXPORT_COMPILE_COMMANDS=ON; CMakeLists.txt sets it)"; exit 1; }
echo "tidy: $("$tidy" --version | grep -i version | head -1), $jobs jobs"
mapfile -t files < <(find "$src/src" -type f -name '*.cpp' | sort)
missing=0
for f in "${files[@]}"; do
  grep -qF "\"file\": \"$f\"" "$db" || { echo "tidy: $f is not in $db (not built by any target?)"; missing=1; }
done
((missing == 0)) || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} sh -c \
  'log="$3/$(echo "$2" | tr / _).log"; "$0" -p "$1" --quiet "$2" >"$log" 2>&1 || echo "$2" >>"$3/failed"' \
  "$tidy" "$build" {} "$tmp"
secs=$(( $(date +%s) - start ))
if [ -s "$tmp/failed" ]; then
  for f in $(sort "$tmp/failed"); do
    echo "==== $f"
    grep -v '^[0-9]* warnings\? generated\.$' "$tmp/$(echo "$f" | tr / _).log" || true
  done
  echo "tidy: FAILED: $(wc -l <"$tmp/failed") of ${#files[@]} files have findings (${secs}s):"
  sort "$tmp/failed" | sed "s|^$src/|  |"
  exit 1
fi
echo "tidy: OK (${#files[@]} files, ${secs}s)"

#!/usr/bin/env bash
# ctest `format`: every *.h/*.cpp under src/, include/, tests/ and bench/ is formatted as
# .clang-format says (clang-format --dry-run -Werror, Debian 12's clang-format 14).
# Fix: clang-format-14 -i <the files listed>. VERBOSE=1 prints every diagnostic.
# Usage: check_format.sh <source dir> [clang-format binary]
set -euo pipefail
src=${1:?source dir}
cf=${2:-clang-format-14}
command -v "$cf" >/dev/null || { echo "format: $cf not found (apt-get install clang-format; scripts/deps.sh does)"; exit 1; }
echo "format: $("$cf" --version)"
cd "$src"
# The style file must parse with this clang-format (an unknown key is an error, not a warning).
"$cf" --style=file --dump-config >/dev/null
mapfile -t files < <(find src include tests bench -type f \( -name '*.h' -o -name '*.cpp' \) 2>/dev/null | sort)
((${#files[@]})) || { echo "format: no files"; exit 1; }
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
nbad=0
for f in "${files[@]}"; do
  if ! "$cf" --style=file --dry-run -Werror "$f" >"$tmp" 2>&1; then
    nbad=$((nbad + 1))
    echo "$f: $(grep -c 'error:' "$tmp" || true) clang-format replacement(s)"
    [[ "${VERBOSE:-0}" == 1 ]] && cat "$tmp"
  fi
done
if ((nbad)); then
  echo "format: FAILED: $nbad of ${#files[@]} files (fix: $cf -i <file>; VERBOSE=1 shows the diffs)"
  exit 1
fi
echo "format: OK (${#files[@]} files)"

#!/usr/bin/env bash
# Checks every #include of every layer's sources and headers (src/<layer>, include/safeclip/<layer>)
# against what the layer may see. ctest `layering` runs it; CMakeLists.txt writes the rules
# (safeclip_layer's DEPENDS and ALLOW) to <build>/layering.txt, one line per layer:
#   <layer> TAB <visible safeclip layers, space separated> TAB <allowed other includes, one ERE>
# Always allowed: C++ standard headers (<name>, no dot or slash), a quoted header that sits next to
# the including file, and the generated safeclip/Version.h.
# Include paths already hide the higher layers' safeclip headers; this also catches the system
# headers (fitsio.h, spdlog, boost) that live in /usr/include and no include path can hide.
# Usage: check_layering.sh <source dir> <build dir>/layering.txt
set -euo pipefail
src=${1:?source dir}
rules=${2:?layering.txt}
[ -r "$rules" ] || { echo "layering: no rules file $rules (reconfigure)"; exit 1; }
bad=0 nfiles=0 nincludes=0
while IFS=$'\t' read -r layer visible allow; do
  [[ -z "$layer" || "$layer" == \#* ]] && continue
  mapfile -t files < <(find "$src/src/$layer" "$src/include/safeclip/$layer" -type f \
                         \( -name '*.h' -o -name '*.cpp' -o -name '*.hpp' \) 2>/dev/null | sort)
  if ((${#files[@]} == 0)); then
    echo "layering: layer $layer has no files under src/$layer or include/safeclip/$layer"
    bad=1
    continue
  fi
  for f in "${files[@]}"; do
    nfiles=$((nfiles + 1))
    # "N:#include <x>" or "N:#  include "x"": the line number and the header name.
    while IFS=: read -r line text; do
      nincludes=$((nincludes + 1))
      inc=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([^>"]*)[>"].*/\1/' <<<"$text")
      quoted=0; [[ "$text" =~ include[[:space:]]*\" ]] && quoted=1
      ok=0
      if [[ "$inc" == safeclip/Version.h ]]; then
        ok=1
      elif [[ "$inc" =~ ^safeclip/([a-z_]+)/ ]]; then
        for v in $visible; do [[ "${BASH_REMATCH[1]}" == "$v" ]] && ok=1; done
      elif ((quoted)) && [[ "$inc" != */* && -f "$(dirname "$f")/$inc" ]]; then
        ok=1
      elif ((!quoted)) && [[ "$inc" =~ ^[a-z_0-9]+$ ]]; then
        ok=1  # C++ standard library
      elif [[ -n "$allow" ]] && grep -Eqx "$allow" <<<"$inc"; then
        ok=1
      fi
      if ((!ok)); then
        echo "${f#"$src"/}:$line: layer '$layer' may not include '$inc' (visible layers: $visible; other includes allowed: ${allow:-none})"
        bad=1
      fi
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include' "$f" || true)
  done
done <"$rules"
if ((bad)); then
  echo "layering: FAILED (rules: safeclip_layer() DEPENDS/ALLOW in CMakeLists.txt)"
  exit 1
fi
echo "layering: OK ($nfiles files, $nincludes includes)"

#!/usr/bin/env bash
# Input lists (issue 16 item 4): `coadd @LIST`, `--files-from LIST` and `--files-from -` give the
# same bytes as the paths typed out; validate and qa take lists too; a missing or empty list is a
# one-line error naming it (exit 2), before any pixel is read.
source "$(dirname "$0")/common.sh"
"$SAFECLIP" simulate --out data --warps 4 --size 96x80 --seed 3 --log-level warn
warps=(data/p000/warp-*.fits)
printf '# the warps of p000\n\n' > list.txt
printf '%s\n' "${warps[@]}" >> list.txt
mkdir -p typed at from stdin
"$SAFECLIP" coadd --log-level warn -o typed/p.fits "${warps[@]}" || fail "coadd with typed paths failed"
"$SAFECLIP" coadd --log-level warn -o at/p.fits @list.txt || fail "coadd @list.txt failed"
"$SAFECLIP" coadd --log-level warn -o from/p.fits --files-from list.txt || fail "coadd --files-from failed"
"$SAFECLIP" coadd --log-level warn -o stdin/p.fits --files-from - < list.txt || fail "coadd --files-from - failed"
for d in at from stdin; do
  cmp -s typed/p.fits "$d/p.fits" && pass "$d: same bytes as the typed paths" || fail "$d: differs from the typed paths"
done
"$SAFECLIP" validate @list.txt --log-level warn && pass "validate @list.txt" || fail "validate @list.txt"
"$SAFECLIP" qa --files-from <(echo typed/p.fits) --log-level warn && [ -s typed/p.qa.png ] \
  && pass "qa --files-from" || fail "qa --files-from wrote no picture"
for bad in "@nope.txt" "--files-from empty.txt"; do
  : > empty.txt
  rc=0
  # shellcheck disable=SC2086
  "$SAFECLIP" coadd -o bad/p.fits $bad 2>err.txt || rc=$?
  name=${bad#@}; name=${name#--files-from }
  [ "$rc" -eq 2 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "$name" err.txt && [ ! -e bad ] \
    && pass "$bad: exit 2, $(cut -c 27- err.txt)" || fail "$bad: exit $rc: $(cat err.txt)"
done
finish

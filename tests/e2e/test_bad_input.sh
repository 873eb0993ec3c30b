#!/usr/bin/env bash
# Bad input: a one-line error naming the file and the problem, a documented non-zero exit code,
# and no output created or overwritten.
source "$(dirname "$0")/common.sh"
"$SAFECLIP" simulate --out data --patches 1 --warps 4 --size 96x80 --seed 3 --log-level warn
W=(data/p000/warp-100.fits data/p000/warp-101.fits data/p000/warp-102.fits)
/usr/bin/python3 "$SAFECLIP_SOURCE_DIR/tests/e2e/make_bad_warps.py" data/p000/warp-103.fits bad
mkdir -p out
printf 'keep me' > out/existing.fits

check() {  # $1 expected exit code, $2 file that must be named, $3 regexp for the problem, $4.. command
  local code=$1 file=$2 problem=$3; shift 3
  set +e; "$@" >stdout.txt 2>stderr.txt; local rc=$?; set -e
  local errs; errs=$(grep -c '\[error\]' stderr.txt || true)
  local line; line=$(grep -m1 '\[error\]' stderr.txt || true)
  if [ "$rc" -ne "$code" ]; then fail "$file: exit $rc, expected $code ($(cat stderr.txt))"; return; fi
  if [ "$errs" -ne 1 ]; then fail "$file: $errs error lines, expected 1: $(cat stderr.txt)"; return; fi
  if ! grep -qF -- "$file" <<<"$line"; then fail "$file: error does not name the file: $line"; return; fi
  if ! grep -qiE -- "$problem" <<<"$line"; then fail "$file: error does not say '$problem': $line"; return; fi
  pass "exit $rc: ${line#*\[error\] }"
}
nothing_written() {
  [ "$(cat out/existing.fits)" = "keep me" ] || fail "existing output was modified"
  [ -z "$(ls out | grep -v '^existing.fits$')" ] || fail "files left in out/: $(ls out)"
}

check 3 bad/missing.fits "no such file|not exist" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/missing.fits
check 3 bad/notfits.fits "FITS" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/notfits.fits
check 3 bad/truncated.fits "truncat|end of file|EOF|short|size" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/truncated.fits
check 3 bad/nomask.fits "MASK" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/nomask.fits
check 3 bad/novariance.fits "VARIANCE" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/novariance.fits
check 3 bad/nomp.fits "MP_" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/nomp.fits
check 3 bad/dupbits.fits "duplicate|share" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/dupbits.fits
check 3 bad/smaller.fits "mismatched grid" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/smaller.fits
check 3 bad/otherwcs.fits "WCS differs" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/otherwcs.fits
check 3 bad/badvar.fits "VARIANCE: 100 of" "$SAFECLIP" coadd --set input.validate_pixels=true -o out/a.fits "${W[@]}" bad/badvar.fits
check 3 bad/nozeropoint.fits "zero point" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" bad/nozeropoint.fits
nothing_written
check 3 bad/truncated.fits "truncat|end of file|EOF|short|size" "$SAFECLIP" coadd --overwrite -o out/existing.fits "${W[@]}" bad/truncated.fits
nothing_written

# Bad configuration: exit 2, the key and the file named.
printf '[stack]\nsigmaclip = 2.0\n' > unknown.toml
check 2 unknown.toml "stack.sigmaclip" "$SAFECLIP" coadd --config unknown.toml -o out/a.fits "${W[@]}"
printf '[stack]\nclip_iter = "three"\n' > wrongtype.toml
check 2 wrongtype.toml "stack.clip_iter" "$SAFECLIP" coadd --config wrongtype.toml -o out/a.fits "${W[@]}"
check 2 "stack.sigma_clip" "stack.sigma_clip" "$SAFECLIP" coadd --set stack.sigma_clip=-1 -o out/a.fits "${W[@]}"
nothing_written

# Output path that is a directory: exit 4.
mkdir -p out/adir
check 4 out/adir "directory" "$SAFECLIP" coadd -o out/adir "${W[@]}"
rmdir out/adir
nothing_written

# skip policy: the bad warp is skipped and listed in the input table; the coadd is written.
"$SAFECLIP" coadd --set input.on_bad_warp=skip -o out/skip.fits "${W[@]}" bad/nomask.fits --log-level warn 2>skip.txt \
  && [ -f out/skip.fits ] && grep -q "bad/nomask.fits" skip.txt && pass "on_bad_warp=skip writes the coadd and warns" \
  || fail "on_bad_warp=skip: $(cat skip.txt)"
finish

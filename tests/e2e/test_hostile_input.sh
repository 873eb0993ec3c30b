#!/usr/bin/env bash
# Hostile input (issue #6): lying or absurd FITS headers, NaN/inf/zero/negative pixels, broken
# mask-plane cards, manifests that escape their directory, bad configs, unwritable outputs and a
# full disk (ulimit -f). Each case checks the exit code, that the one error line names the file
# and the problem, and that no output was created or modified (and no *.tmp.* is left behind).
#
# Cases marked LEAD are behaviours of src/app/PatchCoadd.cpp that are being rewritten: they are
# reported as "known" (not failures) while the old behaviour remains, and as "fixed" once the
# new behaviour is in; the report says where.
source "$(dirname "$0")/common.sh"
"$SAFECLIP" simulate --out data --patches 1 --warps 4 --size 96x80 --seed 3 --log-level warn
W=(data/p000/warp-100.fits data/p000/warp-101.fits data/p000/warp-102.fits)
/usr/bin/python3 "$SAFECLIP_SOURCE_DIR/tests/e2e/make_hostile.py" data/p000/warp-103.fits h
mkdir -p out
printf 'keep me' > out/existing.fits
KNOWN=0

run_cmd() {  # runs "$@" into stdout.txt/stderr.txt, sets RC
  set +e; "$@" >stdout.txt 2>stderr.txt; RC=$?; set -e
}
check() {  # $1 expected exit code, $2 file that must be named, $3 regexp for the problem, $4.. command
  local code=$1 file=$2 problem=$3; shift 3
  run_cmd "$@"
  local errs; errs=$(grep -c '\[error\]' stderr.txt || true)
  local line; line=$(grep -m1 '\[error\]' stderr.txt || true)
  if [ "$RC" -ne "$code" ]; then fail "$file: exit $RC, expected $code ($(cat stderr.txt))"; return; fi
  if [ "$errs" -ne 1 ]; then fail "$file: $errs error lines, expected 1: $(cat stderr.txt)"; return; fi
  if ! grep -qF -- "$file" <<<"$line"; then fail "$file: error does not name the file: $line"; return; fi
  if ! grep -qiE -- "$problem" <<<"$line"; then fail "$file: error does not say '$problem': $line"; return; fi
  pass "exit $RC: ${line#*\[error\] }"
}
no_tmp() {  # no temporary left anywhere under the scratch directory
  # (Open MPI's session directory under ./ompi is cleaned up asynchronously: keep out of it)
  local left; left=$(find . -path ./ompi -prune -o -name '*.tmp.*' -print 2>/dev/null | head -5 || true)
  [ -z "$left" ] || fail "temporary files left behind: $left"
}
nothing_written() {
  [ "$(cat out/existing.fits)" = "keep me" ] || fail "existing output was modified"
  [ -z "$(ls out | grep -v '^existing.fits$')" ] || fail "files left in out/: $(ls out)"
  no_tmp
}
input_status() {  # $1 coadd, $2 file: the INPUTS status of that file
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys
from astropy.io import fits
with fits.open(sys.argv[1]) as h:
    t = h["INPUTS"].data
    for f, s, w in zip(t["file"], t["status"], t["weight"]):
        if f == sys.argv[2]:
            print(s if s != "used" else "used weight=%g" % w)
PY
}
lead() {  # $1 description of a pipeline-level behaviour (PatchCoadd); $2.. test command
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

echo "== lying and absurd headers"
check 3 h/naxis_lies.fits "truncated file: HDU 2 needs [0-9]+ bytes" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" h/naxis_lies.fits
# A declared 200000x200000 image must be refused from its header, under a 1 GiB address-space
# limit: nothing may be sized from NAXISn before the check.
check 3 h/huge.fits "200000x200000 image, more than the limit of 2\^31 pixels" \
  bash -c 'ulimit -v 1048576; exec "$@"' _ "$SAFECLIP" coadd -o out/a.fits "${W[@]}" h/huge.fits
if [ -f h/huge_sparse.fits ]; then
  check 3 h/huge_sparse.fits "200000x200000 image, more than the limit" \
    bash -c 'ulimit -v 1048576; exec "$@"' _ "$SAFECLIP" coadd -o out/a.fits "${W[@]}" h/huge_sparse.fits
  # Alone under on_bad_warp=skip: the warning names the file and the problem, the error says why.
  run_cmd "$SAFECLIP" coadd --set input.on_bad_warp=skip -o out/a.fits h/huge_sparse.fits
  if [ "$RC" -eq 3 ] && grep -q '\[warning\].*h/huge_sparse.fits: HDU 2 declares a 200000x200000' stderr.txt &&
     grep -q '\[error\].*no readable warps' stderr.txt; then
    pass "huge_sparse alone under skip: exit 3, warning names the file, error: no readable warps"
  else
    fail "huge_sparse alone under skip: exit $RC: $(cat stderr.txt)"
  fi
  rm -f h/huge_sparse.fits
else
  echo "skip: sparse 480 GB file not possible here ($(cat h/huge_sparse.skipped))"
fi
nothing_written

echo "== mask-plane cards"
check 3 h/toolong.fits "has no value: mask plane name too long" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" h/toolong.fits
check 3 h/toolong2.fits "is not a mask bit number" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" h/toolong2.fits
check 3 h/dupname.fits "duplicate mask plane name BAD" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" h/dupname.fits
check 3 h/dupbits.fits "duplicate mask bit 0 \(MP_BAD and MP_SAT\)" "$SAFECLIP" coadd -o out/a.fits "${W[@]}" h/dupbits.fits
nothing_written
# The longest plane name a HIERARCH card holds (63 characters) is read and written back.
run_cmd "$SAFECLIP" coadd -o out/long.fits "${W[@]}" h/longname.fits --log-level warn
if [ "$RC" -eq 0 ] && /usr/bin/python3 -c "
import sys, warnings; warnings.simplefilter('ignore')
from astropy.io import fits
h = fits.open('out/long.fits')['MASK'].header
sys.exit(0 if ('MP_' + 'L' * 63) in h else 1)"; then
  pass "63-character HIERARCH mask plane name read and written back"
else
  fail "longname: exit $RC $(cat stderr.txt)"
fi
rm -f out/long.fits

echo "== NaN, inf, zero and negative pixels under on_bad_warp=skip: the others are coadded"
for f in allnan allinf zerovar negvar; do
  run_cmd "$SAFECLIP" coadd --set input.on_bad_warp=skip -o "out/$f.fits" "${W[@]}" "h/$f.fits" --log-level warn
  if [ "$RC" -ne 0 ] || [ ! -f "out/$f.fits" ]; then fail "$f (skip): exit $RC: $(cat stderr.txt)"; continue; fi
  status=$(input_status "out/$f.fits" "h/$f.fits")
  if [ "$f" = negvar ]; then
    lead "negative variance: warp skipped (PatchCoadd computeWeights accepts weight 1/meanVar < 0; got '$status')" \
      grep -q "^skipped" <<<"$status"
    continue
  fi
  if grep -q "^skipped" <<<"$status" && grep -qF "h/$f.fits" stderr.txt; then
    pass "$f (skip): coadd written, warp $status, and the log names it"
  else
    fail "$f (skip): status '$status', log: $(cat stderr.txt)"
  fi
done
rm -f out/allnan.fits out/allinf.fits out/zerovar.fits out/negvar.fits
# Under the default on_bad_warp=fail, the warps upstream's prepareInputs skips (all-NaN image,
# non-finite weight: allinf has no finite variance, zerovar a zero one) are skipped with a warning
# and the coadd is made; a negative variance (a finite negative weight) is an input error (exit 3),
# and on_bad_warp=strict stops on all of them.
for f in allnan allinf zerovar; do
  run_cmd "$SAFECLIP" coadd -o out/a.fits "${W[@]}" "h/$f.fits" --log-level warn
  status=$(input_status out/a.fits "h/$f.fits" 2>/dev/null)
  if [ "$RC" -eq 0 ] && grep -q "^skipped" <<<"$status" && grep -qF "h/$f.fits" stderr.txt; then
    pass "$f under on_bad_warp=fail: skipped as upstream does ($status), coadd written"
  else
    fail "$f under on_bad_warp=fail: exit $RC status '$status' $(cat stderr.txt)"
  fi
  rm -f out/a.fits
  run_cmd "$SAFECLIP" coadd --set input.on_bad_warp=strict -o out/a.fits "${W[@]}" "h/$f.fits"
  [ "$RC" -eq 3 ] && pass "$f under on_bad_warp=strict: exit 3" || fail "$f strict: exit $RC"
  rm -f out/a.fits
done
run_cmd "$SAFECLIP" coadd -o out/a.fits "${W[@]}" h/negvar.fits
[ "$RC" -eq 3 ] && pass "negvar under on_bad_warp=fail: exit 3" || fail "negvar fail: exit $RC"
rm -f out/a.fits
# validate finds them all, one line each, naming the file; exit 3.
run_cmd "$SAFECLIP" validate "${W[@]}" h/allnan.fits h/allinf.fits h/zerovar.fits h/negvar.fits h/huge.fits
if [ "$RC" -eq 3 ] && grep -q "h/allnan.fits .*error .*IMAGE is all NaN" stdout.txt &&
   grep -q "h/allinf.fits .*error .*no finite pixel" stdout.txt &&
   grep -q "h/zerovar.fits .*error .*VARIANCE: [0-9]* of [0-9]* .*zero" stdout.txt &&
   grep -q "h/negvar.fits .*error .*VARIANCE: .*negative" stdout.txt &&
   grep -q "h/huge.fits .*error .*200000x200000" stdout.txt && ! grep -q "warp-10[0-2]" stdout.txt; then
  pass "validate: exit 3, $(($(wc -l <stdout.txt) - 1)) problems listed"
else
  fail "validate: exit $RC: $(cat stdout.txt stderr.txt)"
fi
run_cmd "$SAFECLIP" validate "${W[@]}"
[ "$RC" -eq 0 ] && [ ! -s stdout.txt ] && pass "validate: good warps exit 0" || fail "validate good: $RC $(cat stdout.txt stderr.txt)"
nothing_written

echo "== manifests that escape their directory"
mkdir -p runroot/in elsewhere
cp data/p000/warp-100.fits elsewhere/w.fits
for w in "${W[@]}"; do cp "$w" runroot/in/; done
manifest() {  # $1: the path of the last warp as written in the manifest
  cat > runroot/manifest.json <<JSON
{"format": "safeclip-manifest", "version": 1, "patches": [{"name": "p000", "box": [1000, 2000, 96, 80],
 "warps": [{"visit": 101, "path": "in/warp-101.fits"}, {"visit": 102, "path": "in/warp-102.fits"},
           {"visit": 100, "path": "$1"}]}]}
JSON
}
printf '[input]\nmanifest = "manifest.json"\n[output]\ndir = "../out"\n' > runroot/run.toml
manifest "../elsewhere/w.fits"
check 2 runroot/manifest.json "'../elsewhere/w.fits' escapes the manifest's directory" "$SAFECLIP" run runroot/run.toml
ln -s ../elsewhere runroot/link
manifest "link/w.fits"
check 2 runroot/manifest.json "'link/w.fits' resolves through a symbolic link to .*elsewhere/w.fits, outside" "$SAFECLIP" run runroot/run.toml
check 2 runroot/manifest.json "escapes|symbolic link" "$SAFECLIP" validate runroot/run.toml
nothing_written
manifest "$PWD/elsewhere/w.fits"  # an absolute path is taken as given
run_cmd "$SAFECLIP" validate runroot/run.toml
[ "$RC" -eq 0 ] && pass "validate CONFIG.toml: absolute warp path outside the root accepted" || fail "validate abs: $RC $(cat stdout.txt stderr.txt)"

echo "== bad configurations"
printf '[input]\nmanifest = "manifest.json"\n[outptu]\ndir = "x"\n' > runroot/unknown.toml
check 2 runroot/unknown.toml "unknown key 'outptu.dir'" "$SAFECLIP" run runroot/unknown.toml
printf '[input]\nmanifest = 3\n' > runroot/wrongtype.toml
check 2 runroot/wrongtype.toml "input.manifest.*expected a string, got an integer" "$SAFECLIP" run runroot/wrongtype.toml
printf '[qa]\nenabled = "yes"\n' > runroot/qa.toml
check 2 runroot/qa.toml "qa.enabled.*expected a boolean" "$SAFECLIP" coadd --config runroot/qa.toml -o out/a.fits "${W[@]}"
printf '[stack\nsigma_clip = 1\n' > runroot/syntax.toml
check 2 runroot/syntax.toml "." "$SAFECLIP" run runroot/syntax.toml
printf 'stack = 3\n' > runroot/section.toml
check 2 runroot/section.toml "stack" "$SAFECLIP" run runroot/section.toml
nothing_written

echo "== unwritable outputs"
mkdir -p out/adir
check 4 out/adir "output path is a directory" "$SAFECLIP" coadd -o out/adir "${W[@]}"
rmdir out/adir
check 4 out/existing.fits/a.fits "existing.fits is not a directory" "$SAFECLIP" coadd -o out/existing.fits/a.fits "${W[@]}"
check 4 out/nodir/a.fits "out/nodir does not exist" "$SAFECLIP" coadd -o out/nodir/a.fits "${W[@]}"
if [ "$(id -u)" -ne 0 ]; then
  mkdir -p ro && chmod a-w ro
  check 4 ro/a.fits "ro/a.fits" "$SAFECLIP" coadd -o ro/a.fits "${W[@]}"
  chmod u+w ro
else
  echo "skip: read-only directory check (root ignores permissions)"
fi
nothing_written

echo "== full disk (ulimit -f): exit 4 naming the output, nothing left behind"
"$SAFECLIP" coadd -o good.fits "${W[@]}" --log-level warn
# coadd and run start the MPI runtime, which itself needs a few MB of files: a larger patch
# (coadd ~14 MB) under an 8 MiB file-size limit makes the writer fail mid-write.
"$SAFECLIP" simulate --out big --patches 1 --warps 3 --size 1024x1024 --seed 4 --log-level warn
BW=(big/p000/warp-100.fits big/p000/warp-101.fits big/p000/warp-102.fits)
check 4 out/full.fits "out/full.fits: write .*error writing to FITS file \(File too large\)" \
  bash -c 'ulimit -f 8192; exec "$@"' _ "$SAFECLIP" coadd -o out/full.fits "${BW[@]}"
check 4 out/existing.fits "out/existing.fits: write .*File too large" \
  bash -c 'ulimit -f 8192; exec "$@"' _ "$SAFECLIP" coadd --overwrite -o out/existing.fits "${BW[@]}"
check 4 out/full.png "out/full.png: write failed: File too large" bash -c 'ulimit -f 16; exec "$@"' _ "$SAFECLIP" qa good.fits -o out/full.png
nothing_written
printf '[input]\nmanifest = "big/manifest.json"\n[output]\ndir = "bigout"\n' > big.toml
run_cmd bash -c 'ulimit -f 8192; exec "$@"' _ "$SAFECLIP" run big.toml
if [ "$RC" -eq 4 ] && grep -q '\[error\].*bigout/p000.fits: write' stderr.txt && [ ! -e bigout/p000.fits ]; then
  pass "run under ulimit -f: exit 4, $(grep -m1 -o 'bigout/p000.fits: .*' stderr.txt)"
else
  fail "run under ulimit -f: exit $RC: $(tail -5 stderr.txt)"
fi
no_tmp

echo "== qa"
check 3 out/missing.fits "no such file" "$SAFECLIP" qa out/missing.fits
mkdir -p out/adir
check 4 out/adir "output path is a directory" "$SAFECLIP" qa good.fits -o out/adir
rmdir out/adir
nothing_written
run_cmd "$SAFECLIP" qa good.fits
[ "$RC" -eq 0 ] && [ -s good.qa.png ] && pass "qa: good.qa.png written" || fail "qa: $RC $(cat stderr.txt)"
no_tmp

finish

#!/usr/bin/env bash
# Issue 13 (items 6, 8, 12, 13, 15, 16): a hostile operator's inputs, command lines and concurrency.
# An output that is an input is refused before any work; `coadd` onto an existing file needs
# --overwrite; two runs on one output.dir: the second exits 4 naming the holder; signals to `coadd`
# give 75 and leave no temporary; a FIFO as warp, manifest or config is refused at once; numbers out
# of range are exit 2 naming the key or patch; an impossible memory budget fails at planning with
# the smallest budget that works (which works; one byte less does not). Every command under timeout.
source "$(dirname "$0")/common.sh"
T=(timeout 120)
"${T[@]}" "$SAFECLIP" simulate --out data --patches 2 --warps 3 --size 64x48 --seed 5 --log-level warn
W=(data/p000/warp-100.fits data/p000/warp-101.fits data/p000/warp-102.fits)
cat > run.toml <<TOML
[input]
manifest = "data/manifest.json"
[output]
dir = "out"
TOML

check() {  # $1 expected exit code, $2 text the one error line must contain (fixed string), $3.. command
  local code=$1 text=$2; shift 2
  set +e; "${T[@]}" "$@" >stdout.txt 2>stderr.txt; local rc=$?; set -e
  local errs; errs=$(grep -c '\[error\]' stderr.txt || true)
  local line; line=$(grep -m1 '\[error\]' stderr.txt || true)
  if [ "$rc" -ne "$code" ]; then fail "'$text': exit $rc, expected $code ($(tail -c 600 stderr.txt))"; return; fi
  if [ "$errs" -ne 1 ]; then fail "'$text': $errs error lines, expected 1: $(cat stderr.txt)"; return; fi
  if ! grep -qF -- "$text" <<<"$line"; then fail "error does not say '$text': $line"; return; fi
  pass "exit $rc: ${line#*\[error\] }"
}
unchanged() {  # $1 file, $2 its md5 before
  [ "$(md5sum <"$1")" = "$2" ] && pass "$1 unchanged" || fail "$1 was modified"
}

echo "== item 6: an output that is an input"
cp "${W[0]}" a.fits
cp "${W[1]}" b.fits
sum_a=$(md5sum <a.fits)
check 2 "a.fits: output would replace the input warp a.fits" "$SAFECLIP" coadd -o a.fits a.fits b.fits
unchanged a.fits "$sum_a"
check 2 "output would replace the input warp a.fits" "$SAFECLIP" coadd --overwrite -o ./sub/../a.fits a.fits b.fits
ln -f a.fits hard.fits
check 2 "hard.fits: output would replace the input warp a.fits" "$SAFECLIP" coadd --overwrite -o hard.fits a.fits b.fits
unchanged a.fits "$sum_a"
[ -z "$(ls ./*.tmp.* 2>/dev/null)" ] && pass "no temporaries" || fail "temporaries left: $(ls ./*.tmp.*)"
# An existing file that is no input needs --overwrite (as astropy's writeto).
printf 'keep me' > existing.fits
check 2 "existing.fits: output exists; give --overwrite to replace it" "$SAFECLIP" coadd -o existing.fits "${W[@]}"
[ "$(cat existing.fits)" = "keep me" ] && pass "existing.fits kept" || fail "existing.fits modified"
set +e; "${T[@]}" "$SAFECLIP" coadd --overwrite -o existing.fits "${W[@]}" --log-level warn; rc=$?; set -e
[ "$rc" -eq 0 ] && [ "$(head -c 6 existing.fits)" = "SIMPLE" ] && pass "--overwrite replaces it" ||
  fail "--overwrite: exit $rc"
# run: output.dir = a warp directory and a patch named like one of its warps.
cp -r data clash
sed -i 's/"p000"/"warp-101"/' clash/manifest.json
sum_w=$(md5sum <clash/p000/warp-101.fits)
check 2 "clash/p000/warp-101.fits: output would replace the input warp" \
  "$SAFECLIP" run run.toml --set input.manifest=\"clash/manifest.json\" --set output.dir=\"clash/p000\"
unchanged clash/p000/warp-101.fits "$sum_w"
[ ! -e clash/p000/p001.fits ] && pass "nothing written before the refusal" || fail "p001 coadded before the refusal"
# run rewrites its own earlier outputs (a plain rerun) and --resume skips them: both still work.
set +e
"${T[@]}" "$SAFECLIP" run run.toml --log-level warn; r1=$?
"${T[@]}" "$SAFECLIP" run run.toml --log-level warn; r2=$?
"${T[@]}" "$SAFECLIP" run run.toml --resume --log-level warn; r3=$?
set -e
[ "$r1$r2$r3" = 000 ] && pass "run, rerun and --resume on its own outputs: exit 0" || fail "exits $r1 $r2 $r3"

echo "== item 8: two runs on one output.dir"
"${T[@]}" "$SAFECLIP" simulate --out m16 --patches 1 --warps 3 --size 1024x1024 --seed 4 --log-level warn
rm -rf L
# Run A (a patch in 4096 tiles of 16 px: a few seconds) takes the lock, then is stopped (SIGSTOP)
# while it holds it; run B must refuse at once.
"${T[@]}" "$SAFECLIP" run run.toml --set input.manifest=\"m16/manifest.json\" --set output.dir=\"L\" \
  --set memory.max_per_rank=\"14681024\" --log-level warn 2>a.log &
apid=$!
for _ in $(seq 1 1000); do [ -s L/.safeclip.lock ] && break; sleep 0.005; done
runpid=$(awk '{print $2}' L/.safeclip.lock 2>/dev/null || true)
if [ -z "$runpid" ] || ! kill -STOP "$runpid" 2>/dev/null; then
  fail "run A was not caught holding the lock (ended too soon?)"
  runpid=none
fi
holder=$(cat L/.safeclip.lock)
check 4 "L: in use by another safeclip run (host $(hostname), pid $runpid, started" \
  "$SAFECLIP" run run.toml --set output.dir=\"L\"
check 4 "pid $runpid" mpirun -n 2 "$SAFECLIP" run run.toml --set output.dir=\"L\"
check 4 "pid $runpid" "$SAFECLIP" run run.toml --set output.dir=\"L\" --shard 0/2
[ "$(cat L/.safeclip.lock)" = "$holder" ] && pass "the holder's lock file untouched" || fail "lock file changed"
kill -CONT "$runpid" 2>/dev/null || true
set +e; wait "$apid"; rc=$?; set -e
[ "$rc" -eq 0 ] && [ -f L/p000.fits ] && pass "run A finished unharmed" || fail "run A: exit $rc"
[ ! -s L/.safeclip.lock ] && pass "the lock file is emptied when the run ends" || fail "lock: $(cat L/.safeclip.lock)"
set +e; "${T[@]}" mpirun -n 2 "$SAFECLIP" run run.toml --set output.dir=\"L\" --log-level warn; rc=$?; set -e
[ "$rc" -eq 0 ] && pass "a later run (2 ranks) takes the lock" || fail "later run: exit $rc"
# The shards of one run share output.dir.
rm -rf S
set +e
"${T[@]}" "$SAFECLIP" run run.toml --set output.dir=\"S\" --shard 0/2 --log-level warn & s0=$!
"${T[@]}" "$SAFECLIP" run run.toml --set output.dir=\"S\" --shard 1/2 --log-level warn; r1=$?
wait "$s0"; r0=$?
set -e
[ "$r0$r1" = 00 ] && cmp -s S/p000.fits out/p000.fits && cmp -s S/p001.fits out/p001.fits &&
  pass "two shards at once on one output.dir" || fail "shards: exits $r0 $r1"

echo "== item 12: signals to coadd"
"${T[@]}" "$SAFECLIP" simulate --out big --patches 1 --warps 4 --size 768x768 --seed 2 --log-level warn
BW=(big/p000/warp-100.fits big/p000/warp-101.fits big/p000/warp-102.fits big/p000/warp-103.fits)
for sig in TERM USR1 INT; do
  rm -f sig.fits sig.fits.tmp.* sig.log
  "${T[@]}" "$SAFECLIP" coadd -o sig.fits "${BW[@]}" --log-level debug 2>sig.log &
  pid=$!
  # The handlers are installed before MPI starts; the debug line comes after it.
  for _ in $(seq 1 500); do grep -q "MPI transport" sig.log 2>/dev/null && break; sleep 0.01; done
  # To safeclip itself, not to timeout (which would die of SIGUSR1 and leave safeclip running).
  kill -"$sig" "$(pgrep -P "$pid" | head -1)" 2>/dev/null || true
  set +e; wait "$pid"; rc=$?; set -e
  if [ "$rc" -eq 75 ] && [ -z "$(ls sig.fits* 2>/dev/null)" ] && grep -q "stopped by SIG$sig " sig.log; then
    pass "SIG$sig: exit 75, no output and no temporary, the log names SIG$sig"
  else
    fail "SIG$sig: exit $rc, files: $(ls sig.fits* 2>/dev/null) $(grep error sig.log)"
  fi
done

echo "== item 13: special files are refused before they are opened"
mkfifo fifo.fits fifo.json fifo.toml
check 3 "fifo.fits: not a regular file (a FIFO)" "$SAFECLIP" coadd -o f.fits "${W[@]}" fifo.fits
set +e; "${T[@]}" "$SAFECLIP" coadd --set input.on_bad_warp=skip -o f.fits fifo.fits 2>skip.log; rc=$?; set -e
[ "$rc" -eq 3 ] && grep -q "\[warning\].*fifo.fits: not a regular file (a FIFO)" skip.log &&
  pass "on_bad_warp=skip: the FIFO is skipped with a warning naming it" || fail "skip: exit $rc $(cat skip.log)"
check 2 "fifo.json: not a regular file (a FIFO)" "$SAFECLIP" run run.toml --set input.manifest=\"fifo.json\"
check 2 "fifo.toml: not a regular file (a FIFO)" "$SAFECLIP" run fifo.toml
set +e; "${T[@]}" "$SAFECLIP" validate "${W[@]}" fifo.fits >val.txt 2>/dev/null; rc=$?; set -e
[ "$rc" -eq 3 ] && grep -q "fifo.fits .*not a regular file (a FIFO)" val.txt && pass "validate: FIFO listed, exit 3" ||
  fail "validate: exit $rc $(cat val.txt)"
mkdir -p fdata/p000
cp data/p000/warp-100.fits data/p000/warp-101.fits fdata/p000/
mkfifo fdata/p000/warp-102.fits
sed 's#"p001"#"q001"#' data/manifest.json >fdata/manifest.json
ln -s ../data/p001 fdata/p001 2>/dev/null || true
/usr/bin/python3 - <<'PY'
import json
m = json.load(open("fdata/manifest.json"))
m["patches"] = m["patches"][:1]
json.dump(m, open("fdata/manifest.json", "w"))
PY
check 3 "fdata/p000/warp-102.fits: not a regular file (a FIFO)" \
  "$SAFECLIP" run run.toml --set input.manifest=\"fdata/manifest.json\" --set output.dir=\"fout\"

echo "== item 15: numbers out of range"
check 2 "config key 'detect.min_pixels': must be in [1, 100000], got 4294967297" \
  "$SAFECLIP" coadd --set detect.min_pixels=4294967297 -o r.fits "${W[@]}"
check 2 "config key 'detect.psf_sigma': must be in [0.0, 100.0], got 1.0e+06" \
  "$SAFECLIP" coadd --set detect.psf_sigma=1e6 -o r.fits "${W[@]}"
check 2 "config key 'stack.zero_point': must be in [0.0, 50.0], got 400.0" \
  "$SAFECLIP" run run.toml --set stack.zero_point=400
/usr/bin/python3 - <<'PY'
import json
m = json.load(open("data/manifest.json"))
m["patches"][0]["box"] = [2147483000, 2147483000, 1024, 1024]
json.dump(m, open("data/m_box.json", "w"))
m = json.load(open("data/manifest.json"))
m["patches"][1]["name"] = "p\n[error] forged"
json.dump(m, open("data/m_nl.json", "w"))
m["patches"][1]["name"] = "p" * 300
json.dump(m, open("data/m_long.json", "w"))
PY
check 2 "patches[0] ('p000').box x0 + width = 2147484024 is out of range" \
  "$SAFECLIP" run run.toml --set input.manifest=\"data/m_box.json\" --set output.dir=\"o15\"
check 2 "patches[1] ('p\\x0a[error] forged'): patch name is not a plain file name: it contains the control character 0x0a" \
  "$SAFECLIP" run run.toml --set input.manifest=\"data/m_nl.json\" --set output.dir=\"o15\"
check 2 "patch name is not a plain file name: it is 300 bytes long" \
  "$SAFECLIP" run run.toml --set input.manifest=\"data/m_long.json\" --set output.dir=\"o15\"
[ ! -e o15 ] && pass "nothing created for a bad manifest" || fail "o15 created: $(ls -a o15)"

echo "== item 16: an impossible memory budget is found when planning"
MW=(m16/p000/warp-100.fits m16/p000/warp-101.fits m16/p000/warp-102.fits)
start=$(date +%s%N)
check 2 "the smallest memory.max_per_rank that works for patch tight is" \
  "$SAFECLIP" coadd --set memory.max_per_rank=\"12MiB\" -o tight.fits "${MW[@]}"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
need=$(grep -m1 '\[error\]' stderr.txt | sed -n 's/.* that works for patch tight is [^(]*(\([0-9]*\) bytes).*/\1/p')
grep -q "stage trial\|trial stacks" stderr.txt && fail "trial stacks ran before the budget error" || true
[ "$ms" -lt 5000 ] && pass "refused in $ms ms (before the trial stacks)" || fail "refused only after $ms ms"
if [ -n "$need" ]; then
  set +e
  "${T[@]}" "$SAFECLIP" coadd --set memory.max_per_rank=\""$need"\" -o tight.fits "${MW[@]}" --log-level warn; rc=$?
  set -e
  [ "$rc" -eq 0 ] && [ -f tight.fits ] && pass "the smallest budget ($need bytes) runs" || fail "$need bytes: exit $rc"
  check 2 "the smallest memory.max_per_rank that works for patch tight2 is" \
    "$SAFECLIP" coadd --set memory.max_per_rank=\"$((need - 1))\" -o tight2.fits "${MW[@]}"
  # `plan` says the same (its patch is named by the manifest).
  rc=0
  "${T[@]}" "$SAFECLIP" plan run.toml --set input.manifest=\"m16/manifest.json\" \
    --set memory.max_per_rank=\"12MiB\" >plan.txt || rc=$?
  [ "$rc" -eq 2 ] && pass "plan exits 2 when a patch cannot run" || fail "plan exit $rc, expected 2"
  grep -q "error: .*the smallest memory.max_per_rank that works for patch p000 is .*($need bytes)" plan.txt &&
    pass "plan names the same smallest budget" || fail "plan: $(cat plan.txt)"
  grep -q "1 tiles of 1024 px" plan.txt && pass "no tiny tiles under an impossible budget" ||
    fail "plan tiles: $(head -2 plan.txt)"
else
  fail "no smallest budget in: $(cat stderr.txt)"
fi
# `coadd` stopped by SIGTERM (here while a test hook hangs in the final stage): exit 75, nothing
# written, and the hint fits the command (coadd has no --resume). An unusable
# SAFECLIP_STOP_GRACE_SECONDS is reported and the default used.
SAFECLIP_TEST_HANG_AT=final SAFECLIP_STOP_GRACE_SECONDS=2 "$SAFECLIP" coadd -o sig.fits data/p000/warp-*.fits \
  --log-level info 2>sig.log &
pid=$!
for _ in $(seq 1 300); do grep -q "test hook: hanging" sig.log && break; sleep 0.1; done
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
[ "$rc" -eq 75 ] && grep -q "rerun the command" sig.log && ! grep -q -- "--resume" sig.log && [ ! -e sig.fits ] \
  && [ -z "$(ls sig.fits.tmp.* 2>/dev/null)" ] \
  && pass "coadd + SIGTERM: exit 75, nothing written, '$(grep -o -m1 'exiting 75.*' sig.log)'" \
  || fail "coadd + SIGTERM: exit $rc: $(grep -m1 -E 'exiting|stopped' sig.log)"
set +e
SAFECLIP_STOP_GRACE_SECONDS=soon "${T[@]}" "$SAFECLIP" coadd -o grace.fits data/p000/warp-*.fits --log-level warn 2>grace.log
rc=$?
set -e
[ "$rc" -eq 0 ] && grep -q "SAFECLIP_STOP_GRACE_SECONDS='soon' is not a number" grace.log \
  && pass "bad SAFECLIP_STOP_GRACE_SECONDS reported: $(head -1 grace.log | cut -c1-80)" \
  || fail "bad SAFECLIP_STOP_GRACE_SECONDS: exit $rc, $(head -1 grace.log)"
# An -o whose directory does not exist is refused before any pixel is read (it used to be found
# only when the finished coadd was written).
set +e
"${T[@]}" "$SAFECLIP" coadd -o no-such-dir/x.fits data/p000/warp-*.fits --log-level info 2>nodir.log
rc=$?
set -e
[ "$rc" -eq 4 ] && grep -q "no-such-dir/x.fits: cannot create: no-such-dir does not exist" nodir.log \
  && ! grep -q "weights for" nodir.log \
  && pass "coadd -o into a missing directory: exit 4 before any work" \
  || fail "coadd -o into a missing directory: exit $rc: $(grep -m2 -E 'error|weights' nodir.log)"
finish

#!/usr/bin/env bash
# Slurm end to end on a private one-node cluster (scripts/slurm-up.sh, state in the scratch dir):
#  A. scripts/submit.sh writes and submits a 3-task array (one task at a time) over 6 patches;
#     it is scancel'ed as soon as the first coadd appears, submitted again unchanged, and must
#     finish with every coadd byte-identical to a plain `safeclip run`, without redoing the
#     patches finished before the cancel.
#  B. slurm/safeclip-array.sbatch directly: two of three running tasks get SIGUSR1 in their batch
#     shell (what --signal=B:USR1@T does before a time limit), safeclip exits 75, each of them
#     requeues itself (and only itself) and its second run finishes the shard; byte-identical.
# Prints "SKIP: ..." and exits 0 when Slurm cannot be installed (not root, or apt-get fails).
# Always stops the daemons it started.
T_START=$(date +%s.%N)
SLURM_DIR="$SAFECLIP_SCRATCH/slurm"
ROOT=${SAFECLIP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
# A cluster left behind by an interrupted earlier run: stop it before common.sh wipes the scratch
# dir (and with it the PID files that name its daemons).
[ -d "$SLURM_DIR/run" ] && "$ROOT/scripts/slurm-down.sh" "$SLURM_DIR" >/dev/null 2>&1
source "$(dirname "$0")/common.sh"
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# --- cluster -------------------------------------------------------------------------------------
stop_cluster() {
  local rc=$?
  "$ROOT/scripts/slurm-down.sh" "$SLURM_DIR" >slurm-down.log 2>&1 || echo "slurm-down failed: $(cat slurm-down.log)" >&2
  exit "$rc"
}
t=$(date +%s.%N)
set +e
# 4 CPUs (more than this VM has) so three 1-rank tasks and their steps always fit.
"$ROOT/scripts/slurm-up.sh" "$SLURM_DIR" 4 >slurm-up.log 2>&1
up=$?
set -e
trap stop_cluster EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
if [ "$up" -eq 3 ]; then
  echo "SKIP: Slurm is not available here: $(grep 'slurm-up:' slurm-up.log | tail -1)"
  exit 0
elif [ "$up" -ne 0 ]; then
  cat slurm-up.log >&2
  fail "slurm-up.sh failed (exit $up)"
  finish
fi
grep -q "installed in" slurm-up.log && pass "apt-get install of Slurm: $(grep -o 'installed in .*' slurm-up.log)"
pass "cluster up in $(since "$t") s ($(grep -o 'ports [0-9/]*' slurm-up.log))"
export SLURM_CONF="$SLURM_DIR/slurm.conf"
export SAFECLIP

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s; false on timeout
wait_for() {
  local limit=$1 what=$2 t0
  shift 2
  t0=$(date +%s)
  until "$@"; do
    if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
      fail "timed out after ${limit} s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}
queue_empty() { [ -z "$(squeue -h -j "$1" 2>/dev/null)" ]; }
nfits() { find "$1" -maxdepth 1 -name 'p*.fits' 2>/dev/null | wc -l; }
compare_all() {  # $1 label, $2 output dir
  local p bad=0
  for p in p000 p001 p002 p003 p004 p005; do
    cmp -s "ref/$p.fits" "$2/$p.fits" || { fail "$1: $2/$p.fits differs from the plain run (or is missing)"; bad=1; }
  done
  [ "$bad" -eq 1 ] || pass "$1: all 6 coadds byte-identical to the plain run"
  [ -z "$(find "$2" -name '*.tmp*')" ] || fail "$1: temporary files left: $(find "$2" -name '*.tmp*')"
}

# --- data and the plain reference --------------------------------------------------------------
"$SAFECLIP" simulate --out data --patches 6 --warps 6 --size 384x384 --seed 11 --log-level warn
for d in ref slurm-a slurm-b; do
  printf '[input]\nmanifest = "data/manifest.json"\n[output]\ndir = "%s"\n' "$d" >"$d.toml"
done
t=$(date +%s.%N)
"$SAFECLIP" run ref.toml --log-level warn || fail "plain run failed"
[ "$(nfits ref)" -eq 6 ] && pass "plain run: 6 coadds in $(since "$t") s" || fail "plain run wrote $(nfits ref) coadds"

# --- A: submit.sh, scancel in the middle, submit again --------------------------------------------
t=$(date +%s.%N)
"$ROOT/scripts/submit.sh" slurm-a.toml --dir job-a --name sc-a --max-array 3 --max-running 1 \
  --ranks 1 --mem-per-rank 512 --min-time 5 --safeclip "$SAFECLIP" --submit >submit-a.log 2>&1 \
  || { cat submit-a.log >&2; fail "submit.sh failed"; finish; }
jid=$(sed -n 's/^submitted job \([0-9]*\).*/\1/p' submit-a.log)
grep -q -- '--array=0-2%1' job-a/sc-a.sbatch && grep -q -- '--mem-per-cpu=512M' job-a/sc-a.sbatch \
  && pass "submit.sh: $(sed -n 2p submit-a.log | sed 's/^ *//')" || fail "submit.sh wrote: $(grep '^#SBATCH' job-a/sc-a.sbatch)"
wait_for 60 "the first coadd of job $jid" test -e slurm-a/p000.fits -o -e slurm-a/p001.fits -o -e slurm-a/p002.fits
scancel "$jid"
wait_for 60 "cancelled job $jid to leave the queue" queue_empty "$jid"
n1=$(nfits slurm-a)
if [ "$n1" -lt 6 ]; then
  pass "scancel after the first coadd: $n1 of 6 patches done when job $jid stopped"
else
  fail "job $jid finished all 6 patches before scancel took effect: nothing left to resume"
fi
declare -A before
for f in slurm-a/p*.fits; do [ -e "$f" ] && before[$f]=$(stat -c %i "$f"); done
sbatch --parsable job-a/sc-a.sbatch >jid-a2 || fail "resubmitting job-a/sc-a.sbatch failed"
jid2=$(cat jid-a2)
wait_for 90 "resubmitted job $jid2" queue_empty "$jid2"
compare_all "A: cancel + resubmit" slurm-a
redone=0
for f in "${!before[@]}"; do [ "$(stat -c %i "$f")" = "${before[$f]}" ] || redone=$((redone + 1)); done
[ "$redone" -eq 0 ] && pass "A: the ${#before[@]} coadd(s) finished before the cancel were not rewritten" \
  || fail "A: $redone coadd(s) finished before the cancel were rewritten"
ok_tasks=0
for k in 0 1 2; do tail -n 1 "job-a/logs/sc-a-${jid2}_$k.out" 2>/dev/null | grep -q "done (exit 0)" && ok_tasks=$((ok_tasks + 1)); done
[ "$ok_tasks" -eq 3 ] && pass "A: the 3 tasks of job $jid2 end in 'done (exit 0)' ($(since "$t") s)" \
  || fail "A: not every task of job $jid2 finished: $(tail -n 3 job-a/logs/sc-a-"${jid2}"_*.out)"
ck=$(grep -ho "patch p[0-9]*: resumed from [^ ]*" job-a/logs/*.out | sed 's/: resumed from .*//' | sort -u | tr '\n' ' ' || true)
[ -z "$ck" ] || pass "A: the resubmitted job reloaded the checkpoint of the patch cancelled mid-way (${ck% })"
grep -q "JobId=$jid2 .*JobState=FAILED" "$SLURM_DIR/log/jobcomp.log" && fail "A: a task of $jid2 FAILED"

# --- B: SIGUSR1 to the batch shell -> exit 75 -> scontrol requeue -> resume ------------------------
# safeclip coadds these patches in well under a second, too fast to catch a run in the middle.
# So the first run goes through a gate: SAFECLIP is a wrapper that waits (in the job step, under
# srun, like safeclip) until the gate file exists and answers SIGUSR1/SIGTERM with 75, what
# safeclip does when interrupted before finishing anything; from then on it is plain safeclip.
t=$(date +%s.%N)
cat >gate.sh <<'SH'
#!/usr/bin/env bash
[ -e "$GATE" ] && exec "$REAL_SAFECLIP" "$@"
trap 'echo "gate: SIGUSR1, exit 75"; exit 75' USR1
trap 'echo "gate: SIGTERM, exit 75"; exit 75' TERM
touch "$GATE.waiting.${SLURM_ARRAY_TASK_ID:-x}"
while [ ! -e "$GATE" ]; do sleep 0.1; done
exec "$REAL_SAFECLIP" "$@"
SH
chmod +x gate.sh
mkdir -p job-b
# shellcheck disable=SC2097,SC2098  # REAL_SAFECLIP is meant to get the outer value
GATE=$PWD/gate REAL_SAFECLIP=$SAFECLIP SAFECLIP=$PWD/gate.sh sbatch --parsable --array=0-2 --ntasks=1 \
  --mem-per-cpu=512M --time=5 --job-name=sc-b --output="$PWD/job-b/%x-%A_%a.out" \
  "$ROOT/slurm/safeclip-array.sbatch" slurm-b.toml --log-level warn >jid-b || fail "sbatch of job B failed"
jidb=$(cat jid-b)
three_waiting() { [ "$(find . -maxdepth 1 -name 'gate.waiting.*' | wc -l)" -eq 3 ]; }
log_b() { echo "job-b/sc-b-${jidb}_$1.out"; }
signalled=()
if wait_for 60 "the 3 tasks of job $jidb to start" three_waiting; then
  # Signal two tasks one by one: the one whose job ID is the array's own ID (requeueing that ID
  # instead of ID_TASK would requeue the whole array) and one other; the third must be left alone.
  master=$(squeue -h -r -j "$jidb" -o '%A %K' | awk -v j="$jidb" '$1 == j { print $2 }')
  other=$(( (master + 1) % 3 ))
  untouched=$(( (master + 2) % 3 ))
  for k in "$master" "$other"; do
    scancel --batch --signal=USR1 "${jidb}_$k"
    requeued() { grep -q "requeueing job ${jidb}_$1 " "$(log_b "$1")" 2>/dev/null; }
    wait_for 30 "task $k of job $jidb to requeue itself" requeued "$k" && signalled+=("$k")
  done
  sleep 1
  if grep -q "DUE TO JOB REQUEUE" "$(log_b "$untouched")"; then
    fail "B: task $untouched was requeued although only tasks $master and $other were signalled"
  else
    pass "B: only the signalled tasks ($master = the array's own job ID, $other) were requeued"
  fi
  touch gate
  wait_for 90 "requeued job $jidb" queue_empty "$jidb"
fi
compare_all "B: SIGUSR1 + requeue" slurm-b
for k in "${signalled[@]}"; do
  f=$(log_b "$k")
  if grep -q "gate: SIGUSR1, exit 75" "$f" && grep -q "run 1 on" "$f" && tail -n 1 "$f" | grep -q "done (exit 0)"; then
    pass "B: task $k: SIGUSR1 forwarded, exit 75, requeued, run 1 finished $(grep -o -m1 -- '--shard [0-9/]*' "$f")"
  else
    fail "B: task $k log does not show forward -> 75 -> requeue -> done: $(cat "$f")"
  fi
done
if [ -n "${untouched:-}" ]; then
  f=$(log_b "$untouched")
  ! grep -q "run 1 on" "$f" && tail -n 1 "$f" | grep -q "done (exit 0)" \
    && pass "B: task $untouched finished in its first run" || fail "B: task $untouched: $(cat "$f")"
fi
grep -q 'memory.max_per_rank="396MiB"' job-b/sc-b-"${jidb}"_0.out \
  && pass "B: --mem-per-cpu=512M gave memory.max_per_rank=\"396MiB\" (0.9 x 512 - 64)" \
  || fail "B: memory.max_per_rank not derived from --mem-per-cpu: $(grep -m1 'run 0' job-b/sc-b-"${jidb}"_0.out)"
pass "B done in $(since "$t") s; whole test $(since "$T_START") s"
finish

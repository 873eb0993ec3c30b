#!/usr/bin/env bash
# Write (and with --submit, submit) a Slurm array job that coadds every patch of a manifest.
#
#   scripts/submit.sh MANIFEST.json|CONFIG.toml [options]
#
# From slurm/safeclip-array.sbatch it writes DIR/NAME.sbatch (DIR default ./slurm-jobs/NAME) with
#   --array=0-(S-1)   S = min(number of patches, --max-array) shards; task K runs
#                     `safeclip run CONFIG --resume --shard K/S` (patches i with i % S == K)
#   --ntasks          --ranks R MPI ranks per shard, --cpus-per-task = --cpus-per-rank
#   --mem-per-cpu     from `safeclip plan CONFIG -n R`: the largest per-rank budget X
#                     (memory.max_per_rank) becomes ceil((X + 64 MiB) / 0.9) per rank, the inverse
#                     of the margin the batch script keeps back, so the job runs with budget ~X
#   --time            the slowest shard: its busiest rank's pixel-warps (tile area x warps, from
#                     `safeclip plan --json --shard K/S`), divided by --throughput (pixel-warps per
#                     second per rank), times --safety, plus 60 s start-up and 180 s for the
#                     SIGUSR1 warning; at least --min-time minutes. A shard that still runs out of
#                     time requeues itself and resumes, so an estimate that is short costs a
#                     requeue, not the work.
# Given a manifest, it first writes DIR/config.toml (input.manifest, output.dir = --out).
# It prints the file and the sbatch command; --submit also runs that command.
#
# Options:
#   --dir DIR            where the job file, logs/ (and config.toml) go (default ./slurm-jobs/NAME)
#   --name NAME          job name (default safeclip-<config or manifest name>)
#   --out DIR            output.dir for a manifest (default DIR/coadds); ignored for a config
#   --set key=value      config override for the plan and the run (repeatable)
#   --ranks R            MPI ranks per array task (default 1)
#   --cpus-per-rank C    CPUs per rank (default 1)
#   --max-array M        at most M array tasks (default 100)
#   --max-running J      at most J tasks at once (--array=...%J)
#   --throughput T       pixel-warps per second per rank (default 5e6; measured on a 2-core
#                        Debian 12 VM with a warm page cache: ~2e7)
#   --safety F           time safety factor (default 2)
#   --min-time MIN       minimum --time in minutes (default 10)
#   --mem-per-rank MIB   memory per rank in MiB instead of the value from the plan
#   --partition P, --account A, --qos Q   extra #SBATCH lines
#   --launcher L         SAFECLIP_LAUNCHER baked into the job (auto, srun, mpirun, or a command)
#   --safeclip BIN       safeclip binary (default: this repository's build/safeclip, else PATH)
#   --submit             submit it (sbatch --parsable; prints the job ID)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEMPLATE="$ROOT/slurm/safeclip-array.sbatch"
die() { echo "submit: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }

input=""; dir=""; name=""; out=""; ranks=1; cpr=1; max_array=100; max_running=""
throughput=5e6; safety=2; min_time=10; mem_per_rank=""; partition=""; account=""; qos=""
launcher=""; submit=0; sets=()
bin=""
[ -x "$ROOT/build/safeclip" ] && bin="$ROOT/build/safeclip"
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage 0 ;;
    --dir) dir=$2; shift ;;
    --name) name=$2; shift ;;
    --out) out=$2; shift ;;
    --set) sets+=(--set "$2"); shift ;;
    --ranks) ranks=$2; shift ;;
    --cpus-per-rank) cpr=$2; shift ;;
    --max-array) max_array=$2; shift ;;
    --max-running) max_running=$2; shift ;;
    --throughput) throughput=$2; shift ;;
    --safety) safety=$2; shift ;;
    --min-time) min_time=$2; shift ;;
    --mem-per-rank) mem_per_rank=$2; shift ;;
    --partition) partition=$2; shift ;;
    --account) account=$2; shift ;;
    --qos) qos=$2; shift ;;
    --launcher) launcher=$2; shift ;;
    --safeclip) bin=$2; shift ;;
    --submit) submit=1 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$input" ] || die "more than one MANIFEST/CONFIG given"; input=$1 ;;
  esac
  [ $# -gt 0 ] && shift
done
[ -n "$input" ] || usage 1
[ -f "$input" ] || die "$input: no such file"
for v in ranks cpr max_array min_time; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer, got '${!v}'"
done
[ -z "$max_running" ] || [[ $max_running =~ ^[1-9][0-9]*$ ]] || die "--max-running must be a positive integer"
[ -z "$mem_per_rank" ] || [[ $mem_per_rank =~ ^[1-9][0-9]*$ ]] || die "--mem-per-rank is in MiB (an integer)"
[ -n "$bin" ] || bin=$(command -v safeclip || true)
[ -n "$bin" ] && [ -x "$bin" ] || die "no safeclip binary (build it, or pass --safeclip BIN)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
input=$(cd "$(dirname "$input")" && pwd)/$(basename "$input")

base=$(basename "$input"); base=${base%.*}
[ "$base" = manifest ] && base=$(basename "$(dirname "$input")")
name=${name:-safeclip-$base}
dir=${dir:-$PWD/slurm-jobs/$name}
mkdir -p "$dir/logs"
dir=$(cd "$dir" && pwd)

toml_str() {  # a TOML literal string when possible, else a basic string with escapes
  if [[ $1 != *"'"* && $1 != *$'\n'* ]]; then printf "'%s'" "$1"
  else printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; fi
}
case "$input" in
  *.json)
    config="$dir/config.toml"
    out=${out:-$dir/coadds}
    case "$out" in /*) ;; *) out=$PWD/$out ;; esac
    { echo "# written by scripts/submit.sh for $input"
      echo "[input]"; echo "manifest = $(toml_str "$input")"
      echo "[output]"; echo "dir = $(toml_str "$out")"; } >"$config"
    ;;
  *) config=$input; [ -z "$out" ] || echo "submit: --out is ignored for a config (set output.dir)" >&2 ;;
esac

# --- the plan ----------------------------------------------------------------------------------
# Everything comes from `safeclip plan --json` (the run's own groups, tiles and memory model).
plan_json() { "$bin" plan "$config" -n "$ranks" "${sets[@]}" --log-level warn --json "$@"; }
# json_get FIELD...: fields of the plan on stdin (Debian's python3, stdlib json only)
json_get() {
  /usr/bin/python3 -c 'import json, sys
p = json.load(sys.stdin)
print(" ".join(str(p[k]) for k in sys.argv[1:]))' "$@"
}
plan=$(plan_json) || die "safeclip plan $config failed (exit $?)"
npatch=$(/usr/bin/python3 -c 'import json, sys; print(len(json.load(sys.stdin)["patches"]))' <<<"$plan")
[ "$npatch" -gt 0 ] || die "the plan of $config lists no patches:
$plan"
budget_bytes=$(json_get memory_max_per_rank <<<"$plan")
budget_mib=$(( (budget_bytes + 1048575) / 1048576 ))
shards=$(( npatch < max_array ? npatch : max_array ))
# The slowest shard: the plan of each `run --shard K/S` deals its patches' tiles to the R ranks;
# its busiest rank's pixel-warps (tile area x warps) is the shard's span.
makespan=0
for ((k = 0; k < shards; k++)); do
  if [ "$shards" -eq 1 ]; then shard_plan=$plan
  else shard_plan=$(plan_json --shard "$k/$shards") || die "safeclip plan $config --shard $k/$shards failed"; fi
  span=$(json_get max_pixel_warps_per_rank <<<"$shard_plan")
  makespan=$(awk -v a="$makespan" -v b="$span" 'BEGIN { printf "%.0f", (b > a ? b : a) }')
done

# --- time and memory ---------------------------------------------------------------------------
secs=$(awk -v w="$makespan" -v t="$throughput" -v f="$safety" 'BEGIN { printf "%.0f", w / t * f + 60 + 180 }')
mins=$(( (secs + 59) / 60 ))
[ "$mins" -ge "$min_time" ] || mins=$min_time
time_limit=$(printf '%d-%02d:%02d:00' $((mins / 1440)) $((mins % 1440 / 60)) $((mins % 60)))
if [ -z "$mem_per_rank" ]; then
  # inverse of the batch script's budget = floor(0.9 x per_rank) - 64, rounded up to 64 MiB
  mem_per_rank=$(awk -v x="$budget_mib" 'BEGIN { m = (x + 64) / 0.9; m = int((m + 63) / 64) * 64; print m }')
fi
mem_per_cpu=$(( (mem_per_rank + cpr - 1) / cpr ))
# The budget the job will run with: does every patch fit (the plan reports the run's ConfigError)?
# The batch script passes memory.max_per_rank from the allocation first and the user's --set after
# it (a user's memory.max_per_rank wins there), so the check applies them in the same order.
job_budget=$((mem_per_rank * 9 / 10 - 64))
if [ "$job_budget" -ge 1 ]; then
  fit=$("$bin" plan "$config" -n "$ranks" --set "memory.max_per_rank=${job_budget}MiB" "${sets[@]}" \
        --log-level warn --json | /usr/bin/python3 -c 'import json, sys
p = json.load(sys.stdin)
bad = [q for q in p["patches"] if q["error"]]
if bad:
    b = p["memory_max_per_rank"]
    size = "%.0f MiB" % (b / 1048576) if b >= 1048576 else "%.0f KiB" % (b / 1024)
    print("%s|%d patch(es), e.g. %s: %s" % (size, len(bad), bad[0]["name"], bad[0]["error"]))') || fit=""
  [ -z "$fit" ] || echo "submit: warning: a rank gets a budget of ~${fit%%|*}, too small for" \
    "${fit#*|}; raise --mem-per-rank or memory.max_per_rank" >&2
else
  echo "submit: warning: --mem-per-rank ${mem_per_rank} MiB leaves no budget (0.9 x it - 64 MiB)" >&2
fi
array="0-$((shards - 1))${max_running:+%$max_running}"

# --- the job file ------------------------------------------------------------------------------
job="$dir/$name.sbatch"
extra=""
[ ${#sets[@]} -eq 0 ] || extra=$(printf ' %q' "${sets[@]}")
header="# Written by scripts/submit.sh on $(date '+%F %T') for $config
# ($npatch patches, $shards shards, $ranks rank(s) each; slowest shard ~$makespan pixel-warps
#  at $throughput pixel-warps/s/rank x $safety; plan budget ${budget_mib} MiB/rank)"
# Values reach awk through ENVIRON (awk -v would interpret backslashes); shell words are %q-quoted.
NAME=$name ARRAY=$array RANKS=$ranks CPR=$cpr MPC="${mem_per_cpu}M" TL=$time_limit \
LOG="$dir/logs/%x-%A_%a.out" PART=$partition ACCT=$account QOS=$qos HEADER=$header EXTRA=$extra \
BIN=$(printf %q "$bin") CONF=$(printf %q "$config") LAUNCHER=${launcher:+$(printf %q "$launcher")} awk '
  function e(k) { return ENVIRON[k] }
  NR == 1                     { print; print e("HEADER"); next }
  /^#SBATCH --job-name=/      { print "#SBATCH --job-name=" e("NAME"); next }
  /^#SBATCH --array=/         { print "#SBATCH --array=" e("ARRAY"); next }
  /^#SBATCH --ntasks=/        { print "#SBATCH --ntasks=" e("RANKS"); next }
  /^#SBATCH --cpus-per-task=/ { print "#SBATCH --cpus-per-task=" e("CPR"); next }
  /^#SBATCH --mem-per-cpu=/   { print "#SBATCH --mem-per-cpu=" e("MPC"); next }
  /^#SBATCH --time=/          { print "#SBATCH --time=" e("TL"); next }
  /^#SBATCH --output=/        { print "#SBATCH --output=" e("LOG")
                                if (e("PART") != "") print "#SBATCH --partition=" e("PART")
                                if (e("ACCT") != "") print "#SBATCH --account=" e("ACCT")
                                if (e("QOS") != "")  print "#SBATCH --qos=" e("QOS")
                                next }
  /^CONFIG_DEFAULT=/          { print "CONFIG_DEFAULT=" e("CONF"); next }
  /^EXTRA_ARGS=/              { print "EXTRA_ARGS=(" e("EXTRA") " )"; next }
  /^SAFECLIP=/                { print "SAFECLIP=${SAFECLIP:-" e("BIN") "}"; next }
  /^launcher=/ && e("LAUNCHER") != "" { print "launcher=${SAFECLIP_LAUNCHER:-" e("LAUNCHER") "}"; next }
  { print }' "$TEMPLATE" >"$job"
for l in array ntasks mem-per-cpu time; do
  grep -q "^#SBATCH --$l=" "$job" || die "template $TEMPLATE has no #SBATCH --$l line"
done
chmod +x "$job"

echo "$job"
echo "  $npatch patches -> --array=$array, $ranks rank(s) x $cpr CPU, --mem-per-cpu=${mem_per_cpu}M" \
     "(${mem_per_rank} MiB/rank), --time=$time_limit; logs in $dir/logs"
echo "  submit with: sbatch $job"
if [ "$submit" -eq 1 ]; then
  jid=$(cd "$dir" && sbatch --parsable "$job")
  echo "submitted job $jid"
fi

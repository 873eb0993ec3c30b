#!/usr/bin/env bash
# Stop the private Slurm started by scripts/slurm-up.sh [DIR] (default build/slurm): cancel its
# jobs, then stop slurmd, slurmctld and munged by the PIDs in DIR/run/*.pid (never by name).
# Idempotent: nothing running is not an error. State and logs stay in DIR (rm -rf DIR to forget
# the cluster, e.g. to restart job IDs at 1).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/build/slurm}
[ -d "$DIR" ] || { echo "slurm-down: $DIR does not exist, nothing to stop"; exit 0; }
DIR=$(cd "$DIR" && pwd)
export SLURM_CONF="$DIR/slurm.conf"
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat"; }

ctld=$(cat "$DIR/run/slurmctld.pid" 2>/dev/null || true)
if [ -f "$SLURM_CONF" ] && alive "$ctld"; then
  # Only this cluster's jobs: SLURM_CONF names our private controller.
  scancel --quiet --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 100); do   # let slurmstepd finish the jobs (KillWait bounds it)
    [ -z "$(squeue -h 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
for d in slurmd slurmctld munged; do
  f="$DIR/run/$d.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  # Make sure the PID still belongs to our daemon (PIDs are reused after a reboot).
  if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$d"; then
    kill -TERM "$pid"
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then echo "slurm-down: $d ($pid) ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid"; fi
    echo "stopped $d ($pid)"
  fi
  rm -f "$f"
done
rm -f "$DIR/run/munge.socket" "$DIR/run/munge.socket.lock"

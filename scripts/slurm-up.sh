#!/usr/bin/env bash
# Start a private one-node Slurm (munged, slurmctld, slurmd) on 127.0.0.1 with every file under DIR.
#
#   scripts/slurm-up.sh [DIR] [CPUS]      DIR default build/slurm, CPUS default nproc
#   export SLURM_CONF=DIR/slurm.conf      (printed at the end) then sbatch/squeue/srun as usual
#   scripts/slurm-down.sh [DIR]           stops exactly these daemons (by PID file)
#
# Needs root (exit 3 otherwise). Installs slurmctld slurmd slurm-client munge with apt-get when they are missing
# (exit 3 if that fails, so callers can tell "no Slurm here" from a broken start: exit 1).
# Idempotent: when the daemons of DIR are already up and answering, it only prints SLURM_CONF.
# CPUS may exceed the real core count (slurmd's config_overrides), e.g. 4 to run 4 tasks on 2 cores.
# Environment: SLURM_CRED_EXPIRE (s a requeued job waits before restarting, default 5),
# SLURM_KILL_WAIT (s between SIGTERM and SIGKILL, default 30), SLURM_PORT (controller port;
# default derived from DIR, slurmd uses the next one).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/build/slurm}
CPUS=${2:-$(nproc)}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
export SLURM_CONF="$DIR/slurm.conf"
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# alive = the process exists and is not a zombie (without systemd, PID 1 reaps the daemons'
# exited parents only now and then, and kill -0 succeeds on a zombie)
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat"; }
pidof_file() { [ -s "$DIR/run/$1.pid" ] && cat "$DIR/run/$1.pid" || true; }

# --- already up? -------------------------------------------------------------------------------
if [ -f "$SLURM_CONF" ] && alive "$(pidof_file munged)" && alive "$(pidof_file slurmctld)" \
   && alive "$(pidof_file slurmd)" && scontrol ping >/dev/null 2>&1; then
  echo "slurm already up in $DIR ($(sinfo -h -N -o '%N %c CPUs %t' 2>/dev/null | head -1))"
  echo "export SLURM_CONF=$SLURM_CONF"
  exit 0
fi
# A partial start (one daemon died): stop what is left, then start cleanly.
if [ -d "$DIR/run" ]; then "$ROOT/scripts/slurm-down.sh" "$DIR" >/dev/null 2>&1 || true; fi

# The daemons run as root (SlurmUser=root); exit 3 = "cannot have Slurm here", like a failed install.
[ "$(id -u)" -eq 0 ] || { echo "slurm-up: needs root (the private daemons run as root)" >&2; exit 3; }
# munged's socket path must fit a sockaddr_un (108 bytes).
[ ${#DIR} -le 90 ] || { echo "slurm-up: $DIR is too long for munged's socket path; use a shorter DIR" >&2; exit 1; }

# --- packages ----------------------------------------------------------------------------------
need=()
for c in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge mungekey:munge; do
  command -v "${c%%:*}" >/dev/null 2>&1 || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  export DEBIAN_FRONTEND=noninteractive
  apt=(apt-get -o DPkg::Lock::Timeout=600 -q -y)
  t=$(date +%s.%N)
  echo "slurm-up: installing ${need[*]} with apt-get"
  # The image's policy-rc.d keeps the packages' init scripts from starting system daemons.
  if ! "${apt[@]}" install --no-install-recommends "${need[@]}" >"$DIR/apt.log" 2>&1; then
    "${apt[@]}" update >>"$DIR/apt.log" 2>&1 || true
    "${apt[@]}" install --no-install-recommends "${need[@]}" >>"$DIR/apt.log" 2>&1 \
      || { echo "slurm-up: apt-get install ${need[*]} failed (see $DIR/apt.log)" >&2; exit 3; }
  fi
  echo "slurm-up: installed in $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
fi

# --- config ------------------------------------------------------------------------------------
HOST=$(hostname -s)
MEM=$(( $(awk '/MemTotal/ { print $2 }' /proc/meminfo) / 1024 - 512 ))
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -n "${SLURM_PORT:-}" ]; then
  PORT=$SLURM_PORT
else  # a stable pair per DIR in 20000-39998, moved on while either port is taken
  PORT=$(( 20000 + ($(printf '%s' "$DIR" | cksum | cut -d' ' -f1) % 10000) * 2 ))
  for _ in $(seq 50); do
    port_free "$PORT" && port_free $((PORT + 1)) && break
    PORT=$((PORT + 2))
  done
fi
mkdir -p "$DIR"/{run,log,state/ctld,state/d,munge,tmp}
chmod 700 "$DIR/munge"
chmod 755 "$DIR/run"   # munged's socket directory must be searchable
sed -e "s|@HOST@|$HOST|g" -e "s|@DIR@|$DIR|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$MEM|g" \
    -e "s|@CTLD_PORT@|$PORT|g" -e "s|@SLURMD_PORT@|$((PORT + 1))|g" \
    -e "s|@CRED_EXPIRE@|${SLURM_CRED_EXPIRE:-5}|g" -e "s|@KILL_WAIT@|${SLURM_KILL_WAIT:-30}|g" \
    "$ROOT/slurm/slurm.conf.in" >"$SLURM_CONF"

# --- munged: private key and socket (the key stays in DIR; never commit it) ---------------------
[ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key"
chmod 600 "$DIR/munge/munge.key"
rm -f "$DIR/run/munge.socket" "$DIR/run/munge.socket.lock"
munged --key-file="$DIR/munge/munge.key" --socket="$DIR/run/munge.socket" \
       --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
       --seed-file="$DIR/munge/munged.seed"
for _ in $(seq 50); do [ -S "$DIR/run/munge.socket" ] && break; sleep 0.1; done
munge -S "$DIR/run/munge.socket" -n | unmunge -S "$DIR/run/munge.socket" >/dev/null \
  || { echo "slurm-up: munged does not answer (see $DIR/log/munged.log)" >&2; exit 1; }

# --- slurmctld, then slurmd (both daemonize and write their PID files) --------------------------
# -i: start without the saved state of an earlier cluster in DIR if it cannot be read.
slurmctld -f "$SLURM_CONF" -i
for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
slurmd -f "$SLURM_CONF" -N "$HOST"
state=""
for _ in $(seq 100); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in idle* | mix* | alloc*) break ;; esac
  sleep 0.1
done
case "$state" in
  idle* | mix* | alloc*) ;;
  *) echo "slurm-up: node is '$state' after 10 s (see $DIR/log/slurmd.log, slurmctld.log)" >&2; exit 1 ;;
esac
echo "slurm up in $(elapsed) s: node $HOST, $CPUS CPUs, ${MEM} MiB, ports $PORT/$((PORT + 1)), state in $DIR"
echo "munged $(pidof_file munged), slurmctld $(pidof_file slurmctld), slurmd $(pidof_file slurmd)"
echo "export SLURM_CONF=$SLURM_CONF"

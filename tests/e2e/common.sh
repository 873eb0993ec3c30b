# Shared helpers for the end-to-end shell tests (sourced).
set -euo pipefail
: "${SAFECLIP:?SAFECLIP must point at the safeclip binary}"
: "${SAFECLIP_SCRATCH:?SAFECLIP_SCRATCH must name a scratch directory}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
rm -rf "$SAFECLIP_SCRATCH"
mkdir -p "$SAFECLIP_SCRATCH/ompi"
export TMPDIR="$SAFECLIP_SCRATCH/ompi"
cd "$SAFECLIP_SCRATCH"
FAILURES=0
fail() { echo "FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
pass() { echo "ok: $*"; }
finish() {
  if [ "$FAILURES" -ne 0 ]; then echo "$FAILURES check(s) failed" >&2; exit 1; fi
  echo "all checks passed"
}

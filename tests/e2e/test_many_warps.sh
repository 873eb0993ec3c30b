#!/usr/bin/env bash
# Many warps, few file descriptors, and the MPI transport choice: safeclip raises its soft
# open-file limit to the hard one (each warp can hold two descriptors), reports a patch it still
# cannot open in the system's words, and leaves transport settings the user made alone.
source "$(dirname "$0")/common.sh"
"$SAFECLIP" simulate --out data --warps 40 --size 96x96 --seed 3 --log-level warn
warps=(data/p000/warp-*.fits)
[ "${#warps[@]}" -eq 40 ] || fail "expected 40 warps, got ${#warps[@]}"

# 40 warps need more than 64 descriptors: with a soft limit of 64 (hard limit higher) it works,
# and gives the same bytes as a run without the limit.
mkdir -p soft plain
if (ulimit -S -n 64 && "$SAFECLIP" coadd --log-level debug -o soft/x.fits "${warps[@]}" 2>soft.log); then
  grep -q "open-file limit raised from 64" soft.log && pass "soft limit 64 raised, 40 warps coadded" \
    || fail "no raise logged: $(grep -i 'open-file' soft.log)"
else
  fail "coadd of 40 warps under a soft limit of 64 failed: $(tail -2 soft.log)"
fi
"$SAFECLIP" coadd --log-level warn -o plain/x.fits "${warps[@]}" || fail "plain coadd failed"
cmp -s soft/x.fits plain/x.fits && pass "same bytes with and without the low soft limit" \
  || fail "soft-limit output differs from the plain run"

# A hard limit of 64 cannot be raised: a one-line error naming a warp and the reason, exit 3.
set +e
(ulimit -n 64 && "$SAFECLIP" coadd --log-level warn -o hard.fits "${warps[@]}") 2>hard.log
rc=$?
set -e
[ "$rc" -eq 3 ] && pass "hard limit 64: exit 3" || fail "hard limit 64: exit $rc, expected 3"
grep -qE "warp-[0-9]+\.fits: cannot open: Too many open files" hard.log \
  && pass "hard limit 64: $(grep -m1 -o 'warp-[0-9]*\.fits: cannot open: Too many open files' hard.log)" \
  || fail "hard limit 64: unexpected message: $(cat hard.log)"
[ ! -e hard.fits ] && [ -z "$(ls hard.fits.tmp.* 2>/dev/null)" ] && pass "hard limit 64: nothing written" \
  || fail "hard limit 64: output or temporary left"

# Transport: chosen when alone or on one node, the user's settings kept, off on request.
"$SAFECLIP" coadd --log-level debug -o t1.fits "${warps[@]:0:4}" 2>t1.log
grep -q "MPI transport: singleton: pml ob1, btl self,vader" t1.log && pass "singleton: shared-memory transport" \
  || fail "singleton: $(grep 'MPI transport' t1.log)"
OMPI_MCA_btl=self,tcp "$SAFECLIP" coadd --log-level debug -o t2.fits "${warps[@]:0:4}" 2>t2.log
grep -q "MPI transport: singleton: pml ob1, btl self,tcp" t2.log && pass "user's OMPI_MCA_btl kept" \
  || fail "user's btl: $(grep 'MPI transport' t2.log)"
SAFECLIP_MPI_TUNING=0 "$SAFECLIP" coadd --log-level debug -o t3.fits "${warps[@]:0:4}" 2>t3.log
grep -q "MPI transport: left to Open MPI (SAFECLIP_MPI_TUNING=0)" t3.log && pass "SAFECLIP_MPI_TUNING=0 honoured" \
  || fail "tuning off: $(grep 'MPI transport' t3.log)"
mpirun -n 2 "$SAFECLIP" coadd --log-level debug -o t4.fits "${warps[@]:0:4}" 2>t4.log
grep -q "\[r0\] \[debug\] MPI transport: one node: pml ob1, btl self,vader" t4.log \
  && pass "mpirun -n 2 on one node: shared-memory transport" || fail "mpirun: $(grep 'MPI transport' t4.log)"
finish

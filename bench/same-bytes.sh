#!/usr/bin/env bash
# Same bytes: prove that a refactored safeclip writes byte-identical outputs to a reference build.
#
# usage: bench/same-bytes.sh OLD_BIN NEW_BIN [WORKDIR]
#   OLD_BIN   reference binary (e.g. a build of main; /work/baseline/build/safeclip)
#   NEW_BIN   binary under test
#   WORKDIR   scratch directory (default ${TMPDIR:-/tmp}/safeclip-same-bytes). The data sets are
#             made once in WORKDIR/data with OLD_BIN's `simulate` and reused by later calls
#             (delete WORKDIR/data to remake them); each binary runs the matrix in WORKDIR/side,
#             then moved to WORKDIR/old or WORKDIR/new (remade each time; logs/, rc/ inside).
#   env: EXTRA_OLD_ARGS / EXTRA_NEW_ARGS  extra arguments appended to every coadd/run/plan command
#             of that side (word-split), e.g. EXTRA_NEW_ARGS='--set stack.sigma_clip=2.9' to check
#             that a difference is caught;
#        COMPARE_ONLY=1  skip the runs and compare what is already in WORKDIR/old and WORKDIR/new
#             (e.g. after corrupting a byte of a copy by hand).
#
# Data (seeded): M = 2 patches x 8 warps of 384x384 (manifest), S = 1 patch x 16 warps of 256x256;
# the simulator puts artefacts in them (about 45 footprints clipped per patch of M).
# Matrix, run in full by OLD_BIN, then by NEW_BIN, on the same inputs (one step at a time; mpirun -n 3
# is the widest step):
#   coadd  S: mode safeclip, mode mean, safeclip at memory.max_per_rank=2MiB (21-row chunks); M/p000: tile.size=64
#   run    M: -n 1, 2, 3 (defaults: 1 GiB, tile from the budget); tile.size 64 (-n 1, -n 3) and
#          160 (-n 2); memory.max_per_rank 4MiB (46-row chunks; -n 1, -n 3)
#          and 64MiB (-n 2); coadd.mode=mean (-n 2); qa.enabled=true (-n 2, compares the PNGs)
#   resume M: SAFECLIP_FAIL_AT=0:final at -n 1 then --resume at -n 2; SAFECLIP_FAIL_AT=0:tile-checkpoint
#          (tile.size=128, checkpoint.tile_interval=0) at -n 2 then --resume at -n 3; SIGTERM after the
#          first checkpoint (tile.size=32) then --resume at -n 2. The state left by the injected
#          failures (report.json, any FITS written) is compared too; for SIGTERM only the final
#          FITS are (where the signal lands is timing-dependent).
#   qa     `safeclip qa` of the -n 1 coadd (PNG bytes)
#   plan   `safeclip plan -n 1|2|3` at the defaults, tile.size=64 and 4MiB (stdout text)
#   exit codes of every command.
# Comparisons, one line each (`same ...` or `DIFFERENT: ...`):
#   *.fits      byte for byte after blanking the value of the SCGITREV card in every HDU (the git
#               revision, the only card allowed to differ) and of the CHECKSUM card of an HDU that
#               has one (it covers SCGITREV); a difference names the first differing
#               byte, its HDU, header card or pixel, and how many bytes differ.
#   report.json without the execution-dependent fields (timings/seconds, rss, ranks, rank,
#               rank_count, git_revision, warp_bytes_read); the embedded config is parsed as TOML.
#               Fields present in only one
#               file are printed as 'new field' / 'removed field' notes, not failures.
#   *.png, plan text, exit codes: exact.
# checkpoints/ directories are not compared (HDF5 internals; they are removed after success).
# Exit status: 0 if everything is the same, 1 if anything differs (any FITS, PNG, report value,
# plan text or exit code), 2 on a usage or setup error. The run time is printed at the end.
set -uo pipefail
T0=$(date +%s.%N)
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
abspath() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
OLD=$(abspath "$1"); NEW=$(abspath "$2")
for b in "$OLD" "$NEW"; do [ -x "$b" ] || { echo "same-bytes: $b is not an executable" >&2; exit 2; }; done
W=${3:-${TMPDIR:-/tmp}/safeclip-same-bytes}
mkdir -p "$W" && W=$(cd "$W" && pwd)
PY=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
read -r -a XOLD <<<"${EXTRA_OLD_ARGS:-}"
read -r -a XNEW <<<"${EXTRA_NEW_ARGS:-}"
echo "same-bytes: OLD $OLD ($("$OLD" --version 2>/dev/null))"
echo "same-bytes: NEW $NEW ($("$NEW" --version 2>/dev/null))"
echo "same-bytes: workdir $W${EXTRA_OLD_ARGS:+; EXTRA_OLD_ARGS=$EXTRA_OLD_ARGS}${EXTRA_NEW_ARGS:+; EXTRA_NEW_ARGS=$EXTRA_NEW_ARGS}"

# ---- data, made once with OLD's simulator
D=$W/data
if [ ! -f "$D/.done" ]; then
  echo "same-bytes: simulating data sets with OLD_BIN"
  rm -rf "$D"; mkdir -p "$D"
  "$OLD" simulate --out "$D/M" --patches 2 --warps 8 --size 384x384 --seed 11 --log-level warn || exit 2
  "$OLD" simulate --out "$D/S" --patches 1 --warps 16 --size 256x256 --seed 12 --log-level warn || exit 2
  touch "$D/.done"
fi
S_WARPS=("$D"/S/p000/warp-*.fits)
M_WARPS=("$D"/M/p000/warp-*.fits)

# ---- runs
SIDE=""; BIN=""; X=()
use_side() {  # $1 = old|new. Both sides run in the same directory, WORKDIR/side, moved afterwards to
  # WORKDIR/old or WORKDIR/new: absolute paths (report.json "output", the subtitle of the QA PNGs
  # that `run` writes) are then the same for both.
  SIDE=$W/side
  if [ "$1" = old ]; then BIN=$OLD; X=("${XOLD[@]}"); else BIN=$NEW; X=("${XNEW[@]}"); fi
  [ ${#X[@]} -eq 1 ] && [ -z "${X[0]}" ] && X=()
}
# The command runs in the side's directory; stderr goes to logs/CASE.log, the exit code to rc/CASE.
step() {  # $1 case name, $2.. command
  local name=$1; shift
  (cd "$SIDE" && TMPDIR=$SIDE/tmp timeout 300 "$@" >"logs/$name.out" 2>"logs/$name.log")
  local rc=$?
  echo "$rc" >"$SIDE/rc/$name"
  return 0
}
run_n() {  # $1 case (output dir out/CASE without a .resume suffix), $2 ranks, $3.. extra run args
  local name=$1 n=$2; shift 2
  step "$name" mpirun -n "$n" --oversubscribe "$BIN" run run.toml --set output.dir=\"out/${name%.resume}\" "$@" "${X[@]}"
}
snapshot() {  # the state a failed run left behind, without its checkpoints
  rm -rf "$SIDE/out/$1.failed"
  [ -d "$SIDE/out/$1" ] && cp -r "$SIDE/out/$1" "$SIDE/out/$1.failed" && rm -rf "$SIDE/out/$1.failed/checkpoints"
  echo "same-bytes: $1 exited $(cat "$SIDE/rc/$1") ($(grep -o -m1 'injected failure ([^)]*)' "$SIDE/logs/$1.log")), leaving" \
    "$(find "$SIDE/out/$1/checkpoints" -name '*.h5' 2>/dev/null | wc -l) checkpoint files for the resume"
  return 0
}
sigterm_case() {  # run on 1 rank, SIGTERM after the first checkpoint or FITS, then resume on 2
  local name=x-sigterm dir=$SIDE/out/x-sigterm
  (cd "$SIDE" && TMPDIR=$SIDE/tmp exec "$BIN" run run.toml --set output.dir=\"out/$name\" --set tile.size=32 \
    --set checkpoint.tile_interval=0.0 "${X[@]}" >"logs/$name.out" 2>"logs/$name.log") &
  local pid=$!
  for _ in $(seq 1 1000); do
    ls "$dir"/*.fits "$dir"/checkpoints/*.h5 "$dir"/checkpoints/*.tiles/*.h5 >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
  local rc=$?
  echo "$rc" >"$SIDE/rc/$name"
  echo "same-bytes: SIGTERM run exited $rc (75 = stopped), $(ls "$dir"/*.fits 2>/dev/null | wc -l) of 2 patches written before the resume"
  run_n "$name.resume" 2 --set tile.size=32 --set checkpoint.tile_interval=0.0 --resume
}

setup_side() {
  rm -rf "$SIDE"; mkdir -p "$SIDE/out" "$SIDE/logs" "$SIDE/rc" "$SIDE/plan" "$SIDE/tmp"
  printf '[input]\nmanifest = "../data/M/manifest.json"\n[output]\ndir = "out/default"\n[log]\nlevel = "warn"\n' >"$SIDE/run.toml"
}

matrix() {  # every step, for the current side
  mkdir -p "$SIDE"/out/{c-safeclip,c-mean,c-2MiB,c-p000-t64,qa}
  # coadd on S (16 warps) and on M/p000
  step c-safeclip "$BIN" coadd --log-level warn -o out/c-safeclip/S.fits "${S_WARPS[@]}" "${X[@]}"
  step c-mean "$BIN" coadd --log-level warn --set coadd.mode=\"mean\" -o out/c-mean/S.fits "${S_WARPS[@]}" "${X[@]}"
  step c-2MiB "$BIN" coadd --log-level warn --set memory.max_per_rank=\"2MiB\" -o out/c-2MiB/S.fits \
    "${S_WARPS[@]}" "${X[@]}"
  step c-p000-t64 "$BIN" coadd --log-level warn --set tile.size=64 -o out/c-p000-t64/p000.fits "${M_WARPS[@]}" "${X[@]}"
  # run on M
  run_n r-n1 1
  run_n r-n2 2
  run_n r-n3 3
  run_n r-n1-t64 1 --set tile.size=64
  run_n r-n2-t160 2 --set tile.size=160
  run_n r-n3-t64 3 --set tile.size=64
  run_n r-n1-m4MiB 1 --set memory.max_per_rank=\"4MiB\"
  run_n r-n2-m64MiB 2 --set memory.max_per_rank=\"64MiB\"
  run_n r-n3-m4MiB 3 --set memory.max_per_rank=\"4MiB\"
  run_n r-n2-mean 2 --set coadd.mode=\"mean\"
  run_n r-n2-qa 2 --set qa.enabled=true
  # injected failures, then --resume with another rank count
  SAFECLIP_FAIL_AT=0:final run_n x-final 1 --set checkpoint.tile_interval=0.0
  snapshot x-final
  run_n x-final.resume 2 --set checkpoint.tile_interval=0.0 --resume
  SAFECLIP_FAIL_AT=0:tile-checkpoint run_n x-tilecp 2 --set tile.size=128 --set checkpoint.tile_interval=0.0
  snapshot x-tilecp
  run_n x-tilecp.resume 3 --set tile.size=128 --set checkpoint.tile_interval=0.0 \
    --resume
  sigterm_case
  # qa and plan
  step qa "$BIN" qa out/r-n1/p000.fits -o out/qa/r-n1-p000.png
  local n
  for n in 1 2 3; do
    step plan-n$n "$BIN" plan run.toml -n $n "${X[@]}"
    step plan-n$n-t64 "$BIN" plan run.toml -n $n --set tile.size=64 "${X[@]}"
    step plan-n$n-m4MiB "$BIN" plan run.toml -n $n --set memory.max_per_rank=\"4MiB\" "${X[@]}"
  done
  for f in "$SIDE"/logs/plan-*.out; do cp "$f" "$SIDE/plan/$(basename "$f" .out).txt"; done
}
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

if [ "${COMPARE_ONLY:-0}" != 1 ]; then
  for s in old new; do
    use_side "$s"; setup_side
    echo "same-bytes: running the matrix with ${s^^} ($(elapsed) s)"
    matrix
    rm -rf "${W:?}/$s" "$SIDE/tmp"; mv "$SIDE" "$W/$s"
  done
  echo "same-bytes: runs done ($(elapsed) s)"
fi

# ---- comparisons
cat >"$W/compare.py" <<'PY'
import json, os, sys, tomllib
old_root, new_root = sys.argv[1], sys.argv[2]
BLOCK = 2880
counts = {"same": 0, "different": 0, "notes": 0}
diff_kinds = {}

def same(kind, rel):
    counts["same"] += 1
    print(f"same       {kind:6s} {rel}")

def different(kind, rel, why):
    counts["different"] += 1
    diff_kinds[kind] = diff_kinds.get(kind, 0) + 1
    print(f"DIFFERENT: {rel} {why}")

def note(rel, what):
    counts["notes"] += 1
    print(f"note       {rel}: {what}")

def fits_hdus(b):
    """HDUs of a FITS byte string: header start, data start/end, EXTNAME, NAXIS1, BITPIX, SCGITREV card offsets."""
    off, out = 0, []
    while off + BLOCK <= len(b):
        h0, cards, gitrev, checksum, end = off, {}, [], None, False
        while not end:
            if off + BLOCK > len(b):
                return out
            for i in range(36):
                o = off + 80 * i
                card = b[o:o + 80]
                kw = card[:8].decode("ascii", "replace").strip()
                if kw == "END":
                    end = True
                    break
                if kw == "SCGITREV":
                    gitrev.append(o)
                elif kw == "CHECKSUM":
                    checksum = o
                if card[8:10] == b"= " and kw not in cards:
                    v = card[10:].decode("ascii", "replace")
                    cards[kw] = v.split("'")[1].strip() if v.strip().startswith("'") else v.split("/")[0].strip()
            off += BLOCK
        try:
            bitpix, naxis = int(cards["BITPIX"]), int(cards.get("NAXIS", 0))
            n = 1
            for k in range(1, naxis + 1):
                n *= int(cards[f"NAXIS{k}"])
            n = n if naxis > 0 else 0
            size = abs(bitpix) // 8 * int(cards.get("GCOUNT", 1)) * (int(cards.get("PCOUNT", 0)) + n)
        except (KeyError, ValueError):
            return out
        out.append(dict(h0=h0, d0=off, d1=off + size, name=cards.get("EXTNAME", "PRIMARY" if not out else f"#{len(out)}"),
                        naxis1=int(cards.get("NAXIS1", 0) or 0), bitpix=bitpix, gitrev=gitrev,
                        checksum=checksum))
        off += (size + BLOCK - 1) // BLOCK * BLOCK
    return out

def blank(b, hdus):
    b = bytearray(b)
    for h in hdus:
        for o in h["gitrev"]:
            b[o + 10:o + 80] = b" " * 70
        # The HDU's CHECKSUM covers its SCGITREV card, so it differs with it; DATASUM (compared)
        # still covers the data.
        if h["gitrev"] and h["checksum"] is not None:
            b[h["checksum"] + 10:h["checksum"] + 80] = b" " * 70
    return bytes(b)

def where(off, hdus, a, b):
    for i, h in enumerate(hdus):
        if h["h0"] <= off < h["d0"]:
            c = off - (off - h["h0"]) % 80
            return (f"(HDU {i} {h['name']}, header card: old '{a[c:c + 50].decode('ascii', 'replace').rstrip()}'"
                    f" new '{b[c:c + 50].decode('ascii', 'replace').rstrip()}')")
        if h["d0"] <= off < h["d1"]:
            k = off - h["d0"]
            if h["naxis1"] > 0 and h["bitpix"] != 8:
                px = k // (abs(h["bitpix"]) // 8)
                return f"(HDU {i} {h['name']}, data byte {k}, pixel x={px % h['naxis1']} y={px // h['naxis1']})"
            return f"(HDU {i} {h['name']}, data byte {k})"
    return "(outside the HDUs / padding)"

def cmp_fits(rel, pa, pb):
    a, b = open(pa, "rb").read(), open(pb, "rb").read()
    ha, hb = fits_hdus(a), fits_hdus(b)
    a2, b2 = blank(a, ha), blank(b, hb)
    if a2 == b2:
        return same("fits", rel)
    m = min(len(a2), len(b2))
    first = next((i for i in range(0, m, 4096) if a2[i:i + 4096] != b2[i:i + 4096]), None)
    if first is not None:
        first = next(i for i in range(first, min(first + 4096, m)) if a2[i] != b2[i])
    per_hdu = ""
    try:
        import numpy as np
        d = np.nonzero(np.frombuffer(a2[:m], np.uint8) != np.frombuffer(b2[:m], np.uint8))[0]
        nd = len(d)
        if len(a2) == len(b2) and len(ha) == len(hb):  # where the differences are, HDU by HDU
            parts = []
            for h in ha:
                nh = int(np.count_nonzero((d >= h["h0"]) & (d < h["d0"])))
                ndat = int(np.count_nonzero((d >= h["d0"]) & (d < h["d1"])))
                if nh or ndat:
                    parts.append(f"{h['name']}: {nh} header + {ndat} data bytes")
            per_hdu = " [" + "; ".join(parts) + "]"
    except ImportError:
        nd = sum(x != y for x, y in zip(a2[:m], b2[:m]))
    sz = "" if len(a2) == len(b2) else f"; sizes differ: old {len(a2)} new {len(b2)} bytes"
    if first is None:
        return different("fits", rel, f"first differing byte {m} (end of the shorter file){sz}")
    different("fits", rel, f"first differing byte {first} {where(first, ha, a2, b2)}: old 0x{a2[first]:02x} "
              f"new 0x{b2[first]:02x}; {nd} of {m} bytes differ{per_hdu}{sz}")

# Run facts, not results: timings, memory, ranks, the binary's revision and path, when and where it ran.
DROP = {"seconds", "wall_seconds", "peak_rss_bytes", "ranks", "rank", "rank_count", "git_revision",
        "warp_bytes_read", "command_line", "start_utc", "end_utc", "host"}
def dropped(k):
    kl = k.lower()
    return kl in DROP or "second" in kl or "time" in kl or "rss" in kl

def norm(x, root):
    if isinstance(x, dict):
        return {k: norm(v, root) for k, v in x.items() if not dropped(k)}
    if isinstance(x, list):
        return [norm(v, root) for v in x]
    if isinstance(x, str):
        return x.replace(root, "<SIDE>")
    return x

def jdiff(path, a, b, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            if k not in a:
                out["notes"].append(f"new field {p} = {json.dumps(b[k])[:100]}")
            elif k not in b:
                out["notes"].append(f"removed field {p} (old {json.dumps(a[k])[:100]})")
            else:
                jdiff(p, a[k], b[k], out)
    elif isinstance(a, list) and isinstance(b, list):
        if all(isinstance(v, dict) and "name" in v for v in a + b) and a + b:
            na, nb = {v["name"]: v for v in a}, {v["name"]: v for v in b}
            if list(na) != list(nb):
                out["diffs"].append(f"{path}: names old {list(na)} new {list(nb)}")
            for k in na:
                if k in nb:
                    jdiff(f"{path}[{k}]", na[k], nb[k], out)
        elif len(a) != len(b):
            out["diffs"].append(f"{path}: {len(a)} items old, {len(b)} new")
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                jdiff(f"{path}[{i}]", x, y, out)
    elif a != b:
        out["diffs"].append(f"{path}: old {json.dumps(a)[:120]} new {json.dumps(b)[:120]}")

def cmp_report(rel, pa, pb):
    try:
        a = norm(json.load(open(pa)), old_root)
        b = norm(json.load(open(pb)), new_root)
    except ValueError as e:
        return different("report", rel, f"unreadable JSON: {e}")
    for j in (a, b):  # the embedded config: compare it key by key
        if isinstance(j, dict) and isinstance(j.get("config"), str):
            try:
                j["config"] = tomllib.loads(j["config"])
            except tomllib.TOMLDecodeError:
                pass
    out = {"diffs": [], "notes": []}
    jdiff("", a, b, out)
    for n in out["notes"]:
        note(rel, n)
    if out["diffs"]:
        different("report", rel, f"{len(out['diffs'])} field(s) differ: " + "; ".join(out["diffs"][:4]))
    else:
        same("report", rel)

def cmp_exact(kind, rel, pa, pb):
    a, b = open(pa, "rb").read(), open(pb, "rb").read()
    if kind == "plan":
        a, b = a.replace(old_root.encode(), b"<SIDE>"), b.replace(new_root.encode(), b"<SIDE>")
    if a == b:
        return same(kind, rel)
    m = min(len(a), len(b))
    first = next((i for i in range(m) if a[i] != b[i]), m)
    if kind == "rc":
        return different(kind, rel, f"exit code old {a.decode().strip()} new {b.decode().strip()}")
    if kind == "plan":
        la, lb = a.decode(errors="replace").splitlines(), b.decode(errors="replace").splitlines()
        i = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
        return different(kind, rel, f"first differing byte {first}, line {i + 1}: old "
                         f"'{la[i] if i < len(la) else '<EOF>'}' new '{lb[i] if i < len(lb) else '<EOF>'}'")
    different(kind, rel, f"first differing byte {first} (sizes old {len(a)} new {len(b)})")

def files(root):
    got = set()
    for sub in ("out", "plan", "rc"):
        for d, dirs, fs in os.walk(os.path.join(root, sub)):
            dirs[:] = [x for x in dirs if x != "checkpoints"]
            for f in fs:
                got.add(os.path.relpath(os.path.join(d, f), root))
    return got

fo, fn = files(old_root), files(new_root)
for rel in sorted(fo | fn):
    kind = ("fits" if rel.endswith(".fits") else "report" if rel.endswith("report.json") else
            "png" if rel.endswith(".png") else "plan" if rel.startswith("plan/") else
            "rc" if rel.startswith("rc/") else "other")
    if rel.startswith("rc/x-sigterm") and not rel.endswith(".resume"):
        continue
    if rel.startswith("out/x-sigterm/") and kind == "report":
        note(rel, "not compared (where the SIGTERM lands is timing-dependent)")
        continue
    if rel not in fn:
        different(kind, rel, "missing in NEW's outputs")
        continue
    if rel not in fo:
        different(kind, rel, "only in NEW's outputs") if kind == "fits" else note(rel, "only in NEW's outputs")
        continue
    pa, pb = os.path.join(old_root, rel), os.path.join(new_root, rel)
    if kind == "fits":
        cmp_fits(rel, pa, pb)
    elif kind == "report":
        cmp_report(rel, pa, pb)
    else:
        cmp_exact(kind, rel, pa, pb)

nf = sum(1 for r in fo | fn if r.endswith(".fits"))
kinds = ", ".join(f"{v} {k}" for k, v in sorted(diff_kinds.items()))
print(f"SUMMARY: {counts['same'] + counts['different']} comparisons ({nf} FITS files): {counts['same']} same, "
      f"{counts['different']} DIFFERENT{' (' + kinds + ')' if kinds else ''}, {counts['notes']} notes")
sys.exit(1 if counts["different"] else 0)
PY
$PY "$W/compare.py" "$W/old" "$W/new"
rc=$?
echo "same-bytes: $([ $rc -eq 0 ] && echo "ALL SAME" || echo "DIFFERENCES FOUND") in $(elapsed) s"
exit $rc

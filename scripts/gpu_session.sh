#!/usr/bin/env bash
# Everything a lent NVIDIA GPU is needed for, in one run (issue: "Real GPU"):
#   0. the machine and the versions (nvidia-smi, numba, numba-cuda, torch);
#   1. scripts/gpu_check.py: preflight, correctness on random specs, the ResNet 3x3 layers
#      against cuDNN (TF32 off and torch's defaults) with a sweep of tile configurations;
#   2. notebook 07 executed at full size on the GPU (not the simulator);
#   3. the cuda_kernel and cuda_tiled exercises (teacher notebooks, solutions in) on the GPU:
#      their check() traces on the simulator and runs the same cases on the GPU;
#   4. convlab bench --device cuda --suite resnet.
# Each step has its own time limit, so one that hangs costs only its share; the results are
# packed into $OUT/gpu_session.tar.gz after every step, so a run cut short keeps what it did.
#
#   bash scripts/gpu_session.sh            (on the GPU machine; OUT defaults to ./gpu_out)
#
# Python packages the machine lacks (nbclient, ipykernel, platformdirs...) may be carried
# as wheels in .whl/ (see the device tool's notes); they are installed into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
WORK=$(mktemp -d /tmp/gpu_session.XXXX)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
export CONVLAB_TUNE_CACHE="$WORK/tuning.json"
unset NUMBA_ENABLE_CUDASIM CONVLAB_QUICK
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
pack() { tar -czf "$OUT/gpu_session.tar.gz" -C "$WORK" . ; }
step() {  # step NAME SECONDS COMMAND...: run, log, time, pack
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    echo "=== $name: rc $rc in $((SECONDS - t0)) s" | tee -a "$WORK/steps.txt"
    tail -n "${TAIL:-25}" "$WORK/$name.log"
    pack
}
{
    nvidia-smi; python3 -c "import sys; print(sys.version)"
    python3 -m pip list 2>/dev/null | grep -iE "^(numba|numba-cuda|numpy|torch|llvmlite|cuda-|nvidia-cuda)"
} >"$WORK/env.txt" 2>&1
head -n 40 "$WORK/env.txt"

step gpu_check "${GPU_CHECK_S:-270}" python3 scripts/gpu_check.py --json "$WORK/gpu_check.json" \
    --budget "${GPU_CHECK_BUDGET:-220}" --cases "${CASES:-30}" --sweep "${SWEEP:-6}"
step nb07 "${NB_S:-150}" python3 - "$WORK" <<'EOF'
import sys, time, nbformat
from nbclient import NotebookClient
work = sys.argv[1]
nb = nbformat.read("notebooks/07_cuda.ipynb", as_version=4)
t0 = time.perf_counter()
try:
    NotebookClient(nb, timeout=140, kernel_name="python3",
                   resources={"metadata": {"path": "notebooks"}}).execute()
finally:
    nbformat.write(nb, f"{work}/07_cuda.executed.ipynb")
    for c in nb.cells:
        for o in c.get("outputs", []):
            text = o.get("text") or o.get("data", {}).get("text/markdown") or ""
            if o.get("output_type") == "error":
                text = f"{o['ename']}: {o['evalue']}"
            if text:
                print("".join(text)[:1500])
print(f"notebook 07 executed in {time.perf_counter() - t0:.0f} s")
EOF
step exercises "${EX_S:-150}" python3 - "$WORK" <<'EOF'
import sys, time, nbformat
from nbclient import NotebookClient
work = sys.argv[1]
for name in ("05_cuda", "06_cuda_tiled"):
    nb = nbformat.read(f"notebooks/exercises/source/{name}.ipynb", as_version=4)
    t0 = time.perf_counter()
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": "notebooks/exercises"}}).execute()
    finally:
        nbformat.write(nb, f"{work}/{name}.executed.ipynb")
    verdicts = ["".join(o.get("text", "")) for c in nb.cells for o in c.get("outputs", [])
                if "GPU" in "".join(o.get("text", "")) or "correct" in "".join(o.get("text", ""))]
    print(f"{name}: executed in {time.perf_counter() - t0:.0f} s")
    for v in verdicts:
        print("   ", v.strip()[:600])
EOF
step bench_resnet "${BENCH_S:-150}" python3 -m convlab.cli bench --device cuda --suite resnet \
    --out "$WORK/bench_cuda_resnet.json"
echo "=== steps"; cat "$WORK/steps.txt"
pack

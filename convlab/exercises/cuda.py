"""A numba.cuda kernel, checked on the CUDA simulator (no GPU needed).

The simulator has to be switched on (``NUMBA_ENABLE_CUDASIM=1``) before Numba is
imported, and the student's notebook imported it long ago; so the check sends
the kernel's *source* (``inspect.getsource``) to a fresh Python process that runs
it on the simulator (``_cudasim_runner.py``) and hands the outputs back.  The
kernel must therefore be self-contained: it may use ``cuda``, ``np``, ``math``
and ``numba``, nothing else from the notebook.  Shapes are tiny: the simulator
runs one Python thread per CUDA thread.

The launch: blocks of 4 x 4 threads; thread (x, y) = ``cuda.grid(2)`` computes
output column ``j = x`` and row ``i = y`` for every output channel; the grid is
rounded up to whole blocks, so some threads fall outside the output.

The run is *traced* (:mod:`convlab.cuda_trace`): every memory access is recorded
with its thread, so the check names the thread and the index of an out-of-bounds
access or a race, and reports the kernel's traffic: global reads per output.
"""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import solutions
from .core import Exercise, Incorrect, NotAttempted, compare_arrays, short, source_of
from .loops import oracle

RUNNER = Path(__file__).with_name("_cudasim_runner.py")
THREADS = (4, 4)
# (x shape (C, H, W), w shape (K, C, kh, kw)): non-square; the second leaves idle threads
CUDA_CASES = [((2, 6, 9), (2, 2, 3, 2)), ((1, 7, 6), (3, 1, 2, 3))]
TIMEOUT_S = 300


def launch_2d(out_shape: tuple[int, ...]) -> dict[str, Any]:
    """One 4x4-thread block per 4x4 output pixels (x along columns, y along rows)."""
    return {"out_shape": list(out_shape), "threads": list(THREADS),
            "blocks": [math.ceil(out_shape[2] / THREADS[0]),
                       math.ceil(out_shape[1] / THREADS[1])]}


def gpu_driver_present() -> bool:
    """An NVIDIA driver on this machine, asked without importing numba (the notebook's
    numba may be the simulator's)."""
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def run_on_simulator(source: str, name: str, cases: list[tuple[np.ndarray, np.ndarray]],
                     launches: list[dict[str, Any]], device: str = "sim"
                     ) -> tuple[dict, list[np.ndarray]]:
    """Launch kernel ``name`` from ``source`` on each case (``launches``: out_shape,
    blocks, threads) in a fresh process: on the simulator, traced (the result dict holds
    one trace summary per case under ``traces``), or with ``device="gpu"`` plainly on a
    real GPU (``gpu`` names it; ``unavailable`` says why none ran).  Returns the runner's
    result dict and the outputs (NaN where nothing was written)."""
    with tempfile.TemporaryDirectory(prefix="convlab-cudasim-") as tmp:
        work = Path(tmp)
        (work / "kernel.py").write_text(source)
        (work / "job.json").write_text(json.dumps({"name": name, "cases": launches,
                                                   "device": device,
                                                   "timeout_s": TIMEOUT_S - 30}))
        # plain float arrays: nothing to pickle (naming the flag also keeps a type checker
        # from matching the arrays against it)
        np.savez(work / "inputs.npz", allow_pickle=False,
                 **{f"{a}{n}": arr for n, (x, w) in enumerate(cases)
                    for a, arr in (("x", x), ("w", w))})
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        if device == "gpu":
            env.pop("NUMBA_ENABLE_CUDASIM")
        try:
            proc = subprocess.run([sys.executable, str(RUNNER), str(work)], env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            where = "the GPU" if device == "gpu" else "the simulator"
            return {"ok": False, "stage": "run", "case": None, "type": "Timeout",
                    "message": f"{where} did not finish in {TIMEOUT_S} s (an endless "
                               "loop?)", "not_implemented": False}, []
        if not (work / "result.json").exists():
            return {"ok": False, "stage": "start", "case": None, "type": "RunnerError",
                    "message": short(proc.stderr or proc.stdout), "not_implemented": False}, []
        result = json.loads((work / "result.json").read_text())
        outs = []
        if result["ok"]:
            with np.load(work / "outputs.npz") as data:
                outs = [data[f"out{n}"] for n in range(len(cases))]
        return result, outs


def confirm_on_gpu(source: str, name: str, cases: list[tuple[np.ndarray, np.ndarray]],
                   launches: list[dict[str, Any]], expected: list[np.ndarray],
                   where: Any) -> str:
    """On a machine with an NVIDIA GPU, the same cases once more on the GPU itself (the
    simulator already proved the accesses; this shows the kernel compiles for the real
    hardware and gives the oracle's numbers there).  Returns the sentence for the
    verdict's note ('' with no GPU driver here); raises Incorrect when the GPU disagrees."""
    if not gpu_driver_present():
        return ""
    result, outs = run_on_simulator(source, name, cases, launches, device="gpu")
    if result.get("unavailable"):
        return f" (not run on this machine's GPU: {result['unavailable']})"
    if not result["ok"]:
        case = result["case"]
        raise Incorrect(f"on the GPU, {where(case) if case is not None else 'your kernel'}: "
                        f"{result['type']}: {result['message']}")
    for n, (got, want) in enumerate(zip(outs, expected, strict=True)):
        if np.isnan(got).any():
            raise Incorrect(f"on the GPU, {where(n)}: {int(np.isnan(got).sum())} of "
                            f"{got.size} outputs were never written, although the simulator "
                            "wrote them all: a race or a barrier the simulator hid")
        compare_arrays(got, want, f"on the GPU, {where(n)}")
    return f" Run on the GPU ({result['gpu']}) too: the same numbers."


FINDING_ORDER = ("out-of-bounds", "divergent-barrier", "race", "uninitialised")


def first_finding(traces: list[dict]) -> tuple[int, dict] | None:
    """(case, finding) of the most serious finding of any case: out-of-bounds first
    (it crashes a GPU), then a divergent barrier, a race, uninitialised memory."""
    found = [(FINDING_ORDER.index(f["kind"]), n, f) for n, t in enumerate(traces)
             for f in t["findings"]]
    if not found:
        return None
    _, n, f = min(found, key=lambda r: (r[0], r[1]))
    return n, f


def reads_per_output(summary: dict, out_size: int, arrays: tuple[str, ...]) -> dict[str, float]:
    """Global reads of each traced array per output element, and their total."""
    counts = summary["counts"]
    per = {a: counts[a]["reads"] / out_size for a in arrays if a in counts}
    return {**per, "total": sum(per.values())}


def _kernel_source(fn: Any) -> tuple[str, str]:
    """(source, function name) of a @cuda.jit kernel, a plain function or a source string."""
    if isinstance(fn, str):
        defs = [n.name for n in ast.parse(fn).body if isinstance(n, ast.FunctionDef)]
        if not defs:
            raise Incorrect("the source you passed defines no function")
        return fn, defs[-1]
    inner = getattr(fn, "py_func", None) or getattr(fn, "fn", None) or fn
    try:
        return source_of(fn), inner.__name__
    except (OSError, TypeError):
        raise Incorrect("could not read your kernel's source code; define it with `def` in "
                        "a notebook cell or a file (or pass the source as a string)") from None


class CudaKernel(Exercise):
    name = "cuda_kernel"
    title = "A CUDA kernel: one thread per output pixel"
    task = ("Write a @cuda.jit kernel conv_kernel(x, w, out): x is (C, H, W), w is "
            "(K, C, kh, kw), out is (K, H-kh+1, W-kw+1) (stride 1, no padding, no bias). "
            "It is launched with blocks of 4x4 threads and enough blocks to cover the "
            "output; the thread at j, i = cuda.grid(2) computes out[:, i, j] (x along "
            "columns, y along rows). Threads outside the output must do nothing. Use only "
            "cuda, np, math inside (it runs on the CUDA simulator in another process).")
    hints = (
        "One thread per output pixel: a thread finds which pixel it owns, does nothing "
        "if that lies outside the output, and computes every output channel there with "
        "conv_loops' inner loops (stride 1, no padding).",
        "cuda.grid(2) returns (x, y): x runs along columns (j), y along rows (i). The grid "
        "is rounded up to whole 4x4 blocks, so check i and j against out's shape before "
        "touching any memory.",
        "j, i = cuda.grid(2) (x first!); then `if i < out.shape[1] and j < out.shape[2]:` "
        "and inside it, for each k, sum x[c, i+p, j+q] * w[k, c, p, q] into a local `acc` "
        "and store out[k, i, j] = acc.")
    praise = "a real GPU runs the same kernel, thousands of threads at once."

    def _check(self, fn: Any) -> str:
        if fn is None:
            raise NotAttempted("you passed None; define your kernel and pass it to check()")
        source, name = _kernel_source(fn)
        rng = np.random.default_rng(15)
        cases = [(rng.standard_normal(xs), rng.standard_normal(ws)) for xs, ws in CUDA_CASES]
        expected = [oracle(x[None], w, 1, 0, 1)[0] for x, w in cases]
        result, outs = run_on_simulator(source, name, cases,
                                        [launch_2d(e.shape) for e in expected])
        if not result["ok"]:
            if result["not_implemented"]:
                raise NotAttempted("your kernel still raises NotImplementedError")
            case = result["case"]
            where = (f"case {case + 1}/{len(cases)}, x {CUDA_CASES[case][0]}, w "
                     f"{CUDA_CASES[case][1]}" if case is not None else "your kernel")
            advice = ""
            if result["type"] == "NameError":
                advice = (" (the kernel runs in a fresh process with only cuda, np, math and "
                          "numba: keep everything it needs inside it)")
            raise Incorrect(f"{where}: {result['message']}{advice}")
        if all(np.isnan(o).all() for o in outs) and not any(
                t["findings"] for t in result["traces"]):
            raise NotAttempted("your kernel wrote no output at all")
        found = first_finding(result["traces"])
        if found is not None:
            n, f = found
            where = f"case {n + 1}/{len(cases)}, x {CUDA_CASES[n][0]}, w {CUDA_CASES[n][1]}"
            raise Incorrect(f"{where}: {f['kind']}: {f['message']}{_advice(f)}")
        for n, (got, want) in enumerate(zip(outs, expected, strict=True)):
            where = f"case {n + 1}/{len(cases)}, x {CUDA_CASES[n][0]}, w {CUDA_CASES[n][1]}"
            if np.isnan(got).any():
                raise Incorrect(f"{where}: {int(np.isnan(got).sum())} of {got.size} outputs "
                                "were never written: every (i, j) needs its thread (j from "
                                "the x index, i from the y index), and every k")
            x, w = cases[n]

            def flipped(x: np.ndarray = x, w: np.ndarray = w) -> np.ndarray:
                return oracle(x[None], w[:, :, ::-1, ::-1], 1, 0, 1)[0]
            compare_arrays(got, want, where, [
                ("you flipped the kernel (Conv2d is a cross-correlation)", flipped)])
        gpu = confirm_on_gpu(source, name, cases, [launch_2d(e.shape) for e in expected],
                             expected, lambda n: f"case {n + 1}/{len(cases)}, x "
                             f"{CUDA_CASES[n][0]}, w {CUDA_CASES[n][1]}")
        # the verdict's note: the praise, then what the tracer measured (and the GPU run)
        return f"{self.praise}\n{_traffic(result['traces'], expected)}{gpu}"

    def _solution(self) -> Any:
        return solutions.conv_kernel


def _advice(f: dict) -> str:
    """What a finding on the naive kernel usually means."""
    if f["kind"] == "out-of-bounds":
        return (" (a thread outside the output read or wrote past the end: guard with "
                "`if i < out.shape[1] and j < out.shape[2]:`, and check that x runs along "
                "columns j, y along rows i)")
    if f["kind"] == "race":
        return (" (each output needs exactly one thread: j from the x index, i from the y "
                "index, and the thread loops over k)")
    return ""


def _traffic(traces: list[dict], expected: list[np.ndarray]) -> str:
    """Global reads per output, measured on each case."""
    parts = []
    for n, (t, e) in enumerate(zip(traces, expected, strict=True)):
        per = reads_per_output(t, e.size, ("x", "w"))
        kh, kw = CUDA_CASES[n][1][2:]
        parts.append(f"case {n + 1}: {per['total']:.1f} (x {per.get('x', 0):.1f}, w "
                     f"{per.get('w', 0):.1f}; C*kh*kw = {CUDA_CASES[n][1][1] * kh * kw} "
                     "multiply-adds per output)")
    return ("Traffic, traced on the simulator: global reads per output, " + "; ".join(parts)
            + ". Every multiply-add loads both its operands from global memory: "
            "ex.cuda_tiled asks for a kernel that stages them in shared memory.")

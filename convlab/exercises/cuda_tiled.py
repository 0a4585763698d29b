"""A shared-memory CUDA kernel, checked for correctness *and* traffic on the simulator.

The naive kernel (exercise ``cuda_kernel``) loads both operands of every
multiply-add from global memory.  Here a block of 4 x 4 threads computes a 4 x 4
tile of one output channel: for each input channel it first copies the 6 x 6
input *patch* the tile needs (the tile plus a halo of 2 for a 3 x 3 kernel) and
the 3 x 3 weights into shared memory, waits (``cuda.syncthreads()``), sums from
shared memory, and waits again before the next channel overwrites the patch.

The check runs the kernel traced (:mod:`convlab.cuda_trace`) in a simulator
process, compares the output with the float64 oracle, and counts its global
reads: they must be at most 1/:data:`FEWER` of what the naive kernel reads
(2 * C * 9 per output).  It names the thread and index of an out-of-bounds
access, a race (a missing ``syncthreads``), a read of a shared cell nobody wrote
(a halo off by one) and a barrier that not every thread reaches (an early
``return``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import solutions
from .core import Exercise, Incorrect, NotAttempted, compare_arrays
from .cuda import (
    THREADS,
    _kernel_source,
    confirm_on_gpu,
    first_finding,
    reads_per_output,
    run_on_simulator,
)
from .loops import oracle

FEWER = 3  # at least this many times fewer global reads than the naive kernel
# (x shape (C, H, W), w shape (K, C, 3, 3)): non-square outputs (2, 5, 8) and (3, 4, 5),
# the first with a ragged last row of tiles, the second a ragged last column
TILED_CASES = [((2, 7, 10), (2, 2, 3, 3)), ((2, 6, 7), (3, 2, 3, 3))]


def launch_tiles(out_shape: tuple[int, ...]) -> dict[str, Any]:
    """Block (bx, by, k) = the 4x4 output tile (by, bx) of channel k; 4x4 threads."""
    k, ho, wo = out_shape
    return {"out_shape": list(out_shape), "threads": list(THREADS),
            "blocks": [math.ceil(wo / THREADS[0]), math.ceil(ho / THREADS[1]), k]}


def naive_reads(x_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Global reads of the one-thread-per-output kernel: an input and a weight per
    multiply-add, C*3*3 multiply-adds per output (no padding: every tap is read)."""
    return 2 * x_shape[0] * 3 * 3 * int(np.prod(out_shape))


def finding_advice(kind: str, array: str | None, space: str | None) -> str:
    """What a finding usually means in this exercise."""
    if kind == "out-of-bounds" and space == "shared":
        return (" (the patch of a 4x4 tile for a 3x3 kernel is 6x6: the tile plus a halo of "
                "2; a thread reads patch[ty + p, tx + q] with p, q up to 2)")
    if kind == "out-of-bounds" and array == "out":
        return " (store only outputs inside out: guard the store, and only the store)"
    if kind == "out-of-bounds":
        return (" (the patch starts at row 4*blockIdx.y, column 4*blockIdx.x of x: copy "
                "only cells inside x, 0 for the others; a halo off by one?)")
    if kind == "race" and space == "shared":
        return (" (a cuda.syncthreads() is missing: one between staging and summing, and "
                "one after summing, before the next channel overwrites the patch)")
    if kind == "race":
        return (" (one thread per output: block (bx, by, k) owns out[k, 4*by:4*by+4, "
                "4*bx:4*bx+4], thread (tx, ty) the one at row 4*by+ty, column 4*bx+tx)")
    if kind == "uninitialised":
        return (" (a halo off by one? the patch is the tile plus 2 rows and 2 columns, 6x6: "
                "every cell must be written, with 0 past the input's edge)")
    return (" (every thread must reach every cuda.syncthreads(): threads off the output's "
            "edge still help stage and wait; they skip only the store)")


class CudaTiled(Exercise):
    name = "cuda_tiled"
    title = "A tiled CUDA kernel: stage the patch in shared memory"
    task = ("Write a @cuda.jit kernel conv_tiled_kernel(x, w, out): x is (C, H, W), w is "
            "(K, C, 3, 3), out is (K, H-2, W-2) (stride 1, no padding, no bias), float64. "
            "It is launched with blocks of 4x4 threads and grid (ceil(W_out/4), "
            "ceil(H_out/4), K): block (bx, by, k) computes the outputs out[k, 4*by:4*by+4, "
            "4*bx:4*bx+4], thread (tx, ty) the one at row 4*by+ty, column 4*bx+tx. For "
            "each input channel c the block copies the 6x6 input patch x[c, 4*by:4*by+6, "
            "4*bx:4*bx+6] (0 where it passes the input's edge) and the 9 weights w[k, c] "
            "into cuda.shared.array memory, cuda.syncthreads(), sums from shared memory, "
            f"cuda.syncthreads(). It must read at most 1/{FEWER} of the naive kernel's "
            "global memory (2*C*9 numbers per output). Every thread reaches every "
            "syncthreads; threads off the output's edge skip only the store. Use only "
            "cuda, np, math inside.")
    hints = (
        "A block's 16 outputs read one 6x6 input patch per channel: copy it into shared "
        "memory once, with all 16 threads helping, wait, compute from shared memory, and "
        "wait again before the next channel overwrites it.",
        "Number the threads t = ty*4 + tx (0..15) and let them copy the 36 patch cells in "
        "turns (cell e by thread e % 16), 0 past the input's edge; nine threads copy the "
        "3x3 weights. cuda.syncthreads() after copying and after summing; guard only the "
        "final store, so every thread reaches every barrier.",
        "t = ty*4 + tx numbers the 16 threads; `for e in range(t, 36, 16):` shares the 36 "
        "patch cells among them (py, px = e // 6, e % 6); `if t < 9:` nine threads copy "
        "w[k, c, t // 3, t % 3]. Then cuda.syncthreads(); acc += patch[ty+p, tx+q] * "
        "w_s[p, q] over p, q < 3; cuda.syncthreads(). The `if i < out.shape[1] and j < "
        "out.shape[2]` guard goes around the store only.")
    praise = "each block reads its patch once, instead of 9 times per output channel."

    def _check(self, fn: Any) -> str:
        if fn is None:
            raise NotAttempted("you passed None; define your kernel and pass it to check()")
        source, name = _kernel_source(fn)
        rng = np.random.default_rng(17)
        cases = [(rng.standard_normal(xs), rng.standard_normal(ws)) for xs, ws in TILED_CASES]
        expected = [oracle(x[None], w, 1, 0, 1)[0] for x, w in cases]
        result, outs = run_on_simulator(source, name, cases,
                                        [launch_tiles(e.shape) for e in expected])

        def where(n: int) -> str:
            return f"case {n + 1}/{len(cases)}, x {TILED_CASES[n][0]}, w {TILED_CASES[n][1]}"

        if not result["ok"]:
            if result["not_implemented"]:
                raise NotAttempted("your kernel still raises NotImplementedError")
            case = result["case"]
            advice = (" (the kernel runs in a fresh process with only cuda, np, math and "
                      "numba: keep everything it needs inside it)"
                      if result["type"] == "NameError" else "")
            raise Incorrect(f"{where(case) if case is not None else 'your kernel'}: "
                            f"{result['message']}{advice}")
        traces = result["traces"]
        if all(np.isnan(o).all() for o in outs) and not any(t["findings"] for t in traces):
            raise NotAttempted("your kernel wrote no output at all")
        found = first_finding(traces)
        if found is not None:
            n, f = found
            space = traces[n]["counts"].get(f["array"], {}).get("space")
            raise Incorrect(f"{where(n)}: {f['kind']}: {f['message']}"
                            f"{finding_advice(f['kind'], f['array'], space)}")
        for n, (got, want) in enumerate(zip(outs, expected, strict=True)):
            if np.isnan(got).any():
                raise Incorrect(f"{where(n)}: {int(np.isnan(got).sum())} of {got.size} "
                                "outputs were never written (or summed a NaN): every output "
                                "needs its thread in its block")
            compare_arrays(got, want, where(n))
        lines = []
        for n, (t, e) in enumerate(zip(traces, expected, strict=True)):
            got_reads = sum(t["counts"][a]["reads"] for a in ("x", "w") if a in t["counts"])
            naive = naive_reads(TILED_CASES[n][0], e.shape)
            per = reads_per_output(t, e.size, ("x", "w"))
            if got_reads * FEWER > naive:
                raise Incorrect(
                    f"{where(n)}: right values, but your kernel read {got_reads:,} numbers "
                    f"from global memory (x {t['counts'].get('x', {}).get('reads', 0):,}, w "
                    f"{t['counts'].get('w', {}).get('reads', 0):,}); the naive kernel reads "
                    f"{naive:,}: {naive / max(got_reads, 1):.1f}x fewer, the task asks for "
                    f"{FEWER}x. Stage the patch and the weights in shared memory and read "
                    "them from there, not from x and w")
            shared = sum(c["reads"] for c in t["counts"].values() if c["space"] == "shared")
            lines.append(f"case {n + 1}: {per['total']:.2f} global reads per output (x "
                         f"{per.get('x', 0):.2f}, w {per.get('w', 0):.2f}) against naive's "
                         f"{naive / e.size:.0f}: {naive / got_reads:.1f}x fewer; "
                         f"{shared / e.size:.0f} shared-memory reads per output")
        gpu = confirm_on_gpu(source, name, cases, [launch_tiles(e.shape) for e in expected],
                             expected, where)
        # the verdict's note: the praise, then what the tracer measured (and the GPU run)
        return f"{self.praise}\nTraffic, traced on the simulator: {'; '.join(lines)}.{gpu}"

    def _solution(self) -> Any:
        return solutions.conv_tiled_kernel

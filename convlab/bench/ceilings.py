"""The machine's ceilings, measured in the same run as the kernels.

A kernel's GFLOP/s means little alone; against what this machine can do it means a
lot.  :func:`calibrate` measures two ceilings: compute (a big float GEMM through
NumPy's BLAS: the practical peak of the arithmetic) and memory (a parallel copy:
the bandwidth a memory-bound kernel can hope for).  The harness measures them before
and after the kernels and keeps the best of each (:func:`merge`): another process
can only slow a measurement down.  When the two disagree a lot, the machine was
busy; :func:`disturbance` says so in one line.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numba import njit, prange

from ..threads import parallel_region
from .timing import wall_timer

# Ceilings measured before and after a run that differ by more than this fraction
# mean the machine was busy during the run.
DISTURBED = 0.2


@njit(parallel=True, cache=True)
def _parallel_copy(src, dst):
    for i in prange(src.size):
        dst[i] = src[i]


def measure_peak(dtype: Any = np.float32, n: int = 2048, repeats: int = 10) -> dict[str, Any]:
    """The machine's practical compute ceiling: the best of ``repeats`` n x n x n GEMMs
    (NumPy's BLAS), a short pause before each so that a burst of load from elsewhere
    spoils only some of them."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm-up: thread pool start, page faults
    times = []
    for _ in range(repeats):
        time.sleep(0.05)
        times.append(wall_timer(lambda: a @ b, 1))
    flops = 2.0 * n**3
    return {"what": f"{np.dtype(dtype).name} GEMM {n}x{n}x{n} (numpy matmul)",
            "gflops": flops / min(times) / 1e9,
            "gflops_median": flops / float(np.median(times)) / 1e9}


def measure_bandwidth(mib: int = 128, repeats: int = 5) -> dict[str, Any]:
    """The memory ceiling: a parallel copy of ``mib`` MiB (bytes read + bytes written)."""
    src = np.random.default_rng(0).standard_normal(mib * 2**20 // 8)
    dst = np.empty_like(src)

    def copy() -> None:
        with parallel_region():
            _parallel_copy(src, dst)

    copy()  # compile (or load from cache) and fault the pages in
    times = [wall_timer(copy, 1) for _ in range(repeats)]
    moved = 2.0 * src.nbytes
    return {"what": f"parallel copy of {mib} MiB (numba prange; read + write counted)",
            "gbs": moved / min(times) / 1e9, "gbs_median": moved / float(np.median(times)) / 1e9}


def calibrate(dtype: Any = np.float32) -> dict[str, Any]:
    """Measure the compute and memory ceilings (GFLOP/s, GB/s) now."""
    # the copy first: measured right after the GEMM, it ran beside OpenBLAS's threads
    # still spinning from it, and came out 20-30 % slow, so every quiet run was flagged
    # as busy ("measured 31 then 39 GB/s")
    bw = measure_bandwidth()
    peak = measure_peak(dtype)
    return {"peak_gflops": peak["gflops"], "peak_what": peak["what"],
            "peak_gflops_median": peak["gflops_median"], "bandwidth_gbs": bw["gbs"],
            "bandwidth_what": bw["what"], "bandwidth_gbs_median": bw["gbs_median"]}


def merge(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Ceilings measured before and after the run: keep the best of each (another
    process on the machine can only make a measurement slower, never faster)."""
    merged = dict(before)
    for key in ("peak_gflops", "bandwidth_gbs"):
        merged[key] = max(before[key], after[key])
        merged[key + "_runs"] = [before[key], after[key]]
    return merged


def disturbance(calib: dict[str, Any]) -> str | None:
    """One line for people when the ceilings measured before and after the run disagree
    (the machine was busy), else None."""
    for key, what, unit in (("peak_gflops", "GEMM peak", "GFLOP/s"),
                            ("bandwidth_gbs", "memory bandwidth", "GB/s")):
        runs = calib.get(key + "_runs")
        if runs and min(runs) < (1 - DISTURBED) * max(runs):
            return (f"the machine was busy: the {what} measured {runs[0]:.0f} then "
                    f"{runs[1]:.0f} {unit}; percentages use the better one, and times taken "
                    "while other programs ran are slower than this machine can do")
    return None


def no_calibration() -> dict[str, Any]:
    """The ceilings of a GPU run: none (the CPU's GEMM peak and copy bandwidth say
    nothing about a GPU)."""
    what = "not measured (a GPU run: the CPU's GEMM peak says nothing about the GPU)"
    return {"peak_gflops": None, "peak_what": what, "bandwidth_gbs": None,
            "bandwidth_what": what}

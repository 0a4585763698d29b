"""OpenBLAS's idle threads: let them sleep at once, so they do not slow the next kernel.

After a multi-threaded GEMM (``im2col``'s, or any NumPy matrix product), OpenBLAS's worker
threads keep spinning, waiting for more work, for 2**THREAD_TIMEOUT CPU cycles (28 unless
configured: ~0.1 s at 2.5 GHz) before they go to sleep.  A kernel that runs in that window
on Numba's threads (``parallel``, Winograd, ``depthwise``) shares every core with a
spinning thread.  Measured on a 2-core EPYC: Winograd F(4,3) on ResNet's 64ch@56 took
10.7 ms right after an ``im2col`` call and 5.7 ms otherwise.  In a benchmark or in
``convlab tune`` that decides the result (whatever is timed after ``im2col`` looks slow),
and a network that mixes ``im2col`` layers with the others pays it on every layer.

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` (4 to 30) once, when NumPy loads it.  So this
module, imported by ``convlab/__init__.py`` before anything that loads NumPy, sets it to 4
(sleep as soon as the work is done), unless it is set already: yours wins.  It can only
take effect when convlab is imported before NumPy: always in the ``convlab`` command, not
in a notebook that imported NumPy first (there the benchmark's untimed call before each
sample absorbs part of it; see ``convlab.bench.timing``).  The price: OpenBLAS wakes its
threads for each GEMM, which cost ``im2col`` 0.5 ms on a layer made of many small GEMMs
(1x1 stride 2, 64->128 @56x56: 1.9 -> 2.4 ms) and nothing measurable on big ones.
``convlab info`` shows the setting.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
SHORT_SPIN = "4"  # OpenBLAS's minimum: 2**4 cycles

if "numpy" not in sys.modules:  # later, OpenBLAS has read it already
    os.environ.setdefault(VARIABLE, SHORT_SPIN)


def describe() -> str:
    """One line for ``convlab info``."""
    value = os.environ.get(VARIABLE)
    if value is None:
        return ("OpenBLAS idle threads: spin ~0.1 s after each GEMM (NumPy was loaded before "
                f"convlab; set {VARIABLE}=4 before starting Python to change it)")
    return f"OpenBLAS idle threads: spin 2**{value} cycles after each GEMM ({VARIABLE}={value})"

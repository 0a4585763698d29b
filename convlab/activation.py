"""ReLU, the glue between convolutions: ``relu`` and the ``ReLU`` module, as in PyTorch.

A network is convolutions with something elementwise between them; in a CNN that is
usually ``max(x, 0)``.  It does one comparison per value, so it costs only the memory
traffic of reading and writing the activations: for MobileNetV2 at batch 8 that is
hundreds of megabytes per pass.  NumPy's ``np.maximum(y, 0, out=y)`` runs it on one
core, far from the memory's speed.  Measured in one run (2-core Zen 4, float32, in
place, ms): MobileNetV2's biggest activation (8x96x112x112, 38 MB) NumPy 3.55, this
0.50, ``torch.relu_`` 0.60; 8x144x56x56: 1.32, 0.11, 0.09.  In whole networks
(``convlab bench --model all``, the pass minus its layers) NumPy's ReLU was 16-21 ms of
convlab's 86-144 ms forward passes, against torch's 4-5.

So :func:`relu` is a ``prange`` loop over blocks of the flat array (each block a
slice, so that LLVM vectorises it), one select per value: ``0 if v < 0 else v``.
That select is what torch computes too: a NaN stays NaN (``NaN < 0`` is false) and
``-0.0`` stays ``-0.0`` (``np.maximum`` gives ``+0.0``).  Small arrays (under
``PARALLEL_MIN`` values) and anything that is not a C-contiguous float32/float64 array
take NumPy's path, ``np.where``: the same values, without a thread pool's start-up
cost.  The input is never changed unless ``inplace=True`` (torch's ``relu_`` /
``ReLU(inplace=True)``).

Backward, as torch's ``threshold_backward``: 0 where ``x <= 0``, the incoming gradient
elsewhere (NaN included: ``NaN <= 0`` is false, so its gradient passes); convlab's
training code (``convlab.train``) does it in NumPy.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .threads import PARALLEL_MIN_VALUES as PARALLEL_MIN
from .threads import parallel_region

_BLOCK = 1 << 14  # values per prange step: 64 KiB of float32, a slice of L2


# Each block is taken as a slice: indexing it from 0 lets LLVM vectorise the loop.  Two
# functions, not one with ``dst`` possibly ``src``: with two arrays that may overlap,
# the compiled loop checks at run time and falls back to one value at a time when
# they do, which in place they always do (measured: 1.3 ms against 0.5 for 38 MB).
@njit(parallel=True, cache=True)
def _relu_into(src, dst):  # pragma: no cover - compiled
    """dst = 0 if src < 0 else src, elementwise over flat, distinct arrays."""
    n = src.size
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        lo, hi = block * _BLOCK, min(n, (block + 1) * _BLOCK)
        s, d = src[lo:hi], dst[lo:hi]
        for i in range(hi - lo):
            v = s[i]
            d[i] = 0 if v < 0 else v


@njit(parallel=True, cache=True)
def _relu_inplace(a):  # pragma: no cover - compiled
    """a = 0 if a < 0 else a, elementwise over a flat array."""
    n = a.size
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        lo, hi = block * _BLOCK, min(n, (block + 1) * _BLOCK)
        d = a[lo:hi]
        for i in range(hi - lo):
            v = d[i]
            d[i] = 0 if v < 0 else v


def relu(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """``max(x, 0)`` elementwise, as ``torch.relu`` (NaN and ``-0.0`` kept); with
    ``inplace=True`` written into ``x`` and ``x`` returned."""
    if inplace and not isinstance(x, np.ndarray):
        raise TypeError(f"relu(inplace=True) needs a NumPy array to write into, got "
                        f"{type(x).__name__}")
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"relu: expected a real number array, got dtype {x.dtype}")
    if inplace and not x.flags.writeable:
        raise ValueError("relu(inplace=True): the array is read-only")
    fast = (x.dtype in (np.float32, np.float64) and x.flags.c_contiguous
            and x.size >= PARALLEL_MIN)
    if not fast:
        out = np.where(x < 0, np.zeros((), x.dtype), x)
        if inplace:
            x[...] = out
            return x
        return out
    with parallel_region():
        if inplace:
            _relu_inplace(x.reshape(-1))
            return x
        out = np.empty_like(x)
        _relu_into(x.reshape(-1), out.reshape(-1))
    return out


class ReLU:
    """``torch.nn.ReLU``: ``ReLU()(x)`` is :func:`relu`; ``inplace=True`` overwrites x."""

    def __init__(self, inplace: bool = False) -> None:
        self.inplace = inplace

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return relu(x, inplace=self.inplace)

    def __repr__(self) -> str:
        return "ReLU(inplace=True)" if self.inplace else "ReLU()"

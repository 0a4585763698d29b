"""Two whole-array checks a call makes before any kernel runs, in one pass each.

``algo="auto"`` asks :func:`all_finite` whether an input, weight or bias holds a NaN or
an Inf (``convlab.plan``), and a layer's weight cache asks :func:`same_bits` whether the
weight still has the bits its Winograd transform was made from (``convlab.functional``).
Both read every value; NumPy's ``np.isfinite(a).all()`` and ``np.array_equal`` also
write a boolean array as large as the input and read it again, on one core.  For
ResNet-18's 512x512x3x3 weight (9.4 MB) that was 0.5 and 0.7 ms per call, beside a
7-8 ms convolution.

Here each is one read of the bits, OR-reduced in blocks over Numba's threads, with no
temporary: a float is NaN or Inf exactly when its exponent bits are all ones, so
``(bits & EXP) == EXP`` flags it (integer operations: they vectorise, and no
floating-point comparison can be optimised away); two arrays have the same bits when
the OR of their XORs is zero (NaN-safe: NaN payloads compare as bits, and ``-0.0``
differs from ``0.0``, as a weight cache must see them).  Arrays under ``PARALLEL_MIN``
values (starting the threads would cost more), strided ones and those in the other byte
order take NumPy's path.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .threads import PARALLEL_MIN_VALUES as PARALLEL_MIN
from .threads import parallel_region

_BLOCK = 1 << 14  # values per prange step
# the exponent field of float32 / float64, read as unsigned integers
_EXPONENT = {4: np.uint32(0x7F800000), 8: np.uint64(0x7FF0000000000000)}


@njit(parallel=True, cache=True)
def _any_exponent_full(bits, exponent):  # pragma: no cover - compiled
    """Whether any value of ``bits`` (a float array seen as unsigned) is NaN or Inf."""
    n = bits.size
    blocks = (n + _BLOCK - 1) // _BLOCK
    found = np.zeros(blocks, np.uint8)
    for blk in prange(blocks):
        lo, hi = blk * _BLOCK, min(n, (blk + 1) * _BLOCK)
        s = bits[lo:hi]
        flag = 0
        for i in range(hi - lo):
            flag |= (s[i] & exponent) == exponent
        found[blk] = flag
    return found.any()


@njit(parallel=True, cache=True)
def _any_difference(a, b):  # pragma: no cover - compiled
    """Whether two same-sized unsigned arrays differ anywhere."""
    n = a.size
    blocks = (n + _BLOCK - 1) // _BLOCK
    found = np.zeros(blocks, np.uint8)
    for blk in prange(blocks):
        lo, hi = blk * _BLOCK, min(n, (blk + 1) * _BLOCK)
        s, t = a[lo:hi], b[lo:hi]
        diff = s[0] ^ s[0]  # zero of the arrays' type
        for i in range(hi - lo):
            diff |= s[i] ^ t[i]
        found[blk] = diff != 0
    return found.any()


def _fast(a: np.ndarray) -> bool:
    """Big, C-contiguous, 4- or 8-byte values in this machine's byte order (the bit
    tests read them as native unsigned integers)."""
    return (a.size >= PARALLEL_MIN and a.flags.c_contiguous and a.dtype.isnative
            and a.dtype.itemsize in _EXPONENT)


def all_finite(a: np.ndarray) -> bool:
    """No NaN and no Inf in the float array ``a`` (or anything ``np.asarray`` takes)."""
    a = np.asarray(a)
    if not (_fast(a) and a.dtype.kind == "f"):
        return bool(np.isfinite(a).all())
    uint = np.dtype(f"u{a.itemsize}")
    with parallel_region():
        return not _any_exponent_full(a.reshape(-1).view(uint), _EXPONENT[a.itemsize])


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` have the same shape, dtype and bits."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    uint = np.dtype(f"u{a.itemsize}")
    if not (_fast(a) and b.flags.c_contiguous):
        return bool(np.array_equal(a.view(uint), b.view(uint)))
    with parallel_region():
        return not _any_difference(a.reshape(-1).view(uint), b.reshape(-1).view(uint))

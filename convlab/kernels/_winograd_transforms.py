"""Winograd transforms for F(2,3), F(4,3), F(6,3): the matrices, and the same maths written out.

For an m x m output tile and a 3x3 filter g, Winograd's minimal filtering
(Lavin & Gray 2016, arXiv 1509.09308) computes, on an input tile d of
alpha x alpha = (m+2) x (m+2) pixels,

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* is element-wise)

The F(2,3) and F(4,3) matrices are Lavin & Gray's (as in their Table 1 and
wincnn, the points 0, +-1 and 0, +-1, +-2); F(6,3) uses the points
0, +-1, +-2, +-1/2 (as NNPACK and wincnn do).  ``tests/test_winograd.py``
checks the identity above in float64 for each set, and that each written-out
transform below is exactly its matrix.

Why written out instead of ``B.T @ d @ B``: the matrices are mostly zeros
and small powers of two, and their rows come in +/- pairs that share partial
sums, so ``bt4`` costs 12 adds and 6 multiplies per column where a 6x6 matrix
product costs 36 multiply-adds.

Each function transforms many columns at once: ``s`` is (rows_in, L) and
``d`` is (rows_out, L), and column ``t`` of ``d`` is the transform of column
``t`` of ``s``.  The loop over ``t`` runs along memory, so LLVM turns it into
SIMD code (8 float32 columns per AVX2 instruction).  The 2-D transform is
this 1-D one applied down the columns of a tile, then along its rows.

Constants are made in the array's own precision (``f = s.dtype.type``):
Numba types a bare ``4`` or ``5.25`` as 64-bit, which would silently turn
float32 arithmetic into float64 arithmetic at half the SIMD width.

Editing this file?  Numba's on-disk cache of the kernels in ``winograd.py``
holds a compiled copy of these functions and does not notice changes here
(it only watches the file a cached function lives in).  After an edit, delete
``convlab/kernels/__pycache__/winograd.*`` (or run with ``NUMBA_CACHE_DIR``
pointing to an empty directory).  ``tests/test_winograd.py`` checks these
functions against their matrices directly, so a broken edit fails there even
with a stale cache.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _mat(*rows: list[float]) -> np.ndarray:
    out = np.array(rows, dtype=np.float64)
    out.flags.writeable = False
    return out


# m -> (B^T, G, A^T)
MATRICES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    2: (_mat([1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]),
        _mat([1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]),
        _mat([1, 1, 1, 0], [0, 1, -1, -1])),
    4: (_mat([4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
             [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]),
        _mat([1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
             [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]),
        _mat([1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
             [0, 1, -1, 8, -8, 1])),
    6: (_mat([1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0], [0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0],
             [0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0], [0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0],
             [0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0], [0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0],
             [0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0], [0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1]),
        _mat([1, 0, 0], [-2 / 9, -2 / 9, -2 / 9], [-2 / 9, 2 / 9, -2 / 9],
             [1 / 90, 1 / 45, 2 / 45], [1 / 90, -1 / 45, 2 / 45],
             [32 / 45, 16 / 45, 8 / 45], [32 / 45, -16 / 45, 8 / 45], [0, 0, 1]),
        _mat([1, 1, 1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1 / 2, -1 / 2, 0],
             [0, 1, 1, 4, 4, 1 / 4, 1 / 4, 0], [0, 1, -1, 8, -8, 1 / 8, -1 / 8, 0],
             [0, 1, 1, 16, 16, 1 / 16, 1 / 16, 0], [0, 1, -1, 32, -32, 1 / 32, -1 / 32, 1])),
}


# ---------------------------------------------------------------- F(2x2, 3x3), alpha = 4
@njit(cache=True)
def bt2(s, d):
    """d = B^T s (4 rows -> 4): adds only."""
    for t in range(s.shape[1]):
        d[0, t] = s[0, t] - s[2, t]
        d[1, t] = s[1, t] + s[2, t]
        d[2, t] = s[2, t] - s[1, t]
        d[3, t] = s[1, t] - s[3, t]


@njit(cache=True)
def g2(s, d):
    """d = G s (3 rows -> 4)."""
    half = s.dtype.type(0.5)
    for t in range(s.shape[1]):
        even = half * (s[0, t] + s[2, t])
        odd = half * s[1, t]
        d[0, t] = s[0, t]
        d[1, t] = even + odd
        d[2, t] = even - odd
        d[3, t] = s[2, t]


@njit(cache=True)
def at2(s, d):
    """d = A^T s (4 rows -> 2)."""
    for t in range(s.shape[1]):
        d[0, t] = s[0, t] + s[1, t] + s[2, t]
        d[1, t] = s[1, t] - s[2, t] - s[3, t]


# ---------------------------------------------------------------- F(4x4, 3x3), alpha = 6
@njit(cache=True)
def bt4(s, d):
    """d = B^T s (6 rows -> 6): rows 1/2 and 3/4 are +/- pairs sharing partial sums."""
    f = s.dtype.type
    two, four, five = f(2), f(4), f(5)
    for t in range(s.shape[1]):
        s0, s1, s2, s3, s4, s5 = s[0, t], s[1, t], s[2, t], s[3, t], s[4, t], s[5, t]
        even, odd = s4 - four * s2, s3 - four * s1  # rows 1, 2
        d[0, t] = four * s0 - five * s2 + s4
        d[1, t] = even + odd
        d[2, t] = even - odd
        even, odd = s4 - s2, two * (s3 - s1)  # rows 3, 4
        d[3, t] = even + odd
        d[4, t] = even - odd
        d[5, t] = four * s1 - five * s3 + s5


@njit(cache=True)
def g4(s, d):
    """d = G s (3 rows -> 6)."""
    f = s.dtype.type
    for t in range(s.shape[1]):
        s0, s1, s2 = s[0, t], s[1, t], s[2, t]
        d[0, t] = s0 / f(4)
        even, odd = -(s0 + s2) / f(6), s1 / f(6)
        d[1, t] = even - odd
        d[2, t] = even + odd
        even, odd = s0 / f(24) + s2 / f(6), s1 / f(12)
        d[3, t] = even + odd
        d[4, t] = even - odd
        d[5, t] = s2


@njit(cache=True)
def at4(s, d):
    """d = A^T s (6 rows -> 4)."""
    f = s.dtype.type
    two, four, eight = f(2), f(4), f(8)
    for t in range(s.shape[1]):
        sum12, dif12 = s[1, t] + s[2, t], s[1, t] - s[2, t]
        sum34, dif34 = s[3, t] + s[4, t], s[3, t] - s[4, t]
        d[0, t] = s[0, t] + sum12 + sum34
        d[1, t] = dif12 + two * dif34
        d[2, t] = sum12 + four * sum34
        d[3, t] = dif12 + eight * dif34 + s[5, t]


# F(4x4, 3x3)'s transposes, for the weight gradient (winograd_grad_weight.py):
# dg = G^T [ (A dY A^T) * (B^T d B) ] G
@njit(cache=True)
def a4(s, d):
    """d = A s (4 rows -> 6): the transpose of ``at4``, rows 1/2 and 3/4 +/- pairs."""
    f = s.dtype.type
    two, four, eight = f(2), f(4), f(8)
    for t in range(s.shape[1]):
        s0, s1, s2, s3 = s[0, t], s[1, t], s[2, t], s[3, t]
        d[0, t] = s0
        even, odd = s0 + s2, s1 + s3
        d[1, t] = even + odd
        d[2, t] = even - odd
        even, odd = s0 + four * s2, two * s1 + eight * s3
        d[3, t] = even + odd
        d[4, t] = even - odd
        d[5, t] = s3


@njit(cache=True)
def gt4(s, d):
    """d = G^T s (6 rows -> 3): the transpose of ``g4``."""
    f = s.dtype.type
    for t in range(s.shape[1]):
        sum12, dif12 = s[1, t] + s[2, t], s[2, t] - s[1, t]
        sum34, dif34 = s[3, t] + s[4, t], s[3, t] - s[4, t]
        d[0, t] = s[0, t] / f(4) - sum12 / f(6) + sum34 / f(24)
        d[1, t] = dif12 / f(6) + dif34 / f(12)
        d[2, t] = (sum34 - sum12) / f(6) + s[5, t]


# ---------------------------------------------------------------- F(6x6, 3x3), alpha = 8
@njit(cache=True)
def bt6(s, d):
    """d = B^T s (8 rows -> 8): three +/- row pairs, each an even part +/- an odd part."""
    f = s.dtype.type
    for t in range(s.shape[1]):
        s0, s1, s2, s3 = s[0, t], s[1, t], s[2, t], s[3, t]
        s4, s5, s6, s7 = s[4, t], s[5, t], s[6, t], s[7, t]
        d[0, t] = s0 - s6 + f(5.25) * (s4 - s2)
        d[7, t] = s7 - s1 + f(5.25) * (s3 - s5)
        even, odd = s2 + s6 - f(4.25) * s4, s1 + s5 - f(4.25) * s3
        d[1, t] = even + odd
        d[2, t] = even - odd
        even = f(0.25) * s2 - f(1.25) * s4 + s6
        odd = f(0.5) * s1 - f(2.5) * s3 + f(2) * s5
        d[3, t] = even + odd
        d[4, t] = even - odd
        even = f(4) * s2 - f(5) * s4 + s6
        odd = f(2) * s1 - f(2.5) * s3 + f(0.5) * s5
        d[5, t] = even + odd
        d[6, t] = even - odd


@njit(cache=True)
def g6(s, d):
    """d = G s (3 rows -> 8)."""
    f = s.dtype.type
    for t in range(s.shape[1]):
        s0, s1, s2 = s[0, t], s[1, t], s[2, t]
        d[0, t] = s0
        even, odd = f(-2 / 9) * (s0 + s2), f(-2 / 9) * s1
        d[1, t] = even + odd
        d[2, t] = even - odd
        even, odd = s0 / f(90) + s2 * f(2 / 45), s1 / f(45)
        d[3, t] = even + odd
        d[4, t] = even - odd
        even, odd = s0 * f(32 / 45) + s2 * f(8 / 45), s1 * f(16 / 45)
        d[5, t] = even + odd
        d[6, t] = even - odd
        d[7, t] = s2


@njit(cache=True)
def at6(s, d):
    """d = A^T s (8 rows -> 6): powers of 2 and of 1/2 on the pairs (1,2), (3,4), (5,6)."""
    f = s.dtype.type
    for t in range(s.shape[1]):
        sa, da = s[1, t] + s[2, t], s[1, t] - s[2, t]
        sb, db = s[3, t] + s[4, t], s[3, t] - s[4, t]
        sc, dc = s[5, t] + s[6, t], s[5, t] - s[6, t]
        d[0, t] = s[0, t] + sa + sb + sc
        d[1, t] = da + f(2) * db + f(0.5) * dc
        d[2, t] = sa + f(4) * sb + f(0.25) * sc
        d[3, t] = da + f(8) * db + f(0.125) * dc
        d[4, t] = sa + f(16) * sb + f(0.0625) * sc
        d[5, t] = da + f(32) * db + f(0.03125) * dc + s[7, t]


# ---------------------------------------------------------------- pick by m
# Numba compiles one function for all three variants and branches on m once per
# call (a call transforms a whole block of columns, so the branch costs nothing).
# Passing the transform itself as an argument would work too, but Numba cannot
# cache functions that take functions, and every process would recompile.
@njit(cache=True)
def bt(m, s, d):
    """d = B^T s for F(m x m, 3 x 3)."""
    if m == 2:
        bt2(s, d)
    elif m == 4:
        bt4(s, d)
    else:
        bt6(s, d)


@njit(cache=True)
def g(m, s, d):
    """d = G s for F(m x m, 3 x 3)."""
    if m == 2:
        g2(s, d)
    elif m == 4:
        g4(s, d)
    else:
        g6(s, d)


@njit(cache=True)
def at(m, s, d):
    """d = A^T s for F(m x m, 3 x 3)."""
    if m == 2:
        at2(s, d)
    elif m == 4:
        at4(s, d)
    else:
        at6(s, d)


# m -> the written-out (B^T, G, A^T), for tests and teaching
TRANSFORMS = {2: (bt2, g2, at2), 4: (bt4, g4, at4), 6: (bt6, g6, at6)}

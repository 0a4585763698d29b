"""Winograd's weight gradient: F(4x4, 3x3) read backwards (Lavin & Gray 2016, section 5).

The forward (``winograd.py``) computes a 4x4 output tile of one (c, k) pair as

    Y = A^T [ (G g G^T) * (B^T d B) ] A            (* element-wise, 6x6 inside)

with d the tile's 6x6 input, g the 3x3 filter.  Y is *linear in g*, so the weight
gradient follows by transposing each matrix (the transposition principle): for an
output-gradient tile dY (4x4), the tile's contribution to dL/dg is

    dg = G^T [ (A dY A^T) * (B^T d B) ] G           (6x6 inside, 3x3 out)

Check it in 1-D: sum_i dY_i Y_i = sum_xi (A dY)_xi (G g)_xi (B^T d)_xi, whose
gradient in g is G^T [(A dY) * (B^T d)].  So the *same* input transform V = B^T d B
as the forward's, over the same 4x4 tiling of the output (tile t reads padded rows
4i..4i+5 and columns 4j..4j+5), meets the output gradient's transform W = A dY A^T,
and summing over every tile of every image, per position xi of the 6x6 grid:

    M[xi] (K x C) = W[xi] (K x tiles) @ V[xi]^T (tiles x C)      36 GEMMs
    grad_weight[k, c] = G^T M[:, k, c] G                          once per (k, c)

Cost: 36 multiply-adds per tile of 16 output positions and (c, k) pair, where the
direct sum spends 9 per position: 144 -> 36, 4x fewer, all of them in 36 long BLAS
GEMMs (a reduction over N*Ho*Wo/16 tiles).  The transforms are O(C + K) per tile,
memory-bound passes that write 36/16 = 2.25 times the input and the output gradient.
Edge tiles read zeros past the input and past grad_output's Ho x Wo corner (a zero
output gradient adds nothing), so any H and W work; at 7x7 the 2x2 tiles of 4x4
cover 8x8 positions, 31 % more than the direct sum's 49.

Stages (each a ``prange`` over channels or GEMMs, one parallel region at a time):

1. ``_input_transform``: V[xi, c, t] for a chunk of tile rows;
2. ``_grad_transform``: W[xi, k, t], the same for grad_output with A;
3. ``_products``: one task per block of output channels (and group) runs its 36 GEMMs,
   one-thread BLAS each (as every GEMM in convlab: OpenBLAS's threads are never woken,
   docs/design.md "Concurrency"), adding to its rows of M chunk after chunk; after the
   last chunk the same task turns its rows of M into the weight gradient,
   G^T M G (``_filter_rows``), while they are still in its cache.  Every value is
   summed by one task in a fixed order: deterministic, race-free, one weight-sized M
   (36 values per weight tap pair) whatever the thread count.

Along a row the transforms gather each tile's values from the row (``_bt4_tiles``,
``_a4_tiles``: the gather fused with the arithmetic, scalar code); down the columns
they are ``_winograd_transforms.bt4`` / ``a4`` on contiguous rows of all the block's
tiles at once, one SIMD loop each; ``_filter_rows`` likewise ends in ``gt4``.

Chunks: the tile rows (n, i) are cut so that V and W stay under ``CHUNK_BYTES`` and the
workspace cap (``kernels.im2col.workspace_cap``); one tile row is the least a chunk
holds.  V, W and M are scratch kept between calls (``winograd.py``'s, per Python thread).

Numerics: A multiplies grad_output by up to 8 and B^T the input by up to 5, G^T divides
back by up to 24: measured float32 max error / max|result| on ResNet-18's 3x3 layers
(batch 8, random normal data) 3e-6 (512@7) to 1.3e-5 (128@28), against 1e-7 to 2e-7
for ``parallel``'s direct sums (the tests' tolerance is polyphase's rtol, 5e-5).
Overflow comes sooner than in the direct sum: the transforms scale values up (B^T d B
by up to 100, A dY A^T by up to 225) before they are multiplied, so float32 inputs
near 1e36 can give Inf where the direct kernels stay finite.  NaN/Inf: V mixes a
tile's pixels, so a NaN or Inf pixel reaches every tap of the weight gradient, where
the direct sum may leave an edge tap finite; ``algo="auto"`` scans the arrays and,
finding one, runs an exact kernel.

Limits: 3x3 kernels, stride 1, dilation 1 (``supports``); any padding (zero padding
read as zeros; other modes arrive pre-padded), groups, float32/float64.
Used by the ``polyphase`` grad_weight kernel (``polyphase_backward.py``) for those
layers: the backward through the forward's fast algorithm, as its grad_input is.

Source: A. Lavin, S. Gray, "Fast Algorithms for Convolutional Neural Networks" (2016),
section 5 ("the filter gradient ... F(3x3, ...)" from the forward's transforms);
the transposition principle: Bürgisser, Clausen, Shokrollahi, Algebraic Complexity
Theory, ch. 13.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import parallel_region, single_threaded_blas
from ._winograd_transforms import a4, bt4, gt4
from .im2col import get_workspace_cap
from .winograd import _scratch_memory
from .winograd import _supports as winograd_supports

M_TILE = 4  # output positions per tile side: F(4x4, 3x3)
ALPHA = M_TILE + 2  # the transform grid, 6x6


def supports(spec: ConvSpec) -> bool:
    """Whether this algorithm computes ``spec``'s weight gradient: the forward
    Winograd's layers (3x3, stride 1, dilation 1)."""
    return winograd_supports(spec) is None


def workspace_bytes(spec: ConvSpec, itemsize: int) -> int:
    """V and W for the biggest chunk, and M."""
    rows = _rows_per_chunk(spec, itemsize)
    tw = -(-spec.out_width // M_TILE)
    cg = spec.in_channels // spec.groups
    return ALPHA * ALPHA * ((spec.in_channels + spec.out_channels) * rows * tw
                            + spec.out_channels * cg) * itemsize


# V and W of one chunk, at most: kept between calls as scratch (``winograd.py``'s: fresh
# pages cost a page fault each), and a big batch's chunks reuse the same pages.
CHUNK_BYTES = 32 * 2**20


def _rows_per_chunk(spec: ConvSpec, itemsize: int) -> int:
    """Tile rows per chunk: V and W (36 values per tile and channel) under CHUNK_BYTES
    and the workspace cap."""
    tw = -(-spec.out_width // M_TILE)
    per_row = ALPHA * ALPHA * (spec.in_channels + spec.out_channels) * tw * itemsize
    return max(1, min(CHUNK_BYTES, get_workspace_cap()) // max(1, per_row))


# Output channels per task of :func:`_products`: its rows of M (36 x rows x C/groups)
# stay within this many bytes, so its filter transform reads them from the cache.
BLOCK_BYTES = 4 * 2**20


def _block_rows(kg: int, groups: int, cg: int, itemsize: int, threads: int) -> int:
    """Rows per task: blocks of at most BLOCK_BYTES of M, at least ``threads`` tasks in
    all where the rows allow, their count a multiple of ``threads`` (equal shares)."""
    fit = max(1, BLOCK_BYTES // max(1, ALPHA * ALPHA * cg * itemsize))
    blocks = max(-(-kg // fit), -(-threads // groups), 1)
    if groups < threads:
        blocks = -(-blocks // max(1, threads // groups)) * max(1, threads // groups)
    return max(1, -(-kg // min(max(kg, 1), blocks)))


def grad_weight_winograd(x: np.ndarray, grad_output: np.ndarray,
                         spec: ConvSpec) -> np.ndarray:
    """dL/dweight of a 3x3 stride-1 layer (module docstring): ``x`` (N, C, H, W)
    unpadded, ``grad_output`` (N, K, Ho, Wo); returns (K, C/groups, 3, 3)."""
    g, k_out = spec.groups, spec.out_channels
    cg, kg = spec.in_channels // g, k_out // g
    th, tw = -(-spec.out_height // M_TILE), -(-spec.out_width // M_TILE)
    if 0 in (th, tw, spec.batch):  # no output position: the empty sum
        return np.zeros((k_out, cg, 3, 3), dtype=x.dtype)
    grid = ALPHA * ALPHA
    m = _scratch_memory("gw.M", grid * k_out * cg, x.dtype).reshape(grid, g, kg, cg)
    out = np.zeros((k_out, cg, 3, 3), dtype=x.dtype)  # zeros: no tile, no gradient
    kb = _block_rows(kg, g, cg, x.dtype.itemsize, numba.get_num_threads())
    total = spec.batch * th
    step = _rows_per_chunk(spec, x.dtype.itemsize)
    top, left = spec.padding[0], spec.padding[2]
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas():
        for r0 in range(0, total, step):
            r1 = min(total, r0 + step)
            tiles = (r1 - r0) * tw
            v = _scratch_memory("gw.V", grid * spec.in_channels * tiles, x.dtype).reshape(
                grid, spec.in_channels, tiles)
            w = _scratch_memory("gw.W", grid * k_out * tiles, x.dtype).reshape(
                grid, k_out, tiles)
            with parallel_region():
                _input_transform(x, v, r0, r1, th, tw, top, left)
            with parallel_region():
                _grad_transform(grad_output, w, r0, r1, th, tw)
            with parallel_region():
                _products(w.reshape(grid, g, kg, tiles), v.reshape(grid, g, cg, tiles), m,
                          out, kb, r0 == 0, r1 == total)
    return out


# Tile rows a transform pass takes at once: its 1-D transforms run over ~BLOCK_COLUMNS
# columns (tiles), long enough for SIMD, while its buffers (36 values per column)
# stay in the core's L2 cache.
BLOCK_COLUMNS = 256


@njit(parallel=True, cache=True)
def _input_transform(x, v, r0, r1, th, tw, top, left):  # pragma: no cover - compiled
    """v[xi, c, t] = (B^T d B)[xi] for tile t of tile rows r0..r1 (row r: image r // th,
    tile row r % th), d read from the input padded by (top, left) and zeros.  Per
    channel and block of tile rows: B^T along the rows of every tile at once (one
    column per tile), then down the columns, each pass one vectorised loop over tiles."""
    h, wid = x.shape[2], x.shape[3]
    span = M_TILE * tw + 2
    lo, hi = left, min(span, left + wid)  # the padded row's columns that hold input
    rb = max(1, BLOCK_COLUMNS // tw)
    cols = rb * tw
    for c in prange(x.shape[1]):
        line = np.zeros(span, dtype=x.dtype)
        part = np.empty((ALPHA, ALPHA, cols), dtype=x.dtype)  # [column xi][row][tile]
        d = np.empty((ALPHA, cols), dtype=x.dtype)
        for b0 in range(r0, r1, rb):
            b1 = min(r1, b0 + rb)
            for i in range(ALPHA):  # along row i of every tile: B^T on its 6 columns
                for r in range(b0, b1):
                    n, ti = r // th, r % th
                    y = M_TILE * ti + i - top
                    if 0 <= y < h and lo < hi:
                        line[lo:hi] = x[n, c, y, :hi - lo]
                    else:
                        line[lo:hi] = 0
                    _bt4_tiles(line, part, i, (r - b0) * tw, tw)
            used = (b1 - b0) * tw
            out0 = (b0 - r0) * tw
            for qc in range(ALPHA):  # down column xi_c of every tile: B^T on its 6 rows
                bt4(part[qc], d)  # contiguous rows: one SIMD loop over the tiles
                for qr in range(ALPHA):
                    v[qr * ALPHA + qc, c, out0:out0 + used] = d[qr, :used]


@njit(parallel=True, cache=True)
def _grad_transform(go, w, r0, r1, th, tw):  # pragma: no cover - compiled
    """w[xi, k, t] = (A dY A^T)[xi] for tile t: dY the 4x4 block of grad_output, zeros
    past its Ho x Wo corner; blocked as :func:`_input_transform`."""
    ho, wo = go.shape[2], go.shape[3]
    span = M_TILE * tw
    rb = max(1, BLOCK_COLUMNS // tw)
    cols = rb * tw
    for k in prange(go.shape[1]):
        line = np.zeros(span, dtype=go.dtype)
        part = np.empty((ALPHA, M_TILE, cols), dtype=go.dtype)  # [column xi][row][tile]
        d = np.empty((ALPHA, cols), dtype=go.dtype)
        for b0 in range(r0, r1, rb):
            b1 = min(r1, b0 + rb)
            for i in range(M_TILE):  # along row i of every tile: A on its 4 columns
                for r in range(b0, b1):
                    n, ti = r // th, r % th
                    y = M_TILE * ti + i
                    if y < ho:
                        line[:wo] = go[n, k, y]
                    else:
                        line[:wo] = 0
                    _a4_tiles(line, part, i, (r - b0) * tw, tw)
            used = (b1 - b0) * tw
            out0 = (b0 - r0) * tw
            for qc in range(ALPHA):  # down column xi_c: A on its 4 rows
                a4(part[qc], d)
                for qr in range(ALPHA):
                    w[qr * ALPHA + qc, k, out0:out0 + used] = d[qr, :used]


@njit(cache=True)
def _bt4_tiles(line, part, i, base, tw):  # pragma: no cover - compiled
    """part[:, i, base + j] = B^T line[4j : 4j+6] for the tw tiles along one padded row
    (the gather and ``bt4`` in one pass: each tile's 6 values are read once)."""
    f = line.dtype.type
    two, four, five = f(2), f(4), f(5)
    for j in range(tw):
        o = M_TILE * j
        s0, s1, s2 = line[o], line[o + 1], line[o + 2]
        s3, s4, s5 = line[o + 3], line[o + 4], line[o + 5]
        t = base + j
        even, odd = s4 - four * s2, s3 - four * s1
        part[0, i, t] = four * s0 - five * s2 + s4
        part[1, i, t] = even + odd
        part[2, i, t] = even - odd
        even, odd = s4 - s2, two * (s3 - s1)
        part[3, i, t] = even + odd
        part[4, i, t] = even - odd
        part[5, i, t] = four * s1 - five * s3 + s5


@njit(cache=True)
def _a4_tiles(line, part, i, base, tw):  # pragma: no cover - compiled
    """part[:, i, base + j] = A line[4j : 4j+4] for the tw tiles along one row of
    grad_output (the gather and ``a4`` in one pass)."""
    f = line.dtype.type
    two, four, eight = f(2), f(4), f(8)
    for j in range(tw):
        o = M_TILE * j
        s0, s1, s2, s3 = line[o], line[o + 1], line[o + 2], line[o + 3]
        t = base + j
        part[0, i, t] = s0
        even, odd = s0 + s2, s1 + s3
        part[1, i, t] = even + odd
        part[2, i, t] = even - odd
        even, odd = s0 + four * s2, two * s1 + eight * s3
        part[3, i, t] = even + odd
        part[4, i, t] = even - odd
        part[5, i, t] = s3


@njit(parallel=True, cache=True)
def _products(w4, v4, m, out, kb, first, last):  # pragma: no cover - compiled
    """m[xi, grp, block] (+)= w4[xi, grp, block] @ v4[xi, grp].T for the 36 xi, one task
    per (group, block of ``kb`` output channels), a one-thread BLAS GEMM each; after the
    last chunk the task turns its rows of M into the weight gradient while they are
    still in the cache (``_filter_rows``)."""
    groups, kg = w4.shape[1], w4.shape[2]
    blocks = (kg + kb - 1) // kb
    for t in prange(groups * blocks):
        grp, k0 = t // blocks, (t % blocks) * kb
        k1 = min(kg, k0 + kb)
        for xi in range(w4.shape[0]):
            if first:
                np.dot(w4[xi, grp, k0:k1], v4[xi, grp].T, m[xi, grp, k0:k1])
            else:
                m[xi, grp, k0:k1] += np.dot(w4[xi, grp, k0:k1], v4[xi, grp].T)
        if last:
            _filter_rows(m, grp, k0, k1, out, grp * kg + k0)


@njit(cache=True)
def _filter_rows(m, grp, k0, k1, out, k_first):  # pragma: no cover - compiled
    """out[k_first + k - k0, c] = G^T m[:, grp, k, c] G (6x6 -> 3x3) for rows k0..k1 of
    group ``grp``, every c of a row at once: along the grid's rows ``gt4``'s sums written
    out (M's rows for one k are 36 planes apart), then down the columns ``gt4`` itself on
    contiguous rows (SIMD)."""
    cg = m.shape[3]
    f = m.dtype.type
    q4, q6, q12, q24 = f(1 / 4), f(1 / 6), f(1 / 12), f(1 / 24)
    a = np.empty((3, ALPHA, cg), dtype=m.dtype)  # [tap column][grid row][c]
    b = np.empty((3, 3, cg), dtype=m.dtype)  # [tap column][tap row][c]
    for k in range(k0, k1):
        for i in range(ALPHA):  # along grid row i: G^T on its 6 columns
            r = ALPHA * i
            for c in range(cg):
                s0, s1, s2 = m[r, grp, k, c], m[r + 1, grp, k, c], m[r + 2, grp, k, c]
                s3, s4, s5 = m[r + 3, grp, k, c], m[r + 4, grp, k, c], m[r + 5, grp, k, c]
                sum12, dif12, sum34, dif34 = s1 + s2, s2 - s1, s3 + s4, s3 - s4
                a[0, i, c] = s0 * q4 - sum12 * q6 + sum34 * q24
                a[1, i, c] = dif12 * q6 + dif34 * q12
                a[2, i, c] = (sum34 - sum12) * q6 + s5
        for q in range(3):  # down tap column q: G^T on the 6 grid rows
            gt4(a[q], b[q])
        row = k_first + k - k0
        for c in range(cg):
            for p in range(3):
                for q in range(3):
                    out[row, c, p, q] = b[q, p, c]

"""im2col + GEMM: turn the convolution into one big matrix product.

Algorithm.  Every output pixel is a dot product of the weight row of its output
channel with the ``(C/groups) * kh * kw`` input values under its window.  Copy
those values ("lower" the input) into a column matrix, one column per output
pixel, and the whole convolution becomes a matrix product that BLAS does at
close to the machine's peak::

    cols[(c, p, q), (n, i, j)] = x[n, c, i*sh + p*dh - top, j*sw + q*dw - left]  (0 off the edge)
    out[n, k, i, j]            = W[k, (c, p, q)] @ cols[(c, p, q), (n, i, j)]      per group

Layout.  ``W`` is the weight reshaped to (K, C/groups*kh*kw) (no copy: it already
is that matrix in row-major order).  For one image the product
``W_g (K/g, Cg*kh*kw) @ cols_g (Cg*kh*kw, Ho*Wo)`` is (K/g, Ho*Wo): exactly that
image's output block in NCHW, so BLAS writes straight into the output, no
transpose.  When one image gives a thin matrix (7x7 output = 49 columns, where
BLAS cannot reach speed) several images are lowered side by side and one GEMM
covers them all; its (K/g, images*Ho*Wo) result is then copied into NCHW by a
Numba pass that adds the bias on the way (``MIN_GEMM_COLUMNS`` decides).

Steps (each measured; see scripts/bench_cpu.py):

1. ``_lower`` (``@njit(parallel=True)``) fills ``cols``; one row (c, p, q) per
   prange iteration, each a run of contiguous copies with the zero-padding
   decided per row, so there is no bounds test in the copy loop and no padded
   copy of the input.
2. One GEMM per group, ``numpy.matmul`` outside Numba, i.e. OpenBLAS's sgemm/dgemm
   on all cores (no SciPy needed).
3. The bias is added in the same Numba pass that moves the GEMM result into
   NCHW, or, when BLAS wrote into the output directly, right after that image's
   GEMM while its output is still in cache.
4. A 1x1, stride-1, unpadded convolution needs no lowering at all: the input
   image *is* its column matrix, so the GEMM runs on it directly.
5. Grouped convolutions whose per-group product is tiny (depthwise:
   ``(1 x 9) @ (9 x Ho*Wo)`` per channel) would spend their time in BLAS call
   overhead; below ``SMALL_GEMM_MACS`` multiply-adds per output column they use a
   short Numba loop instead, vectorised over the columns.  Still the same
   lowering and the same product, just not through BLAS.

Cost.  The GEMM does the N*K*(C/g)*kh*kw*Ho*Wo multiply-adds of direct
convolution; the price is memory: the column matrix holds ``kh*kw`` times as
many values as the output-sized input (:func:`blowup`, 9x for 3x3), and
writing then re-reading it is traffic direct convolution never pays.  On a
2-core box that copy is ~10-25% of the time of a ResNet 3x3 layer.

Workspace.  Bounded: the batch is processed in chunks of images (and one big
image in bands of output rows) so that the column matrix plus the GEMM staging
buffer never exceeds the cap, 256 MiB by default.  One output row of one image
is the smallest chunk, so a cap below that is exceeded by that much.  Change it
with :func:`set_workspace_cap` or, for one block of code, ``with
workspace_cap(nbytes): ...``.  :func:`workspace_bytes` (registered as the
kernel's ``workspace``) says what a spec will allocate, :func:`plan` how it is
chunked.

Limits: none; every stride, padding, dilation and group count, float32 and
float64.  Numerics: BLAS sums in its own (blocked, FMA) order, deterministic for
a given BLAS build and thread count.

``algo="auto"`` rank 20: measured on a 2-core AMD EPYC (Zen 3) at batch 8, it
beats ``parallel`` on every layer with a reduction of at least
``AUTO_MIN_REDUCTION`` products per output (the GEMM is then compute-bound);
below that (depthwise, tiny channel counts) the lowering dominates and the
direct ``parallel`` kernel wins, so auto leaves those to it.

Source: K. Chellapilla, S. Puri, P. Simard, "High Performance Convolutional
Neural Networks for Document Processing" (2006); Caffe's ``im2col_cpu``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from .registry import register

DEFAULT_WORKSPACE_CAP = 256 * 2**20  # bytes
# A GEMM narrower than this many columns runs well below BLAS peak: batch images.
MIN_GEMM_COLUMNS = 512
# Below this many multiply-adds per output column and group, BLAS calls cost more
# than their arithmetic (depthwise 3x3: 9): use the Numba loop.
SMALL_GEMM_MACS = 64
# auto prefers im2col for reductions (C/groups*kh*kw) at least this long.
AUTO_MIN_REDUCTION = 64

_workspace_cap = DEFAULT_WORKSPACE_CAP


def set_workspace_cap(nbytes: int | None) -> int:
    """Set the column-matrix budget in bytes (None: back to the default);
    returns the previous value."""
    global _workspace_cap
    if nbytes is not None and (not isinstance(nbytes, (int, np.integer)) or nbytes < 1):
        raise ValueError(f"workspace cap must be a positive number of bytes, got {nbytes!r}")
    previous = _workspace_cap
    _workspace_cap = DEFAULT_WORKSPACE_CAP if nbytes is None else int(nbytes)
    return previous


def get_workspace_cap() -> int:
    """The current column-matrix budget in bytes."""
    return _workspace_cap


@contextlib.contextmanager
def workspace_cap(nbytes: int | None) -> Iterator[int]:
    """``with workspace_cap(2**20): conv2d(..., algo="im2col")`` runs under a 1 MiB cap."""
    previous = set_workspace_cap(nbytes)
    try:
        yield _workspace_cap
    finally:
        set_workspace_cap(previous)


def blowup(spec: ConvSpec) -> int:
    """How many times each input value is copied into the column matrix: kh*kw
    (roughly: strides skip values, padding adds zeros)."""
    return spec.kernel_size[0] * spec.kernel_size[1]


def column_shape(spec: ConvSpec, images: int = 1) -> tuple[int, int]:
    """Shape of the full column matrix for ``images`` images: (C*kh*kw, images*Ho*Wo)."""
    kh, kw = spec.kernel_size
    return (spec.in_channels * kh * kw, images * spec.out_height * spec.out_width)


@dataclass(frozen=True)
class Plan:
    """How a spec is chunked: ``images`` images per chunk, or, when ``images == 1``,
    possibly ``rows`` output rows of one image per chunk."""

    images: int
    rows: int
    chunks: int
    identity: bool  # 1x1/stride 1/no padding: the input is its own column matrix
    small_gemm: bool  # the Numba loop instead of BLAS (tiny per-group products)
    staged: bool  # the GEMM writes a staging buffer, then copied into NCHW
    workspace: int  # bytes allocated at once (column matrix + staging buffer)


def _is_identity(spec: ConvSpec) -> bool:
    return (spec.kernel_size == (1, 1) and spec.stride == (1, 1)
            and spec.padding == (0, 0, 0, 0))  # fmt: skip


def _is_small(spec: ConvSpec) -> bool:
    kg = spec.out_channels // spec.groups
    return spec.groups > 1 and spec.reduction_length * kg < SMALL_GEMM_MACS


def _column_rows(spec: ConvSpec, small: bool) -> int:
    """Rows of the column matrix as the kernel builds it: C*kh*kw, plus one row of
    ones per group (the bias's row) when the product goes through BLAS."""
    return column_shape(spec)[0] + (0 if small else spec.groups)


def plan(spec: ConvSpec, itemsize: int, cap: int | None = None) -> Plan:
    """The chunking ``conv2d(..., algo="im2col")`` uses for ``spec`` under ``cap`` bytes
    (default: the current cap)."""
    cap = _workspace_cap if cap is None else cap
    n, ho, wo = spec.batch, spec.out_height, spec.out_width
    kg = spec.out_channels // spec.groups
    per_image = ho * wo
    small = _is_small(spec)
    if _is_identity(spec) and not small:
        return Plan(1, ho, n, True, False, False, 0)
    rows_c = _column_rows(spec, small)
    # images per chunk: the small path takes all that fit; the BLAS path enough for
    # MIN_GEMM_COLUMNS columns (more only makes the buffers bigger)
    want = n if small else -(-MIN_GEMM_COLUMNS // per_image)
    staged = not small and want > 1  # several images (or bands) per GEMM: copy back
    per_col = (rows_c + (kg if staged else 0)) * itemsize  # bytes per output column
    images = min(n, want, cap // (per_col * per_image))
    if images >= 1:
        rows, chunks = ho, -(-n // images)
        staged = staged and images > 1
    else:  # one image is over the cap: bands of output rows (at least one)
        staged = not small
        per_col = (rows_c + (kg if staged else 0)) * itemsize
        images, rows = 1, max(1, min(ho, cap // (per_col * wo)))
        chunks = n * -(-ho // rows)
    width = images * rows * wo
    workspace = (rows_c + (kg if staged else 0)) * width * itemsize
    return Plan(images, rows, chunks, False, small, staged, workspace)


def workspace_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Extra bytes the kernel allocates at once for ``spec`` (one chunk)."""
    return plan(spec, itemsize).workspace


def lower(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The whole column matrix (C*kh*kw, N*Ho*Wo) of a batched input: for teaching
    and pictures (small inputs; the kernel itself never builds it whole)."""
    x = np.ascontiguousarray(x).reshape(spec.batch, spec.in_channels, spec.height, spec.width)
    cols = np.empty(column_shape(spec, spec.batch), dtype=x.dtype)
    rg = spec.reduction_length
    _lower(x, cols, 0, spec.batch, 0, spec.out_height, rg, rg, *_geometry(spec))
    return cols


def _auto_when(spec: ConvSpec) -> str | None:
    if spec.reduction_length >= AUTO_MIN_REDUCTION:
        return None
    return (f"reduction (C/groups)*kh*kw = {spec.reduction_length} < {AUTO_MIN_REDUCTION}: "
            "the lowering copy outweighs the GEMM")


def _geometry(spec: ConvSpec) -> tuple[int, ...]:
    return (spec.out_width, spec.kernel_size[0], spec.kernel_size[1], spec.stride[0],
            spec.stride[1], spec.padding[0], spec.padding[2], spec.dilation[0],
            spec.dilation[1])  # fmt: skip


@register("im2col", description="lower to a column matrix, then one BLAS GEMM per group",
          rtol=1e-5, workspace=workspace_bytes, auto_rank=20,
          auto_when=lambda spec: _auto_when(spec), blowup=blowup, plan=plan)  # fmt: skip
def conv2d_im2col(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                  spec: ConvSpec) -> np.ndarray:
    n_batch, k_out, ho, wo = spec.batched_output_shape
    g, rg = spec.groups, spec.reduction_length
    kg = k_out // g
    b = np.zeros(k_out, x.dtype) if bias is None else bias
    out = np.empty(spec.batched_output_shape, dtype=x.dtype)
    out3 = out.reshape(n_batch, k_out, ho * wo)
    pl = plan(spec, x.dtype.itemsize)
    if pl.identity:  # 1x1 stride 1: no lowering, the image is the column matrix
        w2 = weight.reshape(k_out, rg)  # a view: the weight already is this matrix
        x3 = x.reshape(n_batch, spec.in_channels, ho * wo)
        for n in range(n_batch):
            for grp in range(g):
                dst = out3[n, grp * kg:(grp + 1) * kg]
                np.matmul(w2[grp * kg:(grp + 1) * kg], x3[n, grp * rg:(grp + 1) * rg], out=dst)
                dst += b[grp * kg:(grp + 1) * kg, None]  # NumPy, while dst is in cache
        return out
    group_rows = rg if pl.small_gemm else rg + 1
    width = pl.images * pl.rows * wo
    cols = np.empty((g * group_rows, width), dtype=x.dtype)
    if pl.small_gemm:
        wb = weight.reshape(k_out, rg)
    else:
        # the bias as one more weight column, times a row of ones in the columns:
        # BLAS adds it inside the GEMM, no pass of its own
        wb = np.empty((k_out, group_rows), dtype=x.dtype)
        wb[:, :rg] = weight.reshape(k_out, rg)
        wb[:, rg] = b
        cols.reshape(g, group_rows, width)[:, rg, :] = 1
    stage = np.empty((kg, width), dtype=x.dtype) if pl.staged else None
    geom = _geometry(spec)
    for n0 in range(0, n_batch, pl.images):
        nb = min(pl.images, n_batch - n0)
        for i0 in range(0, ho, pl.rows):
            nr = min(pl.rows, ho - i0)
            _lower(x, cols, n0, nb, i0, nr, rg, group_rows, *geom)
            _run_chunk(pl, spec, cols[:, :nb * nr * wo], wb, b, out3, n0, nb, i0 * wo,
                       nr * wo, stage)
    return out


def _run_chunk(pl: Plan, spec: ConvSpec, cols: np.ndarray, wb: np.ndarray, b: np.ndarray,
               out3: np.ndarray, n0: int, nb: int, m0: int, mlen: int,
               stage: np.ndarray | None) -> None:
    """The product of one chunk: images n0..n0+nb, output positions m0..m0+mlen
    (flattened i*Wo+j) of each, from their lowered columns."""
    kg = spec.out_channels // spec.groups
    if pl.small_gemm:
        _small_gemm(wb, cols, out3, b, n0, nb, m0, mlen, kg)
        return
    group_rows = wb.shape[1]
    for grp in range(spec.groups):
        wg = wb[grp * kg:(grp + 1) * kg]
        cg = cols[grp * group_rows:(grp + 1) * group_rows]
        if stage is None:  # one image, all its rows: BLAS writes NCHW directly
            np.matmul(wg, cg, out=out3[n0, grp * kg:(grp + 1) * kg])
        else:  # (kg, images*positions) -> (images, kg, positions): a NumPy copy
            st = stage[:, :cg.shape[1]]
            np.matmul(wg, cg, out=st)
            out3[n0:n0 + nb, grp * kg:(grp + 1) * kg, m0:m0 + mlen] = \
                st.reshape(kg, nb, mlen).transpose(1, 0, 2)


@njit(parallel=True, cache=True)
def _lower(x, cols, n0, nb, i0, nr, rg, group_rows, wo, kh, kw, sh, sw, top, left, dh, dw):
    """cols[row(c,p,q), (b, i, j)] = x[n0+b, c, (i0+i)*sh + p*dh - top, j*sw + q*dw - left]
    for images n0.. and output rows i0.. of a chunk.  Each group has rg = (C/g)*kh*kw
    rows; its block starts at g*group_rows (room for the bias's row of ones)."""
    height, width = x.shape[2], x.shape[3]
    taps = kh * kw
    for row in prange(x.shape[1] * taps):  # rows are independent: one thread per row
        c = row // taps
        p = (row // kw) % kh
        q = row % kw
        dx = q * dw - left  # input column = j*sw + dx
        # output columns whose tap lands inside the input: j_lo <= j < j_hi
        j_lo = min(wo, max(0, (-dx + sw - 1) // sw))
        j_hi = max(j_lo, min(wo, (width - 1 - dx) // sw + 1)) if width - 1 - dx >= 0 else j_lo
        dst = cols[(row // rg) * group_rows + row % rg]
        for b in range(nb):
            for i in range(nr):
                col0 = (b * nr + i) * wo
                y = (i0 + i) * sh + p * dh - top
                if y < 0 or y >= height:  # the whole output row sees padding
                    dst[col0:col0 + wo] = 0
                    continue
                src = x[n0 + b, c, y]
                dst[col0:col0 + j_lo] = 0
                if sw == 1:  # unit stride: a straight copy LLVM turns into vector moves
                    dst[col0 + j_lo:col0 + j_hi] = src[j_lo + dx:j_hi + dx]
                else:
                    for j in range(j_lo, j_hi):
                        dst[col0 + j] = src[j * sw + dx]
                dst[col0 + j_hi:col0 + wo] = 0


@njit(parallel=True, cache=True)
def _small_gemm(w2, cols, out3, bias, n0, nb, m0, mlen, kg):
    """Per-group products too small for BLAS (depthwise): for output channel k of
    group g, out[n, k, m] = bias[k] + sum_r w2[k, r] * cols[g*rg + r, b*mlen + m].
    The inner loop runs over the contiguous columns m so it vectorises."""
    k_out, rg = w2.shape
    for t in prange(nb * k_out):
        b = t // k_out
        k = t % k_out
        g = k // kg
        dst = out3[n0 + b, k, m0:m0 + mlen]
        dst[:] = bias[k]
        for r in range(rg):
            wv = w2[k, r]
            src = cols[g * rg + r, b * mlen:(b + 1) * mlen]
            for m in range(mlen):
                dst[m] += wv * src[m]

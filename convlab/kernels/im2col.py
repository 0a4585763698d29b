"""im2col + GEMM: turn the convolution into one big matrix product.

Algorithm.  Every output pixel is a dot product of the weight row of its output
channel with the ``(C/groups) * kh * kw`` input values under its window.  Copy
those values ("lower" the input) into a column matrix, one column per output
pixel, and the whole convolution becomes a matrix product that BLAS does at
close to the machine's peak::

    cols[(c, p, q), (n, i, j)] = x[n, c, i*sh + p*dh - top, j*sw + q*dw - left]  (0 off the edge)
    out[n, k, i, j]            = W[k, (c, p, q)] @ cols[(c, p, q), (n, i, j)]      per group

``W`` is the weight reshaped to (K, C/groups*kh*kw): no copy, it already is that
matrix in row-major order.  :func:`lower` builds exactly this textbook matrix.

How the kernel builds it (each step measured with scripts/bench_cpu.py):

1. **Flat rows with junk columns.**  The input is zero-padded once
   (``convlab.padding.pad``; strided convolutions also split into stride-phase
   planes, see ``parallel.phase_planes``).  Then row (c, p, q) of the column
   matrix, for a whole image, is *one contiguous slice* of it, starting at the
   tap's offset: column ``i*Ws + j`` holds the input under output (i, j) when
   ``j < Wo``, and junk for the ``Ws - Wo`` columns that run past the row's end.
   Lowering is then one memcpy per row and image (1.6x faster than copying
   ``Wo``-long pieces and zero-filling the padding at 56x56, 3.3x at 14x14);
   the GEMM does ``Ws/Wo`` times the work (+3.5% at 56x56, +29% at 7x7), and
   the junk columns are dropped when the result is copied into the output.
2. **The bias rides in the GEMM.**  One more weight column holds the bias and
   one more row of the column matrix holds ones: BLAS adds the bias inside the
   product, no pass of its own.
3. **One GEMM per group** through ``numpy.matmul`` (OpenBLAS's sgemm/dgemm on
   all cores; no SciPy needed).  An image whose output is wide (>=
   ``MIN_GEMM_COLUMNS`` columns) gets a GEMM of its own; narrow ones (a 7x7
   output has 63 columns, too thin for BLAS to reach speed) are lowered side
   by side so one GEMM covers several images.  Its (K/g, images*Ho*Ws) result
   goes into NCHW with one NumPy copy that also drops the junk columns.
4. **The lowering runs on one thread.**  A Numba ``prange`` copy is not faster
   here (the copy is memory-bound: ~10 GB/s with one thread or two), and
   alternating Numba's OpenMP threads with OpenBLAS's threads made both pools
   spin against each other: ~3x slower in total.  One thread pool per kernel.
5. A 1x1, stride-1, unpadded convolution needs no lowering at all: the input
   image *is* its column matrix, so the GEMM runs on it directly.
6. Grouped convolutions whose per-group product is tiny (depthwise:
   ``(1 x 9) @ (9 x Ho*Ws)`` per channel) would spend their time in BLAS call
   overhead; below ``SMALL_GEMM_MACS`` multiply-adds per output column, one
   Numba ``prange`` task per (image, group, band of rows) lowers its own
   L2-sized column block and multiplies it in a loop vectorised over columns.
   Still ~4.5x slower than PyTorch there: a 9x blow-up of a memory-bound layer.

Cost.  The GEMM does the N*K*(C/g)*kh*kw*Ho*Wo multiply-adds of direct
convolution (times ``Ws/Wo``); the price is memory: the column matrix holds
``kh*kw`` times as many values as the input (:func:`blowup`, 9x for 3x3), and
writing then re-reading it is traffic direct convolution never pays.  Measured
on a 2-core AMD EPYC (Zen 3), float32, batch 8, ResNet 3x3 64ch@56: lowering
5.8 ms (~10 GB/s: memory-bound), GEMMs 13.3 ms (~140 GFLOP/s, where a 2048^3
sgemm reaches ~185: 64 rows is a thin GEMM, and BLAS packs every column it
reads), copy-out 0.4 ms; PyTorch's whole convolution takes 11-12 ms.  The
lowering is 7-26% of the time on the ResNet/VGG 3x3 layers, the GEMM the rest.

Workspace.  Bounded: the batch is processed in chunks of images (and one big
image in bands of output rows) so that the column matrix plus the GEMM result
never exceed the cap, 256 MiB by default.  One output row of one image is the
smallest chunk, so a cap below that is exceeded by that much; the padded input
(input-sized) is not counted against the cap.  Change the cap with
:func:`set_workspace_cap` or, for one block of code, ``with
workspace_cap(nbytes): ...``.  :func:`workspace_bytes` (registered as the
kernel's ``workspace``) says what a spec will allocate, :func:`plan` how it is
chunked.

Limits: none; every stride, padding, dilation and group count, float32 and
float64.  Numerics: BLAS sums in its own (blocked, FMA) order, deterministic for
a given BLAS build and thread count.

``algo="auto"``: rank 20, before ``parallel`` (30), where the GEMM is tall and
deep enough: K/groups >= ``AUTO_MIN_OUT_CHANNELS`` and (C/groups)*kh*kw >=
``AUTO_MIN_REDUCTION``, or the layer is a plain 1x1 (measured; see
``_auto_when``).  Winograd kernels rank below 20 and take the 3x3 stride-1
layers they win.

Source: K. Chellapilla, S. Puri, P. Simard, "High Performance Convolutional
Neural Networks for Document Processing" (2006); Caffe's ``im2col_cpu``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numba
import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from .parallel import phase_planes, tap_offsets
from .registry import register

DEFAULT_WORKSPACE_CAP = 256 * 2**20  # bytes
# A GEMM narrower than this many columns runs well below BLAS peak: batch images.
MIN_GEMM_COLUMNS = 2048
# Below this many multiply-adds per output column and group, BLAS calls cost more
# than their arithmetic (depthwise 3x3: 9): use the Numba loop.
SMALL_GEMM_MACS = 64
# ... and each of their tasks lowers a band of rows of about this many bytes (L2-sized).
SMALL_BLOCK = 256 * 2**10
# auto prefers im2col (to parallel) when its GEMM is at least this tall (K/groups rows)
# and this deep ((C/groups)*kh*kw): measured, see _auto_when.
AUTO_MIN_OUT_CHANNELS = 256
AUTO_MIN_REDUCTION = 256

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
    columns: int  # columns of the column matrix per chunk (junk columns included)
    workspace: int  # bytes allocated at once: column matrix, GEMM result, padded input


def _is_identity(spec: ConvSpec) -> bool:
    return (spec.kernel_size == (1, 1) and spec.stride == (1, 1)
            and spec.padding == (0, 0, 0, 0))  # fmt: skip


def _is_small(spec: ConvSpec) -> bool:
    kg = spec.out_channels // spec.groups
    return spec.groups > 1 and spec.reduction_length * kg < SMALL_GEMM_MACS


def _plane_width(spec: ConvSpec) -> tuple[int, int]:
    """(hs, ws): height and width of one stride-phase plane of the padded input."""
    sh, sw = spec.stride
    return -(-spec.padded_height // sh), -(-spec.padded_width // sw)


def plan(spec: ConvSpec, itemsize: int, cap: int | None = None) -> Plan:
    """The chunking ``conv2d(..., algo="im2col")`` uses for ``spec`` under ``cap`` bytes
    (default: the current cap)."""
    cap = _workspace_cap if cap is None else cap
    n, ho, wo = spec.batch, spec.out_height, spec.out_width
    kg = spec.out_channels // spec.groups
    small = _is_small(spec)
    if _is_identity(spec) and not small:
        return Plan(1, ho, n, True, False, ho * wo, 0)
    hs, ws = _plane_width(spec)
    padded = 0  # the zero-padded, phase-split copy of the input (none if not needed)
    if any(spec.padding) or spec.stride != (1, 1):
        padded = n * spec.in_channels * spec.stride[0] * spec.stride[1] * hs * ws * itemsize
    if small:  # each thread lowers one group of one image, a band of rows at a time
        threads = numba.get_num_threads()
        per_row = spec.reduction_length * ws * itemsize
        rows = max(1, min(ho, SMALL_BLOCK // per_row, cap // (threads * per_row)))
        columns = rows * ws
        return Plan(1, rows, n * -(-ho // rows), False, True, columns,
                    threads * per_row * rows + padded)
    # bytes per column: the column matrix (+ one row of ones per group for the bias)
    # and the GEMM's result before its junk columns are dropped
    per_col = (column_shape(spec)[0] + spec.groups + kg) * itemsize
    per_image = ho * ws
    want = -(-MIN_GEMM_COLUMNS // per_image)  # a GEMM wide enough is wide enough
    images = min(n, want, cap // (per_col * per_image))
    if images >= 1:
        rows, chunks = ho, -(-n // images)
    else:  # one image is over the cap: bands of output rows (at least one)
        images, rows = 1, max(1, min(ho, cap // (per_col * ws)))
        chunks = n * -(-ho // rows)
    columns = images * rows * ws
    return Plan(images, rows, chunks, False, False, columns, per_col * columns + padded)


def workspace_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Extra bytes the kernel allocates at once for ``spec`` (one chunk)."""
    return plan(spec, itemsize).workspace


def lower(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The textbook column matrix (C*kh*kw, N*Ho*Wo) of a batched input: for teaching
    and pictures (small inputs: the kernel itself never builds it whole)."""
    x = np.ascontiguousarray(x).reshape(spec.batch, spec.in_channels, spec.height, spec.width)
    full = replace(spec, groups=1, out_channels=1)  # all channels in one block of rows
    xs = phase_planes(x, full)
    hs, ws = xs.shape[4], xs.shape[5]
    off = tap_offsets(full, hs, ws)
    rows, length = off.shape[0], spec.out_height * ws
    cols = np.empty((rows, spec.batch * length), dtype=x.dtype)
    _lower(xs.reshape(-1), cols, xs[0].size, 0, off, rows, 0, spec.batch, 0, length)
    cols = cols.reshape(rows, spec.batch, spec.out_height, ws)[..., :spec.out_width]
    return cols.reshape(rows, -1)


def _auto_when(spec: ConvSpec) -> str | None:
    """Where auto prefers im2col to the direct ``parallel`` kernel.

    Measured on a 2-core AMD EPYC (Zen 3), float32, batch 8, DESIGN.md's layer
    suite (scripts/bench_cpu.py): im2col was faster (or level) on every layer
    whose GEMM is big both ways, >= 256 rows (K/groups) and a reduction
    (C/groups)*kh*kw >= 256 (ResNet 256@14, 512@7, VGG conv3_2..conv5_2, the
    dilated 256@14, the 512-channel 1x1), and on 1x1 stride-1 unpadded layers,
    which need no lowering at all.  The direct kernel won wherever the GEMM is
    thinner (64-128 output channels: BLAS re-packs the whole column matrix for
    few rows) or shallow (3-channel stems, depthwise), where the lowering copy
    costs more than the GEMM saves."""
    kg = spec.out_channels // spec.groups
    if _is_identity(spec) and not _is_small(spec):
        return None
    if kg >= AUTO_MIN_OUT_CHANNELS and spec.reduction_length >= AUTO_MIN_REDUCTION:
        return None
    return (f"its GEMM would be {kg} x {spec.reduction_length} (K/groups x (C/groups)*kh*kw); "
            f"im2col beats the direct kernel from {AUTO_MIN_OUT_CHANNELS} x "
            f"{AUTO_MIN_REDUCTION} up (or for 1x1 stride-1 unpadded layers)")


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
    pl = plan(spec, x.dtype.itemsize)
    if pl.identity:  # 1x1 stride 1: no lowering, the image is the column matrix
        w2 = weight.reshape(k_out, rg)  # a view: the weight already is this matrix
        x3 = x.reshape(n_batch, spec.in_channels, ho * wo)
        out3 = out.reshape(n_batch, k_out, ho * wo)
        for n in range(n_batch):
            for grp in range(g):
                dst = out3[n, grp * kg:(grp + 1) * kg]
                np.matmul(w2[grp * kg:(grp + 1) * kg], x3[n, grp * rg:(grp + 1) * rg], out=dst)
                dst += b[grp * kg:(grp + 1) * kg, None]  # NumPy, while dst is in cache
        return out
    xs = phase_planes(x, spec)
    ws = xs.shape[5]
    off = tap_offsets(spec, xs.shape[4], ws)
    xf = xs.reshape(-1)
    chan_block = (spec.in_channels // g) * xs[0, 0].size  # elements of one group's channels
    if pl.small_gemm:
        _small_conv(xf, xs[0].size, chan_block, off, weight.reshape(k_out, rg), b, out, ws,
                    pl.rows)
        return out
    # the bias as one more weight column, times a row of ones in the columns:
    # BLAS adds it inside the GEMM, no pass of its own
    group_rows = rg + 1
    wb = np.empty((k_out, group_rows), dtype=x.dtype)
    wb[:, :rg] = weight.reshape(k_out, rg)
    wb[:, rg] = b
    cols = np.empty((g * group_rows, pl.columns), dtype=x.dtype)
    cols.reshape(g, group_rows, pl.columns)[:, rg, :] = 1
    result = np.empty((kg, pl.columns), dtype=x.dtype)
    for n0 in range(0, n_batch, pl.images):
        nb = min(pl.images, n_batch - n0)
        for i0 in range(0, ho, pl.rows):
            nr = min(pl.rows, ho - i0)
            length = nr * ws  # flat positions i*ws + j of these rows, per image
            width = nb * length
            _lower(xf, cols, xs[0].size, chan_block, off, group_rows, n0, nb, i0 * ws, length)
            _run_chunk(spec, cols[:, :width], wb, out, n0, nb, i0, nr, ws, result[:, :width])
    return out


def _run_chunk(spec: ConvSpec, cols: np.ndarray, wb: np.ndarray, out: np.ndarray, n0: int,
               nb: int, i0: int, nr: int, ws: int, result: np.ndarray) -> None:
    """The product of one chunk: images n0..n0+nb, output rows i0..i0+nr of each,
    from their lowered columns (nr*ws per image, the last ws-Wo of each row junk)."""
    kg = spec.out_channels // spec.groups
    group_rows = wb.shape[1]
    for grp in range(spec.groups):
        np.matmul(wb[grp * kg:(grp + 1) * kg], cols[grp * group_rows:(grp + 1) * group_rows],
                  out=result)
        # (kg, images, rows, ws) -> out[images, kg, rows, :Wo]: drop the junk columns
        out[n0:n0 + nb, grp * kg:(grp + 1) * kg, i0:i0 + nr] = \
            result.reshape(kg, nb, nr, ws)[..., :spec.out_width].transpose(1, 0, 2, 3)


@njit(cache=True)
def _gather(xf, dst, start, off, length):
    """dst[r, :length] = xf[start + off[r] : ... + length]: one row per tap, each a
    straight copy; reads past the end of the input (junk columns of the last
    image) give zeros."""
    for r in range(off.shape[0]):
        src = start + off[r]
        n = max(0, min(length, xf.shape[0] - src))
        dst[r, :n] = xf[src:src + n]
        dst[r, n:length] = 0


@njit(cache=True)
def _lower(xf, cols, img, chan_block, off, group_rows, n0, nb, m0, length):
    """cols[g*group_rows + r, b*length + m] = xf[(n0+b)*img + g*chan_block + off[r] + m0 + m]:
    row r = (c, p, q) of group g's block, for images n0..n0+nb and flat positions
    m0..m0+length.  Every row is one straight copy per image (a memcpy)."""
    rg = off.shape[0]
    for g in range(cols.shape[0] // group_rows):
        block = cols[g * group_rows:g * group_rows + rg]
        for b in range(nb):
            _gather(xf, block[:, b * length:(b + 1) * length],
                    (n0 + b) * img + g * chan_block + m0, off, length)


@njit(parallel=True, cache=True)
def _small_conv(xf, img, chan_block, off, w2d, bias, out, ws, rows):
    """Grouped convolutions with tiny per-group products (depthwise): one task per
    (image, group, band of rows) lowers its own (rg, rows*ws) column block, small
    enough to stay in L2, and multiplies it by the group's (K/g, rg) weights in a
    loop over contiguous columns that vectorises; no BLAS call."""
    n_batch, k_out, ho, wo = out.shape
    rg = off.shape[0]
    groups = img // chan_block
    kg = k_out // groups
    bands = -(-ho // rows)
    for t in prange(n_batch * groups * bands):  # independent outputs: no race
        band = t % bands
        g = (t // bands) % groups
        n = t // (bands * groups)
        i0 = band * rows
        nr = min(rows, ho - i0)
        length = nr * ws
        cols = np.empty((rg, length), dtype=out.dtype)
        _gather(xf, cols, n * img + g * chan_block + i0 * ws, off, length)
        acc = np.empty(length, dtype=out.dtype)
        for k in range(g * kg, (g + 1) * kg):
            acc[:] = bias[k]
            r = 0
            while r + 3 <= rg:  # three taps per pass: a third of the acc loads/stores
                w0, w1, w2 = w2d[k, r], w2d[k, r + 1], w2d[k, r + 2]
                c0, c1, c2 = cols[r], cols[r + 1], cols[r + 2]
                for m in range(length):
                    acc[m] = acc[m] + w0 * c0[m] + w1 * c1[m] + w2 * c2[m]
                r += 3
            while r < rg:
                w0 = w2d[k, r]
                c0 = cols[r]
                for m in range(length):
                    acc[m] = acc[m] + w0 * c0[m]
                r += 1
            for i in range(nr):
                out[n, k, i0 + i, :] = acc[i * ws:i * ws + wo]

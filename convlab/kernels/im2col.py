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

How the kernel builds it:

1. **Flat rows with junk columns.**  The input is zero-padded once
   (``convlab.padding.pad``; strided convolutions also split into stride-phase
   planes, see ``parallel.phase_planes``).  Then row (c, p, q) of the column
   matrix, for a whole image, is *one contiguous slice* of it, starting at the
   tap's offset: column ``i*Ws + j`` holds the input under output (i, j) when
   ``j < Wo``, and junk for the ``Ws - Wo`` columns that run past the row's end.
   Lowering is then one memcpy per row and image (1.6x faster than copying
   ``Wo``-long pieces and zero-filling the padding at 56x56, 3.3x at 14x14,
   measured against that first version while this file was written);
   the GEMM does ``Ws/Wo`` times the work (+3.5% at 56x56, +29% at 7x7), and
   the junk columns are dropped when the result is copied into the output.
2. **The bias rides in the GEMM.**  One more weight column holds the bias and
   one more row of the column matrix holds ones: BLAS adds the bias inside the
   product, no pass of its own.
3. **One GEMM per group** through :func:`convlab.threads.gemm`: its rows split across
   Numba's threads, each calling a single-threaded sgemm/dgemm, so OpenBLAS's own
   threads are never woken and never spin on the cores the next layer needs
   (docs/design.md, "Concurrency"; before, ``numpy.matmul`` on OpenBLAS's threads left
   them spinning ~0.1 s after each call when NumPy was imported before convlab).
   An image whose output is wide (>=
   ``MIN_GEMM_COLUMNS`` columns) gets a GEMM of its own; narrow ones (a 7x7
   output has 63 columns, too thin for BLAS to reach speed) are lowered side
   by side so one GEMM covers several images.  Its (K/g, images*Ho*Ws) result
   goes into NCHW with one NumPy copy that also drops the junk columns.
4. **The lowering runs on one thread.**  A Numba ``prange`` copy is not faster
   here (the copy is memory-bound: ~10 GB/s with one thread or two), and
   alternating Numba's OpenMP threads with OpenBLAS's threads made both pools
   spin against each other: ~3x slower in total (measured against that
   version, not kept).  One thread pool: Numba's, for the GEMM too (point 3).
5. A 1x1, stride-1, unpadded convolution needs no lowering at all: the input
   image *is* its column matrix, so the GEMM runs on it directly.
6. Grouped convolutions whose per-group product is tiny (depthwise:
   ``(1 x 9) @ (9 x Ho*Ws)`` per channel) would spend their time in BLAS call
   overhead; below ``SMALL_GEMM_MACS`` multiply-adds per output column, one
   Numba ``prange`` task per (image, group, band of rows) lowers its own
   L2-sized column block and multiplies it in a loop vectorised over columns.
   Still 2.4-4.5x slower than PyTorch there (``convlab bench --suite mobilenet
   --layers mb_dw_32x112 --kernels im2col,depthwise,torch``): a 9x blow-up of a
   memory-bound layer, which ``depthwise.py`` avoids.

Cost.  The GEMM does the N*K*(C/g)*kh*kw*Ho*Wo multiply-adds of direct
convolution (times ``Ws/Wo``); the price is memory: the column matrix holds
``kh*kw`` times as many values as the input (:func:`blowup`, 9x for 3x3), and
writing then re-reading it is traffic direct convolution never pays.  Measured
with ``convlab bench --suite resnet --layers res_64x56,res_512x7 --kernels
im2col,torch --split`` on a 2-core AMD EPYC (Zen 3), float32, batch 8, ResNet 3x3
64ch@56: lowering 6.1 ms (~10 GB/s: memory-bound), GEMMs 10.7 ms (~170 GFLOP/s,
where a 2048^3 sgemm reaches ~200: 64 rows is a thin GEMM, and BLAS packs every
column it reads), copy-out 0.9 ms; PyTorch's whole convolution took 9-18 ms in the
same runs (a busy machine).  At 512ch@7x7: lowering 5.8, GEMM 12.3, copy-out 0.6 ms.
The lowering is a fifth to a third of the time, the GEMM the rest.

Workspace.  Bounded by a cap, 256 MiB by default, counting everything the
kernel allocates at once: the zero-padded (and stride-split) copy of the input,
the column matrix and the GEMM's result.  The batch is processed in chunks of
images (and one big image in bands of output rows) so that the column matrix
plus the GEMM result fit beside the padded copy.  When the padded copy itself
does not fit (a huge batch, or a huge padding: a (1, 512, 1, 1) input padded by
(5, 50000) would be 2.2 GB), the output is cut into tiles (groups of images,
bands of rows, pieces of a row) and each tile is computed from its own small
zero-padded window of the input.  Only a cap below the smallest possible
piece (one output pixel's window and column) is exceeded, by that much.  Change
the cap for a block of code with ``with workspace_cap(nbytes): ...`` (per thread,
nestable: a ``ContextVar``).  :func:`workspace_bytes` (registered as the
kernel's ``workspace``) says what a spec will allocate, :func:`plan` how it is
cut.

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
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import gemm, parallel_region
from .parallel import phase_planes, plane_shape, tap_offsets
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

# The caps in force in this context, innermost last: a ContextVar, so each thread (and
# each asyncio task) has its own, and a `with workspace_cap(...)` in one never changes
# another's.  Each entry has its own identity, so leaving blocks in any order removes
# exactly the entry that block added.
_CAPS: contextvars.ContextVar[tuple[tuple[object, int], ...]] = contextvars.ContextVar(
    "im2col_workspace_caps", default=())


def get_workspace_cap() -> int:
    """The column-matrix budget in bytes in force here (the innermost
    :func:`workspace_cap` block, else ``DEFAULT_WORKSPACE_CAP``)."""
    caps = _CAPS.get()
    return caps[-1][1] if caps else DEFAULT_WORKSPACE_CAP


@contextlib.contextmanager
def workspace_cap(nbytes: int | None) -> Iterator[int]:
    """``with workspace_cap(2**20): conv2d(..., algo="im2col")`` runs under a 1 MiB cap
    (in this thread or task only; blocks nest); ``None`` is the default cap."""
    if nbytes is None:
        nbytes = DEFAULT_WORKSPACE_CAP
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 1:
        raise ValueError(f"workspace cap must be a positive number of bytes, got {nbytes!r}")
    entry = (object(), int(nbytes))
    _CAPS.set(_CAPS.get() + (entry,))
    try:
        yield int(nbytes)
    finally:
        _CAPS.set(tuple(e for e in _CAPS.get() if e is not entry))


def blowup(spec: ConvSpec) -> int:
    """How many times each input value is copied into the column matrix: kh*kw
    (roughly: strides skip values, padding adds zeros)."""
    return spec.kernel_size[0] * spec.kernel_size[1]


def column_shape(spec: ConvSpec, images: int = 1) -> tuple[int, int]:
    """Shape of the full column matrix for ``images`` images: (C*kh*kw, images*Ho*Wo)."""
    kh, kw = spec.kernel_size
    return (spec.in_channels * kh * kw, images * spec.out_height * spec.out_width)


@dataclass(frozen=True)
class Tile:
    """A block of the output: images [n0, n1), rows [i0, i1), columns [j0, j1)."""

    n0: int
    n1: int
    i0: int
    i1: int
    j0: int
    j1: int


@dataclass(frozen=True)
class Plan:
    """How a spec is cut to stay under the workspace cap.

    ``tiles``: blocks of the output, each computed from its own zero-padded window of
    the input (one tile, the whole output, unless the padded input does not fit);
    within a tile, chunks of ``images`` images, or when ``images == 1`` possibly of
    ``rows`` output rows, are lowered and multiplied at a time."""

    images: int
    rows: int
    chunks: int  # GEMM chunks over all tiles
    identity: bool  # 1x1/stride 1/no padding: the input is its own column matrix
    small_gemm: bool  # the Numba loop instead of BLAS (tiny per-group products)
    columns: int  # columns of the column matrix per chunk (junk columns included)
    workspace: int  # bytes allocated at once: padded window(s), column matrix, GEMM result
    tiles: tuple[Tile, ...] = ()


def _is_identity(spec: ConvSpec) -> bool:
    return (spec.kernel_size == (1, 1) and spec.stride == (1, 1)
            and spec.padding == (0, 0, 0, 0))  # fmt: skip


def _is_small(spec: ConvSpec) -> bool:
    kg = spec.out_channels // spec.groups
    return spec.groups > 1 and spec.reduction_length * kg < SMALL_GEMM_MACS


def _window_spec(spec: ConvSpec, tile: Tile) -> ConvSpec:
    """The spec of one tile: its input window (padding included, so none left)."""
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    rows = (tile.i1 - tile.i0 - 1) * sh + dh * (kh - 1) + 1
    cols = (tile.j1 - tile.j0 - 1) * sw + dw * (kw - 1) + 1
    return replace(spec, batch=tile.n1 - tile.n0, height=rows, width=cols,
                   padding=(0, 0, 0, 0), batched=True)


def _padded_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes of the zero-padded, phase-split copy of the input ``phase_planes`` makes
    (none when there is neither padding nor stride: the input itself is used)."""
    if not any(spec.padding) and spec.stride == (1, 1):
        return 0
    hs, ws = plane_shape(spec)
    return spec.batch * spec.in_channels * spec.stride[0] * spec.stride[1] * hs * ws * itemsize


def _tile_bytes(window: ConvSpec, itemsize: int, cut: bool) -> int:
    """The input copies a tile makes: its zero-padded window (only when the output is
    cut into several tiles; one tile pads inside ``phase_planes``) and the phase planes."""
    own = window.batch * window.in_channels * window.height * window.width * itemsize
    return (own if cut else 0) + _padded_bytes(window, itemsize)


def _chunking(spec: ConvSpec, itemsize: int, budget: int) -> tuple[int, int, int, int, int]:
    """Chunks of one tile (``spec`` = its window): (images, rows, chunks, columns, bytes)
    for the column matrix and GEMM result under ``budget`` bytes (at least one row)."""
    n, ho = spec.batch, spec.out_height
    kg = spec.out_channels // spec.groups
    ws = plane_shape(spec)[1]
    if _is_small(spec):  # each thread lowers one group of one image, a band of rows at a time
        threads = numba.get_num_threads()
        per_row = spec.reduction_length * ws * itemsize
        rows = max(1, min(ho, SMALL_BLOCK // per_row, budget // (threads * per_row)))
        return 1, rows, n * -(-ho // rows), rows * ws, threads * per_row * rows
    # bytes per column: the column matrix (+ one row of ones per group for the bias)
    # and the GEMM's result before its junk columns are dropped
    per_col = (column_shape(spec)[0] + spec.groups + kg) * itemsize
    per_image = ho * ws
    want = -(-MIN_GEMM_COLUMNS // per_image)  # a GEMM wide enough is wide enough
    images = min(n, want, budget // (per_col * per_image))
    if images >= 1:
        rows, chunks = ho, -(-n // images)
    else:  # one image is over the budget: bands of output rows (at least one)
        images, rows = 1, max(1, min(ho, budget // (per_col * ws)))
        chunks = n * -(-ho // rows)
    columns = images * rows * ws
    return images, rows, chunks, columns, per_col * columns


def _min_chunk_bytes(spec: ConvSpec, itemsize: int) -> int:
    """The column workspace of the smallest chunk of ``spec``'s window: one output row."""
    return _chunking(spec, itemsize, 1)[4]


def _tiling(spec: ConvSpec, itemsize: int, cap: int) -> tuple[Tile, ...]:
    """Cut the output so that a tile's padded window plus its smallest chunk fit the cap:
    the whole output if it fits, else groups of images, else bands of rows of one
    image, else pieces of one row (a huge padding: the padded input alone is over the
    cap).  The last resort, one output pixel per tile, may still exceed a tiny cap."""
    n, ho, wo = spec.batch, spec.out_height, spec.out_width

    def fits(t: Tile) -> bool:
        window = _window_spec(spec, t)
        return _tile_bytes(window, itemsize, True) + _min_chunk_bytes(window, itemsize) <= cap

    def cut(size: int, make: Callable[[int, int], Tile]) -> tuple[Tile, ...] | None:
        """The widest step along one axis whose first tile fits, as tiles; None if even
        a step of 1 does not."""
        lo, hi = 0, size  # binary search: fits() is monotone in the step
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(make(0, mid)) else (lo, mid - 1)
        if lo == 0:
            return None
        return tuple(make(a, min(a + lo, size)) for a in range(0, size, lo))

    if _padded_bytes(spec, itemsize) + _min_chunk_bytes(spec, itemsize) <= cap:
        return (Tile(0, n, 0, ho, 0, wo),)
    by_images = cut(n, lambda a, b: Tile(a, b, 0, ho, 0, wo))
    if by_images is not None:
        return by_images
    tiles: list[Tile] = []
    for img in range(n):
        by_rows = cut(ho, partial(Tile, img, img + 1, j0=0, j1=wo))
        if by_rows is not None:
            tiles += by_rows
            continue
        for row in range(ho):
            by_cols = cut(wo, partial(Tile, img, img + 1, row, row + 1))
            tiles += by_cols or [Tile(img, img + 1, row, row + 1, j, j + 1) for j in range(wo)]
    return tuple(tiles)


def plan(spec: ConvSpec, itemsize: int, cap: int | None = None) -> Plan:
    """The tiling and chunking ``conv2d(..., algo="im2col")`` uses for ``spec`` under
    ``cap`` bytes (default: :func:`get_workspace_cap`)."""
    cap = get_workspace_cap() if cap is None else cap
    n, ho, wo = spec.batch, spec.out_height, spec.out_width
    small = _is_small(spec)
    if _is_identity(spec) and not small:
        return Plan(1, ho, n, True, False, ho * wo, 0, (Tile(0, n, 0, ho, 0, wo),))
    tiles = _tiling(spec, itemsize, cap)
    chunks, workspace, first = 0, 0, None
    cut = len(tiles) > 1
    for t in tiles:
        window = _window_spec(spec, t) if cut else spec
        padded = _tile_bytes(window, itemsize, cut)
        chunking = _chunking(window, itemsize, max(1, cap - padded))
        first = first or chunking
        chunks += chunking[2]
        workspace = max(workspace, padded + chunking[4])
    assert first is not None
    images, rows, _, columns, _ = first
    return Plan(images, rows, chunks, False, small, columns, workspace, tiles)


def workspace_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Extra bytes the kernel allocates at once for ``spec`` (the biggest tile's)."""
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

    Measured on a 2-core AMD EPYC (Zen 3), float32, batch 8, the benchmark's layer
    suite (``convlab bench --suite all --kernels im2col,parallel`` remeasures it;
    ``convlab tune`` measures it for your machine): im2col was faster (or level)
    on every layer whose GEMM is big both ways, >= 256 rows (K/groups) and a reduction
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
            f"the rule takes im2col from {AUTO_MIN_OUT_CHANNELS} x {AUTO_MIN_REDUCTION} "
            "up, where it was measured as fast as the direct kernel or faster on the machine "
            "the rule was set on (or for 1x1 stride-1 unpadded layers; `convlab tune` "
            "measures this machine)")


@register("im2col", description="lower to a column matrix, then one BLAS GEMM per group",
          rtol=1e-5, workspace=workspace_bytes, auto_rank=20, ladder=4,
          auto_when=lambda spec: _auto_when(spec), stages=lambda *a: _stages(*a))  # fmt: skip
def conv2d_im2col(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                  spec: ConvSpec) -> np.ndarray:
    return _im2col(x, weight, bias, spec, _ALL)


# stage bits, for the benchmark's time split (_stages): a run does only the stages set
_LOWER, _GEMM, _COPY = 1, 2, 4
_ALL = _LOWER | _GEMM | _COPY


def _im2col(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
            stage_mask: int) -> np.ndarray:
    b = np.zeros(spec.out_channels, x.dtype) if bias is None else bias
    out = np.empty(spec.batched_output_shape, dtype=x.dtype)
    itemsize, cap = x.dtype.itemsize, get_workspace_cap()
    pl = plan(spec, itemsize, cap)
    # NaN/Inf in the input propagate as in every other kernel; NumPy's matmul would
    # also warn about them ("invalid value encountered"), which no other kernel does
    with np.errstate(over="ignore", invalid="ignore"):
        if pl.identity:  # 1x1 stride 1: no lowering, the image is the column matrix
            _identity(x, weight, b, spec, out)
        else:
            _tiles(x, weight, b, spec, out, pl, cap, stage_mask)
    return out


def _tiles(x: np.ndarray, weight: np.ndarray, b: np.ndarray, spec: ConvSpec, out: np.ndarray,
           pl: Plan, cap: int, stage_mask: int) -> None:
    itemsize = x.dtype.itemsize
    cut = len(pl.tiles) > 1
    for tile in pl.tiles:
        if cut:  # the padded input does not fit: this tile's window, padded here
            window = _window_spec(spec, tile)
            xw = _window(x, spec, tile, window)
            ow = np.empty(window.batched_output_shape, dtype=x.dtype)
        else:
            window, xw, ow = spec, x, out
        budget = max(1, cap - _tile_bytes(window, itemsize, cut))
        _convolve(xw, weight, b, window, ow, budget, stage_mask)
        if cut:
            out[tile.n0:tile.n1, :, tile.i0:tile.i1, tile.j0:tile.j1] = ow


def _identity(x: np.ndarray, weight: np.ndarray, b: np.ndarray, spec: ConvSpec,
              out: np.ndarray) -> None:
    n_batch, k_out, ho, wo = spec.batched_output_shape
    g, rg = spec.groups, spec.reduction_length
    kg = k_out // g
    w2 = weight.reshape(k_out, rg)  # a view: the weight already is this matrix
    x3 = x.reshape(n_batch, spec.in_channels, ho * wo)
    out3 = out.reshape(n_batch, k_out, ho * wo)
    for n in range(n_batch):
        for grp in range(g):
            dst = out3[n, grp * kg:(grp + 1) * kg]
            gemm(w2[grp * kg:(grp + 1) * kg], x3[n, grp * rg:(grp + 1) * rg], dst)
            dst += b[grp * kg:(grp + 1) * kg, None]  # NumPy, while dst is in cache


def _window(x: np.ndarray, spec: ConvSpec, tile: Tile, window: ConvSpec) -> np.ndarray:
    """The input under ``tile``'s outputs, zero-padded: rows from ``i0*sh - top`` and
    columns from ``j0*sw - left`` of the unpadded input, zeros where they fall off it."""
    y0 = tile.i0 * spec.stride[0] - spec.padding[0]
    x0 = tile.j0 * spec.stride[1] - spec.padding[2]
    win = np.zeros((tile.n1 - tile.n0, spec.in_channels, window.height, window.width),
                   dtype=x.dtype)
    ya, yb = max(y0, 0), min(y0 + window.height, spec.height)
    xa, xb = max(x0, 0), min(x0 + window.width, spec.width)
    if ya < yb and xa < xb:
        win[:, :, ya - y0:yb - y0, xa - x0:xb - x0] = x[tile.n0:tile.n1, :, ya:yb, xa:xb]
    return win


def _convolve(x: np.ndarray, weight: np.ndarray, b: np.ndarray, spec: ConvSpec,
              out: np.ndarray, budget: int, stage_mask: int) -> None:
    """One tile: lower chunk by chunk under ``budget`` bytes, multiply, copy out."""
    n_batch, k_out, ho, _ = spec.batched_output_shape
    g, rg = spec.groups, spec.reduction_length
    kg = k_out // g
    xs = phase_planes(x, spec)
    ws = xs.shape[5]
    off = tap_offsets(spec, xs.shape[4], ws)
    xf = xs.reshape(-1)
    chan_block = (spec.in_channels // g) * xs[0, 0].size  # elements of one group's channels
    images, rows, _, columns, _ = _chunking(spec, x.dtype.itemsize, budget)
    if _is_small(spec):
        with parallel_region():
            _small_conv(xf, xs[0].size, chan_block, off, weight.reshape(k_out, rg), b, out,
                        ws, rows)
        return
    # the bias as one more weight column, times a row of ones in the columns:
    # BLAS adds it inside the GEMM, no pass of its own
    group_rows = rg + 1
    wb = np.empty((k_out, group_rows), dtype=x.dtype)
    wb[:, :rg] = weight.reshape(k_out, rg)
    wb[:, rg] = b
    # flat buffers, viewed per chunk as C-contiguous (rows, width) matrices: the GEMM
    # (threads.gemm) needs contiguous operands, and a narrower last chunk would otherwise
    # be a strided slice
    cols_flat = np.empty(g * group_rows * columns, dtype=x.dtype)
    result_flat = np.empty(kg * columns, dtype=x.dtype)
    for n0 in range(0, n_batch, images):
        nb = min(images, n_batch - n0)
        for i0 in range(0, ho, rows):
            nr = min(rows, ho - i0)
            length = nr * ws  # flat positions i*ws + j of these rows, per image
            width = nb * length
            cols = cols_flat[:g * group_rows * width].reshape(g * group_rows, width)
            cols.reshape(g, group_rows, width)[:, rg, :] = 1
            if stage_mask & _LOWER:
                _lower(xf, cols, xs[0].size, chan_block, off, group_rows, n0, nb, i0 * ws,
                       length)
            _run_chunk(spec, cols, wb, out, n0, nb, i0, nr, ws,
                       result_flat[:kg * width].reshape(kg, width), stage_mask)


def _run_chunk(spec: ConvSpec, cols: np.ndarray, wb: np.ndarray, out: np.ndarray, n0: int,
               nb: int, i0: int, nr: int, ws: int, result: np.ndarray,
               stage_mask: int = _ALL) -> None:
    """The product of one chunk: images n0..n0+nb, output rows i0..i0+nr of each,
    from their lowered columns (nr*ws per image, the last ws-Wo of each row junk)."""
    kg = spec.out_channels // spec.groups
    group_rows = wb.shape[1]
    for grp in range(spec.groups):
        if stage_mask & _GEMM:
            gemm(wb[grp * kg:(grp + 1) * kg], cols[grp * group_rows:(grp + 1) * group_rows],
                 result)
        if stage_mask & _COPY:
            # (kg, images, rows, ws) -> out[images, kg, rows, :Wo]: drop the junk columns
            out[n0:n0 + nb, grp * kg:(grp + 1) * kg, i0:i0 + nr] = \
                result.reshape(kg, nb, nr, ws)[..., :spec.out_width].transpose(1, 0, 2, 3)


def _stages(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
            transformed_weight: Any) -> Sequence[tuple[str, Callable[[], Any]]]:
    """The time split for ``convlab bench --split``: each call runs the kernel up to and
    including its stage (same tiles, chunks and BLAS calls as a real run)."""
    pl = plan(spec, x.dtype.itemsize)
    if pl.identity:
        return [("GEMM (no lowering: 1x1)", lambda: _im2col(x, weight, bias, spec, _ALL))]
    if pl.small_gemm:
        return [("lower + multiply, fused (Numba)",
                 lambda: _im2col(x, weight, bias, spec, _ALL))]
    steps = [("lower", _LOWER), ("GEMM", _LOWER | _GEMM), ("copy out", _ALL)]
    return [(name, partial(_im2col, x, weight, bias, spec, mask)) for name, mask in steps]


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

"""Winograd F(2x2,3x3), F(4x4,3x3), F(6x6,3x3): fewer multiplies, paid for in transforms.

Algorithm (Lavin & Gray 2016, arXiv 1509.09308; structured as NNPACK and
oneDNN do).  Cut the output into m x m tiles.  Each needs an input tile of
alpha x alpha pixels, alpha = m + 2, and per (input channel c, output channel k)

    Y = A^T [ U * V ] A,   U = G g G^T (alpha x alpha),  V = B^T d B (alpha x alpha)

Summing over c, the element-wise product turns into alpha^2 independent matrix
products: for every position (i, j) of the alpha x alpha grid,

    M[ij] (K x tiles) = U[ij] (K x C) @ V[ij] (C x tiles)

so the work is four stages (the matrices are in ``_winograd_transforms.py``):

1. filter transform  U = G g G^T, once per weight: ``prepare`` returns it, and
   ``convlab.Conv2d`` keeps it between calls (rebuilt when the weight changes);
2. input transform   V = B^T d B for every (tile, channel);
3. alpha^2 GEMMs     M = U @ V (OpenBLAS via ``np.dot``: this is where the FLOPs are);
4. output transform  Y = A^T M A, plus the bias, written into the output.

Cost per m x m output tile and (c, k) pair: alpha^2 multiplies instead of
9 m^2: F(2,3) 16 vs 36 (2.25x fewer), F(4,3) 36 vs 144 (4x), F(6,3) 64 vs 324
(5.1x).  The transforms are O(C + K) per tile rather than O(C K), so they
vanish for wide layers and dominate for narrow ones (few channels).

Blocking (the reason this is fast, not just frugal), as NNPACK does it: one
``prange`` loop, one worker per thread, each dealt jobs of ``tb`` tiles x
``kper`` output channels.  A job gathers its tiles into a private V
(alpha^2 x C x tb), transforms it in place, runs the alpha^2 GEMMs ``kb``
output channels at a time into a private M, and transforms M straight into the
output with the bias.  V and M never leave the core's caches; only x, U and
the output travel to and from memory, and there is one parallel region per
call (no hand-offs between thread pools).  Every sgemm runs on the calling
Numba thread: threadpoolctl holds OpenBLAS to one thread for the call, so the
GEMMs can be big (tb ~ 64-96 columns, up to 256 rows: ~60-70 GFLOP/s per core);
without threadpoolctl each call stays under OpenBLAS's single-thread threshold
(2^18 multiply-adds), which costs ~1.3x.  Few tiles and many channels (7x7 and
14x14 images, small batches): U is the big operand, so all tiles go in one job and
the threads split the output channels, each reading only its slice of U
(``U_BOUND_RATIO``); V is then transformed once, before the GEMMs, the threads
splitting the input channels (``_shared_v``), not once per thread (ResNet-18's
512ch@7x7 layers in ``convlab bench --model resnet18``: 8.9 -> 8.15 ms, 0.84x -> 0.92x
torch; their GEMMs, 32 tiles wide, still run at about 115 GFLOP/s).  ``plan`` picks the sizes; the
scratch memory is kept between calls (fresh pages fault on first touch).

Where the time goes: ``convlab bench --suite resnet --layers
res_64x56,res_128x28,res_256x14,res_512x7 --kernels winograd_f4,winograd_f2,im2col,torch
--weight-cache --split`` (drop ``--weight-cache`` to transform the filter on every call, as
functional ``conv2d`` does).  One run on the 2-core EPYC, float32, batch 8, filter cached
(a busy machine: torch's own samples scattered by up to 80 %):

    layer        input tr.  GEMMs     output tr.  total    vs torch
    64ch@56x56   2.2 ms     2.3 ms    1.1 ms      5.9 ms   2.3x
    128ch@28x28  1.5        3.8       0.9         8.5      1.5x
    256ch@14x14  1.4        4.9       0.6         7.1      1.8x
    512ch@7x7    1.1        7.8       0.5         9.6      1.1x

The transforms are memory-bound passes (~10 GB/s of ~30); the GEMMs run at ~120-160
GFLOP/s of Winograd multiplies where they are wide, but at 512ch@7x7 each has only 16
tiles per image and U (36 x 512 x 512 floats, 36 MiB) is streamed from memory for
every block of tiles: that layer is bound by U's traffic, not by arithmetic.
Transforming the filter on every call adds 0.2 ms (64 channels) to ~5 ms (512
channels, where it then costs as much as the GEMMs): ``Conv2d`` caches it.

Numerics: the transforms multiply by constants up to 5.25 (F(6,3)'s B^T) and
divide back down (G, A^T), so rounding error grows with m.  Measured float32
max error / max|output| at 64 channels: 3.6e-7 for F(2,3), 5e-6 for F(4,3),
1.1e-5 for F(6,3), against 1.4e-6 for ``naive`` (whose 576 strictly sequential
float32 adds lose to sgemm's shorter, blocked sums); see
``convlab.numerics.error_study``.  Each registry ``rtol`` is ~10x the worst
measurement.  NaN/Inf: every entry of B^T d B mixes several pixels of the
tile, so a NaN or Inf pixel reaches outputs that do not depend on it: for
F(4,3) and F(6,3) whole m x m tiles (or a row/column of a tile, when the
pixel sits on the edge of its input window), where direct convolution only
poisons the 3x3 windows over the pixel.  F(2,3)'s transforms are sparse
enough that it poisons exactly the direct footprint.

Limits: 3x3 kernels, stride 1, dilation 1 (anything else is refused); any
padding (zero padding is implicit, other modes arrive pre-padded), groups,
float32/float64, any H and W (edge tiles read zeros past the input and write
only their valid outputs).  Workspace: per thread V, M and scratch blocks
(alpha^2 (2 C/groups + kb) tb items), plus U when it is not cached.
``algo="auto"``: see AUTO_MIN_CHANNELS below.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import blas_can_be_limited, parallel_region, single_threaded_blas
from ._winograd_transforms import at, bt, g
from .registry import NonFinite, register

# Tiles per job: the N of every GEMM call, about 64-96 for OpenBLAS's sgemm to run
# near its peak on one core (measured: 32 tiles lose ~15%, 16 lose ~30%).
TILES_PER_JOB = 96
# Output channels per GEMM call (its M), bounding the M block to alpha^2 x 256 x tb.
MAX_GEMM_ROWS = 256
# plan(): with all tiles in one job and at least this many output channels per tile,
# the threads split the output channels (each reads its own slice of U), not the tiles
U_BOUND_RATIO = 8
# OpenBLAS runs an sgemm on the calling thread when M*N*K <= 4 * 65536
# (GEMM_MULTITHREAD_THRESHOLD * SMP_THRESHOLD_MIN in its interface/gemm.c).
BLAS_SINGLE_THREAD_MNK = 4 * 65536


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _tiles(spec: ConvSpec, m: int) -> int:
    """Output tiles of F(m x m, 3 x 3) over the batch."""
    return spec.batch * _cdiv(spec.out_height, m) * _cdiv(spec.out_width, m)


# ---------------------------------------------------------------- public pieces
def transform_filter(weight: np.ndarray, groups: int, m: int) -> np.ndarray:
    """U = G g G^T for every (k, c): an (alpha^2, groups, K/groups, C/groups) array.

    Computed in float64 and rounded once to the weight's dtype (it is done once
    per weight, so accuracy is cheap here)."""
    k, cg = weight.shape[:2]
    alpha = m + 2
    u = np.empty((alpha * alpha, k, cg), dtype=weight.dtype)
    with parallel_region():
        _filter_transform(weight, u, m)
    return u.reshape(alpha * alpha, groups, k // groups, cg)


def plan(spec: ConvSpec, m: int, itemsize: int, *, tile_target: int = TILES_PER_JOB,
         single_thread_blas: bool | None = None) -> tuple[int, int, int]:
    """Blocking for ``spec``: (tb tiles per job, kb output channels per GEMM call,
    kper output channels per job).  See the module docstring."""
    if single_thread_blas is None:
        single_thread_blas = blas_can_be_limited()
    cg = spec.in_channels // spec.groups
    kg = spec.out_channels // spec.groups
    tiles = _tiles(spec, m)
    threads = numba.get_num_threads()
    if threads > 1 and tiles <= tile_target and kg >= U_BOUND_RATIO * tiles:
        # few tiles, many channels (VGG's 512ch@14 at batch 1, ResNet's 7x7 layers): U,
        # alpha^2*K*C values, outweighs the tiles' V.  Split by tiles, every thread would
        # stream all of U from memory; split by output channels, each reads its own slice
        # (measured 512ch@14, batch 1: F(4,3) 71 -> 48 ms, F(2,3) 51 -> 37 ms, 2 threads)
        tb, jobs = tiles, spec.groups
        splits = min(kg, _cdiv(threads, jobs)) if jobs < threads else 1
    else:
        # a multiple of `threads` jobs per group of about tile_target tiles each: balanced
        jobs = threads * _cdiv(tiles, threads * tile_target)
        tb = _cdiv(tiles, jobs)
        jobs = _cdiv(tiles, tb) * spec.groups
        # too few jobs to keep every thread busy: split the output channels as well
        splits = min(kg, _cdiv(threads, jobs)) if jobs < threads else 1
    kper = _cdiv(kg, splits)
    if single_thread_blas:
        kb = min(kper, MAX_GEMM_ROWS)
    else:  # each GEMM call small enough for OpenBLAS to stay on the calling thread
        kb = max(1, min(kper, BLAS_SINGLE_THREAD_MNK // (cg * tb)))
    return tb, kb, kper


# Scratch buffers (V, M blocks, an uncached U) are kept between calls, per Python
# thread: fresh pages cost a page fault each (~0.1 ms per MiB, measured), and a
# buffer per thread lets two threads run Winograd at once without sharing memory.
# Buffers over RETAIN_BYTES are not kept (a one-off huge layer does not pin its
# memory); release_scratch() frees the calling thread's, and a thread's buffers go
# when the thread does.
RETAIN_BYTES = 64 * 2**20
_scratch = threading.local()


def _scratch_memory(use: str, items: int, dtype: np.dtype) -> np.ndarray:
    """``items`` scratch values of ``dtype`` for ``use``, this thread's, reused."""
    dtype = np.dtype(dtype)
    if items * dtype.itemsize > RETAIN_BYTES:
        return np.empty(items, dtype)
    buffers: dict[tuple[str, np.dtype], np.ndarray] = _scratch.__dict__.setdefault("bufs", {})
    buf = buffers.get((use, dtype))
    if buf is None or buf.size < items:
        buf = buffers[(use, dtype)] = np.empty(items, dtype)
    return buf[:items]


def release_scratch() -> None:
    """Free the scratch buffers this thread keeps between Winograd calls."""
    _scratch.__dict__.pop("bufs", None)


def winograd(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
             m: int, transformed_weight: np.ndarray | None = None,
             blocking: tuple[int, int, int] | None = None) -> np.ndarray:
    """Run F(m x m, 3 x 3) on batched ``x``; ``transformed_weight`` is
    :func:`transform_filter`'s U (computed here when None)."""
    return _run(x, weight, bias, spec, m, transformed_weight, blocking, _ALL_STAGES)


_ALL_STAGES = 7  # bit mask for _convolve: 1 input transform, 2 GEMMs, 4 output transform


def _run(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec, m: int,
         u: np.ndarray | None, blocking: tuple[int, int, int] | None,
         stage_mask: int) -> np.ndarray:
    out = np.empty(spec.batched_output_shape, dtype=x.dtype)
    b = np.zeros(spec.out_channels, x.dtype) if bias is None else bias
    tb, kb, kper = plan(spec, m, x.itemsize) if blocking is None else blocking
    threads = numba.get_num_threads()
    per_thread = _items_per_thread(spec, m, tb, kb)
    if u is None:
        alpha2, (k, cg) = (m + 2) ** 2, weight.shape[:2]
        u = _scratch_memory("U", alpha2 * k * cg, x.dtype).reshape(alpha2, k, cg)
        with parallel_region():
            _filter_transform(weight, u, m)
        u = u.reshape(alpha2, spec.groups, k // spec.groups, cg)
    work = _scratch_memory("work", threads * per_thread, x.dtype).reshape(threads, per_thread)
    top, left = spec.padding[0], spec.padding[2]
    cg, tiles = spec.in_channels // spec.groups, _tiles(spec, m)
    if _shares_v(spec, m, tb, kper):  # V once, split by input channels (see _shared_v)
        v_all = _scratch_memory("V", (m + 2) ** 2 * spec.in_channels * tiles, x.dtype).reshape(
            (m + 2) ** 2, spec.groups, cg, tiles)
        if stage_mask & 1:
            with parallel_region():
                _shared_v(x, v_all, m, top, left, _cdiv(spec.out_height, m),
                          _cdiv(spec.out_width, m), _cdiv(cg, max(1, threads // spec.groups)),
                          work)
    else:
        v_all = np.empty((0, 0, 0, 0), x.dtype)
    args = (x, u, b, out, m, top, left, tb, kb, kper, stage_mask, work, v_all)
    if threads == 1:  # one Numba thread: its GEMMs may use the BLAS's threads
        with parallel_region():
            _convolve(*args)
    else:  # every Numba thread calls its own sgemm: the BLAS must not add threads
        with single_threaded_blas(), parallel_region():
            _convolve(*args)
    return out


def _shares_v(spec: ConvSpec, m: int, tb: int, kper: int) -> bool:
    """One tile block, and the threads split the output channels: every job needs the
    whole V, transformed once by :func:`_shared_v`."""
    return tb == _tiles(spec, m) and kper < spec.out_channels // spec.groups


# ---------------------------------------------------------------- registry entries
def _supports(spec: ConvSpec) -> str | None:
    if spec.kernel_size == (3, 3) and spec.stride == (1, 1) and spec.dilation == (1, 1):
        return None
    what = []
    if spec.kernel_size != (3, 3):
        what.append(f"kernel {spec.kernel_size}")
    if spec.stride != (1, 1):
        what.append(f"stride {spec.stride}")
    if spec.dilation != (1, 1):
        what.append(f"dilation {spec.dilation}")
    return "needs a 3x3 kernel with stride 1 and dilation 1; got " + ", ".join(what)


def _transform(m: int) -> Callable[[np.ndarray, ConvSpec], np.ndarray]:
    def transform_weight(weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return transform_filter(weight, spec.groups, m)
    transform_weight.__doc__ = f"The F({m}x{m},3x3) filter transform U = G g G^T (cacheable)."
    return transform_weight


def _stages(m: int) -> Callable[..., Sequence[tuple[str, Callable[[], Any]]]]:
    """The time split for ``convlab bench --split``: each call runs the pipeline up to
    and including its stage (the output of a partial run is garbage, never returned
    to anyone)."""
    def stages(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
               transformed_weight: Any) -> Sequence[tuple[str, Callable[[], Any]]]:
        u = transformed_weight
        steps = [("input transform", 1), ("GEMMs", 3), ("output transform", 7)]
        if u is None:  # the filter transform is timed as part of the first stage
            steps[0] = ("filter + input transform", 1)
        return [(name, partial(_run, x, weight, bias, spec, m, u, None, mask))
                for name, mask in steps]
    return stages


def _items_per_thread(spec: ConvSpec, m: int, tb: int, kb: int) -> int:
    """Scratch items one thread uses: its V block, M block, transform scratch, input rows."""
    alpha, cg = m + 2, spec.in_channels // spec.groups
    tiles_w = _cdiv(spec.out_width, m)
    return alpha * alpha * (cg + kb + max(cg, kb)) * tb + alpha * (tiles_w * m + 2)


def _multiplies(m: int) -> Callable[[ConvSpec], int]:
    """F(m x m, 3 x 3)'s real multiplies: (m+2)^2 per output tile and (c, k) pair."""
    def multiplies(spec: ConvSpec) -> int:
        pairs = spec.in_channels // spec.groups * spec.out_channels
        return _tiles(spec, m) * (m + 2) ** 2 * pairs
    return multiplies


def _workspace(m: int):
    def workspace(spec: ConvSpec, itemsize: int) -> int:
        tb, kb, kper = plan(spec, m, itemsize)
        u_items = (m + 2) ** 2 * spec.out_channels * spec.in_channels // spec.groups
        threads = numba.get_num_threads()
        shared_v = ((m + 2) ** 2 * spec.in_channels * _tiles(spec, m)
                    if _shares_v(spec, m, tb, kper) else 0)
        return (u_items + shared_v + threads * _items_per_thread(spec, m, tb, kb)) * itemsize
    return workspace


# algo="auto" (measured with a sweep of 3x3 layers, C = K = 4..256, 7..56 pixels, batch 1
# and 8, against the best of im2col and parallel; `convlab bench --suite sweep3x3 --kernels
# winograd_f2,winograd_f4,im2col,parallel` measures the sweep again on your machine):
# * with fewer than 32 channels per group in or out, the transforms cost more than the
#   multiplies they save: parallel wins at batch 8 (Winograd at 0.4-0.9x of it);
# * F(4,3) needs tiles to amortise its per-call filter transform (36 values per weight
#   unless Conv2d caches it): under 32 tiles F(2,3) (16 per weight) was faster (1.3-1.7x
#   vs 0.5-1.3x of the best alternative on 4-16 tile layers); from 32 tiles on F(4,3)
#   matched or beat F(2,3) everywhere, and beat the alternatives 1.2-2.5x.
AUTO_MIN_CHANNELS = 32
AUTO_MIN_TILES_F4 = 32


def _few_channels(spec: ConvSpec) -> str | None:
    cg, kg = spec.in_channels // spec.groups, spec.out_channels // spec.groups
    if min(cg, kg) >= AUTO_MIN_CHANNELS:
        return None
    return (f"only {cg} input / {kg} output channels per group (< {AUTO_MIN_CHANNELS}): "
            "the tile transforms cost more than the saved multiplies")


def _auto_when_f4(spec: ConvSpec) -> str | None:
    tiles = _tiles(spec, 4)
    if tiles < AUTO_MIN_TILES_F4:
        return (f"only {tiles} output tiles (< {AUTO_MIN_TILES_F4}): its filter transform "
                "is not paid back; F(2,3) is faster here")
    return _few_channels(spec)


@register("winograd_f2", description="Winograd F(2x2,3x3): 2.25x fewer multiplies",
          supports=_supports, rtol=5e-6, workspace=_workspace(2), transform_weight=_transform(2),
          stages=_stages(2), multiplies=_multiplies(2), nonfinite=NonFinite.WINOGRAD_TILES,
          auto_rank=11, auto_when=_few_channels, ladder=6)
def conv2d_winograd_f2(x, weight, bias, spec, transformed_weight=None):
    return winograd(x, weight, bias, spec, 2, transformed_weight)


@register("winograd_f4", description="Winograd F(4x4,3x3): 4x fewer multiplies",
          supports=_supports, rtol=5e-5, workspace=_workspace(4), transform_weight=_transform(4),
          stages=_stages(4), multiplies=_multiplies(4), nonfinite=NonFinite.WINOGRAD_TILES,
          auto_rank=10, auto_when=_auto_when_f4, ladder=7)
def conv2d_winograd_f4(x, weight, bias, spec, transformed_weight=None):
    return winograd(x, weight, bias, spec, 4, transformed_weight)


# F(6,3) is never picked by auto: it was no faster than F(4,3) on any layer measured
# (its 8x8 tiles waste work on small images, and U is 64/9 times the weight).
@register("winograd_f6", description="Winograd F(6x6,3x3): 5.1x fewer multiplies",
          supports=_supports, rtol=2e-4, workspace=_workspace(6), transform_weight=_transform(6),
          stages=_stages(6), multiplies=_multiplies(6), nonfinite=NonFinite.WINOGRAD_TILES,
          ladder=8)
def conv2d_winograd_f6(x, weight, bias, spec, transformed_weight=None):
    return winograd(x, weight, bias, spec, 6, transformed_weight)


# ---------------------------------------------------------------- Numba stages
@njit(parallel=True, cache=True)
def _filter_transform(w, u, m):
    n_out, cg = w.shape[0], w.shape[1]
    alpha = m + 2
    w_flat, u_flat = w.reshape(-1), u.reshape(-1)
    for k in prange(n_out):
        # float64 scratch holding every input channel at once, so each pass is one
        # long SIMD sweep: the 9 taps, then G g (columns), then (G g) G^T (rows)
        taps = np.empty((3, 3 * cg))  # taps[p, q * cg + c] = w[k, c, p, q]
        cols = np.empty((alpha, 3 * cg))
        row = np.empty((alpha, cg))
        taps_flat, row_flat = taps.reshape(-1), row.reshape(-1)
        for pq in range(9):
            _copy(w_flat, k * cg * 9 + pq, 9, taps_flat, pq * cg, 1, cg)
        g(m, taps, cols)
        for a in range(alpha):
            g(m, cols[a].reshape((3, cg)), row)
            for b in range(alpha):  # u[a * alpha + b, k, :] = row[b], rounded once
                _copy(row_flat, b * cg, 1, u_flat, ((a * alpha + b) * n_out + k) * cg, 1, cg)


@njit(parallel=True, cache=True)
def _shared_v(x, v_all, m, top, left, tiles_h, tiles_w, cb, work):  # pragma: no cover
    """v_all[:, g, c, :] = B^T d B of every tile, for all channels: jobs of ``cb`` input
    channels dealt to the workers, each transformed in the worker's own buffers and
    copied into the shared V.  With few tiles and many channels (ResNet's 512ch@7x7 at
    batch 8: 32 tiles) the threads split the output channels (``plan``); before, each
    transformed the whole input for its own GEMMs: twice the work on 2 threads, in loops
    as short as a 7x7 image's tile rows (measured at 512ch@7x7: 1.9 ms of 7.5)."""
    alpha2, groups, cg, nt = v_all.shape
    alpha = m + 2
    blocks = (cg + cb - 1) // cb
    n_jobs = groups * blocks
    n_workers = work.shape[0]
    for worker in prange(n_workers):
        buf = work[worker]
        for job in range(worker, n_jobs, n_workers):
            g = job // blocks
            c0 = (job % blocks) * cb
            cn = min(cb, cg - c0)
            size = alpha2 * cn * nt
            v = buf[:size].reshape((alpha2, cn, nt))
            scratch = buf[size:2 * size]
            rows = buf[2 * size:2 * size + alpha * (tiles_w * m + 2)].reshape(
                (alpha, tiles_w * m + 2))
            _input_tiles(x, v, scratch, rows, g * cg + c0, 0, m, top, left, tiles_h, tiles_w)
            for a in range(alpha2):
                v_all[a, g, c0:c0 + cn] = v[a]


@njit(parallel=True, cache=True)
def _convolve(x, u, bias, out, m, top, left, tb, kb, kper, stage_mask, work, v_all):
    n_batch = x.shape[0]
    alpha2, groups, kg, cg = u.shape
    alpha = m + 2
    _, _, out_h, out_w = out.shape
    tiles_h, tiles_w = (out_h + m - 1) // m, (out_w + m - 1) // m
    n_tiles = n_batch * tiles_h * tiles_w
    n_tblocks = (n_tiles + tb - 1) // tb
    n_ksplits = (kg + kper - 1) // kper
    n_jobs = n_tblocks * groups * n_ksplits
    n_workers = work.shape[0]
    for worker in prange(n_workers):  # one per thread; jobs dealt out round-robin
        # this thread's buffers: V, M (kb channels at a time), transform scratch, input rows
        buf = work[worker]
        v_buf, buf = buf[:alpha2 * cg * tb], buf[alpha2 * cg * tb:]
        m_buf, buf = buf[:alpha2 * kb * tb], buf[alpha2 * kb * tb:]
        scratch, buf = buf[:alpha2 * max(cg, kb) * tb], buf[alpha2 * max(cg, kb) * tb:]
        rows = buf[:alpha * (tiles_w * m + 2)].reshape((alpha, tiles_w * m + 2))
        for job in range(worker, n_jobs, n_workers):
            t0 = (job // (groups * n_ksplits)) * tb
            nt = min(tb, n_tiles - t0)
            g = (job // n_ksplits) % groups
            k_lo = (job % n_ksplits) * kper
            k_hi = min(kg, k_lo + kper)
            v_own = v_buf[:alpha2 * cg * nt].reshape((alpha2, cg, nt))
            shared = v_all.shape[0] > 0  # transformed already, all tiles (_shared_v)
            if stage_mask & 1 and not shared:
                _input_tiles(x, v_own, scratch, rows, g * cg, t0, m, top, left, tiles_h,
                             tiles_w)
            for k0 in range(k_lo, k_hi, kb):
                kk = min(kb, k_hi - k0)
                mm = m_buf[:alpha2 * kk * nt].reshape((alpha2, kk, nt))
                if stage_mask & 2:
                    for a in range(alpha2):
                        if shared:
                            np.dot(u[a, g, k0:k0 + kk], v_all[a, g], mm[a])
                        else:
                            np.dot(u[a, g, k0:k0 + kk], v_own[a], mm[a])
                if stage_mask & 4:
                    _output_tiles(mm, scratch, out, bias, g * kg + k0, t0, m, tiles_h, tiles_w)


@njit(inline="always")
def _input_tiles(x, v, scratch, rows, c0, t0, m, top, left, tiles_h, tiles_w):
    """v[:, c, :] = B^T d B for channels c0.. and tiles t0.. (tile order: image, row, column)."""
    alpha = m + 2
    alpha2, cg, nt = v.shape
    height, width = x.shape[2], x.shape[3]
    wp = rows.shape[1]
    rows_flat, v_flat = rows.reshape(-1), v.reshape(-1)
    # 1. gather: v[i * alpha + j, c, t] = pixel (i, j) of tile t of channel c
    for c in range(cg):
        t = t0
        while t < t0 + nt:  # a run of tiles along one tile row
            tile_row, tx0 = t // tiles_w, t % tiles_w
            run = min(tiles_w - tx0, t0 + nt - t)
            n, y0 = tile_row // tiles_h, (tile_row % tiles_h) * m - top
            # the alpha input rows under these tiles, zero padded: padded columns
            # [p0, p1) are input columns [p0 - left, p1 - left)
            p0, p1 = tx0 * m, (tx0 + run) * m + 2
            lo, hi = min(max(left, p0), p1), min(max(left + width, p0), p1)
            for i in range(alpha):
                y = y0 + i
                row = rows[i]
                for p in range(p0, lo):
                    row[p] = 0
                for p in range(hi, p1):
                    row[p] = 0
                if 0 <= y < height:
                    _copy(x[n, c0 + c, y], lo - left, 1, row, lo, 1, hi - lo)
                else:
                    for p in range(lo, hi):
                        row[p] = 0
            for i in range(alpha):
                for j in range(alpha):  # pixel (i, j) of each tile: every m-th column
                    _copy(rows_flat, i * wp + p0 + j, m,
                          v_flat, ((i * alpha + j) * cg + c) * nt + t - t0, 1, run)
            t += run
    # 2. B^T d: down the columns, every (tile column j, channel, tile) in one sweep
    cols = scratch[:alpha2 * cg * nt].reshape((alpha, alpha * cg * nt))
    bt(m, v.reshape((alpha, alpha * cg * nt)), cols)
    # 3. (B^T d) B: along the rows, row i of every tile and channel in one sweep
    for i in range(alpha):
        bt(m, cols[i].reshape((alpha, cg * nt)),
           v[i * alpha:(i + 1) * alpha].reshape((alpha, cg * nt)))


@njit(inline="always")
def _output_tiles(mm, scratch, out, bias, k0, t0, m, tiles_h, tiles_w):
    """out[:, k0:k0+kk] for tiles t0.. = A^T M A + bias (mm is (alpha^2, kk, nt))."""
    alpha = m + 2
    alpha2, kk, nt = mm.shape
    out_h, out_w = out.shape[2], out.shape[3]
    # 1. A^T M: down the columns, every (j, k, t) in one sweep
    cols = scratch[:m * alpha * kk * nt].reshape((m, alpha * kk * nt))
    at(m, mm.reshape((alpha, alpha * kk * nt)), cols)
    # 2. (A^T M) A: along the rows, into mm's memory (no longer needed): y[i, j, k, t]
    y = mm.reshape(-1)[:m * m * kk * nt]
    for i in range(m):
        at(m, cols[i].reshape((alpha, kk * nt)), y[i * m * kk * nt:(i + 1) * m * kk * nt]
           .reshape((m, kk * nt)))
    # 3. scatter: output column j of a run of tiles is every m-th pixel of an output row
    out_flat = out.reshape(-1)
    for k in range(kk):
        b = bias[k0 + k]
        t = t0
        while t < t0 + nt:
            tile_row, tx0 = t // tiles_w, t % tiles_w
            run = min(tiles_w - tx0, t0 + nt - t)
            n, y0, x0 = tile_row // tiles_h, (tile_row % tiles_h) * m, tx0 * m
            for i in range(min(m, out_h - y0)):
                row0 = ((n * out.shape[1] + k0 + k) * out_h + y0 + i) * out_w + x0
                for j in range(min(m, out_w - x0)):
                    count = min(run, (out_w - x0 - j + m - 1) // m)  # ragged right edge
                    _copy_add(y, ((i * m + j) * kk + k) * nt + t - t0,
                              out_flat, row0 + j, m, count, b)
            t += run


@njit(inline="always")
def _copy(src, s0, s_step, dst, d0, d_step, n):
    """dst[d0 + q*d_step] = src[s0 + q*s_step] for q < n (1-D arrays).

    Unsigned indices on purpose: with signed ones Numba must allow for negative
    (from-the-end) indices, a fix-up per access in the hottest loops here."""
    s, d = np.uint64(s0), np.uint64(d0)
    s_inc, d_inc = np.uint64(s_step), np.uint64(d_step)
    for _ in range(n):
        dst[d] = src[s]
        s += s_inc
        d += d_inc


@njit(inline="always")
def _copy_add(src, s0, dst, d0, d_step, n, add):
    """dst[d0 + q*d_step] = src[s0 + q] + add for q < n: the bias, fused into the scatter."""
    s, d, d_inc = np.uint64(s0), np.uint64(d0), np.uint64(d_step)
    for _ in range(n):
        dst[d] = src[s] + add
        s += np.uint64(1)
        d += d_inc

"""Banded im2col: each thread lowers one band of output rows in its cache and multiplies it there.

``im2col`` (see that file) copies the input under every output pixel into one column
matrix, then runs one big GEMM: simple, but the column matrix is ``kh*kw`` times the
input (49x for a 7x7 stem, 9x for a 3x3) and goes to memory and back, and at stride 2
the input is first padded and split into stride phases (one more copy in memory).  For
strided layers (ResNet's 7x7/2 stem, its stride-2 3x3 downsampling, MobileNetV2's 3x3/2
stem) that traffic is much of the time.

This kernel cuts the output into bands of rows, one task per (image, band), spread
over Numba's threads by a ``prange``.  Deep layers at small planes (ResNet's 256->512
stride-2 layer at 14x14: a 4.7 MB weight against 0.45 MB of columns per image) turn this
round: every task streams the whole weight through the cache for a thin GEMM, so there a
task takes whole images, several at once, until its column block is as large as the
weight or the batch is shared out one block per thread (:func:`task_shape`).  A task:

1. **splits its band's input rows into stride phases**, zero-padded, in a small private
   buffer (``parallel.phase_planes`` explains the phase planes; here only the rows the
   band's taps reach, so the split stays in cache and costs no pass over memory).  In
   the phase planes a strided convolution reads like a stride-1 one: tap ``r = (c, p,
   q)`` of every output of the band sits at one fixed offset ``off[r]`` from that
   output's flat position ``i*Ws + j`` (``parallel.tap_offsets``);
2. **lowers the band** into a private column block ``cols[(c, p, q), (i, j)]`` sized to
   stay in the core's L2 (``BAND_BYTES``): one *contiguous* copy per tap, the band's
   ``Ws - Wo`` junk columns per row included (computed, never stored; 3 % of the stem's
   columns, 7 % at 28x28);
3. **multiplies** ``W (K x C*kh*kw) @ cols`` with a *single-threaded* sgemm/dgemm
   (:mod:`convlab.threads`: OpenBLAS's own threads are never woken) into a private
   result block;
4. **writes** the block's real columns into the output with the bias, while in cache.

No padded copy in memory, no column matrix in memory: the input is read about once
per task from memory, then ``kh*kw / (sh*sw)`` times from cache, the output written
once.  Measured (batch 8, 2 threads, one Intel Xeon with AVX-512, NumPy first, in
``convlab bench --model resnet18``): the first version lowered straight from the input
with strided reads (one short strided copy per tap and output row); lowering from the
task's phase planes took the stem from 16.2 to 12.7 ms and the stride-2 3x3 layers
from 6.7 / 6.0 / 5.8 to 6.4 / 5.2 / 5.3 ms.  What is left is the GEMM: 4.1 of the 64->128
layer's 5.4 ms alone, at OpenBLAS's single-core rate (~135 GFLOP/s a core here), where
PyTorch's whole layer takes 3.8.

Cost: N*K*(C/g*kh*kw)*Ho*Wo multiply-adds (plus the junk columns) at single-core GEMM
speed on every thread, plus the split and the lowering (C*kh*kw*rows*Ws values per band,
written to L2).  Limits: none (any kernel size, stride, dilation, padding and groups: one
lowering and GEMM per group, slow for depthwise layers, whose per-group GEMMs are 1 x 9);
float32 and float64.  ``algo="auto"`` picks it for ungrouped strided layers with a kernel
larger than 1x1 (``_auto_when``), the 7x7 stem included; measure it with ``convlab bench
--model resnet18`` (its stem and stride-2 layers) or ``convlab bench --suite resnet
--layers res_stem --kernels banded,parallel,im2col,torch``.

Source: the lowering is Chellapilla et al. 2006, "High Performance Convolutional Neural
Networks for Document Processing"; lowering in cache-sized blocks and multiplying each
at once is how Caffe2/XNNPACK-style "indirect" and blocked im2col kernels avoid the
column matrix's memory traffic.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import parallel_region, single_threaded_blas
from .parallel import fill_phase_rows, plane_shape, tap_offsets, used_phases
from .registry import register

# bytes of one task's column block: about half of a core's L2 (1 MiB on Zen 4, 512 KiB
# on Zen 3), leaving room for the result block and the weight rows streaming through
BAND_BYTES = 384 * 1024


def _auto_when(spec: ConvSpec) -> str | None:
    # The 7x7 stem over 3 channels once went to parallel's direct loops (on a Zen 4, 14.1
    # ms against the first banded's 17.0).  Since the lowering reads the task's phase
    # planes, banded is ahead on it too: 11.9 ms against parallel's 14.6 alone, batch 8,
    # on an Intel Xeon with AVX-512 (``convlab bench --layers res_stem --kernels
    # parallel,banded,torch``); ``convlab tune`` measures it on any other machine.
    if spec.stride != (1, 1) and spec.kernel_size != (1, 1) and spec.groups == 1:
        return None
    return ("picked for ungrouped strided layers with a kernel larger than 1x1 only (stride "
            "1 has Winograd, im2col and parallel; 1x1 has pointwise; grouped layers' "
            "per-group GEMMs are small: parallel, depthwise)")


def band_rows(spec: ConvSpec, itemsize: int) -> int:
    """Output rows per task: the column block (C*kh*kw x rows*Wo) within BAND_BYTES."""
    per_row = spec.reduction_length * spec.out_width * itemsize
    return max(1, min(spec.out_height, BAND_BYTES // max(1, per_row)))


def task_shape(spec: ConvSpec, itemsize: int, threads: int) -> tuple[int, int]:
    """(images, rows) per task.  Bands of rows within BAND_BYTES, one image at a time,
    unless a group's weight is larger than BAND_BYTES: then each task's GEMM streams the
    whole weight from memory, and a task takes whole images (rows = Ho), as many as make
    its column block about the weight's size, but no more than ``ceil(N / threads)`` so
    that every thread gets a task.  Measured on ResNet-18's 256->512 14x14 stride-2 layer
    (batch 8, 2 threads, Zen 4): 10.9 ms in bands of 5 rows, 6.7 ms as 2 tasks of 4
    images (the GEMM alone, at OpenBLAS's single-core sgemm rate, takes 5.7 ms of it)."""
    rows = band_rows(spec, itemsize)
    weight_bytes = spec.out_channels // spec.groups * spec.reduction_length * itemsize
    if weight_bytes <= BAND_BYTES:
        return 1, rows
    per_image = spec.reduction_length * spec.out_height * spec.out_width * itemsize
    share = -(-spec.batch // max(1, threads))
    return max(1, min(share, weight_bytes // max(1, per_image))), spec.out_height


@register("banded", description="banded im2col: each thread lowers a band of output rows "
                                "in its cache and multiplies it there (strided layers)",
          rtol=1e-5, auto_rank=17, auto_when=_auto_when)
def conv2d_banded(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                  spec: ConvSpec) -> np.ndarray:
    k_out = spec.out_channels
    out = np.empty(spec.batched_output_shape, dtype=x.dtype)
    b = np.zeros(k_out, x.dtype) if bias is None else bias
    imgs, rows = task_shape(spec, x.dtype.itemsize, numba.get_num_threads())
    (kh, _), (sh, sw), (dh, _), (top, _, left, _) = (
        spec.kernel_size, spec.stride, spec.dilation, spec.padding)
    # a task's phase planes: its band's rows plus the rows its taps reach below them
    hl = rows + (kh - 1) * dh // sh
    ws = plane_shape(spec)[1]
    off = tap_offsets(spec, hl, ws)
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas(), \
            parallel_region():
        _banded(x, weight.reshape(k_out, spec.reduction_length), b, out, off, used_phases(spec),
                hl, ws, sh, sw, top, left, imgs, rows, spec.groups)
    return out


@njit(parallel=True, cache=True)
def _banded(x, w, bias, out, off, used, hl, ws, sh, sw, top, left, imgs, rows,
            groups):  # pragma: no cover
    """off[r]: where tap r = (c, p, q) sits from the window's corner in a task's phase
    planes (``parallel.tap_offsets`` for planes of hl x ws); used[a, b]: the phases some
    tap reads; (imgs, rows): a task's block of images and output rows."""
    n_batch = x.shape[0]
    k_out, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    cg, kg = x.shape[1] // groups, k_out // groups
    reduction = off.shape[0]
    n_bands = (ho + rows - 1) // rows
    n_blocks = (n_batch + imgs - 1) // imgs
    for task in prange(n_blocks * n_bands):
        block, band = task // n_bands, task % n_bands
        n0 = block * imgs
        ni = min(imgs, n_batch - n0)
        i0 = band * rows
        nr = min(rows, ho - i0)
        # an image's band is the flat positions i*ws + j of its rows in the planes: one
        # contiguous range per tap, ws - wo junk columns per row (computed, never stored)
        seg = (nr - 1) * ws + wo
        planes = np.empty((cg, sh, sw, hl, ws), x.dtype)
        pf = planes.reshape(-1)
        cols = np.empty((reduction, ni * seg), x.dtype)
        res = np.empty((kg, ni * seg), x.dtype)
        for g in range(groups):  # one lowering and one GEMM per group (usually one)
            for m in range(ni):
                # 1. the band's input rows (nr, and the hl - rows its taps reach below),
                # zero-padded and split into the stride phases some tap reads
                for c in range(cg):
                    for a in range(sh):
                        for b in range(sw):
                            if used[a, b]:
                                fill_phase_rows(planes[c, a, b, :nr + hl - rows],
                                                x[n0 + m, g * cg + c], i0, a, b, sh, sw, top,
                                                left)
                # 2. the lowering: one contiguous copy per tap, from cache
                for r in range(reduction):
                    cols[r, m * seg:(m + 1) * seg] = pf[off[r]:off[r] + seg]
            np.dot(w[g * kg:(g + 1) * kg], cols, res)
            for k in range(kg):  # 3. the real columns, with the bias, while in cache
                bk = bias[g * kg + k]
                for m in range(ni):
                    for i in range(nr):
                        src = res[k, m * seg + i * ws:m * seg + i * ws + wo]
                        dst = out[n0 + m, g * kg + k, i0 + i]
                        for j in range(wo):
                            dst[j] = src[j] + bk

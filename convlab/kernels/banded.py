"""Banded im2col: each thread lowers one band of output rows in its cache and multiplies it there.

``im2col`` (see that file) copies the input under every output pixel into one column
matrix, then runs one big GEMM: simple, but the column matrix is ``kh*kw`` times the
input (49x for a 7x7 stem, 9x for a 3x3) and goes to memory and back, and at stride 2
the input is first padded and split into stride phases (two more copies).  For strided
layers (ResNet's 7x7/2 stem, its stride-2 3x3 downsampling, MobileNetV2's 3x3/2 stem)
that traffic is much of the time.

This kernel cuts the output into bands of rows, one task per (image, band), spread
over Numba's threads by a ``prange``.  Deep layers at small planes (ResNet's 256->512
stride-2 layer at 14x14: a 4.7 MB weight against 0.45 MB of columns per image) turn this
round: every task streams the whole weight through the cache for a thin GEMM, so there a
task takes whole images, several at once, until its column block is as large as the
weight or the batch is shared out one block per thread (:func:`task_shape`).  A task:

1. **lowers its band** into a private column block ``cols[(c, p, q), (i, j)]`` sized to
   stay in the core's L2 (``BAND_BYTES``): for each tap row, the output columns whose
   input column lands inside the image form one range, computed up front, so the copy
   is a strided slice with no bounds test; taps on the padding are zeros written once;
2. **multiplies** ``W (K x C*kh*kw) @ cols`` with a *single-threaded* sgemm/dgemm
   (:mod:`convlab.threads`: OpenBLAS's own threads are never woken) into a private
   result block;
3. **writes** the block into the output with the bias, while it is in cache.

No padded copy, no phase split, no column matrix in memory: the input is read about
``kh*kw / (sh*sw)`` times from cache (each value is under that many windows), the
output written once.  The GEMM does the layer's multiply-adds exactly (no junk columns).

Cost: N*K*(C/g*kh*kw)*Ho*Wo multiply-adds at single-core GEMM speed on every thread,
plus the lowering (C*kh*kw*Ho*Wo values per image, written to L2).  Limits: none (any
kernel size, stride, dilation, padding and groups: one lowering and GEMM per group, slow
for depthwise layers, whose per-group GEMMs are 1 x 9); float32 and float64.
``algo="auto"`` picks it for ungrouped strided layers with a kernel larger than 1x1,
except a thin input under a big kernel (the 7x7 stem over 3 channels: its GEMM's 147-long
reduction is short for BLAS, and ``parallel``'s direct loops were faster) (``_auto_when``);
measure it with ``convlab bench --model resnet18``
(its stem and stride-2 layers) or ``convlab bench --suite resnet --layers res_stem
--kernels banded,parallel,im2col,torch``.

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
from .registry import register

# bytes of one task's column block: about half of a core's L2 (1 MiB on Zen 4, 512 KiB
# on Zen 3), leaving room for the result block and the weight rows streaming through
BAND_BYTES = 384 * 1024


# A thin input under a big kernel (ResNet's 3->64 7x7/2 stem) goes to parallel's
# direct loops, register-blocked over output channels and width: measured quiet, batch
# 8, interleaved medians, 14.1-14.3 ms against banded's 17.0-17.5 (a 3x3/2 stem with 3
# channels stays here: 3.4 against 3.6).
THIN_CHANNELS = 8
BIG_KERNEL_TAPS = 25


def _auto_when(spec: ConvSpec) -> str | None:
    kh, kw = spec.kernel_size
    if spec.stride != (1, 1) and spec.kernel_size != (1, 1) and spec.groups == 1:
        if spec.in_channels < THIN_CHANNELS and kh * kw >= BIG_KERNEL_TAPS:
            return (f"{spec.in_channels} input channels under a {kh}x{kw} kernel: parallel's "
                    "direct loops were faster on the 7x7 stem measured (14.1 vs 17.0 ms)")
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
    n_batch, k_out, ho, wo = spec.batched_output_shape
    out = np.empty(spec.batched_output_shape, dtype=x.dtype)
    b = np.zeros(k_out, x.dtype) if bias is None else bias
    imgs, rows = task_shape(spec, x.dtype.itemsize, numba.get_num_threads())
    (sh, sw), (dh, dw), (top, _, left, _) = spec.stride, spec.dilation, spec.padding
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas(), \
            parallel_region():
        _banded(x, weight.reshape(k_out, spec.reduction_length), b, out, spec.kernel_size[0],
                spec.kernel_size[1], sh, sw, dh, dw, top, left, imgs, rows, spec.groups)
    return out


@njit(parallel=True, cache=True)
def _banded(x, w, bias, out, kh, kw, sh, sw, dh, dw, top, left, imgs, rows,
            groups):  # pragma: no cover
    n_batch, height, width = x.shape[0], x.shape[2], x.shape[3]
    k_out, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    cg, kg = x.shape[1] // groups, k_out // groups
    reduction = cg * kh * kw
    # per filter column q: the output columns [lo, hi) whose input column is inside
    lo = np.empty(kw, np.int64)
    hi = np.empty(kw, np.int64)
    for q in range(kw):
        off = q * dw - left  # input column = j*sw + off
        first = 0 if off >= 0 else (-off + sw - 1) // sw
        last = (width - 1 - off) // sw + 1 if width - 1 - off >= 0 else 0
        lo[q] = min(first, wo)
        hi[q] = max(lo[q], min(wo, last))
    n_bands = (ho + rows - 1) // rows
    n_blocks = (n_batch + imgs - 1) // imgs
    for task in prange(n_blocks * n_bands):
        block, band = task // n_bands, task % n_bands
        n0 = block * imgs
        ni = min(imgs, n_batch - n0)
        i0 = band * rows
        nr = min(rows, ho - i0)
        # columns ordered (image, row, column): image m's rows follow image m-1's
        cols = np.empty((reduction, ni * nr * wo), x.dtype)
        res = np.empty((kg, ni * nr * wo), x.dtype)
        for g in range(groups):  # one lowering and one GEMM per group (usually one)
            for c in range(cg):
                for p in range(kh):
                    for q in range(kw):
                        r = (c * kh + p) * kw + q
                        a, z = lo[q], hi[q]
                        x0 = a * sw + q * dw - left
                        for m in range(ni):
                            for i in range(nr):
                                start = (m * nr + i) * wo
                                dst = cols[r, start:start + wo]
                                y = (i0 + i) * sh + p * dh - top
                                if y < 0 or y >= height:
                                    dst[:] = 0
                                    continue
                                dst[:a] = 0
                                dst[z:] = 0
                                if z > a:
                                    dst[a:z] = x[n0 + m, g * cg + c, y,
                                                 x0:x0 + (z - a - 1) * sw + 1:sw]
            np.dot(w[g * kg:(g + 1) * kg], cols, res)
            for k in range(kg):
                for m in range(ni):
                    for i in range(nr):
                        start = (m * nr + i) * wo
                        src = res[k, start:start + wo]
                        dst = out[n0 + m, g * kg + k, i0 + i]
                        for j in range(wo):
                            dst[j] = src[j] + bias[g * kg + k]

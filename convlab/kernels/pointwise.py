"""Pointwise (1x1) convolution: a matrix product per image, no lowering.

A 1x1 convolution with no padding mixes channels at each pixel and nothing else::

    out[n, k, i, j] = bias[k] + sum_c w[k, c] * x[n, c, i*sh, j*sw]

In NCHW each image ``x[n]`` already *is* a (C, H*W) matrix, so at stride 1 the layer
is ``out[n] = W @ x[n]`` with ``W`` the weight viewed as (K, C): no column matrix, no
copy.  At stride 2 (ResNet's 1x1/2 shortcut) only every other row and column is read:
the task copies ``x[n, :, ::sh, ::sw]`` into a (C, Ho*Wo) buffer of its own (a quarter
of the image, L2-sized at ResNet's sizes) and multiplies that.

How the work is split: one Numba ``prange`` over (image, block of output channels)
tasks, each calling a *single-threaded* sgemm/dgemm (:mod:`convlab.threads`: OpenBLAS's
own threads are never woken, so none spin after the layer) and adding the bias while
its block of the output is in cache.  With at least as many images as threads each
task is a whole image; a batch of one is split by output channels.  Compared with
``im2col`` on the same layer: no lowering at stride 2 (im2col pads, splits the input
into stride phases and copies it into columns), one parallel region for the whole batch
instead of one GEMM after another each split across the threads.

Cost: the N*K*C*Ho*Wo multiply-adds of the layer, at the BLAS's speed on a (K, C) x
(C, Ho*Wo) product per image; traffic: the input read once (at stride 2, a quarter of
it, through the task's buffer), the output written once.  Limits: 1x1 kernels with
groups 1 and no padding (any stride; dilation means nothing for a 1x1); float32 and
float64.  Measure it with ``convlab bench --suite resnet --layers res_down --kernels
pointwise,im2col,parallel,torch`` and ``convlab bench --suite mobilenet --layers
mb_pw_32to64x112,mb_pw_512x14 --kernels pointwise,im2col,torch``.

Source: the 1x1 convolution as a GEMM is the observation behind every "pointwise" path
in inference libraries (e.g. Chellapilla et al. 2006, "High Performance Convolutional
Neural Networks for Document Processing", for the lowering it avoids here).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ..shapes import ConvSpec
from ..threads import parallel_region, single_threaded_blas
from .registry import register


def _supports(spec: ConvSpec) -> str | None:
    why = []
    if spec.kernel_size != (1, 1):
        why.append(f"kernel size {spec.kernel_size}")
    if spec.groups != 1:
        why.append(f"groups {spec.groups}")
    if any(spec.padding):
        why.append(f"padding {spec.padding}")
    if not why:
        return None
    return "needs a 1x1 kernel, groups 1 and no padding; got " + ", ".join(why)


@register("pointwise", description="pointwise: 1x1 as one matrix product per image, "
                                   "no lowering (strided: a subsampled copy)",
          supports=_supports, rtol=1e-5, auto_rank=16)
def conv2d_pointwise(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                     spec: ConvSpec) -> np.ndarray:
    n_batch, k_out, ho, wo = spec.batched_output_shape
    out = np.empty((n_batch, k_out, ho * wo), dtype=x.dtype)
    b = np.zeros(k_out, x.dtype) if bias is None else bias
    threads = numba.get_num_threads()
    k_blocks = min(k_out, -(-threads // n_batch))  # a batch of one: split the channels
    strided = spec.stride != (1, 1)
    sh, sw = spec.stride
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas(), \
            parallel_region():
        _pointwise(x, weight.reshape(k_out, spec.in_channels), b, out, sh, sw, ho, wo,
                   k_blocks, strided)
    return out.reshape(spec.batched_output_shape)


@njit(parallel=True, cache=True)
def _pointwise(x, w, bias, out, sh, sw, ho, wo, k_blocks, strided):  # pragma: no cover
    n_batch, c_in = x.shape[0], x.shape[1]
    k_out = w.shape[0]
    per = (k_out + k_blocks - 1) // k_blocks
    for task in prange(n_batch * k_blocks):
        n, kb = task // k_blocks, task % k_blocks
        k0, k1 = kb * per, min(k_out, (kb + 1) * per)
        if k0 >= k1:
            continue
        if strided:  # this task's subsampled copy of image n: (C, Ho*Wo), contiguous
            xs = np.empty((c_in, ho * wo), x.dtype)
            for c in range(c_in):
                for i in range(ho):
                    row = x[n, c, i * sh]
                    for j in range(wo):
                        xs[c, i * wo + j] = row[j * sw]
        else:
            xs = x[n].reshape(c_in, ho * wo)
        dst = out[n, k0:k1]
        np.dot(w[k0:k1], xs, dst)
        for k in range(k1 - k0):
            dst[k] += bias[k0 + k]

"""Naive backward: the forward's seven loops, run backwards, compiled by Numba.

Algorithm.  The forward (``naive.py``) visits every output and *gathers* the
products of its window.  The backward visits the same outputs in the same order
and *scatters*: output (n, k, i, j) received ``g = grad_output[n, k, i, j]``, and
every product ``x[...] * w[k, c, p, q]`` that fed it passes ``g`` on to both factors::

    for n, k, i, j:                      # every output element (4 loops)
        g = grad_output[n, k, i, j]
        for c, p, q:                     # every product that fed it (3 loops)
            y, x = i*sh + p*dh - top, j*sw + q*dw - left
            grad_x[n, c0+c, y, x] += g * w[k, c, p, q]     # (grad_input)
            grad_w[k, c, p, q]    += g * x[n, c0+c, y, x]  # (grad_weight)

A tap that falls in the zero padding read a constant 0: it has no input cell to
pass a gradient to (skipped), and adds ``g * 0`` to the weight's gradient: nothing,
unless ``g`` is NaN or Inf, where PyTorch's gradient (and the oracle's) is NaN, so
the product is still made.  (Other padding modes arrive here as explicitly padded
input; ``convlab.backward`` folds the padded gradient back onto the input cells.)

Cost: the forward's N*K*(C/g)*kh*kw*Hout*Wout multiply-adds per gradient, one
core, scalar code, like ``naive.py``; no workspace.  Worse than the forward, the
scatter *writes* to memory in its inner loop (``+=`` into grad_x or grad_w), where
the forward kept its sum in a register: the kernels in ``im2col_backward.py`` and
``parallel_backward.py`` turn both gradients back into gathers.

The scatter is also why this kernel is single-threaded: two outputs whose windows
overlap add into the same ``grad_x`` cell, and every output adds into every
``grad_w`` cell.  Split the outputs among threads and those ``+=`` race (notebook
06).  Summation order is the loop order above: deterministic.

Accuracy.  A weight's gradient sums N*Hout*Wout products (every output position of
every image), far more than an output's C/g*kh*kw: summed one by one in float32,
the rounding error grows with that count.  So ``grad_w`` is accumulated in float64
(each product is still made in the input's dtype) and rounded to float32 once, at
the end; ``grad_x`` cells receive only K/g*kh*kw products each and stay in the
input's dtype.

Limits: none; every stride, padding, dilation and group count, float32 and float64.

Source: the chain rule on the forward's definition; Stanford cs231n's
``conv_backward_naive`` is the same scatter (the exercise ``conv_backward`` asks for it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..shapes import ConvSpec
from .registry import register


@register("naive", op="grad_input", rtol=1e-5, auto_rank=100, macs_per_s=2e8,
          description="every output scatters grad x weight back to the inputs that fed "
                      "it (@njit, one core)")  # fmt: skip
def grad_input_naive(grad_output: np.ndarray, weight: np.ndarray,
                     spec: ConvSpec) -> np.ndarray:
    if spec.batch == 0 or spec.in_channels == 0:  # no product was made: torch's zeros
        return np.zeros((spec.batch, spec.in_channels, spec.height, spec.width),
                        dtype=grad_output.dtype)
    grad_x = np.zeros((spec.batch, spec.in_channels, spec.height, spec.width),
                      dtype=grad_output.dtype)
    _scatter_input(grad_output, weight, grad_x, spec.stride[0], spec.stride[1],
                   spec.padding[0], spec.padding[2], spec.dilation[0], spec.dilation[1],
                   spec.groups)  # fmt: skip
    return grad_x


@register("naive", op="grad_weight", rtol=1e-5, auto_rank=100, macs_per_s=2e8,
          description="every output scatters grad x input onto the weights that "
                      "multiplied it (@njit, one core)")  # fmt: skip
def grad_weight_naive(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    if spec.batch == 0 or spec.in_channels == 0:  # no product was made: torch's zeros
        return np.zeros(spec.weight_shape, dtype=x.dtype)
    # each weight's gradient is a sum of N*Hout*Wout products: summed one by one in
    # float32 its rounding error grows with that count (5e-4 on one 128x128 image with
    # a 1x1 weight), so the sums are kept in float64 and rounded once at the end
    grad_w = np.zeros(spec.weight_shape, dtype=np.float64)
    _scatter_weight(x, grad_output, grad_w, spec.stride[0], spec.stride[1], spec.padding[0],
                    spec.padding[2], spec.dilation[0], spec.dilation[1], spec.groups,
                    x.dtype.type(0))
    return grad_w.astype(x.dtype)


@njit(cache=True)
def _scatter_input(go, w, gx, sh, sw, top, left, dh, dw, groups):
    n_batch, _, height, width = gx.shape
    n_out, cg, kh, kw = w.shape
    _, _, out_h, out_w = go.shape
    kg = n_out // groups
    for n in range(n_batch):
        for k in range(n_out):
            c0 = (k // kg) * cg  # first input channel of k's group
            for i in range(out_h):
                for j in range(out_w):
                    g = go[n, k, i, j]
                    for c in range(cg):
                        for p in range(kh):
                            y = i * sh + p * dh - top
                            if y < 0 or y >= height:
                                continue  # a zero of the padding: no input to reach
                            for q in range(kw):
                                xx = j * sw + q * dw - left
                                if xx >= 0 and xx < width:
                                    gx[n, c0 + c, y, xx] += g * w[k, c, p, q]


@njit(cache=True)
def _scatter_weight(x, go, gw, sh, sw, top, left, dh, dw, groups, zero):
    n_batch, _, height, width = x.shape
    n_out, cg, kh, kw = gw.shape
    _, _, out_h, out_w = go.shape
    kg = n_out // groups
    for n in range(n_batch):
        for k in range(n_out):
            c0 = (k // kg) * cg
            for i in range(out_h):
                for j in range(out_w):
                    g = go[n, k, i, j]
                    for c in range(cg):
                        for p in range(kh):
                            y = i * sh + p * dh - top
                            inside = y >= 0 and y < height
                            for q in range(kw):
                                xx = j * sw + q * dw - left
                                if inside and xx >= 0 and xx < width:
                                    gw[k, c, p, q] += g * x[n, c0 + c, y, xx]
                                else:  # the tap read a padding 0: g * 0 (NaN if g is)
                                    gw[k, c, p, q] += g * zero

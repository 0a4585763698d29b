"""Naive direct convolution: the seven nested loops, compiled by Numba.

Algorithm: exactly the loops of ``python.py``, but ``@njit`` turns them into
machine code: no bytecode dispatch, no boxed floats, array indexing becomes
pointer arithmetic.  That alone is worth two to three orders of magnitude
(``convlab bench --suite seed --kernels python,naive`` measures it on your
machine; notebook 03 does too).

    for n, k, i, j:                      # every output element (4 loops)
        acc = bias[k]
        for c, p, q:                     # every product that feeds it (3 loops)
            acc += x[n, c0+c, i*sh + p*dh - top, j*sw + q*dw - left] * w[k, c, p, q]

Cost: N*K*Hout*Wout*(C/groups)*kh*kw multiply-adds, one core, scalar code:
the innermost loop runs over ``q`` (kw = 3 taps) and jumps around the input,
so LLVM cannot vectorise it and the caches are used poorly.  No workspace.
``parallel.py`` keeps the same arithmetic and fixes those two things.

Limits: none; every stride, padding, dilation and group count.  Accumulates in
the output's dtype in the strict loop order (no ``fastmath``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..shapes import ConvSpec
from .registry import NonFinite, output_with_bias, register


@register("naive", description="the seven nested loops under @njit (one core)",
          rtol=1e-5, auto_rank=100, macs_per_s=3e8, nonfinite=NonFinite.SKIPS_PADDING,
          ladder=2)
def conv2d_naive(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                 spec: ConvSpec) -> np.ndarray:
    out = output_with_bias(spec, x.dtype, bias)
    _loops(x, weight, out, spec.stride[0], spec.stride[1], spec.padding[0], spec.padding[2],
           spec.dilation[0], spec.dilation[1], spec.groups)
    return out


@njit(cache=True)
def _loops(x, w, out, sh, sw, top, left, dh, dw, groups):
    n_batch, _, height, width = x.shape
    n_out, cg, kh, kw = w.shape
    _, _, out_h, out_w = out.shape
    kg = n_out // groups
    for n in range(n_batch):
        for k in range(n_out):
            c0 = (k // kg) * cg  # first input channel of k's group
            for i in range(out_h):
                for j in range(out_w):
                    acc = out[n, k, i, j]  # starts at the bias
                    for c in range(cg):
                        for p in range(kh):
                            y = i * sh + p * dh - top
                            if y < 0 or y >= height:
                                continue  # zero padding: the tap reads nothing
                            for q in range(kw):
                                xx = j * sw + q * dw - left
                                if xx >= 0 and xx < width:
                                    acc += x[n, c0 + c, y, xx] * w[k, c, p, q]
                    out[n, k, i, j] = acc

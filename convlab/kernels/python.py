"""Pure-Python loops: the baseline that shows why Numba exists.

Algorithm: the definition of cross-correlation, one multiply-add at a time::

    for n, k, i, j:                      # every output element
        for c, p, q:                     # every product that feeds it
            out[n,k,i,j] += x[n, g*Cg+c, i*sh + p*dh - top, j*sw + q*dw - left] * w[k,c,p,q]

Zero padding is implicit: a tap that falls outside the input is skipped.

Cost: N*K*Hout*Wout*(C/groups)*kh*kw multiply-adds, each one several bytecodes
and boxed floats: about 3 million multiply-adds (6-7 MFLOP/s) per second on a
2-core AMD EPYC, some ten thousand times slower than a BLAS GEMM (``convlab
bench --suite seed --kernels python,naive`` shows both, and the GEMM peak, on
your machine).  Memory: the output only.

Limits: every spec, but it refuses convolutions of more than
``MAX_MACS`` multiply-adds, which would take more than a second or two.
The *same* loops, compiled by Numba, are ``naive.py``.
"""

from __future__ import annotations

import numpy as np

from ..shapes import ConvSpec
from .registry import NonFinite, output_with_bias, register

MAX_MACS = 5_000_000  # a second or two at MACS_PER_S
MACS_PER_S = 3e6  # measured: see the module docstring


def _small_enough(spec: ConvSpec) -> str | None:
    if spec.macs() > MAX_MACS:
        return (f"is pure Python and would need {spec.macs():,} multiply-adds; it only runs "
                f"convolutions of at most {MAX_MACS:,} so it finishes in seconds "
                "(use algo='naive' for the same loops compiled by Numba)")
    return None


@register("python", description="pure-Python loops (the slow baseline)",
          supports=_small_enough, rtol=1e-5, macs_per_s=MACS_PER_S,
          nonfinite=NonFinite.SKIPS_PADDING, ladder=1)
def conv2d_python(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                  spec: ConvSpec) -> np.ndarray:
    out = output_with_bias(spec, x.dtype, bias)
    xl, wl, ol = x.tolist(), weight.tolist(), out.tolist()  # Python floats: no NumPy per element
    sh, sw = spec.stride
    dh, dw = spec.dilation
    top, left = spec.padding[0], spec.padding[2]
    cg = spec.in_channels // spec.groups
    kg = spec.out_channels // spec.groups
    kh, kw = spec.kernel_size
    for n in range(spec.batch):
        for k in range(spec.out_channels):
            c0 = (k // kg) * cg  # first input channel of k's group
            for i in range(spec.out_height):
                for j in range(spec.out_width):
                    acc = ol[n][k][i][j]
                    for c in range(cg):
                        for p in range(kh):
                            y = i * sh + p * dh - top
                            if y < 0 or y >= spec.height:
                                continue  # zero padding
                            for q in range(kw):
                                xx = j * sw + q * dw - left
                                if 0 <= xx < spec.width:
                                    acc += xl[n][c0 + c][y][xx] * wl[k][c][p][q]
                    ol[n][k][i][j] = acc
    return np.array(ol, dtype=x.dtype).reshape(spec.batched_output_shape)

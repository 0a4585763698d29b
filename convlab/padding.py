"""Padding the input by hand, for every ``padding_mode`` PyTorch has.

Zero padding can be left implicit (a kernel skips taps that fall outside the
input), but 'reflect', 'replicate' and 'circular' need real values, so
:func:`conv2d` materialises those borders here and hands the kernel an
explicitly padded input with a spec that has no padding left
(:meth:`ConvSpec.explicitly_padded`).  Kernels that prefer a zero-padded copy
(im2col, Winograd) call :func:`pad` too: one padding routine for all.

NumPy's names differ from PyTorch's: 'replicate' is ``np.pad(mode='edge')``,
'circular' is ``mode='wrap'``; 'reflect' (mirror without repeating the edge)
is the same in both.
"""

from __future__ import annotations

import numpy as np

from .shapes import ConvSpec

_NUMPY_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Return a new (N, C, H+top+bottom, W+left+right) array padded as ``spec`` says.

    ``x`` is batched (N, C, H, W); it is never modified.
    """
    top, bottom, left, right = spec.padding
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    return np.pad(x, widths, mode=_NUMPY_MODE[spec.padding_mode])

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

:func:`pad_adjoint` goes the other way, for gradients: the gradient w.r.t. a padded
input folded back onto the cells each border cell copied.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .shapes import ConvSpec

_NUMPY_MODE: dict[str, Literal["constant", "reflect", "edge", "wrap"]] = {
    "zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Return a new (N, C, H+top+bottom, W+left+right) array padded as ``spec`` says.

    ``x`` is batched (N, C, H, W); it is never modified.
    """
    top, bottom, left, right = spec.padding
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    return np.pad(x, widths, mode=_NUMPY_MODE[spec.padding_mode])


def pad_adjoint(grad_padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The gradient w.r.t. the unpadded input, from the gradient w.r.t. the input
    :func:`convlab.padding.pad` padded as ``spec`` says: the adjoint of ``pad``.

    ``pad`` copies input cells into the border; each copy passes its gradient back to
    the cell it copied.  To find that cell, pad the *indices* of the input cells the
    same way (NumPy does reflect/replicate/circular for us), then add every border
    cell's gradient onto the index it holds.  'zeros' borders copied nothing: crop.
    Returns a new (N, C, H, W) array of the gradient's dtype."""
    top, _, left, _ = spec.padding
    h, w = spec.height, spec.width
    inner = grad_padded[:, :, top:top + h, left:left + w]
    if spec.padding_mode == "zeros" or not any(spec.padding):
        return np.ascontiguousarray(inner)
    index = pad(np.arange(h * w).reshape(1, 1, h, w), spec)[0, 0]
    border = np.ones(index.shape, dtype=bool)
    border[top:top + h, left:left + w] = False
    n, c = grad_padded.shape[:2]
    out = np.ascontiguousarray(inner).reshape(n * c, h * w)
    # unbuffered add: cells copied more than once (a corner) get every copy's share.
    # NumPy's stubs type ufunc.at's indices as integers only, though its documentation
    # (and NumPy) take a tuple of slices and index arrays, as here.
    np.add.at(out, (slice(None), index[border]),  # type: ignore[arg-type]
              grad_padded.reshape(n * c, -1)[:, border.reshape(-1)])
    return out.reshape(n, c, h, w)

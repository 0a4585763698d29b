"""The float64 oracle of the backward pass: obviously correct, not fast.  No Numba.

Every backward kernel in convlab is tested against these, as every forward kernel is
tested against :func:`convlab.reference.conv2d_reference`.  They are written
straight from the forward's definition (cross-correlation)::

    out[n, k, i, j] = sum_{c, p, q} xpad[n, g*Cg + c, i*sh + p*dh, j*sw + q*dw] * w[k, c, p, q]

Each output is a sum of products, so its derivative with respect to one factor is
the other factor.  Collecting every path:

* **grad_input**: output (n, k, i, j) *scatters* ``grad_output[n, k, i, j] * w[k, c, p, q]``
  back to the padded input cell it read, ``(i*sh + p*dh, j*sw + q*dw)``; the padded
  gradient then *folds* back onto the input: zero padding drops its cells, reflect /
  replicate / circular padding add each padded cell onto the input cell it was a copy
  of (:func:`fold_padding`, the adjoint of :func:`convlab.padding.pad`);
* **grad_weight**: ``w[k, c, p, q]`` met ``xpad[n, c, i*sh + p*dh, j*sw + q*dw]`` in every
  output (n, k, i, j), so its gradient is ``sum_{n, i, j} grad_output[n, k, i, j] *
  xpad[...]``: the same strided slices as the forward oracle, contracted the other way;
* **grad_bias**: ``grad_output.sum((0, 2, 3))``.

Every (p, q) tap is a strided slice, as in the forward oracle; the channel (or
batch and position) sum is a ``np.tensordot`` in float64 (BLAS: fast enough to gate
the benchmark's full-size layers).
"""

from __future__ import annotations

import numpy as np

from .padding import pad
from .shapes import ConvSpec


def _source_index(coords: np.ndarray, size: int, mode: str) -> np.ndarray:
    """For padded coordinates ``coords`` (-pad_lo .. size+pad_hi-1) along one axis,
    the input coordinate each one holds a copy of; -1 for a zero (dropped)."""
    if mode == "zeros":
        return np.where((coords >= 0) & (coords < size), coords, -1)
    if mode == "reflect":  # mirror at the edge cell, without repeating it
        return np.where(coords < 0, -coords, np.where(coords >= size, 2 * (size - 1) - coords,
                                                      coords))
    if mode == "replicate":
        return np.clip(coords, 0, size - 1)
    if mode == "circular":
        return coords % size
    raise ValueError(f"unknown padding_mode {mode!r}")


def fold_padding(grad_padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The gradient w.r.t. the unpadded input, from the gradient w.r.t. the padded
    one: every padded cell adds onto the input cell it copied (nothing for a zero).
    The padding of one axis does not depend on the other, so rows fold first, then
    columns.  float64 (N, C, H, W)."""
    g = np.asarray(grad_padded, dtype=np.float64)
    top, bottom, left, right = spec.padding
    h, w = spec.height, spec.width
    rows = _source_index(np.arange(-top, h + bottom), h, spec.padding_mode)
    cols = _source_index(np.arange(-left, w + right), w, spec.padding_mode)
    by_rows = np.zeros(g.shape[:2] + (h, g.shape[3]))
    for a, y in enumerate(rows):
        if y >= 0:
            by_rows[:, :, y, :] += g[:, :, a, :]
    out = np.zeros(g.shape[:2] + (h, w))
    for b, x in enumerate(cols):
        if x >= 0:
            out[:, :, :, x] += by_rows[:, :, :, b]
    return out


def conv2d_input_reference(grad_output: np.ndarray, weight: np.ndarray,
                           spec: ConvSpec) -> np.ndarray:
    """float64 gradient of the convolution ``spec`` w.r.t. its (batched) input:
    (N, C, H, W), for batched ``grad_output`` (N, K, Hout, Wout), any padding mode."""
    go = np.asarray(grad_output, dtype=np.float64).reshape(spec.batched_output_shape)
    w = np.asarray(weight, dtype=np.float64)
    n, k, ho, wo = spec.batched_output_shape
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    g, cg, kg = spec.groups, spec.in_channels // spec.groups, k // spec.groups
    gxp = np.zeros((n, spec.in_channels, spec.padded_height, spec.padded_width))
    for grp in range(g):
        go_g = go[:, grp * kg:(grp + 1) * kg]
        w_g = w[grp * kg:(grp + 1) * kg]
        for p in range(kh):
            for q in range(kw):
                # every output scatters grad * w[k, c, p, q] to the cell tap (p, q) read
                contrib = np.tensordot(go_g, w_g[:, :, p, q], axes=([1], [0]))  # n, i, j, c
                gxp[:, grp * cg:(grp + 1) * cg, p * dh: p * dh + sh * (ho - 1) + 1: sh,
                    q * dw: q * dw + sw * (wo - 1) + 1: sw] += contrib.transpose(0, 3, 1, 2)
    return fold_padding(gxp, spec)


def conv2d_weight_reference(x: np.ndarray, grad_output: np.ndarray,
                            spec: ConvSpec) -> np.ndarray:
    """float64 gradient of the convolution ``spec`` w.r.t. its weight:
    (K, C/groups, kh, kw), for batched ``x`` and ``grad_output``, any padding mode."""
    xp = pad(np.asarray(x, dtype=np.float64).reshape(spec.batch, spec.in_channels,
                                                     spec.height, spec.width), spec)
    go = np.asarray(grad_output, dtype=np.float64).reshape(spec.batched_output_shape)
    n, k, ho, wo = spec.batched_output_shape
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    g, cg, kg = spec.groups, spec.in_channels // spec.groups, k // spec.groups
    gw = np.zeros(spec.weight_shape)
    for grp in range(g):
        go_g = go[:, grp * kg:(grp + 1) * kg]
        xg = xp[:, grp * cg:(grp + 1) * cg]
        for p in range(kh):
            for q in range(kw):
                # the input pixels tap (p, q) saw, for every output position
                patch = xg[:, :, p * dh: p * dh + sh * (ho - 1) + 1: sh,
                           q * dw: q * dw + sw * (wo - 1) + 1: sw]
                gw[grp * kg:(grp + 1) * kg, :, p, q] = np.tensordot(
                    go_g, patch, axes=([0, 2, 3], [0, 2, 3]))
    return gw

"""Exercises on the computation itself: the seven loops, and im2col's lowering.

Expected values come from convlab's float64 oracle (``reference.py``), which
shares no code with a student's loops.  The im2col ground truth is computed
from the oracle too: convolving with a one-hot weight that picks tap (c, p, q)
gives exactly row ``(c*kh + p)*kw + q`` of the columns matrix.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..reference import conv2d_reference
from ..shapes import ConvSpec
from . import solutions
from .core import Exercise, call, compare_arrays

# (x shape, w shape, stride, padding, dilation): non-square everything, asymmetric pairs
CONV_CASES = [
    ((1, 2, 5, 7), (3, 2, 3, 2), (1, 1), (0, 0), (1, 1)),
    ((2, 3, 7, 6), (2, 3, 2, 3), (2, 1), (1, 0), (1, 1)),
    ((1, 2, 8, 9), (2, 2, 3, 3), (1, 2), (0, 1), (2, 1)),
    ((1, 1, 9, 8), (1, 1, 2, 2), (3, 2), (2, 1), (1, 3)),
    ((2, 2, 6, 10), (3, 2, 1, 3), (1, 1), (1, 2), (1, 2)),
]


def oracle(x: np.ndarray, w: np.ndarray, stride: Any, padding: Any, dilation: Any) -> np.ndarray:
    """float64 convolution of batched ``x`` (no bias) by convlab's reference."""
    spec = ConvSpec.from_shapes(x.shape, w.shape, stride, padding, dilation)
    return conv2d_reference(x, w, None, spec)


def _maybe(make: Any) -> Any:
    """A mistake's result, or None when that mistake does not even make a valid conv."""
    def run() -> np.ndarray | None:
        try:
            return make()
        except ValueError:
            return None
    return run


def _one_side(x: np.ndarray, w: np.ndarray, s: Any, p: Any, d: Any) -> np.ndarray:
    """The convolution with padding on the top/left only."""
    spec = ConvSpec.from_shapes(x.shape, w.shape, s, p, d)
    return conv2d_reference(x, w, None, replace(spec, padding=(p[0], 0, p[1], 0)))


def _conv_mistakes(x: np.ndarray, w: np.ndarray, s: Any, p: Any, d: Any) -> list:
    """The classic wrong convolutions, to name the one a wrong answer matches."""
    return [
        ("you flipped the kernel (that is the textbook convolution; Conv2d computes a "
         "cross-correlation: w[k, c, p, q] multiplies the input at offset (p, q))",
         _maybe(lambda: oracle(x, w[:, :, ::-1, ::-1], s, p, d))),
        ("your stride runs along the wrong axes (sh goes with rows, sw with columns)",
         _maybe(lambda: oracle(x, w, s[::-1], p, d))),
        ("you left out the dilation", _maybe(lambda: oracle(x, w, s, p, (1, 1)))),
        ("your dilation runs along the wrong axes", _maybe(lambda: oracle(x, w, s, p, d[::-1]))),
        ("your padding runs along the wrong axes", _maybe(lambda: oracle(x, w, s, p[::-1], d))),
        ("you ignored the padding", _maybe(lambda: oracle(x, w, s, (0, 0), d))),
        ("you padded one side only; the zeros go on both sides (top and bottom, left and "
         "right)", _maybe(lambda: _one_side(x, w, s, p, d))),
    ]


class ConvLoops(Exercise):
    name = "conv_loops"
    title = "Conv2d with seven loops"
    task = ("Write conv_loops(x, w, stride, padding, dilation) -> out: x is (N, C, H, W), w is "
            "(K, C, kh, kw), stride/padding/dilation are pairs (along H, along W), padding "
            "adds zeros on both sides; return the (N, K, H_out, W_out) cross-correlation "
            "(no bias, groups=1), as torch.nn.functional.conv2d computes it.")
    hints = (
        "Write it straight from the definition: one loop per index of the output (n, k, "
        "i, j) and one per term of the sum (c, p, q), seven loops. Pad x first, so the "
        "window never leaves the array.",
        "out[n, k, i, j] sums xpad[n, c, row, col] * w[k, c, p, q] over c, p, q: the "
        "window of output row i starts at row i*sh and tap p sits p*dh rows further (the "
        "same for columns with sw, dw). Do not flip w: Conv2d is a cross-correlation. The "
        "output size per axis is exercise output_size's formula.",
        "out[n, k, i, j] = sum over c, p, q of xpad[n, c, i*sh + p*dh, j*sw + q*dw] * "
        "w[k, c, p, q], with xpad = np.pad(x, ((0,0), (0,0), (ph,ph), (pw,pw))). Stride "
        "and dilation (sh, dh) go with rows (i, p), (sw, dw) with columns (j, q).")
    praise = "these are the loops every fast kernel in convlab reorganises."

    def _check(self, fn: Any) -> None:
        rng = np.random.default_rng(11)
        for n, (xs, ws, s, p, d) in enumerate(CONV_CASES):
            x, w = rng.standard_normal(xs), rng.standard_normal(ws)
            args = {"x": x, "w": w, "stride": s, "padding": p, "dilation": d}
            where = (f"case {n + 1}/{len(CONV_CASES)}, x {xs}, w {ws}, stride {s}, "
                     f"padding {p}, dilation {d}")
            got = call(fn, args, where, first=n == 0)
            compare_arrays(got, oracle(x, w, s, p, d), where, _conv_mistakes(x, w, s, p, d))

    def _solution(self) -> Any:
        return solutions.conv_loops


IM2COL_CASES = [
    ((2, 4, 5), (2, 3), (1, 1), (0, 0), (1, 1)),
    ((1, 5, 6), (3, 2), (2, 1), (1, 0), (1, 1)),
    ((3, 6, 5), (2, 2), (1, 2), (0, 1), (2, 1)),  # 12 x 12: a transposed layout fits
    ((2, 7, 4), (3, 1), (2, 1), (1, 1), (1, 1)),
]


def im2col_truth(x: np.ndarray, kernel: Any, stride: Any, padding: Any,
                 dilation: Any) -> np.ndarray:
    """The columns matrix, from the oracle: a one-hot weight per row."""
    c_in = x.shape[0]
    kh, kw = kernel
    rows = c_in * kh * kw
    onehot = np.eye(rows).reshape(rows, c_in, kh, kw)  # row r picks tap (c, p, q)
    spec = ConvSpec.from_shapes(x[None].shape, onehot.shape, stride, padding, dilation)
    return conv2d_reference(x[None], onehot, None, spec)[0].reshape(rows, -1)


def _im2col_mistakes(x: np.ndarray, truth: np.ndarray, k: Any, s: Any, p: Any,
                     d: Any) -> list:
    c_in, (kh, kw) = x.shape[0], k
    return [
        ("your matrix is transposed: rows are (c, p, q), columns are outputs",
         lambda: truth.T),
        ("your rows are in the order (p, q, c); use (c, p, q) so they line up with "
         "w.reshape(K, -1)",
         lambda: truth.reshape(c_in, kh * kw, -1).transpose(1, 0, 2).reshape(truth.shape)),
        ("your stride runs along the wrong axes",
         _maybe(lambda: im2col_truth(x, k, s[::-1], p, d))),
        ("you left out the dilation", _maybe(lambda: im2col_truth(x, k, s, p, (1, 1)))),
    ]


class Im2col(Exercise):
    name = "im2col"
    title = "im2col: lowering a convolution to a matrix product"
    task = ("Write im2col(x, kernel, stride, padding, dilation) -> cols for one image x of "
            "shape (C, H, W); kernel, stride, padding, dilation are pairs. Return the "
            "(C*kh*kw, H_out*W_out) matrix whose column i*W_out + j holds the window of "
            "output (i, j): row (c*kh + p)*kw + q is xpad[c, i*sh + p*dh, j*sw + q*dw] "
            "(zero padding). Then w.reshape(K, -1) @ cols is the convolution.")
    hints = (
        "Each column is one output's window, flattened; each row is one tap (c, p, q) read "
        "at every output position. It is conv_loops with the multiplication taken out.",
        "Pad x first; the output size is as in conv_loops. Loop over the taps c, p, q (the "
        "row) and the outputs i, j (the column i*W_out + j). The row order must match "
        "w.reshape(K, -1): c slowest, then p, then q.",
        "row = (c*kh + p)*kw + q and cols[row, i*W_out + j] = xpad[c, i*sh + p*dh, j*sw + "
        "q*dw], with xpad = np.pad(x, ((0,0), (ph,ph), (pw,pw))).")
    praise = "each output is now one dot product of a weight row with a column: a GEMM."

    def _check(self, fn: Any) -> None:
        rng = np.random.default_rng(12)
        for n, (xs, k, s, p, d) in enumerate(IM2COL_CASES):
            x = rng.standard_normal(xs)
            args = {"x": x, "kernel": k, "stride": s, "padding": p, "dilation": d}
            where = (f"case {n + 1}/{len(IM2COL_CASES)}, x {xs}, kernel {k}, stride {s}, "
                     f"padding {p}, dilation {d}")
            got = call(fn, args, where, first=n == 0)
            truth = im2col_truth(x, k, s, p, d)
            compare_arrays(got, truth, where, _im2col_mistakes(x, truth, k, s, p, d))

    def _solution(self) -> Any:
        return solutions.im2col

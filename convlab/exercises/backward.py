"""The backward pass as an exercise: write dx, dw and db of a convolution (cs231n's
``conv_backward_naive``), checked against convlab's float64 backward oracle.

Expected values come from :mod:`convlab.reference_backward`, which shares no code with
a student's loops.  The classic wrong answers are recognised by computing them, on
the same random, asymmetric, non-square cases:

* dx from a full correlation with the kernel **not flipped**;
* dx with grad_output **not dilated** for the stride (as if the stride were 1);
* dx cropped from the padded gradient **on the wrong side** (the top/left padding
  kept and the last rows/columns dropped, or the other way round);
* db **not summed** over N, H and W (per image, per position, averaged, first image).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..reference_backward import conv2d_input_reference, conv2d_weight_reference
from ..shapes import ConvSpec
from .core import Exercise, Incorrect, call, compare_arrays

# (x shape, w shape, stride, padding, dilation): non-square, asymmetric pairs; strides
# whose floor drops input rows; padding, so that a wrong crop shows
CASES = [
    ((2, 3, 6, 7), (4, 3, 3, 2), (1, 1), (1, 0), (1, 1)),
    ((1, 2, 9, 8), (3, 2, 3, 3), (2, 2), (1, 1), (1, 1)),
    ((2, 2, 8, 9), (2, 2, 2, 3), (2, 1), (0, 2), (1, 2)),
    ((1, 3, 8, 10), (2, 3, 3, 3), (3, 2), (2, 1), (2, 1)),
    ((2, 1, 5, 6), (3, 1, 1, 2), (1, 2), (0, 0), (1, 1)),
]


def _spec(x_shape: Any, w_shape: Any, stride: Any, padding: Any, dilation: Any) -> ConvSpec:
    return ConvSpec.from_shapes(x_shape, w_shape, stride, padding, dilation)


def _dx_padded(dout: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """d loss / d (zero-padded input), (N, C, Hp, Wp): the gradient before the crop."""
    padded = ConvSpec.from_shapes((spec.batch, spec.in_channels, spec.padded_height,
                                   spec.padded_width), spec.weight_shape, spec.stride, 0,
                                  spec.dilation)  # fmt: skip
    return conv2d_input_reference(dout, w, padded)


def _undilated(dout: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray | None:
    """dx as if grad_output had stride 1 between its rows: scattered from i*1, not i*s."""
    if spec.stride == (1, 1):
        return None
    (kh, kw), (dh, dw) = spec.kernel_size, spec.dilation
    top, left = spec.padding[0], spec.padding[2]
    n, k, ho, wo = dout.shape
    dxp = np.zeros((n, spec.in_channels, ho + dh * (kh - 1), wo + dw * (kw - 1)))
    for p in range(kh):
        for q in range(kw):
            dxp[:, :, p * dh:p * dh + ho, q * dw:q * dw + wo] += np.einsum(
                "nkij,kc->ncij", dout, w[:, :, p, q])
    out = np.zeros((n, spec.in_channels, spec.height, spec.width))
    rows = min(spec.height, dxp.shape[2] - top)
    cols = min(spec.width, dxp.shape[3] - left)
    if rows > 0 and cols > 0:
        out[:, :, :rows, :cols] = dxp[:, :, top:top + rows, left:left + cols]
    return out


def _dx_mistakes(dout: np.ndarray, w: np.ndarray, spec: ConvSpec) -> list:
    h, wd = spec.height, spec.width
    padded = _dx_padded(dout, w, spec)
    mistakes = [
        ("you did not flip the kernel. dx is a *full* correlation of the (dilated, "
         "padded) grad_output with the kernel rotated by 180 degrees, w[:, :, ::-1, ::-1] "
         "(or scatter: dxpad[n, c, i*sh + p*dh, j*sw + q*dw] += dout[n, k, i, j] * "
         "w[k, c, p, q])",
         lambda: conv2d_input_reference(dout, w[:, :, ::-1, ::-1], spec)),
        ("grad_output was not dilated for the stride: output (i, j) read the input at "
         "row i*sh + p*dh, so its gradient goes back there (insert sh-1 zeros between "
         "grad_output's rows and sw-1 between its columns)",
         lambda: _undilated(dout, w, spec)),
    ]
    if any(spec.padding):
        mistakes += [
            ("you cropped the padding on the wrong side: the gradient of the padded "
             "input has the top/left padding first; keep dxpad[:, :, ph:ph+H, pw:pw+W]",
             lambda: padded[:, :, :h, :wd]),
            ("you cropped the padding on the wrong side: keep dxpad[:, :, ph:ph+H, "
             "pw:pw+W], the rows after the top padding",
             lambda: padded[:, :, padded.shape[2] - h:, padded.shape[3] - wd:]),
        ]
    return mistakes


def _db_mistakes(dout: np.ndarray) -> list:
    why = ("the bias was added to every output position of every image, so its "
           "gradient is dout summed over N, H and W: dout.sum(axis=(0, 2, 3))")
    return [
        (f"{why}; you left out the batch axis", lambda: dout.sum(axis=(2, 3))),
        (f"{why}; you left out the positions", lambda: dout.sum(axis=0)),
        (f"{why}; you averaged instead", lambda: dout.mean(axis=(0, 2, 3))),
        (f"{why}; you summed the first image only", lambda: dout[0].sum(axis=(1, 2))),
    ]


def _dw_mistakes(x: np.ndarray, dout: np.ndarray, spec: ConvSpec) -> list:
    truth = conv2d_weight_reference(x, dout, spec)
    return [
        ("your dw is flipped: w[k, c, p, q] multiplied xpad[n, c, i*sh + p*dh, "
         "j*sw + q*dw], so dw[k, c, p, q] sums dout[n, k, i, j] * that same input "
         "(no rotation for dw)", lambda: truth[:, :, ::-1, ::-1]),
        ("the weight is shared by every image: sum over the batch, do not average",
         lambda: truth / x.shape[0] if x.shape[0] > 1 else None),
    ]


class ConvBackward(Exercise):
    name = "conv_backward"
    title = "The backward pass of Conv2d: dx, dw, db"
    task = ("Write conv_backward(x, w, dout, stride, padding, dilation) -> (dx, dw, db): x is "
            "the forward's input (N, C, H, W), w its weight (K, C, kh, kw), dout the loss's "
            "gradient w.r.t. the output (N, K, H_out, W_out); stride, padding (zeros, both "
            "sides), dilation are pairs (along H, along W); no groups.  Return the gradients "
            "w.r.t. x, w and the bias: shapes (N, C, H, W), (K, C, kh, kw), (K,).")
    hints = (
        "Follow each product of the forward: every output is the bias plus one product "
        "of an input cell and a weight per tap of its window. The output's gradient flows "
        "back to both factors of each of those products, and to the bias.",
        "Loop over n, k, i, j, c, p, q as the forward does, with y = i*sh + p*dh and "
        "x = j*sw + q*dw in the padded input: dxpad[n, c, y, x] += g * w[k, c, p, q] and "
        "dw[k, c, p, q] += g * xpad[n, c, y, x]. Which cells of dxpad are the input's?",
        "Every product xpad[n, c, i*sh + p*dh, j*sw + q*dw] * w[k, c, p, q] fed "
        "out[n, k, i, j]: pass g = dout[n, k, i, j] back to both factors: dxpad[n, c, y, x] "
        "+= g * w[k, c, p, q] and dw[k, c, p, q] += g * xpad[n, c, y, x]. dxpad has the "
        "padded shape; crop the padding off at the end, ph rows from the top and pw "
        "columns from the left (its gradient goes nowhere). db sums dout over N, H, W.")
    praise = ("the same loops as the forward, run backwards: every fast backward kernel "
              "turns these scatters into gathers (a correlation with the flipped kernel, "
              "or a matrix product).")

    def _check(self, fn: Any) -> None:
        rng = np.random.default_rng(13)
        for n, (xs, ws, s, p, d) in enumerate(CASES):
            spec = _spec(xs, ws, s, p, d)
            x, w = rng.standard_normal(xs), rng.standard_normal(ws)
            dout = rng.standard_normal(spec.output_shape)
            args = {"x": x, "w": w, "dout": dout, "stride": s, "padding": p, "dilation": d}
            where = (f"case {n + 1}/{len(CASES)}, x {xs}, w {ws}, stride {s}, padding {p}, "
                     f"dilation {d}")
            got = call(fn, args, where, first=n == 0)
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise Incorrect(f"{where}: return the three gradients as a tuple "
                                f"(dx, dw, db); got {type(got).__name__}")
            dx, dw, db = got
            compare_arrays(dx, conv2d_input_reference(dout, w, spec), f"{where}: dx",
                           _dx_mistakes(dout, w, spec))
            compare_arrays(dw, conv2d_weight_reference(x, dout, spec), f"{where}: dw",
                           _dw_mistakes(x, dout, spec))
            compare_arrays(db, dout.sum(axis=(0, 2, 3)), f"{where}: db", _db_mistakes(dout))

    def _solution(self) -> Any:
        return conv_backward


def conv_backward(x, w, dout, stride, padding, dilation):
    (sh, sw), (ph, pw), (dh, dw_) = stride, padding, dilation
    n_batch, c_in, height, width = x.shape
    c_out, _, kh, kw = w.shape
    _, _, out_h, out_w = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # what the forward read
    dxp = np.zeros(xp.shape)  # the gradient w.r.t. the padded input
    dw = np.zeros(w.shape)
    for n in range(n_batch):
        for k in range(c_out):
            for i in range(out_h):
                for j in range(out_w):
                    g = dout[n, k, i, j]
                    for c in range(c_in):
                        for p in range(kh):
                            for q in range(kw):
                                y, xx = i * sh + p * dh, j * sw + q * dw_
                                # the product xp * w fed out[n, k, i, j]: each factor
                                # gets g times the other
                                dxp[n, c, y, xx] += g * w[k, c, p, q]
                                dw[k, c, p, q] += g * xp[n, c, y, xx]
    dx = dxp[:, :, ph:ph + height, pw:pw + width]  # the padding's gradient goes nowhere
    db = dout.sum(axis=(0, 2, 3))  # the bias was added at every (n, i, j)
    return dx, dw, db

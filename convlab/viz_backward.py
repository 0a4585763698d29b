"""Pictures of the backward pass (notebook 09): which outputs and weights feed one
input's gradient, grad_output with the stride's inserted zeros and the full correlation's
border (the array ``grad_input``'s correlation runs over), the transposed convolution as
that correlation, and the taps of one weight's gradient.

Data first (:func:`dilated_grid`, :func:`grad_input_window`, :func:`weight_gradient_taps`),
then drawings on the grid primitives of :mod:`convlab.viz_grid`, whose coordinate and
``gid`` conventions they keep.  Importable as ``convlab.viz.<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .shapes import ConvSpec, TransposedSpec
from .viz_grid import (
    INPUT,
    OUTPUT,
    OUTPUT_SEL,
    PADDING,
    TAP,
    TAP_PAD,
    Cell,
    _cell,
    _frame_axes,
    _is_input,
    _label,
    frames,
    window,
)

# grad_input / transposed-convolution pictures: grad_output values, the zeros inserted
# for the stride, the zeros of the full correlation's border
GRAD, INSERTED, BORDER = "#fce5cd", "#eeeeee", "#f8f8f8"


@dataclass(frozen=True)
class DilatedGrid:
    """The array grad_input's correlation runs over: grad_output with ``stride - 1``
    zeros between its rows and columns and the full correlation's zero border, exactly
    as ``kernels.parallel_backward.dilate_grad_output`` builds it (placed so the
    correlation's output is the H x W input gradient).

    ``cells[r, c]``: the grad_output element held, as ``i * Wout + j``; -1 a zero
    inserted for the stride; -2 a zero of the border."""

    spec: ConvSpec
    cells: np.ndarray

    def role(self, r: int, c: int) -> str:
        v = int(self.cells[r, c])
        return "grad" if v >= 0 else ("inserted" if v == -1 else "border")


def dilated_grid(spec: ConvSpec) -> DilatedGrid:
    """The :class:`DilatedGrid` of one image's one channel, from the kernel's own code."""
    from .kernels.parallel_backward import dilate_grad_output

    one = replace(spec, batch=1, batched=True, in_channels=spec.groups,
                  out_channels=spec.groups)
    ho, wo = one.out_height, one.out_width
    index = np.arange(1, ho * wo + 1, dtype=np.float64).reshape(1, 1, ho, wo)
    held = dilate_grad_output(np.repeat(index, one.out_channels, axis=1), one)[0, 0]
    cells = held.astype(np.int64) - 1  # -1 wherever a zero was placed
    rows = np.flatnonzero((cells >= 0).any(axis=1))
    cols = np.flatnonzero((cells >= 0).any(axis=0))
    border = np.ones(cells.shape, dtype=bool)
    if rows.size and cols.size:  # zeros between the first and last value: inserted
        border[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = False
    cells[(cells < 0) & border] = -2
    return DilatedGrid(spec, cells)


def grad_input_window(spec: ConvSpec, y: int, x: int) -> tuple[tuple[Cell, Cell], ...]:
    """The taps of input-gradient cell (y, x)'s window on the :class:`DilatedGrid`:
    ((p, q) index into the *unflipped* weight, (row, col) of the grid).  Tap (a, b) of
    the window reads cell (y + a*dh, x + b*dw) and multiplies it by the flipped kernel's
    (a, b), which is ``w[kh-1-a, kw-1-b]``."""
    if not (0 <= y < spec.height and 0 <= x < spec.width):
        raise ValueError(f"input position ({y}, {x}) is outside the {spec.height}x"
                         f"{spec.width} input")
    (kh, kw), (dh, dw) = spec.kernel_size, spec.dilation
    return tuple(((kh - 1 - a, kw - 1 - b), (y + a * dh, x + b * dw))
                 for a in range(kh) for b in range(kw))


def weight_gradient_taps(spec: ConvSpec, p: int, q: int) -> tuple[tuple[Cell, Cell], ...]:
    """Every (output (i, j), input cell it read with tap (p, q)): dW[p, q] sums
    grad_output[i, j] times that cell, over all of them (cells in the padding read 0)."""
    kh, kw = spec.kernel_size
    if not (0 <= p < kh and 0 <= q < kw):
        raise ValueError(f"tap ({p}, {q}) is outside the {kh}x{kw} kernel")
    return tuple((o, cell) for o in frames(spec) for pq, cell in window(spec, *o).taps
                 if pq == (p, q))


def _grid_title(kind: str, spec: ConvSpec) -> str:
    return f"{kind}\n{_label(spec)}"


def draw_output_gradient(spec: ConvSpec, i: int, j: int,
                         weight: np.ndarray | None = None) -> Figure:
    """The gradient of one output w.r.t. the input: the kernel, placed on the window that
    output read (computed by ``convlab.conv2d_input`` from a one-hot grad_output; one
    channel).  Cells in the padding get nothing: there is no input there."""
    from .backward import conv2d_input

    kh, kw = spec.kernel_size
    w = (np.arange(1, kh * kw + 1, dtype=np.float64).reshape(kh, kw) if weight is None
         else np.asarray(weight, dtype=np.float64).reshape(kh, kw))
    top, bottom, left, right = spec.padding
    if top != bottom or left != right:
        raise ValueError("draw_output_gradient draws symmetric padding only; got (t,b,l,r) "
                         f"{spec.padding}")
    onehot = np.zeros((1, 1, spec.out_height, spec.out_width))
    onehot[0, 0, i, j] = 1.0
    grad = conv2d_input((1, 1, spec.height, spec.width), w[None, None], onehot, spec.stride,
                        (top, left), spec.dilation)
    fig = Figure(figsize=(0.42 * (spec.out_width + spec.padded_width) + 3.2,
                          0.42 * max(spec.out_height, spec.padded_height) + 1.3),
                 layout="constrained")
    ax_out, ax_in = fig.subplots(1, 2, width_ratios=[spec.out_width, spec.padded_width])
    for oi, oj in frames(spec):
        sel = (oi, oj) == (i, j)
        _cell(ax_out, oi, oj, "output-selected" if sel else "output", (oi, oj),
              OUTPUT_SEL if sel else OUTPUT, "1" if sel else "0")
    _frame_axes(ax_out, spec.out_height, spec.out_width, "grad_output: one-hot at "
                f"({i}, {j})")
    win = window(spec, i, j)
    for y in range(-top, spec.height + bottom):
        for x in range(-left, spec.width + right):
            real = _is_input(spec, (y, x))
            value = grad[0, 0, y, x] if real else 0.0
            if (y, x) in win.inputs:
                role, face, text = "grad", TAP, f"{value:.3g}"
            elif (y, x) in win.padding:
                role, face, text = "tap-padding", TAP_PAD, "-"
            else:
                role, face, text = ("input" if real else "padding"), (
                    INPUT if real else PADDING), ("0" if real else "")
            _cell(ax_in, y + top, x + left, role, (y, x), face, text,
                  linestyle="-" if real else ":")
    _frame_axes(ax_in, spec.padded_height, spec.padded_width,
                "d out[i, j] / d input = the kernel on out's window")
    fig.suptitle(_grid_title(f"the gradient of output ({i}, {j}): weight w[p, q] lands on the "
                             "input cell tap (p, q) read", spec), fontsize=9)
    return fig


def _draw_dilated(ax: Axes, grid: DilatedGrid, taps: dict[Cell, Cell], name: str,
                  valid: Cell) -> None:
    wo = grid.spec.out_width
    rows, cols = grid.cells.shape
    for r in range(rows):
        for c in range(cols):
            v = int(grid.cells[r, c])
            role = grid.role(r, c)
            if role == "grad" and (v // wo >= valid[0] or v % wo >= valid[1]):
                role = "border"  # output_padding's extra rows: zeros, not values
            text = {"grad": f"{name}{v // wo},{v % wo}", "inserted": "0", "border": "0"}[role]
            face = {"grad": GRAD, "inserted": INSERTED, "border": BORDER}[role]
            if (r, c) in taps:
                p, q = taps[(r, c)]
                role, face = "tap", TAP if role == "grad" else TAP_PAD
                text = f"w{p}{q}" + (f"\n{text}" if text != "0" else "")
            _cell(ax, r, c, role, (r, c), face, text,
                  linestyle=":" if grid.role(r, c) == "border" else "-")


def draw_grad_input(spec: ConvSpec, cell: Cell = (0, 0), *, name: str = "g",
                    valid: Cell | None = None, title: str = "") -> Figure:
    """grad_input as a stride-1 correlation: grad_output (cells ``g i,j``) with zeros
    inserted between its rows and columns for the stride and a zero border, the
    *flipped* kernel's window for input-gradient ``cell`` (taps labelled with the
    unflipped weight they use), and the H x W input gradient."""
    grid = dilated_grid(spec)
    taps = {rc: pq for pq, rc in grad_input_window(spec, *cell)}
    rows, cols = grid.cells.shape
    fig = Figure(figsize=(0.5 * (cols + spec.width) + 1.6, 0.5 * max(rows, spec.height) + 1.4),
                 layout="constrained")
    ax_g, ax_x = fig.subplots(1, 2, width_ratios=[cols, spec.width])
    _draw_dilated(ax_g, grid, taps, name, valid or (spec.out_height, spec.out_width))
    (sh, sw), (kh, kw) = spec.stride, spec.kernel_size
    _frame_axes(ax_g, rows, cols, f"{'input' if name == 'x' else 'grad_output'} with "
                f"{sh - 1}x{sw - 1} zeros inserted, zero border, {kh}x{kw} kernel flipped")
    for y in range(spec.height):
        for x in range(spec.width):
            sel = (y, x) == tuple(cell)
            _cell(ax_x, y, x, "output-selected" if sel else "output", (y, x),
                  OUTPUT_SEL if sel else OUTPUT)
    _frame_axes(ax_x, spec.height, spec.width,
                f"{'output' if name == 'x' else 'grad_input'} {spec.height}x{spec.width}")
    fig.suptitle(title or _grid_title("grad_input = a stride-1 correlation of the zero-"
                                      "dilated grad_output with the flipped kernel", spec),
                 fontsize=9)
    return fig


def draw_transposed(spec: TransposedSpec, cell: Cell = (0, 0)) -> Figure:
    """A transposed convolution in the style of conv_arithmetic: its input (``x i,j``)
    spread out by the stride with zeros between, a zero border, the flipped kernel
    sliding with stride 1; it is the input gradient of ``spec.forward_spec()``."""
    one = TransposedSpec.from_shapes((1, spec.groups, spec.height, spec.width),
                                     (spec.groups, spec.groups, *spec.kernel_size),
                                     spec.stride, spec.padding, spec.output_padding,
                                     spec.groups, spec.dilation)  # fmt: skip
    fwd = one.forward_spec()
    return draw_grad_input(fwd, cell, name="x", valid=(spec.height, spec.width),
                           title=f"transposed convolution: input {spec.height}x{spec.width}, "
                                 f"kernel {spec.kernel_size}, stride {spec.stride}, padding "
                                 f"{spec.padding}, output_padding {spec.output_padding}, "
                                 f"dilation {spec.dilation} -> output {spec.out_height}x"
                                 f"{spec.out_width}")


def draw_grad_weight(spec: ConvSpec, p: int = 0, q: int = 0) -> Figure:
    """grad_weight as a correlation of the input with grad_output: the input cells tap
    (p, q) read, one per output (labelled with the grad_output element they multiply:
    a grid dilated by the stride), and the kh x kw weight gradient."""
    taps = {cell: o for o, cell in weight_gradient_taps(spec, p, q)}
    top, bottom, left, right = spec.padding
    kh, kw = spec.kernel_size
    fig = Figure(figsize=(0.5 * (spec.padded_width + kw) + 1.6,
                          0.5 * max(spec.padded_height, kh) + 1.4), layout="constrained")
    ax_x, ax_w = fig.subplots(1, 2, width_ratios=[spec.padded_width, max(kw, 2)])
    for y in range(-top, spec.height + bottom):
        for x in range(-left, spec.width + right):
            real = _is_input(spec, (y, x))
            o = taps.get((y, x))
            if o is not None:
                role, face = ("tap", TAP) if real else ("tap-padding", TAP_PAD)
                text = f"g{o[0]},{o[1]}"
            else:
                role, face, text = ("input", INPUT, "") if real else ("padding", PADDING, "0")
            _cell(ax_x, y + top, x + left, role, (y, x), face, text,
                  linestyle="-" if real else ":")
    _frame_axes(ax_x, spec.padded_height, spec.padded_width,
                f"input: the cells tap ({p}, {q}) read, times grad_output")
    for a in range(kh):
        for b in range(kw):
            sel = (a, b) == (p, q)
            _cell(ax_w, a, b, "output-selected" if sel else "output", (a, b),
                  OUTPUT_SEL if sel else OUTPUT, f"dw{a}{b}")
    _frame_axes(ax_w, kh, max(kw, 2), "grad_weight")
    fig.suptitle(_grid_title(f"dW[{p}, {q}] = sum over outputs (i, j) of g[i, j] * x[i*sh + "
                             f"{p}*dh, j*sw + {q}*dw]: a correlation of x with g", spec),
                 fontsize=9)
    return fig


__all__ = [
    "DilatedGrid", "dilated_grid", "draw_grad_input", "draw_grad_weight",
    "draw_output_gradient", "draw_transposed", "grad_input_window", "weight_gradient_taps",
]

"""Pictures of convolution arithmetic, in the spirit of conv_arithmetic and the
convolution visualizer: the input with its padding, the kernel window with its
dilation gaps, the stride, the output; numbered frames and an animation of the
sliding window; which inputs feed one output; the im2col matrix; Winograd's
overlapping input tiles; groups as channel connections.

Two layers, so tests can check the pictures without looking at pixels:

* **data** (:func:`window`, :func:`readers`, :func:`frames`, :func:`im2col_indices`,
  :func:`winograd_tiles`, :func:`group_connections`): plain tuples and arrays,
  every size taken from a :class:`~convlab.shapes.ConvSpec` (never re-derived);
* **drawings** (``draw_*``, :func:`animate_conv`): build a
  :class:`matplotlib.figure.Figure` from that data, without pyplot, so they work
  with the Agg backend and a notebook shows each figure exactly once.  Every
  grid cell is a patch whose ``gid`` is ``"role:row,col"``; :func:`drawn_cells`
  reads the roles back ("tap" = a real input cell under the window).

Coordinates are (row, column) in the *input's* frame: padding cells have a row
or column below 0 or past the edge.  Everything counts from 0, as NumPy and PyTorch
do: rows, columns, weights (``w00`` is ``w[0, 0]``), outputs and frames (frame 0
computes output (0, 0)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from .shapes import ConvSpec, IntOrPair, PaddingArg, TransposedSpec, check_channels

Cell = tuple[int, int]

# colours: inputs blue, padding grey, outputs green, the chosen ones dark
INPUT, PADDING, TAP, TAP_PAD = "#cfe2f3", "#f3f3f3", "#3d85c6", "#9fc5e8"
OUTPUT, OUTPUT_SEL, WINDOW = "#d9ead3", "#6aa84f", "#cc0000"
TILE_COLOURS = ("#e69138", "#3d85c6", "#6aa84f", "#a64d79", "#cc0000", "#45818e")


# ======================================================================= data
def grid_spec(
    size: IntOrPair,
    kernel_size: IntOrPair = 3,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    *,
    in_channels: int = 1,
    out_channels: int = 1,
    groups: int = 1,
) -> ConvSpec:
    """The spec of a one-image convolution over a ``size`` (int or (H, W)) grid."""
    h, w = (size, size) if isinstance(size, int) else size
    return ConvSpec.create((in_channels, h, w), out_channels, kernel_size, stride, padding,
                           dilation, groups)  # fmt: skip


@dataclass(frozen=True)
class Window:
    """Where the kernel sits for one output: the data behind every window picture."""

    output: Cell
    taps: tuple[tuple[Cell, Cell], ...]  # ((p, q) weight index, (row, col) it reads)
    inputs: frozenset[Cell]  # real input cells read
    padding: frozenset[Cell]  # padding cells read (they hold zeros)
    origin: Cell  # the cell tap (0, 0) reads
    extent: Cell  # the dilated window's size, d*(k-1)+1 per axis


def window(spec: ConvSpec, i: int, j: int) -> Window:
    """The kernel window that produces output ``(i, j)``."""
    if not (0 <= i < spec.out_height and 0 <= j < spec.out_width):
        raise ValueError(f"output position ({i}, {j}) is outside the "
                         f"{spec.out_height}x{spec.out_width} output")
    (sh, sw), (dh, dw), (kh, kw) = spec.stride, spec.dilation, spec.kernel_size
    y0, x0 = i * sh - spec.padding[0], j * sw - spec.padding[2]
    taps = tuple(((p, q), (y0 + p * dh, x0 + q * dw)) for p in range(kh) for q in range(kw))
    inside = [cell for _, cell in taps if _is_input(spec, cell)]
    outside = [cell for _, cell in taps if not _is_input(spec, cell)]
    return Window((i, j), taps, frozenset(inside), frozenset(outside), (y0, x0),
                  spec.effective_kernel_size)  # fmt: skip


def _is_input(spec: ConvSpec, cell: Cell) -> bool:
    return 0 <= cell[0] < spec.height and 0 <= cell[1] < spec.width


def frames(spec: ConvSpec) -> list[Cell]:
    """Output positions in the order the window visits them: frame k is item k, and
    output number k in the pictures (counted from 0, row by row)."""
    return [(i, j) for i in range(spec.out_height) for j in range(spec.out_width)]


def readers(spec: ConvSpec, row: int, col: int) -> frozenset[Cell]:
    """The outputs whose window reads input cell ``(row, col)`` (the "hover" question,
    backwards).  A cell no window reaches (stride larger than the kernel) has none."""
    return frozenset(o for o in frames(spec) if (row, col) in window(spec, *o).inputs)


def im2col_indices(spec: ConvSpec) -> np.ndarray:
    """The im2col layout of one image as indices into the flattened (C, H, W) input.

    Shape (C*kh*kw, Hout*Wout): row ``(c*kh + p)*kw + q`` holds what tap (p, q) of
    channel c reads, column ``i*Wout + j`` is output (i, j); -1 marks padding (a 0).
    Then ``weight.reshape(K, -1) @ columns`` is the convolution (groups=1).
    """
    c_in, hw = spec.in_channels, spec.height * spec.width
    kh, kw = spec.kernel_size
    idx = np.full((c_in * kh * kw, spec.out_height * spec.out_width), -1, dtype=np.int64)
    for col, (i, j) in enumerate(frames(spec)):
        for (p, q), (y, x) in window(spec, i, j).taps:
            if _is_input(spec, (y, x)):
                for c in range(c_in):
                    idx[(c * kh + p) * kw + q, col] = c * hw + y * spec.width + x
    return idx


def im2col_matrix(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The im2col matrix of one (C, H, W) image (layout of :func:`im2col_indices`)."""
    x = np.asarray(x)
    if x.shape != (spec.in_channels, spec.height, spec.width):
        raise ValueError(f"expected one ({spec.in_channels}, {spec.height}, {spec.width}) "
                         f"image, got shape {x.shape}")
    idx = im2col_indices(spec)
    return np.where(idx >= 0, x.ravel()[np.maximum(idx, 0)], 0).astype(x.dtype)


@dataclass(frozen=True)
class Tile:
    """One Winograd tile: an alpha_h x alpha_w input patch gives an m x m output block."""

    index: Cell  # (tile row, tile column)
    input_origin: Cell  # top-left input cell (negative = in the padding)
    input_size: Cell  # (m + kh - 1, m + kw - 1)
    output_origin: Cell
    output_size: Cell  # outputs really kept: smaller than m x m at a ragged edge
    ragged: bool  # the tile hangs over the output edge: its overhang is computed and dropped

    def input_cells(self) -> frozenset[Cell]:
        (y0, x0), (a, b) = self.input_origin, self.input_size
        return frozenset((y0 + r, x0 + c) for r in range(a) for c in range(b))


def winograd_tiles(spec: ConvSpec, m: int = 2) -> list[Tile]:
    """The tiles of Winograd F(m x m, kh x kw): input tiles of m+kh-1 by m+kw-1 cells
    that overlap by kh-1 / kw-1, each giving an m x m output block.  When m does not
    divide the output size the last row/column of tiles is ragged."""
    if spec.stride != (1, 1) or spec.dilation != (1, 1):
        raise ValueError(f"Winograd tiles need stride 1 and dilation 1; got stride "
                         f"{spec.stride}, dilation {spec.dilation}")
    if m < 1:
        raise ValueError(f"tile size m must be at least 1, got {m}")
    ho, wo = spec.out_height, spec.out_width
    alpha = (m + spec.kernel_size[0] - 1, m + spec.kernel_size[1] - 1)
    tiles = []
    for ti in range(math.ceil(ho / m)):
        for tj in range(math.ceil(wo / m)):
            i0, j0 = ti * m, tj * m
            size = (min(m, ho - i0), min(m, wo - j0))
            tiles.append(Tile((ti, tj), (i0 - spec.padding[0], j0 - spec.padding[2]), alpha,
                              (i0, j0), size, size != (m, m)))  # fmt: skip
    return tiles


def group_connections(in_channels: int, out_channels: int, groups: int) -> list[Cell]:
    """(input channel, output channel) pairs that a weight connects, as Conv2d groups
    them: output k reads the C/groups input channels of its group only."""
    check_channels(in_channels, out_channels, groups)
    cg, kg = in_channels // groups, out_channels // groups
    return [(c, k) for k in range(out_channels) for c in range((k // kg) * cg, (k // kg + 1) * cg)]


# ======================================================================= drawing helpers
def _cell(ax: Axes, row: float, col: float, role: str, cell: Cell, face: str,
          text: str = "", **style: Any) -> Rectangle:
    """One unit square at (row, col) of the axes, tagged ``role:r,c`` for tests."""
    style = {"edgecolor": "#666666", "linewidth": 0.8, **style}
    rect = Rectangle((col, row), 1, 1, facecolor=face, gid=f"{role}:{cell[0]},{cell[1]}",
                     **style)
    ax.add_patch(rect)
    if text:
        ax.text(col + 0.5, row + 0.5, text, ha="center", va="center", fontsize=7)
    return rect


def _frame_axes(ax: Axes, rows: float, cols: float, title: str = "") -> None:
    ax.set_xlim(-0.2, cols + 0.2)
    ax.set_ylim(rows + 0.2, -0.2)  # row 0 at the top, like an array
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)


def drawn_cells(fig: Figure, role: str) -> set[Cell]:
    """The cells drawn with ``role`` (e.g. "tap", "padding", "output-selected")."""
    found = set()
    for ax in fig.axes:
        for patch in ax.patches:
            gid = patch.get_gid() or ""
            name, _, where = gid.partition(":")
            if name == role and where:
                r, c = where.split(",")
                found.add((int(r), int(c)))
    return found


def _label(spec: ConvSpec) -> str:
    t, b, left, r = spec.padding
    return (f"input {spec.height}x{spec.width}, kernel {spec.kernel_size[0]}x"
            f"{spec.kernel_size[1]}, stride {spec.stride}, padding (t,b,l,r)=({t},{b},{left},"
            f"{r}), dilation {spec.dilation} -> output {spec.out_height}x{spec.out_width}")


class _InputGrid:
    """The padded input grid, drawn once and repainted for each window position (so an
    animation only recolours cells): taps dark (lighter in the padding), labelled with
    the weight they multiply; the window's dilated outline in red; where the next
    stride step puts it, dashed grey.  The two outlines are tagged ``window:y,x`` and
    ``next-window:y,x`` with the input cell at their top-left corner."""

    def __init__(self, ax: Axes, spec: ConvSpec, numbers: bool) -> None:
        self.spec, self.numbers = spec, numbers
        top, bottom, left, right = spec.padding
        self.offset = (top, left)
        self.cells = {}
        for y in range(-top, spec.height + bottom):
            for x in range(-left, spec.width + right):
                real = _is_input(spec, (y, x))
                rect = _cell(ax, y + top, x + left, "input", (y, x), INPUT,
                             linestyle="-" if real else ":")
                label = ax.text(x + left + 0.5, y + top + 0.5, "", ha="center", va="center",
                                fontsize=7) if numbers else None
                self.cells[(y, x)] = (rect, label, real)
        self.boxes = [ax.add_patch(Rectangle((0, 0), 0, 0, fill=False, linewidth=2, visible=False,
                                             **style))
                      for style in ({"edgecolor": "#999999", "linestyle": "--"},
                                    {"edgecolor": WINDOW, "linestyle": "-"})]
        _frame_axes(ax, spec.padded_height, spec.padded_width,
                    f"input {spec.height}x{spec.width} + padding" if any(spec.padding)
                    else f"input {spec.height}x{spec.width}")

    def paint(self, win: Window | None, next_win: Window | None = None) -> None:
        taps = {cell: pq for pq, cell in win.taps} if win else {}
        for (y, x), (rect, label, real) in self.cells.items():
            pq = taps.get((y, x))
            role = ("tap" if real else "tap-padding") if pq else ("input" if real else "padding")
            rect.set_facecolor({"tap": TAP, "tap-padding": TAP_PAD, "input": INPUT,
                                "padding": PADDING}[role])
            rect.set_gid(f"{role}:{y},{x}")
            if label is not None:
                label.set_text(f"w{pq[0]}{pq[1]}" if pq else ("" if real else "0"))
        for box, role, w in zip(self.boxes, ("next-window", "window"), (next_win, win),
                                strict=True):
            box.set_visible(w is not None)
            box.set_gid(f"{role}:{w.origin[0]},{w.origin[1]}" if w is not None else role)
            if w is not None:
                (y0, x0), (eh, ew) = w.origin, w.extent
                box.set_bounds(x0 + self.offset[1], y0 + self.offset[0], ew, eh)


class _OutputGrid:
    """The output grid, numbered from 0 in the order the window visits it."""

    def __init__(self, ax: Axes, spec: ConvSpec, numbers: bool) -> None:
        self.cells = {(i, j): _cell(ax, i, j, "output", (i, j), OUTPUT,
                                    str(k) if numbers else "")
                      for k, (i, j) in enumerate(frames(spec))}
        _frame_axes(ax, spec.out_height, spec.out_width,
                    f"output {spec.out_height}x{spec.out_width}")

    def paint(self, selected: Cell | None) -> None:
        for (i, j), rect in self.cells.items():
            sel = (i, j) == selected
            rect.set_facecolor(OUTPUT_SEL if sel else OUTPUT)
            rect.set_gid(f"{'output-selected' if sel else 'output'}:{i},{j}")


NextStep = Cell | str | None


def _next_window(spec: ConvSpec, i: int, j: int, step: NextStep = "frame") -> Window | None:
    """The window of the output drawn dashed after output (i, j): the stride, drawn.

    ``"frame"``: the next output in frame order (one stride to the right, or the next
    row's first); ``"right"``: (i, j+1); ``"down"``: (i+1, j), one stride down the rows;
    an (row, col) pair: that output; None: none.  None too when the step leaves the output.
    """
    if step is None:
        return None
    if step == "frame":
        if j + 1 < spec.out_width:
            return window(spec, i, j + 1)
        return window(spec, i + 1, 0) if i + 1 < spec.out_height else None
    if isinstance(step, str):
        moves = {"right": (i, j + 1), "down": (i + 1, j)}
        if step not in moves:
            raise ValueError(f"next_step must be 'frame', 'right', 'down', an output (i, j) "
                             f"or None; got {step!r}")
        ni, nj = moves[step]
        return window(spec, ni, nj) if ni < spec.out_height and nj < spec.out_width else None
    return window(spec, *step)


def _conv_axes(spec: ConvSpec, fig: Figure | None) -> tuple[Figure, Axes, Axes]:
    if fig is None:
        rows = max(spec.padded_height, spec.out_height)
        fig = Figure(figsize=(0.42 * (spec.padded_width + spec.out_width) + 1.5,
                              0.42 * rows + 1.2), layout="constrained")
    ax_in, ax_out = fig.subplots(1, 2, width_ratios=[spec.padded_width, spec.out_width])
    return fig, ax_in, ax_out


# ======================================================================= pictures
def draw_conv(spec: ConvSpec, output: Cell | None = (0, 0), *, numbers: bool = True,
              next_step: NextStep = "frame", fig: Figure | None = None) -> Figure:
    """Input (with padding), the window for ``output`` (with dilation gaps), the window
    of the ``next_step`` dashed, and the output grid with cells numbered from 0 in frame
    order.  ``next_step`` is "frame" (the next output the window visits), "right",
    "down" (one stride down the rows: shows a vertical stride), an output (i, j), or None."""
    fig, ax_in, ax_out = _conv_axes(spec, fig)
    win = window(spec, *output) if output is not None else None
    nxt = _next_window(spec, *output, next_step) if output is not None else None
    _InputGrid(ax_in, spec, numbers).paint(win, nxt)
    _OutputGrid(ax_out, spec, numbers).paint(output)
    fig.suptitle(_label(spec), fontsize=9)
    return fig


def draw_receptive_field(spec: ConvSpec, i: int, j: int,
                         **kwargs: Any) -> tuple[Figure, frozenset[Cell]]:
    """The inputs that feed output ``(i, j)``: the figure and the set of real input
    cells highlighted in it (padding taps read zeros and are drawn lighter)."""
    fig = draw_conv(spec, (i, j), **kwargs)
    return fig, window(spec, i, j).inputs


def draw_frames(spec: ConvSpec, *, max_frames: int = 24, cols: int = 4) -> Figure:
    """Numbered small multiples of the sliding window: frame k is output number k
    (both counted from 0)."""
    todo = frames(spec)[:max_frames]
    rows = math.ceil(len(todo) / cols)
    cols = min(cols, len(todo))
    scale = 0.3
    fig = Figure(figsize=(cols * (scale * spec.padded_width + 0.4),
                          rows * (scale * spec.padded_height + 0.5) + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        if k >= len(todo):
            ax.axis("off")
            continue
        _InputGrid(ax, spec, numbers=False).paint(window(spec, *todo[k]))
        ax.set_title(f"{k}: output {todo[k]}", fontsize=8)
    more = len(frames(spec)) - len(todo)
    fig.suptitle(_label(spec) + (f"  (first {len(todo)} frames, {more} more)" if more else ""),
                 fontsize=9)
    return fig


def animate_conv(spec: ConvSpec, *, interval: int = 600, numbers: bool = True) -> FuncAnimation:
    """The window sliding over every output in turn.  In a notebook show it with
    ``IPython.display.HTML(anim.to_jshtml())``; save it with :func:`save_gif`."""
    fig, ax_in, ax_out = _conv_axes(spec, None)
    order = frames(spec)
    grid_in, grid_out = _InputGrid(ax_in, spec, numbers), _OutputGrid(ax_out, spec, numbers)

    def draw(k: int) -> list:
        i, j = order[k]
        grid_in.paint(window(spec, i, j), _next_window(spec, i, j))
        grid_out.paint((i, j))
        fig.suptitle(f"frame {k} of 0-{len(order) - 1}: output ({i}, {j})\n{_label(spec)}",
                     fontsize=9)
        return []

    draw(0)
    fig.canvas.draw()  # lay out once; every frame keeps the same layout (and is faster)
    fig.set_layout_engine("none")
    return FuncAnimation(fig, draw, frames=len(order), interval=interval, blit=False)


def save_gif(anim: FuncAnimation, path: str | Path, fps: int = 2) -> Path:
    """Write ``anim`` as an animated GIF with Pillow (comes with matplotlib)."""
    path = Path(path)
    anim.save(str(path), writer=PillowWriter(fps=fps))
    return path


def draw_im2col(spec: ConvSpec, x: np.ndarray | None = None, *, output: Cell = (0, 0),
                fig: Figure | None = None) -> Figure:
    """The lowering of one small image: each output's window becomes one column of a
    (C*kh*kw) x (Hout*Wout) matrix; the column of ``output`` and its window are marked.
    Cells are named a12 = channel a, row 1, column 2 (or show ``x``'s values)."""
    c_in = spec.in_channels
    idx = im2col_indices(spec)
    vals = None if x is None else im2col_matrix(x, spec)

    def name(flat: int) -> str:
        c, rest = divmod(flat, spec.height * spec.width)
        return f"{chr(ord('a') + c % 26)}{rest // spec.width}{rest % spec.width}"

    n_rows, n_cols = idx.shape
    if fig is None:
        fig = Figure(figsize=(0.45 * (spec.width * c_in + n_cols) + 2,
                              0.4 * max(n_rows, spec.height) + 1.5), layout="constrained")
    axes = fig.subplots(1, c_in + 1, width_ratios=[spec.width] * c_in + [n_cols])
    win = window(spec, *output)
    sel_col = frames(spec).index(output)
    for c, ax in enumerate(axes[:-1]):
        for y in range(spec.height):
            for xx in range(spec.width):
                flat = c * spec.height * spec.width + y * spec.width + xx
                label = name(flat) if x is None else f"{x[c, y, xx]:.2g}"
                hit = (y, xx) in win.inputs
                _cell(ax, y, xx, "tap" if hit else "input", (c * spec.height + y, xx),
                      TAP if hit else INPUT, label)
        _frame_axes(ax, spec.height, spec.width, f"channel {chr(ord('a') + c % 26)}")
    ax = axes[-1]
    for r in range(n_rows):
        for col in range(n_cols):
            flat = idx[r, col]
            label = ("0" if flat < 0 else name(flat)) if vals is None else f"{vals[r, col]:.2g}"
            face = (TAP if flat >= 0 else TAP_PAD) if col == sel_col else (
                INPUT if flat >= 0 else PADDING)
            _cell(ax, r, col, "matrix-selected" if col == sel_col else "matrix", (r, col), face,
                  label)
    _frame_axes(ax, n_rows, n_cols, f"im2col matrix: {n_rows} rows (c,p,q) x {n_cols} "
                                    "columns (one per output)")
    blowup = idx.size / (c_in * spec.height * spec.width)
    fig.suptitle(f"{_label(spec)}\n{idx.size} matrix entries for {c_in * spec.height * spec.width}"
                 f" input values: {blowup:.1f}x the memory", fontsize=9)
    return fig


def draw_winograd_tiles(spec: ConvSpec, m: int = 2, *, fig: Figure | None = None) -> Figure:
    """Winograd F(m x m, kh x kw)'s overlapping input tiles (one colour each, drawn a
    little inset so overlaps show), how many tiles read each cell, and the m x m
    output blocks; ragged tiles (dashed) hang over the edge and read extra zeros."""
    tiles = winograd_tiles(spec, m)
    top, left = spec.padding[0], spec.padding[2]
    rows = max(spec.padded_height, max(t.input_origin[0] + t.input_size[0] for t in tiles) + top)
    cols = max(spec.padded_width, max(t.input_origin[1] + t.input_size[1] for t in tiles) + left)
    count = np.zeros((rows, cols), dtype=int)
    for t in tiles:
        for y, x in t.input_cells():
            count[y + top, x + left] += 1
    if fig is None:
        fig = Figure(figsize=(0.45 * (cols + spec.out_width) + 2, 0.45 * rows + 1.4),
                     layout="constrained")
    ax_in, ax_out = fig.subplots(1, 2, width_ratios=[cols, spec.out_width])
    for r in range(rows):
        for c in range(cols):
            y, x = r - top, c - left
            inside = r < spec.padded_height and c < spec.padded_width
            role = "input" if _is_input(spec, (y, x)) else ("padding" if inside else "overhang")
            face = {"input": INPUT, "padding": PADDING, "overhang": "white"}[role]
            _cell(ax_in, r, c, role, (y, x), face, str(count[r, c]) if count[r, c] else "",
                  linestyle="-" if role == "input" else ":", alpha=0.6 + 0.1 * min(count[r, c], 4))
    for k, t in enumerate(tiles):
        colour, inset = TILE_COLOURS[k % len(TILE_COLOURS)], 0.08 + 0.06 * (k % 3)
        style = {"linestyle": "--" if t.ragged else "-", "linewidth": 1.8, "fill": False,
                 "edgecolor": colour}
        (y0, x0), (a, b) = t.input_origin, t.input_size
        ax_in.add_patch(Rectangle((x0 + left + inset, y0 + top + inset), b - 2 * inset,
                                  a - 2 * inset, gid=f"tile:{t.index[0]},{t.index[1]}", **style))
        (i0, j0), (mi, mj) = t.output_origin, t.output_size
        for i in range(i0, i0 + mi):
            for j in range(j0, j0 + mj):
                _cell(ax_out, i, j, "output", (i, j), OUTPUT)
        ax_out.add_patch(Rectangle((j0 + 0.05, i0 + 0.05), m - 0.1, m - 0.1, gid=f"block:{k}",
                                   **style))
    _frame_axes(ax_in, rows, cols, "input tiles (number = tiles reading the cell)")
    _frame_axes(ax_out, max(spec.out_height, rows), spec.out_width + 1,
                f"{m}x{m} output blocks")
    n_ragged = sum(t.ragged for t in tiles)
    a, b = tiles[0].input_size
    fig.suptitle(f"F({m}x{m}, {spec.kernel_size[0]}x{spec.kernel_size[1]}): {len(tiles)} tiles "
                 f"of {a}x{b} inputs, overlapping by {a - m}x{b - m}; {n_ragged} ragged\n"
                 f"{_label(spec)}", fontsize=9)
    return fig


def draw_groups(in_channels: int, out_channels: int, groups: int | Sequence[int] = 1,
                *, fig: Figure | None = None) -> Figure:
    """Channel connections for one or several ``groups`` values side by side: a line
    per (input, output) pair a weight slice connects; groups=C_in is depthwise."""
    values = [groups] if isinstance(groups, int) else list(groups)
    if fig is None:
        fig = Figure(figsize=(2.6 * len(values), 0.45 * max(in_channels, out_channels) + 1.4),
                     layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(values), squeeze=False)).ravel()
    height = max(in_channels, out_channels)
    for ax, g in zip(axes, values, strict=True):
        pairs = group_connections(in_channels, out_channels, g)
        kg = out_channels // g

        def y_in(c: int) -> float:
            return (c + 0.5) * height / in_channels

        def y_out(k: int) -> float:
            return (k + 0.5) * height / out_channels

        for c, k in pairs:
            ax.plot([0, 1], [y_in(c), y_out(k)], color=TILE_COLOURS[(k // kg) % 6], lw=1.2,
                    gid=f"edge:{c},{k}")
        for c in range(in_channels):
            ax.add_patch(Circle((0, y_in(c)), 0.07, color=TAP, zorder=3, gid=f"in:{c},0"))
        for k in range(out_channels):
            ax.add_patch(Circle((1, y_out(k)), 0.07, color=OUTPUT_SEL, zorder=3,
                                gid=f"out:{k},0"))
        kind = " (depthwise)" if g == in_channels else ""
        ax.set_title(f"groups={g}{kind}\n{len(pairs)} connections, weight "
                     f"({out_channels}, {in_channels // g}, kh, kw)", fontsize=8)
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylim(height, 0)
        ax.axis("off")
    fig.suptitle(f"{in_channels} input channels (left) -> {out_channels} outputs (right)",
                 fontsize=9)
    return fig


# ======================================================================= widgets
CONTROLS = ("kernel", "stride", "padding", "dilation")


@dataclass(frozen=True)
class ArithmeticState:
    """What the arithmetic explorer shows: the (clamped) settings and their spec."""

    size: Cell
    kernel: int
    stride: int
    padding: int | str
    dilation: int
    spec: ConvSpec
    message: str  # what was clamped and why; "" if nothing

    def formula(self) -> str:
        """The output-size formula with this state's numbers (values from the spec)."""
        s, (dh, _), (kh, _) = self.spec, self.spec.dilation, self.spec.kernel_size
        t, b, left, r = s.padding
        return (f"H_out = floor(({s.height} + {t} + {b} - {dh}*({kh}-1) - 1) / {s.stride[0]})"
                f" + 1 = {s.out_height};   W_out = floor(({s.width} + {left} + {r} - {dh}*("
                f"{kh}-1) - 1) / {s.stride[1]}) + 1 = {s.out_width}")


def _try_spec(size: Cell, kernel: int, stride: int, padding: int | str,
              dilation: int) -> ConvSpec | None:
    try:
        return grid_spec(size, kernel, stride, padding, dilation)
    except ValueError:
        return None


def arithmetic_widget_state(size: IntOrPair, kernel: int, stride: int, padding: int | str,
                            dilation: int, changed: str | None = None) -> ArithmeticState:
    """Clamp the explorer's settings so the output never vanishes (at least 1x1).

    The control the user just ``changed`` gives way first (a kernel or dilation too
    big for the padded input stops at the largest that fits; padding shrunk too far
    stops at the smallest that fits); otherwise dilation, then the kernel, shrink.
    'same' needs stride 1, as in PyTorch.
    """
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"input size must be at least 1x1, got {size}")
    notes = []
    values: dict[str, Any] = {"kernel": max(1, int(kernel)), "stride": max(1, int(stride)),
                              "dilation": max(1, int(dilation)),
                              "padding": padding if isinstance(padding, str)
                              else max(0, int(padding))}
    if isinstance(padding, str) and padding not in ("same", "valid"):
        raise ValueError(f"padding must be an int, 'same' or 'valid'; got {padding!r}")
    if values["padding"] == "same" and values["stride"] != 1:
        values["stride"] = 1
        notes.append("stride 1: PyTorch refuses padding='same' for strided convolutions")
    steps = {"kernel": -1, "dilation": -1, "padding": +1}
    first = [changed] if changed in ("kernel", "dilation") else []
    if changed == "padding" and isinstance(values["padding"], int):
        first = ["padding"]  # shrunk too far: stop at the smallest padding that fits
    before = dict(values)
    for name in first + ["dilation", "kernel"]:
        while _try_spec(size, **values) is None:
            if name != "padding" and values[name] == 1:
                break
            values[name] += steps[name]
    for name in CONTROLS:
        if values[name] != before[name]:
            notes.append(f"{name} {before[name]} -> {values[name]}: otherwise the window "
                         f"would not fit in the padded {size[0]}x{size[1]} input")
    spec = grid_spec(size, values["kernel"], values["stride"], values["padding"],
                     values["dilation"])
    return ArithmeticState(size, values["kernel"], values["stride"], values["padding"],
                           values["dilation"], spec, "; ".join(notes))


class ArithmeticExplorer:
    """Sliders for kernel, stride, padding (a number, 'same' or 'valid') and dilation
    that redraw :func:`draw_conv` and the output shape.  Displays itself in Jupyter;
    ``controls``, ``state`` and ``figure`` are there for tests and curious students."""

    def __init__(self, size: IntOrPair = (5, 7), kernel: int = 3, stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, max_kernel: int = 7) -> None:
        import ipywidgets as w  # only needed here; the rest of viz works without it

        self.size = (size, size) if isinstance(size, int) else tuple(size)
        mode = padding if isinstance(padding, str) else "number"
        style = {"description_width": "70px"}
        self.controls = {
            "kernel": w.IntSlider(kernel, 1, max_kernel, description="kernel", style=style),
            "stride": w.IntSlider(stride, 1, 4, description="stride", style=style),
            "mode": w.Dropdown(options=["number", "same", "valid"], value=mode,
                               description="padding", style=style),
            "padding": w.IntSlider(padding if isinstance(padding, int) else 0, 0, 4,
                                   description="pad by", style=style),
            "dilation": w.IntSlider(dilation, 1, 4, description="dilation", style=style),
        }
        self.label = w.HTML()
        self.output = w.Output()
        self.figure: Figure | None = None
        self.state: ArithmeticState | None = None
        self._busy = False
        for name, ctl in self.controls.items():
            ctl.observe(lambda change, name=name: self.update(name), names="value")
        self.widget = w.VBox([w.HBox([w.VBox([self.controls[n] for n in ("kernel", "stride")]),
                                      w.VBox([self.controls[n] for n in ("mode", "padding")]),
                                      self.controls["dilation"]]),
                              self.label, self.output])
        self.update(None)

    def update(self, changed: str | None) -> ArithmeticState:
        """Recompute the state after ``changed`` moved, push the clamped values back
        into the sliders, redraw."""
        if self._busy:
            return self.state  # type: ignore[return-value]
        c = self.controls
        padding = c["padding"].value if c["mode"].value == "number" else c["mode"].value
        which = "padding" if changed == "mode" else changed
        state = arithmetic_widget_state(self.size, c["kernel"].value, c["stride"].value,
                                        padding, c["dilation"].value, which)
        self._busy = True
        try:
            for name in ("kernel", "stride", "dilation"):
                c[name].value = getattr(state, name)
            if isinstance(state.padding, int):
                c["padding"].value = state.padding
            c["padding"].disabled = c["mode"].value != "number"
            c["stride"].disabled = c["mode"].value == "same"
        finally:
            self._busy = False
        self.state = state
        note = f"<br><i>{state.message}</i>" if state.message else ""
        self.label.value = (f"<b>output {state.spec.out_height} x {state.spec.out_width}</b>"
                            f" &nbsp; padding (t,b,l,r) = {state.spec.padding}<br>"
                            f"<code>{state.formula()}</code>{note}")
        self.figure = draw_conv(state.spec, (0, 0))
        self._show()
        return state

    def _show(self) -> None:
        if not _in_notebook():
            return  # plain Python (tests): the state and figure are all there is
        from IPython.display import display

        self.output.clear_output(wait=True)
        with self.output:
            display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive_arithmetic(size: IntOrPair = (5, 7), **settings: Any) -> ArithmeticExplorer:
    """The conv-arithmetic explorer for a ``size`` input (show it as a cell's last line)."""
    return ArithmeticExplorer(size, **settings)


def interactive_receptive_field(spec: ConvSpec) -> Any:
    """Sliders for an output position (i, j) that redraw which inputs feed it."""
    import ipywidgets as w
    from IPython.display import display

    out = w.Output()

    def show(i: int, j: int) -> None:
        fig, cells = draw_receptive_field(spec, i, j)
        with out:
            out.clear_output(wait=True)
            display(fig)
            print(f"output ({i}, {j}) reads {len(cells)} input cells: {sorted(cells)}")

    sliders = {"i": w.IntSlider(0, 0, spec.out_height - 1, description="row i"),
               "j": w.IntSlider(0, 0, spec.out_width - 1, description="col j")}
    w.interactive_output(show, sliders)
    return w.VBox([w.HBox(list(sliders.values())), out])


__all__ = [
    "ArithmeticExplorer", "ArithmeticState", "Tile", "Window", "animate_conv",
    "arithmetic_widget_state", "draw_conv", "draw_frames", "draw_groups", "draw_im2col",
    "draw_receptive_field", "draw_winograd_tiles", "drawn_cells", "frames", "grid_spec",
    "group_connections", "im2col_indices", "im2col_matrix", "interactive_arithmetic",
    "interactive_receptive_field", "readers", "save_gif", "window", "winograd_tiles",
]


# ======================================================================= the backward pass
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


__all__ += [
    "DilatedGrid", "dilated_grid", "draw_grad_input", "draw_grad_weight",
    "draw_output_gradient", "draw_transposed", "grad_input_window", "weight_gradient_taps",
]


# ======================================================================= FFT convolution
# (notebook 11) circular vs linear correlation, and the tiles of overlap-save/overlap-add
def circular_correlation(x: np.ndarray, w: np.ndarray, n: int | None = None) -> np.ndarray:
    """y[i] = sum_p x[(i + p) mod n] w[p] for i < n, by the convolution theorem:
    IDFT(DFT(x) * conj(DFT(w))), both zero-padded to ``n`` (default len(x))."""
    n = len(x) if n is None else n
    return np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(w, n)), n)


def wrapped_outputs(n: int, span: int) -> range:
    """The outputs of a length-``n`` circular correlation with a ``span``-tap window
    that read samples wrapped round from the start: the last span - 1."""
    return range(max(0, n - span + 1), n)


def fft_tiles(spec: ConvSpec, tile: IntOrPair) -> list[Tile]:
    """Overlap-save tiles of a Th x Tw transform: input tiles of Th x Tw cells, one every
    (Th - span_h + 1, Tw - span_w + 1) cells (so they overlap by span - 1), each keeping
    that many outputs (the rest wrapped round: dropped).  As the ``fft`` kernel cuts a
    layer (span: the dilated kernel's extent)."""
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
    (sh, sw), (ho, wo) = spec.effective_kernel_size, (spec.out_height, spec.out_width)
    if spec.stride != (1, 1):
        raise ValueError(f"overlap-save tiles need stride 1; got stride {spec.stride}")
    if th < sh or tw < sw:
        raise ValueError(f"a {th}x{tw} transform is smaller than the kernel's span {sh}x{sw}")
    mh, mw = th - sh + 1, tw - sw + 1
    tiles = []
    for ti in range(math.ceil(ho / mh)):
        for tj in range(math.ceil(wo / mw)):
            i0, j0 = ti * mh, tj * mw
            size = (min(mh, ho - i0), min(mw, wo - j0))
            tiles.append(Tile((ti, tj), (i0 - spec.padding[0], j0 - spec.padding[2]), (th, tw),
                              (i0, j0), size, size != (mh, mw)))  # fmt: skip
    return tiles


def overlap_add_blocks(spec: ConvSpec, tile: IntOrPair) -> list[Tile]:
    """Overlap-add, the dual: the padded input cut into *disjoint* blocks of
    (Th - span_h + 1) x (Tw - span_w + 1) cells; each block, zero-padded to Th x Tw,
    contributes to the Th x Tw outputs from (span - 1) before it to its end, so
    neighbouring contributions overlap by span - 1 and are added.  ``output_origin`` /
    ``output_size`` are that range clipped to the output."""
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
    (sh, sw), (ho, wo) = spec.effective_kernel_size, (spec.out_height, spec.out_width)
    if spec.stride != (1, 1):
        raise ValueError(f"overlap-add blocks need stride 1; got stride {spec.stride}")
    if th < sh or tw < sw:
        raise ValueError(f"a {th}x{tw} transform is smaller than the kernel's span {sh}x{sw}")
    lh, lw = th - sh + 1, tw - sw + 1
    blocks = []
    for bi in range(math.ceil(spec.padded_height / lh)):
        for bj in range(math.ceil(spec.padded_width / lw)):
            y0, x0 = bi * lh, bj * lw  # in the padded frame
            size = (min(lh, spec.padded_height - y0), min(lw, spec.padded_width - x0))
            o0 = (max(0, y0 - sh + 1), max(0, x0 - sw + 1))
            o1 = (min(ho, y0 + size[0]), min(wo, x0 + size[1]))
            blocks.append(Tile((bi, bj), (y0 - spec.padding[0], x0 - spec.padding[2]), size,
                               o0, (max(0, o1[0] - o0[0]), max(0, o1[1] - o0[1])),
                               size != (lh, lw)))  # fmt: skip
    return blocks


def draw_circular_vs_linear(x: np.ndarray, w: np.ndarray) -> Figure:
    """Top: the signal, and where the window of the last output reads it, circularly
    (wrapped samples red).  Bottom: the correlation computed directly ('valid': only
    windows that fit), by DFTs of len(x) (circular: the last len(w) - 1 outputs
    wrapped, red crosses), and by DFTs zero-padded to len(x) + len(w) - 1 (linear again)."""
    x, w = np.asarray(x, float), np.asarray(w, float)
    n, k = len(x), len(w)
    fig = Figure(figsize=(9, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 1.4])
    top.stem(range(n), x, basefmt=" ", linefmt="#3d85c6", markerfmt="o")
    last = [(n - 1 + p) % n for p in range(k)]
    for p, i in enumerate(last):
        wrapped = n - 1 + p >= n
        top.axvspan(i - 0.4, i + 0.4, color=WINDOW if wrapped else TAP, alpha=0.25, lw=0,
                    gid=f"{'wrapped' if wrapped else 'window'}:{i},{p}")
    top.set_title(f"x ({n} samples); the window of circular output {n - 1} reads "
                  f"{last} (red: wrapped round)", fontsize=9)
    top.set_xticks(range(n))
    linear = np.correlate(x, w, mode="valid")
    circular = circular_correlation(x, w)
    padded = circular_correlation(x, w, n + k - 1)
    wrapped = list(wrapped_outputs(n, k))
    bottom.plot(range(len(linear)), linear, "s", ms=10, mfc="none", color="#333333",
                label="direct ('valid' windows)")
    ok = [i for i in range(n) if i not in wrapped]
    bottom.plot(ok, circular[ok], "o", color=TAP, label=f"DFT of {n}: circular")
    bottom.plot(wrapped, circular[wrapped], "x", ms=9, mew=2, color=WINDOW,
                label=f"DFT of {n}: wrapped outputs {wrapped[0]}..{wrapped[-1]}")
    bottom.plot(range(n), padded[:n], ".", color=OUTPUT_SEL,
                label=f"DFT of {n + k - 1} (zero-padded): linear")
    bottom.set_xticks(range(n))
    bottom.set_xlabel("output index i")
    bottom.set_title("y[i] = sum_p x[i + p] w[p]: the transforms agree with the direct sum "
                     "only where no window wraps", fontsize=9)
    bottom.legend(fontsize=8, loc="best")
    bottom.grid(True, alpha=0.3)
    return fig


def draw_fft_tiles(spec: ConvSpec, tile: IntOrPair, method: str = "save", *,
                   fig: Figure | None = None) -> Figure:
    """The tiles FFT convolution transforms, like :func:`draw_winograd_tiles`.

    ``method="save"`` (overlap-save, what the ``fft`` kernel does): overlapping input
    tiles (number: tiles reading the cell), each keeping its block of outputs.
    ``method="add"`` (overlap-add): disjoint input blocks, whose output ranges overlap
    (number: contributions added into the output cell)."""
    if method not in ("save", "add"):
        raise ValueError(f"method must be 'save' or 'add', got {method!r}")
    tiles = fft_tiles(spec, tile) if method == "save" else overlap_add_blocks(spec, tile)
    top, left = spec.padding[0], spec.padding[2]
    rows = max(spec.padded_height, max(t.input_origin[0] + t.input_size[0] for t in tiles) + top)
    cols = max(spec.padded_width, max(t.input_origin[1] + t.input_size[1] for t in tiles) + left)
    reads = np.zeros((rows, cols), dtype=int)
    adds = np.zeros((spec.out_height, spec.out_width), dtype=int)
    for t in tiles:
        for y, x in t.input_cells():
            reads[y + top, x + left] += 1
        (i0, j0), (mi, mj) = t.output_origin, t.output_size
        adds[i0:i0 + mi, j0:j0 + mj] += 1
    if fig is None:
        fig = Figure(figsize=(0.4 * (cols + spec.out_width) + 2, 0.4 * rows + 1.5),
                     layout="constrained")
    ax_in, ax_out = fig.subplots(1, 2, width_ratios=[cols, spec.out_width])
    for r in range(rows):
        for c in range(cols):
            y, x = r - top, c - left
            inside = r < spec.padded_height and c < spec.padded_width
            role = "input" if _is_input(spec, (y, x)) else ("padding" if inside else "overhang")
            face = {"input": INPUT, "padding": PADDING, "overhang": "white"}[role]
            _cell(ax_in, r, c, role, (y, x), face, str(reads[r, c]) if reads[r, c] else "",
                  linestyle="-" if role == "input" else ":")
    for i in range(spec.out_height):
        for j in range(spec.out_width):
            text = str(adds[i, j]) if method == "add" else ""
            _cell(ax_out, i, j, "output", (i, j), OUTPUT, text)
    for n, t in enumerate(tiles):
        colour, inset = TILE_COLOURS[n % len(TILE_COLOURS)], 0.08 + 0.06 * (n % 3)
        style = {"linestyle": "--" if t.ragged else "-", "linewidth": 1.8, "fill": False,
                 "edgecolor": colour}
        (y0, x0), (a, b) = t.input_origin, t.input_size
        ax_in.add_patch(Rectangle((x0 + left + inset, y0 + top + inset), b - 2 * inset,
                                  a - 2 * inset, gid=f"tile:{t.index[0]},{t.index[1]}", **style))
        (i0, j0), (mi, mj) = t.output_origin, t.output_size
        ax_out.add_patch(Rectangle((j0 + inset, i0 + inset), mj - 2 * inset, mi - 2 * inset,
                                   gid=f"block:{n}", **style))
    th, tw = tiles[0].input_size if method == "save" else (
        (tile, tile) if isinstance(tile, int) else tuple(tile))
    sh, sw = spec.effective_kernel_size
    if method == "save":
        _frame_axes(ax_in, rows, cols, "overlapping input tiles (number = tiles reading it)")
        _frame_axes(ax_out, max(spec.out_height, rows), spec.out_width + 1,
                    f"each tile keeps {th - sh + 1}x{tw - sw + 1} outputs")
        what = (f"overlap-save with {th}x{tw} transforms: {len(tiles)} tiles overlapping by "
                f"{sh - 1}x{sw - 1}, {sum(t.ragged for t in tiles)} ragged")
    else:
        _frame_axes(ax_in, rows, cols, "disjoint input blocks")
        _frame_axes(ax_out, max(spec.out_height, rows), spec.out_width + 1,
                    "number = contributions added")
        what = (f"overlap-add with {th}x{tw} transforms: {len(tiles)} blocks of "
                f"{th - sh + 1}x{tw - sw + 1}, outputs overlapping by {sh - 1}x{sw - 1}")
    fig.suptitle(f"{what}\n{_label(spec)}", fontsize=9)
    return fig


__all__ += ["circular_correlation", "draw_circular_vs_linear", "draw_fft_tiles", "fft_tiles",
            "overlap_add_blocks", "wrapped_outputs"]

"""The conv-arithmetic grid: where a convolution's window falls, which inputs feed one
output, the im2col matrix, Winograd's tiles, groups as channel connections, and the
drawings of them all, in the spirit of conv_arithmetic and the convolution visualizer.

The first subject of :mod:`convlab.viz` (which re-exports every public name here) and the
grid primitives the other three (the explorer, the backward pass, FFT) draw with.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from .shapes import ConvSpec, IntOrPair, PaddingArg, check_channels

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
        self.boxes = [Rectangle((0, 0), 0, 0, fill=False, linewidth=2, visible=False,
                                edgecolor=edge, linestyle=line)
                      for edge, line in (("#999999", "--"), (WINDOW, "-"))]
        for box in self.boxes:
            ax.add_patch(box)
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
        style: dict[str, Any] = {"linestyle": "--" if t.ragged else "-", "linewidth": 1.8,
                                 "fill": False, "edgecolor": colour}
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


__all__ = [
    "Tile", "Window", "animate_conv", "draw_conv", "draw_frames", "draw_groups", "draw_im2col",
    "draw_receptive_field", "draw_winograd_tiles", "drawn_cells", "frames", "grid_spec",
    "group_connections", "im2col_indices", "im2col_matrix", "readers", "save_gif", "window",
    "winograd_tiles",
]

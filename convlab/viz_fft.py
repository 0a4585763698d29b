"""Pictures of FFT convolution (notebook 11): circular against linear correlation (the
wrap-around a DFT product gives), and the tiles of overlap-save and overlap-add.

Data first (:func:`circular_correlation`, :func:`wrapped_outputs`, :func:`fft_tiles`,
:func:`overlap_add_blocks`), then drawings on the grid primitives of
:mod:`convlab.viz_grid`.  Importable as ``convlab.viz.<name>``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .shapes import ConvSpec, IntOrPair
from .viz_grid import (
    INPUT,
    OUTPUT,
    OUTPUT_SEL,
    PADDING,
    TAP,
    TILE_COLOURS,
    WINDOW,
    Tile,
    _cell,
    _frame_axes,
    _is_input,
    _label,
)


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
        wraps = n - 1 + p >= n
        top.axvspan(i - 0.4, i + 0.4, color=WINDOW if wraps else TAP, alpha=0.25, lw=0,
                    gid=f"{'wrapped' if wraps else 'window'}:{i},{p}")
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
        style: dict[str, Any] = {"linestyle": "--" if t.ragged else "-", "linewidth": 1.8,
                                 "fill": False, "edgecolor": colour}
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


__all__ = [
    "circular_correlation", "draw_circular_vs_linear", "draw_fft_tiles", "fft_tiles",
    "overlap_add_blocks", "wrapped_outputs",
]

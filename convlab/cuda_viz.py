"""The picture of one ``cuda_tiled`` block: which inputs it stages, which outputs it writes.

    >>> from convlab import ConvSpec
    >>> from convlab.cuda_viz import draw_block_tile
    >>> spec = ConvSpec.create((1, 3, 20, 22), 8, 3, padding=1)
    >>> fig = draw_block_tile(spec, block=(1, 0))        # doctest: +SKIP

Left: the (zero-)padded input of one channel; the block's patch (its output tile
times the stride, plus the dilated kernel's halo) is shaded, the part of it that
lies in the padding hatched (staged as zeros, never read from memory).  Right: the
output; the block's tile is shaded, ragged-edge outputs it computes but does not
store are crossed, and the outputs of one thread (register blocking) are dotted.
No GPU is needed: this is arithmetic on the :class:`~convlab.kernels.cuda.TileConfig`.

The other pictures are *measured*: they draw a :class:`~convlab.cuda_trace.Trace`, the
record of every memory access of a launch on the CUDA simulator.

* :func:`draw_thread_reads` (GPU-Puzzles style): the launch's blocks and threads, each
  coloured by its global reads, and the cells of the input one chosen thread reads
  (the rest of its block's reads lighter), and what it writes;
* :func:`draw_staging`: the shared-memory patch one block stages, each cell labelled
  with the global cell it was copied from (or 0: padding), beside the input with those
  cells marked;
* :func:`draw_read_heatmaps`: how many times each input cell is read, kernel beside
  kernel (``cuda_naive`` vs ``cuda_tiled``), on one colour scale.

Every drawn cell is a patch whose ``gid`` is ``"role:index"`` (see :func:`drawn`), so
tests read the pictures back without looking at pixels.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from .kernels.cuda import TileConfig, choose_config
from .shapes import ConvSpec

# colours: thread's own accesses dark, its block's light, outputs green, padding grey
MINE, BLOCKS, WRITTEN, ZERO, EMPTY = "#1f5fa8", "#b7d3ee", "#6aa84f", "#d9d9d9", "white"


def block_footprint(spec: ConvSpec, config: TileConfig, block: tuple[int, int]) -> dict:
    """Rows/columns of the output tile and of the staged input patch (in unpadded input
    coordinates, so negative or too-large ones are padding) for tile ``block`` =
    (tile row, tile column)."""
    (sh, sw), (top, _, left, _) = spec.stride, spec.padding
    oy0, ox0 = block[0] * config.th, block[1] * config.tw
    ph, pw = config.patch(spec)
    return {"out_rows": (oy0, oy0 + config.th), "out_cols": (ox0, ox0 + config.tw),
            "in_rows": (oy0 * sh - top, oy0 * sh - top + ph),
            "in_cols": (ox0 * sw - left, ox0 * sw - left + pw)}


def thread_pixels(config: TileConfig, thread: int = 0) -> list[tuple[int, int]]:
    """(row, column) inside the tile of the pixels one thread accumulates: they are
    ``threads along pixels`` apart, so a warp's stores land side by side."""
    pt = config.th * config.tw // config.rp
    tp = thread % pt
    return [divmod(tp + r * pt, config.tw) for r in range(config.rp)]


def draw_block_tile(spec: ConvSpec, config: TileConfig | None = None,
                    block: tuple[int, int] = (0, 0), thread: int = 0, ax: Any = None) -> Any:
    """Draw the input patch and output tile of one block (returns the figure)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cfg = config or choose_config(spec)
    fp = block_footprint(spec, cfg, block)
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(11, 5))
    fig = ax[0].figure
    top, bottom, left, right = spec.padding
    ho, wo = spec.out_height, spec.out_width
    # input, padded, drawn in unpadded coordinates
    a = ax[0]
    a.add_patch(Rectangle((-left, -top), spec.width + left + right, spec.height + top + bottom,
                          fill=False, hatch="//", ec="0.7", lw=0))
    a.add_patch(Rectangle((0, 0), spec.width, spec.height, fc="white", ec="k"))
    (r0, r1), (c0, c1) = fp["in_rows"], fp["in_cols"]
    a.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, fc="tab:blue", alpha=0.35, ec="tab:blue",
                          lw=2, label=f"patch staged in shared memory ({r1 - r0}x{c1 - c0})"))
    a.set_xlim(min(-left, c0) - 1, max(spec.width + right, c1) + 1)
    a.set_ylim(max(spec.height + bottom, r1) + 1, min(-top, r0) - 1)
    a.set_title(f"input {spec.height}x{spec.width} (+ padding, hatched)")
    # output
    b = ax[1]
    b.add_patch(Rectangle((0, 0), wo, ho, fc="white", ec="k"))
    (o0, o1), (p0, p1) = fp["out_rows"], fp["out_cols"]
    b.add_patch(Rectangle((p0, o0), p1 - p0, o1 - o0, fc="tab:orange", alpha=0.35,
                          ec="tab:orange", lw=2, label=f"block tile {cfg.th}x{cfg.tw}"))
    for i in range(o0, o1):
        for j in range(p0, p1):
            if i >= ho or j >= wo:
                b.plot(j + 0.5, i + 0.5, "x", color="tab:red", ms=5)
    ys, xs = zip(*[(o0 + r + 0.5, p0 + c + 0.5) for r, c in thread_pixels(cfg, thread)])
    b.plot(xs, ys, "o", color="k", ms=4, label=f"thread {thread}'s {cfg.rp} pixels "
           f"(x {cfg.rk} channels)")
    b.set_xlim(-1, max(wo, p1) + 1)
    b.set_ylim(max(ho, o1) + 1, -1)
    b.set_title(f"output {ho}x{wo}: block {block}, {cfg.tk} channels, {cfg.threads} threads")
    for axis in (a, b):
        axis.set_aspect("equal")
        axis.set_xticks(range(*map(int, axis.get_xlim())), minor=True)
        axis.set_yticks(range(*map(int, sorted(axis.get_ylim()))), minor=True)
        axis.grid(which="minor", color="0.9", lw=0.5)
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=8)
    fig.suptitle(f"cuda_tiled {tuple(cfg)} (tk, rk, th, tw, rp, ck); kernel "
                 f"{spec.kernel_size}, stride {spec.stride}, dilation {spec.dilation}")
    fig.tight_layout()
    return fig


# ======================================================================= traced pictures
def tiled_block(spec: ConvSpec, config: TileConfig, tile: tuple[int, int],
                k_tile: int = 0, image: int = 0) -> tuple[int, int, int]:
    """The CUDA block index (x, y, z) of ``cuda_tiled``'s block for output tile
    ``tile`` = (tile row, tile column), channel tile ``k_tile`` and image ``image``."""
    tiles_w = -(-spec.out_width // config.tw)
    return tile[0] * tiles_w + tile[1], k_tile, image


def drawn(fig: Any, role: str) -> set[tuple[int, ...]]:
    """The indices drawn with ``role`` ("read", "block-read", "written", "staged",
    "zero", "thread", ...) in a figure of this module."""
    found = set()
    for ax in fig.axes:
        for patch in ax.patches:
            name, _, where = (patch.get_gid() or "").partition(":")
            if name == role and where:
                found.add(tuple(int(v) for v in where.split(",")))
    return found


def _square(ax: Any, row: float, col: float, face: str, gid: str, text: str = "",
            **style: Any) -> None:
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((col, row), 1, 1, facecolor=face, gid=gid,
                           **{"edgecolor": "#888888", "linewidth": 0.5, **style}))
    if text:
        ax.text(col + 0.5, row + 0.5, text, ha="center", va="center", fontsize=6)


def _frame(ax: Any, rows: int, cols: int, title: str) -> None:
    ax.set_xlim(-0.3, cols + 0.3)
    ax.set_ylim(rows + 0.3, -0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=8)


def _slices(shape: tuple[int, ...], cells: Any, limit: int) -> list[tuple[int, ...]]:
    """The leading indices (all axes but the last two) of the 2-D slices that hold any of
    ``cells``, at most ``limit`` of them."""
    lead = sorted({tuple(c[:-2]) for c in cells})
    return lead[:limit] if lead else [(0,) * (len(shape) - 2)]


def _name(lead: tuple[int, ...], array: str) -> str:
    return f"{array}[{', '.join(map(str, lead))}{', ' if lead else ''}:, :]"


def _launch_layout(t: Any) -> tuple[int, int, Any]:
    """Rows, columns of the launch map and where (row, col) thread (b, t) goes: a
    block's threads as its (y*z, x) grid, blocks side by side along x, stacked
    along y*z; a 1-D launch of 1-D blocks is a column of rows."""
    (gx, gy, gz), (bx, by, bz) = t.grid, t.block
    if by * bz == 1 and gy * gz == 1:
        return gx, bx, lambda b, th: (b, th)
    cols = gx * (bx + 1) - 1
    rows = gy * gz * (by * bz + 1) - 1

    def where(b: int, th: int) -> tuple[int, int]:
        (x, y, z), (tx, ty, tz) = t.block_index(b), t.thread_index(th)
        return (y + gy * z) * (by * bz + 1) + ty + by * tz, x * (bx + 1) + tx

    return rows, cols, where


def _draw_launch(ax: Any, t: Any, chosen: tuple[int, int] | None) -> None:
    from matplotlib import colormaps

    reads = t.per_thread("global", "read")
    rows, cols, where = _launch_layout(t)
    top = max(int(reads.max()), 1)
    cmap = colormaps["Greys"]
    for b in range(t.n_blocks):
        for th in range(t.threads_per_block):
            r, c = where(b, th)
            face = cmap(0.1 + 0.7 * reads[b, th] / top)
            pick = chosen == (b, th)
            style: dict[str, Any] = {"edgecolor": "red", "linewidth": 2.0} if pick else {}
            _square(ax, r, c, face, f"{'thread-chosen' if pick else 'thread'}:{b},{th}",
                    **style)
    _frame(ax, rows, cols, f"launch: grid {t.grid} x block {t.block}\n(grey = global reads "
           f"per thread, 0..{top})")


def draw_thread_reads(t: Any, block: Any = (0, 0, 0), thread: Any = (0, 0, 0),
                      array: str = "x", out: str | None = "out", max_slices: int = 4,
                      fig: Any = None) -> Any:
    """GPU-Puzzles style: which cells of ``array`` one thread of a traced launch reads
    (dark, with the count when > 1), what the rest of its block reads (light), and
    the cells of ``out`` it writes (green).  ``t``: a :class:`~convlab.cuda_trace.Trace`;
    ``block``, ``thread``: CUDA indices (tuples).  Returns the figure."""
    from matplotlib.figure import Figure

    mine = Counter(t.indices(array, "read", block=block, thread=thread))
    theirs = set(t.indices(array, "read", block=block)) - set(mine)
    written = set(t.indices(out, "write", block=block, thread=thread)) if out else set()
    info = t.info(array)
    leads = _slices(info.shape, mine or theirs, max_slices)
    out_leads = _slices(t.info(out).shape, written, 2) if out else []
    # the launch map, then these 2-D slices: (array, leading indices)
    panels: list[tuple[str, tuple[int, ...]]] = [(array, ld) for ld in leads]
    if out:
        panels += [(out, ld) for ld in out_leads]
    if fig is None:
        fig = Figure(figsize=(2.6 * (1 + len(panels)) + 1, 3.4), layout="constrained")
    axes = fig.subplots(1, 1 + len(panels), squeeze=False)[0]
    b_id, t_id = t._block_id(block), t._thread_id(thread)
    _draw_launch(axes[0], t, (b_id, t_id))
    for ax, (name, lead) in zip(axes[1:], panels):
        shape = t.info(name).shape
        rows, cols = shape[-2:]
        for r in range(rows):
            for c in range(cols):
                idx = (*lead, r, c)
                if name == array and idx in mine:
                    n = mine[idx]
                    _square(ax, r, c, MINE, f"read:{','.join(map(str, idx))}",
                            str(n) if n > 1 else "")
                elif name == array and idx in theirs:
                    _square(ax, r, c, BLOCKS, f"block-read:{','.join(map(str, idx))}")
                elif name == out and idx in written:
                    _square(ax, r, c, WRITTEN, f"written:{','.join(map(str, idx))}")
                else:
                    _square(ax, r, c, EMPTY, f"cell:{','.join(map(str, idx))}")
        _frame(ax, rows, cols, _name(lead, name))
    more = len({tuple(c[:-2]) for c in mine}) - len(leads)
    fig.suptitle(f"{t.kernel}: thread {tuple(thread)} of block {tuple(block)} reads "
                 f"{sum(mine.values())} elements of {array} ({len(mine)} distinct"
                 + (f"; {more} more slices not shown" if more > 0 else "")
                 + f"), writes {len(written)} of {out}", fontsize=9)
    return fig


def draw_staging(t: Any, block: Any = (0, 0, 0), shared: str = "x_s", source: str = "x",
                 shape: tuple[int, ...] | None = None, phase: int | None = 0,
                 max_slices: int = 4, fig: Any = None) -> Any:
    """The shared-memory array ``shared`` one block fills in barrier ``phase`` (each cell
    labelled with the (row, column) of the ``source`` cell it was copied from, grey
    with 0 where the block wrote a constant: zero padding), beside ``source`` with the
    cells that fed it.  ``shape``: how to lay out a flat shared array (convlab's
    ``cuda_tiled`` stages (ck, patch rows, patch columns) as one flat array)."""
    from matplotlib.figure import Figure

    staged = t.staged(shared, block, phase, source)
    info = t.info(shared)
    lay = shape or info.shape
    if len(lay) == 1:
        lay = (1, *lay)
    if int(np.prod(lay)) != info.size:
        raise ValueError(f"shape {shape} does not hold {shared}'s {info.size} elements")
    cells = {}
    for flat_idx, src in staged.items():
        pos = np.unravel_index(int(np.ravel_multi_index(flat_idx, info.shape)), lay)
        cells[tuple(int(i) for i in pos)] = src
    fed = {src[1] for src in cells.values() if src is not None and src[0] == source}
    lead_s = _slices(lay, cells, max_slices) if len(lay) > 2 else [()]
    src_shape = t.info(source).shape
    lead_x = _slices(src_shape, fed, max_slices)
    panels = [("src", ld) for ld in lead_x] + [("shared", ld) for ld in lead_s]
    if fig is None:
        fig = Figure(figsize=(2.8 * len(panels) + 0.5, 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (what, lead) in zip(axes, panels):
        if what == "src":
            rows, cols = src_shape[-2:]
            for r in range(rows):
                for c in range(cols):
                    idx = (*lead, r, c)
                    role = "fed" if idx in fed else "cell"
                    _square(ax, r, c, MINE if idx in fed else EMPTY,
                            f"{role}:{','.join(map(str, idx))}")
            _frame(ax, rows, cols, _name(lead, source))
        else:
            rows, cols = lay[-2:]
            for r in range(rows):
                for c in range(cols):
                    idx = (*lead, r, c)
                    src = cells.get(idx, "never")
                    if src == "never":
                        _square(ax, r, c, EMPTY, f"unwritten:{','.join(map(str, idx))}")
                    elif src is None:
                        _square(ax, r, c, ZERO, f"zero:{','.join(map(str, idx))}", "0")
                    else:
                        label = ",".join(map(str, src[1][-2:]))
                        _square(ax, r, c, BLOCKS, f"staged:{','.join(map(str, idx))}",
                                label if cols <= 12 else "")
            _frame(ax, rows, cols, f"{shared} as {tuple(lay)}" + (f", slice {lead}" if lead
                                                                   else ""))
    n_zero = sum(v is None for v in cells.values())
    fig.suptitle(f"{t.kernel}: block {tuple(block)}"
                 + (f", barrier phase {phase}" if phase is not None else "")
                 + f": {len(cells) - n_zero} cells of {shared} copied from {source}, "
                 f"{n_zero} zeros (padding, or past the edge)", fontsize=9)
    return fig


def read_counts(t: Any, array: str = "x", image: int | None = 0) -> np.ndarray:
    """Reads of each (row, column) of a traced (N, C, H, W) or (C, H, W) ``array``, summed
    over channels (and over images when ``image`` is None)."""
    counts = t.count_map(array, "read")
    if counts.ndim == 4:
        counts = counts.sum(axis=0) if image is None else counts[image]
    return counts.reshape(-1, *counts.shape[-2:]).sum(axis=0)


def draw_read_heatmaps(traces: dict[str, Any], array: str = "x", image: int | None = 0,
                       fig: Any = None) -> Any:
    """How many times each input cell is read (summed over channels), one panel per
    traced kernel, on one colour scale, with the count in each cell."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    maps = {name: read_counts(t, array, image) for name, t in traces.items()}
    top = max(int(m.max()) for m in maps.values()) or 1
    norm, cmap = Normalize(0, top), colormaps["viridis"]
    h, w = next(iter(maps.values())).shape
    if fig is None:
        fig = Figure(figsize=(0.4 * w * len(maps) + 2, 0.4 * h + 1.4), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for ax, (name, m) in zip(axes, maps.items()):
        for r in range(h):
            for c in range(w):
                n = int(m[r, c])
                ax.add_patch(Rectangle(
                    (c, r), 1, 1, facecolor=cmap(norm(n)), edgecolor="white", linewidth=0.3,
                    gid=f"count-{n}:{r},{c}"))
                ax.text(c + 0.5, r + 0.5, str(n), ha="center", va="center", fontsize=6,
                        color="white" if n < 0.6 * top else "black")
        total = int(m.sum())
        _frame(ax, h, w, f"{name}: {total:,} reads of {array}\n"
               f"({total / m.size:.1f} per cell)")
    fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes), shrink=0.8,
                 label="reads per cell (all channels)")
    return fig


# ======================================================================= examples
EXAMPLE_SPEC = ((1, 2, 9, 11), 4, 3, 1)  # input shape, out channels, kernel, padding


@functools.lru_cache(maxsize=1)
def _example_traces() -> tuple[ConvSpec, Any, Any]:
    from .cuda_trace import trace_spec

    shape, k, kernel, padding = EXAMPLE_SPEC
    spec = ConvSpec.create(shape, k, kernel, padding=padding)
    return spec, trace_spec(spec, "cuda_naive")[0], trace_spec(spec, "cuda_tiled")[0]


def example_figures() -> dict[str, tuple[str, Callable[[], Any]]]:
    """The traced pictures ``convlab figures`` draws: file name -> (what it shows,
    draw() -> Figure).  One small layer (9x11 input, 2 -> 4 channels, 3x3, padding 1),
    traced once on the simulator (a few seconds; no GPU, no NUMBA_ENABLE_CUDASIM)."""
    from .kernels.cuda import SIM_CONFIG as cfg

    def reads() -> Any:
        _, naive, _ = _example_traces()
        return draw_thread_reads(naive, block=(1, 0, 0), thread=(0, 0, 0))  # at the edge

    def staging() -> Any:
        spec, _, tiled = _example_traces()
        ph, pw = cfg.patch(spec)
        return draw_staging(tiled, tiled_block(spec, cfg, (0, 2)), shape=(cfg.ck, ph, pw))

    def heatmaps() -> Any:
        _, naive, tiled = _example_traces()
        return draw_read_heatmaps({"cuda_naive": naive, "cuda_tiled": tiled})

    return {
        "cuda_thread_reads.png": ("cuda_naive traced: the launch, and the inputs one thread "
                                  "reads", reads),
        "cuda_staging.png": ("cuda_tiled traced: the patch one block stages in shared memory "
                             "and where each cell came from", staging),
        "cuda_read_heatmap.png": ("reads per input cell, cuda_naive vs cuda_tiled (traced)",
                                  heatmaps),
    }

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
"""

from __future__ import annotations

from typing import Any

from .kernels.cuda import TileConfig, choose_config
from .shapes import ConvSpec


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

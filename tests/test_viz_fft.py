"""Notebook 11's pictures: circular vs linear correlation and the overlap-save /
overlap-add tiles, checked through their data (not their pixels)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from convlab import viz
from convlab.kernels import fft


def test_circular_correlation_wraps_exactly_the_last_span_minus_one_outputs():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(11), rng.standard_normal(4)
    circ = viz.circular_correlation(x, w)
    direct = np.array([sum(x[(i + p) % 11] * w[p] for p in range(4)) for i in range(11)])
    np.testing.assert_allclose(circ, direct, atol=1e-12)  # the theorem, circularly
    linear = np.correlate(x, w, mode="valid")  # 8 windows that fit
    wrapped = list(viz.wrapped_outputs(11, 4))
    assert wrapped == [8, 9, 10]
    np.testing.assert_allclose(circ[:8], linear, atol=1e-12)
    assert np.all(np.abs(circ[wrapped] - np.correlate(np.r_[x, 0, 0, 0], w, "valid")[8:]) > 1e-9)
    # zero-padded to n + k - 1: linear everywhere (zeros past the end, not the start)
    padded = viz.circular_correlation(x, w, 14)[:11]
    np.testing.assert_allclose(padded, np.correlate(np.r_[x, 0, 0, 0], w, "valid"), atol=1e-12)


@pytest.mark.parametrize("size,kernel,padding,dilation,tile", [
    ((7, 9), 3, 1, 1, 6), ((10, 8), (5, 2), "same", 1, (7, 5)), ((12, 13), 3, 2, 2, 8),
    ((5, 6), 1, 0, 1, 4),
])
def test_overlap_save_tiles_keep_every_output_once(size, kernel, padding, dilation, tile):
    spec = viz.grid_spec(size, kernel, padding=padding, dilation=dilation)
    tiles = viz.fft_tiles(spec, tile)
    owner = np.zeros((spec.out_height, spec.out_width), int)
    for t in tiles:
        (i0, j0), (mi, mj) = t.output_origin, t.output_size
        owner[i0:i0 + mi, j0:j0 + mj] += 1
        # the tile reads every input its outputs' windows read (nothing wrapped)
        for i, j in itertools.product(range(i0, i0 + mi), range(j0, j0 + mj)):
            win = viz.window(spec, i, j)
            assert win.inputs | win.padding <= t.input_cells()
    assert (owner == 1).all()
    # the same cut as the kernel's
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    pl = fft._fixed_plan(spec.with_batch(1), (th, tw), 4)
    assert {t.index for t in tiles} == set(itertools.product(range(pl.tiles[0]),
                                                             range(pl.tiles[1])))
    sh, sw = spec.effective_kernel_size
    if len(tiles) > 1 and pl.tiles[1] > 1:  # neighbours overlap by span - 1
        a, b = tiles[0], tiles[1]
        assert a.input_origin[1] + a.input_size[1] - b.input_origin[1] == sw - 1


def test_overlap_add_blocks_are_disjoint_and_their_sums_cover_the_output():
    spec = viz.grid_spec((7, 9), 3, padding=1)
    blocks = viz.overlap_add_blocks(spec, 6)
    seen: set = set()
    for b in blocks:
        assert not (b.input_cells() & seen)
        seen |= b.input_cells()
    padded = {(y, x) for y in range(-1, 8) for x in range(-1, 10)}
    assert seen == padded  # the whole padded input, each cell once
    adds = np.zeros((7, 9), int)
    for b in blocks:
        (i0, j0), (mi, mj) = b.output_origin, b.output_size
        adds[i0:i0 + mi, j0:j0 + mj] += 1
    # every output is the sum of the blocks its window (padding included) touches
    for i, j in itertools.product(range(7), range(9)):
        win = viz.window(spec, i, j)
        touching = {b.index for b in blocks if (win.inputs | win.padding) & b.input_cells()}
        assert adds[i, j] == len(touching) and adds[i, j] in (1, 2, 4)


def test_the_pictures_tag_what_they_draw():
    spec = viz.grid_spec((7, 9), 3, padding=1)
    fig = viz.draw_fft_tiles(spec, 6, "save")
    assert len(viz.drawn_cells(fig, "output")) == 63
    tiles = {p.get_gid() for ax in fig.axes for p in ax.patches
             if (p.get_gid() or "").startswith("tile:")}
    assert len(tiles) == len(viz.fft_tiles(spec, 6))
    assert "overlap-save" in fig._suptitle.get_text()
    assert "overlap-add" in viz.draw_fft_tiles(spec, 6, "add")._suptitle.get_text()
    with pytest.raises(ValueError, match="'save' or 'add'"):
        viz.draw_fft_tiles(spec, 6, "both")
    rng = np.random.default_rng(1)
    fig = viz.draw_circular_vs_linear(rng.standard_normal(10), rng.standard_normal(3))
    wrapped = [p.get_gid() for p in fig.axes[0].patches if (p.get_gid() or "").startswith("wr")]
    assert wrapped == ["wrapped:0,1", "wrapped:1,2"]  # output 9's window reads 0 and 1 wrapped


def test_tiles_refuse_what_fft_cannot_do():
    with pytest.raises(ValueError, match="stride 1"):
        viz.fft_tiles(viz.grid_spec(8, 3, stride=2), 6)
    with pytest.raises(ValueError, match="smaller than the kernel's span 5x5"):
        viz.fft_tiles(viz.grid_spec(8, 3, dilation=2), 4)

"""The backward pictures: their data comes from the kernels' own constructions and adds up
to the gradients convlab computes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import convlab  # noqa: E402
from convlab import figures, viz  # noqa: E402

SPECS = [viz.grid_spec((5, 6), 3, stride=2, padding=1),
         viz.grid_spec((6, 5), (2, 3), stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
         viz.grid_spec((7, 7), 3, stride=3, padding=0)]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_dilated_grid_is_grad_outputs_spread_by_the_stride(spec):
    grid = viz.dilated_grid(spec)
    held = grid.cells[grid.cells >= 0]
    assert sorted(held.tolist()) == list(range(spec.out_height * spec.out_width))
    rows = np.flatnonzero((grid.cells >= 0).any(axis=1))
    cols = np.flatnonzero((grid.cells >= 0).any(axis=0))
    assert np.all(np.diff(rows) == spec.stride[0]) and np.all(np.diff(cols) == spec.stride[1])
    assert ((grid.cells == -1).sum() ==
            (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) - held.size)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_the_flipped_window_computes_grad_input(spec):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(spec.kernel_size)
    g = rng.standard_normal((spec.out_height, spec.out_width))
    grid = viz.dilated_grid(spec)
    values = np.where(grid.cells >= 0, g.reshape(-1)[np.maximum(grid.cells, 0)], 0.0)
    top, left = spec.padding[0], spec.padding[2]
    want = convlab.conv2d_input((1, 1, spec.height, spec.width), w[None, None], g[None, None],
                                spec.stride, (top, left), spec.dilation)[0, 0]
    for y in range(spec.height):
        for x in range(spec.width):
            got = sum(w[pq] * values[rc] for pq, rc in viz.grad_input_window(spec, y, x))
            assert got == pytest.approx(want[y, x], abs=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_weight_gradient_taps_compute_grad_weight(spec):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((spec.height, spec.width))
    g = rng.standard_normal((spec.out_height, spec.out_width))
    top, left = spec.padding[0], spec.padding[2]
    want = convlab.conv2d_weight(x[None, None], (1, 1) + spec.kernel_size, g[None, None],
                                 spec.stride, (top, left), spec.dilation)[0, 0]
    for p in range(spec.kernel_size[0]):
        for q in range(spec.kernel_size[1]):
            got = sum(g[o] * x[c] for o, c in viz.weight_gradient_taps(spec, p, q)
                      if 0 <= c[0] < spec.height and 0 <= c[1] < spec.width)
            assert got == pytest.approx(want[p, q], abs=1e-12)


def test_drawings_show_their_data():
    spec = SPECS[0]
    fig = viz.draw_output_gradient(spec, 1, 2)
    assert viz.drawn_cells(fig, "grad") == viz.window(spec, 1, 2).inputs
    assert viz.drawn_cells(fig, "output-selected") == {(1, 2)}
    fig = viz.draw_grad_input(spec, (2, 3))
    assert viz.drawn_cells(fig, "tap") == {rc for _, rc in viz.grad_input_window(spec, 2, 3)}
    fig = viz.draw_grad_weight(spec, 0, 1)
    taps = {c for _, c in viz.weight_gradient_taps(spec, 0, 1)}
    assert viz.drawn_cells(fig, "tap") | viz.drawn_cells(fig, "tap-padding") == taps
    t = convlab.TransposedSpec.create((1, 3, 3), 1, 3, stride=2)
    fig = viz.draw_transposed(t, (1, 1))
    assert viz.drawn_cells(fig, "output-selected") == {(1, 1)}
    assert len(viz.drawn_cells(fig, "output")) + 1 == t.out_height * t.out_width == 49
    with pytest.raises(ValueError, match="outside the 5x6 input"):
        viz.grad_input_window(spec, 5, 0)


def test_figures_list_the_backward_pictures():
    names = [name for name, _, _ in figures._viz_figures()]
    for name in ("backward_grad_input.png", "backward_grad_weight.png",
                 "backward_output_gradient.png", "transposed_stride2.png",
                 "transposed_pad_outpad.png"):
        assert name in names
    for name, _, draw in figures._viz_figures():
        if name.startswith(("backward", "transposed")):
            assert hasattr(draw(viz), "savefig")

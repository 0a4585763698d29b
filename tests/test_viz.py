"""The pictures' data and the drawn cells match hand-worked cases and the oracle;
the arithmetic widget's clamping keeps every output at least 1x1."""

from __future__ import annotations

import subprocess
import sys
from itertools import product

import numpy as np
import pytest
from matplotlib.figure import Figure

from convlab import viz
from convlab.exercises.loops import im2col_truth
from convlab.reference import conv2d_reference
from convlab.shapes import ConvSpec

# 5x7 input, 3x3 kernel, stride (2, 1), padding 1, dilation (2, 1): output 2x7
SPEC = viz.grid_spec((5, 7), 3, stride=(2, 1), padding=1, dilation=(2, 1))


def test_window_known_position():
    win = viz.window(SPEC, 1, 2)
    # worked by hand: top-left tap at (1*2 - 1, 2*1 - 1) = (1, 1); rows 1, 3, 5; cols 1, 2, 3
    assert win.origin == (1, 1) and win.extent == (5, 3)
    assert win.inputs == {(1, 1), (1, 2), (1, 3), (3, 1), (3, 2), (3, 3)}
    assert win.padding == {(5, 1), (5, 2), (5, 3)}  # row 5 is the bottom padding
    assert win.taps[0] == ((0, 0), (1, 1)) and win.taps[-1] == ((2, 2), (5, 3))


def test_receptive_field_highlights_the_right_cells():
    fig, cells = viz.draw_receptive_field(SPEC, 1, 2)
    assert isinstance(fig, Figure)
    assert cells == {(1, 1), (1, 2), (1, 3), (3, 1), (3, 2), (3, 3)}
    assert viz.drawn_cells(fig, "tap") == cells
    assert viz.drawn_cells(fig, "tap-padding") == {(5, 1), (5, 2), (5, 3)}
    assert viz.drawn_cells(fig, "output-selected") == {(1, 2)}
    drawn_inputs = viz.drawn_cells(fig, "input") | cells
    assert drawn_inputs == {(y, x) for y in range(5) for x in range(7)}
    padding = viz.drawn_cells(fig, "padding") | viz.drawn_cells(fig, "tap-padding")
    assert len(padding) == 7 * 9 - 5 * 7  # the 1-cell border around 5x7
    assert len(viz.drawn_cells(fig, "output")) + 1 == SPEC.out_height * SPEC.out_width


def test_same_with_even_kernel_pads_bottom_right():
    spec = viz.grid_spec((4, 5), 4, padding="same")
    assert (spec.out_height, spec.out_width) == (4, 5)
    fig = viz.draw_conv(spec, (0, 0))
    pads = viz.drawn_cells(fig, "padding") | viz.drawn_cells(fig, "tap-padding")
    rows = {y for y, _ in pads if y < 0 or y >= 4}
    cols = {x for _, x in pads if x < 0 or x >= 5}
    assert rows == {-1, 4, 5} and cols == {-1, 5, 6}  # one before, two after
    assert viz.window(spec, 0, 0).origin == (-1, -1)


def test_valid_draws_no_padding():
    fig = viz.draw_conv(viz.grid_spec((4, 6), (2, 3), padding="valid"), (2, 3))
    assert viz.drawn_cells(fig, "padding") == set() == viz.drawn_cells(fig, "tap-padding")
    assert viz.drawn_cells(fig, "tap") == {(2, 3), (2, 4), (2, 5), (3, 3), (3, 4), (3, 5)}


def test_window_rejects_positions_outside_the_output():
    with pytest.raises(ValueError, match="outside the 2x7 output"):
        viz.window(SPEC, 2, 0)


@pytest.mark.parametrize("spec", [SPEC, viz.grid_spec((6, 5), (2, 3), stride=(3, 2)),
                                  viz.grid_spec(7, 3, padding="same", dilation=2)])
def test_readers_invert_windows(spec):
    for y, x in product(range(spec.height), range(spec.width)):
        for o in viz.frames(spec):
            assert ((y, x) in viz.window(spec, *o).inputs) == (o in viz.readers(spec, y, x))


def test_a_big_stride_skips_inputs():
    spec = viz.grid_spec((6, 5), (2, 3), stride=(3, 2))
    assert viz.readers(spec, 2, 0) == frozenset()  # rows 2 and 5 are never read
    assert viz.readers(spec, 0, 2) == {(0, 0), (0, 1)}


def _texts_by_cell(fig, role):
    """The label drawn in each ``role`` cell, by its (row, col)."""
    found = {}
    for ax in fig.axes:
        for patch in ax.patches:
            name, _, where = (patch.get_gid() or "").partition(":")
            if name == role and where:
                x, y = patch.get_x() + 0.5, patch.get_y() + 0.5
                label = [t.get_text() for t in ax.texts if t.get_position() == (x, y)]
                found[tuple(int(v) for v in where.split(","))] = label[0] if label else ""
    return found


def test_frames_are_numbered_from_0_in_output_order():
    # 0-based, as NumPy and PyTorch: frame 0 is output (0, 0), the weights are w00..w22
    assert viz.frames(SPEC)[:3] == [(0, 0), (0, 1), (0, 2)]
    assert len(viz.frames(SPEC)) == SPEC.out_height * SPEC.out_width
    fig = viz.draw_frames(SPEC, max_frames=5, cols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"{k}: output {o}" for k, o in enumerate(viz.frames(SPEC)[:5])]
    assert titles[0] == "0: output (0, 0)"
    assert "9 more" in fig._suptitle.get_text()
    fig = viz.draw_conv(SPEC, (1, 2))
    numbers = {**_texts_by_cell(fig, "output"), **_texts_by_cell(fig, "output-selected")}
    assert numbers == {o: str(k) for k, o in enumerate(viz.frames(SPEC))}
    taps = _texts_by_cell(fig, "tap")
    assert taps[viz.window(SPEC, 1, 2).origin] == "w00"  # tap (0, 0) reads the origin


def test_the_dashed_box_draws_the_stride_asked_for():
    spec = viz.grid_spec((7, 7), 3, stride=(2, 1), padding=1)
    # default: the next frame, one column to the right (stride 1 across)
    fig = viz.draw_conv(spec, (0, 1))
    assert viz.drawn_cells(fig, "window") == {(-1, 0)}
    assert viz.drawn_cells(fig, "next-window") == {(-1, 1)}
    # "down": the next row of outputs, two input rows lower (stride 2 down the rows)
    fig = viz.draw_conv(spec, (0, 1), next_step="down")
    assert viz.drawn_cells(fig, "next-window") == {(1, 0)}
    fig = viz.draw_conv(spec, (0, 1), next_step=(2, 3))
    assert viz.drawn_cells(fig, "next-window") == {(3, 2)}
    last = (spec.out_height - 1, spec.out_width - 1)
    for step in ("frame", "down", "right", None):
        fig = viz.draw_conv(spec, last, next_step=step)  # off the output: no dashed box
        assert viz.drawn_cells(fig, "next-window") == set()
    with pytest.raises(ValueError, match="next_step must be"):
        viz.draw_conv(spec, (0, 0), next_step="up")


def test_animation_saves_a_gif(tmp_path):
    from PIL import Image

    spec = viz.grid_spec((3, 4), 2, stride=(1, 2))  # 2x2 outputs: 4 frames
    anim = viz.animate_conv(spec, interval=100)
    title = anim._fig._suptitle.get_text
    assert title().startswith("frame 0 of 0-3: output (0, 0)")  # frames count from 0
    path = viz.save_gif(anim, tmp_path / "conv.gif", fps=4)
    assert title().startswith("frame 3 of 0-3: output (1, 1)")  # the last one drawn
    assert path.read_bytes()[:6] == b"GIF89a"
    with Image.open(path) as gif:
        assert gif.n_frames == 4


def test_im2col_layout_matches_the_oracle():
    rng = np.random.default_rng(3)
    spec = viz.grid_spec((5, 6), (2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                         in_channels=3, out_channels=4)
    x = rng.standard_normal((3, 5, 6))
    w = rng.standard_normal(spec.weight_shape)
    cols = viz.im2col_matrix(x, spec)
    assert cols.shape == (3 * 2 * 3, spec.out_height * spec.out_width)
    expected = conv2d_reference(x[None], w, None, spec.with_batch(1))[0]
    np.testing.assert_allclose((w.reshape(4, -1) @ cols).reshape(expected.shape), expected,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cols, im2col_truth(x, (2, 3), (2, 1), (1, 0), (1, 2)))
    assert (viz.im2col_indices(spec) == -1).any()  # the padding shows up as zeros


def test_im2col_picture():
    spec = viz.grid_spec((3, 4), 2, padding=1, in_channels=2)
    fig = viz.draw_im2col(spec, output=(1, 2))
    rows, cols = 2 * 2 * 2, spec.out_height * spec.out_width
    selected = viz.drawn_cells(fig, "matrix-selected")
    assert len(viz.drawn_cells(fig, "matrix")) + len(selected) == rows * cols
    assert selected == {(r, 1 * spec.out_width + 2) for r in range(rows)}
    assert "memory" in fig._suptitle.get_text()
    viz.draw_im2col(spec, np.arange(24.0).reshape(2, 3, 4))  # with values


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_tiles_cover_the_output_once(m):
    spec = viz.grid_spec((6, 7), 3, padding=1)  # output 6x7: ragged for m=4 and m=2 (7)
    tiles = viz.winograd_tiles(spec, m)
    assert len(tiles) == -(-6 // m) * -(-7 // m)
    covered = [(i, j) for t in tiles for i in range(t.output_origin[0],
                                                    t.output_origin[0] + t.output_size[0])
               for j in range(t.output_origin[1], t.output_origin[1] + t.output_size[1])]
    assert sorted(covered) == viz.frames(spec)  # every output exactly once
    for t in tiles:
        assert t.input_size == (m + 2, m + 2)
        assert t.ragged == (t.output_size != (m, m))
        for i, j in product(range(t.output_size[0]), range(t.output_size[1])):
            o = (t.output_origin[0] + i, t.output_origin[1] + j)
            taps = {cell for _, cell in viz.window(spec, *o).taps}
            assert taps <= t.input_cells()  # the tile holds everything its outputs read
    by_index = {t.index: t for t in tiles}
    assert by_index[(0, 1)].input_origin[1] - by_index[(0, 0)].input_origin[1] == m
    assert any(t.ragged for t in tiles)  # 7 is not a multiple of 2 or 4


def test_winograd_tiles_picture_and_limits():
    spec = viz.grid_spec((6, 7), 3, padding=1)
    fig = viz.draw_winograd_tiles(spec, 2)
    tiles = {p.get_gid() for ax in fig.axes for p in ax.patches
             if (p.get_gid() or "").startswith("tile:")}
    assert len(tiles) == 12
    assert "overlapping by 2x2" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="stride 1 and dilation 1"):
        viz.winograd_tiles(viz.grid_spec(8, 3, stride=2))


def test_group_connections():
    assert viz.group_connections(4, 4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]  # depthwise
    pairs = viz.group_connections(4, 6, 2)
    assert len(pairs) == 6 * 2
    assert {c for c, k in pairs if k == 4} == {2, 3}  # outputs 3-5 read inputs 2-3
    assert len(viz.group_connections(3, 5, 1)) == 15
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        viz.group_connections(3, 6, 2)
    fig = viz.draw_groups(4, 4, (1, 2, 4))
    edges = [ln for ax in fig.axes for ln in ax.lines]
    assert len(edges) == 16 + 8 + 4
    assert "depthwise" in fig.axes[2].get_title()


# ------------------------------------------------------------------ the widget's logic
def test_widget_state_clamps_the_control_that_moved():
    s = viz.arithmetic_widget_state(5, 7, 1, 0, 1, changed="kernel")
    assert (s.kernel, s.spec.out_height) == (5, 1) and "kernel 7 -> 5" in s.message
    s = viz.arithmetic_widget_state((5, 7), 3, 1, 0, 4, changed="dilation")
    assert s.dilation == 2 and s.kernel == 3
    s = viz.arithmetic_widget_state(5, 7, 1, 0, 1, changed="padding")  # shrunk padding
    assert (s.padding, s.kernel) == (1, 7)
    s = viz.arithmetic_widget_state(5, 5, 1, "valid", 2, changed="padding")
    assert (s.dilation, s.kernel, s.spec.out_height) == (1, 5, 1)


def test_widget_state_same_needs_stride_1():
    s = viz.arithmetic_widget_state((5, 7), 4, 3, "same", 1, changed="stride")
    assert s.stride == 1 and "same" in s.message
    assert s.spec.padding == (1, 2, 1, 2) and (s.spec.out_height, s.spec.out_width) == (5, 7)


def test_widget_state_leaves_valid_settings_alone():
    s = viz.arithmetic_widget_state((6, 9), 3, 2, 1, 2, changed="stride")
    assert (s.kernel, s.stride, s.padding, s.dilation, s.message) == (3, 2, 1, 2, "")
    assert s.spec == viz.grid_spec((6, 9), 3, 2, 1, 2)
    assert s.formula().endswith(f"= {s.spec.out_width}")
    assert f"= {s.spec.out_height};" in s.formula()


def test_widget_state_never_lets_the_output_vanish():
    paddings = [0, 1, 2, 4, "same", "valid"]
    for size in [(1, 1), (2, 5), (5, 3)]:
        for k, s, p, d, changed in product(range(1, 8), range(1, 5), paddings, range(1, 5),
                                           [None, "kernel", "stride", "padding", "dilation"]):
            st = viz.arithmetic_widget_state(size, k, s, p, d, changed)
            assert st.spec.out_height >= 1 and st.spec.out_width >= 1
            assert 1 <= st.kernel <= k and 1 <= st.dilation <= d and st.stride <= s


def test_explorer_updates_sliders_and_label():
    ex = viz.interactive_arithmetic((5, 7))
    ex.controls["kernel"].value = 7
    assert ex.controls["kernel"].value == 5 and ex.state.kernel == 5
    assert "output 1 x 3" in ex.label.value
    ex.controls["kernel"].value = 3
    ex.controls["stride"].value = 2
    ex.controls["mode"].value = "same"
    assert ex.controls["stride"].value == 1 and ex.controls["stride"].disabled
    assert ex.controls["padding"].disabled
    assert "output 5 x 7" in ex.label.value
    assert isinstance(ex.figure, Figure)
    assert viz.drawn_cells(ex.figure, "output-selected") == {(0, 0)}


def test_receptive_field_widget_builds():
    import ipywidgets

    assert isinstance(viz.interactive_receptive_field(SPEC), ipywidgets.VBox)


def test_viz_does_not_need_pyplot():
    code = ("import sys, convlab.viz as v; v.draw_conv(v.grid_spec(4, 3)); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_grid_spec_is_a_convspec():
    spec = viz.grid_spec((5, 7), (2, 3), 1, "same", 2, in_channels=4, out_channels=6, groups=2)
    assert spec == ConvSpec.create((4, 5, 7), 6, (2, 3), 1, "same", 2, 2)

"""The depthwise kernel: the oracle on a grid and on Hypothesis specs (channel multiplier
> 1, stride, dilation, every padding mode, both dtypes), refusals, and auto's choice."""

from __future__ import annotations

import contextlib
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convlab
from convlab import kernels
from convlab.kernels import depthwise as dw_module

from helpers import assert_matches_oracle, random_case

ALGO = "depthwise"
# the two loop structures (small planes: one flattened loop per tap; wide ones: row by
# row), each forced in turn, so every test covers both whatever the plane's width
PATHS = {"flat": 10**9, "rows": -1}


@contextlib.contextmanager
def path(name):
    saved = dw_module.FLAT_MAX_WIDTH
    dw_module.FLAT_MAX_WIDTH = PATHS[name]
    try:
        yield
    finally:
        dw_module.FLAT_MAX_WIDTH = saved

GRID = list(itertools.product([(3, 3), (1, 1), (2, 5)], [1, (2, 1), 3], [0, (1, 2), "same"],
                              [1, (1, 2)], [1, 3]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,dilation,multiplier",
                         [g for g in GRID if not (g[2] == "same" and g[1] != 1)])
def test_grid_matches_oracle(kernel, stride, padding, dilation, multiplier, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((kernel, stride, padding, dilation,
                                                  multiplier)).encode()))
    c = 5
    x, w, b = random_case(rng, (2, c, 9, 11), (c * multiplier, 1) + kernel, dtype)
    for name in PATHS:
        with path(name):
            assert_matches_oracle(ALGO, x, w, b, stride=stride, padding=padding,
                                  dilation=dilation, groups=c)


@st.composite
def depthwise_cases(draw):
    c = draw(st.integers(1, 6))
    m = draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(dh * (kh - 1) + 1, dh * (kh - 1) + 14))
    w = draw(st.integers(dw * (kw - 1) + 1, dw * (kw - 1) + 14))
    pad = (draw(st.integers(0, min(3, h - 1))), draw(st.integers(0, min(3, w - 1))))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    n = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    bias = draw(st.booleans())
    return (n, c, h, w), (c * m, 1, kh, kw), dict(stride=(sh, sw), padding=pad,
                                                  dilation=(dh, dw), groups=c,
                                                  padding_mode=mode), dtype, bias


@settings(max_examples=150, deadline=None)
@given(case=depthwise_cases())
def test_hypothesis_specs_match_oracle(case):
    input_shape, weight_shape, args, dtype, bias = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x, w, b = random_case(rng, input_shape, weight_shape, dtype, bias)
    x0 = x.copy()
    for name in PATHS:
        with path(name):
            assert_matches_oracle(ALGO, x, w, b, **args)
    np.testing.assert_array_equal(x, x0)


def test_refuses_what_is_not_depthwise():
    rng = np.random.default_rng(0)
    x, w, _ = random_case(rng, (1, 4, 6, 6), (4, 2, 3, 3))
    with pytest.raises(kernels.UnsupportedSpecError,
                       match="depthwise needs a depthwise convolution .*groups 2 for 4"):
        convlab.conv2d(x, w, groups=2, algo=ALGO)


def test_auto_picks_it_for_depthwise_layers():
    choice = convlab.explain((8, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32)
    assert choice.kernel.name == ALGO
    choice = convlab.explain((8, 64, 112, 112), (128, 1, 3, 3), stride=2, padding=1,
                             groups=64)
    assert choice.kernel.name == ALGO  # a channel multiplier of 2 too
    assert convlab.explain((1, 8, 9, 9), (8, 8, 3, 3)).kernel.name != ALGO


def test_unbatched_and_bit_identical_run_to_run():
    rng = np.random.default_rng(3)
    x, w, b = random_case(rng, (6, 13, 17), (12, 1, 3, 3))
    first = convlab.conv2d(x, w, b, stride=(1, 2), padding=1, groups=6, algo=ALGO)
    assert first.shape == (12, 13, 9)
    for _ in range(3):
        np.testing.assert_array_equal(
            convlab.conv2d(x, w, b, stride=(1, 2), padding=1, groups=6, algo=ALGO), first)


@pytest.mark.parametrize("batch", [1, 8])
def test_auto_picks_it_for_every_mobilenet_v2_depthwise_layer(batch):
    """Every channel count (32 .. 960) and stride of MobileNetV2's depthwise layers
    (the network benchmark's, convlab/bench/models.py)."""
    from convlab.bench.models import build

    layers = [n.layer for n in build("mobilenet_v2").nodes if n.layer.groups > 1]
    assert {la.stride for la in layers} == {1, 2}
    for la in layers:
        x = (batch, la.in_channels, *la.size)
        w = (la.out_channels, 1, la.kernel_size, la.kernel_size)
        choice = convlab.explain(x, w, stride=la.stride, padding=la.padding, groups=la.groups)
        assert choice.kernel.name == ALGO, (la.describe(), str(choice))

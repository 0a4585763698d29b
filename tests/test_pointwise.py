"""The pointwise (1x1) kernel: the float64 oracle on 1x1 specs (strides, batches of one
and several, float32 and float64, with and without bias), Hypothesis 1x1 specs,
refusals, and auto's choice."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convlab
from convlab import kernels

from helpers import assert_matches_oracle, random_case

ALGO = "pointwise"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride", [1, 2, (2, 1), (1, 3), 3])
@pytest.mark.parametrize("n,c,k,h,w", [(2, 6, 5, 9, 11), (1, 7, 13, 8, 5), (3, 1, 2, 4, 6)])
def test_grid_matches_oracle(dtype, stride, n, c, k, h, w):
    rng = np.random.default_rng(zlib.crc32(repr((stride, n, c, k, h, w)).encode()))
    x, wt, b = random_case(rng, (n, c, h, w), (k, c, 1, 1), dtype)
    assert_matches_oracle(ALGO, x, wt, b, stride=stride)
    assert_matches_oracle(ALGO, x, wt, None, stride=stride)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 9), k=st.integers(1, 9), h=st.integers(1, 9),
       w=st.integers(1, 9), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dtype=st.sampled_from([np.float32, np.float64]), unbatched=st.booleans())
def test_hypothesis_1x1_specs_match_oracle(n, c, k, h, w, sh, sw, dtype, unbatched):
    rng = np.random.default_rng(zlib.crc32(repr((n, c, k, h, w, sh, sw)).encode()))
    shape = (c, h, w) if unbatched else (n, c, h, w)
    x, wt, b = random_case(rng, shape, (k, c, 1, 1), dtype)
    out = assert_matches_oracle(ALGO, x, wt, b, stride=(sh, sw))
    assert out.dtype == dtype


@pytest.mark.parametrize("args,why", [
    (dict(weight=(4, 6, 3, 3)), "kernel size"),
    (dict(weight=(4, 3, 1, 1), groups=2), "groups 2"),
    (dict(weight=(4, 6, 1, 1), padding=1), "padding"),
])
def test_refuses_what_it_cannot_do(args, why):
    x = np.ones((1, 6, 5, 5), np.float32)
    w = np.ones(args.pop("weight"), np.float32)
    with pytest.raises(kernels.UnsupportedSpecError, match=f"pointwise needs a 1x1.*{why}"):
        convlab.conv2d(x, w, algo=ALGO, **args)


def test_inputs_untouched():
    rng = np.random.default_rng(1)
    x, w, b = random_case(rng, (2, 4, 6, 7), (3, 4, 1, 1))
    copies = [a.copy() for a in (x, w, b)]
    convlab.conv2d(x, w, b, stride=2, algo=ALGO)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


def test_auto_picks_it_for_1x1_layers():
    assert convlab.explain((8, 64, 56, 56), (128, 64, 1, 1), stride=2).kernel.name == ALGO
    assert convlab.explain((8, 96, 14, 14), (576, 96, 1, 1)).kernel.name == ALGO
    assert convlab.explain((8, 64, 56, 56), (128, 64, 1, 1), padding=1).kernel.name != ALGO

"""Every direct and lowered CPU kernel on one grid of specs: each kernel size (1x1, 3x3,
2x3), stride (1, (2, 1), 3), padding (0, (1, 2), 'same'), dilation (1, (2, 1)) and
group count (1, 2, depthwise with a channel multiplier) on a (2, 6, 9, 11) input, in
float32 and float64, against the oracle.  Hypothesis draws more (test_properties.py);
this grid makes sure each combination is hit every run."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from helpers import assert_matches_oracle, random_case

GRID = [
    (k, s, p, d, g)
    for k, s, p, d, g in itertools.product(
        [(1, 1), (3, 3), (2, 3)], [1, (2, 1), 3], [0, (1, 2), "same"], [1, (2, 1)],
        [1, 2, "dw"])
    if not (p == "same" and s != 1)
]


@pytest.mark.parametrize("algo", ["naive", "parallel", "im2col"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,dilation,groups", GRID)
def test_grid_matches_oracle(algo, kernel, stride, padding, dilation, groups, dtype):
    seed = zlib.crc32(repr((kernel, stride, padding, dilation, groups)).encode())
    rng = np.random.default_rng(seed)
    c = 6
    g = c if groups == "dw" else groups
    # 5 output channels (1 and 3 per group: partial blocks of parallel's KB=4); depthwise
    # with a channel multiplier of 2
    k_out = {1: 5, 2: 6}.get(g, 2 * c)
    x, w, b = random_case(rng, (2, c, 9, 11), (k_out, c // g) + kernel, dtype)
    assert_matches_oracle(algo, x, w, b, stride=stride, padding=padding, dilation=dilation,
                          groups=g)

"""The banded im2col kernel: the float64 oracle on the spec grid of tests/test_grid.py
(every kernel size, stride, padding, dilation and group count, both dtypes), ResNet's
stem and stride-2 shapes at small sizes, bands that split the output unevenly, auto."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from test_grid import GRID

import convlab
from convlab.kernels import banded

from helpers import assert_matches_oracle, random_case

ALGO = "banded"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,dilation",
                         sorted({(k, s, p, d) for k, s, p, d, g in GRID if g == 1}, key=repr))
def test_grid_matches_oracle(kernel, stride, padding, dilation, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((kernel, stride, padding, dilation)).encode()))
    x, w, b = random_case(rng, (2, 6, 9, 11), (5, 6) + kernel, dtype)
    assert_matches_oracle(ALGO, x, w, b, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("shape,weight,stride,padding", [
    ((2, 3, 30, 27), (8, 3, 7, 7), 2, 3),      # the stem, small
    ((3, 8, 13, 17), (12, 8, 3, 3), 2, 1),     # a stride-2 3x3
    ((1, 5, 6, 40), (4, 5, 3, 3), (1, 3), (0, 2)),
])
def test_network_shapes_and_uneven_bands(monkeypatch, shape, weight, stride, padding):
    rng = np.random.default_rng(11)
    x, w, b = random_case(rng, shape, weight)
    assert_matches_oracle(ALGO, x, w, b, stride=stride, padding=padding)
    # bands of one or two rows: tasks that end mid-image and a ragged last band
    monkeypatch.setattr(banded, "BAND_BYTES", 1)
    assert_matches_oracle(ALGO, x, w, None, stride=stride, padding=padding)
    spec = convlab.ConvSpec.from_shapes(shape, weight, stride, padding)
    monkeypatch.setattr(banded, "BAND_BYTES", 2 * spec.reduction_length * spec.out_width * 4)
    assert banded.band_rows(spec, 4) == 2
    assert_matches_oracle(ALGO, x, w, b, stride=stride, padding=padding)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,dilation,groups",
                         [g for g in GRID if g[4] != 1], ids=repr)
def test_grid_grouped_matches_oracle(kernel, stride, padding, dilation, groups, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((kernel, stride, padding, groups)).encode()))
    g = 6 if groups == "dw" else groups
    x, w, b = random_case(rng, (2, 6, 9, 11), ({2: 6}.get(g, 12), 6 // g) + kernel, dtype)
    assert_matches_oracle(ALGO, x, w, b, stride=stride, padding=padding, dilation=dilation,
                          groups=g)


def test_leaves_inputs_alone():
    rng = np.random.default_rng(2)
    x, w, b = random_case(rng, (2, 3, 11, 9), (4, 3, 3, 3))
    copies = [a.copy() for a in (x, w, b)]
    convlab.conv2d(x, w, b, stride=2, padding=1, algo=ALGO)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


def test_auto_picks_it_for_strided_layers_only():
    assert convlab.explain((8, 3, 224, 224), (64, 3, 7, 7), stride=2,
                           padding=3).kernel.name == ALGO  # the 7x7 stem
    assert convlab.explain((8, 3, 224, 224), (32, 3, 3, 3), stride=2,
                           padding=1).kernel.name == ALGO  # a 3x3 stem stays
    assert convlab.explain((8, 64, 56, 56), (128, 64, 3, 3), stride=2,
                           padding=1).kernel.name == ALGO
    assert convlab.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1).kernel.name != ALGO
    assert convlab.explain((8, 64, 56, 56), (128, 64, 1, 1), stride=2).kernel.name != ALGO
    assert convlab.explain((8, 64, 56, 56), (128, 32, 3, 3), stride=2, padding=1,
                           groups=2).kernel.name != ALGO


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tasks_of_several_whole_images(monkeypatch, dtype):
    """A weight larger than BAND_BYTES: tasks take whole images, several at once, and the
    last block of the batch is ragged (5 images in blocks of 2)."""
    shape, weight = (5, 8, 5, 4), (12, 8, 3, 3)
    spec = convlab.ConvSpec.from_shapes(shape, weight, 2, 1)
    itemsize = np.dtype(dtype).itemsize
    monkeypatch.setattr(banded, "BAND_BYTES", 12 * 72 * itemsize - 1)
    assert banded.task_shape(spec, itemsize, threads=3) == (2, spec.out_height)
    assert banded.task_shape(spec, itemsize, threads=8) == (1, spec.out_height)
    monkeypatch.setattr(banded.numba, "get_num_threads", lambda: 3)
    rng = np.random.default_rng(5)
    x, w, b = random_case(rng, shape, weight, dtype)
    assert_matches_oracle(ALGO, x, w, b, stride=2, padding=1)
    assert_matches_oracle(ALGO, x, w, None, stride=2, padding=1)

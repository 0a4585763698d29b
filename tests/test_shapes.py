"""The shape calculator: formula, 'same' split, cost model, and PyTorch-worded validation."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import convlab
from convlab import ConvSpec, output_shape


def test_output_shape_examples():
    # values worked out by hand from floor((H + 2p - d(k-1) - 1)/s) + 1
    assert output_shape((64, 5, 10, 12), 2, 3) == (64, 2, 8, 10)
    assert output_shape((5, 10, 12), 2, 3) == (2, 8, 10)
    assert output_shape((1, 3, 224, 224), 64, 7, stride=2, padding=3) == (1, 64, 112, 112)
    assert output_shape((1, 3, 10, 11), 4, (3, 2), stride=(3, 2), padding=(1, 0)) == (1, 4, 4, 5)
    assert output_shape((1, 3, 10, 11), 4, 3, dilation=(2, 3)) == (1, 4, 6, 5)
    # floor, not ceil: (7 - 3)/2 + 1 = 3 exactly; (8 - 3)/2 + 1 = 3.5 -> 3
    assert output_shape((1, 1, 7, 8), 1, 3, stride=2) == (1, 1, 3, 3)


@given(size=st.integers(1, 60), k=st.integers(1, 7), s=st.integers(1, 4),
       p=st.integers(0, 4), d=st.integers(1, 4))
def test_formula_matches_counting_windows(size, k, s, p, d):
    """Count the window positions by brute force and compare with the spec's formula."""
    eff = d * (k - 1) + 1
    positions = [i for i in range(0, size + 2 * p) if i + eff <= size + 2 * p and i % s == 0]
    if size + 2 * p < eff:
        with pytest.raises(ValueError, match="Kernel size can't be greater"):
            ConvSpec.create((1, 1, size, 7 + 2 * 3), 1, (k, 1), s, p, (d, 1))
        return
    spec = ConvSpec.create((1, 1, size, 5), 1, (k, 1), s, p, (d, 1))
    assert spec.out_height == len(positions)


@pytest.mark.parametrize("k,d,expected", [
    (3, 1, (1, 1)), (4, 1, (1, 2)), (2, 1, (0, 1)), (1, 1, (0, 0)),
    (4, 2, (3, 3)), (4, 3, (4, 5)), (5, 2, (4, 4)),
])
def test_same_split_extra_goes_bottom_right(k, d, expected):
    spec = ConvSpec.create((1, 1, 9, 10), 1, (k, k), padding="same", dilation=d)
    assert spec.padding[:2] == expected and spec.padding[2:] == expected
    assert spec.output_shape == (1, 1, 9, 10)


def test_cost_model():
    spec = ConvSpec.create((8, 64, 56, 56), 64, 3, padding=1)
    assert spec.flops() == 2 * 8 * 64 * 64 * 9 * 56 * 56
    assert spec.macs() * 2 == spec.flops()
    grouped = ConvSpec.create((2, 32, 10, 10), 32, 3, groups=32)
    assert grouped.flops() == 2 * 2 * 32 * 1 * 9 * 8 * 8
    assert spec.bytes_moved(4) == 4 * (8 * 64 * 56 * 56 + 64 * 64 * 9 + 8 * 64 * 56 * 56)
    assert math.isclose(spec.arithmetic_intensity(4), spec.flops() / spec.bytes_moved(4))
    assert spec.parameter_count() == 64 * 64 * 9 + 64
    assert spec.parameter_count(bias=False) == 64 * 64 * 9
    assert spec.reduction_length == 576


def test_shapes_and_variants():
    spec = ConvSpec.create((3, 10, 12), 6, (3, 5), padding=(1, 2), groups=3)
    assert spec.batched is False and spec.batch == 1
    assert spec.input_shape == (3, 10, 12)
    assert spec.output_shape == (6, 10, 12)
    assert spec.batched_output_shape == (1, 6, 10, 12)
    assert spec.weight_shape == (6, 1, 3, 5)
    assert spec.bias_shape == (6,)
    assert (spec.padded_height, spec.padded_width) == (12, 16)
    padded = spec.explicitly_padded()
    assert padded.padding == (0, 0, 0, 0) and padded.output_shape == spec.output_shape
    assert spec.with_batch(4).output_shape == (4, 6, 10, 12)


ERRORS = [  # (kwargs for ConvSpec.create, PyTorch's message)
    (dict(groups=0), "groups must be a positive integer"),
    (dict(groups=2, input_shape=(1, 3, 8, 8)), "in_channels must be divisible by groups"),
    (dict(groups=2, out_channels=3, input_shape=(1, 4, 8, 8)),
     "out_channels must be divisible by groups"),
    (dict(padding="foo"), "Invalid padding string 'foo', should be one of {'valid', 'same'}"),
    (dict(padding="same", stride=2), "padding='same' is not supported for strided convolutions"),
    (dict(padding=-1), "negative padding is not supported"),
    (dict(stride=0), "non-positive stride is not supported"),
    (dict(stride=(1, -2)), "non-positive stride is not supported"),
    (dict(dilation=0), "dilation should be greater than zero, but got [0, 0]"),
    (dict(kernel_size=0), "kernel size should be greater than zero, but got kernel_height: 0 "
                          "kernel_width: 0"),
    (dict(stride=(1, 1, 1)), "expected stride to be a single integer value or a list of 2 "
                             "values to match the convolution dimensions, but got "
                             "stride=[1, 1, 1]"),
    (dict(input_shape=(5,)), "Expected 3D (unbatched) or 4D (batched) input to conv2d, but "
                             "got input of size: [5]"),
    (dict(input_shape=(1, 3, 2, 2)), "Calculated padded input size per channel: (2 x 2). "
                                     "Kernel size: (3 x 3). Kernel size can't be greater "
                                     "than actual input size"),
    (dict(input_shape=(1, 3, 4, 4), dilation=2), "Calculated padded input size per channel: "
                                                 "(4 x 4). Kernel size: (5 x 5)."),
    (dict(padding_mode="bad"), "padding_mode must be one of {'zeros', 'reflect', "
                               "'replicate', 'circular'}, but got padding_mode='bad'"),
    (dict(input_shape=(1, 3, 2, 2), padding=2, padding_mode="reflect"),
     "Padding size should be less than the corresponding input dimension, but got: padding "
     "(2, 2) at dimension 3 of input [1, 3, 2, 2]"),
    (dict(input_shape=(1, 3, 2, 2), padding=3, padding_mode="circular"),
     "Padding value causes wrapping around more than once."),
    (dict(stride=1.5), "stride must be an int or a pair of ints, got 1.5"),
]


@pytest.mark.parametrize("kwargs,message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_errors_use_pytorch_wording(kwargs, message):
    args = dict(input_shape=(1, 3, 10, 10), out_channels=6, kernel_size=3)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError)) as info:
        ConvSpec.create(**args)
    assert message in str(info.value)


def test_weight_errors():
    with pytest.raises(ValueError, match=r"Given groups=1, weight of size \[2, 5, 3, 3\], "
                                         r"expected input\[1, 3, 10, 10\] to have 5 channels, "
                                         r"but got 3 channels instead"):
        ConvSpec.from_shapes((3, 10, 10), (2, 5, 3, 3))  # unbatched shown as batch of one
    with pytest.raises(ValueError, match=r"expected weight to be divisible by 2 at dimension 0"):
        ConvSpec.from_shapes((1, 4, 5, 5), (3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"at least 1 at dimension 0"):
        ConvSpec.from_shapes((1, 3, 5, 5), (0, 3, 3, 3))
    with pytest.raises(ValueError, match="4-dimensional weight"):
        ConvSpec.from_shapes((1, 3, 5, 5), (2, 3, 3))


def test_circular_padding_equal_to_size_is_allowed():
    # torch allows wrapping exactly once
    assert ConvSpec.create((1, 3, 2, 2), 3, 1, padding=2,
                           padding_mode="circular").output_shape == (1, 3, 6, 6)


def test_public_exports():
    assert convlab.output_shape is output_shape

"""The shape calculator: formula, 'same' split, cost model, and PyTorch-worded validation."""

import math
import subprocess
import sys

import numpy as np
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


def test_negative_sizes_are_refused():
    # torch cannot build such tensors; convlab used to answer (1, 2, 10, 26)
    with pytest.raises(ValueError, match=r"negative dimension -8 in input of size "
                                         r"\[1, 3, -8, 8\]: sizes must be >= 0"):
        output_shape((1, 3, -8, 8), 2, 3, padding=10)
    with pytest.raises(ValueError, match=r"negative dimension -5 in input"):
        ConvSpec.create((-5, 3, 8, 8), 2, 3)
    with pytest.raises(ValueError, match=r"negative dimension -1 in input"):
        ConvSpec.from_shapes((3, 8, -1), (2, 3, 1, 1), padding=5)
    with pytest.raises(ValueError, match=r"negative dimension -3 in weight of size "
                                         r"\[2, -3, 3, 3\]"):
        ConvSpec.from_shapes((1, 3, 8, 8), (2, -3, 3, 3))


# Empty tensors, each checked against torch 2.13 (F.conv2d; for padding modes, F.pad first as
# torch.nn.Conv2d does): the output shape, or the words of torch's error.
ZERO_SIZES = [  # (input, weight, conv args, output shape or error)
    ((1, 0, 6, 6), (3, 0, 3, 3), {}, (1, 0, 4, 4)),  # zero channels: zero out channels too
    ((2, 0, 7, 5), (5, 0, 2, 3), dict(stride=2), (2, 0, 3, 2)),
    ((2, 0, 7, 5), (6, 0, 2, 3), dict(groups=3), (2, 0, 6, 3)),
    ((1, 0, 6, 6), (3, 0, 3, 3), dict(padding="same"), (1, 0, 6, 6)),
    ((0, 6, 6), (3, 0, 3, 3), {}, (0, 4, 4)),
    ((1, 0, 0, 5), (6, 0, 2, 3), dict(padding=2), (1, 0, 3, 7)),
    ((0, 3, 0, 5), (6, 3, 2, 3), dict(padding=2), (0, 6, 3, 7)),
    ((0, 3, 6, 6), (2, 3, 3, 3), {}, (0, 2, 4, 4)),
    ((1, 0, 6, 6), (3, 0, 3, 3), dict(padding_mode="circular"), (1, 0, 4, 4)),
    ((1, 3, 0, 6), (2, 3, 3, 3), dict(padding=2),
     "Only zero batch or zero channel inputs are supported, but got input shape: [1, 3, 0, 6]"),
    ((1, 3, 6, 0), (2, 3, 3, 3), dict(padding=(0, 2)),
     "Only zero batch or zero channel inputs are supported, but got input shape: [1, 3, 6, 0]"),
    ((3, 0, 5), (6, 3, 2, 3), dict(padding=2),
     "Only zero batch or zero channel inputs are supported, but got input shape: [1, 3, 0, 5]"),
    ((1, 3, 0, 6), (2, 3, 3, 3), {},
     "Calculated padded input size per channel: (0 x 6). Kernel size: (3 x 3)."),
    ((1, 0, 6, 6), (2, 0, 3, 3), dict(groups=4),
     "Given groups=4, expected weight to be at least 4 at dimension 0, but got weight of size "
     "[2, 0, 3, 3] instead"),
    ((1, 3, 6, 6), (3, 0, 3, 3), {},
     "Given groups=1, weight of size [3, 0, 3, 3], expected input[1, 3, 6, 6] to have 0 "
     "channels, but got 3 channels instead"),
    ((1, 0, 6, 6), (3, 0, 3, 3), dict(padding=1, padding_mode="reflect"),
     "Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other non-zero "
     "dimensions for input, but got: [1, 0, 6, 6]"),
    ((0, 3, 0, 6), (3, 3, 3, 3), dict(padding=1, padding_mode="replicate"),
     "Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other non-zero "
     "dimensions for input, but got: [0, 3, 0, 6]"),
]


@pytest.mark.parametrize("x_shape,w_shape,args,expected", ZERO_SIZES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in ZERO_SIZES])
def test_zero_sizes_match_torch(x_shape, w_shape, args, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError) as info:
            ConvSpec.from_shapes(x_shape, w_shape, **args)
        assert expected in str(info.value)
    else:
        assert ConvSpec.from_shapes(x_shape, w_shape, **args).output_shape == expected


@pytest.mark.parametrize("x_shape,w_shape,args,expected", ZERO_SIZES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in ZERO_SIZES])
def test_zero_size_table_is_what_live_torch_does(x_shape, w_shape, args, expected):
    """The table above, against the torch installed here (skipped without torch)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    args = dict(args)
    mode = args.pop("padding_mode", "zeros")
    x, w = torch.randn(*x_shape), torch.randn(*w_shape)
    try:
        if mode != "zeros":  # what torch.nn.Conv2d does for a padding mode
            p = args.pop("padding", 0)
            ph, pw = (p, p) if isinstance(p, int) else p
            x = F.pad(x, (pw, pw, ph, ph), mode=mode)
        got = tuple(F.conv2d(x, w, **args).shape)
    except RuntimeError as exc:
        got = str(exc)
    if isinstance(expected, str):
        assert expected in got
    else:
        assert got == expected


def test_zero_input_channels_layer():
    # torch.nn.Conv2d(0, 3, 3) is a valid layer; on a (1, 0, 6, 6) input it returns (1, 0, 4, 4)
    assert output_shape((1, 0, 6, 6), 3, 3) == (1, 0, 4, 4)
    spec = ConvSpec.create((1, 0, 6, 6), 3, 3)
    assert spec.weight_shape == (3, 0, 3, 3) and spec.flops() == 0
    with pytest.raises(ValueError, match="out_channels must be a positive integer, got 0"):
        output_shape((1, 3, 6, 6), 0, 3)
    with pytest.raises(ValueError, match="negative dimension -3 in input"):
        output_shape((1, -3, 6, 6), 2, 3)


def test_conv2d_zero_height_with_padding_is_refused_as_torch_does():
    # convlab used to return a bias-only (1, 2, 2, 4) output here
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 0, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    for algo in ("auto", "naive", "im2col"):
        with pytest.raises(ValueError, match=r"Only zero batch or zero channel inputs are "
                                             r"supported, but got input shape: \[1, 3, 0, 6\]"):
            convlab.conv2d(x, w, np.ones(2, np.float32), padding=2, algo=algo)


ZERO_CHANNELS_SCRIPT = """
import numpy as np, convlab
x = np.zeros((1, 0, 6, 6), np.float32)
w = np.zeros((3, 0, 3, 3), np.float32)
for algo in ("auto", "tune", "naive", "parallel", "im2col", "winograd_f4", "python"):
    out = convlab.conv2d(x, w, np.ones(3, np.float32), algo=algo)
    print(algo, out.shape, out.dtype)
"""


def test_conv2d_zero_channels_gives_torchs_empty_output():
    """conv2d must not call a kernel when the output is empty (zero input channels), as for
    a batch of 0: the kernels loop over out_channels and would raise or corrupt memory."""
    # in a subprocess: a kernel handed this spec can corrupt the heap and abort Python
    proc = subprocess.run([sys.executable, "-c", ZERO_CHANNELS_SCRIPT], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for algo in ("auto", "tune", "naive", "parallel", "im2col", "winograd_f4", "python"):
        assert f"{algo} (1, 0, 4, 4) float32" in proc.stdout  # torch 2.13's answer


def test_explicit_padding_of_a_directly_built_args_rejects_an_unknown_string():
    """ConvArgs.create validates padding; a ConvArgs built directly does not, and a
    two-letter string used to unpack into (top, bottom, left, right) = letters."""
    from convlab.shapes import ConvArgs

    assert ConvArgs((3, 2), padding="same", dilation=(2, 1)).explicit_padding() == (2, 2, 0, 1)
    with pytest.raises(ValueError, match="Invalid padding string 'ok'"):
        ConvArgs((3, 3), padding="ok").explicit_padding()

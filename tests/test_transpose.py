"""Transposed convolution: the size formula (shapes.py), ConvTranspose2d's constructor,
initialisation, repr, state_dict and errors as torch 2.13 has them (recorded here), and
`convlab shape --transposed`."""

import math

import numpy as np
import pytest

import convlab
from convlab.cli import main
from convlab.shapes import ConvSpec, TransposedSpec


@pytest.mark.parametrize("shape, out_ch, kwargs, expected", [
    # recorded from torch.nn.ConvTranspose2d, torch 2.13
    ((1, 4, 5, 5), 6, dict(kernel_size=3, stride=2), (1, 6, 11, 11)),
    ((1, 4, 5, 5), 2, dict(kernel_size=3, stride=2, padding=1, output_padding=1), (1, 2, 10, 10)),
    ((1, 4, 5, 5), 2, dict(kernel_size=3, dilation=2, output_padding=1), (1, 2, 10, 10)),
    ((2, 4, 5, 6), 3, dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                           output_padding=(1, 1), dilation=(1, 2)), (2, 3, 10, 9)),
    ((4, 5, 5), 2, dict(kernel_size=3), (2, 7, 7)),
])
def test_transposed_output_shape(shape, out_ch, kwargs, expected):
    assert convlab.transposed_output_shape(shape, out_ch, **kwargs) == expected
    spec = TransposedSpec.create(shape, out_ch, **kwargs)
    assert spec.output_shape == expected
    # it inverts the forward: the convolution of the output size gives the input size back
    fwd = spec.forward_spec()
    assert fwd.batched_output_shape[2:] == (
        spec.height + spec.output_padding[0] // spec.stride[0],
        spec.width + spec.output_padding[1] // spec.stride[1])


@pytest.mark.parametrize("stride, padding, dilation", [(2, 1, 1), (3, 2, 2), (1, 1, 1),
                                                      ((2, 3), (0, 1), (1, 2))])
def test_inverting_takes_the_output_back_to_the_input(stride, padding, dilation):
    for h in range(6, 12):
        spec = ConvSpec.create((1, 2, h, h + 1), 3, 3, stride, padding, dilation)
        t = TransposedSpec.inverting(spec)
        assert t.output_shape == spec.input_shape and t.forward_spec() == spec
    with pytest.raises(ValueError, match="pads symmetrically"):
        TransposedSpec.inverting(ConvSpec.create((1, 2, 6, 6), 3, 2, padding="same"))


def test_repr_matches_torch():
    assert repr(convlab.ConvTranspose2d(4, 6, 3)) == \
        "ConvTranspose2d(4, 6, kernel_size=(3, 3), stride=(1, 1))"
    assert repr(convlab.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1,
                                        groups=2, bias=False, dilation=(1, 2))) == (
        "ConvTranspose2d(4, 6, kernel_size=(3, 2), stride=(2, 2), padding=(1, 1), "
        "dilation=(1, 2), output_padding=(1, 1), groups=2, bias=False)")


def test_init_shapes_and_state_dict():
    layer = convlab.ConvTranspose2d(4, 6, (3, 2), groups=2, seed=0)
    assert layer.weight.shape == (4, 3, 3, 2) and layer.bias.shape == (6,)
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert list(layer.grad) == ["weight", "bias"]
    bound = 1 / math.sqrt(3 * 3 * 2)  # fan_in = weight.shape[1] * kh * kw, as torch
    big = convlab.ConvTranspose2d(64, 32, 3, seed=1)
    b2 = 1 / math.sqrt(32 * 9)
    for arr, bnd in ((layer.weight, bound), (layer.bias, bound), (big.weight, b2),
                     (big.bias, b2)):
        assert np.abs(arr).max() <= bnd
    # uniform on [-b, b]: standard deviation b / sqrt(3), the extremes near b (for 32
    # biases, all below 0.8 b has probability 0.8**32 < 0.001; the seed is fixed)
    assert abs(big.weight.std() - b2 / math.sqrt(3)) < 0.05 * b2
    assert np.abs(big.bias).max() > 0.8 * b2
    assert convlab.ConvTranspose2d(4, 6, 3, seed=3).state_dict()["weight"].tolist() == \
        convlab.ConvTranspose2d(4, 6, 3, seed=3).weight.tolist()
    with pytest.raises(ValueError, match="Error\\(s\\) in loading state_dict for "
                                         "ConvTranspose2d"):
        layer.load_state_dict({"weight": np.zeros((3, 4, 3, 2))})


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(padding_mode="reflect"), ValueError,
     'Only "zeros" padding mode is supported for ConvTranspose2d'),
    (dict(padding="same"), TypeError,
     "conv_transpose2d(): argument 'padding' must be tuple of ints, not str"),
    (dict(output_padding=1), ValueError,
     "output padding must be smaller than either stride or dilation, but got "
     "output_padding_height: 1 output_padding_width: 1 stride_height: 1 stride_width: 1 "
     "dilation_height: 1 dilation_width: 1"),
    (dict(groups=0), ValueError, "groups must be a positive integer"),
    (dict(groups=4), ValueError, "out_channels must be divisible by groups"),
])
def test_constructor_errors(kwargs, exc, words):
    with pytest.raises(exc) as info:
        convlab.ConvTranspose2d(4, 6, 3, **kwargs)
    assert words in str(info.value)


def test_in_channels_are_checked_first():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        convlab.ConvTranspose2d(3, 4, 3, groups=2)


def test_output_size_picks_output_padding():
    layer = convlab.ConvTranspose2d(4, 6, 3, stride=2, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 4, 5, 5)).astype(np.float32)
    assert layer(x, output_size=[12, 12]).shape == (1, 6, 12, 12)
    assert layer(x, output_size=[1, 6, 11, 11]).shape == (1, 6, 11, 11)
    with pytest.raises(ValueError, match=r"requested an output size of \[13, 13\], but valid "
                                         r"sizes range from \[11, 11\] to \[12, 12\]"):
        layer(x, output_size=[13, 13])
    with pytest.raises(ValueError, match="output_size must have 2 or 4 elements"):
        layer(x, output_size=[1, 12, 12])


def test_forward_is_conv2d_input_plus_bias():
    rng = np.random.default_rng(2)
    layer = convlab.ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
                                    output_padding=(1, 0), dilation=(1, 2), groups=2,
                                    dtype=np.float64, seed=0)
    x = rng.standard_normal((2, 4, 5, 6))
    y = layer(x)
    again = convlab.conv2d_input(y.shape, layer.weight, x, (2, 1), (1, 0), (1, 2), 2)
    np.testing.assert_allclose(y, again + layer.bias[None, :, None, None], atol=1e-12)


def test_cli_shape_transposed_prints_the_formula(capsys):
    assert main(["shape", "--transposed", "--input", "2,4,5,6", "--out-channels", "3",
                 "--kernel-size", "3,2", "--stride", "2,1", "--padding", "1,0",
                 "--output-padding", "1,1", "--dilation", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "output           (2, 3, 10, 9)" in out
    assert "weight           (4, 3, 3, 2)" in out
    for line in out.splitlines():
        if line.strip().startswith(("height", "width")):
            expression, value = line.split(None, 1)[1].rsplit("=", 1)
            assert eval(expression) == int(value)  # the printed formula computes the size
    # output_padding 1 >= stride 1 along the width (allowed: < dilation 2): one column more
    assert "is the gradient  of conv2d (2, 3, 10, 9) -> (2, 4, 5, 7)" in out
    assert "0 extra row(s), 1 extra column(s)" in out


@pytest.mark.parametrize("argv, needle", [
    (["--output-padding", "1"], "--output-padding is for transposed convolutions"),
    (["--transposed", "--padding", "same"], "must be tuple of ints, not str"),
    (["--transposed", "--padding-mode", "reflect"], 'Only "zeros" padding mode'),
    (["--transposed", "--output-padding", "1"], "output padding must be smaller"),
])
def test_cli_shape_transposed_errors(capsys, argv, needle):
    base = ["shape", "--input", "1,4,5,5", "--out-channels", "2", "--kernel-size", "3"]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_transposed_arguments_are_checked_as_the_forwards_are():
    """One check for groups and one for the input's sizes serve both directions: NumPy
    integers go where an int does, and a negative size is refused, as for conv2d."""
    layer = convlab.ConvTranspose2d(4, 8, 3, groups=np.int64(2))
    assert layer.groups == 2 and layer.weight.shape == (4, 4, 3, 3)
    with pytest.raises(ValueError, match="negative dimension -8"):
        convlab.transposed_output_shape((1, 3, -8, 8), 2, 3)
    with pytest.raises(ValueError, match="input to conv_transpose2d"):
        convlab.transposed_output_shape((3, 8), 2, 3)

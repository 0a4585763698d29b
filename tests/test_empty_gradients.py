"""Gradients of convolutions with nothing to multiply: zero input channels, an empty batch.

torch's answers (torch 2.13): an input with zero channels gives an output with zero
channels; its gradients are zeros of the input's and the weight's shapes, and the bias's
gradient is out_channels zeros; an empty batch gives the same.  The shapes and values are
asserted here as literals, so the tests hold without torch; where torch is installed,
its answer is also computed live and compared.
"""

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.backward import conv2d_bias, conv2d_input, conv2d_weight
from convlab.shapes import ConvSpec

try:
    import torch
except ImportError:  # the literal expectations below still run
    torch = None

BACKWARD_ALGOS = ["auto", *sorted(kernels.kernels_for("grad_input"))]
# (input shape, weight shape, conv args): zero channels, as in issue 27, and with a
# stride, padding and dilation; an empty batch
EMPTY_CASES = [
    ((1, 0, 2, 2), (2, 0, 1, 1), {}),
    ((2, 0, 9, 7), (3, 0, 3, 2), dict(stride=2, padding=1, dilation=(1, 2))),
    ((0, 3, 6, 5), (4, 3, 3, 3), dict(padding=(1, 0))),
]


def _output_shape(xshape, wshape, args):
    return ConvSpec.from_shapes(xshape, wshape, **args).output_shape


@pytest.mark.parametrize("algo", BACKWARD_ALGOS)
@pytest.mark.parametrize("xshape,wshape,args", EMPTY_CASES)
def test_empty_gradients_are_torch_shaped_zeros(algo, xshape, wshape, args):
    rng = np.random.default_rng(27)
    x = rng.standard_normal(xshape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    g = rng.standard_normal(_output_shape(xshape, wshape, args)).astype(np.float32)
    gx = conv2d_input(xshape, w, g, algo=algo, **args)
    gw = conv2d_weight(x, wshape, g, algo=algo, **args)
    assert gx.shape == xshape and gx.dtype == np.float32 and not gx.any()
    assert gw.shape == wshape and gw.dtype == np.float32 and not gw.any()
    if torch is not None:
        want_x = torch.nn.grad.conv2d_input(xshape, torch.from_numpy(w), torch.from_numpy(g),
                                            **args)
        want_w = torch.nn.grad.conv2d_weight(torch.from_numpy(x), wshape,
                                             torch.from_numpy(g), **args)
        np.testing.assert_array_equal(gx, want_x.numpy())
        np.testing.assert_array_equal(gw, want_w.numpy())


def test_zero_channel_forward_has_zero_channels():
    """What the gradients above are shaped by: torch's (1, 0, 2, 2) output."""
    out = convlab.conv2d(np.zeros((1, 0, 2, 2), np.float32), np.zeros((2, 0, 1, 1), np.float32))
    assert out.shape == (1, 0, 2, 2)


@pytest.mark.parametrize("op", ["grad_input", "grad_weight"])
@pytest.mark.parametrize("xshape,wshape,args", EMPTY_CASES)
def test_every_backward_kernel_called_directly_returns_zeros(op, xshape, wshape, args):
    """A kernel handed an empty spec by anyone (the bench, auto, a student) computes it,
    never an internal reshape/broadcast/index error."""
    spec = ConvSpec.from_shapes(xshape, wshape, **args)
    kspec = convlab.functional.kernel_spec(spec)
    x = np.ones(xshape, np.float64)
    w = np.ones(wshape, np.float64)
    g = np.ones(spec.batched_output_shape, np.float64)
    for name, kern in kernels.kernels_for(op).items():
        if kern.available() is not None:
            continue
        got = kern.run(g, w, kspec) if op == "grad_input" else kern.run(x, g, kspec)
        want = xshape if op == "grad_input" else wshape
        assert got.shape == want, name
        assert not got.any(), name


@pytest.mark.parametrize("xshape,wshape,args", EMPTY_CASES)
def test_bias_gradient_has_out_channels_zeros(xshape, wshape, args):
    g = np.ones(_output_shape(xshape, wshape, args), np.float32)
    gb = conv2d_bias(g, wshape[0])
    assert gb.shape == (wshape[0],) and not gb.any()


def test_bias_gradient_refuses_a_wrong_channel_count():
    with pytest.raises(ValueError, match="3 channels, expected 2"):
        conv2d_bias(np.ones((1, 3, 2, 2)), 2)
    np.testing.assert_array_equal(conv2d_bias(np.ones((2, 3, 2, 2)), 3), [8.0, 8.0, 8.0])


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # torch's, harmless
def test_conv2d_layer_with_zero_input_channels():
    """``Conv2d(0, 33, 3, stride=2)``: torch builds it; its forward gives (N, 0, 4, 4)
    on a 9x9 input, its backward zero gradients and 33 zero bias gradients."""
    layer = convlab.nn.Conv2d(0, 33, 3, stride=2)
    assert repr(layer) == "Conv2d(0, 33, kernel_size=(3, 3), stride=(2, 2))"
    assert layer.weight.shape == (33, 0, 3, 3) and layer.bias.shape == (33,)
    x = np.zeros((2, 0, 9, 9), np.float32)
    out = layer(x)
    assert out.shape == (2, 0, 4, 4)
    gx = layer.backward(np.ones_like(out))
    assert gx.shape == (2, 0, 9, 9)
    assert layer.grad["weight"].shape == (33, 0, 3, 3)
    assert layer.grad["bias"].shape == (33,) and not layer.grad["bias"].any()
    if torch is not None:
        tl = torch.nn.Conv2d(0, 33, 3, stride=2)
        tx = torch.zeros(2, 0, 9, 9, requires_grad=True)
        ty = tl(tx)
        ty.backward(torch.ones_like(ty))
        assert tuple(ty.shape) == out.shape and tuple(tx.grad.shape) == gx.shape
        assert tuple(tl.weight.grad.shape) == layer.grad["weight"].shape
        np.testing.assert_array_equal(layer.grad["bias"], tl.bias.grad.numpy())


def test_conv2d_layer_empty_batch_bias_gradient():
    layer = convlab.nn.Conv2d(3, 4, 3, seed=0)
    out = layer(np.zeros((0, 3, 7, 7), np.float32))
    assert out.shape == (0, 4, 5, 5)
    layer.backward(np.zeros_like(out))
    assert layer.grad["bias"].shape == (4,) and not layer.grad["bias"].any()
    assert layer.grad["weight"].shape == (4, 3, 3, 3) and not layer.grad["weight"].any()

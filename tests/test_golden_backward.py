"""PyTorch's gradients without PyTorch: torch.autograd's results recorded from torch 2.13
(tests/golden/make_golden.py backward), for every backward kernel, float64 and float32,
and for the modules' backward."""

import json
from pathlib import Path

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import kernel_spec
from convlab.kernels.registry import kernels_for
from convlab.reference import compare

FIXTURES = sorted((Path(__file__).parent / "golden" / "backward").glob("*.npz"))
GRAD = [p for p in FIXTURES if p.stem.startswith("grad_")]
TRANSPOSED = [p for p in FIXTURES if p.stem.startswith("transposed_")]
ALGOS = sorted(kernels_for("grad_input"))


def load(path):
    data = np.load(path)
    bias = data["bias"] if bool(data["has_bias"]) else None
    return data, bias, json.loads(str(data["module_args"]))


def _conv_args(module_args):
    return {k: v for k, v in module_args.items()
            if k not in ("in_channels", "out_channels", "kernel_size", "bias")}


def test_fixtures_cover_the_cases():
    stems = {p.stem for p in FIXTURES}
    assert {"grad_stride2", "grad_same_even", "grad_dilated", "grad_groups", "grad_depthwise",
            "grad_reflect", "grad_replicate_same", "grad_circular_stride",
            "transposed_outpad", "transposed_outpad_dilation"} <= stems


@pytest.mark.parametrize("path", GRAD, ids=lambda p: p.stem)
@pytest.mark.parametrize("algo", ALGOS)
def test_gradients_equal_torch(path, algo):
    data, _, margs = load(path)
    args = _conv_args(margs)
    x, w, g = data["x"], data["weight"], data["grad_output"]
    gx = convlab.conv2d_input(x.shape, w, g, **args, algo=algo)
    gw = convlab.conv2d_weight(x, w.shape, g, **args, algo=algo)
    np.testing.assert_allclose(gx, data["grad_input"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gw, data["grad_weight"], rtol=1e-9, atol=1e-9)
    # float32: the same numbers within each kernel's float32 tolerance
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    spec = kernel_spec(convlab.ConvSpec.from_shapes(x.shape, w.shape, **args))
    for op, got, want in (
            ("grad_input", convlab.conv2d_input(x.shape, w32, g32, **args, algo=algo),
             data["grad_input"]),
            ("grad_weight", convlab.conv2d_weight(x32, w.shape, g32, **args, algo=algo),
             data["grad_weight"])):
        assert got.dtype == np.float32
        report = compare(got, want, kernels.get(algo, op).tolerance(spec, np.float32))
        assert report.ok, (op, report)


@pytest.mark.parametrize("path", GRAD, ids=lambda p: p.stem)
def test_conv2d_module_backward_equals_torch(path):
    data, bias, margs = load(path)
    layer = convlab.Conv2d(**margs, dtype=np.float64)
    layer.load_state_dict({"weight": data["weight"], **({"bias": bias} if bias is not None
                                                          else {})})
    np.testing.assert_allclose(layer(data["x"]), data["out"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.backward(data["grad_output"]), data["grad_input"],
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.grad["weight"], data["grad_weight"], rtol=1e-9, atol=1e-9)
    if bias is not None:
        np.testing.assert_allclose(layer.grad["bias"], data["grad_bias"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", TRANSPOSED, ids=lambda p: p.stem)
@pytest.mark.parametrize("algo", ALGOS)
def test_conv_transpose2d_equals_torch(path, algo):
    data, bias, margs = load(path)
    args = {k: margs.get(k, d) for k, d in (("stride", 1), ("padding", 0),
                                            ("output_padding", 0), ("groups", 1),
                                            ("dilation", 1))}
    out = convlab.conv_transpose2d(data["x"], data["weight"], bias, **args, algo=algo)
    np.testing.assert_allclose(out, data["out"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", TRANSPOSED, ids=lambda p: p.stem)
def test_transposed_module_equals_torch(path):
    data, bias, margs = load(path)
    layer = convlab.ConvTranspose2d(**margs, dtype=np.float64)
    assert repr(layer) == str(data["repr"])
    layer.load_state_dict({"weight": data["weight"], **({"bias": bias} if bias is not None
                                                          else {})})
    np.testing.assert_allclose(layer(data["x"]), data["out"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.backward(data["grad_output"]), data["grad_input"],
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.grad["weight"], data["grad_weight"], rtol=1e-9, atol=1e-9)
    if bias is not None:
        np.testing.assert_allclose(layer.grad["bias"], data["grad_bias"], rtol=1e-9, atol=1e-9)

"""PyTorch equality without PyTorch: outputs recorded from torch 2.13 (make_golden.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.reference import compare

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.npz"))


def load(path):
    data = np.load(path)
    bias = data["bias"] if bool(data["has_bias"]) else None
    return data, bias, json.loads(str(data["args"])), json.loads(str(data["module_args"]))


def test_fixtures_exist():
    assert len(GOLDEN) >= 10


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
@pytest.mark.parametrize("algo", sorted(k for k, v in kernels.KERNELS.items()
                                        if v.device == "cpu"))
def test_kernel_equals_torch(path, algo):
    data, bias, args, _ = load(path)
    spec = convlab.ConvSpec.from_shapes(data["x"].shape, data["weight"].shape, **args)
    why = kernels.get(algo).supports(spec.explicitly_padded())
    if why is not None:
        with pytest.raises(kernels.UnsupportedSpecError, match=algo):
            convlab.conv2d(data["x"], data["weight"], bias, algo=algo, **args)
        return
    out = convlab.conv2d(data["x"], data["weight"], bias, algo=algo, **args)
    assert out.shape == data["out"].shape
    np.testing.assert_allclose(out, data["out"], rtol=1e-9, atol=1e-9)
    # float32 inputs: the same numbers within the kernel's own float32 tolerance
    b32 = None if bias is None else bias.astype(np.float32)
    out32 = convlab.conv2d(data["x"].astype(np.float32), data["weight"].astype(np.float32), b32,
                           algo=algo, **args)
    assert out32.dtype == np.float32
    tol = kernels.get(algo).tolerance(spec, np.float32)
    report = compare(out32, data["out"].reshape(out32.shape), tol)
    assert report.ok, report


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_module_equals_torch(path):
    data, bias, _, module_args = load(path)
    layer = convlab.Conv2d(**module_args, dtype=np.float64)
    assert repr(layer) == str(data["repr"])
    layer.load_state_dict({"weight": data["weight"], **({"bias": bias} if bias is not None
                                                          else {})})
    np.testing.assert_allclose(layer(data["x"]), data["out"], rtol=1e-9, atol=1e-9)

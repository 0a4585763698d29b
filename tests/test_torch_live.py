"""Live comparison with PyTorch on random cases (skipped, visibly, when torch is absent;
CI installs torch, and the golden fixtures cover the no-torch case)."""

import re

import numpy as np
import pytest
from hypothesis import given, settings

import convlab
from convlab import kernels

from helpers import conv_cases, cpu_kernel_names

torch = pytest.importorskip("torch")


def torch_conv(x, w, b, args):
    layer = torch.nn.Conv2d(w.shape[1] * args["groups"], w.shape[0], w.shape[2:],
                            bias=b is not None, dtype=torch.float64, **args)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.astype(np.float64)))
        if b is not None:
            layer.bias.copy_(torch.from_numpy(b.astype(np.float64)))
        return layer(torch.from_numpy(x.astype(np.float64))).numpy()


@settings(max_examples=40, deadline=None)
@given(case=conv_cases())
def test_every_cpu_kernel_equals_torch(case):
    input_shape, weight_shape, args, dtype = case
    rng = np.random.default_rng(abs(hash((input_shape, weight_shape))) % 2**32)
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    b = rng.standard_normal(weight_shape[0]).astype(dtype)
    expected = torch_conv(x, w, b, args)
    _, _, _, spec = convlab.functional.prepare(x, w, b, **args)
    for algo in cpu_kernel_names():
        kern = kernels.get(algo)
        if kern.supports(spec) is not None:
            continue
        out = convlab.conv2d(x, w, b, algo=algo, **args)
        assert out.shape == expected.shape
        tol = kern.tolerance(spec, dtype)
        scale = max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(out, expected, rtol=0, atol=tol * scale, err_msg=algo)


def test_state_dict_moves_between_torch_and_convlab():
    tlayer = torch.nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2)
    mine = convlab.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2)
    mine.load_state_dict(tlayer.state_dict())  # torch tensors in
    x = np.random.default_rng(0).standard_normal((2, 4, 7, 9)).astype(np.float32)
    with torch.no_grad():
        expected = tlayer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mine(x), expected, rtol=1e-5, atol=1e-5)
    back = torch.nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in mine.state_dict().items()})
    assert torch.equal(back.weight, tlayer.weight)


def same_words(message: str) -> str:
    """torch prints Python sets, whose order varies run to run: sort their items."""
    return re.sub(r"\{([^}]*)\}", lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}",
                  message)


BAD = [
    dict(groups=0), dict(padding="foo"), dict(padding="same", stride=2),
    dict(padding_mode="bad"), dict(groups=2),
]


@pytest.mark.parametrize("kwargs", BAD, ids=str)
def test_module_errors_have_torch_wording(kwargs):
    args = dict(in_channels=3, out_channels=6, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(Exception) as theirs:
        torch.nn.Conv2d(**args)
    with pytest.raises(ValueError) as ours:
        convlab.Conv2d(**args)
    assert same_words(str(ours.value)) == same_words(str(theirs.value))


@pytest.mark.parametrize("shapes,kwargs", [
    (((5,), (2, 5, 3, 3)), {}),
    (((1, 3, 10, 10), (2, 5, 3, 3)), {}),
    (((3, 10, 10), (2, 5, 3, 3)), {}),
    (((1, 3, 2, 2), (2, 3, 3, 3)), {}),
    (((1, 3, 4, 4), (2, 3, 3, 3)), dict(dilation=2)),
    (((1, 3, 10, 10), (2, 3, 3, 3)), dict(stride=0)),
    (((1, 3, 10, 10), (2, 3, 3, 3)), dict(padding=-1)),
    (((1, 3, 10, 10), (2, 3, 3, 3)), dict(stride=(1, 1, 1))),
    (((1, 4, 5, 5), (3, 2, 3, 3)), dict(groups=2)),
    (((1, 3, 10, 10), (2, 3, 0, 3)), {}),
])
def test_functional_errors_have_torch_wording(shapes, kwargs):
    xs, ws = shapes
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.conv2d(torch.zeros(xs), torch.zeros(ws), **kwargs)
    with pytest.raises(ValueError) as ours:
        convlab.conv2d(np.zeros(xs, np.float32), np.zeros(ws, np.float32), **kwargs)
    # torch prints the offending weight shape as [[3, 2, 3, 3]] in one message; same meaning
    assert str(ours.value) == str(theirs.value).replace("[[", "[").replace("]]", "]")

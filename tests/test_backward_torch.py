"""Live PyTorch comparison of every backward kernel: random specs, torch.autograd through
torch.nn.Conv2d (every padding and padding mode, groups, dilation, unbatched), and
torch.nn.functional.conv_transpose2d with random output_padding.  Skipped without torch
(tests/test_golden_backward.py covers fixed cases from torch 2.13 either way)."""

import zlib

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import kernel_spec
from convlab.reference import compare

torch = pytest.importorskip("torch")
F = torch.nn.functional

ALGOS = ["naive", "im2col", "parallel"]
N_SPECS = 100  # per kernel; tests/test_backward_kernels.py adds 200 Hypothesis examples
N_TRANSPOSED = 40


def _random_conv(rng):
    """A random valid (input shape, weight shape, Conv2d keyword arguments, dtype)."""
    while True:
        groups = int(rng.integers(1, 4))
        cg, kg = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        kind = rng.choice(["int", "pair", "valid", "same"])
        if kind == "same":
            stride = (1, 1)
            padding = "same"
        elif kind == "valid":
            padding = "valid"
        elif kind == "int":
            padding = int(rng.integers(0, 3))
        else:
            padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        mode = str(rng.choice(["zeros", "reflect", "replicate", "circular"]))
        h, w = int(rng.integers(4, 12)), int(rng.integers(4, 12))
        n = int(rng.integers(1, 3))
        shape = (n, cg * groups, h, w) if rng.random() < 0.8 else (cg * groups, h, w)
        wshape = (kg * groups, cg, kh, kw)
        args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    padding_mode=mode)
        try:
            convlab.ConvSpec.from_shapes(shape, wshape, **args)
        except ValueError:
            continue
        return shape, wshape, args, (np.float32 if rng.random() < 0.5 else np.float64)


def _torch_grads(x, w, g, args):
    layer = torch.nn.Conv2d(x.shape[-3], w.shape[0], w.shape[2:], bias=False,
                            dtype=torch.float64, **args)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.astype(np.float64)))
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    layer(tx).backward(torch.from_numpy(g.astype(np.float64)))
    return tx.grad.numpy(), layer.weight.grad.numpy()


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("algo", ALGOS)
def test_gradients_equal_torch_autograd(algo):
    rng = np.random.default_rng(zlib.crc32(algo.encode()))
    for _ in range(N_SPECS):
        shape, wshape, args, dtype = _random_conv(rng)
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(wshape).astype(dtype)
        spec = convlab.ConvSpec.from_shapes(shape, wshape, **args)
        g = rng.standard_normal(spec.output_shape).astype(dtype)
        want_x, want_w = _torch_grads(x, w, g, args)
        got_x = convlab.conv2d_input(shape, w, g, **args, algo=algo)
        got_w = convlab.conv2d_weight(x, wshape, g, **args, algo=algo)
        kspec = kernel_spec(spec)
        for op, got, want in (("grad_input", got_x, want_x), ("grad_weight", got_w, want_w)):
            report = compare(got, want, kernels.get(algo, op).tolerance(kspec, dtype))
            assert report.ok, f"{algo} {op}: {report} on {spec.describe()}"


@pytest.mark.parametrize("algo", ALGOS)
def test_conv_transpose2d_equals_torch(algo):
    rng = np.random.default_rng(zlib.crc32(("t" + algo).encode()))
    done = 0
    while done < N_TRANSPOSED:
        groups = int(rng.integers(1, 3))
        cin, cout = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        p = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        op = tuple(int(rng.integers(0, max(a, b))) for a, b in zip(s, d))
        shape = (int(rng.integers(1, 3)), cin, int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        wshape = (cin, cout // groups) + k
        try:
            spec = convlab.TransposedSpec.from_shapes(shape, wshape, s, p, op, groups, d)
        except ValueError:
            continue
        dtype = np.float32 if rng.random() < 0.5 else np.float64
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(wshape).astype(dtype)
        b = rng.standard_normal(cout).astype(dtype) if rng.random() < 0.5 else None
        want = F.conv_transpose2d(torch.from_numpy(x.astype(np.float64)),
                                  torch.from_numpy(w.astype(np.float64)),
                                  None if b is None else torch.from_numpy(b.astype(np.float64)),
                                  s, p, op, groups, d).numpy()
        got = convlab.conv_transpose2d(x, w, b, s, p, op, groups, d, algo=algo)
        assert got.shape == want.shape == spec.output_shape
        tol = kernels.get(algo, "grad_input").tolerance(spec.forward_spec(), dtype)
        report = compare(got, want, tol)
        assert report.ok, f"{algo}: {report} on {spec.describe()}"
        done += 1


@pytest.mark.parametrize("cls", ["Conv2d", "ConvTranspose2d"])
def test_modules_learn_like_torch(cls):
    rng = np.random.default_rng(5)
    kwargs = (dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1),
                   padding=(1, 2), dilation=(1, 2), groups=2, padding_mode="circular")
              if cls == "Conv2d" else
              dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1),
                   padding=(1, 0), output_padding=(1, 0), dilation=(1, 2), groups=2))
    theirs = getattr(torch.nn, cls)(**kwargs, dtype=torch.float64)
    ours = getattr(convlab, cls)(**kwargs, dtype=np.float64)
    assert repr(ours) == repr(theirs)
    ours.load_state_dict(theirs.state_dict())
    for _ in range(2):  # gradients accumulate over two forward/backward pairs
        x = rng.standard_normal((2, 4, 7, 6))
        tx = torch.tensor(x, requires_grad=True)
        out = theirs(tx)
        g = rng.standard_normal(tuple(out.shape))
        out.backward(torch.from_numpy(g))
        np.testing.assert_allclose(ours(x), out.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.grad["weight"], theirs.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.grad["bias"], theirs.bias.grad.numpy(), atol=1e-12)

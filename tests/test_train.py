"""convlab.train: each NumPy layer's backward is checked numerically, the optimizer is
PyTorch's SGD, and a short run on the digits learns (scikit-learn for the data)."""

from __future__ import annotations

import numpy as np
import pytest

import convlab
from convlab import train


@pytest.fixture
def rng():
    return np.random.default_rng(40)


def _as_fn(layer):
    def fn(x):
        out = layer.forward(x)
        return out, lambda g: [layer.backward(g)]

    return fn


@pytest.mark.parametrize("make, shape", [
    (train.ReLU, (2, 3, 4, 4)),
    (train.MaxPool2d, (2, 3, 4, 6)),
    (train.Flatten, (2, 3, 2, 2)),
    (lambda: train.Linear(5, 3, dtype=np.float64, seed=0), (4, 5)),
])
def test_layer_backward_is_its_gradient(make, shape, rng):
    x = rng.standard_normal(shape)  # random: no ReLU kinks at 0, no max-pool ties
    assert convlab.gradcheck(_as_fn(make()), (x,))


def test_linear_parameter_gradients(rng):
    layer = train.Linear(5, 3, dtype=np.float64, seed=0)
    x, g = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    layer.forward(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.grad["weight"], g.T @ x)
    np.testing.assert_allclose(layer.grad["bias"], g.sum(axis=0))
    assert np.abs(layer.weight).max() <= 1 / np.sqrt(5)  # torch's nn.Linear bound


def test_softmax_cross_entropy(rng):
    logits, labels = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    loss, grad = train.softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(6), labels]).mean())
    eps, num = 1e-6, np.zeros_like(logits)
    for idx in np.ndindex(logits.shape):
        d = np.zeros_like(logits)
        d[idx] = eps
        num[idx] = (train.softmax_cross_entropy(logits + d, labels)[0]
                    - train.softmax_cross_entropy(logits - d, labels)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=1e-8)


def test_sgd_is_torchs_momentum_sgd():
    p, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    opt = train.SGD([(p, g)], lr=0.1, momentum=0.9)
    opt.step()  # buf = g
    np.testing.assert_allclose(p, [0.95, -2.025])
    opt.step()  # buf = 0.9 * g + g
    np.testing.assert_allclose(p, [0.95 - 0.1 * 1.9 * 0.5, -2.025 - 0.1 * 1.9 * 0.25])


def test_whole_network_gradient(rng):
    model = train.tiny_cnn(0, dtype=np.float64)

    def fn(x):
        return model.forward(x), lambda g: [model.backward(g)]

    assert convlab.gradcheck(fn, (rng.standard_normal((2, 1, 8, 8)),))
    split = model.time_split()
    assert set(split) == {"conv forward", "conv backward", "other (NumPy)"}
    assert all(v > 0 for v in split.values())


def test_a_short_run_on_the_digits_learns():
    pytest.importorskip("sklearn")
    data = train.load_digits(seed=0)
    assert data.x_train.shape[1:] == (1, 8, 8) and len(data.y_train) + len(data.y_test) == 1797
    assert data.x_train.max() <= 1.0
    small = train.Digits(data.x_train[:640], data.y_train[:640], data.x_test, data.y_test)
    model = train.tiny_cnn(0)
    hist = train.fit(model, small, epochs=2, batch_size=32, lr=0.05, seed=0)
    assert len(hist.losses) == 2 * 20
    assert np.mean(hist.losses[-5:]) < np.mean(hist.losses[:5])
    assert hist.test_accuracy[-1] > 0.5  # ten classes: chance is 0.1


def test_relu_layer_is_torchs_forward_and_backward_on_nan_inf_and_zeros():
    """Forward: NaN and -0.0 kept; backward: 0 where x <= 0, the gradient elsewhere,
    NaN inputs included (torch's threshold_backward)."""
    torch = pytest.importorskip("torch")
    x = np.array([np.nan, -1.0, 0.0, -0.0, 2.0, np.inf, -np.inf], np.float32)
    g = np.array([1.0, np.inf, np.inf, 5.0, 3.0, 7.0, np.nan], np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.relu(tx)
    ty.backward(torch.from_numpy(g))
    layer = train.ReLU()
    out = layer.forward(x)
    np.testing.assert_array_equal(out.view(np.uint32), ty.detach().numpy().view(np.uint32))
    np.testing.assert_array_equal(layer.backward(g), tx.grad.numpy())

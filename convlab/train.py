"""Train a tiny CNN on convlab's own kernels: the smallest network that learns something.

    Conv2d(1, 8, 3, padding=1) -> ReLU -> MaxPool2d(2) -> Conv2d(8, 16, 3, padding=1)
    -> ReLU -> Flatten -> Linear(256, 10) -> softmax cross-entropy

The two convolutions are :class:`convlab.Conv2d` (their forward *and* backward run
on convlab's kernels, ``algo`` / ``backward_algo``); everything else is a few lines
of NumPy here, each layer with the same cs231n-style contract as ``Conv2d``:
``forward(x)`` keeps what its backward needs, ``backward(grad_output)`` returns the
gradient w.r.t. its input and adds its parameters' gradients into ``layer.grad``.
Initialisation and the optimizer are PyTorch's (``nn.Linear``'s U(-1/sqrt(fan_in),
...), ``torch.optim.SGD`` with momentum), so the same network in PyTorch, started
from the same weights and fed the same batches, follows the same loss curve
(notebook 10).

The data is scikit-learn's bundled 8x8 digits (1797 images, no download): install
``convlab[notebooks]``.  :class:`Sequential` records how long each layer's forward
and backward took, so an epoch's time splits into convolution forward, convolution
backward and the rest: where training spends its time, not a kernel benchmark
(that is ``convlab bench --backward``'s job).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activation import relu
from .nn import Conv2d


class ReLU:
    """max(x, 0) (``convlab.relu``: NaN stays NaN, as in torch); its gradient is 0 where
    the input was <= 0 and passes elsewhere (NaN included), as torch's."""

    def __init__(self) -> None:
        self.grad: dict[str, np.ndarray] = {}
        self._blocked: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._blocked = x <= 0
        return relu(x)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        assert self._blocked is not None, "backward() needs a forward() first"
        return np.where(self._blocked, 0, grad_output).astype(grad_output.dtype)


class MaxPool2d:
    """2x2 max pooling, stride 2 (even H and W); the gradient goes to the maximum of
    each window (the first one, on ties: as PyTorch's CPU kernel)."""

    def __init__(self) -> None:
        self.grad: dict[str, np.ndarray] = {}
        self._argmax: np.ndarray | None = None
        self._shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"MaxPool2d here needs an even height and width, got {h}x{w}")
        windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
        windows = windows.reshape(n, c, h // 2, w // 2, 4)
        self._argmax = windows.argmax(axis=-1)
        self._shape = x.shape
        return np.take_along_axis(windows, self._argmax[..., None], axis=-1)[..., 0]

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        assert self._argmax is not None, "backward() needs a forward() first"
        n, c, h, w = self._shape
        grad = np.zeros((n, c, h // 2, w // 2, 4), dtype=grad_output.dtype)
        np.put_along_axis(grad, self._argmax[..., None], grad_output[..., None], axis=-1)
        grad = grad.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
        return grad.reshape(n, c, h, w)


class Flatten:
    """(N, C, H, W) -> (N, C*H*W), and back for the gradient."""

    def __init__(self) -> None:
        self.grad: dict[str, np.ndarray] = {}
        self._shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return grad_output.reshape(self._shape)


class Linear:
    """y = x @ weight.T + bias, ``torch.nn.Linear``'s layout and initialisation."""

    def __init__(self, in_features: int, out_features: int, *, dtype: Any = np.float32,
                 seed: int | np.random.Generator | None = None) -> None:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        bound = 1 / math.sqrt(in_features)
        self.weight = rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype)
        self.bias = rng.uniform(-bound, bound, out_features).astype(dtype)
        self.grad = {"weight": np.zeros_like(self.weight), "bias": np.zeros_like(self.bias)}
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return x @ self.weight.T + self.bias

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        assert self._x is not None, "backward() needs a forward() first"
        self.grad["weight"] += grad_output.T @ self._x
        self.grad["bias"] += grad_output.sum(axis=0)
        return grad_output @ self.weight

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight.copy(), "bias": self.bias.copy()}


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits`` (N, classes) against integer ``labels`` (N,), and
    its gradient w.r.t. the logits: (softmax - onehot) / N (``torch.nn.CrossEntropyLoss``)."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # exp never overflows
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    loss = -float(log_probs[np.arange(n), labels].mean())
    grad = np.exp(log_probs)
    grad[np.arange(n), labels] -= 1
    return loss, (grad / n).astype(logits.dtype)


@dataclass
class Sequential:
    """Layers applied in order; ``backward`` runs them in reverse.  ``times`` adds up
    the seconds each layer's forward and backward took: ``times[(index, "forward")]``."""

    layers: list[Any]
    times: dict[tuple[int, str], float] = field(default_factory=dict)
    recording: bool = True  # False: forward/backward are not added to ``times``

    def forward(self, x: np.ndarray) -> np.ndarray:
        for i, layer in enumerate(self.layers):
            start = time.perf_counter()
            x = layer.forward(x)
            self._add(i, "forward", start)
        return x

    __call__ = forward

    def backward(self, grad: np.ndarray) -> np.ndarray:
        for i in reversed(range(len(self.layers))):
            start = time.perf_counter()
            grad = self.layers[i].backward(grad)
            self._add(i, "backward", start)
        return grad

    def _add(self, index: int, what: str, start: float) -> None:
        if not self.recording:
            return
        key = (index, what)
        self.times[key] = self.times.get(key, 0.0) + time.perf_counter() - start

    def parameters(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(parameter, its gradient) pairs, every layer, state_dict order."""
        for layer in self.layers:
            for name, grad in layer.grad.items():
                yield getattr(layer, name), grad

    def zero_grad(self) -> None:
        for _, grad in self.parameters():
            grad[...] = 0

    def time_split(self) -> dict[str, float]:
        """Seconds spent in the convolutions' forward, their backward, and the rest."""
        split = {"conv forward": 0.0, "conv backward": 0.0, "other (NumPy)": 0.0}
        for (i, what), seconds in self.times.items():
            conv = isinstance(self.layers[i], Conv2d)
            split[f"conv {what}" if conv else "other (NumPy)"] += seconds
        return split


def tiny_cnn(seed: int = 0, *, algo: str = "auto", backward_algo: str = "auto",
             dtype: Any = np.float32) -> Sequential:
    """The network of the module docstring, for 1 x 8 x 8 images and 10 classes, its
    weights drawn from ``seed`` (layer by layer, in order)."""
    rng = np.random.default_rng(seed)
    conv1 = Conv2d(1, 8, 3, padding=1, dtype=dtype, seed=rng, algo=algo)
    conv2 = Conv2d(8, 16, 3, padding=1, dtype=dtype, seed=rng, algo=algo)
    for conv in (conv1, conv2):
        conv.backward_algo = backward_algo
    return Sequential([conv1, ReLU(), MaxPool2d(), conv2, ReLU(), Flatten(),
                       Linear(16 * 4 * 4, 10, dtype=dtype, seed=rng)])


class SGD:
    """``torch.optim.SGD`` with momentum: buf = momentum * buf + grad; p -= lr * buf."""

    def __init__(self, params: Sequence[tuple[np.ndarray, np.ndarray]], lr: float,
                 momentum: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self._bufs: list[np.ndarray | None] = [None] * len(self.params)

    def step(self) -> None:
        for i, (p, g) in enumerate(self.params):
            buf = self._bufs[i]
            if self.momentum and buf is not None:
                buf *= self.momentum
                buf += g
            elif self.momentum:
                buf = self._bufs[i] = g.copy()
            p -= self.lr * (g if buf is None else buf)


@dataclass
class Digits:
    """The 8x8 digits, split once: images (N, 1, 8, 8) scaled to [0, 1], labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(test_fraction: float = 0.2, seed: int = 0, dtype: Any = np.float32) -> Digits:
    """scikit-learn's bundled digits (no download), shuffled with ``seed`` and split."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise ImportError("the digits data set comes with scikit-learn: pip install "
                          "'convlab[notebooks]'") from exc
    data = sk_load_digits()
    x = (data.images / 16.0).astype(dtype)[:, None]  # pixel values are 0..16
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return Digits(x[train], y[train], x[test], y[test])


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches of indices: a fresh permutation, cut in order (the last one
    may be short)."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def accuracy(model: Sequential, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Fraction of ``x`` whose largest logit is the right class (not timed)."""
    right, was = 0, model.recording
    model.recording = False
    try:
        for i in range(0, len(y), batch_size):
            right += int((model.forward(x[i:i + batch_size]).argmax(axis=1)
                          == y[i:i + batch_size]).sum())
    finally:
        model.recording = was
    return right / len(y)


@dataclass
class History:
    """What :func:`fit` saw: the loss of every step, per-epoch accuracies and times."""

    losses: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)  # training steps only


def fit(model: Sequential, data: Digits, epochs: int, batch_size: int = 32, lr: float = 0.05,
        momentum: float = 0.9, seed: int = 0) -> History:
    """Mini-batch SGD on softmax cross-entropy; batches from ``seed``.  Accuracies are
    measured after each epoch, outside the epoch's time."""
    rng = np.random.default_rng(seed)
    opt = SGD(list(model.parameters()), lr, momentum)
    hist = History()
    for _ in range(epochs):
        start = time.perf_counter()
        for idx in batches(len(data.y_train), batch_size, rng):
            loss, grad = softmax_cross_entropy(model.forward(data.x_train[idx]),
                                               data.y_train[idx])
            model.zero_grad()
            model.backward(grad)
            opt.step()
            hist.losses.append(loss)
        hist.epoch_seconds.append(time.perf_counter() - start)
        hist.train_accuracy.append(accuracy(model, data.x_train, data.y_train))
        hist.test_accuracy.append(accuracy(model, data.x_test, data.y_test))
    return hist

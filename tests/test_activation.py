"""convlab.relu / convlab.ReLU (convlab/activation.py): torch's values bit for bit (NaN
kept, -0.0 kept, +0.0 for negatives) on both paths (the parallel blocks, with a ragged
last block, and NumPy's for small or strided arrays), in place or not, and the errors."""

import numpy as np
import pytest
import torch

import convlab
from convlab import activation

SPECIALS = [np.nan, -0.0, 0.0, -np.inf, np.inf, -1e-45, 1e-45, -3.5, 2.25]


def _input(size: int, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(dtype)
    x[:len(SPECIALS)] = SPECIALS  # in the first block
    x[-len(SPECIALS):] = SPECIALS  # and in the ragged last one
    return x


def _expect(x: np.ndarray, got: np.ndarray) -> None:
    """The definition, element by element: negatives become +0.0, everything else
    (non-negatives, -0.0, NaN) is itself, bit for bit."""
    neg = x < 0
    assert np.all(got[neg] == 0) and not np.any(np.signbit(got[neg]))
    keep = ~neg
    np.testing.assert_array_equal(got[keep].view(f"u{x.itemsize}"),
                                  x[keep].view(f"u{x.itemsize}"))


def _spy(monkeypatch, name):
    """Count the calls of one of activation's compiled loops."""
    calls = []
    real = getattr(activation, name)
    monkeypatch.setattr(activation, name, lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [37, activation.PARALLEL_MIN + 12_345])
def test_relu_is_the_definition_and_torchs_bits(monkeypatch, dtype, size):
    x = _input(size, dtype).reshape(1, -1)
    before = x.copy()
    calls = _spy(monkeypatch, "_relu_into")
    got = convlab.relu(x)
    assert len(calls) == (size >= activation.PARALLEL_MIN)  # the threaded path, if big
    np.testing.assert_array_equal(x.view(np.uint8), before.view(np.uint8))  # untouched
    assert got.dtype == x.dtype and got.shape == x.shape
    _expect(x, got)
    want = torch.relu(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("size", [50, activation.PARALLEL_MIN * 3 + 7])
def test_inplace_writes_into_the_input_and_returns_it(monkeypatch, size):
    x = _input(size, np.float32)
    want = torch.relu(torch.from_numpy(x.copy())).numpy()
    calls = _spy(monkeypatch, "_relu_inplace")
    got = convlab.ReLU(inplace=True)(x)
    assert len(calls) == (size >= activation.PARALLEL_MIN)
    assert got is x
    np.testing.assert_array_equal(x.view(np.uint8), want.view(np.uint8))


def test_strided_and_integer_arrays_take_numpys_path():
    x = _input(4 * activation.PARALLEL_MIN, np.float32).reshape(4, -1)[:, ::3]
    assert not x.flags.c_contiguous
    _expect(x, convlab.relu(x))
    i = np.array([[-3, 0, 4]], dtype=np.int32)
    np.testing.assert_array_equal(convlab.relu(i), [[0, 0, 4]])
    view = x.copy()[:, ::2]
    convlab.relu(view, inplace=True)
    assert not np.any(view < 0)


def test_errors_and_repr():
    with pytest.raises(TypeError, match="real number"):
        convlab.relu(np.array([True, False]))
    with pytest.raises(TypeError, match="needs a NumPy array to write into, got list"):
        convlab.relu([-1.0, 2.0], inplace=True)
    np.testing.assert_array_equal(convlab.relu([-1.0, 2.0]), [0.0, 2.0])
    ro = np.ones(activation.PARALLEL_MIN, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        convlab.relu(ro, inplace=True)
    np.testing.assert_array_equal(convlab.relu(ro), ro)  # not in place: fine
    assert repr(convlab.ReLU()) == repr(torch.nn.ReLU()) == "ReLU()"
    assert repr(convlab.ReLU(inplace=True)) == "ReLU(inplace=True)"

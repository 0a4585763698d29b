"""The whole-array checks (convlab/_scan.py) on both paths: the threaded one (blocks,
a ragged last block) and NumPy's (small or strided arrays); NaN and Inf anywhere,
-0.0 against 0.0, NaN payloads, float32 and float64."""

import numpy as np
import pytest

from convlab import _scan

BIG = _scan.PARALLEL_MIN * 3 + 5  # several blocks, the last one ragged
PLACES = [0, _scan._BLOCK - 1, _scan._BLOCK, BIG - 1]


@pytest.fixture
def threaded(monkeypatch):
    """Counts the calls of the compiled (threaded) scans."""
    calls = []
    for name in ("_any_exponent_full", "_any_difference"):
        real = getattr(_scan, name)
        monkeypatch.setattr(_scan, name, lambda *a, real=real: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [40, BIG])
def test_all_finite_finds_every_nan_and_inf(threaded, dtype, size):
    x = np.random.default_rng(size).standard_normal(size).astype(dtype) * 1e30
    x[1] = np.finfo(dtype).max
    x[2] = np.finfo(dtype).tiny / 4  # subnormal: finite
    assert _scan.all_finite(x)
    assert len(threaded) == (size >= _scan.PARALLEL_MIN)  # the threaded path, if big
    for value in (np.nan, np.inf, -np.inf):
        for at in (p for p in PLACES if p < size):
            y = x.copy()
            y[at] = value
            assert not _scan.all_finite(y), (value, at)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [40, BIG])
def test_same_bits_sees_every_changed_bit(threaded, dtype, size):
    a = np.random.default_rng(size).standard_normal(size).astype(dtype)
    a[3] = 0.0
    assert _scan.same_bits(a, a.copy())
    assert len(threaded) == (size >= _scan.PARALLEL_MIN)
    for at in (p for p in PLACES if p < size):
        b = a.copy()
        b.view(f"u{a.itemsize}")[at] ^= 1  # the lowest mantissa bit
        assert not _scan.same_bits(a, b), at
    b = a.copy()
    b[3] = -0.0  # equal as numbers, not as bits
    assert not _scan.same_bits(a, b)
    n1, n2 = a.copy(), a.copy()
    n1[4], n2[4] = np.nan, -np.nan  # NaNs of other bits differ; of the same bits, equal
    assert _scan.same_bits(n1, n1.copy()) and not _scan.same_bits(n1, n2)
    assert not _scan.same_bits(a, a.astype(np.float64 if dtype is np.float32 else np.float32))
    assert not _scan.same_bits(a, a[:-1])


def test_strided_arrays_take_numpys_path():
    a = np.random.default_rng(0).standard_normal((4, BIG)).astype(np.float32)[:, ::2]
    assert not a.flags.c_contiguous
    assert _scan.all_finite(a) and _scan.same_bits(a, a.copy())
    b = a.copy()
    b[2, 7] = np.inf
    assert not _scan.all_finite(b) and not _scan.same_bits(a, b)


def test_the_other_byte_order_and_array_likes():
    """Big-endian values cannot be read as native integers: NumPy's path finds them."""
    for dtype in (">f4", ">f8"):
        a = np.ones(BIG, dtype)
        assert _scan.all_finite(a) and _scan.same_bits(a, a.copy())
        a[5] = np.nan
        assert not _scan.all_finite(a)
    assert not _scan.all_finite([1.0, float("nan")]) and _scan.all_finite([1.0, 2.0])

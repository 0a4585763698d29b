"""conv2d's handling of arrays: dtypes, layouts, batching, errors, never writing inputs."""

import numpy as np
import pytest

import convlab
from convlab import kernels

from helpers import assert_matches_oracle, cpu_kernel_names, oracle, random_case


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_cross_correlation_not_convolution():
    """A hand-computed 1-channel case with an asymmetric kernel: no flipping."""
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
    w = np.array([[[[1.0, 2.0], [3.0, 5.0]]]])
    out = convlab.conv2d(x, w, algo="naive")
    # top-left window [[0,1],[4,5]] . [[1,2],[3,5]] = 0 + 2 + 12 + 25 = 39
    assert out[0, 0, 0, 0] == 39.0
    assert out[0, 0, 1, 2] == 6 * 1 + 7 * 2 + 10 * 3 + 11 * 5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, dtype):
    x, w, b = random_case(rng, (2, 3, 7, 9), (4, 3, 3, 2), dtype)
    assert convlab.conv2d(x, w, b).dtype == dtype


def test_integer_arrays_rejected(rng):
    x, w, _ = random_case(rng, (1, 3, 7, 9), (4, 3, 3, 2))
    with pytest.raises(TypeError, match="float32 and float64.*int64"):
        convlab.conv2d(x.astype(np.int64), w)
    with pytest.raises(TypeError, match="weight of dtype int32"):
        convlab.conv2d(x, w.astype(np.int32))


def test_mixed_dtypes_rejected(rng):
    x, w, b = random_case(rng, (1, 3, 7, 9), (4, 3, 3, 2))
    with pytest.raises(TypeError, match="same dtype; got input float32, weight float64"):
        convlab.conv2d(x, w.astype(np.float64))
    with pytest.raises(TypeError, match="bias float64"):
        convlab.conv2d(x, w, b.astype(np.float64))


def test_unknown_algo_lists_known(rng):
    x, w, _ = random_case(rng, (1, 3, 7, 9), (4, 3, 3, 2))
    with pytest.raises(ValueError, match="unknown algo 'fast'; known algorithms: auto, .*naive"):
        convlab.conv2d(x, w, algo="fast")


def test_bias_shape_error(rng):
    x, w, _ = random_case(rng, (1, 3, 5, 5), (8, 3, 3, 3))
    with pytest.raises(ValueError, match=r"Given weight of size \[8, 3, 3, 3\], expected bias to "
                                         r"be 1-dimensional with 8 elements, but got bias of "
                                         r"size \[7\] instead"):
        convlab.conv2d(x, w, np.ones(7, np.float32))
    with pytest.raises(ValueError, match=r"bias of size \[8, 1\]"):
        convlab.conv2d(x, w, np.ones((8, 1), np.float32))


def test_unbatched_equals_batch_of_one(rng):
    x, w, b = random_case(rng, (3, 7, 9), (4, 3, 3, 2))
    out = convlab.conv2d(x, w, b, padding=1)
    assert out.shape == (4, 7, 10)
    np.testing.assert_array_equal(out, convlab.conv2d(x[None], w, b, padding=1)[0])


def test_batch_zero_gives_empty(rng):
    x, w, b = random_case(rng, (0, 3, 7, 9), (4, 3, 3, 2))
    spec = convlab.functional.prepare(x, w, b, stride=2)[3]
    for algo in ["auto"] + cpu_kernel_names():
        if algo != "auto" and kernels.get(algo).supports(spec) is not None:
            with pytest.raises(kernels.UnsupportedSpecError):  # refused even with no work
                convlab.conv2d(x, w, b, algo=algo, stride=2)
            continue
        out = convlab.conv2d(x, w, b, algo=algo, stride=2)
        assert out.shape == (0, 4, 3, 4) and out.dtype == np.float32


@pytest.mark.parametrize("args", [dict(padding=1, groups=2), dict(padding=(1, 2), groups=2,
                                                                  stride=(1, 2))], ids=str)
@pytest.mark.parametrize("layout", ["noncontiguous", "reversed", "fortran", "readonly"])
def test_layouts_and_inputs_untouched(rng, layout, args):
    """Every CPU kernel, on awkward memory layouts, gives the oracle's answer and
    leaves its inputs exactly as they were."""
    big, w, b = random_case(rng, (2, 8, 14, 18), (6, 2, 3, 3))
    if layout == "noncontiguous":
        x = big[:, ::2, ::2, 1::2]
        b = np.repeat(b, 2)[::2]
    elif layout == "reversed":
        x = big[::-1, :4, ::-1, ::-1]
        w = w[:, ::-1, ::-1, :]
    elif layout == "fortran":
        x = np.asfortranarray(big[:, :4])
        w = np.asfortranarray(w)
    else:
        x = big[:, :4].copy()
        for arr in (x, w, b):
            arr.flags.writeable = False
    copies = [a.copy() for a in (x, w, b)]
    spec = convlab.functional.prepare(x, w, b, **args)[3]
    ran = 0
    for algo in cpu_kernel_names():
        if kernels.get(algo).supports(spec) is None:
            assert_matches_oracle(algo, x, w, b, **args)
            ran += 1
    assert ran >= 4
    for before, after in zip(copies, (x, w, b)):
        np.testing.assert_array_equal(before, after)


def test_padding_modes_do_not_touch_input(rng):
    x, w, b = random_case(rng, (2, 3, 6, 7), (4, 3, 3, 3))
    before = x.copy()
    for mode in ("reflect", "replicate", "circular"):
        assert_matches_oracle("naive", x, w, b, padding=(2, 1), padding_mode=mode)
    np.testing.assert_array_equal(x, before)


def test_lists_accepted(rng):
    x, w, b = random_case(rng, (1, 2, 5, 6), (3, 2, 2, 2), np.float64)
    np.testing.assert_allclose(convlab.conv2d(x.tolist(), w.tolist(), b.tolist()),
                               oracle(x, w, b), rtol=1e-12)


def test_torch_tensors_accepted(rng):
    torch = pytest.importorskip("torch")
    x, w, b = random_case(rng, (1, 2, 5, 6), (3, 2, 2, 2), np.float64)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
    out = convlab.conv2d(xt, wt, bt, padding=1)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, oracle(x, w, b, padding=1), rtol=1e-12)


def test_explain_names_choice(rng):
    x, w, b = random_case(rng, (1, 2, 5, 6), (3, 2, 2, 2))
    choice = convlab.explain(x, w, b)
    assert choice.kernel.name in kernels.KERNELS
    assert choice.kernel.supports(convlab.functional.prepare(x, w, b)[3]) is None
    assert choice.kernel.name in str(choice)
    # shapes work as well as arrays: a dry run
    assert convlab.explain((1, 2, 5, 6), (3, 2, 2, 2)).kernel == choice.kernel


def test_python_kernel_refuses_big_inputs(rng):
    x, w, _ = random_case(rng, (8, 64, 32, 32), (64, 64, 3, 3))
    with pytest.raises(kernels.UnsupportedSpecError, match="python is pure Python.*naive"):
        convlab.conv2d(x, w, algo="python")


def test_weight_cache_is_not_pickled_or_copied():
    """A pickled or deep-copied layer carries its weight, not its transforms (a 64x64
    3x3 layer's F(4,3) filter is 4x its weight; 256x256 grew 2.25 MB -> 38 MB)."""
    import copy
    import pickle

    layer = convlab.Conv2d(64, 64, 3, padding=1, algo="winograd_f4", seed=0)
    x = np.random.default_rng(0).standard_normal((1, 64, 8, 8)).astype(np.float32)
    y = layer(x)
    assert len(layer._weight_cache) == 1
    blob = pickle.dumps(layer)
    assert len(blob) < 1.2 * layer.weight.nbytes
    for clone in (pickle.loads(blob), copy.deepcopy(layer)):
        assert len(clone._weight_cache) == 0
        np.testing.assert_array_equal(clone(x), y)
        assert len(clone._weight_cache) == 1  # rebuilt on first use

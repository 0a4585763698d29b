"""The Conv2d module: constructor, init, repr, state_dict, forward."""

import math

import numpy as np
import pytest

import convlab
from convlab import Conv2d

from helpers import oracle

REPRS = [  # (kwargs, torch 2.13's repr, copied from torch's output)
    (dict(), "Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1))"),
    (dict(padding=1), "Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"),
    (dict(padding="same"), "Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1), padding=same)"),
    (dict(padding="valid"), "Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1), padding=valid)"),
    (dict(stride=2, dilation=(2, 1)),
     "Conv2d(3, 6, kernel_size=(3, 3), stride=(2, 2), dilation=(2, 1))"),
    (dict(groups=3, bias=False),
     "Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1), groups=3, bias=False)"),
    (dict(padding_mode="reflect", padding=(1, 2)),
     "Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1), padding=(1, 2), padding_mode=reflect)"),
    (dict(kernel_size=(3, 5)), "Conv2d(3, 6, kernel_size=(3, 5), stride=(1, 1))"),
    (dict(padding=(0, 0), dilation=1), "Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1))"),
    (dict(padding="same", padding_mode="circular"),
     "Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1), padding=same, padding_mode=circular)"),
]


@pytest.mark.parametrize("kwargs,expected", REPRS, ids=[r for _, r in REPRS])
def test_repr_matches_torch(kwargs, expected):
    args = dict(kernel_size=3)
    args.update(kwargs)
    assert repr(Conv2d(3, 6, **args)) == expected


def test_shapes_and_dtype():
    layer = Conv2d(6, 4, (3, 2), groups=2, dtype=np.float64)
    assert layer.weight.shape == (4, 3, 3, 2) and layer.weight.dtype == np.float64
    assert layer.bias.shape == (4,) and layer.bias.dtype == np.float64
    assert Conv2d(2, 2, 1, bias=False).bias is None
    assert layer.kernel_size == (3, 2) and layer.stride == (1, 1)


def test_init_bounds_follow_fan_in():
    layer = Conv2d(16, 32, (3, 5), groups=4, seed=1)
    bound = 1 / math.sqrt(16 // 4 * 3 * 5)
    for arr in (layer.weight, layer.bias):
        assert np.abs(arr).max() <= bound
    # uniform on [-b, b]: the extremes are reached and the mean/std are right
    w = layer.weight.astype(np.float64).ravel()
    assert np.abs(w).max() > 0.95 * bound
    assert abs(w.mean()) < 0.1 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound


def test_seed_reproducible():
    a, b, c = Conv2d(3, 4, 3, seed=5), Conv2d(3, 4, 3, seed=5), Conv2d(3, 4, 3, seed=6)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)
    g = np.random.default_rng(3)
    d = Conv2d(3, 4, 3, seed=g)
    assert d.weight.shape == (4, 3, 3, 3)


def test_forward_matches_oracle():
    layer = Conv2d(4, 6, (2, 3), stride=(2, 1), padding="valid", dilation=(1, 2), groups=2,
                   padding_mode="replicate", seed=0, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((3, 4, 9, 11))
    expected = oracle(x, layer.weight, layer.bias, stride=(2, 1), padding="valid",
                      dilation=(1, 2), groups=2, padding_mode="replicate")
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.forward(x[0]), expected[0], rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip():
    a, b = Conv2d(3, 4, 3, seed=1), Conv2d(3, 4, 3, seed=2)
    sd = a.state_dict()
    assert list(sd) == ["weight", "bias"]
    sd["weight"][...] = 0  # a copy: the layer is not changed through it
    assert np.abs(a.weight).sum() > 0
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)


def test_load_state_dict_errors():
    layer = Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="size mismatch for weight: copying a param with shape "
                                         r"\(4, 3, 2, 2\)"):
        layer.load_state_dict({"weight": np.zeros((4, 3, 2, 2)), "bias": np.zeros(4)})
    with pytest.raises(ValueError, match='Missing key\\(s\\) in state_dict: "bias"'):
        layer.load_state_dict({"weight": np.zeros((4, 3, 3, 3))})
    with pytest.raises(ValueError, match='Unexpected key\\(s\\) in state_dict: "extra"'):
        layer.load_state_dict({"weight": np.zeros((4, 3, 3, 3)), "bias": np.zeros(4),
                               "extra": 1})
    layer.load_state_dict({"weight": np.ones((4, 3, 3, 3))}, strict=False)
    assert (layer.weight == 1).all()


@pytest.mark.parametrize("kwargs,message", [
    (dict(groups=0), "groups must be a positive integer"),
    (dict(groups=2), "in_channels must be divisible by groups"),
    (dict(in_channels=4, groups=2, out_channels=3), "out_channels must be divisible by groups"),
    (dict(padding="foo"), "Invalid padding string 'foo'"),
    (dict(padding="same", stride=2), "padding='same' is not supported for strided"),
    (dict(padding_mode="bad"), "padding_mode must be one of"),
    (dict(kernel_size=0), "kernel size should be greater than zero"),
    (dict(stride=0), "non-positive stride is not supported"),
    (dict(out_channels=0), "out_channels must be a positive integer"),
    (dict(dtype=np.int32), "dtype must be float32 or float64"),
])
def test_constructor_errors(kwargs, message):
    args = dict(in_channels=3, out_channels=6, kernel_size=3)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        Conv2d(**args)


def test_forward_input_errors():
    layer = Conv2d(5, 2, 3)
    with pytest.raises(ValueError, match=r"expected input\[1, 3, 10, 10\] to have 5 channels"):
        layer(np.zeros((3, 10, 10), np.float32))
    with pytest.raises(ValueError, match="Expected 3D"):
        layer(np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="same dtype"):
        layer(np.zeros((5, 10, 10), np.float64))


def test_algo_attribute_is_used():
    layer = Conv2d(2, 2, 3, algo="python", seed=0)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(layer(x), convlab.conv2d(x, layer.weight, layer.bias,
                                                        algo="naive"), rtol=1e-5, atol=1e-6)
    layer.algo = "nope"
    with pytest.raises(ValueError, match="unknown algo 'nope'"):
        layer(x)


def test_numpy_integers_go_where_ints_do():
    # torch.nn.Conv2d and convlab.conv2d take them; Conv2d refused groups=np.int64(2)
    layer = Conv2d(np.int64(4), np.int32(8), np.int64(3), stride=np.int64(2),
                   padding=np.int16(1), dilation=np.uint8(1), groups=np.int64(2), seed=0)
    assert repr(layer) == ("Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
                           "groups=2)")  # torch 2.13's repr of Conv2d(4, 8, 3, 2, 1, groups=2)
    assert layer.weight.shape == (8, 2, 3, 3)
    assert type(layer.groups) is int and type(layer.in_channels) is int
    x = np.random.default_rng(2).standard_normal((2, 4, 7, 9)).astype(np.float32)
    np.testing.assert_allclose(layer(x), oracle(x, layer.weight, layer.bias, stride=2, padding=1,
                                                groups=2), rtol=1e-5, atol=1e-5)


def _forward_error(x, w, **args):
    with pytest.raises((ValueError, TypeError)) as info:
        convlab.conv2d(x, w, **args)
    return str(info.value)


@pytest.mark.parametrize("args,algo", [
    (dict(in_channels=5, out_channels=5, kernel_size=3), "bogus"),
    (dict(in_channels=5, out_channels=5, kernel_size=5), "winograd_f4"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, stride=2), "winograd_f2"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, dilation=2, padding=2), "winograd_f6"),
    # pure Python's work cap, exceeded even by a 1x1 output of a batch of one
    (dict(in_channels=512, out_channels=512, kernel_size=11), "python"),
])
def test_algo_that_can_never_run_fails_in_the_constructor(args, algo):
    """Same message as conv2d gives at the first forward (used to be accepted)."""
    with pytest.raises((ValueError, TypeError)) as info:
        Conv2d(**args, algo=algo)
    k = args["kernel_size"]
    x = np.zeros((1, args["in_channels"], 11, 11), np.float32)  # the smallest python takes
    w = np.zeros((args["out_channels"], args["in_channels"], k, k), np.float32)
    conv_args = {key: args[key] for key in ("stride", "padding", "dilation") if key in args}
    assert _forward_error(x, w, algo=algo, **conv_args) in str(info.value)
    with pytest.raises(TypeError, match="algo must be a kernel name"):
        Conv2d(3, 3, 3, algo=3)


@pytest.mark.parametrize("args,algo", [
    (dict(kernel_size=3, padding=1, padding_mode="reflect"), "winograd_f4"),
    (dict(kernel_size=(3, 3), padding="same", padding_mode="circular"), "winograd_f2"),
    (dict(kernel_size=7, stride=3, dilation=2), "python"),  # small enough on small inputs
    (dict(kernel_size=3, groups=2), "cuda_tiled"),  # whether a GPU is here: at forward
])
def test_algo_that_can_run_on_some_input_is_accepted(args, algo):
    layer = Conv2d(4, 6, **args, algo=algo, seed=0)
    if algo == "python":  # and it does run, on a small input
        x = np.random.default_rng(0).standard_normal((1, 4, 13, 14)).astype(np.float32)
        np.testing.assert_allclose(layer(x), oracle(x, layer.weight, layer.bias, stride=3,
                                                    dilation=2), rtol=1e-5, atol=1e-5)


def _winograd_layer():
    layer = Conv2d(256, 256, 3, padding=1, algo="winograd_f4", seed=0)
    x = np.random.default_rng(0).standard_normal((1, 256, 6, 7)).astype(np.float32)
    return layer, x


def test_pickle_leaves_the_weight_cache_out():
    import pickle

    layer, x = _winograd_layer()
    before = len(pickle.dumps(layer))
    expected = layer(x)  # fills the cache with the transformed filter (4x the weight)
    data = pickle.dumps(layer)
    assert len(data) < before + 4096, (before, len(data))  # used to be ~5x bigger
    copy = pickle.loads(data)
    np.testing.assert_array_equal(copy.weight, layer.weight)
    np.testing.assert_array_equal(copy(x), expected)  # the cache refills on demand
    assert repr(copy) == repr(layer) and copy.algo == "winograd_f4"


def test_deepcopy_leaves_the_weight_cache_out():
    import copy
    import tracemalloc

    layer, x = _winograd_layer()
    expected = layer(x)
    tracemalloc.start()
    try:
        twin = copy.deepcopy(layer)
        allocated = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the parameters (2.4 MB) and their zero gradients (as many: layer.grad, which a copy
    # starts afresh), not the cached transform as well (9.4 MB more)
    assert allocated < 3 * layer.weight.nbytes, (allocated, layer.weight.nbytes)
    twin.weight[...] *= 2  # the copy is independent and recomputes its own transform
    np.testing.assert_array_equal(layer(x), expected)
    np.testing.assert_allclose(twin(x) - twin.bias[:, None, None],
                               2 * (expected - layer.bias[:, None, None]),
                               rtol=1e-4, atol=1e-3)


def test_bfloat16_state_dict_loads_as_torch_loads_it():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    source = torch.nn.Conv2d(3, 4, 3)
    state = {k: v.to(torch.bfloat16) for k, v in source.state_dict().items()}
    layer = Conv2d(3, 4, 3)
    layer.load_state_dict(state)  # torch casts to the parameter's dtype; so does convlab
    source.load_state_dict(state)
    np.testing.assert_array_equal(layer.weight, source.weight.detach().numpy())
    np.testing.assert_array_equal(layer.bias, source.bias.detach().numpy())
    assert layer.weight.dtype == np.float32


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_torch_dtype_numpy_cannot_hold_gets_a_clear_message():
    torch = pytest.importorskip("torch")
    layer = Conv2d(3, 4, 3)
    state = {"weight": torch.zeros((4, 3, 3, 3), dtype=torch.complex32),
             "bias": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"weight: a torch tensor of dtype torch.complex32, "
                                         r"which NumPy cannot hold.*convert it first"):
        layer.load_state_dict(state)

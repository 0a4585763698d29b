"""CUDA kernels on the CUDA simulator, against the float64 oracle.

Not collected by the main test run (the name does not start with ``test_``):
numba reads NUMBA_ENABLE_CUDASIM once, when it is first imported, and the rest of
the suite imports numba without it.  tests/test_cuda.py runs this file in a
subprocess with the simulator on::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_sim_cases.py

The simulator runs a Python thread per CUDA thread (~1 ms each), so shapes are
tiny; the registered ``cuda_tiled`` uses 16-thread blocks there (SIM_CONFIG),
and the GPU's own tile configurations are run on one small input each.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from convlab import ConvSpec
from convlab.functional import prepare
from convlab.kernels import cuda as ck
from convlab.kernels import get
from convlab.reference import compare, conv2d_reference

from helpers import assert_matches_oracle, conv_cases, random_case

if not ck.is_simulator():
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported",
                allow_module_level=True)

ALGOS = ["cuda_naive", "cuda_tiled"]

# (input shape, weight shape, conv args, dtype): each one aimed at a way to be wrong
CASES = {
    "ragged": ((2, 3, 7, 10), (5, 3, 3, 2), dict(padding=1), np.float32),
    "stride": ((1, 2, 9, 11), (3, 2, 3, 3), dict(stride=(2, 3), padding=(1, 2)), np.float32),
    "dilation": ((1, 3, 9, 8), (4, 3, 2, 3), dict(dilation=(3, 2), padding=(2, 0)), np.float32),
    "groups": ((2, 6, 6, 7), (9, 2, 3, 3), dict(groups=3, padding=1), np.float32),
    "depthwise": ((1, 4, 6, 5), (8, 1, 3, 3), dict(groups=4, stride=2, padding=1), np.float64),
    "same_even": ((1, 3, 6, 7), (5, 3, 4, 2), dict(padding="same", dilation=(1, 2)), np.float32),
    "float64": ((2, 5, 5, 6), (6, 5, 3, 3), dict(padding=(0, 1), stride=(1, 2)), np.float64),
    "unbatched": ((3, 6, 9), (4, 3, 3, 3), dict(padding="same"), np.float32),
    "reflect": ((1, 2, 6, 6), (3, 2, 3, 3), dict(padding=2, padding_mode="reflect"), np.float32),
    "one_by_one": ((1, 5, 5, 9), (7, 5, 1, 1), dict(stride=2), np.float64),
    "no_bias": ((1, 3, 5, 6), (2, 3, 3, 3), dict(padding=1), np.float32),
}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_handpicked_cases(algo, case):
    xs, ws, args, dtype = CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    x, w, b = random_case(rng, xs, ws, dtype, bias=case != "no_bias")
    assert_matches_oracle(algo, x, w, b, **args)


@pytest.mark.parametrize("algo", ALGOS)
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases(max_hw=4, max_channels=4, max_batch=2))
def test_random_specs(algo, case):
    input_shape, weight_shape, args, dtype = case
    x, w, b = random_case(np.random.default_rng(7), input_shape, weight_shape, dtype)
    assert_matches_oracle(algo, x, w, b, **args)


def _resnet_configs() -> list[ck.TileConfig]:
    """The tiles choose_config gives the ResNet 3x3 layers at batch 8 on an H100."""
    configs = []
    for c, hw in ((64, 56), (128, 28), (256, 14), (512, 7)):
        cfg = ck.choose_config(ConvSpec.create((8, c, hw, hw), c, 3, padding=1))
        if cfg not in configs:
            configs.append(cfg)
    return configs + [ck.TileConfig()]


@pytest.mark.parametrize("config", _resnet_configs(), ids=lambda c: "-".join(map(str, c)))
def test_gpu_tile_configs(config):
    """The big tiles the GPU runs, on inputs that make them ragged in every direction:
    20 output channels (not a multiple of tk), 9 input channels (not of ck), 9x11."""
    from numba import cuda

    rng = np.random.default_rng(3)
    x, w, b = random_case(rng, (1, 9, 9, 11), (20, 9, 3, 3), np.float32)
    spec = ConvSpec.from_shapes(x.shape, w.shape, padding=1)
    out = ck.tiled_device(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), spec,
                          config=config).copy_to_host()
    report = compare(out, conv2d_reference(x, w, b, spec),
                     get("cuda_tiled").tolerance(spec, np.float32))
    assert report.ok, f"{config}: {report}"


def test_device_path_float64_with_given_output():
    from numba import cuda

    rng = np.random.default_rng(5)
    x, w, _ = random_case(rng, (2, 4, 6, 5), (6, 2, 2, 3), np.float64, bias=False)
    xa, wa, _, spec = prepare(x, w, None, stride=(2, 1), padding=(1, 1), groups=2)
    expected = conv2d_reference(xa, wa, None, spec)
    for entry in (ck.naive_device, ck.tiled_device):
        out = cuda.device_array(spec.batched_output_shape, np.float64)
        got = entry(cuda.to_device(xa), cuda.to_device(wa), None, spec, out=out)
        assert got is out
        assert compare(out.copy_to_host(), expected, 1e-12).ok


def test_device_path_rejects_bad_arrays():
    from numba import cuda

    spec = ConvSpec.from_shapes((1, 2, 5, 5), (3, 2, 3, 3))
    x = cuda.to_device(np.ones((1, 2, 5, 5), np.float32))
    w = cuda.to_device(np.ones((3, 2, 3, 3), np.float64))
    with pytest.raises(TypeError, match="float32 or all float64"):
        ck.tiled_device(x, w, None, spec)
    with pytest.raises(ValueError, match="spec expects"):
        ck.naive_device(x, cuda.to_device(np.ones((3, 2, 2, 2), np.float32)), None, spec)


def test_place_hook_copies_once_and_launches_only():
    """The registry's ``place`` hook (what the benchmark times): inputs copied once, a call
    that only launches on them, its output fetched back; a batch of 0 launches nothing
    (a grid with a zero dimension is a launch error on a real GPU)."""
    rng = np.random.default_rng(2)
    x, w, b = random_case(rng, (2, 3, 5, 6), (4, 3, 3, 3), np.float32)
    xa, wa, ba, spec = prepare(x, w, b, padding=1)
    expected = conv2d_reference(xa, wa, ba, spec)
    for algo in ALGOS:
        kern = get(algo)
        placed = kern.place(xa, wa, ba, spec)
        assert placed.copy_in_s > 0
        out = placed.call()
        assert placed.call() is out  # the same device output, no allocation per call
        report = compare(placed.fetch(out), expected, kern.tolerance(spec, np.float32))
        assert report.ok, report
        empty = spec.with_batch(0)
        x0 = np.empty((0,) + xa.shape[1:], np.float32)
        got = kern.place(x0, wa, ba, empty)
        assert got.fetch(got.call()).shape == empty.batched_output_shape


def test_the_timed_call_only_launches(monkeypatch):
    """Timing honesty: after ``place``, the call the benchmark times chooses no tiles,
    checks no arguments and allocates or copies nothing; everything else was decided
    once, in ``place``."""
    from numba import cuda

    rng = np.random.default_rng(4)
    x, w, _ = random_case(rng, (1, 3, 6, 5), (4, 3, 3, 3), np.float32, bias=False)
    xa, wa, _, spec = prepare(x, w, None, padding=1)
    expected = conv2d_reference(xa, wa, None, spec)
    placed = {algo: get(algo).place(xa, wa, None, spec) for algo in ALGOS}

    def forbidden(*args, **kwargs):
        raise AssertionError("called inside the timed call")

    for name in ("choose_config", "default_config", "_check_device_args", "_tiled_launch",
                 "_naive_launch"):
        monkeypatch.setattr(ck, name, forbidden)
    for name in ("to_device", "device_array"):
        monkeypatch.setattr(cuda, name, forbidden)
    for algo, p in placed.items():
        out = p.call()
        assert compare(out.copy_to_host(), expected, 1e-5).ok, algo


def test_batch_0_never_launches_a_zero_grid(monkeypatch):
    """A grid with a zero dimension is a launch error on a GPU (the simulator runs it):
    the device entry points must not launch at all for a batch of 0, and every launch
    they do make has a grid without zeros."""
    from numba import cuda

    launches = []

    class Recorder:
        def __init__(self, kern):
            self.kern = kern

        def __getitem__(self, config):
            launches.append(config)
            return self.kern[config]

    real_tiled, real_naive = ck._tiled_kernel, ck._naive_kernel
    monkeypatch.setattr(ck, "_tiled_kernel", lambda *a: (Recorder(real_tiled(*a)[0]),
                                                         real_tiled(*a)[1]))
    monkeypatch.setattr(ck, "_naive_kernel", lambda: Recorder(real_naive()))
    rng = np.random.default_rng(6)
    _, w, b = random_case(rng, (1, 2, 5, 6), (3, 2, 3, 3), np.float32)
    for batch in (0, 1):
        x = rng.standard_normal((batch, 2, 5, 6)).astype(np.float32)
        spec = ConvSpec.from_shapes(x.shape, w.shape, padding=1)
        for entry in (ck.naive_device, ck.tiled_device):
            out = entry(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), spec)
            assert out.shape == spec.batched_output_shape
            if batch:
                assert compare(out.copy_to_host(), conv2d_reference(x, w, b, spec),
                               1e-5).ok
    assert len(launches) == 2  # batch 1 only, one launch per kernel
    for grid, threads, *_ in launches:
        dims = grid if isinstance(grid, tuple) else (grid,)
        assert min(dims) > 0 and threads > 0

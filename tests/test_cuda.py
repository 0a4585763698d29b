"""CUDA kernels: availability, tile arithmetic, and (in a subprocess) the simulator.

The kernels themselves are checked against the oracle in tests/cuda_sim_cases.py,
which must run with NUMBA_ENABLE_CUDASIM=1 set before numba is imported: this
process has already imported numba without it, so it runs in a subprocess here.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import convlab
from convlab import ConvSpec, bench, kernels
from convlab.kernels import KernelUnavailableError
from convlab.kernels import cuda as ck

from helpers import conv_cases

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return {**env, **extra}


@pytest.mark.slow
def test_kernels_simulated_match_the_oracle():
    """Both kernels, every spec feature, the GPU's tile configs, the device-array
    path and the benchmark's place hook, on the simulator (about 30 s on 2 cores)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(ROOT / "tests" / "cuda_sim_cases.py")],
        cwd=ROOT, env=_env(NUMBA_ENABLE_CUDASIM="1"), capture_output=True, text=True,
        timeout=900)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) >= 30, tail
    assert "failed" not in proc.stdout and "skipped" not in proc.stdout, tail


def test_import_is_cheap_and_quiet():
    """Importing convlab must not import numba.cuda, compile a CUDA kernel or warn."""
    code = ("import sys, convlab; print('numba.cuda' in sys.modules, "
            "convlab.kernels.get('cuda_tiled').device)")
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "cuda"]
    assert proc.stderr == ""


def test_registered_as_cuda_kernels_never_picked_by_auto():
    for name in ("cuda_naive", "cuda_tiled"):
        kern = kernels.get(name)
        assert kern.device == "cuda" and kern.auto_rank is None
    choice = convlab.explain((2, 3, 8, 8), (4, 3, 3, 3))
    assert choice.kernel.device == "cpu"


@pytest.mark.skipif(ck.cuda_unavailable() is None, reason="a GPU or the simulator is here")
@pytest.mark.parametrize("algo", ["cuda_naive", "cuda_tiled"])
def test_unavailable_says_how_to_get_it(algo):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    with pytest.raises(KernelUnavailableError) as info:
        convlab.conv2d(x, w, algo=algo)
    msg = str(info.value)
    assert f"kernel {algo!r} is not available here" in msg
    assert "NUMBA_ENABLE_CUDASIM=1" in msg and "convlab[cuda]" in msg and "NVIDIA" in msg


def test_info_lists_cuda_kernels_and_their_state(capsys):
    from convlab.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("cuda_tiled"))
    assert ("[available]" in line) == (ck.cuda_unavailable() is None)


@pytest.mark.parametrize("layer", bench.SUITES["resnet"], ids=lambda la: la.name)
def test_resnet_configs_fill_every_multiprocessor(layer):
    """choose_config's rule on an H100/H200 (132 SMs): the grid gives every SM at least
    FILL_WARPS_PER_SM warps and FILL_BLOCKS_PER_SM blocks, the accumulators fit the
    registers left per thread when MIN_WARPS_PER_SM warps share an SM, and the tiles fit
    the hardware (the static report, test_cuda_static.py, checks what the compiler really
    made of them)."""
    from convlab.occupancy import register_cap

    spec = layer.spec(8)
    for itemsize in (4, 8):
        cfg = ck.choose_config(spec, itemsize, sms=132)
        assert cfg.problem(spec, itemsize) is None
        assert 64 <= cfg.threads <= ck.MAX_THREADS
        blocks = math.prod(cfg.grid(spec))
        assert blocks * math.ceil(cfg.threads / 32) >= ck.FILL_WARPS_PER_SM * 132
        assert blocks >= ck.FILL_BLOCKS_PER_SM * 132
        assert ck.registers_needed(cfg, spec, itemsize) <= register_cap(
            cfg.threads, ck.MIN_WARPS_PER_SM)
        assert cfg.rk * cfg.rp >= 2  # still some register blocking


def test_the_h200_measurement_moves_the_big_layers_to_32_accumulators():
    """The H200 sweep (scripts/gpu_check.py, 2026-12-04): on ResNet's two big 3x3 layers
    the most register blocking (32 accumulators per thread) won at 7-12 warps per SM, 1.1
    and 1.6x faster than the 16-warp rule's 16 and 8 accumulators; on 256@14 and 512@7
    the 64-channel tiles left SMs without a block and lost."""
    res = {la.name: la.spec(8) for la in bench.SUITES["resnet"]}
    for name in ("res_64x56", "res_128x28"):
        new, old = ck.choose_config(res[name]), ck.choose_config(res[name], fill_warps=16,
                                                                  fill_blocks=0)
        assert new.rk * new.rp == 32 > old.rk * old.rp
    for name in ("res_256x14", "res_512x7"):
        cfg = ck.choose_config(res[name])
        assert math.prod(cfg.grid(res[name])) >= 0.75 * 132 and cfg.tk < 64


def test_old_resnet_default_was_one_block_per_sm():
    """The occupancy arithmetic on the numbers that motivated the rule: the old 64@56
    tile (64, 8, 14, 8, 4, 8), 224 threads at the 167 registers ptxas gave it, fits one
    block (7 of 64 warps) on an H100 and its 224 blocks take 1.7 waves."""
    from convlab.occupancy import GPUS, occupancy, register_cap

    occ = occupancy(GPUS["H100"], 224, 167, 23840, blocks=224)
    assert (occ.blocks_per_sm, occ.limited_by, occ.warps_per_sm) == (1, "registers", 7)
    assert occ.waves == pytest.approx(224 / 132)
    # 80 registers let 3 such blocks (21 warps) share an SM; 88 only 2 (14 warps): the
    # register file is split over 4 sub-partitions, so 7-warp blocks pack badly
    assert occupancy(GPUS["H100"], 224, 80, 23840).blocks_per_sm == 3
    assert occupancy(GPUS["H100"], 224, 88, 23840).blocks_per_sm == 2
    assert register_cap(224, 16) == 80 and register_cap(256, 16) == 128
    assert register_cap(112, 16) == 128 and register_cap(1024, 16) == 64
    # a T4 holds half the warps, and its 64 KB of shared memory binds first for big tiles
    t4 = occupancy(GPUS["T4"], 256, 64, 47544)
    assert (t4.blocks_per_sm, t4.limited_by, t4.max_warps_per_sm) == (1, "shared memory", 32)


def test_tiling_cuts_global_reads():
    spec = ConvSpec.create((8, 64, 56, 56), 64, 3, padding=1)
    naive = ck.global_loads(spec, "cuda_naive")
    tiled = ck.global_loads(spec, "cuda_tiled", ck.TileConfig(64, 8, 14, 8, 4, 8))
    once = ck.global_loads(spec, "compulsory")
    assert naive["total"] == 2 * spec.macs()
    assert naive["total"] / tiled["total"] > 100
    # every block re-reads its weights; the input only its halo more than once
    assert once["input"] < tiled["input"] < 1.5 * once["input"]
    assert tiled["weight"] == spec.batch * 28 * once["weight"]  # 8 images x 28 tiles
    with pytest.raises(ValueError, match="knows"):
        ck.global_loads(spec, "winograd")


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(max_hw=30, max_channels=40, allow_modes=False))
def test_chosen_config_is_valid_for_any_spec(case):
    """Pure arithmetic, no GPU: the tiles chosen for any spec fit the hardware limits
    (or the reason says shared memory), and the threads hold the whole block tile."""
    input_shape, weight_shape, args, _ = case
    spec = ConvSpec.from_shapes(input_shape, weight_shape, **args)
    for itemsize in (4, 8):
        cfg = ck.choose_config(spec, itemsize, sms=4)
        why = cfg.problem(spec, itemsize)
        assert why is None or "shared memory" in why
        assert cfg.threads * cfg.rk * cfg.rp == cfg.tk * cfg.th * cfg.tw
        assert cfg.ck <= spec.in_channels // spec.groups


def test_config_errors_are_clear():
    spec = ConvSpec.create((1, 4, 200, 200), 8, 31, dilation=5)
    assert "shared memory" in ck.choose_config(spec, 8).problem(spec, 8)
    assert "tk % rk" in ck.TileConfig(tk=6, rk=4).problem(spec, 4)
    assert "threads" in ck.TileConfig(tk=64, rk=1, th=16, tw=16, rp=1).problem(spec, 4)


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(max_hw=20, max_channels=6, allow_modes=False))
def test_picture_patch_is_what_the_tile_reads(case):
    """The patch drawn (and staged) is exactly the input rows/columns the tile's
    outputs read, counted by brute force from the convolution's definition."""
    from convlab.cuda_viz import block_footprint, thread_pixels

    input_shape, weight_shape, args, _ = case
    spec = ConvSpec.from_shapes(input_shape, weight_shape, **args)
    cfg = ck.TileConfig(tk=4, rk=2, th=3, tw=5, rp=3, ck=2)
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    top, left = spec.padding[0], spec.padding[2]
    for block in ((0, 0), (1, 2)):
        fp = block_footprint(spec, cfg, block)
        rows = {i * sh - top + p * dh for i in range(*fp["out_rows"]) for p in range(kh)}
        cols = {j * sw - left + q * dw for j in range(*fp["out_cols"]) for q in range(kw)}
        assert (min(rows), max(rows) + 1) == fp["in_rows"]
        assert (min(cols), max(cols) + 1) == fp["in_cols"]
    pixels = [px for t in range(cfg.th * cfg.tw // cfg.rp) for px in thread_pixels(cfg, t)]
    assert sorted(pixels) == [(r, c) for r in range(cfg.th) for c in range(cfg.tw)]


def test_picture_draws():
    import matplotlib

    matplotlib.use("Agg")
    from convlab.cuda_viz import draw_block_tile

    spec = ConvSpec.create((1, 3, 20, 22), 8, 3, padding=1, dilation=2)
    fig = draw_block_tile(spec, ck.TileConfig(8, 4, 8, 16, 4, 3), block=(0, 1), thread=5)
    assert "block (0, 1)" in fig.axes[1].get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_gpu_without_its_compiler_is_missing_with_how_to_fix(monkeypatch):
    """A driver that answers but no libNVVM: every launch would fail to compile, so the
    status says what is missing and how to get it (it used to say 'gpu')."""
    from numba import cuda
    from numba.cuda.cudadrv import libs, nvvm

    from convlab import system

    if ".simulator" in getattr(cuda.jit, "__module__", ""):
        pytest.skip("the simulator is on in this process")

    class Device:
        name = b"NVIDIA Stand-in"

    def no_nvvm(*args, **kwargs):
        raise OSError("libnvvm.so: cannot open shared object file")

    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "get_current_device", lambda: Device())
    monkeypatch.setattr(nvvm, "NVVM", no_nvvm)
    status = system.cuda_status()
    assert status.startswith("missing: a CUDA GPU (NVIDIA Stand-in) and its driver are here")
    assert "libNVVM cannot be loaded (OSError: libnvvm.so" in status
    assert "convlab[cuda]" in status and "CUDA_HOME" in status
    monkeypatch.setattr(nvvm, "NVVM", lambda: object())
    monkeypatch.setattr(libs, "get_libdevice", lambda: __file__)
    assert system.cuda_status() == "gpu: NVIDIA Stand-in"
    monkeypatch.setattr(libs, "get_libdevice", lambda: "/nonexistent/libdevice.10.bc")
    assert "libdevice" in system.cuda_status()


def test_kernels_are_built_with_launch_bounds_for_16_warps():
    """On a GPU (not the simulator) the tiled kernel's jit options cap its registers so
    MIN_WARPS_PER_SM warps fit: launch bounds with numba-cuda, max_registers otherwise."""
    from numba import cuda

    from convlab.kernels import _cuda_device as dev
    from convlab.occupancy import min_blocks, register_cap

    if ".simulator" in getattr(cuda.jit, "__module__", ""):
        assert dev.jit_options(224) == {}
        return
    for threads in (112, 224, 256, 448, 512):
        opts = dev.jit_options(threads)
        assert opts in ({"launch_bounds": (threads, min_blocks(threads, 16))},
                        {"max_registers": register_cap(threads, 16)})
    assert min_blocks(224, 16) == 3 and min_blocks(512, 16) == 1


def test_ptxas_report_is_parsed():
    from convlab.cuda_static import parse_ptxas

    log = ("ptxas info    : 0 bytes gmem\n"
           "ptxas info    : Function properties for _Z5tiled\n"
           "ptxas         .     112 bytes stack frame, 108 bytes spill stores, "
           "556 bytes spill loads\n"
           "ptxas info    : Used 80 registers, used 1 barriers, 112 bytes cumulative stack "
           "size, 23840 bytes smem\n")
    res = parse_ptxas(log)
    assert (res.registers, res.spill_stores, res.spill_loads, res.stack, res.smem) == (
        80, 108, 556, 112, 23840)
    with pytest.raises(ValueError, match="Used N registers"):
        parse_ptxas("ptxas fatal   : Unresolved extern function 'numba_attempt_nocopy_reshape'")


def test_cuda_static_without_the_compiler_is_one_line(monkeypatch, capsys):
    from convlab import cuda_static
    from convlab.cli import main

    monkeypatch.setattr(cuda_static, "toolchain_missing",
                        lambda: f"the numba-cuda package is not installed; "
                                f"{cuda_static.TOOLCHAIN_HINT}")
    assert main(["info", "--cuda-static"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'convlab[cuda]'" in lines[0]

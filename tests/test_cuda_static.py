"""The static report (`convlab info --cuda-static`): NVIDIA's compiler, run offline on
every kernel variant the dispatcher picks, says what a GPU would get.

Needs the compiler wheels (``pip install 'convlab[cuda]'``: numba-cuda with NVVM and
nvJitLink), no GPU.  Without them these tests skip and say so; CI installs only
``.[test,torch]`` (see the cuda extra in pyproject.toml for why).
"""

from __future__ import annotations

import pytest

from convlab import bench
from convlab.cuda_static import format_static_report, static_report, toolchain_missing
from convlab.kernels import cuda as ck

WHY = toolchain_missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no offline CUDA compiler: {WHY}")


def test_resnet_defaults_fill_the_sms_on_sm90_without_spills():
    """The issue's bar, from ptxas itself: every default ResNet tile on an H100/H200
    (sm_90) keeps >= FILL_WARPS_PER_SM warps per SM in its first wave, spills nothing,
    and fits its registers under the launch bounds (~40 s: 12 compiles)."""
    rows = static_report(("H100",), ("float32", "float64"))
    tiled = [r for r in rows if r.variant.kernel == "cuda_tiled"]
    assert len(tiled) == 2 * len(bench.SUITES["resnet"])
    report = format_static_report(rows)
    for r in tiled:
        assert r.problems == [], report
        assert r.resources.spill_stores == r.resources.spill_loads == 0
        assert r.resources.registers <= r.variant.cap
        assert r.warps_per_sm >= ck.MIN_WARPS_PER_SM
        assert r.resident_warps_per_sm >= ck.FILL_WARPS_PER_SM
        layer = next(la for la in bench.SUITES["resnet"] if la.name == r.variant.layer)
        itemsize = 8 if r.variant.dtype == "float64" else 4
        # the compiler's shared memory is the tile arithmetic's (what choose_config checks)
        assert r.resources.smem == ck.TileConfig(*r.variant.config).shared_bytes(
            layer.spec(8), itemsize)
    naive = [r for r in rows if r.variant.kernel == "cuda_naive"]
    assert naive and all(r.resources.spill_stores == 0 for r in naive)


def test_report_names_each_gpu_and_every_column():
    rows = static_report(("T4", "A100"), ("float32",), layers=bench.SUITES["resnet"][:1])
    text = format_static_report(rows)
    for words in ("T4 (sm_75, 40 SMs, 32 warps", "A100 (sm_80, 108 SMs, 64 warps",
                  "regs", "spill", "smem", "blk/SM", "warps/SM", "waves", "nvjitlink"):
        assert words in text, text
    assert {r.gpu for r in rows} == {"T4", "A100"}

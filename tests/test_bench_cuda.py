"""`convlab bench --device cuda`: on the CUDA simulator (in a subprocess), the refusal
without a GPU, and the GPU path's bookkeeping with a fake device (no GPU needed).

No timing assertions: the simulator's numbers say nothing about a GPU, and the fake
device's are made up.  What is checked is what was run, refused, gated and recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convlab import bench
from convlab.cli import main
from convlab.errors import UsageError
from convlab.kernels import cuda as ck
from convlab.kernels.registry import Placed
from convlab.reference import conv2d_reference

ROOT = Path(__file__).resolve().parent.parent
CALIB = {"peak_gflops": 100.0, "peak_what": "test GEMM", "bandwidth_gbs": 10.0,
         "bandwidth_what": "test copy"}
TINY = bench.TOY_SUITES["tiny"]


def _sim_bench(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`convlab bench ARGS` in a fresh process with the simulator on (numba reads
    NUMBA_ENABLE_CUDASIM once, at import: this process imported numba without it)."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    code = "import sys; from convlab.cli import main; sys.exit(main(['bench', *sys.argv[1:]]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_simulator_runs_the_tiny_suite_gated_with_transfers_apart(tmp_path):
    """The real command on the simulator (~15 s): every tiny layer gated against the
    oracle and timed, copies in and out recorded apart, cuDNN n/a with its reason."""
    out = tmp_path / "sim.json"
    proc = _sim_bench(["--device", "cuda", "--suite", "tiny", "--repeats", "1",
                       "--no-progress", "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = bench.load(out)
    assert res.settings["device"] == "cuda" and res.settings["suite"] == "tiny"
    assert res.calibration["peak_gflops"] is None  # no CPU ceiling for a GPU run
    assert res.kernels() == ["cuda_naive", "cuda_tiled", *bench.GPU_RIVALS]
    assert res.layers() == [la.name for la in TINY]
    for layer in TINY:
        for name in ("cuda_naive", "cuda_tiled"):
            r = res.get(layer.name, name)
            assert r.status == "ok", r.reason
            assert r.device == "cuda" and r.batch == layer.batch
            assert r.gate_batch == r.batch and r.max_rel_err <= r.tolerance  # the gate
            assert r.repeats == 1 and r.number >= 1
            assert r.h2d_s > 0 and r.d2h_s > 0 and r.median_s > 0
            assert r.min_s <= r.q1_s <= r.median_s <= r.q3_s <= r.max_s
            assert r.first_call_s > 0 and r.compile_s >= 0
            assert r.gflops == pytest.approx(r.flops / r.median_s / 1e9)
            assert r.peak_fraction is None and r.vs_cudnn is None
        tiled, naive = res.get(layer.name, "cuda_tiled"), res.get(layer.name, "cuda_naive")
        assert tiled.note.startswith("config (")
        assert tiled.vs_naive == pytest.approx(naive.median_s / tiled.median_s)
        for name in bench.GPU_RIVALS:  # torch has no CUDA, or it does but this is a simulator
            r = res.get(layer.name, name)
            assert r.status == "n/a" and ("CUDA" in r.reason or "simulator" in r.reason)
    rows = json.loads(out.read_text())["records"]
    assert {"h2d_s", "d2h_s", "vs_cudnn", "note"} <= set(rows[0])
    assert {"h2d_s", "d2h_s"} <= set(out.with_suffix(".csv").read_text().splitlines()[0]
                                     .split(","))
    table = proc.stdout
    for words in ("SIMULATOR", "copy in", "copy out", "x cudnn", "tiny_dil_same"):
        assert words in table, table


def test_simulator_skips_big_layers_with_the_estimate():
    """ResNet's layers would take hours on the simulator: skipped at once, with why."""
    proc = _sim_bench(["--device", "cuda", "--suite", "resnet", "--no-torch", "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("  cuda_")]
    assert len(rows) == 2 * len(bench.SUITES["resnet"])
    for line in rows:
        assert "skip: too slow here" in line and "CUDA simulator" in line, line
        assert "--suite tiny" in line


@pytest.mark.skipif(ck.cuda_unavailable() is None, reason="a GPU or the simulator is here")
def test_without_gpu_or_simulator_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.setattr(bench.ceilings, "calibrate",
                        lambda *a: pytest.fail("should not get this far"))
    assert main(["bench", "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    for words in ("CUDA kernels are unavailable here", "convlab[cuda]", "NVIDIA GPU",
                  "NUMBA_ENABLE_CUDASIM=1", "--suite tiny"):
        assert words in lines[0]
    with pytest.raises(ValueError, match="CUDA kernels are unavailable here"):
        bench.run_benchmark("tiny", device="cuda", progress=False)


@pytest.mark.skipif(bench.gpu.torch_cuda_unavailable() is None, reason="torch sees a GPU here")
def test_cudnn_without_torch_cuda_is_na_with_the_reason():
    """Only the rivals asked for: no numba CUDA kernel, so no refusal of the run."""
    res = bench.run_benchmark(layers=TINY[:1], kernel_names=list(bench.GPU_RIVALS),
                              device="cuda", progress=False)
    assert [r.status for r in res.records] == ["n/a", "n/a"]
    for r in res.records:
        assert r.reason.startswith(bench.gpu.torch_cuda_unavailable()) and "NVIDIA" in r.reason


def test_default_suite_is_tiny_on_the_simulator(monkeypatch, capsys):
    seen = {}

    def fake_run(suite, *args, **kwargs):
        seen["suite"], seen["device"] = suite, kwargs["device"]
        raise UsageError("stop here")  # main's one-line exit 2

    monkeypatch.setattr(bench, "check_device", lambda *a: None)
    monkeypatch.setattr(ck, "is_simulator", lambda: True)
    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    assert main(["bench", "--device", "cuda"]) == 2
    assert seen == {"suite": "tiny", "device": "cuda"}
    assert main(["bench"]) == 2 and seen["suite"] == "quick"
    capsys.readouterr()


# ----------------------------------------------------------------- a fake GPU
def _good(x, w, b, spec):
    return conv2d_reference(x, w, b, spec).astype(x.dtype)


def _fake_gpu(name: str, kernel_ms: float, calls: list[str], run=_good) -> bench.Contender:
    """A stand-in for a GPU contender: the harness's GPU bookkeeping (copies in and out
    apart, device timer, cuDNN ratios), fed by a made-up device."""

    def setup(x, w, b, spec):
        return Placed(lambda: run(x, w, b, spec), np.asarray, 5e-4, "fake")

    def timer(call, number):
        calls.append(name)
        return kernel_ms * 1e-3 * number

    return bench.Contender(name, "cuda", "fake", lambda spec: None, lambda spec, dtype: 1e-5,
                           setup, timer)


def test_gpu_records_hold_copies_events_and_cudnn_ratios():
    calls: list[str] = []
    fakes = [_fake_gpu("torch_fp32", 2.0, calls), _fake_gpu("torch_default", 0.5, calls)]
    res = bench.run_benchmark(layers=TINY[:2], kernel_names=fakes, device="cuda", repeats=7,
                              progress=False)
    assert calls == ["torch_fp32", "torch_default"] * 2 * 8  # warm-up + 7 samples, per layer
    for layer in TINY[:2]:
        fp32, default = res.get(layer.name, "torch_fp32"), res.get(layer.name, "torch_default")
        assert fp32.status == default.status == "ok"
        assert fp32.median_s == pytest.approx(2e-3) and fp32.max_s == pytest.approx(2e-3)
        assert fp32.h2d_s == pytest.approx(5e-4) and fp32.d2h_s >= 0
        assert fp32.repeats == 7 and fp32.number >= 1 and fp32.note == "fake"
        assert fp32.vs_cudnn == pytest.approx(1.0) and default.vs_cudnn == pytest.approx(4.0)
        assert fp32.gflops == pytest.approx(fp32.flops / 2e-3 / 1e9)
        # the first call's excess over a warm call and its copy back: the compile
        assert fp32.compile_s == pytest.approx(max(0.0, fp32.first_call_s - 2e-3 - fp32.d2h_s))
    table = bench.format_table(res)
    assert "copy in" in table and "x cudnn" in table and "% peak" not in table
    assert "geometric mean speed vs cuDNN (float32, TF32 off): torch_default 4x" in table


def test_gpu_path_gates_first_and_never_times_a_wrong_result():
    def flipped(x, w, b, spec):
        return _good(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, spec)

    calls: list[str] = []
    rec = bench.run_benchmark(layers=TINY[:1], kernel_names=[_fake_gpu("torch_fp32", 1.0, calls,
                                                                       run=flipped)],
                              device="cuda", progress=False).records[0]
    assert rec.status == "wrong" and "oracle" in rec.reason and calls == []
    assert rec.median_s is None


def test_gpu_names_are_known_and_cpu_runs_are_unchanged():
    assert bench.resolve_kernels(None, "cuda") == ["cuda_naive", "cuda_tiled",
                                                   *bench.GPU_RIVALS]
    assert bench.resolve_kernels(None, "cuda", rival=False) == ["cuda_naive", "cuda_tiled"]
    assert bench.resolve_kernels(["torch_default"], "cuda") == ["torch_default"]
    assert not set(bench.GPU_RIVALS) & set(bench.resolve_kernels(None, "cpu"))
    bench.check_device("cpu", ["cuda_naive"])  # a CPU run refuses nothing up front
    res = bench.run_benchmark(layers=TINY[:1], kernel_names=["naive"], calibration=CALIB,
                              repeats=2, progress=False)
    rec = res.records[0]
    assert rec.status == "ok" and rec.h2d_s is None and rec.q1_s is not None
    assert "% peak" in bench.format_table(res) and "copy in" not in bench.format_table(res)
    assert bench.suite_layers("tiny") == TINY
    assert bench.suite_layers("quick", ["tiny_dw_s2"]) == (TINY[1],)
    assert set(bench.TOY_SUITES) & set(bench.SUITES) == set()

"""scripts/gpu_check.py, the prepared check for a lent GPU, on the CUDA simulator.

What must hold before a GPU's 15 minutes are spent on it: the preflight stops at once
with the reason when the kernels cannot run; the random correctness specs run in the
tile configurations a GPU would use (not only the simulator's tiny tiles); every
layer's results are on disk as soon as the layer is done, so a killed run keeps them.
The script runs in a subprocess: numba reads NUMBA_ENABLE_CUDASIM once, at import.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convlab import bench
from convlab.kernels import cuda as ck
from convlab.reference import conv2d_reference

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"
TINY = [la.name for la in bench.TOY_SUITES["tiny"]]


def _env(sim: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "OUT")}
    return {**env, "NUMBA_ENABLE_CUDASIM": "1"} if sim else env


def _run(args: list[str], sim: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=_env(sim),
                          capture_output=True, text=True, timeout=900)


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sim_run_checks_random_specs_in_gpu_tiles_and_every_layer(tmp_path):
    """The whole script on the simulator (~35 s): preflight with versions, 12 random specs
    for both kernels with cuda_tiled in choose_config's tiles for a 132-SM GPU, then
    the tiny layers through the harness with a tile sweep, all recorded.  (On a real GPU
    it checks 30: figures/gpu/h200_gpu_check.json.)"""
    out = tmp_path / "gpu_check.json"
    proc = _run(["--sim", "--json", str(out), "--sweep", "1", "--cases", "12"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["complete"] and rec["all_right"] and rec["mode"] == "sim"
    pre = rec["preflight"]
    assert pre["ok"] and pre["error"] is None and pre["cuda"].startswith("simulator")
    assert pre["versions"]["numba"] and pre["cuda_tiled_first_call_s"] > 0
    rows = rec["correctness"]
    assert len(rows) == 24 and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    configs = {tuple(r["config"]) for r in rows if r["algo"] == "cuda_tiled"}
    assert tuple(ck.SIM_CONFIG) not in configs and len(configs) >= 5
    assert {r["dtype"] for r in rows} == {"float32", "float64"}
    assert [la["settings"]["layers"] for la in rec["layers"]] == [[n] for n in TINY]
    for layer in rec["layers"]:
        status = {r["kernel"]: r["status"] for r in layer["records"]}
        assert status["cuda_naive"] == status["cuda_tiled"] == "ok", layer["records"]
        assert status["torch_fp32"] == status["torch_default"] == "n/a"
        swept = [k for k in status if k.startswith("tiled(")]
        assert len(swept) == 1 and status[swept[0]] == "ok"
    assert "preflight: simulator" in proc.stdout and "24/24 right" in proc.stdout
    assert "tiled/cuDNN32" in proc.stdout  # the summary table


def test_a_killed_run_keeps_the_layers_it_finished(tmp_path):
    """Kill -9 as soon as the first layer is on disk: the record is whole JSON (written
    to a temporary file, then renamed) with that layer, and says it is incomplete."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--sim", "--json", str(out),
                             "--cases", "2", "--sweep", "1"], cwd=ROOT, env=_env(True),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, "the run ended before its first layer was written"
            assert time.monotonic() < deadline, "no layer written in 10 minutes"
            if out.exists() and json.loads(out.read_text())["layers"]:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    rec = json.loads(out.read_text())
    assert rec["complete"] is False and rec["preflight"]["ok"]
    assert len(rec["correctness"]) == 4 and all(r["ok"] for r in rec["correctness"])
    first = rec["layers"][0]
    assert first["settings"]["layers"] == [TINY[0]]
    assert {r["kernel"]: r["status"] for r in first["records"]}["cuda_tiled"] == "ok"


@pytest.mark.skipif(ck.cuda_unavailable() is None, reason="a GPU is here")
def test_preflight_stops_at_once_without_a_gpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = _run(["--json", str(out)], sim=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "STOP: " in proc.stdout and "no CUDA GPU found" in proc.stdout
    rec = json.loads(out.read_text())
    assert rec["preflight"]["ok"] is False and "convlab[cuda]" in rec["preflight"]["error"]
    assert "correctness" not in rec and rec["layers"] == []
    # --sim without the simulator, and the simulator without --sim: refused too
    proc = _run(["--sim"], sim=False)
    assert proc.returncode == 2 and "NUMBA_ENABLE_CUDASIM=1" in proc.stdout
    proc = _run([], sim=True)
    assert proc.returncode == 2 and "pass --sim" in proc.stdout


def test_preflight_stops_when_the_tiny_launch_fails_or_is_wrong(monkeypatch, tmp_path):
    """In-process, with the kernels replaced: a launch that raises, or one that gives a
    flipped kernel's answer, stops the run before anything else is spent."""
    gc = _load_script()
    monkeypatch.setattr(gc.ck, "cuda_unavailable", lambda: None)
    monkeypatch.setattr(gc.ck, "is_simulator", lambda: True)
    monkeypatch.setattr(gc.ck, "status", lambda: "simulator (a stand-in)")

    class Wrong:
        def __call__(self, x, w, b, spec):
            return conv2d_reference(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, spec)

        def tolerance(self, spec, dtype):
            return 1e-5

    class Broken(Wrong):
        def __call__(self, x, w, b, spec):
            raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED")

    for fake, words in ((Wrong(), "gave a wrong result"), (Broken(), "the tiny launch failed")):
        monkeypatch.setattr(gc.kernels, "get", lambda name, fake=fake: fake)
        run = gc.Run(str(tmp_path / "r.json"), 60.0, sim=True)
        why = gc.preflight(run)
        assert why is not None and words in why
        rec = json.loads((tmp_path / "r.json").read_text())
        assert rec["preflight"]["ok"] is False and words in rec["preflight"]["error"]

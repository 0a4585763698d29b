"""The harness's backward ops (convlab bench --backward): backward (name-bwd) and transposed
(name-tr) contenders gated against the float64 backward oracle, sampled with the forward,
ratios within one op, records/JSON/table carrying the op.  No timing assertions."""

from __future__ import annotations

import numpy as np
import pytest

from convlab import bench, kernels
from convlab.bench.contenders import Contender
from convlab.cli import main
from convlab.kernels.registry import Placed

CALIB = {"peak_gflops": 100.0, "peak_what": "test GEMM", "bandwidth_gbs": 10.0,
         "bandwidth_what": "test copy"}
TINY = (bench.Layer("tiny_b", 3, (7, 6), 4, 3, stride=2, padding=1, batch=3),)
OPS = ("forward", "backward", "transpose")


def _run(names, layers=TINY, **kw):
    return bench.run_benchmark(layers=layers, kernel_names=names, calibration=CALIB,
                               repeats=2, progress=False, ops=OPS, **kw)


def test_every_op_is_gated_and_timed():
    res = _run(["naive", "parallel"])
    by = {r.kernel: r for r in res.records}
    assert set(by) == {"naive", "parallel", "naive-bwd", "parallel-bwd", "naive-tr",
                       "parallel-tr"}
    for r in res.records:
        assert r.status == "ok", (r.kernel, r.reason)
        assert r.max_rel_err <= r.tolerance and r.median_s > 0
    assert {r.op for r in res.records} == set(OPS)
    fwd, bwd = by["naive"], by["naive-bwd"]
    assert bwd.flops == 2 * fwd.flops and by["naive-tr"].flops == fwd.flops
    assert by["parallel-bwd"].vs_naive == pytest.approx(bwd.median_s /
                                                        by["parallel-bwd"].median_s)
    assert res.settings["ops"] == list(OPS)
    table = bench.format_table(res)
    assert "naive-bwd" in table and "parallel-tr" in table and "ops:" in table


def test_default_names_skip_algorithms_without_backward():
    res = _run(None, rival=False)
    labels = {r.kernel for r in res.records}
    assert "winograd_f4" in labels and "naive-bwd" in labels and "im2col-tr" in labels
    assert not any(lab.startswith(("winograd", "python")) and lab.endswith(("-bwd", "-tr"))
                   for lab in labels)


def test_named_kernel_without_backward_is_na():
    res = _run(["winograd_f2"])
    rec = next(r for r in res.records if r.kernel == "winograd_f2-bwd")
    assert rec.status == "n/a" and "no grad_input or grad_weight kernel" in rec.reason


def _backward_contender(name, wrong):
    gi, gw = kernels.get("naive", "grad_input"), kernels.get("naive", "grad_weight")

    def setup(x, w, b, go, spec):
        def call():
            gx, gwt = gi.run(go, w, spec), gw.run(x, go, spec)
            if wrong == "flip":  # the kernel not flipped in grad_input
                gx = gi.run(go, np.ascontiguousarray(w[:, :, ::-1, ::-1]), spec)
            if wrong == "bias":
                return gx, gwt, go.sum(axis=(2, 3))[0]
            return gx, gwt, go.sum(axis=(0, 2, 3))

        return Placed(call, lambda out: out)

    return Contender(name + "-bwd", "cpu", "a stand-in", lambda s: None,
                     lambda s, d: (1e-5, 1e-5, 1e-5), setup, op="backward")


@pytest.mark.parametrize("wrong, part", [("flip", "grad_input"), ("bias", "grad_bias")])
def test_a_wrong_backward_is_never_timed(wrong, part):
    res = _run(["naive", _backward_contender("bad", wrong)])
    rec = next(r for r in res.records if r.kernel == "bad-bwd")
    assert rec.status == "wrong" and part in rec.reason and rec.median_s is None
    assert next(r for r in res.records if r.kernel == "naive-bwd").status == "ok"


def test_transpose_needs_symmetric_padding():
    layer = bench.Layer("asym", 3, (6, 7), 2, (2, 3), padding="same", batch=2)
    res = _run(["naive"], layers=(layer,))
    assert next(r for r in res.records if r.kernel == "naive-bwd").status == "ok"
    rec = next(r for r in res.records if r.kernel == "naive-tr")
    assert rec.status == "n/a" and "pads symmetrically" in rec.reason


def test_json_keeps_the_op(tmp_path):
    res = _run(["naive"])
    json_path, _ = res.save(tmp_path / "r.json")
    back = bench.load(json_path)
    assert [(r.kernel, r.op) for r in back.records] == [(r.kernel, r.op) for r in res.records]


def test_backward_with_torch_pairs_ratios_within_the_op():
    pytest.importorskip("torch")
    res = _run(["parallel", "torch"])
    by = {r.kernel: r for r in res.records}
    for label in ("torch", "torch-bwd", "torch-tr"):
        assert by[label].status == "ok", by[label].reason
    for ours, theirs in (("parallel-bwd", "torch-bwd"), ("parallel-tr", "torch-tr")):
        assert by[ours].vs_torch == pytest.approx(by[theirs].median_s / by[ours].median_s)


def test_cli_backward(capsys, monkeypatch):
    monkeypatch.setattr(bench.ceilings, "calibrate", lambda *a: dict(CALIB))
    assert main(["bench", "--backward", "--suite", "tiny", "--layers", "tiny_3x3",
                 "--kernels", "naive", "--repeats", "1", "--no-torch", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "naive-bwd" in out and "naive-tr" in out
    assert main(["bench", "--backward", "--device", "cuda"]) == 2
    assert "--backward runs on the CPU only" in capsys.readouterr().err


@pytest.mark.parametrize("weight_cache", [False, True])
def test_auto_backward_runs_the_planned_kernels(weight_cache):
    """auto-bwd / auto-tr time the grad_input and grad_weight kernels the plan picks (the
    note names them), gated against the oracle like every contender; with the weight
    cache the grad_input kernel's transform is made in setup, as Conv2d keeps it."""
    from convlab.plan import plan
    layer = bench.Layer("w3", 32, (9, 10), 128, 3, padding=1, batch=2)  # polyphase's ground
    res = _run(["auto"], layers=(layer,), weight_cache=weight_cache)
    by = {r.kernel: r for r in res.records}
    spec = layer.spec(2)
    the_plan = plan(spec, np.float32, cached=weight_cache)
    names = (the_plan.choice("grad_input").kernel.name, the_plan.choice("grad_weight").kernel.name)
    assert by["auto-bwd"].status == "ok", by["auto-bwd"].reason
    assert by["auto-bwd"].note == f"ran {names[0]}+{names[1]}"
    assert by["auto-tr"].status == "ok" and by["auto-tr"].note == f"ran {names[0]}"

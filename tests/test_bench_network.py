"""The network benchmark (convlab/bench/models.py, network.py, ``convlab bench --model``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from convlab import plan as planmod
from convlab.bench import models, network
from convlab.kernels import KERNELS, kernels_for

pytest.importorskip("torch")

# the papers' conv counts: ResNet-18 = 1 stem + 16 in blocks + 3 shortcuts; MobileNetV2 =
# stem + 17 blocks (the first has no expansion: 2 convs, the others 3) + last 1x1; VGG-16 = 13
COUNTS = {"resnet18": 20, "mobilenet_v2": 1 + 2 + 16 * 3 + 1, "vgg16": 13}


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("quick", [False, True])
def test_shapes_chain_layer_to_layer(name, quick):
    net = models.build(name, quick)
    assert len(net.nodes) == COUNTS[name]
    size = models.QUICK_SIZE if quick else 224
    assert net.input_shape == (3, size, size)
    for i, node in enumerate(net.nodes):
        la = node.layer
        assert node.source < i
        if node.source == models.INPUT:
            c, h, w = net.input_shape
        else:
            src = net.nodes[node.source].layer.spec(1)
            c, h, w = src.out_channels, src.out_height, src.out_width
        if node.subsample:
            h, w = -(-h // 2), -(-w // 2)
        assert (la.in_channels, *la.size) == (c, h, w), la.name


def test_full_size_layers_match_the_papers():
    res = {n.layer.name.split(".")[-1]: n.layer for n in models.build("resnet18").nodes}
    assert res["conv1"].describe() == "7x7 3->64 @224x224 s2"
    assert res["down3"].describe() == "1x1 64->128 @56x56 s2"
    assert res["conv5_2b"].describe() == "3x3 512->512 @7x7"
    mb = models.build("mobilenet_v2").nodes
    dw = [n.layer for n in mb if n.layer.groups > 1]
    assert sorted({la.in_channels for la in dw}) == [32, 96, 144, 192, 384, 576, 960]
    assert mb[-1].layer.describe() == "1x1 320->1280 @7x7"
    vgg = models.build("vgg16").nodes
    assert [n.layer.out_channels for n in vgg] == [64, 64, 128, 128] + [256] * 3 + [512] * 6


def test_model_names():
    assert models.model_names("all") == list(models.MODELS)
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        models.model_names("resnet50")


@pytest.mark.slow
def test_quick_training_run_json_fields_and_kernels(tmp_path):
    result = network.run_networks(["vgg16"], quick=True, passes=1, train=True, progress=False)
    json_path, csv_path = result.save(tmp_path / "net.json")
    back = network.load(json_path)
    nets = {r.op: r for r in back.networks()}
    assert set(nets) == {"step", "forward", "backward"}
    for op in ("forward", "backward"):
        net = nets[op]
        assert net.status == "ok" and net.passes == 1
        assert net.vs_torch == pytest.approx(net.torch_s / net.convlab_s)
        layers = back.layers("vgg16", op)
        assert len(layers) == 13
        for r in layers:
            names = r.kernel.split("+")
            assert len(names) == (2 if op == "backward" else 1)
            tables = (KERNELS,) if op == "forward" else (kernels_for("grad_input"),
                                                          kernels_for("grad_weight"))
            assert all(n in t for n, t in zip(names, tables)), r.kernel
            assert r.convlab_s > 0 and r.torch_s > 0 and r.max_rel_err <= r.tolerance
        # layers are timed inside the pass: together at most the pass
        assert sum(r.convlab_s for r in layers) <= net.convlab_s * 1.0001
    assert nets["step"].convlab_s == pytest.approx(nets["forward"].convlab_s
                                                   + nets["backward"].convlab_s)
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header == network.ROW_FIELDS
    assert "vgg16 forward" in network.format_network_table(back)


def test_a_wrong_kernel_is_reported_and_never_timed(monkeypatch):
    good = KERNELS["parallel"]  # auto's pick for quick VGG's first layers (3 -> 8 channels)

    def off_by_a_bit(x, weight, bias, spec, **kw):
        out = good.run(x, weight, bias, spec, **kw)
        out[0, 0, 0, 0] += 1.0
        return out

    monkeypatch.setitem(KERNELS, "parallel", dataclasses.replace(good, run=off_by_a_bit))
    planmod.forget()  # the entry was replaced behind the registry's back: plan afresh
    try:
        result = network.run_networks(["vgg16"], quick=True, passes=1, progress=False)
    finally:
        monkeypatch.undo()
        planmod.forget()
    (net,) = result.networks()
    assert net.status == "wrong" and "'parallel'" in net.reason
    assert net.convlab_s is None and net.torch_s is None
    wrong = [r for r in result.layers("vgg16") if r.status == "wrong"]
    assert wrong and all(r.kernel == "parallel" for r in wrong)
    assert all(r.convlab_s is None for r in result.layers("vgg16"))


def test_command_runs_in_a_fresh_process_with_numpy_first(tmp_path, capsys):
    from convlab.cli import main

    out = tmp_path / "net.json"
    assert main(["bench", "--model", "vgg16", "--quick", "--passes", "1", "--out", str(out),
                 "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["settings"]["import_order"] == "numpy-first"
    assert {r["op"] for r in data["rows"]} == {"forward"}
    assert np.isfinite([r["vs_torch"] for r in data["rows"]]).all()


def test_command_refuses_layer_options_with_model(capsys):
    from convlab.cli import main

    assert main(["bench", "--model", "vgg16", "--suite", "resnet"]) == 2
    assert "does not take --suite" in capsys.readouterr().err
    assert main(["bench", "--import-order", "numpy-first"]) == 2
    assert "--import-order only goes with --model" in capsys.readouterr().err

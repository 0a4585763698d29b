"""The README's network table is the committed network records (figures/network*.json),
not numbers typed by hand: every ratio and time in it is recomputed here."""

from __future__ import annotations

import re
from pathlib import Path

from convlab.bench import network

ROOT = Path(__file__).resolve().parent.parent
NAMES = {"resnet18": "ResNet-18, batch 8", "mobilenet_v2": "MobileNetV2, batch 8",
         "vgg16": "VGG-16, batch 1"}


def _rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- network-table:")[1].split("\n\n")[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and re.match(r"(ResNet|MobileNet|VGG)", cells[0]):
            rows[cells[0]] = cells
    return rows


def _forward(path: str) -> dict[str, network.Row]:
    result = network.load(ROOT / "figures" / path)
    assert all(r.status == "ok" for r in result.rows)
    return {r.network: r for r in result.networks() if r.op == "forward"}


def test_readme_network_table_is_the_records():
    rows = _rows()
    first, second = _forward("network.json"), _forward("network_convlab_first.json")
    assert first and second
    for net, label in NAMES.items():
        row = next(v for k, v in rows.items() if k.startswith(label))
        a, b = first[net], second[net]
        assert row[1:] == [f"{a.convlab_s * 1e3:.0f}", f"{a.torch_s * 1e3:.0f}",
                           f"{a.vs_torch:.2f}x", f"{b.vs_torch:.2f}x"], (net, row)
    step = next(r for r in network.load(ROOT / "figures" / "network_train.json").networks()
                if r.op == "step")
    row = next(v for k, v in rows.items() if "training step" in k)
    assert row[1:4] == [f"{step.convlab_s * 1e3:.0f}", f"{step.torch_s * 1e3:.0f}",
                        f"{step.vs_torch:.2f}x"]


def test_the_records_say_how_they_were_made():
    for path, order in (("network.json", "numpy-first"),
                        ("network_convlab_first.json", "convlab-first")):
        result = network.load(ROOT / "figures" / path)
        assert result.settings["import_order"] == order and not result.settings["quick"]
        assert result.settings["threads"] == 2 and result.settings["passes"] >= 3
        assert {r.network for r in result.networks()} == set(NAMES)

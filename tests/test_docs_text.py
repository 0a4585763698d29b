"""What the README, the CLI's help and the notebooks say, held to what the code has: every
exercise and kernel named, every suite listed, typed sentences that used to be false.
Structural assertions on the text and the notebooks' JSON (no notebook is run here;
tests/test_notebooks.py runs them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import convlab.exercises as ex
from convlab import kernels
from convlab.bench.suites import SUITES, SWEEPS, TOY_SUITES
from convlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


def _text(path: Path) -> str:
    return "\n".join(_cells(path))


def test_readme_names_every_exercise():
    sentence = _readme().split("convlab.exercises.ALL` lists")[1].split("See")[0]
    for exercise in ex.ALL:
        assert f"`{exercise.name}`" in sentence, exercise.name


def test_readme_opening_names_every_kernel_family():
    opening = _readme().split("## ")[0]
    for words in ("pure-Python", "@njit", "im2col", "F(2x2,3x3)", "F(4x4,3x3)", "F(6x6,3x3)",
                  "prange", "depthwise", "FFT", "CUDA"):
        assert words in opening, words
    # every registered forward kernel's family is one of those
    families = {"python": "pure-Python", "naive": "@njit", "im2col": "im2col",
                "winograd_f2": "F(2x2", "winograd_f4": "F(4x4", "winograd_f6": "F(6x6",
                "parallel": "prange", "depthwise": "depthwise", "fft": "FFT",
                "cuda_naive": "CUDA", "cuda_tiled": "CUDA"}
    assert set(kernels.KERNELS) <= set(families), set(kernels.KERNELS) - set(families)


def _bench_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return " ".join(sub.choices["bench"].format_help().split())


def test_bench_help_lists_every_suite():
    text = _bench_help()
    for name in [*SUITES, *SWEEPS, *TOY_SUITES]:
        assert re.search(rf"\b{name}\b", text), name
    assert "kernels" in text.split("--suite SUITE")[-1].split("--layers")[0]


@pytest.mark.parametrize("folder", ["exercises", "exercises/source"])
def test_exercise_sections_carry_their_notebooks_number(folder):
    for path in sorted((NOTEBOOKS / folder).glob("*.ipynb")):
        number = int(path.name.split("_")[0])
        for head in re.findall(r"^## (\d+)\.\d+ ", _text(path), flags=re.M):
            assert int(head) == number, (path.name, head)
        for ref in re.findall(r"Solve (\d+)\.\d+ first", _text(path)):
            assert int(ref) == number, (path.name, ref)

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
                "cuda_naive": "CUDA", "cuda_tiled": "CUDA", "pointwise": "1x1 convolutions",
                "banded": "strided layers"}
    for word in set(families.values()):
        assert word in opening, word
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


# ------------------------------------------------------------ notebook sentences (issue 27)
NB = {p.name[:2]: p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}


def test_01_same_padding_total_depends_on_dilation_too():
    text = _text(NB["01"])
    assert "with an even kernel that total is odd" not in text
    # the sentence's own example holds: k=4, d=2 needs an even total
    assert "k=4, d=2" in text and 2 * (4 - 1) % 2 == 0


def test_02_same_with_a_stride_is_refused_by_pytorch():
    text = _text(NB["02"])
    assert "forces stride 1, as PyTorch does" not in text
    assert "PyTorch refuses `padding='same'`" in text
    with pytest.raises(ValueError, match="same"):  # and convlab, like PyTorch
        from convlab import ConvSpec
        ConvSpec.from_shapes((1, 1, 8, 8), (1, 1, 3, 3), stride=2, padding="same")


def test_04_blowup_is_the_bound_not_the_stems_factor():
    text = _text(NB["04"])
    assert "`im2col.blowup(spec)` is that\nfactor" not in text
    from convlab import ConvSpec
    from convlab.kernels import im2col
    stem = ConvSpec.create((8, 3, 224, 224), 64, 7, 2, 3)
    rows, cols = im2col.column_shape(stem, stem.batch)
    assert im2col.blowup(stem) == 49 and round(rows * cols / (8 * 3 * 224 * 224)) == 12
    assert "49 for the stem" in text


def test_04_explains_the_whole_kernel_against_its_two_steps():
    code = _text(NB["04"])
    assert "kernel.stages(" in code and "the sum of those two steps" in code


def test_04_auto_section_shows_the_rule_not_the_tuning_file():
    """explain()/auto read the tuning file; the notebook must read the same on a fresh
    machine and after `convlab tune`: it prints and asserts the rule only."""
    nb = json.loads(NB["04"].read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "convlab.explain(" not in code and "tuning" not in code
    assert "convlab.kernels.choose(" in code
    assert 'algo="auto"' not in code and "algo='auto'" not in code


def test_09_sentences_match_the_pictures_and_layers():
    text = _text(NB["09"])
    assert '"no padding, strides, transposed": 3x3 input' not in text
    assert "which has a\n2x2 input" in text
    assert "with the inserted zeros on a stride-2 layer.)" not in text


def test_10_counts_the_multiply_adds_it_quotes():
    text = _text(NB["10"])
    assert "A few thousand multiply-adds" not in text
    assert "About 25,600 multiply-adds per image" in text
    assert "macs == 8 * 9 * 8 * 8 + 16 * 8 * 9 * 4 * 4 + 256 * 10 == 25_600" in text


def test_11_no_claim_that_tiles_divide_the_output_or_run_at_peak():
    text = _text(NB["11"])
    assert "divides the output evenly" not in text
    assert "runs at\nclose to the machine's peak" not in text
    # neither tile of the question divides the 56 outputs
    assert 56 % (32 - 6) and 56 % (36 - 6)


def test_notebooks_readme_names_what_the_notebooks_extra_brings():
    import tomllib
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["notebooks"]
    readme = (NOTEBOOKS / "README.md").read_text().lower()
    for requirement in extra:
        name = re.split(r"[<>=\[ ]", requirement)[0]
        words = {"jupyterlab": "jupyterlab", "voila": "voila"}.get(name, name)
        assert words in readme, name


def test_error_report_says_its_tolerance_is_relative():
    from convlab.reference import ErrorReport
    text = str(ErrorReport(1e-6, 1e-7, True, 1e-5))
    assert "(tolerance 1e-05, relative to max(1, max |oracle|))" in text


def _code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]
            if c["cell_type"] == "code"]


def test_08_ladder_uses_a_real_layer_and_checks_for_a_busy_machine():
    code = _code_cells(NB["08"])
    ladder = next(c for c in code if "plots.ladder_plot(" in c)
    assert "plots.ladder_plot(result)" not in ladder  # the layer is chosen, not defaulted
    assert "name != bench.SEED.name" in ladder
    # a systematic slow-down: CPU accounting during the run, and a second measurement
    assert any("CpuShare()" in c and "busy_share = " in c for c in code)
    assert "recheck = bench.run_benchmark(" in ladder and "1.25 * fast" in ladder
    assert "NOTE: the machine was busy" in ladder


def test_08_auto_comparison_says_slower_and_counts_noise():
    text = _text(NB["08"])
    assert "was within 5 % of the fastest" not in text
    assert "no more than 5 % slower than the fastest" in text
    section = next(c for c in _code_cells(NB["08"]) if "close, noise, rows" in c)
    assert "noise += 1" in section


@pytest.mark.parametrize("key", ["04", "08"])
def test_notebook_reads_the_same_whatever_the_tuning_file_holds(key):
    """Everything that asks auto (explain, tuning.choose/tune, algo='auto', the harness's
    auto contender) runs after the notebook points CONVLAB_TUNE_CACHE at an empty file of
    its own (08), or the notebook asks the rule only (04)."""
    code = _code_cells(NB[key])
    asks = [i for i, c in enumerate(code)
            if re.search(r"explain\(|tuning\.(choose|tune)\(|algo=.auto|\"auto\"", c)]
    if key == "04":
        assert asks == []
        return
    sets = next(i for i, c in enumerate(code)
                if "os.environ[tuning.CACHE_ENV] = str(Path(tempfile.mkdtemp())" in c)
    assert sets == 0 and all(i > sets for i in asks)
    last = max(asks)
    assert "os.environ[tuning.CACHE_ENV] = USER_TUNING" in code[last]  # put back after use

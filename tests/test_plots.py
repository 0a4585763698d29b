"""Plots and figures are drawn from saved records, never by timing again.

One tiny benchmark is run per module and saved; every test then draws from the
JSON file with the harness's timers and runner replaced by ones that fail.
"""

from __future__ import annotations

import sys
import types

import pytest
from matplotlib.figure import Figure

from convlab import bench, figures, plots
from convlab.kernels.registry import KERNELS, register
from convlab.reference import conv2d_reference

CALIB = {"peak_gflops": 100.0, "peak_what": "test GEMM", "bandwidth_gbs": 10.0,
         "bandwidth_what": "test copy"}
LAYERS = (
    bench.Layer("tiny_a", 3, (6, 7), 4, 3, padding=1, batch=2),
    bench.Layer("tiny_b", 4, (9, 8), 6, 1, stride=2, batch=3),
)
PNG = b"\x89PNG\r\n\x1a\n"
WRONG = "plots_test_wrong"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved run: naive, python, a wrong kernel (error plot), torch if installed."""

    def wrong(x, w, b, spec):
        return (conv2d_reference(x, w, b, spec) * 1.01).astype(x.dtype)

    register(WRONG, description="deliberately 1% off")(wrong)
    try:
        names = ["python", "naive", WRONG] + ([bench.RIVAL] if bench.torch_available() else [])
        res = bench.run_benchmark(layers=LAYERS, kernel_names=names, repeats=2,
                                  calibration=CALIB, progress=False)
    finally:
        KERNELS.pop(WRONG, None)
    path = tmp_path_factory.mktemp("bench") / "r.json"
    res.save(path)
    return path


@pytest.fixture(autouse=True)
def no_timing(monkeypatch):
    """Anything that would time again fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("plots must not time anything")

    for name in ("run_benchmark", "calibrate", "measure_peak", "measure_bandwidth",
                 "run_in_fresh_process"):
        monkeypatch.setattr(bench, name, fail)
    monkeypatch.setattr(bench.run, "run_benchmark", fail)
    monkeypatch.setattr(bench.ceilings, "calibrate", fail)
    monkeypatch.setattr(bench.timing.Timing, "take", fail)


@pytest.mark.parametrize("name", list(plots.PLOTS))
def test_each_plot_is_written_from_saved_records(saved, tmp_path, name):
    out = tmp_path / f"{name}.png"
    fig = plots.PLOTS[name](saved, path=out)
    assert isinstance(fig, Figure)
    assert out.read_bytes()[:8] == PNG
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_ylabel() and ax.get_xlabel()
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "measured on" in texts  # the machine, in a footnote


def test_gflops_plot_has_torch_series_and_peak_line(saved):
    fig = plots.gflops_plot(saved)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "naive" in labels and any("peak" in lab for lab in labels)
    assert WRONG not in labels  # a wrong kernel is never timed, so never plotted
    if bench.torch_available():
        assert plots.RIVAL_LABEL in labels


def test_ladder_labels_each_step_with_its_factor(saved):
    res = bench.load(saved)
    fig = plots.ladder_plot(res, layer="tiny_a")
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[:2] == ["python", "naive"]
    factors = [t.get_text() for t in ax.texts if t.get_text()[:1] in "×÷"]
    assert len(factors) == len(ticks) - 1
    expected = res.get("tiny_a", "python").median_s / res.get("tiny_a", "naive").median_s
    assert factors[0] == f"×{plots._number(expected)}"
    assert ax.get_yscale() == "log"


def test_roofline_uses_the_measured_ceilings(saved):
    fig = plots.roofline_plot(saved)
    ax = fig.axes[0]
    ceiling = ax.lines[0].get_ydata()
    assert max(ceiling) == pytest.approx(100.0)  # the peak in the saved calibration
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_error_plot_marks_the_wrong_kernel(saved):
    fig = plots.error_plot(saved)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert WRONG in ticks
    assert "failed the gate" in fig.axes[0].get_legend_handles_labels()[1]


def test_plots_refuse_results_with_nothing_timed(saved, tmp_path):
    res = bench.load(saved)
    res.records = [r for r in res.records if r.kernel == WRONG]
    for fn in (plots.roofline_plot, plots.compile_plot, plots.ladder_plot):
        with pytest.raises(ValueError):
            fn(res)


def test_figures_skip_viz_with_a_note_when_it_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "convlab.viz", None)  # import now raises ImportError
    notes: list[str] = []
    assert figures.build_viz(tmp_path, notes.append) == []
    assert "convlab.viz not importable" in notes[0]


def test_figures_draw_what_viz_has_and_name_what_it_lacks(tmp_path, monkeypatch):
    fake = types.ModuleType("convlab.viz")
    fake.grid_spec = lambda *a, **k: None

    def draw_conv(spec, output):
        fig = Figure(figsize=(2, 2))
        fig.add_subplot().set_title("fake")
        return fig

    fake.draw_conv = draw_conv
    monkeypatch.setitem(sys.modules, "convlab.viz", fake)
    notes: list[str] = []
    written = figures.build_viz(tmp_path, notes.append)
    drawn = {p.name for p in written}
    assert "arith_no_padding.png" in drawn and "im2col.png" not in drawn
    assert any("im2col.png skipped" in n and "draw_im2col" in n for n in notes)
    assert (tmp_path / "arith_no_padding.png").read_bytes()[:8] == PNG

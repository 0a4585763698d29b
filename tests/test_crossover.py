"""The crossover figure: drawn from saved sweep records (never timed again), the
multiply counts computed independently, the crossover read from the data."""

from __future__ import annotations

import dataclasses
import math

import pytest
from matplotlib.figure import Figure

from convlab import bench, figures, plots
from convlab.bench.suites import SWEEPS

CALIB = {"peak_gflops": 100.0, "peak_what": "test GEMM", "bandwidth_gbs": 10.0,
         "bandwidth_what": "test copy"}
SWEEP = tuple(bench.Layer(f"t{k}", 3, (9, 11), 4, k, padding="same", batch=2) for k in (1, 3, 5))
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    res = bench.run_benchmark(layers=SWEEP, kernel_names=["naive", "fft", "winograd_f4"],
                              repeats=2, calibration=CALIB, progress=False, rival=False)
    path = tmp_path_factory.mktemp("sweep") / "bench_kernels.json"
    res.save(path)
    return path


def test_crossover_plot_is_drawn_from_the_records(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("re-timed"))
    out = tmp_path / "c.png"
    fig = plots.crossover_plot(saved, path=out)
    assert isinstance(fig, Figure) and out.read_bytes()[:8] == PNG
    times, work = fig.axes
    assert times.get_yscale() == work.get_yscale() == "log"
    assert [t.get_text() for t in times.get_xticklabels()] == ["1", "3", "5"]
    res = bench.load(saved)
    lines = {line.get_label(): line for line in times.get_lines()}
    for name in ("naive", "fft"):  # each kernel's medians, in ms, at its kernel sizes
        expected = [res.get(f"t{k}", name).median_s * 1e3 for k in (1, 3, 5)]
        assert list(lines[name].get_ydata()) == pytest.approx(expected)
    wino = lines["winograd_f4"]  # a 3x3-only algorithm: one point
    assert list(wino.get_xdata()) == [3]
    assert "measured on" in " ".join(t.get_text() for t in fig.texts)


def test_multiply_counts_are_the_algorithms(saved):
    fig = plots.crossover_plot(saved)
    counts = {line.get_label(): line for line in fig.axes[1].get_lines()}
    # direct convolution: N * K * C * k * k * Ho * Wo ('same': Ho, Wo = 9, 11)
    direct = [2 * 4 * 3 * k * k * 9 * 11 / 1e9 for k in (1, 3, 5)]
    assert list(counts["direct (parallel, im2col)"].get_ydata()) == pytest.approx(direct)
    # Winograd F(4,3) at 3x3: 36 multiplies per 4x4 output tile and (c, k) pair
    tiles = 2 * math.ceil(9 / 4) * math.ceil(11 / 4)
    assert list(counts["Winograd F(4,3)"].get_ydata()) == pytest.approx([tiles * 36 * 12 / 1e9])
    # FFT: 4 real multiplies per complex product, per bin, tile and (c, k)
    specs = plots.sweep_specs(saved)
    from convlab.kernels import fft

    for k, got in zip((1, 3, 5), counts["FFT products"].get_ydata(), strict=True):
        pl = fft.plan(specs[f"t{k}"])
        n_tiles = 2 * pl.tiles[0] * pl.tiles[1]
        assert got == pytest.approx(4 * n_tiles * pl.tile[0] * (pl.tile[1] // 2 + 1) * 12 / 1e9)


def _fake(times: dict[int, dict[str, float]]) -> bench.BenchResult:
    """A sweep result with chosen medians: kernel size -> {kernel: seconds}."""
    layers = {k: bench.Layer(f"k{k}", 2, (8, 8), 2, k, padding="same") for k in times}
    records = [bench.Record(layer=f"k{k}", layer_desc="", kernel=name, device="cpu",
                            dtype="float32", batch=1, status="ok", median_s=t)
               for k, by in times.items() for name, t in by.items()]
    settings = {"layer_args": {la.name: dataclasses.asdict(la) for la in layers.values()},
                "dtype": "float32"}
    return bench.BenchResult({}, dict(CALIB), settings, records)


def test_crossover_is_where_fft_stays_fastest():
    res = _fake({3: {"parallel": 1.0, "fft": 2.0, "torch": 0.5},
                 5: {"parallel": 2.0, "fft": 1.5, "torch": 0.5},  # fastest, but not for good
                 7: {"parallel": 3.0, "fft": 3.5, "torch": 0.5},
                 9: {"parallel": 4.0, "fft": 2.0, "torch": 0.5},  # torch does not count
                 11: {"parallel": 5.0, "fft": 2.0}})
    assert plots.crossover(res) == 9
    res.records = [r for r in res.records if not (r.layer == "k11" and r.kernel == "fft")]
    assert plots.crossover(res) is None  # not measured at the largest size: no crossover


def test_a_result_that_is_not_a_sweep_is_refused():
    res = _fake({3: {"fft": 1.0}})
    with pytest.raises(ValueError, match="differ in kernel size"):
        plots.crossover_plot(res)


def test_figures_draw_the_crossover_from_a_sibling_sweep(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "run_in_fresh_process", lambda *a, **k: pytest.fail("re-timed"))
    notes: list[str] = []
    out = tmp_path / "figs"
    out.mkdir()
    written = figures.build_sweep(out, source=saved.with_name("bench.json"), log=notes.append)
    assert [p.name for p in written] == ["bench_kernels.json", "bench_kernels.csv",
                                         "crossover.png"]
    assert (out / "crossover.png").read_bytes()[:8] == PNG
    assert figures.build_sweep(out, source=tmp_path / "x" / "bench.json",
                               log=notes.append) == []
    assert "crossover.png skipped: no bench_kernels.json" in notes[-1]


def test_the_figures_sweep_is_the_kernels_suite():
    assert figures.SWEEP_BENCH_ARGS[:2] == ["--suite", "kernels"]
    quick = figures.QUICK_SWEEP_ARGS[figures.QUICK_SWEEP_ARGS.index("--layers") + 1]
    assert set(quick.split(",")) <= {la.name for la in SWEEPS["kernels"]}

"""`convlab bench` and `convlab figures`: one-line errors with exit status 2, and a tiny
real run (the machine ceilings replaced by fixed numbers to keep it fast)."""

from __future__ import annotations

import pytest

from convlab import bench, figures
from convlab.cli import main

from helpers import convlab_command

CALIB = {"peak_gflops": 100.0, "peak_what": "test GEMM", "bandwidth_gbs": 10.0,
         "bandwidth_what": "test copy"}


def _exit_code(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("argv, words", [
    (["bench", "--suite", "nope"], ["unknown suite 'nope'", "quick", "resnet"]),
    (["bench", "--kernels", "naive,nope"], ["unknown kernel 'nope'", "naive", "python"]),
    (["bench", "--layers", "zzz"], ["unknown layer 'zzz'", "seed"]),
    (["bench", "--batch", "0"], ["--batch", "positive integer"]),
    (["bench", "--batch", "many"], ["--batch", "positive integer"]),
    (["bench", "--repeats", "-3"], ["--repeats", "positive integer"]),
    (["bench", "--dtype", "float16"], ["--dtype", "float16"]),
    (["bench", "--max-call", "0"], ["--max-call", "positive number"]),
    (["bench", "--device", "tpu"], ["--device", "tpu"]),
    (["bench", "--out", "/no/such/dir/r.json"], ["--out", "folder", "does not exist"]),
    (["bench", "--plot", "/no/such/dir/r.png"], ["--plot", "folder does not exist"]),
    (["figures", "--from", "/no/such/bench.json"], ["--from", "no such file"]),
])
def test_bad_arguments_one_line_exit_2(argv, words, capsys, monkeypatch):
    monkeypatch.setattr(bench.ceilings, "calibrate",
                        lambda *a: pytest.fail("should not get this far"))
    code, err = _exit_code(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err


def test_bench_runs_and_writes_json_csv_and_plot(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.ceilings, "calibrate", lambda *a: dict(CALIB))
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["bench", "--suite", "seed", "--kernels", "naive", "--repeats", "2",
                 "--no-torch", "--no-progress", "--out", str(out), "--plot", str(plot)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "seed" in stdout and "naive" in stdout and "GFLOP/s" in stdout
    assert out.exists() and out.with_suffix(".csv").exists() and plot.exists()
    res = bench.load(out)
    assert [r.kernel for r in res.records] == ["naive"]
    assert res.records[0].status == "ok" and res.records[0].batch == 64
    assert res.settings["repeats"] == 2


def test_batch_overrides_every_layer(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.ceilings, "calibrate", lambda *a: dict(CALIB))
    out = tmp_path / "r.json"
    assert main(["bench", "--suite", "seed", "--kernels", "naive", "--repeats", "1",
                 "--batch", "3", "--no-torch", "--no-progress", "--out", str(out)]) == 0
    assert bench.load(out).records[0].batch == 3
    capsys.readouterr()


def test_figures_from_saved_records(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.ceilings, "calibrate", lambda *a: dict(CALIB))
    src = tmp_path / "r.json"
    assert main(["bench", "--suite", "seed", "--kernels", "python,naive", "--repeats", "1",
                 "--no-torch", "--no-progress", "--out", str(src)]) == 0
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("re-timed"))
    out = tmp_path / "figs"
    assert main(["figures", "--from", str(src), "--out", str(out), "--no-viz"]) == 0
    drawn = [n for n in figures.BENCH_FIGURES if n != "bench_ladder_resnet.png"]
    for name in ("bench.json", "bench.csv", "README.md", *drawn):
        assert (out / name).stat().st_size > 0
    assert bench.load(out / "bench.json").records == bench.load(src).records
    stdout = capsys.readouterr().out
    assert "bench_ladder_resnet.png skipped: no ResNet 3x3 layer" in stdout  # seed suite only
    assert "files in" in stdout
    index = (out / "README.md").read_text()
    assert "measured on" in index and "| [bench_ladder.png](bench_ladder.png) |" in index


# ----------------------------------------------------------------- nothing lost
@pytest.mark.parametrize("target, words", [
    ("{tmp}", ["--out", "is a directory"]),
    ("/proc/convlab-bench.json", ["--out", "cannot write"]),
    ("{tmp}/afile/r.json", ["--out", "does not exist"]),  # a file where a folder should be
])
def test_unwritable_out_fails_before_the_run(target, words, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("ran anyway"))
    monkeypatch.setattr(bench.ceilings, "calibrate", lambda *a: pytest.fail("ran anyway"))
    code, err = _exit_code(["bench", "--suite", "seed", "--out", target.format(tmp=tmp_path)],
                           capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err


@pytest.mark.parametrize("name, words", [
    ("{tmp}", ["--plot", "is a directory"]),
    ("{tmp}/plot", ["--plot", "must end in one of", ".png"]),
    ("{tmp}/plot.txt", ["--plot", "must end in one of"]),
])
def test_bad_plot_names_fail_before_the_run(name, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("ran anyway"))
    code, err = _exit_code(["bench", "--plot", name.format(tmp=tmp_path)], capsys)
    assert code == 2, err
    for word in words:
        assert word in err


def test_plot_is_written_where_it_says(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.ceilings, "calibrate", lambda *a: dict(CALIB))
    plot = tmp_path / "g.svg"
    assert main(["bench", "--suite", "seed", "--kernels", "naive", "--repeats", "1",
                 "--no-torch", "--no-progress", "--plot", str(plot)]) == 0
    assert f"plot written to {plot}" in capsys.readouterr().out
    assert plot.read_text().lstrip().startswith(("<?xml", "<svg"))


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_layers_and_exits_130(tmp_path):
    """SIGINT in the middle of a run: the layers done so far are saved (marked partial),
    one line says so, no traceback, exit status 130."""
    import json
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "r.json"
    # as a terminal starts it, so Ctrl-C works even if this test runs in a background job
    # (see helpers.convlab_command); each layer takes some seconds: 2000 samples
    proc = subprocess.Popen(
        convlab_command("bench", "--layers", "seed,tiny_3x3,tiny_dw_s2", "--kernels", "naive",
                        "--no-torch", "--no-progress", "--repeats", "2000", "--out", str(out)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first layer is saved as soon as it is done
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr and str(out) in stderr
    data = json.loads(out.read_text())
    assert "interrupted" in data["settings"]["partial"]
    layers = {r["layer"] for r in data["records"]}
    assert "seed" in layers and len(layers) < 3
    assert all(r["status"] == "ok" for r in data["records"])
    assert "PARTIAL" in stdout and bench.load(out).partial

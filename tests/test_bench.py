"""The benchmark harness on tiny layers: records, the correctness gate, refusals, skips.

No timing assertions: the numbers are whatever this machine gives; the tests check
what was run, what was refused, what was recorded, and that a wrong kernel is never
timed.  The machine ceilings are passed in (``calibration=``) to keep tests fast.
"""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest

from convlab import bench, kernels
from convlab.kernels.registry import KERNELS, Placed, register
from convlab.reference import conv2d_reference
from convlab.shapes import ConvSpec

CALIB = {"peak_gflops": 100.0, "peak_what": "test GEMM", "bandwidth_gbs": 10.0,
         "bandwidth_what": "test copy"}
TINY = (
    bench.Layer("tiny_a", 3, (6, 7), 4, 3, padding=1, batch=2),
    bench.Layer("tiny_dw", 4, (5, 6), 4, 3, stride=2, groups=4, batch=2),
)


@pytest.fixture
def temp_kernels():
    """Register kernels for one test; they are removed from the registry afterwards."""
    added: list[str] = []

    def add(name, run, **kwargs):
        register(name, description=f"test kernel {name}", **kwargs)(run)
        added.append(name)
        return name

    yield add
    for name in added:
        KERNELS.pop(name, None)


def _good(x, w, b, spec):
    return conv2d_reference(x, w, b, spec).astype(x.dtype)


def _flipped(x, w, b, spec):
    """A classic bug: true convolution (kernel flipped) instead of cross-correlation."""
    return _good(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, spec)


def _run(names, layers=TINY, **kwargs):
    kwargs.setdefault("repeats", 2)
    return bench.run_benchmark(layers=layers, kernel_names=names, calibration=CALIB,
                               progress=False, **kwargs)


def test_records_structure():
    res = _run(["naive", "python"])
    assert [(r.layer, r.kernel) for r in res.records] == [
        (la.name, k) for la in TINY for k in ("naive", "python")]
    for r in res.records:
        spec = next(la for la in TINY if la.name == r.layer).spec(2)
        assert r.status == "ok", r.reason
        assert r.flops == spec.flops() and r.batch == 2 and r.dtype == "float32"
        assert r.intensity == pytest.approx(spec.arithmetic_intensity(4))
        assert r.repeats == 2 and r.number >= 1
        assert r.min_s <= r.q1_s <= r.median_s <= r.q3_s <= r.max_s
        assert r.gflops == pytest.approx(r.flops / r.median_s / 1e9)
        assert r.peak_fraction == pytest.approx(r.gflops / 100.0)
        assert r.vs_naive == pytest.approx(res.get(r.layer, "naive").median_s / r.median_s)
        assert r.max_rel_err <= r.tolerance
        assert r.first_call_s > 0 and r.compile_s >= 0
    # first_use marks each kernel's first call in the process, once per kernel
    assert [r.first_use for r in res.records] == [True, True, False, False]
    assert res.settings["layers"] == ["tiny_a", "tiny_dw"]
    assert {"cpu", "cores", "versions"} <= set(res.machine)


def test_wrong_kernel_is_reported_and_never_timed(temp_kernels):
    calls = []

    def flipped(x, w, b, spec):
        calls.append(spec.batch)
        return _flipped(x, w, b, spec)

    name = temp_kernels("bench_test_flipped", flipped)
    res = _run(["naive", name])
    for layer in TINY:
        rec = res.get(layer.name, name)
        assert rec.status == "wrong"
        assert "oracle" in rec.reason
        assert rec.max_rel_err > rec.tolerance
        assert rec.median_s is None and rec.gflops is None and rec.repeats is None
    assert len(calls) == len(TINY)  # the gate call only: never timed
    table = bench.format_table(res)
    assert "WRONG" in table and name in table


def test_kernel_that_writes_into_its_input_is_wrong(temp_kernels):
    def scribbler(x, w, b, spec):
        out = _good(x, w, b, spec)
        x[...] = 0.0  # correct answer, but the caller's array is destroyed
        return out

    name = temp_kernels("bench_test_scribbler", scribbler)
    rec = _run([name], layers=TINY[:1]).records[0]
    assert rec.status == "wrong" and "modified its input" in rec.reason


def test_refusal_is_listed_as_na_with_its_reason(temp_kernels):
    name = temp_kernels("bench_test_3x3only", _good,
                        supports=lambda s: None if s.groups == 1 else "needs groups=1")
    res = _run([name])
    assert res.get("tiny_a", name).status == "ok"
    dw = res.get("tiny_dw", name)
    assert dw.status == "n/a" and "needs groups=1" in dw.reason and dw.median_s is None
    unavailable = temp_kernels("bench_test_elsewhere", _good, available=lambda: "no such card")
    rec = _run([unavailable], layers=TINY[:1]).records[0]
    assert rec.status == "n/a" and "no such card" in rec.reason


def test_slow_kernels_are_skipped_with_a_reason():
    res = _run(["python", "naive"], max_call_s=1e-9)
    assert {r.status for r in res.records} == {"skip"}
    for r in res.records:
        assert "too slow" in r.reason and r.first_call_s is None
    assert "skip" in bench.format_table(res)


def test_crashing_kernel_is_an_error_record_and_the_run_goes_on(temp_kernels):
    def boom(x, w, b, spec):
        raise RuntimeError("kaboom")

    name = temp_kernels("bench_test_boom", boom)
    res = _run([name, "naive"])
    assert all(r.status == "error" and "kaboom" in r.reason
               for r in res.records if r.kernel == name)
    assert all(r.status == "ok" for r in res.records if r.kernel == "naive")


def _contender(name, run=_good, timer=bench.wall_timer, copy_in_s=None, calls=None):
    """A stand-in contender (a device of our own making): ``setup`` places nothing."""

    def setup(x, w, b, spec):
        if calls is not None:
            calls.append(("setup", spec.batch))
        return Placed(lambda: run(x, w, b, spec), np.asarray, copy_in_s, "fake device")

    return bench.Contender(name, "cpu", "a stand-in", lambda spec: None,
                           lambda spec, dtype: 1e-5, setup, timer)


def test_custom_contender_setup_and_timer_are_used():
    calls = []

    def fake_timer(call, number):
        call()
        return 0.25 * number  # a device that always takes 0.25 s

    who = _contender("bench_test_device", timer=fake_timer, copy_in_s=0.5, calls=calls)
    rec = _run([who], layers=TINY[:1], repeats=3).records[0]
    assert rec.status == "ok" and calls == [("setup", 2)]  # set up once: gate and samples
    assert rec.median_s == rec.min_s == rec.max_s == 0.25
    assert rec.h2d_s == 0.5 and rec.d2h_s is not None and rec.note == "fake device"


def test_samples_are_interleaved_across_contenders():
    log: list[str] = []

    def timer_for(tag):
        def timer(call, number):
            log.append(tag)
            return 0.01 * number
        return timer

    a, b = _contender("a", timer=timer_for("a")), _contender("b", timer=timer_for("b"))
    _run([a, b], layers=TINY[:1], repeats=3)
    assert log == ["a", "b"] + ["a", "b"] * 3  # warm-ups, then round-robin samples


def test_a_contender_is_not_timed_in_the_previous_ones_spinning_threads(temp_kernels):
    """After a call into OpenBLAS or PyTorch their threads keep spinning for a while and
    slow whatever runs next; in a round-robin one contender always follows the same other.
    Stand-ins: 'victim' takes 2 ms, or 100 ms more right after 'spinner' (20 ms), which it
    always follows.  By default every sample follows an untimed call of its own contender,
    which pays that price; with ``settle=0`` the victim is blamed (the check that the
    stand-ins show the effect at all)."""
    import time

    after_spinner = [False]

    def spinner(x, w, b, spec):
        time.sleep(0.02)
        after_spinner[0] = True
        return _good(x, w, b, spec)

    def victim(x, w, b, spec):
        time.sleep(0.102 if after_spinner[0] else 0.002)
        after_spinner[0] = False
        return _good(x, w, b, spec)

    names = [temp_kernels("bench_test_spinner", spinner), temp_kernels("bench_test_victim", victim)]
    for settle, victim_faster in ((None, True), (0.0, False)):
        kwargs = {} if settle is None else {"settle": settle}
        res = _run(names, layers=TINY[:1], repeats=3, **kwargs)
        spun, vic = res.get(TINY[0].name, names[0]), res.get(TINY[0].name, names[1])
        assert (vic.median_s < spun.median_s) is victim_faster, (settle, vic.median_s)


def test_the_gate_runs_the_full_batch_call_that_is_timed():
    """No kernel is gated at one batch and timed at another (a CUDA kernel's tiles, or
    im2col's chunks, depend on the batch): every call, gate included, is the full batch."""
    batches = []

    def run(x, w, b, spec):
        batches.append(spec.batch)
        return _good(x, w, b, spec)

    rec = _run([_contender("bench_test_full", run=run)], layers=TINY[:1], repeats=2).records[0]
    assert rec.status == "ok" and len(batches) >= 4 and set(batches) == {TINY[0].batch}


def test_scattered_timings_are_resampled_then_marked_noisy():
    times = iter([0.01, 0.001, 0.1] * 100)  # a machine that cannot make up its mind

    def erratic(call, number):
        return next(times) * number

    rec = _run([_contender("bench_test_erratic", timer=erratic)], layers=TINY[:1],
               repeats=None, budget_s=0.05).records[0]
    assert rec.status == "ok" and rec.noisy
    assert rec.repeats == 2 * 5  # adaptive: 5 samples, then 5 more after the spread check
    table = bench.format_table(_run([_contender("bench_test_erratic2", timer=erratic)],
                                    layers=TINY[:1], repeats=None, budget_s=0.05))
    assert "noisy (marked !): 1 timings" in table and "rerun on a quiet machine" in table
    steady = _run([_contender("bench_test_steady", timer=lambda c, n: 0.01 * n)],
                  layers=TINY[:1], repeats=None, budget_s=0.05).records[0]
    assert not steady.noisy and steady.repeats == 5


def test_rounds_disturbed_by_other_processes_are_taken_again(monkeypatch):
    shares = iter([0.0, 0.9] + [0.0] * 100)  # the first round: others used 90 % of the CPUs
    monkeypatch.setattr(bench.timing.CpuShare, "others", lambda self: next(shares))
    rec = _run([_contender("bench_test_busy", timer=lambda c, n: 0.01 * n)], layers=TINY[:1],
               repeats=3, drop_busy=0.2).records[0]
    assert rec.status == "ok" and rec.repeats == 3 and rec.dropped_rounds == 1


def test_weight_cache_transforms_the_weight_once_per_layer(temp_kernels):
    transformed: list[int] = []

    def transform(weight, spec):
        transformed.append(spec.batch)
        return weight * 2.0  # a "transformed" weight the run below undoes

    def run(x, w, b, spec, transformed_weight=None):
        return _good(x, w if transformed_weight is None else transformed_weight / 2.0, b, spec)

    name = temp_kernels("bench_test_transformed", run, transform_weight=transform)
    rec = _run([name], layers=TINY[:1], repeats=4, weight_cache=True).records[0]
    assert rec.status == "ok"
    assert len(transformed) == 1  # once, for the gate and all the timed calls
    transformed.clear()
    assert _run([name], layers=TINY[:1], repeats=4).records[0].status == "ok"
    assert transformed == []  # without the cache, run() gets the raw weight every call


def test_split_times_each_stage_from_the_kernels_hook(temp_kernels):
    """--split: the harness times the prefixes a kernel's `stages` hook returns and
    reports each stage's increment; the kernel's own run is timed as usual."""
    import time as _time

    def stages(x, w, b, spec, transformed_weight):
        return [("first", lambda: _time.sleep(0.002)), ("second", lambda: _time.sleep(0.006))]

    name = temp_kernels("bench_test_stages", _good, stages=stages)
    rec = _run([name, "naive"], layers=TINY[:1], repeats=3, split=True).get("tiny_a", name)
    assert rec.status == "ok" and list(rec.stages_s) == ["first", "second"]
    assert rec.stages_s["first"] >= 0.0015 and rec.stages_s["second"] >= 0.0025
    assert "split: first" in bench.format_table(_run([name], layers=TINY[:1], repeats=2,
                                                     split=True))


def test_the_ladder_order_is_the_registrys_field(temp_kernels):
    """The ladder plot's and the default list's order come from ``Kernel.ladder``, not
    from a list of names: a new rung takes its place by its number alone."""
    cpu = ["python", "naive", "parallel", "im2col", "depthwise", "winograd_f2", "winograd_f4",
           "winograd_f6", "fft"]
    assert kernels.ladder() == cpu + ["cuda_naive", "cuda_tiled"]
    assert bench.known_kernels("cpu")[:len(cpu)] == cpu
    first = temp_kernels("bench_test_rung", _good, ladder=0)
    last = temp_kernels("aaa_bench_test_no_rung", _good)
    assert kernels.ladder()[0] == first and last not in kernels.ladder()
    names = bench.known_kernels("cpu")
    assert names[0] == first and names.index(last) > names.index("fft")


def test_ratios_pair_records_by_their_op_field():
    """vs_torch compares a record with the rival of the *same op*, read from the record's
    ``op``, never parsed out of the contender's name."""
    def record(kernel, op, seconds):
        return bench.Record("L", "", kernel, "cpu", "float32", 1, "ok", median_s=seconds,
                            op=op)

    records = [record("torch", "forward", 1.0), record("torch-bwd", "backward", 6.0),
               record("im2col-bwd", "backward", 2.0), record("odd", "backward", 3.0)]
    bench.run.relate(records, {})
    assert records[2].vs_torch == pytest.approx(3.0)  # 6 / 2: the backward's rival
    assert records[3].vs_torch == pytest.approx(2.0)  # no suffix, still the backward's


def test_register_rejects_fields_the_contract_does_not_have():
    with pytest.raises(TypeError, match="unknown field.*bench_stage.*a kernel may set"):
        register("bench_test_bad_field", description="x", bench_stage=lambda *a: None)
    assert "bench_test_bad_field" not in KERNELS


@pytest.mark.skipif(not bench.torch_available(), reason="torch not installed")
def test_torch_rival_gives_ratios():
    res = _run(["naive", "torch"], layers=TINY[:1])
    naive, torch = res.get("tiny_a", "naive"), res.get("tiny_a", "torch")
    assert torch.status == "ok", torch.reason
    assert naive.vs_torch == pytest.approx(torch.median_s / naive.median_s)
    assert torch.vs_torch == pytest.approx(1.0)


def test_torch_requested_but_missing_is_na(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    rec = _run([bench.RIVAL], layers=TINY[:1]).records[0]
    assert rec.status == "n/a" and "torch is not installed" in rec.reason


def test_save_and_load_roundtrip(tmp_path):
    res = _run(["naive", "python"], max_call_s=1e-9)  # skips: None fields round-trip too
    res.records.extend(_run(["naive"]).records)
    json_path, csv_path = res.save(tmp_path / "r.json")
    assert csv_path == tmp_path / "r.csv" and csv_path.exists()
    back = bench.load(json_path)
    assert back.records == res.records
    assert back.calibration == res.calibration and back.machine == res.machine
    data = json.loads(json_path.read_text())
    assert set(data) == {"machine", "calibration", "settings", "records"}
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(res.records) and set(rows[0]) == set(bench.RECORD_FIELDS)
    assert rows[0]["median_s"] == "" and float(rows[-1]["median_s"]) > 0


def test_format_table_lists_every_layer_and_kernel():
    res = _run(["naive", "python"])
    table = bench.format_table(res)
    for name in ("tiny_a", "tiny_dw", "naive", "python", "GFLOP/s", "% peak", "x naive"):
        assert name in table


def test_float64_uses_float64_tolerance():
    res = _run(["naive"], layers=TINY[:1], dtype="float64")
    rec = res.records[0]
    assert rec.status == "ok" and rec.dtype == "float64" and rec.tolerance < 1e-10


def test_gate_batch_shrinks_for_big_layers():
    big = ConvSpec.create((8, 256, 56, 56), 256, 3, padding=1)
    assert bench.gate_batch(big) == 1
    small = ConvSpec.create((64, 5, 10, 12), 2, 3)
    assert bench.gate_batch(small) == 64


def test_suites_are_valid_and_named_uniquely():
    assert set(bench.SUITES) >= {"seed", "resnet", "vgg", "mobilenet", "dilated", "quick", "all"}
    names = [la.name for la in bench.SUITES["all"]]
    assert len(names) == len(set(names))
    every = {}
    for suite, layers in bench.SUITES.items():
        assert layers, suite
        for layer in layers:
            assert every.setdefault(layer.name, layer) == layer  # one name, one layer
            assert bench.suite_layers("quick", [layer.name]) == (layer,)
            spec = layer.spec(layer.batch or bench.DEFAULT_BATCH)
            assert spec.out_height >= 1 and spec.out_width >= 1
    seed = bench.SUITES["seed"][0].spec(64)
    assert seed.input_shape == (64, 5, 10, 12) and seed.output_shape == (64, 2, 8, 10)
    dw = [la for la in bench.SUITES["mobilenet"] if la.groups > 1]
    assert dw and all(la.groups == la.in_channels for la in dw)
    assert all(la.dilation == 2 for la in bench.SUITES["dilated"])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown suite 'nope'; suites: seed"):
        bench.suite_layers("nope")
    with pytest.raises(ValueError, match="unknown layer 'zzz'; layers: seed"):
        bench.suite_layers("quick", ["zzz"])
    with pytest.raises(ValueError, match="unknown kernel 'foo'; known kernels: .*naive"):
        bench.resolve_kernels(["foo"])
    with pytest.raises(ValueError, match="dtype"):
        _run(["naive"], dtype="float16")
    with pytest.raises(ValueError, match="batch"):
        _run(["naive"], batch=0)


def test_default_kernels_follow_the_registry():
    names = bench.resolve_kernels(None)
    cpu = [n for n, k in kernels.KERNELS.items() if k.device == "cpu"]
    assert set(names) - {bench.RIVAL} == set(cpu)
    assert names.index("python") < names.index("naive")
    assert (bench.RIVAL in names) == bench.torch_available()
    assert bench.RIVAL not in bench.resolve_kernels(None, rival=False)


def test_calibration_measures_positive_ceilings():
    peak = bench.measure_peak(np.float32, n=64, repeats=2)
    bw = bench.measure_bandwidth(mib=1, repeats=2)
    assert peak["gflops"] > 0 and math.isfinite(peak["gflops"])
    assert bw["gbs"] > 0 and "copy" in bw["what"]


def test_the_seed_layer_is_checked_at_its_batch_of_64():
    rec = _run(["naive"], layers=bench.SUITES["seed"], repeats=1).records[0]
    assert rec.status == "ok" and rec.batch == 64 and rec.gate_batch == 64



def test_a_busy_machine_is_said_in_one_line_and_wild_spreads_are_capped():
    """When the ceilings measured before and after the run disagree by more than 20 % the
    table opens with one NOTE line a student can read; a spread past 100 % prints as
    '>±100%' (the harness once printed '±3870 %'); a quiet run has neither."""
    res = _run([_contender("bench_test_calm")], layers=TINY[:1])
    res.calibration.update(peak_gflops_runs=[201.0, 202.0], bandwidth_gbs_runs=[30.0, 31.0])
    quiet = bench.format_table(res)
    assert "NOTE:" not in quiet and ">±100%" not in quiet
    res.calibration["peak_gflops_runs"] = [65.0, 201.0]
    rec = res.records[0]
    rec.q1_s, rec.q3_s = rec.median_s * 0.1, rec.median_s * 40
    busy = bench.format_table(res)
    note = [line for line in busy.splitlines() if line.startswith("NOTE:")]
    assert len(note) == 1 and "busy" in note[0] and "65 then 201 GFLOP/s" in note[0]
    assert ">±100%" in busy and "3870" not in busy

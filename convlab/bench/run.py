"""The run: for every layer and contender, refuse honestly, check, then time.

For each (layer, contender) :func:`run_benchmark`

1. **refuses honestly**: a contender that cannot run the layer gets an ``n/a`` record
   with its reason; one whose *estimated* time per call is over ``max_call_s`` (the
   pure-Python loops, the CUDA simulator) gets a ``skip`` record with the estimate.
2. **checks before it times**: it sets the layer up (inputs placed, weight
   transformed if the run caches it), makes the first call on the full batch, timed
   on its own (it includes Numba's JIT compile the first time a kernel runs in a
   process: ``first_use``), and compares the first :func:`gate_batch` images of the
   result with the float64 oracle (:func:`convlab.reference.compare`, the
   contender's own tolerance).  So what is checked is exactly what is timed.  A
   wrong result (or inputs modified in place) gives a ``wrong`` record, never timed.
3. **times the steady state**: a warm-up call, then round-robin samples
   (:mod:`convlab.bench.timing`); median and quartiles are kept, GFLOP/s from
   :meth:`ConvSpec.flops` (direct-convolution FLOPs for every algorithm).  With
   ``split``, a kernel with a ``stages`` hook also gets its time split by stage.
4. **compares in the same run**: the machine's ceilings are measured before and after
   (:mod:`convlab.bench.ceilings`); ratios to torch, cuDNN and the naive kernel come
   from the same run (:func:`relate`).

``ops=("forward", "backward", "transpose")`` (``convlab bench --backward``) also times
each layer's backward and transposed convolution (:mod:`convlab.bench.ops`): the same
steps, each op's contenders gated against that op's float64 oracle, and all of a
layer's contenders, every op, sampled in one round-robin.

Ctrl-C stops the run cleanly: :class:`BenchmarkInterrupted` carries the result of
the layers finished so far (marked ``partial``).  ``on_layer(result)`` is called after
every layer, so a caller can save as it goes.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ..reference import ErrorReport, compare
from ..shapes import ConvSpec
from . import ceilings as cal
from .contenders import (
    RIVAL,
    Contender,
    estimate,
    known_kernels,
    make_contenders,
    resolve_kernels,
)
from .gpu import CUDNN, GPU_RIVALS, check_device
from .ops import FORWARD, Op, Problem, op_named, op_of, problem
from .records import BenchResult, Record
from .suites import DEFAULT_BATCH, Layer, suite_layers
from .timing import Timing, repeats_for, sample, summary

# The oracle runs at ~2-4 GFLOP/s: gate on the largest batch that stays under this.
GATE_FLOPS = 4e8
# Set (to "1") by `convlab bench --cold-cache` in the child process it starts with an empty
# NUMBA_CACHE_DIR, so the records say their first calls include a real compile.
COLD_CACHE_ENV = "CONVLAB_COLD_CACHE"


class BenchmarkInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_benchmark`; ``result`` holds the finished layers."""

    def __init__(self, result: BenchResult) -> None:
        super().__init__(result.partial)
        self.result = result


def gate_batch(spec: ConvSpec) -> int:
    """The largest batch <= spec.batch whose oracle stays under GATE_FLOPS (at least 1)."""
    per_item = spec.with_batch(1).flops()
    return max(1, min(spec.batch, int(GATE_FLOPS // max(per_item, 1))))


def run_benchmark(
    suite: str = "quick",
    kernel_names: Sequence[str | Contender] | None = None,
    *,
    layers: Sequence[Layer] | None = None,
    only_layers: Sequence[str] | None = None,
    batch: int | None = None,
    dtype: str = "float32",
    repeats: int | None = None,
    max_call_s: float = 2.0,
    budget_s: float = 0.5,
    device: str = "cpu",
    rival: bool = True,
    progress: bool = True,
    seed: int = 0,
    calibration: dict[str, Any] | None = None,
    weight_cache: bool = False,
    split: bool = False,
    settle: float = 0.0,
    drop_busy: float | None = None,
    on_layer: Callable[[BenchResult], None] | None = None,
    ops: Sequence[str] = ("forward",),
) -> BenchResult:
    """Gate and time every (layer, contender) pair; see the module docstring.

    ``layers`` (explicit :class:`Layer` objects) overrides ``suite``; ``batch`` every
    layer's batch; ``repeats`` fixes the number of samples (default: adaptive, about
    ``budget_s`` seconds per pair).  ``calibration`` skips measuring the ceilings
    (tests, re-runs).  ``weight_cache``: kernels with ``transform_weight`` transform the
    weight once per layer, as ``Conv2d`` does (default: every call, as
    ``torch.nn.functional.conv2d`` takes a raw weight).  ``split``: time each stage of
    kernels with a ``stages`` hook.  ``settle``/``drop_busy``: see
    :mod:`convlab.bench.timing`.  ``device="cuda"``: see :mod:`convlab.bench.gpu`.
    ``ops``: which of "forward", "backward", "transpose" to time on every layer
    (:mod:`convlab.bench.ops`; the backward ones on the CPU only).
    """
    from tqdm.auto import tqdm

    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    for name, value in (("batch", batch), ("repeats", repeats)):
        if value is not None and (isinstance(value, bool) or int(value) < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    run_ops = [op_named(o) for o in dict.fromkeys(ops)]
    if device != "cpu" and any(o is not FORWARD for o in run_ops):
        raise ValueError("the backward ops run on the CPU only (no CUDA backward kernels); "
                         f"got device={device!r}")
    chosen_layers = tuple(layers) if layers is not None else suite_layers(suite, only_layers)
    names = resolve_kernels(kernel_names, device, rival, [o.name for o in run_ops])
    check_device(device, names)
    np_dtype = np.dtype(dtype)
    started = time.perf_counter()
    measure_ceilings = calibration is None and device == "cpu"
    if calibration is None and device != "cpu":
        calibration = cal.no_calibration()
    # disable=None: a bar on a terminal, none in a log file or CI
    bar = tqdm(total=len(chosen_layers) * len(names) * len(run_ops) + 2 * measure_ceilings,
               disable=None if progress else True, unit="run", dynamic_ncols=True, leave=False)
    import numba

    settings = {
        "suite": suite if layers is None and not only_layers else "custom",
        "layers": [la.name for la in chosen_layers],
        "layer_args": {la.name: asdict(la) for la in chosen_layers},
        "kernels": [n if isinstance(n, str) else n.name for n in names],
        "batch": batch, "dtype": dtype, "repeats": repeats,
        "max_call_s": max_call_s, "budget_s": budget_s, "device": device,
        "weight_cache": weight_cache, "split": split, "settle": settle,
        "drop_busy": drop_busy, "threads": numba.get_num_threads(), "seed": seed,
        "ops": [o.name for o in run_ops],
        "numba_cache": ("cold: a fresh NUMBA_CACHE_DIR, first calls compile"
                        if os.environ.get(COLD_CACHE_ENV) == "1" else
                        "as found: a first call may load compiled code from disk"),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    result = BenchResult(_machine(), {}, settings, [])
    contenders: dict[str, dict[str, Contender]] = {}
    done = 0
    try:
        bar.set_description("calibrating (GEMM peak, bandwidth)")
        result.calibration = cal.calibrate(np_dtype) if measure_ceilings else dict(
            calibration or {})
        bar.update(measure_ceilings)
        contenders = {o.name: make_contenders(_names_for(o, names, kernel_names is None),
                                              weight_cache, o) for o in run_ops}
        used: set[str] = set()
        for index, layer in enumerate(chosen_layers):
            result.records += _run_layer(layer, contenders, used, bar, np_dtype,
                                         batch, seed + index, repeats, max_call_s, budget_s,
                                         split, settle, drop_busy)
            done += 1
            relate(result.records, result.calibration)
            settings["elapsed_s"] = round(time.perf_counter() - started, 1)
            if on_layer is not None:
                on_layer(result)
        if measure_ceilings:
            bar.set_description("calibrating again")
            result.calibration = cal.merge(result.calibration, cal.calibrate(np_dtype))
            bar.update(1)
    except KeyboardInterrupt:
        layer_names = {la.name for la in chosen_layers[:done]}
        result.records = [r for r in result.records if r.layer in layer_names]
        settings["partial"] = (f"interrupted (Ctrl-C) after {done} of {len(chosen_layers)} "
                               "layers; only those are recorded")
        settings["elapsed_s"] = round(time.perf_counter() - started, 1)
        relate(result.records, result.calibration)
        raise BenchmarkInterrupted(result) from None
    finally:
        bar.close()
        for made in contenders.values():
            for who in made.values():
                who.close()
    relate(result.records, result.calibration)
    settings["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def _run_layer(layer: Layer, contenders: dict[str, dict[str, Contender]], used: set[str],
               bar: Any, dtype: np.dtype, batch: int | None, seed: int, repeats: int | None,
               max_call_s: float, budget_s: float, split: bool, settle: float,
               drop_busy: float | None) -> list[Record]:
    spec = layer.spec(batch or layer.batch or DEFAULT_BATCH)
    layer_args = {"stride": layer.stride, "padding": layer.padding,
                  "dilation": layer.dilation, "groups": layer.groups}
    records: list[Record] = []
    timed: list[tuple[Record, Timing, Contender, Problem]] = []
    for op_name, made in contenders.items():
        prob = problem(op_named(op_name), layer_args, spec, dtype, seed, gate_batch)
        for name, who in made.items():
            bar.set_description(f"{layer.name}: checking {name}")
            rec = Record(layer.name, layer.describe(), name, who.device, dtype.name,
                         prob.spec.batch, "n/a", flops=prob.flops, bytes=prob.bytes,
                         intensity=prob.flops / prob.bytes, gate_batch=prob.gate_batch,
                         op=op_name)
            records.append(rec)
            why = prob.why_not or who.why_not(prob.spec)
            seconds, how = estimate(who, prob.spec)
            if why is not None:
                rec.status, rec.reason = "n/a", why
            elif seconds > max_call_s:
                rec.status = "skip"
                rec.reason = (f"too slow here: ~{seconds:.3g} s per call estimated ({how}) > "
                              f"max_call_s={max_call_s:g}")
            else:
                try:
                    timing = _gate(rec, who, prob, name not in used, repeats, budget_s)
                except Exception as exc:  # a crashing contender is a result, not a crash
                    rec.status, rec.reason = "error", f"{type(exc).__name__}: {exc}"
                    timing = None
                used.add(name)
                if timing is not None:
                    timed.append((rec, timing, who, prob))
            bar.update(1)
    bar.set_description(f"{layer.name}: timing {len(timed)} contenders, interleaved")
    # a fixed --repeats is kept exactly; adaptive runs re-sample scattered timings
    sample([t for _, t, _, _ in timed], settle, drop_busy, resample_noisy=repeats is None)
    for rec, timing, who, prob in timed:
        _summarise(rec, timing)
        if split and rec.status == "ok" and who.stages is not None and prob.op is FORWARD:
            bar.set_description(f"{layer.name}: splitting {rec.kernel}'s time")
            x, w, b = prob.arrays
            rec.stages_s = _split(who, x, w, b, prob.spec, timing.reps, budget_s, settle)
    return records


def _names_for(op: Op, names: list[str | Contender], default: bool) -> list[str | Contender]:
    """The names an op gets: all that were asked for, or by default only those that
    have the op's kernels (so a default run lists no n/a rows for, e.g., Winograd's
    backward, which does not exist)."""
    if not default:
        return names
    have = set(known_kernels(op=op.name)) | {RIVAL, *GPU_RIVALS}
    return [n for n in names if not isinstance(n, str) or n in have]


def _worst(reports: list[tuple[str, ErrorReport]]) -> tuple[str, ErrorReport]:
    """The part to report: the first that fails, else the closest to its tolerance."""
    failed = [pr for pr in reports if not pr[1].ok]
    if failed:
        return failed[0]
    return max(reports, key=lambda pr: pr[1].max_rel / max(pr[1].tolerance, 1e-300))


def _gate(rec: Record, who: Contender, prob: Problem, first_use: bool,
          repeats: int | None, budget_s: float) -> Timing | None:
    """Set up, make the first call (timed), check it; fills ``rec``.  Returns the
    :class:`Timing` to sample, or None when the result is wrong (never timed)."""
    arrays = prob.arrays
    copies = tuple(None if a is None else a.copy() for a in arrays)
    placed = who.setup(*arrays, prob.spec)
    rec.first_use, rec.h2d_s, rec.note = first_use, placed.copy_in_s, placed.note
    start = time.perf_counter()
    out = placed.call()
    host = placed.fetch(out)
    rec.first_call_s = time.perf_counter() - start
    if placed.copy_in_s is not None:  # on a device: the copy back, timed alone
        start = time.perf_counter()
        placed.fetch(out)
        rec.d2h_s = time.perf_counter() - start
    dtype = arrays[0].dtype
    tols = who.tolerance(prob.gate_spec(), dtype)
    parts = prob.op.parts
    tols = tols if isinstance(tols, tuple) else (tols,) * len(parts)
    got, want = prob.gated(host), prob.oracle()
    reports = [(part, compare(g, e, t)) for part, g, e, t in zip(parts, got, want, tols,
                                                                  strict=True)]
    part, report = _worst(reports)
    rec.max_abs_err, rec.max_rel_err, rec.tolerance = report.max_abs, report.max_rel, \
        report.tolerance
    if not all(a is None or np.array_equal(a, c) for a, c in zip(arrays, copies, strict=True)):
        rec.status, rec.reason = "wrong", "modified its input arrays"
        return None
    if not report.ok:
        where = f"{part}: " if len(parts) > 1 else ""
        rec.status, rec.reason = "wrong", f"failed the oracle check: {where}{report}"
        return None
    t_est = who.timer(placed.call, 1)  # the warm-up call, which also sizes the samples
    number, reps = repeats_for(t_est, budget_s)
    return Timing(placed.call, who.timer, number, reps if repeats is None else repeats)


def _summarise(rec: Record, timing: Timing) -> None:
    if timing.error is not None:
        rec.status, rec.reason = "error", timing.error
        return
    for key, value in summary(timing.samples).items():
        setattr(rec, key, value)
    rec.number, rec.repeats = timing.number, len(timing.samples)
    rec.noisy, rec.dropped_rounds = timing.noisy, timing.dropped
    rec.gflops = rec.gflops_at(rec.median_s)
    # the first call minus a warm one (and its copy back): the JIT compile / cache load
    rec.compile_s = max(0.0, (rec.first_call_s or 0.0) - (rec.median_s or 0.0)
                        - (rec.d2h_s or 0.0))
    rec.status = "ok"


def _split(who: Contender, x: np.ndarray, w: np.ndarray, b: np.ndarray, spec: ConvSpec,
           reps: int, budget_s: float, settle: float) -> dict[str, float]:
    """Each stage's time: the prefixes (the kernel up to each stage) timed round-robin,
    then differences of their medians (clipped at 0: noise can make one negative)."""
    assert who.stages is not None
    prefixes = list(who.stages(x, w, b, spec))
    timings = []
    for _, call in prefixes:
        t_est = who.timer(call, 1)  # warm-up
        number, _ = repeats_for(t_est, budget_s)
        timings.append(Timing(call, who.timer, number, reps))
    sample(timings, settle, resample_noisy=False)
    split, before = {}, 0.0
    for (name, _), timing in zip(prefixes, timings, strict=True):
        if timing.error is not None:
            raise RuntimeError(f"stage {name!r} failed: {timing.error}")
        median = summary(timing.samples)["median_s"]
        split[name] = max(0.0, median - before)
        before = max(before, median)
    return split


@functools.lru_cache(maxsize=1)
def _machine_cached() -> str:
    from ..system import describe

    return json.dumps(describe(), default=str)


def _machine() -> dict[str, Any]:
    """The machine description (computed once per process: it runs a parallel function)."""
    return json.loads(_machine_cached())


def relate(records: list[Record], calib: dict[str, Any]) -> None:
    """Fill the ceilings, peak fraction and the ratios vs torch, cuDNN (TF32 off) and
    naive (cuda_naive for GPU records): same layer, same op, same run."""
    base = {(r.layer, r.kernel): r.median_s for r in records if r.status == "ok"}
    for r in records:
        r.peak_gflops, r.bandwidth_gbs = calib.get("peak_gflops"), calib.get("bandwidth_gbs")
        if r.status != "ok" or not r.median_s:
            continue
        if r.gflops and r.peak_gflops:
            r.peak_fraction = r.gflops / r.peak_gflops
        naive = "cuda_naive" if r.device == "cuda" else "naive"
        op = op_of(r.kernel)  # the same op's rival and naive: "torch-bwd" for "im2col-bwd"
        for other, attr in ((RIVAL, "vs_torch"), (CUDNN, "vs_cudnn"), (naive, "vs_naive")):
            t = base.get((r.layer, op.label(other)))
            if t:
                setattr(r, attr, t / r.median_s)


def run_in_fresh_process(argv: Sequence[str], cold_cache: bool = True) -> int:
    """Run ``convlab bench ARGV`` in a new Python process; with ``cold_cache`` its Numba
    cache is a new empty folder, so each kernel's first call is a real JIT compile.
    Returns the exit status."""
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="convlab-numba-cache-") as tmp:
        if cold_cache:
            env["NUMBA_CACHE_DIR"], env[COLD_CACHE_ENV] = tmp, "1"
        code = ("import sys; from convlab.cli import main; "
                "sys.exit(main(['bench', *sys.argv[1:]]))")
        return subprocess.run([sys.executable, "-c", code, *argv], env=env).returncode


def geomean(values: Sequence[float]) -> float:
    """The geometric mean (the right average of speed ratios)."""
    return math.exp(sum(math.log(v) for v in values) / len(values))

"""One convolution, every contender: refuse honestly, check, then time.

For each contender of each op (:mod:`convlab.bench.ops`: forward, backward, transpose)
:func:`measure`

1. **refuses honestly**: a contender that cannot run the spec gets an ``n/a`` record
   with its reason; one whose *estimated* time per call is over ``max_call_s`` (the
   pure-Python loops, the CUDA simulator) gets a ``skip`` record with the estimate.
2. **checks before it times**: it sets the contender up (inputs placed, weight
   transformed if the run caches it), makes the first call on the full batch, timed
   on its own (it includes Numba's JIT compile the first time a kernel runs in a
   process: ``first_use``), and compares the result with the op's float64 oracle
   (:func:`convlab.reference.compare`, the contender's own tolerance): the whole
   output of the first :func:`gate_batch` images, or, with ``sampled_check`` (a
   forward), every image at :func:`~convlab.reference.sample_positions` (corners,
   edges, interior; cheap beside a fast kernel).  What is checked is exactly what is timed.  A wrong
   result (or inputs modified in place) gives a ``wrong`` record, never timed.
3. **times the steady state**: a warm-up call, then round-robin samples
   (:mod:`convlab.bench.timing`); median and quartiles are kept, GFLOP/s from
   :meth:`ConvSpec.flops` (direct-convolution FLOPs for every algorithm).  With
   ``split``, a kernel with a ``stages`` hook also gets its time split by stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..reference import ErrorReport, compare
from ..shapes import ConvSpec
from .contenders import Contender, estimate
from .ops import FORWARD, Problem, forward_problem
from .records import Record
from .timing import DEFAULT_SETTLE, Timing, repeats_for, sample, summary

# The oracle runs at ~2-4 GFLOP/s: gate on the largest batch that stays under this.
GATE_FLOPS = 4e8


@dataclass(frozen=True)
class Sampling:
    """How a measurement is taken (:func:`convlab.bench.run_benchmark`'s options)."""

    repeats: int | None = None  # samples per contender; None: adaptive (about budget_s)
    budget_s: float = 0.5
    max_call_s: float = 2.0
    settle: float = DEFAULT_SETTLE
    drop_busy: float | None = None
    split: bool = False
    warmup: bool = True  # a warm call before the samples (else the gate's call warms)
    sampled_check: bool = False  # the oracle at sampled outputs instead of whole images


class _NoBar:
    def set_description(self, text: str) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass


def gate_batch(spec: ConvSpec) -> int:
    """The largest batch <= spec.batch whose oracle stays under GATE_FLOPS (at least 1)."""
    per_item = spec.with_batch(1).flops()
    return max(1, min(spec.batch, int(GATE_FLOPS // max(per_item, 1))))


def measure(problems: Sequence[tuple[Problem, dict[str, Contender]]], label: str, desc: str,
            used: set[str], options: Sampling, bar: Any = None) -> list[Record]:
    """Refuse, gate and time every contender of every problem (one convolution's ops:
    forward, backward, transpose; :mod:`convlab.bench.ops`), all sampled in one
    round-robin; ``used`` names the contenders already called in this process (their
    first call is not a first use)."""
    bar = bar if bar is not None else _NoBar()
    records: list[Record] = []
    timed: list[tuple[Record, Timing, Contender, Problem]] = []
    for prob, contenders in problems:
        dtype = prob.arrays[0].dtype
        for name, who in contenders.items():
            bar.set_description(f"{label}: checking {name}")
            rec = Record(label, desc, name, who.device, dtype.name, prob.spec.batch, "n/a",
                         flops=prob.flops, bytes=prob.bytes,
                         intensity=prob.flops / prob.bytes, gate_batch=prob.gate_batch,
                         op=prob.op.name)
            records.append(rec)
            why = prob.why_not or who.why_not(prob.spec)
            seconds, how = estimate(who, prob.spec)
            if why is not None:
                rec.status, rec.reason = "n/a", why
            elif seconds > options.max_call_s:
                rec.status = "skip"
                rec.reason = (f"too slow here: ~{seconds:.3g} s per call estimated ({how}) > "
                              f"max_call_s={options.max_call_s:g}")
            else:
                try:
                    timing = _gate(rec, who, prob, name not in used, options)
                except Exception as exc:  # a crashing contender is a result, not a crash
                    rec.status, rec.reason = "error", f"{type(exc).__name__}: {exc}"
                    timing = None
                used.add(name)
                if timing is not None:
                    timed.append((rec, timing, who, prob))
            bar.update(1)
    bar.set_description(f"{label}: timing {len(timed)} contenders, interleaved")
    # a fixed --repeats is kept exactly; adaptive runs re-sample scattered timings
    sample([t for _, t, _, _ in timed], options.settle, options.drop_busy,
           resample_noisy=options.repeats is None)
    for rec, timing, who, prob in timed:
        _summarise(rec, timing)
        if options.split and rec.status == "ok" and who.stages is not None \
                and prob.op is FORWARD:
            bar.set_description(f"{label}: splitting {rec.kernel}'s time")
            x, w, b = prob.arrays
            rec.stages_s = _split(who, x, w, b, prob.spec, timing.reps, options)
    return records


def measure_spec(spec: ConvSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                 contenders: dict[str, Contender], label: str, desc: str, used: set[str],
                 options: Sampling, bar: Any = None) -> list[Record]:
    """:func:`measure` on one forward convolution given its (prepared) arrays; with
    ``options.sampled_check`` the gate compares sampled outputs of every image."""
    prob = forward_problem((x, w, b), spec, gate_batch, sampled=options.sampled_check)
    return measure([(prob, contenders)], label, desc, used, options, bar)


def _worst(reports: list[tuple[str, ErrorReport]]) -> tuple[str, ErrorReport]:
    """The part to report: the first that fails, else the closest to its tolerance."""
    failed = [pr for pr in reports if not pr[1].ok]
    if failed:
        return failed[0]
    return max(reports, key=lambda pr: pr[1].max_rel / max(pr[1].tolerance, 1e-300))


def _gate(rec: Record, who: Contender, prob: Problem, first_use: bool,
          options: Sampling) -> Timing | None:
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
    tol = who.tolerance(prob.gate_spec(), arrays[0].dtype)
    parts = prob.op.parts
    tols = tol if isinstance(tol, tuple) else (tol,) * len(parts)
    got, want = prob.gated(host), prob.oracle()
    reports = [(part, compare(g, e, t)) for part, g, e, t in zip(parts, got, want, tols,
                                                                  strict=True)]
    part, report = _worst(reports)
    rec.max_abs_err, rec.max_rel_err, rec.tolerance = report.max_abs, report.max_rel, \
        report.tolerance
    if not all(c is None or np.array_equal(a, c) for a, c in zip(arrays, copies, strict=True)):
        rec.status, rec.reason = "wrong", "modified its input arrays"
        return None
    if not report.ok:
        where = f"{part}: " if len(parts) > 1 else ""
        rec.status, rec.reason = "wrong", f"failed the oracle check: {where}{report}"
        return None
    if options.warmup:  # a warm call, which also sizes the samples
        t_est = who.timer(placed.call, 1)
    else:  # the gate's call already warmed it (compile aside)
        t_est = rec.first_call_s
    number, reps = repeats_for(t_est, options.budget_s)
    return Timing(placed.call, who.timer, number,
                  reps if options.repeats is None else options.repeats)


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


def _split(who: Contender, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
           spec: ConvSpec, reps: int, options: Sampling) -> dict[str, float]:
    """Each stage's time: the prefixes (the kernel up to each stage) timed round-robin,
    then differences of their medians (clipped at 0: noise can make one negative)."""
    assert who.stages is not None
    prefixes = list(who.stages(x, w, b, spec))
    timings = []
    for _, call in prefixes:
        t_est = who.timer(call, 1)  # warm-up
        number, _ = repeats_for(t_est, options.budget_s)
        timings.append(Timing(call, who.timer, number, reps))
    sample(timings, options.settle, resample_noisy=False)
    split, before = {}, 0.0
    for (name, _), timing in zip(prefixes, timings, strict=True):
        if timing.error is not None:
            raise RuntimeError(f"stage {name!r} failed: {timing.error}")
        median = summary(timing.samples)["median_s"]
        split[name] = max(0.0, median - before)
        before = max(before, median)
    return split

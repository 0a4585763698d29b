"""Timing: how one call's duration is measured, and how samples stay fair on a busy machine.

A *timer* is ``timer(call, number) -> seconds`` for ``number`` back-to-back calls.
On a CPU the wall clock is right (a kernel returns when its work is done); a GPU
backend brings its own (CUDA events: :mod:`convlab.bench.gpu`).

Every (layer, contender) pair becomes a :class:`Timing`: after its warm-up call it is
sampled ``reps`` times, each sample ``number`` calls long (``number`` > 1 only for
sub-millisecond calls, so one sample lasts at least ``MIN_SAMPLE_S``).  The samples of
one layer's contenders are taken **round-robin** (:func:`sample`): each contender's
r-th sample before any contender's (r+1)-th, so load from elsewhere on the machine
hits all of them alike and the *ratios* between them stay fair even when the
absolute times do not.

Three guards against a disturbed machine, all options of the harness:

* ``settle`` seconds of sleep plus one untimed call before each sample.  Right after
  a call into another library its thread pool may still be spinning (OpenBLAS's
  threads spin for ~0.2 s after a GEMM) and slow the next contender down 2-4x
  (Winograd F(4,3) on 64ch@56: 7.3 ms alone, 16.9 ms right after an im2col call), so
  in a round-robin the order of the contenders would decide; and memory freed a while
  ago may have been handed back to a VM host and cost much more to fault in again.
  On by default with :data:`DEFAULT_SETTLE` (1 ms: the untimed call is what matters;
  it doubles the calls, not the samples); ``--settle 0`` turns it off, ``--settle
  0.2`` also lets the spinning stop before the untimed call.
* ``drop_busy`` (a fraction): a round during which *other* processes used more than
  that share of the machine's CPUs (read from ``/proc/stat``, Linux only) is dropped
  and taken again, at most ``reps`` extra rounds.
* the spread check (:data:`NOISY_SPREAD`): after sampling, a pair whose samples
  scatter too much gets up to ``reps`` more rounds; if it is still scattered, its
  record says so ("noisy") instead of presenting a number nobody can read.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Timer = Callable[[Callable[[], Any], int], float]

# Sub-millisecond calls are timed in groups so one sample is at least this long.
MIN_SAMPLE_S = 2e-3
# Before each sample: this long a pause, then one untimed call (see "settle" above).
DEFAULT_SETTLE = 1e-3
# A pair is "noisy" when half its interquartile range exceeds this fraction of its median.
NOISY_SPREAD = 0.2


def wall_timer(call: Callable[[], Any], number: int) -> float:
    """Seconds for ``number`` back-to-back calls, by the wall clock."""
    start = time.perf_counter()
    for _ in range(number):
        call()
    return time.perf_counter() - start


def repeats_for(t_est: float, budget_s: float) -> tuple[int, int]:
    """(number, repeats) so one layer/contender costs about ``budget_s`` seconds."""
    number = 1 if t_est >= MIN_SAMPLE_S else min(1000, math.ceil(MIN_SAMPLE_S / max(t_est, 1e-7)))
    sample = t_est * number
    if sample > budget_s / 3:
        return number, 3
    return number, int(min(50, max(5, budget_s // sample)))


def spread(samples: Sequence[float]) -> float:
    """Half the interquartile range over the median (0.1 = the middle half of the samples
    lies within about +-10 % of the median)."""
    q1, med, q3 = np.percentile(np.asarray(samples), [25, 50, 75])
    return float((q3 - q1) / 2 / med) if med > 0 else 0.0


class CpuShare:
    """How much of the machine's CPU time *other* processes used between two readings
    (Linux ``/proc/stat``; elsewhere always 0: the filter is then off)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[int, int, int] | None:
        try:
            with open("/proc/stat") as fh:
                vals = [int(v) for v in fh.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        me = os.times()
        mine = round((me.user + me.system) * os.sysconf("SC_CLK_TCK"))
        busy = sum(vals) - vals[3] - vals[4]  # all but idle and iowait
        return busy, sum(vals), mine

    def others(self) -> float:
        """Share of all CPUs' time used by other processes since the last call."""
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[1] <= last[1]:
            return 0.0
        return max(0.0, (now[0] - last[0]) - (now[2] - last[2])) / (now[1] - last[1])


@dataclass
class Timing:
    """A gated (layer, contender) pair waiting for, then holding, its samples."""

    call: Callable[[], Any]
    timer: Timer
    number: int
    reps: int
    samples: list[float] = field(default_factory=list)
    error: str | None = None  # the exception a sample raised, if any
    dropped: int = 0  # rounds taken again because other processes were busy
    noisy: bool = False

    def take(self, settle: float) -> None:
        if self.error is not None:
            return
        try:
            if settle > 0:
                time.sleep(settle)
                self.call()  # untimed: spinning pools and page faults are paid here
            self.samples.append(self.timer(self.call, self.number) / self.number)
        except Exception as exc:  # a crashing contender is a result, not a crash
            self.error = f"{type(exc).__name__}: {exc}"


def sample(timings: Sequence[Timing], settle: float = 0.0, drop_busy: float | None = None,
           resample_noisy: bool = True) -> None:
    """Take every timing's samples round-robin (see the module docstring)."""
    _rounds(timings, max((t.reps for t in timings), default=0), settle, drop_busy)
    if not resample_noisy:
        return
    noisy = [t for t in timings if t.error is None and t.samples
             and spread(t.samples) > NOISY_SPREAD]
    if noisy:  # one more helping, all of them round-robin again
        _rounds(noisy, max(t.reps for t in noisy), settle, drop_busy)
    for t in timings:
        t.noisy = t.error is None and bool(t.samples) and spread(t.samples) > NOISY_SPREAD


def _rounds(timings: Sequence[Timing], reps: int, settle: float,
            drop_busy: float | None) -> None:
    share = CpuShare() if drop_busy is not None else None
    extra, r = 0, 0
    while r < reps:
        before = [len(t.samples) for t in timings]
        if share is not None:
            share.others()
        for t in timings:
            if r < t.reps:
                t.take(settle)
        if share is not None and drop_busy is not None and extra < reps \
                and share.others() > drop_busy:
            extra += 1  # this round was disturbed: forget it and take it again
            for t, n in zip(timings, before):
                if len(t.samples) > n:
                    del t.samples[n:]
                    t.dropped += 1
            continue
        r += 1


def summary(samples: Sequence[float]) -> dict[str, float]:
    """median, q1, q3, min, max of the samples (seconds)."""
    arr = np.asarray(samples)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return {"median_s": float(med), "q1_s": float(q1), "q3_s": float(q3),
            "min_s": float(arr.min()), "max_s": float(arr.max())}


def format_time(s: float | None, *, missing: str = "-", micro: str = "us") -> str:
    """Seconds for people: '1.23 s', '4.5 ms', '67 us' (the table and the plots)."""
    if s is None:
        return missing
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} {micro}"

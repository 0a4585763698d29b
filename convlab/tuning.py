"""Per-machine autotuning: time the kernels on a convolution once, remember the winner.

No fixed rule picks the fastest kernel on every machine: ``algo="auto"``'s rule
(:func:`convlab.kernels.choose`) was measured on one 2-core box, and a student's
8-core laptop or an ARM Mac has other caches, other SIMD widths, another BLAS.  So,
as cuDNN's ``benchmark=True`` and Triton's ``autotune`` do, convlab can measure:

* ``conv2d(..., algo="tune")`` (and ``Conv2d(..., algo="tune")``) times every CPU kernel
  that supports the convolution (the slow baselines ``python`` and ``naive`` aside)
  with the benchmark harness (:func:`convlab.bench.measure_spec`: each result checked
  against the float64 oracle at sampled outputs first, so a wrong kernel can never
  win; samples taken round-robin), picks the fastest, remembers it and runs it;
* ``algo="auto"`` uses a remembered winner when there is one and the rule otherwise;
  ``convlab.explain(...)`` says which ("measured on this machine on 2026-11-29: ...");
* ``convlab tune --suite resnet`` measures a whole suite ahead of a class;
  ``convlab tune --show`` lists what is remembered, ``--clear`` forgets it.

What is remembered is keyed by everything that changes the answer: the convolution
(shapes, hyper-parameters, batch), the dtype, Numba's thread count, the CPU model,
and convlab's version and kernel set (a new kernel invalidates old measurements; an
entry naming a kernel that no longer exists is ignored).

The memory is a JSON file in the platform's per-user cache folder (``platformdirs``;
``$CONVLAB_TUNE_CACHE`` names another file).  A missing file is an empty memory; a
corrupt one is ignored with one warning and rewritten on the next save; where nothing
can be written (a read-only home, no home at all) measurements are kept for this
process only, with one warning.  Several processes may tune at once: each save
re-reads the file and merges under a lock file (``filelock``), then replaces the file
atomically, so no process loses another's entries.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .kernels import registry
from .shapes import ConvSpec

CACHE_ENV = "CONVLAB_TUNE_CACHE"
# Timed samples per candidate after the gate's (oracle-checked, compiling) call, when
# tuning happens inside a user's first call: one, so each candidate costs two calls.
# `convlab tune`, run ahead of time, takes more (--repeats).
TUNE_REPEATS = 1
# The label suffix of a kernel timed with its weight transformed once (see tune(); the
# label is only shown, never parsed: tune() keeps which label is which run).
CACHED = "+cached"
SEED = 1234
# How often (seconds) a process looks at the tuning file for another process's changes.
REFRESH_S = 1.0


@dataclass(frozen=True)
class Tuned:
    """A measured winner for one key."""

    winner: str
    # per kernel that passed the gate: its fastest sample, seconds per call (another
    # program can only ever add time to a sample, so the minimum is the least disturbed
    # estimate, as Python's timeit advises; medians picked wrong kernels on a busy box)
    times: dict[str, float]
    date: str
    cost_s: float = 0.0  # how long the tuning took (compiles included)
    compile_s: float = 0.0  # of which first calls' JIT compiles / cache loads
    failed: tuple[str, ...] = ()  # kernels that failed the oracle check or crashed
    remembered: bool = False  # read from the cache, not measured by this call

    def describe(self) -> str:
        """One line for people: 'measured on this machine on DATE: 1.9 ms vs ...'."""
        from .bench.timing import format_time

        others = sorted((t, n) for n, t in self.times.items() if n != self.winner)
        rest = ", ".join(f"{n} {format_time(t)}" for t, n in others)
        return (f"measured on this machine on {self.date[:10]}: "
                f"{format_time(self.times[self.winner])}" + (f" vs {rest}" if rest else ""))


def default_path() -> Path:
    """Where the memory lives: $CONVLAB_TUNE_CACHE, or the user's cache folder."""
    return _path_for(os.environ.get(CACHE_ENV) or None)


@functools.lru_cache(maxsize=8)
def _path_for(override: str | None) -> Path:
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("convlab", appauthor=False)) / "tuning.json"


class TuningCache:
    """The remembered winners, backed by one JSON file (see the module docstring).

    Thread-safe; the file is re-read when another process has changed it."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = (default_path() if path is None
                     else path if isinstance(path, Path) else Path(path))
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._memory_only: dict[str, dict[str, Any]] = {}  # what could not be saved
        self._stamp: tuple[int, int] | None = None
        self._warned: set[str] = set()
        # The file is stat()ed at most every REFRESH_S seconds (and always after this
        # object wrote it): an `auto` call asks for its generation, which must be cheap.
        self._checked = -math.inf
        self._generation = 0

    # ------------------------------------------------------------------ reading
    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _read_file(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self._warn_once("read", f"convlab tuning cache {self.path} unreadable ({exc}); "
                            "measuring again")
            return {}
        try:
            data = json.loads(text)
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise TypeError("entries is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            self._warn_once("corrupt", f"convlab tuning cache {self.path} is corrupt ({exc}); "
                            "ignoring it (it is rewritten on the next save)")
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict)}

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._entries = self._read_file()
            self._stamp = stamp
            self._generation += 1

    def generation(self) -> int:
        """A number that changes whenever what this cache remembers may have changed
        (this process wrote or cleared it, or the file changed on disk: checked at most
        every REFRESH_S seconds).  :mod:`convlab.plan` keeps its plans while it holds."""
        if time.monotonic() - self._checked >= REFRESH_S:
            with self._lock:
                self._refresh()
        return self._generation

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            self._refresh()
            return self._memory_only.get(key) or self._entries.get(key)

    def entries(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._refresh(force=True)  # `convlab tune --show`: what the file holds now
            return {**self._entries, **self._memory_only}

    # ------------------------------------------------------------------ writing
    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Remember ``entry``; saved to the file unless it cannot be written."""
        with self._lock:
            try:
                self._save({key: entry})
            except OSError as exc:
                self._memory_only[key] = entry
                self._generation += 1
                self._warn_once("write", f"cannot save convlab's tuning cache to {self.path} "
                                f"({exc}); measurements are kept for this process only "
                                f"(set {CACHE_ENV} to a writable file to keep them)")

    def _save(self, new: dict[str, dict[str, Any]]) -> None:
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock", timeout=30):
            merged = {**self._read_file(), **new}  # another process may have written
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tuning.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump({"format": 1, "entries": merged}, fh, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self._entries, self._stamp = merged, self._file_stamp()
        self._checked = time.monotonic()
        self._generation += 1

    def clear(self) -> int:
        """Forget everything (the file is removed); returns how many entries there were."""
        with self._lock:
            self._refresh(force=True)
            count = len(self._entries) + len(self._memory_only)
            self._memory_only.clear()
            self._entries = {}
            for path in (self.path, Path(str(self.path) + ".lock")):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            self._stamp = None
            self._checked = time.monotonic()
            self._generation += 1
            return count


_default: TuningCache | None = None
_default_lock = threading.Lock()


def default_cache() -> TuningCache:
    """The process's cache of :func:`default_path` (made on first use; a new one if
    $CONVLAB_TUNE_CACHE changed since)."""
    global _default
    path = default_path()
    found = _default
    if found is not None and found.path is path:  # the common case, without the lock
        return found
    with _default_lock:
        if _default is None or _default.path != path:
            _default = TuningCache(path)
        return _default


def kernel_set() -> str:
    """A short fingerprint of convlab's version and its forward kernels."""
    return _kernel_set(tuple(sorted(registry.KERNELS)))


@functools.lru_cache(maxsize=8)
def _kernel_set(names: tuple[str, ...]) -> str:
    from ._version import __version__

    return hashlib.sha1(f"{__version__}:{','.join(names)}".encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def _cpu() -> str:
    from .system import cpu_name

    return f"{cpu_name()} ({platform.machine()})"


def key_for(spec: ConvSpec, dtype: Any, cached: bool = False, op: str = "forward") -> str:
    """The memory's key for ``spec`` (as kernels see it) in ``dtype`` on this machine;
    ``cached``: for a weight transformed once and reused (``Conv2d``'s WeightCache), not
    on every call (functional ``conv2d``); ``op``: a backward kernel's op ("grad_input",
    "grad_weight"; a forward's key has no op, as before backward kernels were tuned)."""
    import numba

    parts: dict[str, Any] = {
        "weight_cache": bool(cached),
        "kernels": kernel_set(),
        "spec": [spec.batch, spec.in_channels, spec.height, spec.width, spec.out_channels,
                 *spec.kernel_size, *spec.stride, *spec.padding, *spec.dilation, spec.groups],
        "dtype": np.dtype(dtype).name,
        "threads": numba.get_num_threads(),
        "cpu": _cpu(),
    }
    if op != "forward":
        parts["op"] = str(registry.KernelOp(op).value)
        parts["weight_cache"] = False  # no backward kernel keeps a transform between calls
    return json.dumps(parts, sort_keys=True)


def candidates(spec: ConvSpec, op: str = "forward") -> list[registry.Kernel]:
    """The ``op`` kernels tuning times: CPU, runnable here, supporting ``spec``, not the
    slow baselines (a kernel with a ``macs_per_s`` estimate)."""
    return [k for k in registry.kernels_for(op).values()
            if k.device == "cpu" and k.macs_per_s is None and k.why_not(spec) is None]


def lookup(spec: ConvSpec, dtype: Any, cache: TuningCache | None = None,
           cached: bool = False, op: str = "forward") -> Tuned | None:
    """The remembered ``op`` winner for ``spec`` here (``cached``: see :func:`key_for`),
    or None (none, or one naming a kernel that no longer exists or no longer supports
    the spec)."""
    entry = (cache or default_cache()).get(key_for(spec, dtype, cached, op))
    if entry is None:
        return None
    kern = registry.kernels_for(op).get(entry.get("winner", ""))
    if kern is None or kern.why_not(spec) is not None:
        return None
    try:
        return Tuned(entry["winner"], dict(entry["times"]), entry["date"],
                     float(entry.get("cost_s", 0.0)), float(entry.get("compile_s", 0.0)),
                     tuple(entry.get("failed", ())), remembered=True)
    except (KeyError, TypeError, ValueError):
        return None


def tune(spec: ConvSpec, dtype: Any = np.float32, *, cache: TuningCache | None = None,
         force: bool = False, repeats: int = TUNE_REPEATS, cached: bool = False,
         op: str = "forward") -> Tuned:
    """The fastest kernel for ``spec`` in ``dtype`` here: remembered, or measured now
    (``repeats`` timed calls per candidate after its checked first call) and then
    remembered.  ``force`` measures again.

    Both ways a layer runs are measured in one go and both winners remembered: a kernel
    that transforms its weight (Winograd, FFT) is timed with the transform on every call,
    as functional ``conv2d`` runs it, and with the weight transformed once, as ``Conv2d``
    runs it (``cached``, the one returned); the others are the same either way.  The
    winners differ: FFT's filter spectrum costs more than some whole convolutions.

    ``op="grad_input"`` or ``"grad_weight"`` measures that op's backward kernels instead
    (each gated against the float64 backward oracle first, then timed alone on the same
    random input, weight and grad_output) and remembers their winner: what
    ``conv2d_input(..., algo="tune")``, ``Conv2d(backward_algo="tune")`` and
    ``convlab tune`` use (:func:`_tune_grad`)."""

    from .bench import measure as harness  # "gate and time one spec", below the tuner
    from .bench.contenders import kernel_contender

    cache = cache or default_cache()
    if not force:
        known = lookup(spec, dtype, cache, cached, op)
        if known is not None:
            return known
    if op != "forward":
        return _tune_grad(spec, dtype, cache, repeats, str(registry.KernelOp(op).value))
    kernels = candidates(spec)
    if not kernels:
        raise registry.UnsupportedSpecError(f"no kernel to tune for {spec.describe()}")
    start = time.perf_counter()
    rng = np.random.default_rng(SEED)
    dt = np.dtype(dtype)
    x = rng.standard_normal((spec.batch, spec.in_channels, spec.height, spec.width)).astype(dt)
    w = rng.standard_normal(spec.weight_shape).astype(dt)
    b = rng.standard_normal(spec.bias_shape).astype(dt)
    # every kernel as conv2d runs it, and each weight-transforming kernel once more as
    # Conv2d runs it (weight transformed once), under a label of its own; `ways` says
    # which label is which, so nothing is parsed back out of a name
    contenders = {k.name: kernel_contender(k) for k in kernels}
    ways: dict[str, tuple[str, bool]] = {k.name: (k.name, False) for k in kernels}
    for k in kernels:
        if k.transform_weight is not None:
            label = k.name + CACHED
            contenders[label] = dataclasses.replace(kernel_contender(k, weight_cache=True),
                                                    name=label)
            ways[label] = (k.name, True)
    # the harness's default settle: an untimed call of each kernel before its timed sample,
    # so a kernel timed right after im2col's or torch's still-spinning threads is not
    # blamed for them (the candidates' order once decided the winner; bench.timing)
    options = harness.Sampling(repeats=repeats, warmup=False, sampled_check=True,
                             max_call_s=float("inf"))
    records = harness.measure_spec(spec, x, w, b, contenders, "tune", spec.describe(), set(),
                                 options)
    measured, failed, date, cost, compile_s = _outcome(records, "kernel", spec, start)
    found = {}
    run_both_ways = {name for name, cached_run in ways.values() if cached_run}
    for way in (False, True):
        times = {}
        for label, t in measured.items():
            name, cached_run = ways.get(label, (label, False))
            # this way's run of the kernel: its own, or the one run if both ways are alike
            if cached_run == way or (way and name not in run_both_ways):
                times[name] = t
        if not times:  # only cached runs passed: nothing to say about this way
            continue
        found[way] = Tuned(min(times, key=times.__getitem__), times, date, cost, compile_s,
                           failed)
        cache.put(key_for(spec, dtype, way), {
            "winner": found[way].winner, "times": times, "date": date, "cost_s": cost,
            "compile_s": compile_s, "failed": list(failed)})
    if cached not in found:
        raise RuntimeError(f"every kernel failed while tuning {spec.describe()}: "
                           + "; ".join(failed))
    return found[cached]


def _outcome(records: list[Any], what: str, spec: ConvSpec, start: float
             ) -> tuple[dict[str, float], tuple[str, ...], str, float, float]:
    """What a tuning measurement found: each passing kernel's fastest time, the failures
    with their reasons, the date, the seconds it cost and those spent compiling."""
    times = {r.kernel: r.min_s for r in records if r.status == "ok" and r.min_s}
    failed = tuple(f"{r.kernel}: {r.reason}" for r in records if r.status != "ok")
    if not times:
        raise RuntimeError(f"every {what} failed while tuning {spec.describe()}: "
                           + "; ".join(failed))
    compile_s = sum(r.compile_s or 0.0 for r in records if r.status == "ok")
    return (times, failed, _dt.datetime.now().isoformat(timespec="seconds"),
            time.perf_counter() - start, compile_s)


def _tune_grad(spec: ConvSpec, dtype: Any, cache: TuningCache, repeats: int,
               op: str) -> Tuned:
    """:func:`tune` for a backward op: its kernels gated and timed one by one, round-robin
    (:func:`convlab.bench.measure.measure` on a :func:`~convlab.bench.ops.grad_problem`)."""
    from .bench import measure as harness
    from .bench.backward import grad_contender
    from .bench.ops import GRAD_OPS, grad_problem

    kernels = candidates(spec, op)
    if not kernels:
        raise registry.UnsupportedSpecError(f"no {op} kernel to tune for {spec.describe()}")
    start = time.perf_counter()
    rng = np.random.default_rng(SEED)
    dt = np.dtype(dtype)
    arrays = (rng.standard_normal((spec.batch, spec.in_channels, spec.height,
                                   spec.width)).astype(dt),
              rng.standard_normal(spec.weight_shape).astype(dt),
              rng.standard_normal(spec.bias_shape).astype(dt),
              rng.standard_normal(spec.batched_output_shape).astype(dt))
    prob = grad_problem(GRAD_OPS[op], arrays, spec, harness.gate_batch)
    options = harness.Sampling(repeats=repeats, warmup=False, max_call_s=float("inf"))
    records = harness.measure([(prob, {k.name: grad_contender(k) for k in kernels})], "tune",
                              f"{op} of {spec.describe()}", set(), options)
    times, failed, date, cost, compile_s = _outcome(records, f"{op} kernel", spec, start)
    found = Tuned(min(times, key=times.__getitem__), times, date, cost, compile_s, failed)
    cache.put(key_for(spec, dtype, False, op), {
        "winner": found.winner, "times": times, "date": date, "cost_s": cost,
        "compile_s": compile_s, "failed": list(failed)})
    return found


def choose(spec: ConvSpec, dtype: Any, finite: bool = True,
           cached: bool = False, op: str = "forward") -> registry.Choice:
    """``algo="auto"``: a remembered winner when there is one (and the input is finite
    or the winner keeps the oracle's NaN/Inf pattern), else the registry's rule.
    ``cached``: the weight is transformed once and reused (``Conv2d``), see :func:`tune`;
    ``op``: the forward's or a backward op's kernel.  The tuner measures backward
    kernels one way only (transform on every call, :func:`_tune_grad`): their winner is
    remembered under ``cached=False``, and ``cached`` reaches only the rule."""
    known = lookup(spec, dtype, cached=cached and op == "forward", op=op)
    if known is not None:
        kern = registry.kernels_for(op)[known.winner]
        if finite or kern.keeps_nonfinite(spec):
            return registry.Choice(kern, known.describe(), (), source="measured")
    return registry.choose(spec, finite, op, cached)

"""The run: every layer of a suite, every contender, one result.

:func:`run_benchmark` builds each layer's random inputs for every op asked for
(:mod:`convlab.bench.ops`: passed through :func:`convlab.functional.prepare` once,
outside any timing) and has :func:`convlab.bench.measure.measure` refuse, check and
time every contender on them (see there); around that it measures the machine's
ceilings before and after (:mod:`convlab.bench.ceilings`), relates every record to
torch, cuDNN and the naive kernel of the same layer, op and run (:func:`relate`), and
stamps the machine and the settings on the result.

``ops=("forward", "backward", "transpose")`` (``convlab bench --backward``) also times
each layer's backward and transposed convolution: the same steps, each op's
contenders gated against that op's float64 oracle, and all of a layer's contenders,
every op, sampled in one round-robin.

Ctrl-C stops the run cleanly: :class:`BenchmarkInterrupted` carries the result of
the layers finished so far (marked ``partial``).  ``on_layer(result)`` is called after
every layer, so a caller can save as it goes.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ..errors import UsageError
from . import ceilings as cal
from .contenders import RIVAL, Contender, known_kernels
from .gpu import CUDNN, GPU_RIVALS, check_device
from .measure import Sampling, gate_batch, measure
from .ops import FORWARD, Op, op_named, problem
from .records import BenchResult, Record
from .roster import make_contenders, resolve_kernels
from .suites import DEFAULT_BATCH, Layer, suite_layers
from .timing import DEFAULT_SETTLE

# Set (to "1") by `convlab bench --cold-cache` in the child process it starts with an empty
# NUMBA_CACHE_DIR, so the records say their first calls include a real compile.
COLD_CACHE_ENV = "CONVLAB_COLD_CACHE"


class BenchmarkInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_benchmark`; ``result`` holds the finished layers."""

    def __init__(self, result: BenchResult) -> None:
        super().__init__(result.partial)
        self.result = result


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
    settle: float = DEFAULT_SETTLE,
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
        raise UsageError(f"dtype must be float32 or float64, got {dtype!r}")
    for name, value in (("batch", batch), ("repeats", repeats)):
        if value is not None and (isinstance(value, bool) or int(value) < 1):
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    run_ops = [op_named(o) for o in dict.fromkeys(ops)]
    if device != "cpu" and any(o is not FORWARD for o in run_ops):
        raise UsageError("the backward ops run on the CPU only (no CUDA backward kernels); "
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
    options = Sampling(repeats, budget_s, max_call_s, settle, drop_busy, split)
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
            result.records += _run_layer(layer, contenders, used, bar, np_dtype, batch,
                                         seed + index, options)
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
               bar: Any, dtype: np.dtype, batch: int | None, seed: int,
               options: Sampling) -> list[Record]:
    spec = layer.spec(batch or layer.batch or DEFAULT_BATCH)
    layer_args = {"stride": layer.stride, "padding": layer.padding,
                  "dilation": layer.dilation, "groups": layer.groups}
    problems = [(problem(op_named(op_name), layer_args, spec, dtype, seed, gate_batch), made)
                for op_name, made in contenders.items()]
    return measure(problems, layer.name, layer.describe(), used, options, bar)


def _names_for(op: Op, names: list[str | Contender], default: bool) -> list[str | Contender]:
    """The names an op gets: all that were asked for, or by default only those that
    have the op's kernels (so a default run lists no n/a rows for, e.g., Winograd's
    backward, which does not exist)."""
    if not default:
        return names
    have = set(known_kernels(op=op.name)) | {RIVAL, *GPU_RIVALS}
    return [n for n in names if not isinstance(n, str) or n in have]


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
        op = op_named(r.op)  # the same op's rival and naive: "torch-bwd" for "im2col-bwd"
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
        # `python -m convlab` runs convlab.cli.main (convlab/__main__.py): the harness
        # starts the command without importing the CLI, which sits above it
        command = [sys.executable, "-m", "convlab", "bench", *argv]
        return subprocess.run(command, env=env).returncode

"""The benchmark harness: is it right, how fast is it, and compared with what?

Every speed claim in convlab (README, notebooks, kernel docstrings) comes from here,
through ``convlab bench``.  One idea per module:

========================  ==========================================================
``suites``                the layers (ResNet, VGG, MobileNet, ...) and their suites
``contenders``            what is timed: registry kernels through their hooks, PyTorch
``roster``                which contenders a run times (``auto`` among them)
``ops``                   what a layer offers to time: forward, backward, transpose
``backward``              the backward ops' contenders, convlab's and torch's
``gpu``                   CUDA-event timing, the cuDNN rivals, the simulator's limits
``timing``                timers, round-robin samples, guards against a busy machine
``ceilings``              the machine's ceilings: GEMM peak, memory bandwidth
``measure``               one convolution: refuse, gate against the oracle, time
``run``                   a suite: inputs, ceilings, ratios, interruption
``records``               what was measured, as JSON and CSV
``table``                 the report people read
``models``                whole networks' conv stacks (ResNet-18, MobileNetV2, VGG-16)
``network``               the network benchmark: passes of those stacks vs torch's
========================  ==========================================================

A kernel opts into more than its plain call through its registry entry (see
:mod:`convlab.kernels.registry`): ``place`` (device kernels), ``transform_weight``
(timed once per layer with ``--weight-cache``), ``stages`` (``--split``: the time
split by stage), ``macs_per_s`` (slow kernels skip hopeless layers).  The harness
itself never names a kernel.
"""

# The names below are loaded on first use (PEP 562), not when the package is imported:
# importing one module of the harness (the tuner needs ``bench.timing`` and
# ``bench.measure``) would otherwise run this file and load every layer of the package,
# ``roster`` among them, which imports ``plan`` and through it the tuner itself: an
# import loop at run time that tests/test_imports.py cannot see (docs/design.md, "Layers").
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and readers: what each name is
    from .ceilings import calibrate, disturbance, measure_bandwidth, measure_peak, no_calibration
    from .contenders import (
        RIVAL,
        Contender,
        kernel_contender,
        known_kernels,
        torch_available,
        torch_contender,
    )
    from .gpu import CUDNN, GPU_RIVALS, check_device
    from .measure import GATE_FLOPS, Sampling, gate_batch, measure_spec
    from .records import (
        RECORD_FIELDS,
        STATUSES,
        BenchResult,
        Record,
        check_writable,
        load,
        output_paths,
    )
    from .roster import auto_contender, make_contenders, resolve_kernels
    from .run import COLD_CACHE_ENV, BenchmarkInterrupted, run_benchmark, run_in_fresh_process
    from .suites import (
        DEFAULT_BATCH,
        DILATED,
        MOBILENET,
        RESNET,
        SEED,
        SUITES,
        SWEEPS,
        TOY_SUITES,
        VGG,
        Layer,
        suite_layers,
        suite_names,
    )
    from .table import format_table, format_time, geomean
    from .timing import DEFAULT_SETTLE, MIN_SAMPLE_S, NOISY_SPREAD, Timer, wall_timer

_WHERE = {  # public name -> the module that defines it
    "BenchResult": "records",
    "BenchmarkInterrupted": "run",
    "COLD_CACHE_ENV": "run",
    "CUDNN": "gpu",
    "Contender": "contenders",
    "DEFAULT_BATCH": "suites",
    "DEFAULT_SETTLE": "timing",
    "DILATED": "suites",
    "GATE_FLOPS": "measure",
    "GPU_RIVALS": "gpu",
    "Layer": "suites",
    "MIN_SAMPLE_S": "timing",
    "MOBILENET": "suites",
    "NOISY_SPREAD": "timing",
    "RECORD_FIELDS": "records",
    "RESNET": "suites",
    "RIVAL": "contenders",
    "Record": "records",
    "SEED": "suites",
    "STATUSES": "records",
    "SUITES": "suites",
    "SWEEPS": "suites",
    "Sampling": "measure",
    "TOY_SUITES": "suites",
    "Timer": "timing",
    "VGG": "suites",
    "auto_contender": "roster",
    "calibrate": "ceilings",
    "check_device": "gpu",
    "check_writable": "records",
    "disturbance": "ceilings",
    "format_table": "table",
    "format_time": "table",
    "gate_batch": "measure",
    "geomean": "table",
    "kernel_contender": "contenders",
    "known_kernels": "contenders",
    "load": "records",
    "make_contenders": "roster",
    "measure_bandwidth": "ceilings",
    "measure_peak": "ceilings",
    "measure_spec": "measure",
    "no_calibration": "ceilings",
    "output_paths": "records",
    "resolve_kernels": "roster",
    "run_benchmark": "run",
    "run_in_fresh_process": "run",
    "suite_layers": "suites",
    "suite_names": "suites",
    "torch_available": "contenders",
    "torch_contender": "contenders",
    "wall_timer": "timing",
}


def __getattr__(name: str) -> Any:
    from importlib import import_module
    from importlib.util import find_spec

    module = _WHERE.get(name)
    if module is None:
        # a submodule (``bench.gpu``), as an eagerly importing package would have it
        if not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:
            return import_module(f".{name}", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "CUDNN", "COLD_CACHE_ENV", "DEFAULT_BATCH", "DEFAULT_SETTLE", "DILATED", "GATE_FLOPS",
    "GPU_RIVALS",
    "MIN_SAMPLE_S", "MOBILENET", "NOISY_SPREAD", "RECORD_FIELDS", "RESNET", "RIVAL",
    "SEED", "STATUSES", "SUITES", "SWEEPS", "Sampling", "TOY_SUITES", "VGG", "BenchResult",
    "BenchmarkInterrupted", "Contender", "Layer", "Record", "Timer", "auto_contender",
    "calibrate", "make_contenders",
    "check_device", "check_writable", "disturbance", "format_table", "format_time",
    "gate_batch", "geomean", "kernel_contender", "known_kernels", "load", "measure_bandwidth",
    "measure_peak", "no_calibration", "output_paths", "resolve_kernels", "run_benchmark",
    "run_in_fresh_process", "measure_spec", "suite_layers", "suite_names", "torch_available",
    "torch_contender", "wall_timer",
]

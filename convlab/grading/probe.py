"""Inside the graded kernel: call a student's answer on the cases drawn for this run.

``convlab grade`` appends ``answer(NAME, VAR)`` to every check cell it runs (after the
check the student sees). :func:`answer` reads the cases the trusted grader drew for this
run (``$CONVLAB_CASES``, plain data: :mod:`.wire`), calls the student's function on a
fresh copy of each, and appends the answers, as plain data, to the same file the checks
report to (``$CONVLAB_OUTCOMES``), one JSON line, a :class:`.wire.Probe`: ``{"probe":
NAME, "status": ..., "answers": [...]}``. It never decides anything: the grader compares
the answers with its own references after the kernel is gone. A student may replace
this function or write such lines themselves; they still have to give the right answers
to cases they never saw before the run.

``status``: ``"answered"``; ``"not attempted"`` (None, or ``NotImplementedError``, or
None/``...`` returned by the first case); ``"raised"`` (with the exception's type and
message; answers up to it are kept).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np

from . import wire

CASES_ENV = "CONVLAB_CASES"


def _tuples(value: Any) -> Any:
    """Sequences as the checks pass them: tuples (``stride=(1, 2)``)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def arguments(encoded: list[list[Any]]) -> list[list[Any]]:
    """The cases' arguments from their plain data."""
    return [[_tuples(wire.decode(a)) for a in case] for case in encoded]


def _cases(name: str) -> list[list[Any]]:
    with open(os.environ[CASES_ENV], encoding="utf-8") as f:
        return arguments(json.load(f).get(name, []))


def _raised(name: str, err: BaseException, answers: list[Any]) -> wire.Probe:
    return wire.Probe(name, "raised", answers, (type(err).__name__, str(err)[:500]))


def _run_cuda(name: str, fn: Any, cases: list[list[Any]]) -> wire.Probe:
    """A @cuda.jit answer runs on the simulator, as its check runs it."""
    # (the package's attribute cuda_tiled is the exercise: import from the module)
    from ..exercises.cuda import _kernel_source, launch_2d, run_on_simulator
    from ..exercises.cuda_tiled import launch_tiles

    launch = launch_2d if name == "cuda_kernel" else launch_tiles
    try:
        source, kname = _kernel_source(fn)
    except Exception as err:  # noqa: BLE001 - the answer's own fault, reported as such
        return _raised(name, err, [])
    shapes = [(c[1].shape[0], c[0].shape[1] - c[1].shape[2] + 1,
               c[0].shape[2] - c[1].shape[3] + 1) for c in cases]
    result, outs = run_on_simulator(source, kname, [(c[0], c[1]) for c in cases],
                                         [launch(s) for s in shapes])
    if not result.get("ok"):
        status = "not attempted" if result.get("not_implemented") else "raised"
        return wire.Probe(name, status, [], (str(result.get("type")),
                                             str(result.get("message"))[:500]))
    return wire.Probe(name, "answered", [wire.encode(o) for o in outs])


def run(name: str, fn: Any, cases: list[list[Any]]) -> wire.Probe:
    """``fn``'s answers to ``cases``: the probe's line."""
    if fn is None:
        return wire.Probe(name, "not attempted", [])
    if name in ("cuda_kernel", "cuda_tiled"):
        return _run_cuda(name, fn, cases)
    answers: list[Any] = []
    for n, case in enumerate(cases):
        args = [a.copy() if isinstance(a, np.ndarray) else a for a in case]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = fn(*args)
        except NotImplementedError:
            return wire.Probe(name, "not attempted", answers)
        except Exception as err:  # noqa: BLE001 - the student's bug is an answer too
            return _raised(name, err, answers)
        if n == 0 and (got is None or got is Ellipsis):
            return wire.Probe(name, "not attempted", answers)
        answers.append(wire.encode(got))
    return wire.Probe(name, "answered", answers)


def answer(name: str, fn: Any) -> None:
    """Record ``fn``'s answers to this run's cases of exercise ``name``; never raises."""
    try:
        line = run(name, fn, _cases(name))
    except BaseException as err:  # noqa: BLE001 - a probe failure is "no answers", no more
        line = _raised(name, err, [])
    try:
        with open(os.environ["CONVLAB_OUTCOMES"], "a", encoding="utf-8") as f:
            f.write(json.dumps(line.line()) + "\n")
    except (OSError, KeyError):
        pass

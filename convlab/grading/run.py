"""The parent side of ``convlab grade``: one notebook of one student, start to verdicts.

:func:`run_task` unpacks a :class:`Task` (the submission's files travel inside it, so a
Dask worker on another machine needs no shared disk) into a temporary folder, runs
:mod:`convlab.grading.worker` there in a new session, waits at most the notebook's time
limit plus :data:`GRACE_S` for starting and stopping the kernel, kills what is left (the
worker's process group and the kernel's), and turns the event log into one
:class:`Row` per check cell. It never raises for anything a submission does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exercises.cells import check_call, check_cells

RESULTS = ("correct", "incorrect", "not attempted", "error", "timed out")
GRACE_S = 60  # kernel start (imports convlab, Numba) and shutdown, on a busy machine
LOG_BYTES = 64 * 1024  # what is kept of the worker's own output for error messages


@dataclass(frozen=True)
class Limits:
    """What one notebook may use."""

    timeout_s: float = 300.0  # wall clock, from its first cell to its last
    memory_bytes: int = 1 << 30  # the kernel's data segment (RLIMIT_DATA)
    file_bytes: int = 64 << 20  # the largest file it may write (RLIMIT_FSIZE)


@dataclass(frozen=True)
class Task:
    """One notebook of one student, with the files of its submission."""

    student: str
    notebook: str  # path inside the submission, with "/"
    files: dict[str, bytes] = field(repr=False)
    limits: Limits = Limits()


@dataclass(frozen=True)
class Row:
    """One line of the grades: a student's result on one exercise."""

    student: str
    exercise: str
    result: str  # one of RESULTS
    message: str
    notebook: str


def _first_line(source: str) -> str:
    line = next((s.strip() for s in source.splitlines() if s.strip()), "")
    return line if len(line) <= 50 else line[:47] + "..."


def _cell(nb_cells: list[dict], index: int) -> str:
    source = nb_cells[index].get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    return f"cell {index} (`{_first_line(source)}`)"


def _read_events(path: Path) -> list[dict[str, Any]]:
    """The event log; a line that is not a JSON object (a submission may write anything
    to this file) is skipped."""
    events = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def verdicts(task: Task, nb_cells: list[dict], events: list[dict[str, Any]],
             failure: str | None) -> list[Row]:
    """One row per check cell of the notebook, from the event log.

    ``failure``: why the run ended without a ``finished``, ``timeout`` or ``died`` event
    (the whole run hit its hard limit, or the worker failed), or None.
    """
    checks = check_cells(nb_cells)
    exercise_at = {i: name for i, name, _ in checks}
    outcome: dict[int, dict] = {}
    errors: dict[int, list[str]] = {}
    started: set[int] = set()
    ended: set[int] = set()
    current: int | None = None
    stop: tuple[str, int | None] | None = None
    for event in events:
        if "cell" in event and "event" in event:  # the worker's
            try:
                current = int(event["cell"])
            except (TypeError, ValueError):
                continue
            kind = event["event"]
            if kind == "start":
                started.add(current)
            elif kind == "end":
                ended.add(current)
                if isinstance(event.get("error"), list) and len(event["error"]) == 2:
                    errors[current] = [str(e) for e in event["error"]]
                current = None
            elif kind in ("timeout", "died"):
                stop = (kind, current)
        elif event.get("event") == "finished":
            stop = ("finished", None)
        elif current in exercise_at and event.get("exercise") == exercise_at[current] \
                and event.get("result") in RESULTS[:3]:
            outcome[current] = event  # a verdict from the check cell now running
    if stop is None:
        stop = ("failed", max(started - ended, default=None))
    limit = f"{task.limits.timeout_s:g} s"
    rows = []
    previous = -1
    for i, name, _ in checks:
        where = f"{_cell(nb_cells, i)} of {task.notebook}"
        earlier = next((f"; before it, {_cell(nb_cells, j)} raised {errors[j][0]}: "
                        f"{errors[j][1]}" for j in range(previous + 1, i) if j in errors), "")
        previous = i
        kind, at = stop
        if i in outcome:
            result, message = outcome[i]["result"], str(outcome[i].get("message", ""))
        elif i in errors:
            ename, evalue = errors[i]
            result, message = "error", f"the check raised {ename}: {evalue}{earlier}"
        elif i in ended:
            result, message = "error", "the check ran but recorded no verdict"
        elif kind == "timeout" and at is not None and at <= i:
            result = "timed out"
            message = (f"the check did not finish within the notebook's {limit} limit (an "
                       "endless loop?)" if at == i else
                       f"the check never ran: {_cell(nb_cells, at)} was still running when "
                       f"the notebook's {limit} limit was reached (an endless loop?)") + earlier
        elif kind == "died" and at is not None and at <= i:
            result = "error"
            why = "out of memory, os._exit, or a crash in compiled code"
            message = (f"the kernel died during the check: {why}" if at == i else
                       f"the check never ran: the kernel died in {_cell(nb_cells, at)}: "
                       f"{why}") + earlier
        elif kind == "failed":
            result = "timed out" if failure and failure.startswith("timed out") else "error"
            message = f"the check never ran: {failure or 'the run stopped'}{earlier}"
        else:
            result, message = "error", f"the check cell did not run{earlier}"
        rows.append(Row(task.student, name, result, f"{message} [{where}]"
                        if result in ("error", "timed out") else message, task.notebook))
    return rows


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (the worker's or the kernel's: both are
    started in a session of their own), if it still exists."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _unpack(files: dict[str, bytes], dest: Path) -> None:
    for rel, data in files.items():
        target = (dest / rel).resolve()
        if dest.resolve() not in target.parents:
            continue  # a name like ../x never leaves the copy
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def run_task(task: Task) -> list[Row]:
    """Grade one notebook in a fresh kernel, in a copy of its submission, with limits."""
    try:
        nb = json.loads(task.files[task.notebook].decode("utf-8"))
        nb_cells = nb["cells"]
        checks = check_cells(nb_cells)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as err:
        return [Row(task.student, "", "error", f"{task.notebook} is not a notebook that "
                    f"can be read: {type(err).__name__}: {err}", task.notebook)]
    if not checks:
        return []
    with tempfile.TemporaryDirectory(prefix="convlab-grade-") as tmp:
        jobdir = Path(tmp)
        _unpack(task.files, jobdir / "work")
        limits = task.limits
        job = {"notebook": task.notebook, "timeout_s": limits.timeout_s,
               "memory_bytes": limits.memory_bytes, "file_bytes": limits.file_bytes,
               # CPU seconds: a backstop only (two Numba threads may burn 2 s per second)
               "cpu_s": int(2 * limits.timeout_s + GRACE_S),
               "checks": {str(i): f"from convlab import exercises as ex\n"
                                  f"{check_call(name, answer)}" for i, name, answer in checks}}
        (jobdir / "job.json").write_text(json.dumps(job))
        failure = None
        with open(jobdir / "worker.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "convlab.grading.worker",
                                     str(jobdir)], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=jobdir)
            try:
                code = proc.wait(timeout=limits.timeout_s + GRACE_S)
                if code != 0:
                    failure = f"the grader's worker exited with status {code}"
            except subprocess.TimeoutExpired:
                failure = f"timed out: the run passed its {limits.timeout_s:g} s limit"
            finally:
                _kill_group(proc.pid)
                proc.wait()
                pid_file = jobdir / "kernel.pid"
                if pid_file.exists():
                    # the kernel has a session of its own: whatever it started and left
                    # running (in its group) goes with it
                    _kill_group(int(pid_file.read_text()))
        if failure and not failure.startswith("timed out"):
            tail = (jobdir / "worker.log").read_bytes()[-LOG_BYTES:].decode("utf-8", "replace")
            last = [line for line in tail.splitlines() if line.strip()][-1:]
            failure += f" ({last[0][:300]})" if last else ""
        return verdicts(task, nb_cells, _read_events(jobdir / "events.jsonl"), failure)


def timed(task: Task) -> tuple[list[Row], float]:
    """:func:`run_task` and its wall-clock seconds (for progress lines, never for grades)."""
    t0 = time.perf_counter()
    rows = run_task(task)
    return rows, time.perf_counter() - t0

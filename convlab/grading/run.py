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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exercises.cells import check_call, check_cells
from . import wire

RESULTS = (*wire.OUTCOME_RESULTS, "error", "timed out")
GRACE_S = 60  # kernel start (imports convlab, Numba) and shutdown, on a busy machine
LOG_BYTES = 64 * 1024  # what is kept of the worker's own output for error messages
CHANNEL_BYTES = 64 << 20  # what is kept of the worker's event pipe


@dataclass(frozen=True)
class Limits:
    """What one notebook may use."""

    timeout_s: float = 300.0  # wall clock, from its first cell to its last
    memory_bytes: int = 1 << 30  # the kernel's data segment (RLIMIT_DATA)
    file_bytes: int = 64 << 20  # the largest file it may write (RLIMIT_FSIZE)
    disk_bytes: int = 256 << 20  # the sandbox's work folder, home and /tmp, each a tmpfs
    shm_bytes: int = 64 << 20  # its /dev/shm


@dataclass(frozen=True)
class Task:
    """One notebook of one student, with the files of its submission."""

    student: str
    notebook: str  # path inside the submission, with "/"
    files: dict[str, bytes] = field(repr=False)
    limits: Limits = Limits()
    seed: int = 0  # this run's cases (drawn once per grading run)
    sandbox: bool = True  # False: --no-sandbox (isolation only, see THREAT_MODEL)


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


PREFIX = {"correct": "Correct ({})", "incorrect": "Incorrect ({})",
          "not attempted": "Not attempted yet ({})"}
MESSAGE_CHARS = 20_000


def decide(name: str, cases: list[tuple] | None,
           probe: wire.Probe | dict[str, Any] | None,
           own: wire.Outcome | dict[str, Any] | None) -> tuple[str, str]:
    """The verdict of a check cell that ran to its end: the trusted comparison
    (:func:`.answers.judge`) decides. The check's own verdict, reported from inside the
    student's process, may only lower it (a property the values cannot show: Winograd's
    four multiplies, a race, an input changed in place), and lends its message when it
    agrees (the honest student's feedback is the check's text, word for word).

    ``probe`` and ``own``: the lines (:mod:`.wire`), or the JSON objects as they came."""
    from .answers import judge

    result, message = judge(name, cases or [], probe)
    verdict = wire.as_event(own, wire.Outcome)
    if verdict is None:
        return result, message
    own_result, own_message = verdict.result, verdict.message[:MESSAGE_CHARS]
    if not own_message.startswith(PREFIX[own_result].format(name)):
        return result, message
    if result == own_result or (result == "correct" and own_result != "correct"):
        return own_result, own_message
    return result, message


@dataclass(frozen=True)
class RunFailure:
    """Why a notebook's run ended without a ``finished``, ``timeout`` or ``died`` event
    (the worker exited early, or the grader's own clock ran out): ``timed_out`` is that
    clock, as a field, so no verdict is decided by matching a message's words."""

    message: str
    timed_out: bool = False

    def __str__(self) -> str:
        return self.message


def verdicts(task: Task, nb_cells: list[dict], events: list[wire.Event],
             failure: RunFailure | None,
             cases: dict[str, list[tuple]] | None = None) -> list[Row]:
    """One row per check cell of the notebook, from the worker's events and the
    answers its probes sent (both untrusted, read by :func:`.wire.parse_lines`: they can
    lower a grade, never raise one).

    ``failure``: why the run ended without a ``finished``, ``timeout`` or ``died`` event
    (the whole run hit its hard limit, or the worker failed), or None. ``cases``: this
    run's cases, by exercise (:func:`.answers.draw_cases`).
    """
    checks = check_cells(nb_cells)
    exercise_at = {i: name for i, name, _ in checks}
    outcome: dict[int, wire.Outcome] = {}
    probes: dict[int, wire.Probe] = {}
    errors: dict[int, tuple[str, str]] = {}
    started: set[int] = set()
    ended: set[int] = set()
    current: int | None = None
    stop: tuple[str, int | None] | None = None
    for event in events:
        if isinstance(event, wire.CellEvent):  # the worker's
            current = event.cell
            if event.kind == "start":
                started.add(current)
            elif event.kind == "end":
                ended.add(current)
                if event.error is not None:
                    errors[current] = event.error
                current = None
            else:  # "timeout", "died"
                stop = (event.kind, current)
        elif isinstance(event, wire.Finished):
            stop = ("finished", None)
        elif current not in exercise_at:
            continue
        elif isinstance(event, wire.Outcome) and event.exercise == exercise_at[current]:
            outcome[current] = event  # the check's own verdict: its message, at most
        elif isinstance(event, wire.Probe) and event.exercise == exercise_at[current]:
            probes[current] = event  # the answers to this run's cases
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
        if i in errors:
            ename, evalue = errors[i]
            result, message = "error", f"the check raised {ename}: {evalue}{earlier}"
        elif i in ended:
            result, message = decide(name, (cases or {}).get(name), probes.get(i),
                                     outcome.get(i))
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
            result = "timed out" if failure and failure.timed_out else "error"
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


def _read_channel(pipe: Any, lines: list[bytes]) -> None:
    """Keep at most CHANNEL_BYTES of the worker's event lines; drain the rest."""
    kept = 0
    for line in iter(pipe.readline, b""):
        if kept + len(line) <= CHANNEL_BYTES:
            lines.append(line)
            kept += len(line)


def _job(task: Task, jobdir: Path, names: list[str]) -> tuple[Path, dict[str, list[tuple]]]:
    """Write the job folder (job.json, this run's cases) and return it and the cases."""
    from . import answers, sandbox

    limits = task.limits
    cases = answers.draw_cases(names, task.seed)
    inside = task.sandbox
    job = {"notebook": task.notebook, "timeout_s": limits.timeout_s,
           "memory_bytes": limits.memory_bytes, "file_bytes": limits.file_bytes,
           # CPU seconds: a backstop only (two Numba threads may burn 2 s per second)
           "cpu_s": int(2 * limits.timeout_s + GRACE_S),
           "work": sandbox.WORK if inside else str(jobdir / "work"),
           "scratch": "/tmp/convlab-grade" if inside else str(jobdir / "scratch"),
           "checks": {str(i): f"from convlab import exercises as ex\n"
                              f"{check_call(name, answer)}\n"
                              f"__import__('convlab.grading.probe', fromlist=['answer'])"
                              f".answer({name!r}, {answer})"
                      for i, name, answer in check_cells(json.loads(
                          task.files[task.notebook].decode("utf-8"))["cells"])}}
    folder = jobdir / "job"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps(job))
    (folder / "cases.json").write_text(json.dumps(answers.encode_cases(cases)))
    return folder, cases


def _command(task: Task, jobdir: Path, folder: Path) -> list[str]:
    from . import sandbox

    worker = [sys.executable, "-m", "convlab.grading.worker"]
    if not task.sandbox:
        return [*worker, str(folder)]
    limits = task.limits
    rlimits = {"RLIMIT_AS": limits.memory_bytes + sandbox.ADDRESS_SPACE,
               "RLIMIT_NPROC": sandbox.PROCESSES, "RLIMIT_CORE": 0,
               "RLIMIT_FSIZE": limits.file_bytes,
               "RLIMIT_CPU": int(2 * limits.timeout_s + GRACE_S)}
    sizes = {"work_bytes": limits.disk_bytes, "tmp_bytes": limits.disk_bytes,
             "home_bytes": limits.disk_bytes, "shm_bytes": limits.shm_bytes}
    return sandbox.command(jobdir, [*worker, sandbox.JOB], {}, rlimits, sizes)


def run_task(task: Task) -> list[Row]:
    """Grade one notebook in a fresh kernel, in a sandbox holding a copy of its
    submission (or, with ``task.sandbox`` False, a process group of its own), with
    limits; the verdicts are the trusted side's (:func:`decide`)."""
    try:
        nb = json.loads(task.files[task.notebook].decode("utf-8"))
        nb_cells = nb["cells"]
        checks = check_cells(nb_cells)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as err:
        return [Row(task.student, "", "error", f"{task.notebook} is not a notebook that "
                    f"can be read: {type(err).__name__}: {err}", task.notebook)]
    if not checks:
        return []
    if task.sandbox:
        from .sandbox import unavailable

        why = unavailable()
        if why:  # a Dask worker's machine without namespaces
            return [Row(task.student, name, "error", f"not graded: cannot sandbox the "
                        f"notebook on this machine: {why}", task.notebook)
                    for _, name, _ in checks]
    with tempfile.TemporaryDirectory(prefix="convlab-grade-") as tmp:
        jobdir = Path(tmp)
        _unpack(task.files, jobdir / "work")
        folder, cases = _job(task, jobdir, [name for _, name, _ in checks])
        limits = task.limits
        failure: RunFailure | None = None
        lines: list[bytes] = []
        with open(jobdir / "worker.log", "wb") as log:
            proc = subprocess.Popen(_command(task, jobdir, folder), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=log,
                                    start_new_session=True, cwd=jobdir)
            reader = threading.Thread(target=_read_channel, args=(proc.stdout, lines),
                                      daemon=True)
            reader.start()
            try:
                code = proc.wait(timeout=limits.timeout_s + GRACE_S)
                if code != 0:
                    failure = RunFailure(f"the grader's worker exited with status {code}")
            except subprocess.TimeoutExpired:
                failure = RunFailure(f"timed out: the run passed its {limits.timeout_s:g} s "
                                     "limit", timed_out=True)
            finally:
                # in a sandbox, the launcher's death takes its PID namespace with it
                _kill_group(proc.pid)
                proc.wait()
                if not task.sandbox:
                    # the kernel has a session of its own: whatever it started and left
                    # running (in its group) goes with it. Its pid came over the pipe,
                    # first, before any cell of the notebook ran.
                    first = next(iter(wire.parse_lines(lines[:1])), None)
                    if isinstance(first, wire.KernelStarted) and first.pid > 1:
                        _kill_group(first.pid)
                reader.join(timeout=10)
                if proc.stdout is not None:
                    proc.stdout.close()
        if failure and not failure.timed_out:
            tail = (jobdir / "worker.log").read_bytes()[-LOG_BYTES:].decode("utf-8", "replace")
            last = [line for line in tail.splitlines() if line.strip()][-1:]
            if last:
                failure = RunFailure(f"{failure.message} ({last[0][:300]})")
        return verdicts(task, nb_cells, wire.parse_lines(lines), failure, cases)


def timed(task: Task) -> tuple[list[Row], float]:
    """:func:`run_task` and its wall-clock seconds (for progress lines, never for grades)."""
    t0 = time.perf_counter()
    rows = run_task(task)
    return rows, time.perf_counter() - t0

"""Grade a class: run every submitted exercise notebook, then decide each verdict outside it.

``convlab grade SUBMISSIONS... --out grades.csv`` (:func:`grade` in Python) finds each
student's notebooks (:mod:`.submissions`) and runs every notebook top to bottom in a
fresh kernel, in a sandbox of its own holding a copy of its submission, under limits
(:mod:`.sandbox`, :mod:`.run`, :mod:`.worker`). Each check cell also hands its answer
function to a probe (:mod:`.probe`) that answers this run's cases, drawn by the grader
(:mod:`.answers`) from a seed drawn once per run; the answers come back as plain data
(:mod:`.wire`) and the grader compares them with its own references: the verdict never
comes from the student's process. Results: ``correct``, ``incorrect``, ``not
attempted``, ``error`` (the check cell raised, or the kernel died before it) and ``timed
out``. Then :mod:`.report` writes the CSV, a feedback file per student, a summary table
and a histogram per exercise. :data:`THREAT_MODEL` says what is defended and what not.

Grading is embarrassingly parallel, and Numba compiles in every kernel: ``jobs=N`` runs
N notebooks at once on this machine (each kernel gets 2 Numba threads), and
``scheduler=ADDRESS`` hands the notebooks to an existing Dask distributed cluster
(``pip install 'convlab[grade]'`` on every machine; each worker builds the sandboxes).
The submission's files and the run's seed travel with each task, so workers need no
shared disk. The rows do not depend on how they were run.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ..exercises.cells import check_cells
from .run import RESULTS, Limits, Row, Task, run_task, timed
from .submissions import Submission, find_submissions

THREAT_MODEL = """\
A sandbox per notebook; verdicts decided outside it. Each notebook runs in a fresh
kernel inside Linux namespaces (no root needed): a read-only view of the system and of
Python, a private home, /tmp and /dev/shm, its own copy of the submission (each a
size-capped tmpfs), no network, its own PID namespace (nothing it starts outlives it,
and it sees no other process), only a listed environment, and a copy of convlab
without the reference solutions. Limits: wall-clock time (--timeout), memory
(--memory: data segment; address space --memory + 1 GiB), processes, disk, CPU time.

The grade is decided by the grader, outside the sandbox: it draws fresh cases for
every run, asks each check cell's answer function for its results on them (plain
numbers and arrays), and compares them itself, by exact type, dtype and shape, with its
own references. What the notebook prints or reports (the check's own verdict) can only
lower a grade, never raise it. Defended: forged verdicts, patched checks or NumPy, int
subclasses, solution(), hard-coded public cases, reading or writing anything outside
the copy (teacher's files and environment, other students, grades), startup files,
daemons, fork bombs, filling disk or shared memory, network access, killing or
stopping the grader. Not defended: a kernel exploit or a namespace escape (grade on a
patched kernel), answers computed by calling convlab or torch (the grade certifies the
values, not how they were computed; properties only the in-notebook check sees, like
Winograd's four multiplies or a race-free prange, can be forged), total memory across
a notebook's processes (per-process limits times the process limit), CPU shared with
other jobs. --no-sandbox (where namespaces are unavailable) keeps the trusted
verdicts but gives isolation only: the code runs as you, with your files."""
ISOLATION = THREAT_MODEL  # the name --help and older scripts use

Progress = Callable[[Task, list[Row], float], None]


def _tasks(submissions: Sequence[Submission], limits: Limits, seed: int,
           sandbox: bool) -> tuple[list[Task], list[Row]]:
    tasks, problems = [], []
    for sub in submissions:
        try:
            files = sub.pack()
        except (OSError, ValueError) as err:
            problems.append(Row(sub.student, "", "error", str(err), ""))
            continue
        tasks += [Task(sub.student, nb, files, limits, seed, sandbox)
                  for nb in sub.notebooks]
    return tasks, problems


def expected_exercises(tasks: Sequence[Task]) -> list[str]:
    """Every exercise some submitted notebook checks, in convlab's order (others after,
    by name)."""
    from .. import exercises

    seen = set()
    for task in tasks:
        try:
            cells = json.loads(task.files[task.notebook].decode("utf-8"))["cells"]
        except (KeyError, ValueError, TypeError, UnicodeDecodeError):
            continue
        seen |= {name for _, name, _ in check_cells(cells)}
    order = [e.name for e in exercises.ALL]
    return sorted(seen, key=lambda n: (order.index(n) if n in order else len(order), n))


def _run_local(tasks: Sequence[Task], jobs: int, progress: Progress | None) -> list[list[Row]]:
    results: list[list[Row]] = [[] for _ in tasks]
    # threads only wait: each notebook runs in processes of its own
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(timed, task): k for k, task in enumerate(tasks)}
        for future in as_completed(futures):
            k = futures[future]
            rows, seconds = future.result()
            results[k] = rows
            if progress:
                progress(tasks[k], rows, seconds)
    return results


def _run_dask(tasks: Sequence[Task], address: str,
              progress: Progress | None) -> list[list[Row]]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise RuntimeError("--scheduler needs Dask's distributed scheduler: pip install "
                           "-e '.[grade]' (on every machine of the cluster too)") from None
    results: list[list[Row]] = [[] for _ in tasks]
    with Client(address, timeout="30s") as client:
        # one try per task: a worker that dies under a notebook costs that notebook only
        futures = client.map(timed, list(tasks), pure=False, retries=0)
        index = {future.key: k for k, future in enumerate(futures)}
        for future in dask_completed(futures):
            k = index[future.key]
            try:
                rows, seconds = future.result()
            except Exception as err:  # noqa: BLE001 - the cluster's failure, not a grade
                rows, seconds = [_lost(tasks[k], err)], 0.0
            results[k] = rows
            if progress:
                progress(tasks[k], rows, seconds)
    return results


def _lost(task: Task, err: BaseException) -> Row:
    """The row of a notebook whose Dask worker died or was lost: the cause, in a line
    (Dask's KilledWorker names the task and the worker; a log warning is not a cause)."""
    name = type(err).__name__
    why = {"KilledWorker": "the Dask worker running it died (killed, out of memory, or "
                           "lost) while grading this notebook",
           "CancelledError": "the Dask scheduler cancelled it (its worker was lost)",
           "CommClosedError": "the connection to the Dask worker running it closed"
           }.get(name, f"the Dask cluster failed it: {name}: {str(err)[:300]}")
    return Row(task.student, "", "error", f"{task.notebook} was not graded: {why}",
               task.notebook)


class NoSandbox(RuntimeError):
    """Namespaces are not available here and the teacher did not pass --no-sandbox."""


def grade(paths: Sequence[str | Path], *, limits: Limits | None = None, jobs: int = 1,
          scheduler: str | None = None, exercises: Sequence[str] | None = None,
          progress: Progress | None = None, sandbox: bool = True,
          seed: int | None = None) -> list[Row]:
    """Grade every submission under ``paths``: one row per student and exercise, sorted
    by student, then in the exercises' order. ``exercises``: the ones to grade (default:
    every exercise some notebook checks); one a student's notebooks never check is "not
    attempted". A notebook that cannot be read adds a row with no exercise.

    ``sandbox``: run each notebook in a sandbox (:mod:`.sandbox`); raises
    :class:`NoSandbox` with the reason when this machine cannot, so False must be asked
    for. ``seed``: the run's cases (default: drawn from the operating system, once)."""
    if sandbox and not scheduler:
        from .sandbox import unavailable

        why = unavailable()
        if why:
            raise NoSandbox(f"cannot sandbox the notebooks: {why}; pass --no-sandbox to "
                            "grade without one (isolation only: see --help)")
    if seed is None:
        seed = secrets.randbits(63)
    submissions = find_submissions(paths)
    tasks, problems = _tasks(submissions, limits or Limits(), seed, sandbox)
    if scheduler:
        per_task = _run_dask(tasks, scheduler, progress)
    else:
        per_task = _run_local(tasks, jobs, progress)
    wanted = list(exercises) if exercises else expected_exercises(tasks)
    rows: list[Row] = list(problems)
    for sub in submissions:
        mine = [r for task, found in zip(tasks, per_task) if task.student == sub.student
                for r in found]
        latest = {r.exercise: r for r in mine if r.exercise}  # the last check cell counts
        rows += [r for r in mine if not r.exercise]
        for name in wanted:
            rows.append(latest.get(name) or Row(
                sub.student, name, "not attempted", f"no check cell for {name} in your "
                "notebooks (its cell has metadata convlab.exercise): was it deleted?", ""))
    order = {name: k for k, name in enumerate(wanted)}
    return sorted(rows, key=lambda r: (r.student, bool(r.exercise), order.get(r.exercise, 0)))


__all__ = ["ISOLATION", "RESULTS", "THREAT_MODEL", "Limits", "NoSandbox", "Row", "Submission",
           "Task", "expected_exercises", "find_submissions", "grade", "run_task"]

"""Grade a class: run every submitted exercise notebook and collect the checks' verdicts.

``convlab grade SUBMISSIONS... --out grades.csv`` (:func:`grade` in Python) finds each
student's notebooks (:mod:`.submissions`), runs every notebook top to bottom in a fresh
kernel, in a copy of its submission, in a process of its own with limits
(:mod:`.run`, :mod:`.worker`), and reads each check's verdict from the structured
outcome channel (:func:`convlab.exercises.core.record_outcome`), never from printed
text. Results: ``correct``, ``incorrect``, ``not attempted`` (the check said so, or the
notebook has no check cell for that exercise), ``error`` (the check cell raised, or the
kernel died before it) and ``timed out``. Then :mod:`.report` writes the CSV, a feedback
file per student, a summary table and a histogram per exercise.

Grading is embarrassingly parallel, and Numba compiles in every kernel: ``jobs=N`` runs
N notebooks at once on this machine (each kernel gets 2 Numba threads), and
``scheduler=ADDRESS`` hands the notebooks to an existing Dask distributed cluster
(``pip install 'convlab[grade]'`` on every machine). The submission's files travel with
each task, so workers need no shared disk. The rows do not depend on how they were run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ..exercises.cells import check_cells
from .run import RESULTS, Limits, Row, Task, run_task, timed
from .submissions import Submission, find_submissions

ISOLATION = """\
Isolation, not a security sandbox. Each notebook runs in a fresh kernel, in a
throw-away copy of its submission folder, in a process group of its own, under limits:
wall-clock time (--timeout), memory (--memory: the kernel's data segment, so a larger
allocation raises MemoryError), CPU time, file size, no core dumps. A notebook that
loops forever, crashes, calls sys.exit, deletes the files of its working folder, prints
megabytes or allocates too much loses only its own rows, and grading goes on.

It does NOT protect against a submission written to do harm: the code runs as the user
who runs convlab grade, with that user's files, network and processes. It can read or
delete files outside its copy, read other submissions, forge its own verdicts (it runs
in the same Python process as the checks), leave processes behind that escape its
process group, or exhaust the machine with processes. Grade untrusted code as an
unprivileged user in a throw-away container or virtual machine."""

Progress = Callable[[Task, list[Row], float], None]


def _tasks(submissions: Sequence[Submission], limits: Limits) -> tuple[list[Task], list[Row]]:
    tasks, problems = [], []
    for sub in submissions:
        try:
            files = sub.pack()
        except (OSError, ValueError) as err:
            problems.append(Row(sub.student, "", "error", str(err), ""))
            continue
        tasks += [Task(sub.student, nb, files, limits) for nb in sub.notebooks]
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
        futures = client.map(timed, list(tasks), pure=False)
        index = {future.key: k for k, future in enumerate(futures)}
        for future, (rows, seconds) in dask_completed(futures, with_results=True):
            k = index[future.key]
            results[k] = rows
            if progress:
                progress(tasks[k], rows, seconds)
    return results


def grade(paths: Sequence[str | Path], *, limits: Limits | None = None, jobs: int = 1,
          scheduler: str | None = None, exercises: Sequence[str] | None = None,
          progress: Progress | None = None) -> list[Row]:
    """Grade every submission under ``paths``: one row per student and exercise, sorted
    by student, then in the exercises' order. ``exercises``: the ones to grade (default:
    every exercise some notebook checks); one a student's notebooks never check is "not
    attempted". A notebook that cannot be read adds a row with no exercise."""
    submissions = find_submissions(paths)
    tasks, problems = _tasks(submissions, limits or Limits())
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


__all__ = ["ISOLATION", "RESULTS", "Limits", "Row", "Submission", "Task", "expected_exercises",
           "find_submissions", "grade", "run_task"]

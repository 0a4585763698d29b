"""How an exercise sits in a notebook: its answer cell and its check cell.

One teacher notebook holds both the solution and the student's stub, the way nbgrader
writes assignments, so a teacher already on nbgrader uses it as it is:

* the **answer cell** keeps the function's ``def`` line and wraps the reference body in
  ``### BEGIN SOLUTION`` / ``### END SOLUTION``; nbgrader metadata marks it a solution
  cell (``grade_id`` ``answer_<exercise>``);
* the **check cell** calls ``ex.<exercise>.check(<answer>)``, then, between
  ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``, asserts the verdict is
  "correct" and that the answer is right on cases drawn afresh, which the public check
  never shows (:func:`convlab.grading.answers.hidden_test`: a hard-coded table of the
  public cases fails it). nbgrader metadata marks it an autograded test cell worth :data:`POINTS`
  (``grade_id`` ``check_<exercise>``), and convlab's own metadata
  ``{"convlab": {"exercise": NAME, "answer": VAR}}`` says which exercise it checks.

The student version (``convlab release``, or nbgrader's ``generate_assignment``) puts
nbgrader's stub in place of the solution and drops the hidden assertion, so a student's
check cell prints the verdict and never raises, while an autograder that restores the
assertion gets a failing test for a wrong answer. ``convlab grade`` finds check cells
by their convlab metadata and reads verdicts from the outcome channel
(:func:`convlab.exercises.core.record_outcome`), not from the assertion.

The nbgrader metadata follows its cell schema, version 3 (``grade``, ``grade_id``,
``locked``, ``schema_version``, ``solution``, ``task``, and ``points`` on graded cells).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
# what nbgrader's ClearSolutions puts in place of a solution (its defaults for Python)
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
SCHEMA_VERSION = 3
POINTS = 1


def _nbgrader(grade_id: str, **flags: Any) -> dict[str, Any]:
    meta = {"grade": False, "grade_id": grade_id, "locked": False,
            "schema_version": SCHEMA_VERSION, "solution": False, "task": False}
    meta.update(flags)
    return meta


def answer_metadata(exercise: str) -> dict[str, Any]:
    """Metadata of the cell where the student writes ``exercise``'s answer."""
    return {"nbgrader": _nbgrader(f"answer_{exercise}", solution=True)}


def check_metadata(exercise: str, answer: str, points: int = POINTS) -> dict[str, Any]:
    """Metadata of the cell that checks ``exercise`` on the variable ``answer``."""
    return {"convlab": {"exercise": exercise, "answer": answer},
            "nbgrader": _nbgrader(f"check_{exercise}", grade=True, locked=True,
                                  points=points)}


def check_call(exercise: str, answer: str) -> str:
    """The line a check cell runs: the student sees its verdict."""
    return f"ex.{exercise}.check({answer})"


def check_source(exercise: str, answer: str) -> str:
    """A teacher's check cell: the check, then the assertion only autograders see."""
    return (f"{check_call(exercise, answer)}\n{HIDDEN_BEGIN}\n"
            f"assert ex.{exercise}.last_status == \"correct\", ex.{exercise}.last_message\n"
            f"from convlab.grading.answers import hidden_test\n"
            f"hidden_test({exercise!r}, {answer})\n"
            f"{HIDDEN_END}")


def check_cells(cells: Iterable[Any]) -> list[tuple[int, str, str]]:
    """(index, exercise, answer variable) of every check cell, in notebook order."""
    found = []
    for i, cell in enumerate(cells):
        meta = cell.get("metadata", {}).get("convlab", {})
        if cell.get("cell_type") == "code" and "exercise" in meta:
            found.append((i, str(meta["exercise"]), str(meta["answer"])))
    return found


def solution_regions(source: str) -> list[str]:
    """The text between each ``### BEGIN SOLUTION`` and ``### END SOLUTION`` line."""
    regions: list[str] = []
    current: list[str] | None = None
    for line in source.split("\n"):
        if "BEGIN SOLUTION" in line:
            current = []
        elif "END SOLUTION" in line and current is not None:
            regions.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return regions

"""Student versions of exercise notebooks, written from the teacher versions.

A teacher notebook (``notebooks/exercises/source/``) holds the solutions between
``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines and autograder-only assertions
between ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``, with nbgrader's cell
metadata (:mod:`convlab.exercises.cells`). :func:`student_version` does what nbgrader's
``generate_assignment`` does to the cells, so one source serves both kinds of teacher:

* each solution region becomes nbgrader's stub (``# YOUR CODE HERE`` then
  ``raise NotImplementedError()``), indented like its ``BEGIN`` line; a markdown
  region becomes ``YOUR ANSWER HERE``;
* hidden-test regions are removed, delimiter lines included;
* solution cells become undeletable, graded and read-only cells undeletable and
  read-only (nbgrader's ``LockCells`` defaults);
* outputs and execution counts are cleared.

What it leaves to nbgrader: its gradebook and the checksums it stores in the cells
(``nbgrader generate_assignment`` adds them; ``convlab grade`` needs neither).

``convlab release SOURCE... --out DIR`` writes one student notebook per teacher
notebook; ``--check`` only compares (exit status 1 and the names of the notebooks that
differ), which is how the repository keeps its handed-out notebooks in step.
:func:`teacher_version` goes the other way once, for a handed-out notebook written
before the teacher versions existed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .exercises.cells import CODE_STUB, TEXT_STUB


class ReleaseError(ValueError):
    """A teacher notebook whose markers do not pair up."""


def _replace_regions(source: str, begin: str, end: str, stub: str | None,
                     where: str) -> tuple[str, bool]:
    """``source`` with every begin..end region replaced by ``stub`` (indented like the
    begin line), or removed when ``stub`` is None; and whether there was one."""
    out: list[str] = []
    inside = found = False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise ReleaseError(f"{where}: a second '### {begin}' before '### {end}'")
            inside = found = True
            if stub is not None:
                indent = re.match(r"\s*", line).group(0)  # type: ignore[union-attr]
                out += [indent + s for s in stub.split("\n")]
        elif end in line:
            if not inside:
                raise ReleaseError(f"{where}: '### {end}' without a '### {begin}' before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ReleaseError(f"{where}: '### {begin}' without '### {end}'")
    return "\n".join(out), found


def _flag(cell: dict[str, Any], name: str) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get(name, False))


def student_version(nb: dict[str, Any], name: str = "notebook") -> dict[str, Any]:
    """The student version of teacher notebook ``nb`` (a new object; ``nb`` is kept)."""
    out = copy.deepcopy(nb)
    for i, cell in enumerate(out["cells"]):
        where = f"{name}, cell {i}"
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        stub = CODE_STUB if cell["cell_type"] == "code" else TEXT_STUB
        source, had_solution = _replace_regions(source, "BEGIN SOLUTION", "END SOLUTION",
                                                stub, where)
        source, had_hidden = _replace_regions(source, "BEGIN HIDDEN TESTS",
                                              "END HIDDEN TESTS", None, where)
        if had_solution and not _flag(cell, "solution"):
            raise ReleaseError(f"{where}: a solution region in a cell that nbgrader's "
                               "metadata does not mark as a solution cell")
        if had_hidden and not _flag(cell, "grade"):
            raise ReleaseError(f"{where}: hidden tests in a cell that nbgrader's metadata "
                               "does not mark as graded")
        cell["source"] = source
        meta = cell.setdefault("metadata", {})
        if _flag(cell, "solution"):
            meta["deletable"] = False
        elif _flag(cell, "grade") or _flag(cell, "locked"):
            meta["deletable"] = False
            meta["editable"] = False
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    out.get("metadata", {}).pop("celltoolbar", None)
    return out


STUB = re.compile(r"^(?P<indent>[ \t]*)# YOUR CODE HERE\n(?P=indent)"
                  r"(raise NotImplementedError(\(\))?|pass)[ \t]*$", re.M)


def teacher_version(nb: dict[str, Any], solutions: dict[str, Any] | None = None,
                    name: str = "notebook") -> dict[str, Any]:
    """The teacher version of a handed-out exercise notebook: how a notebook written the
    older way (stubs only, the solution in ``exercise.solution()``) comes under one source.

    For every check cell (convlab metadata), the code cell before it is its answer cell:
    its stub (``# YOUR CODE HERE`` then ``raise NotImplementedError`` or ``pass``) becomes
    the body of the exercise's reference solution between the solution markers, and both
    cells get nbgrader's metadata and the teacher's check (:mod:`.exercises.cells`).
    ``solutions`` maps exercise names to solution functions (default: each exercise's
    ``solution()``). The locks a release adds are removed. ``student_version`` of the
    result gives ``nb`` back, up to nbgrader's stub.
    """
    from .exercises import cells
    from .exercises.core import source_of

    out = copy.deepcopy(nb)
    checks = cells.check_cells(out["cells"])
    if not checks:
        raise ReleaseError(f"{name}: no check cell (metadata convlab.exercise)")
    for i, exercise, answer in checks:
        if i == 0 or out["cells"][i - 1]["cell_type"] != "code":
            raise ReleaseError(f"{name}, cell {i}: the check of {exercise} has no code cell "
                               "before it for the answer")
        if solutions is not None and exercise in solutions:
            fn = solutions[exercise]
        else:
            from . import exercises

            fn = getattr(exercises, exercise).solution(show=False)
        lines = source_of(fn).rstrip("\n").split("\n")
        first = next(k for k, line in enumerate(lines) if line.startswith("def "))
        body = "\n".join(lines[first + 1:])
        cell = out["cells"][i - 1]
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        match = STUB.search(source)
        if match is None:
            raise ReleaseError(f"{name}, cell {i - 1}: no '# YOUR CODE HERE' stub to put the "
                               f"solution of {exercise} in")
        indent = match.group("indent")
        cell["source"] = (source[:match.start()] + f"{indent}{cells.SOLUTION_BEGIN}\n{body}\n"
                          f"{indent}{cells.SOLUTION_END}" + source[match.end():])
        check = out["cells"][i]
        check["source"] = cells.check_source(exercise, answer)
        for target, meta in ((cell, cells.answer_metadata(exercise)),
                             (check, cells.check_metadata(exercise, answer))):
            target["metadata"] = {k: v for k, v in target.get("metadata", {}).items()
                                  if k not in ("deletable", "editable")}
            target["metadata"].update(meta)
    return out


def teacher_notebooks(paths: Sequence[str | Path]) -> list[Path]:
    """The notebooks named, and those directly inside the folders named, sorted."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found += sorted(p for p in item.glob("*.ipynb"))
        elif item.suffix == ".ipynb" and item.is_file():
            found.append(item)
        else:
            raise UsageError(f"{str(item)!r} is neither a notebook (.ipynb) nor a folder")
    if not found:
        raise UsageError(f"no notebooks in {', '.join(map(str, paths))}")
    return found


def release(sources: Sequence[str | Path], out: str | Path,
            check: bool = False) -> tuple[list[Path], list[Path]]:
    """Write (or, with ``check``, only compare) the student version of every teacher
    notebook in ``sources`` as ``out/<same name>``. Returns (written or compared paths,
    those whose file differed from the student version)."""
    import nbformat

    out = Path(out)
    targets, differ = [], []
    for src in teacher_notebooks(sources):
        target = out / src.name
        if target.resolve() == src.resolve():
            raise UsageError(f"--out {str(out)!r} would overwrite the teacher notebook {src}")
        nb = nbformat.read(src, as_version=4)
        student = nbformat.from_dict(student_version(nb, str(src)))
        nbformat.validate(student)
        text = nbformat.writes(student) + "\n"
        targets.append(target)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            differ.append(target)
            if not check:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    return targets, differ

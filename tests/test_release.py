"""One source for both versions of each exercise notebook.

The teacher notebooks (notebooks/exercises/source/) hold the solutions and nbgrader's
metadata; ``convlab release`` writes the student notebooks from them. Here: the committed
student notebooks are exactly what release writes, release strips what nbgrader strips,
each teacher solution is the one ``solution()`` prints, and nbgrader itself (when
installed) generates the same student notebook and autogrades submissions of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import convlab.exercises as ex
from convlab.exercises import cells
from convlab.exercises.arithmetic import SAME_CASES
from convlab.exercises.core import source_of
from convlab.release import ReleaseError, release, student_version, teacher_version

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
EXERCISES = REPO / "notebooks" / "exercises"
TEACHER = EXERCISES / "source"
TEACHER_NOTEBOOKS = sorted(TEACHER.glob("*.ipynb"))


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def test_committed_student_notebooks_are_what_release_writes(tmp_path):
    assert len(TEACHER_NOTEBOOKS) == len(list(EXERCISES.glob("*.ipynb"))) >= 6
    targets, differ = release([TEACHER], EXERCISES, check=True)
    assert [t.name for t in targets] == [p.name for p in TEACHER_NOTEBOOKS]
    assert differ == [], (f"{[p.name for p in differ]} differ from their teacher versions: "
                          "run `convlab release notebooks/exercises/source --out "
                          "notebooks/exercises`")
    # and writing them afresh gives the committed bytes
    written, _ = release([TEACHER], tmp_path)
    for path in written:
        assert path.read_bytes() == (EXERCISES / path.name).read_bytes()


def test_the_cli_check_fails_on_a_stale_student_notebook(tmp_path):
    stale = tmp_path / "handout"
    release([TEACHER], stale)
    nb = json.loads((stale / "01_shapes.ipynb").read_text())
    nb["cells"][0]["source"] = ["an old text"]
    (stale / "01_shapes.ipynb").write_text(json.dumps(nb))
    proc = subprocess.run([sys.executable, "-m", "convlab.cli", "release", str(TEACHER),
                           "--out", str(stale), "--check"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "differs from its teacher version" in proc.stdout and "01_shapes" in proc.stdout
    assert "an old text" in (stale / "01_shapes.ipynb").read_text()  # --check writes nothing


@pytest.mark.parametrize("path", TEACHER_NOTEBOOKS, ids=lambda p: p.stem)
def test_teacher_cells_carry_solution_and_hidden_test(path):
    nb = _read(path)
    student = student_version(nb, path.name)
    for i, name, answer in cells.check_cells(nb.cells):
        check, solution = nb.cells[i], nb.cells[i - 1]
        assert check.metadata["nbgrader"] == cells.check_metadata(name, answer)["nbgrader"]
        assert solution.metadata["nbgrader"] == cells.answer_metadata(name)["nbgrader"]
        assert check.source == cells.check_source(name, answer)
        # the solution is the one solution() prints: its body, between the markers
        src = source_of(getattr(ex, name).solution(show=False)).rstrip("\n").split("\n")
        body = "\n".join(src[next(k for k, s in enumerate(src) if s.startswith("def ")) + 1:])
        assert cells.solution_regions(solution.source) == [body]
        # the student sees the stub and the bare check
        assert student.cells[i].source == cells.check_call(name, answer)
        stub = "    # YOUR CODE HERE\n    raise NotImplementedError()"
        assert stub in student.cells[i - 1].source
        assert "SOLUTION" not in student.cells[i - 1].source
        assert student.cells[i].metadata["editable"] is False
        assert student.cells[i - 1].metadata["deletable"] is False


@pytest.mark.parametrize("path", TEACHER_NOTEBOOKS, ids=lambda p: p.stem)
def test_teacher_version_of_the_release_is_the_teacher_notebook(path):
    teacher = _read(path)
    back = teacher_version(student_version(teacher, path.name), name=path.name)
    assert json.dumps(back, sort_keys=True) == json.dumps(teacher, sort_keys=True)


def test_teacher_version_of_an_older_handout():
    """A notebook written before the teacher versions: a `pass` or bare
    `raise NotImplementedError` stub, the check cell with convlab's metadata only."""
    older = _nb(("import numpy as np", {}),
                ("def same_padding(kernel, dilation):\n    # YOUR CODE HERE\n    pass",
                 {}),
                ("ex.same_padding.check(same_padding)",
                 {"convlab": {"exercise": "same_padding", "answer": "same_padding"}}))
    teacher = teacher_version(older, name="old.ipynb")
    assert cells.solution_regions(teacher.cells[1].source) == [
        cells.solution_regions(_read(TEACHER / "01_shapes.ipynb").cells[
            cells.check_cells(_read(TEACHER / "01_shapes.ipynb").cells)[1][0] - 1].source)[0]]
    assert teacher.cells[2].source == cells.check_source("same_padding", "same_padding")
    assert teacher.cells[2].metadata == cells.check_metadata("same_padding", "same_padding")
    assert student_version(teacher).cells[1].source == (
        "def same_padding(kernel, dilation):\n    # YOUR CODE HERE\n"
        "    raise NotImplementedError()")
    no_stub = _nb(("def f():\n    return 1", {}), ("ex.same_padding.check(f)",
                  {"convlab": {"exercise": "same_padding", "answer": "f"}}))
    with pytest.raises(ReleaseError, match="no '# YOUR CODE HERE' stub"):
        teacher_version(no_stub)


def _nb(*sources: tuple[str, dict]) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s, metadata=m) for s, m in sources]
    for cell in nb.cells:
        cell.outputs = [nbformat.v4.new_output("stream", text="old")]
        cell.execution_count = 3
    return nb


def test_student_version_strips_what_nbgrader_strips():
    teacher = _nb(
        ("def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n"
         "# after", cells.answer_metadata("f")),
        ("ex.f.check(f)\n### BEGIN HIDDEN TESTS\nassert secret\n### END HIDDEN TESTS\n"
         "print('shown')", cells.check_metadata("f", "f")),
        ("print('plain')", {}))
    keep = json.dumps(teacher, sort_keys=True)
    student = student_version(teacher)
    assert json.dumps(teacher, sort_keys=True) == keep  # the teacher version is untouched
    assert [c.source for c in student.cells] == [
        "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n# after",
        "ex.f.check(f)\nprint('shown')", "print('plain')"]
    assert all(c.outputs == [] and c.execution_count is None for c in student.cells)
    assert student.cells[0].metadata["deletable"] is False
    assert "editable" not in student.cells[0].metadata  # the student writes there
    assert student.cells[1].metadata["editable"] is False
    assert student.cells[2].metadata == {}


@pytest.mark.parametrize("source, meta, words", [
    ("### BEGIN SOLUTION\nx = 1", cells.answer_metadata("f"), "without '### END SOLUTION'"),
    ("x = 1\n### END SOLUTION", cells.answer_metadata("f"), "without a '### BEGIN SOLUTION'"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", cells.answer_metadata("f"),
     "a second"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", {}, "does not mark as a solution cell"),
    ("### BEGIN HIDDEN TESTS\nassert x\n### END HIDDEN TESTS", cells.answer_metadata("f"),
     "does not mark as graded"),
])
def test_bad_markers_are_named(source, meta, words):
    with pytest.raises(ReleaseError, match="teach.ipynb, cell 0") as info:
        student_version(_nb((source, meta)), "teach.ipynb")
    assert words in str(info.value)


# ------------------------------------------------------------------ nbgrader itself
def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_PATH"}
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args,
                           f"--CourseDirectory.root={course}"], cwd=course, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)}:\n{proc.stderr[-3000:]}"
    return proc


def _without_nbgrader_bookkeeping(nb) -> list:
    """(cell type, source, metadata) with the checksum and cell type nbgrader records."""
    out = []
    for cell in nb.cells:
        meta = json.loads(json.dumps(cell.metadata))
        for key in ("checksum", "cell_type"):
            meta.get("nbgrader", {}).pop(key, None)
        out.append((cell.cell_type, cell.source, meta))
    return out


@pytest.mark.slow
def test_nbgrader_round_trip(tmp_path):
    """nbgrader's generate_assignment makes the same student notebook as convlab release,
    and its autograde scores submissions by the hidden assertions: 2, 1 and 0 of 2, and
    1 for a student who hard-coded the public cases of same_padding."""
    pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install "
                                           "-e '.[test]' installs it)")
    course, name = tmp_path / "course", "01_shapes.ipynb"
    (course / "source" / "ps1").mkdir(parents=True)
    shutil.copy(TEACHER / name, course / "source" / "ps1" / name)
    _nbgrader(course, "generate_assignment", "ps1", "--force")
    theirs = _read(course / "release" / "ps1" / name)
    ours = _read(EXERCISES / name)
    assert _without_nbgrader_bookkeeping(theirs) == _without_nbgrader_bookkeeping(ours)

    teacher = _read(TEACHER / name)
    answers = {cells.check_cells(teacher.cells)[k][1]: teacher.cells[i - 1].source
               for k, (i, _, _) in enumerate(cells.check_cells(teacher.cells))}
    wrong_same = ("def same_padding(kernel, dilation):\n"
                  "    return (dilation * (kernel - 1) // 2,) * 2\n")
    # the public check's cases, hard-coded: the check says correct, the hidden test not
    table = {(k, d): (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in SAME_CASES}
    hard_coded = f"TABLE = {table!r}\ndef same_padding(kernel, dilation):\n" \
                 "    return TABLE.get((kernel, dilation), (0, 0))\n"
    for student, fill in [("alice", answers),
                          ("bob", {}),
                          ("carol", {"output_size": answers["output_size"],
                                     "same_padding": wrong_same}),
                          ("dave", {"output_size": answers["output_size"],
                                    "same_padding": hard_coded})]:
        nb = _read(EXERCISES / name)  # what the student got from convlab release
        for i, exercise, _ in cells.check_cells(nb.cells):
            if exercise in fill:
                nb.cells[i - 1].source = fill[exercise]
        folder = course / "submitted" / student / "ps1"
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / name)
    _nbgrader(course, "autograde", "ps1", "--create", "--force")

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s: (gb.find_submission("ps1", s).score,
                      gb.find_grade("check_same_padding", name[:-6], "ps1", s).score)
                  for s in ("alice", "bob", "carol", "dave")}
    assert scores == {"alice": (2.0, 1.0), "bob": (0.0, 0.0), "carol": (1.0, 0.0),
                      "dave": (1.0, 0.0)}

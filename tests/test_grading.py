"""convlab grade on a planted class.

Every submission is the handed-out notebooks/exercises/01_shapes.ipynb (two exercises,
output_size and same_padding) with its answer cells filled in the way one kind of
student does: right, each classic wrong answer, untouched, a syntax error, an endless
loop, sys.exit, a 1 GB allocation, a crash of the kernel, a cell that deletes every file
in its working folder, one that prints megabytes, an edited check cell and a deleted
one (two misbehaviours share a notebook where they hit different exercises). Some
submissions are folders (one per student, with a data file beside the notebook), the
others notebooks side by side in the class folder.

The class is graded once through the command line (``--jobs 2``); a few of its students
are graded again serially and on a Dask LocalCluster, and must get the same rows.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convlab.exercises.cells import check_cells
from convlab.grading.sandbox import unavailable

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
HANDOUT = REPO / "notebooks" / "exercises" / "01_shapes.ipynb"
TIMEOUT_S = 25  # per notebook: the endless loop costs this much
# the sandbox's own tests are in test_grading_attacks.py; here, grading as such, in a
# sandbox where this machine can build one
SANDBOX = unavailable() is None

RIGHT_SIZE = """def output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
"""
RIGHT_SAME = """def same_padding(kernel, dilation):
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2
"""


def size_with(expr: str) -> str:
    return (f"import math\n\ndef output_size(size, kernel, stride, padding, dilation):\n"
            f"    return {expr}\n")


def same_with(expr: str) -> str:
    return f"def same_padding(kernel, dilation):\n    return {expr}\n"


DELETE_ALL = """import os, shutil
for name in os.listdir("."):
    shutil.rmtree(name) if os.path.isdir(name) else os.remove(name)
"""

# student: (output_size answer cell, same_padding answer cell, how it is submitted);
# each misbehaviour is planted in one exercise, so the other shows it costs nothing more
PLANTED = {
    "correct": (RIGHT_SIZE, RIGHT_SAME, "folder"),
    "wrong_a": (size_with("math.ceil((size + 2*padding - dilation*(kernel-1) - 1) / stride)"
                          " + 1"),
                same_with("(dilation * (kernel - 1) // 2,) * 2"), "folder"),
    "wrong_b": (size_with("(size + 2*padding - (kernel-1) - 1) // stride + 1"),
                same_with("(dilation*(kernel-1) - dilation*(kernel-1)//2, "
                          "dilation*(kernel-1)//2)"), "file"),
    "wrong_c": (size_with("(size + padding - dilation*(kernel-1) - 1) // stride + 1"),
                same_with("((kernel-1)//2, (kernel-1) - (kernel-1)//2)"), "file"),
    "wrong_d": (size_with("(size + 2*padding - dilation*(kernel-1)) // stride + 1"),
                RIGHT_SAME, "file"),
    "untouched": (None, None, "folder"),
    "broken": ("def output_size(size, kernel stride, padding, dilation):\n    return size\n",
               "import sys\nsys.exit('bye')\n" + RIGHT_SAME, "folder"),
    "endless": (RIGHT_SIZE, "while True:\n    pass\n" + RIGHT_SAME, "folder"),
    "hog_crash": ("import numpy as np\nhog = np.ones(10**9, dtype=np.uint8)  # 1 GB\n"
                  + RIGHT_SIZE, "import ctypes\nctypes.string_at(0)  # a segfault\n"
                  + RIGHT_SAME, "file"),
    "deleter_printer": (RIGHT_SIZE + "\n" + DELETE_ALL,
                        "print('x' * 5_000_000)\nfor i in range(20):\n    print('y' * 500_000)\n"
                        + RIGHT_SAME, "folder"),
    "edited": (None, RIGHT_SAME, "file"),  # its output_size check edited, same_padding's gone
}

# (student, exercise): (result, words the message must contain)
EXPECTED = {
    ("correct", "output_size"): ("correct", ["Correct (output_size)"]),
    ("correct", "same_padding"): ("correct", ["Correct (same_padding)"]),
    ("wrong_a", "output_size"): ("incorrect", ["ceil"]),
    ("wrong_a", "same_padding"): ("incorrect", ["odd total"]),
    ("wrong_b", "output_size"): ("incorrect", ["left out the dilation"]),
    ("wrong_b", "same_padding"): ("incorrect", ["bottom/right"]),
    ("wrong_c", "output_size"): ("incorrect", ["both sides"]),
    ("wrong_c", "same_padding"): ("incorrect", ["left out the dilation"]),
    ("wrong_d", "output_size"): ("incorrect", ["forgot the -1"]),
    ("wrong_d", "same_padding"): ("correct", []),
    ("untouched", "output_size"): ("not attempted", ["NotImplementedError"]),
    ("untouched", "same_padding"): ("not attempted", ["NotImplementedError"]),
    ("broken", "output_size"): ("error", ["NameError", "SyntaxError"]),
    ("broken", "same_padding"): ("error", ["NameError", "SystemExit: bye"]),
    ("endless", "output_size"): ("correct", []),
    ("endless", "same_padding"): ("timed out", ["never ran", "while True:",
                                                f"{TIMEOUT_S} s limit"]),
    ("hog_crash", "output_size"): ("error", ["NameError", "MemoryError"]),
    ("hog_crash", "same_padding"): ("error", ["kernel died", "import ctypes"]),
    ("deleter_printer", "output_size"): ("correct", []),
    ("deleter_printer", "same_padding"): ("correct", []),
    ("edited", "output_size"): ("not attempted", []),  # its print("Correct") is undone
    ("edited", "same_padding"): ("not attempted", ["no check cell for same_padding"]),
}


def plant(folder: Path, students: dict = PLANTED) -> Path:
    """Write the planted class into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for student, (size, same, how) in students.items():
        nb = nbformat.read(HANDOUT, as_version=4)
        for i, exercise, _ in check_cells(nb.cells):
            answer = {"output_size": size, "same_padding": same}[exercise]
            if answer is not None:
                nb.cells[i - 1].source = answer
        if student == "edited":
            checks = check_cells(nb.cells)
            nb.cells[checks[0][0]].source = 'print("Correct (output_size): trust me")'
            del nb.cells[checks[1][0]]
        if how == "folder":
            (folder / student).mkdir()
            nbformat.write(nb, folder / student / HANDOUT.name)
            (folder / student / "data.txt").write_text("a file the notebook may read\n")
        else:
            nbformat.write(nb, folder / f"{student}.ipynb")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The planted class graded by the command line, 2 notebooks at a time."""
    tmp = tmp_path_factory.mktemp("grade")
    klass = plant(tmp / "class")
    before = _snapshot(klass)
    out = tmp / "results" / "grades.csv"
    out.parent.mkdir()
    bare = [] if SANDBOX else ["--no-sandbox"]
    proc = subprocess.run([sys.executable, "-m", "convlab.cli", "grade", str(klass),
                           "--out", str(out), "--jobs", "2", "--timeout", str(TIMEOUT_S),
                           *bare],
                          capture_output=True, text=True, cwd=tmp, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"rows": rows, "out": out, "proc": proc, "class": klass, "before": before}


def test_every_planted_submission_gets_its_rows(graded):
    rows = graded["rows"]
    assert list(rows[0]) == ["student", "exercise", "result", "message", "notebook"]
    got = {(r["student"], r["exercise"]): r for r in rows}
    assert len(rows) == len(got) == len(EXPECTED), sorted(got)
    for key, (result, words) in EXPECTED.items():
        row = got[key]
        assert row["result"] == result, (key, row)
        for word in words:
            assert word in row["message"], (key, word, row["message"])
    for r in rows:  # a folder's notebook keeps its name; a loose one is the student's
        if r["notebook"]:
            assert r["notebook"] == ("01_shapes.ipynb" if PLANTED[r["student"]][2] == "folder"
                                     else f"{r['student']}.ipynb"), r
    # sorted by student, exercises in convlab's order
    assert [(r["student"], r["exercise"]) for r in rows] == sorted(
        EXPECTED, key=lambda k: (k[0], k[1] != "output_size"))


def test_verdicts_are_the_checks_own_messages(graded):
    """The message of a check that ran is exactly what the student's check printed."""
    import convlab.exercises as ex

    wrong = next(r for r in graded["rows"] if (r["student"], r["exercise"]) ==
                 ("wrong_d", "output_size"))
    ns: dict = {}
    exec(PLANTED["wrong_d"][0], ns)
    ex.output_size.check(ns["output_size"])
    assert wrong["message"] == ex.output_size.last_message


def test_submissions_are_left_as_they_were(graded):
    """The deleter emptied its copy, not the class folder."""
    assert _snapshot(graded["class"]) == graded["before"]


def test_feedback_summary_and_histograms(graded):
    out = graded["out"]
    feedback = out.parent / "grades_feedback"
    assert sorted(p.stem for p in feedback.glob("*.md")) == sorted(PLANTED)
    text = (feedback / "wrong_a.md").read_text()
    assert text.startswith("# Feedback for wrong_a\n\n0 of 2 exercises correct.")
    assert "## output_size: incorrect" in text and "ceil" in text
    summary = (out.parent / "grades_summary.md").read_text()
    counts = {}
    for (_, exercise), (result, _) in EXPECTED.items():
        counts.setdefault(exercise, {}).setdefault(result, 0)
        counts[exercise][result] += 1
    for exercise, by_result in counts.items():
        line = next(s for s in summary.splitlines() if s.startswith(f"| {exercise} "))
        cells = [c.strip() for c in line.strip("|").split("|")]
        from convlab.grading import RESULTS

        assert cells[1:] == [str(by_result.get(r, 0)) for r in RESULTS], (line, by_result)
    assert summary in graded["proc"].stdout  # the table is printed too
    png = out.parent / "grades.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one progress line per notebook, on stderr
    assert graded["proc"].stderr.count("graded ") == len(PLANTED)


def test_the_help_states_the_threat_model():
    proc = subprocess.run([sys.executable, "-m", "convlab.cli", "grade", "--help"],
                          capture_output=True, text=True)
    text = " ".join(proc.stdout.split())
    assert "A sandbox per notebook; verdicts decided outside it." in text
    assert "Not defended:" in text and "--no-sandbox" in text


SUBSET = ["broken", "wrong_d"]  # correct, incorrect and error rows


def _subset_rows(graded) -> list[tuple]:
    return [tuple(r.values()) for r in graded["rows"] if r["student"] in SUBSET]


def _as_tuples(rows) -> list[tuple]:
    return [(r.student, r.exercise, r.result, r.message, r.notebook) for r in rows]


def test_serial_run_gives_the_same_rows(graded, tmp_path):
    from convlab.grading import Limits, grade

    klass = plant(tmp_path / "class", {s: PLANTED[s] for s in SUBSET})
    rows = grade([klass], limits=Limits(timeout_s=TIMEOUT_S), jobs=1, sandbox=SANDBOX)
    assert _as_tuples(rows) == _subset_rows(graded)


@pytest.mark.slow
def test_dask_cluster_gives_the_same_rows(graded, tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not "
                                      "installed (pip install -e '.[grade]')")
    from convlab.grading import Limits, grade

    klass = plant(tmp_path / "class", {s: PLANTED[s] for s in SUBSET})
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        rows = grade([klass], limits=Limits(timeout_s=TIMEOUT_S),
                     scheduler=cluster.scheduler_address, sandbox=SANDBOX)
    assert _as_tuples(rows) == _subset_rows(graded)


def test_finding_submissions(tmp_path):
    from convlab.grading import find_submissions

    klass = plant(tmp_path / "class", {"a": PLANTED["correct"], "b": PLANTED["wrong_b"]})
    (klass / "a" / ".ipynb_checkpoints").mkdir()
    (klass / "a" / ".ipynb_checkpoints" / "x-checkpoint.ipynb").write_text("{}")
    (klass / "notes.txt").write_text("beside the loose notebooks")
    subs = find_submissions([klass])
    assert [(s.student, s.notebooks, s.files) for s in subs] == [
        ("a", ("01_shapes.ipynb",), ("01_shapes.ipynb", "data.txt")),
        ("b", ("b.ipynb",), ("b.ipynb", "notes.txt"))]
    assert [s.student for s in find_submissions([klass / "b.ipynb"])] == ["b"]
    shutil.copy(klass / "b.ipynb", tmp_path / "b.ipynb")
    with pytest.raises(ValueError, match="same student name: 'b'"):
        find_submissions([klass, tmp_path / "b.ipynb"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no notebooks in"):
        find_submissions([empty])
    with pytest.raises(ValueError, match="no such file or folder"):
        find_submissions([tmp_path / "nope"])


def test_an_unreadable_notebook_is_an_error_row(tmp_path):
    from convlab.grading import grade

    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "zed.ipynb").write_text("{not json")
    nb = nbformat.read(HANDOUT, as_version=4)
    nbformat.write(nb, tmp_path / "class" / "amy.ipynb")
    rows = grade([tmp_path / "class"], exercises=["output_size"], sandbox=SANDBOX)
    assert [(r.student, r.exercise, r.result) for r in rows] == [
        ("amy", "output_size", "not attempted"), ("zed", "", "error"),
        ("zed", "output_size", "not attempted")]
    assert "not a notebook that can be read" in rows[1].message


def test_memory_size_argument():
    from convlab.cli import _size

    assert _size("1GiB") == _size("1G") == _size("1gb") == 1 << 30
    assert _size("512M") == 512 << 20 and _size("2000") == 2000
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(Exception, match="expected a size"):
            _size(bad)


def test_limits_reach_the_kernel(tmp_path):
    """The kernel runs with the data-segment and file-size limits, in the copy."""
    from convlab.grading import Limits, Task, run_task

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, resource\n"
        "assert resource.getrlimit(resource.RLIMIT_DATA) == (700 << 20, 700 << 20)\n"
        "assert resource.getrlimit(resource.RLIMIT_FSIZE) == (5 << 20, 5 << 20)\n"
        "assert os.path.exists('data.txt') and os.getcwd() != " + repr(str(tmp_path)) + "\n"
        "assert os.environ['NUMBA_NUM_THREADS'] == '2'\n"
        "def output_size(size, kernel, stride, padding, dilation):\n"
        "    return (size + 2*padding - dilation*(kernel-1) - 1) // stride + 1\n"),
        nbformat.v4.new_code_cell("ex.output_size.check(output_size)",
                                  metadata={"convlab": {"exercise": "output_size",
                                                        "answer": "output_size"}})]
    task = Task("t", "n.ipynb", {"n.ipynb": nbformat.writes(nb).encode(), "data.txt": b"x"},
                Limits(timeout_s=60, memory_bytes=700 << 20, file_bytes=5 << 20),
                sandbox=SANDBOX)
    rows = run_task(task)
    assert [(r.exercise, r.result) for r in rows] == [("output_size", "correct")], rows


def test_orphans_are_killed(tmp_path):
    """Without a sandbox, a process the notebook leaves running in its group dies with
    the kernel (the kernel's pid comes over the worker's pipe)."""
    from convlab.grading import Limits, Task, run_task

    marker = tmp_path / "alive"
    nb = nbformat.v4.new_notebook()
    child = f"import time, pathlib\nwhile True: pathlib.Path({str(marker)!r}).touch(); " \
            "time.sleep(0.2)"
    nb.cells = [nbformat.v4.new_code_cell(
        f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "def output_size(size, kernel, stride, padding, dilation):\n    return 1\n"),
        nbformat.v4.new_code_cell("ex.output_size.check(output_size)",
                                  metadata={"convlab": {"exercise": "output_size",
                                                        "answer": "output_size"}})]
    rows = run_task(Task("t", "n.ipynb", {"n.ipynb": nbformat.writes(nb).encode()},
                         Limits(timeout_s=60), sandbox=False))
    assert rows[0].result == "incorrect", rows
    assert marker.exists()  # the background process ran
    marker.unlink()
    time.sleep(1.0)
    assert not marker.exists(), "the notebook's background process outlived the grading"

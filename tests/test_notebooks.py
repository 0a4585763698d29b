"""Every notebook under notebooks/ runs top to bottom with CONVLAB_QUICK=1.

Each notebook is its own test.  The kernel is this interpreter: a throw-away
kernelspec named python3 whose argv starts with ``sys.executable`` is put first
on JUPYTER_PATH, and the first cell checks it.

Exercises come in two versions of each notebook, written from one source:

* **solved**: the teacher version (notebooks/exercises/source/), solutions in place
  between ``### BEGIN SOLUTION`` / ``### END SOLUTION``, run as a teacher has it; every
  check must say "correct" (the cell's own hidden assertion says so too);
* **as handed out**: the student version (notebooks/exercises/, what ``convlab release``
  writes from the teacher version; tests/test_release.py keeps them in step), stubs
  untouched; every check cell must say "not attempted" (a teacher can hand them out and
  running them never crashes).

A check cell is found by its metadata, ``{"convlab": {"exercise": NAME, "answer": VAR}}``:
it calls ``ex.NAME.check(VAR)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXERCISES = NOTEBOOKS / "exercises"
TEACHER = EXERCISES / "source"
ALL = sorted(p for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
CELL_TIMEOUT_S = 600


def _name(path: Path) -> str:
    return path.relative_to(NOTEBOOKS).with_suffix("").as_posix()


def _cases() -> list:
    cases = []
    for path in ALL:
        if path.parent == EXERCISES:
            cases.append(pytest.param(path, "as-handed-out", id=f"{_name(path)}[as-handed-out]"))
        elif path.parent == TEACHER:
            cases.append(pytest.param(path, "solved", id=f"{_name(path)}[solved]"))
        else:
            cases.append(pytest.param(path, None, id=_name(path)))
    return cases


def _check_cells(nb) -> list[tuple[int, str, str]]:
    from convlab.exercises.cells import check_cells

    return check_cells(nb.cells)


def _prepare(nb, mode: str | None):
    """The notebook as the test runs it: a first cell checking the interpreter, and for
    exercise notebooks an assertion of the verdict after each check cell."""
    new = nbformat.v4.new_code_cell
    cells = [new(f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable")]
    checks = {i: name for i, name, _ in _check_cells(nb)}
    if mode is not None:
        assert checks, "an exercise notebook needs check cells (metadata convlab.exercise)"
    for i, cell in enumerate(nb.cells):
        cells.append(cell)
        if i in checks:
            want = "correct" if mode == "solved" else "not attempted"
            cells.append(new(f"import convlab.exercises as _ex\n"
                             f"assert _ex.{checks[i]}.last_status == {want!r}, "
                             f"_ex.{checks[i]}.last_status"))
    nb.cells = cells
    return nb


@pytest.fixture
def this_interpreter_kernel(tmp_path, monkeypatch):
    """A python3 kernelspec for sys.executable, first on JUPYTER_PATH; CONVLAB_QUICK=1."""
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (convlab tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("CONVLAB_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return "python3"


@pytest.mark.notebooks
@pytest.mark.parametrize("path, mode", _cases())
def test_notebook_runs(path: Path, mode: str | None, this_interpreter_kernel: str) -> None:
    nb = _prepare(nbformat.read(path, as_version=4), mode)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S,
                                      kernel_name=this_interpreter_kernel,
                                      resources={"metadata": {"path": str(path.parent)}})
    client.execute()


def test_notebooks_exist_in_order():
    numbered = [p.name for p in ALL if p.parent == NOTEBOOKS]
    assert numbered[:3] == ["01_conv2d_walkthrough.ipynb", "02_shapes_and_arithmetic.ipynb",
                            "03_naive_loops.ipynb"]
    assert all(name[:2].isdigit() and name[2] == "_" for name in numbered), numbered


@pytest.mark.parametrize("path", ALL, ids=_name)
def test_notebook_is_committed_clean(path: Path) -> None:
    """No outputs or execution counts in the repository: small diffs, no stale results."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{_name(path)} has outputs: clear them (jupyter nbconvert --clear-output "
                "--inplace) before committing")


def test_every_exercise_is_handed_out():
    import convlab.exercises as ex

    def checks(paths):
        return {p.name: [c[1:] for c in _check_cells(nbformat.read(p, as_version=4))]
                for p in paths}

    handed_out = checks(p for p in ALL if p.parent == EXERCISES)
    assert {name for found in handed_out.values() for name, _ in found} == {
        e.name for e in ex.ALL}
    assert checks(p for p in ALL if p.parent == TEACHER) == handed_out  # one source each

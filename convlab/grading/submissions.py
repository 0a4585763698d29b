"""Which notebooks belong to which student.

``convlab grade SUBMISSIONS...`` takes folders and notebooks:

* a notebook file is one student's submission, named by the file (``alice.ipynb`` is
  ``alice``);
* in a folder, each notebook directly inside is one student's (named by the file), and
  each subfolder holding notebooks (at any depth, as nbgrader's
  ``submitted/STUDENT/ASSIGNMENT/`` does) is one student's, named by the subfolder, with
  all its notebooks.

A submission's files are what its notebooks may read: a student folder with everything
in it; for a notebook on its own, the notebook and the plain files beside it (not the
other students' notebooks). Jupyter's ``.ipynb_checkpoints`` and ``__pycache__`` are
left out; a submission larger than :data:`MAX_BYTES` is refused, not copied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

SKIP = {".ipynb_checkpoints", "__pycache__", ".git"}
MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class Submission:
    """One student's notebooks and the files they run beside."""

    student: str
    root: Path
    notebooks: tuple[str, ...]  # paths inside root, with "/"
    files: tuple[str, ...]  # every file copied for each notebook, notebooks included

    def pack(self) -> dict[str, bytes]:
        """The files' contents, by path inside the submission."""
        total = sum((self.root / f).stat().st_size for f in self.files)
        if total > MAX_BYTES:
            raise UsageError(f"submission {self.student!r} holds {total / 2**20:.0f} MiB "
                             f"({self.root}); at most {MAX_BYTES >> 20} MiB is copied for "
                             "grading")
        return {f: (self.root / f).read_bytes() for f in self.files}


def _visible(path: Path, root: Path) -> bool:
    return not (set(path.relative_to(root).parts) & SKIP)


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and _visible(p, folder))


def _loose(notebook: Path) -> Submission:
    folder = notebook.parent
    beside = [p.name for p in sorted(folder.iterdir())
              if p.is_file() and p.suffix != ".ipynb"]
    return Submission(notebook.stem, folder, (notebook.name,), (notebook.name, *beside))


def find_submissions(paths: Sequence[str | Path]) -> list[Submission]:
    """Every student's submission under ``paths``, sorted by student name."""
    found: list[Submission] = []
    for item in map(Path, paths):
        if item.is_file():
            if item.suffix != ".ipynb":
                raise UsageError(f"{str(item)!r} is not a notebook (.ipynb)")
            found.append(_loose(item))
        elif item.is_dir():
            inside = []
            for child in sorted(item.iterdir()):
                if child.name in SKIP or child.name.startswith("."):
                    continue
                if child.is_file() and child.suffix == ".ipynb":
                    inside.append(_loose(child))
                elif child.is_dir():
                    files = _all_files(child)
                    notebooks = [f for f in files if f.suffix == ".ipynb"]
                    if notebooks:
                        rel = [f.relative_to(child).as_posix() for f in files]
                        inside.append(Submission(
                            child.name, child,
                            tuple(n.relative_to(child).as_posix() for n in notebooks),
                            tuple(rel)))
            if not inside:
                raise UsageError(f"no notebooks in {str(item)!r}: give a folder with one "
                                 "notebook per student or one folder per student")
            found += inside
        else:
            raise UsageError(f"{str(item)!r}: no such file or folder")
    names: dict[str, list[str]] = {}
    for sub in found:
        names.setdefault(sub.student, []).append(str(sub.root / sub.notebooks[0]))
    twice = {n: where for n, where in names.items() if len(where) > 1}
    if twice:
        raise UsageError("two submissions have the same student name: " + "; ".join(
            f"{n!r} ({', '.join(w)})" for n, w in twice.items()))
    return sorted(found, key=lambda s: s.student)


def file_name(student: str) -> str:
    """A file name for ``student``'s feedback: letters, digits, '.', '_' and '-' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", student).strip("._")
    return name or "student"

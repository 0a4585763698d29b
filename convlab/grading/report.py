"""What ``convlab grade`` writes: the grades CSV, one feedback file per student, a
summary table and a histogram of results per exercise.

Everything here is computed from the :class:`~convlab.grading.run.Row` list alone, so
a serial run, ``--jobs`` and a Dask cluster give the same files.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .run import RESULTS, Row
from .submissions import file_name

COLUMNS = ("student", "exercise", "result", "message", "notebook")
COLORS = {"correct": "#2e7d32", "incorrect": "#c62828", "not attempted": "#9e9e9e",
          "error": "#ef6c00", "timed out": "#6a1b9a"}


def write_csv(rows: Sequence[Row], path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r.student, r.exercise or "(notebook)", r.result, r.message,
                             r.notebook])
    return path


def exercises_of(rows: Sequence[Row]) -> list[str]:
    """Exercise names in the order they first appear."""
    return list(dict.fromkeys(r.exercise for r in rows if r.exercise))


def feedback(student: str, rows: Sequence[Row]) -> str:
    """A student's feedback as markdown: a table, then each check's full message."""
    mine = [r for r in rows if r.student == student]
    correct = sum(r.result == "correct" for r in mine if r.exercise)
    total = sum(1 for r in mine if r.exercise)
    lines = [f"# Feedback for {student}", "",
             f"{correct} of {total} exercises correct.", "",
             "| exercise | result | notebook |", "|---|---|---|"]
    lines += [f"| {r.exercise or '(notebook)'} | {r.result} | {r.notebook or '-'} |"
              for r in mine]
    for r in mine:
        lines += ["", f"## {r.exercise or r.notebook}: {r.result}", "", "```text",
                  r.message.replace("```", "'''"), "```"]
    return "\n".join(lines) + "\n"


def write_feedback(rows: Sequence[Row], folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for student in dict.fromkeys(r.student for r in rows):
        path = folder / f"{file_name(student)}.md"
        path.write_text(feedback(student, rows), encoding="utf-8")
        written.append(path)
    return written


def summary_table(rows: Sequence[Row]) -> str:
    """Per exercise, how many students got each result (a markdown table)."""
    header = ["exercise", *RESULTS]
    counts = {e: Counter(r.result for r in rows if r.exercise == e)
              for e in exercises_of(rows)}
    width = max([len(h) for h in header[:1]] + [len(e) for e in counts])
    lines = [f"| {'exercise':<{width}} | " + " | ".join(header[1:]) + " |",
             f"|{'-' * (width + 2)}|" + "|".join("-" * (len(h) + 2) for h in header[1:])
             + "|"]
    for e, c in counts.items():
        lines.append(f"| {e:<{width}} | " + " | ".join(f"{c[h]:>{len(h)}}" for h in
                                                       header[1:]) + " |")
    students = list(dict.fromkeys(r.student for r in rows))
    scores = Counter(sum(r.result == "correct" for r in rows if r.student == s and r.exercise)
                     for s in students)
    ranked = sorted(scores, reverse=True)
    lines += ["", f"{len(students)} students: " + ", ".join(
        f"{scores[k]} got {k}" + (f" of {len(counts)} exercises correct" if n == 0 else "")
        for n, k in enumerate(ranked))]
    return "\n".join(lines)


def plot_summary(rows: Sequence[Row], path: str | Path) -> Path:
    """One bar chart per exercise (students per result) and one of correct answers per
    student, drawn without pyplot."""
    from matplotlib.figure import Figure

    exercises = exercises_of(rows)
    panels = len(exercises) + 1
    cols = min(3, panels)
    nrows = (panels + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, exercise in zip(axes, exercises):
        c = Counter(r.result for r in rows if r.exercise == exercise)
        ax.bar(range(len(RESULTS)), [c[h] for h in RESULTS],
               color=[COLORS[h] for h in RESULTS])
        ax.set_xticks(range(len(RESULTS)), [h.replace(" ", "\n") for h in RESULTS],
                      fontsize=7)
        ax.set_title(exercise, fontsize=9)
        ax.set_ylabel("students", fontsize=8)
        ax.yaxis.get_major_locator().set_params(integer=True)
    students = list(dict.fromkeys(r.student for r in rows))
    correct = [sum(r.result == "correct" for r in rows if r.student == s and r.exercise)
               for s in students]
    ax = axes[len(exercises)]
    ax.hist(correct, bins=[b - 0.5 for b in range(len(exercises) + 2)], color="#1565c0",
            rwidth=0.8)
    ax.set_title("correct answers per student", fontsize=9)
    ax.set_xlabel("exercises correct", fontsize=8)
    ax.set_ylabel("students", fontsize=8)
    ax.yaxis.get_major_locator().set_params(integer=True)
    for extra in axes[panels:]:
        extra.set_visible(False)
    fig.suptitle(f"{len(students)} students, {len(exercises)} exercises", fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path

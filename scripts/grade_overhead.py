"""The sandbox's cost per notebook: one submission graded with and without it.

    python scripts/grade_overhead.py [NOTEBOOK_OR_FOLDER] [--rounds 6]

Grades the same submission (default: examples/class/alice, a right answer to exercise
notebook 01) alternately in a sandbox and with ``--no-sandbox``, the order swapped
every round so drift on a busy machine hits both alike, and prints each time, the
medians and the overhead of the median. Also times the sandbox's fixed setup alone
(``python -c pass`` in a sandbox and bare). The README's target: at most 10 %.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def setup_cost(rounds: int) -> tuple[float, float]:
    """Median seconds of ``python -c pass`` in a fresh sandbox and bare."""
    from convlab.grading import sandbox

    sizes = {"shm_bytes": 64 << 20, "tmp_bytes": 256 << 20, "home_bytes": 256 << 20,
             "work_bytes": 256 << 20}
    argv = [os.path.realpath(sys.executable), "-c", "pass"]
    inside, bare = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            job = Path(tmp)
            (job / "work").mkdir()
            (job / "job").mkdir()
            cmd = sandbox.command(job, argv, {}, {}, sizes)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            inside.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(argv, check=True)
        bare.append(time.perf_counter() - t0)
    return _median(inside), _median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", nargs="?", default=str(REPO / "examples/class/alice"))
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    from convlab.grading import Limits, Task, run_task
    from convlab.grading.sandbox import unavailable
    from convlab.grading.submissions import find_submissions

    why = unavailable()
    if why:
        raise SystemExit(f"no sandbox here: {why}")
    sub = find_submissions([args.submission])[0]
    files = sub.pack()
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds):
        for inside in ((True, False) if r % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            run_task(Task(sub.student, sub.notebooks[0], files, Limits(), 1, inside))
            times[inside].append(time.perf_counter() - t0)
    med = {k: _median(v) for k, v in times.items()}
    for inside, label in ((True, "sandbox   "), (False, "no-sandbox")):
        print(label, " ".join(f"{t:.2f}" for t in times[inside]), f"median {med[inside]:.2f} s")
    print(f"overhead of the median: {100 * (med[True] / med[False] - 1):+.1f} %")
    inside, bare = setup_cost(args.rounds)
    print(f"setup alone: python -c pass {inside * 1000:.0f} ms in a sandbox, {bare * 1000:.0f} "
          f"ms bare: {1000 * (inside - bare):.0f} ms a notebook")


if __name__ == "__main__":
    main()

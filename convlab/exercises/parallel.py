"""A race-free ``prange`` kernel, checked four ways.

1. It is Numba code with ``parallel=True`` and a ``prange`` loop.
2. No array element is written by two iterations of a ``prange`` loop: the source is
   read (``ast``) and, for every store in a ``prange`` body, :mod:`.races` works out
   which elements an iteration may write.  A store is the iteration's own when the
   parts of its index fixed by the loop variable alone determine it (``out[n, k, i, j]``
   in ``for nk in prange(N*K)`` with ``n, k = nk // K, nk % K``; ``o = out[n];
   o[k, i, j] = acc`` in ``for n in prange(N)``), or when it goes to an array made
   inside the body.  Two races Numba compiles without a word are caught: the
   reduction, ``out[n, k, i, j] += ...`` inside ``for c in prange(C)``, and the
   scatter, ``out[n, k, y - p, j] += ...`` inside ``for y in prange(H)`` (neighbouring
   rows y share the rows y - p they add into).
3. Its values match convlab's float64 oracle.
4. Runs on a bigger input, on every thread Numba has, give bit-identical results; and
   again in a new process on ``MANY_THREADS`` (16) threads.  Numba cannot run more
   threads than ``NUMBA_NUM_THREADS`` (by default the machine's cores, fixed when numba
   is imported), and threads collide only where their work meets: on 2 threads the
   scatter race of 2 changed the result in 1 run of 30, on 16 threads (on the same 2
   cores) in 9 of 10.  The new process costs a few seconds (numba's import and the
   compile); it needs the function to be picklable, and when it cannot be made the
   verdict says so.  No number of runs proves a kernel race-free: that is why 2 reads
   the source.

Python keeps no source for a function typed at the interactive prompt, so there 2 is
skipped (1 then looks for ``prange`` among the names the compiled code uses); the
verdict says so, and how to get the full check.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
from functools import partial
from typing import Any, cast

import numba
import numpy as np

from . import solutions
from .core import Exercise, Incorrect, call, compare_arrays, source_of
from .loops import oracle
from .races import find_races, is_prange

__all__ = ["PrangeKernel", "find_races"]

PRANGE_CASES = [((2, 3, 9, 11), (4, 3, 3, 2)), ((1, 2, 6, 5), (3, 2, 2, 3)),
                ((3, 1, 7, 8), (2, 1, 1, 4))]
RUNS = 10
RUN_CASE = ((2, 3, 40, 36), (4, 3, 3, 3))  # for 4: every thread gets many rows to write
# 4b: the same runs in a fresh process with this many threads (NUMBA_NUM_THREADS is fixed
# when numba is imported, so more threads than that need a new process); on 2 cores, 16
# threads made the scatter race of races.py differ in 9 of 10 runs, 2 threads in 1 of 30
MANY_THREADS = 16
MANY_THREADS_TIMEOUT_S = 180

_CHILD = """
import json, pickle, sys
import numpy as np
fn, x, w, runs = pickle.loads(sys.stdin.buffer.read())
out = [np.asarray(fn(x, w)) for _ in range(runs)]
print(json.dumps(sum(not np.array_equal(r, out[0]) for r in out[1:])))
"""


def many_thread_runs(fn: Any, x: np.ndarray, w: np.ndarray,
                     runs: int = RUNS) -> tuple[int | None, str]:
    """How many of ``runs`` calls of ``fn(x, w)`` in a new process on MANY_THREADS threads
    differ from the first; (None, why) when that run could not be made (the function
    cannot be pickled, the process failed or ran out of time)."""
    try:
        blob = pickle.dumps((fn, x, w, runs))
    except Exception as err:  # e.g. it uses an object that cannot be pickled
        return None, f"your function could not be sent to a new process ({type(err).__name__})"
    env = dict(os.environ, NUMBA_NUM_THREADS=str(MANY_THREADS),
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD], input=blob, env=env,
                              capture_output=True, timeout=MANY_THREADS_TIMEOUT_S)
        if done.returncode != 0:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return None, f"the new process failed ({last[0][:120]})"
        return int(json.loads(done.stdout.decode().strip().splitlines()[-1])), ""
    except subprocess.TimeoutExpired:
        return None, f"the new process took over {MANY_THREADS_TIMEOUT_S} s"
    except (OSError, ValueError, IndexError) as err:
        return None, f"the new process could not run ({type(err).__name__})"


class PrangeKernel(Exercise):
    name = "prange_kernel"
    title = "A race-free parallel kernel with prange"
    task = ("Write conv_prange(x, w) -> out decorated with @njit(parallel=True): x is "
            "(N, C, H, W), w is (K, C, kh, kw), stride 1, no padding ('valid'), no bias; "
            "return the (N, K, H-kh+1, W-kw+1) cross-correlation. Parallelise with prange "
            "over independent outputs so no two iterations write the same element.")
    hints = (
        "prange is safe only over iterations that write different elements. Of the seven "
        "loops, which ones index the outputs, and which ones add into the same output?",
        "Put prange on an output loop (n, k, or n and k together), never on c, p or q: "
        "those add into the same out[n, k, i, j] from several threads. Sum the products "
        "into a local variable and store it once.",
        "`for nk in prange(N * K)` with n, k = nk // K, nk % K; inside, for each (i, j) "
        "sum the C*kh*kw products into a local `acc`, then `out[n, k, i, j] = acc`. "
        "prange over c (the reduction) makes every thread add into the same "
        "out[n, k, i, j]: a race.")
    praise = "every thread owns its outputs: no race, same bits every run."

    def _check(self, fn: Any) -> str | None:
        rng = np.random.default_rng(14)
        cases = [(rng.standard_normal(xs), rng.standard_normal(ws)) for xs, ws in PRANGE_CASES]
        first = f"case 1/{len(cases)}, x {PRANGE_CASES[0][0]}, w {PRANGE_CASES[0][1]}"
        results = [call(fn, {"x": cases[0][0], "w": cases[0][1]}, first, first=True)]
        if not (hasattr(fn, "py_func") and hasattr(fn, "targetoptions")):
            raise Incorrect("conv_prange must be compiled by Numba: decorate it with "
                            "@njit(parallel=True)")
        if not fn.targetoptions.get("parallel"):
            raise Incorrect("conv_prange is compiled without parallel=True, so prange runs "
                            "like range on one core: use @njit(parallel=True)")
        try:
            source: str | None = source_of(fn)
        except (OSError, TypeError):  # typed at the >>> prompt: Python kept no source
            source = None
        no_prange = Incorrect("conv_prange has no `for ... in prange(...)` loop: nothing runs "
                              "in parallel")
        if source is None:
            if "prange" not in fn.py_func.__code__.co_names:
                raise no_prange
        else:
            if not any(isinstance(n, ast.For) and is_prange(n)
                       for n in ast.walk(ast.parse(source))):
                raise no_prange
            races = find_races(source)
            if races:
                raise Incorrect(races[0] + ". Parallelise over outputs and sum into a local "
                                "variable.")
        for n, (x, w) in enumerate(cases):
            where = f"case {n + 1}/{len(cases)}, x {x.shape}, w {w.shape}"
            got = results[0] if n == 0 else call(fn, {"x": x, "w": w}, where, first=False)
            compare_arrays(got, oracle(x, w, 1, 0, 1), where, [
                ("you flipped the kernel (Conv2d is a cross-correlation)",
                 partial(oracle, x, w[:, :, ::-1, ::-1], 1, 0, 1))])
        x, w = (rng.standard_normal(shape) for shape in RUN_CASE)
        where = f"x {x.shape}, w {w.shape}"
        # numba.config sets NUMBA_NUM_THREADS through globals() when it loads: the type
        # checker cannot see it
        most: int = cast(Any, numba.config).NUMBA_NUM_THREADS
        threads = numba.get_num_threads()
        numba.set_num_threads(most)  # every thread Numba has
        try:
            runs = [np.asarray(call(fn, {"x": x, "w": w}, where, first=False))
                    for _ in range(RUNS)]
        finally:
            numba.set_num_threads(threads)
        if any(not np.array_equal(r, runs[0]) for r in runs[1:]):
            raise Incorrect(f"{RUNS} runs on the same input ({where}, "
                            f"{most} threads) gave different "
                            "results: a race (several threads update the same element)")
        skipped = ""
        if most < MANY_THREADS:
            differ, why = many_thread_runs(fn, x, w)
            if differ:
                raise Incorrect(f"{differ} of {RUNS} runs on the same input ({where}) on "
                                f"{MANY_THREADS} threads gave results different from the "
                                "first: a race (several threads update the same element)")
            if differ is None:
                skipped = (f" The runs on {MANY_THREADS} threads, in a new process, were not "
                           f"made: {why}.")
        if source is None:
            return (f"right values, and the same bits in {RUNS} runs. Not checked: whether "
                    "two prange iterations write the same element (a race that may not show "
                    "on a few cores). That check reads your source, and Python keeps none for "
                    "a function typed at the >>> prompt: define it in a file or a notebook "
                    "cell and check it again for the full verdict." + skipped)
        return ("right values, no two iterations write one element, the same bits in every "
                "run." + skipped) if skipped else None

    def _solution(self) -> Any:
        return solutions.conv_prange

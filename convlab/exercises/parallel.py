"""A race-free ``prange`` kernel, checked four ways.

1. It is Numba code with ``parallel=True`` and a ``prange`` loop.
2. No array element is written by several iterations of a ``prange`` loop: the
   source is read (``ast``) and every store inside a ``prange`` body must index
   with the loop variable or a value computed from it, or go to an array made
   inside the body.  That is the classic race, ``out[n, k, i, j] += ...`` inside
   ``for c in prange(C)``, which Numba compiles without a word.
3. Its values match convlab's float64 oracle.
4. Several runs give bit-identical results (a race usually does not, but on two
   cores it may hide: that is why 2 reads the source).

Python keeps no source for a function typed at the interactive prompt, so there 2 is
skipped (1 then looks for ``prange`` among the names the compiled code uses); the
verdict says so, and how to get the full check.
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np

from . import solutions
from .core import Exercise, Incorrect, call, compare_arrays, source_of
from .loops import oracle

PRANGE_CASES = [((2, 3, 9, 11), (4, 3, 3, 2)), ((1, 2, 6, 5), (3, 2, 2, 3)),
                ((3, 1, 7, 8), (2, 1, 1, 4))]
RUNS = 5


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_prange(loop: ast.For) -> bool:
    f = loop.iter.func if isinstance(loop.iter, ast.Call) else None
    return (isinstance(f, ast.Name) and f.id == "prange") or (
        isinstance(f, ast.Attribute) and f.attr == "prange")


def find_races(source: str) -> list[str]:
    """Stores inside a ``prange`` body that every iteration may write alike."""
    problems = []
    for loop in ast.walk(ast.parse(source)):
        if not (isinstance(loop, ast.For) and _is_prange(loop)):
            continue
        dependent = _names(loop.target)  # the prange variable...
        private: set[str] = set()  # ...and names bound inside the body, per iteration
        body = [n for stmt in loop.body for n in ast.walk(stmt)]
        changed = True
        while changed:  # propagate "computed from the loop variable" to a fixed point
            changed = False
            for node in body:
                if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    bound = set().union(*(_names(t) for t in targets
                                          if not isinstance(t, ast.Subscript)))
                    if isinstance(node.value, ast.Call):
                        private |= bound  # np.zeros(...) etc.: a new array per iteration
                    if _names(node.value) & dependent and not bound <= dependent:
                        dependent |= bound
                        changed = True
                elif isinstance(node, ast.For) and _names(node.iter) & dependent:
                    if not _names(node.target) <= dependent:
                        dependent |= _names(node.target)
                        changed = True
        for node in body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AugAssign) else [])
            for t in targets:
                if isinstance(t, ast.Subscript):
                    base = t.value.id if isinstance(t.value, ast.Name) else None
                    if base in private or _names(t.slice) & dependent:
                        continue
                    var = ", ".join(sorted(_names(loop.target)))
                    problems.append(
                        f"`{ast.unparse(node).splitlines()[0]}` inside `for {var} in "
                        f"prange(...)` writes an element that does not depend on {var}, so "
                        "several threads write it at once (a race)")
    return problems


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
            if not any(isinstance(n, ast.For) and _is_prange(n)
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
                 lambda x=x, w=w: oracle(x, w[:, :, ::-1, ::-1], 1, 0, 1))])
        x, w = cases[0]
        runs = [np.asarray(call(fn, {"x": x, "w": w}, first, first=False)) for _ in range(RUNS)]
        if any(not np.array_equal(r, runs[0]) for r in runs[1:]):
            raise Incorrect(f"{RUNS} runs on the same input gave different results: a race "
                            "(several threads update the same element)")
        if source is None:
            return (f"right values, and the same bits in {RUNS} runs. Not checked: whether "
                    "two prange iterations write the same element (a race that may not show "
                    "on a few cores). That check reads your source, and Python keeps none for "
                    "a function typed at the >>> prompt: define it in a file or a notebook "
                    "cell and check it again for the full verdict.")
        return None

    def _solution(self) -> Any:
        return solutions.conv_prange

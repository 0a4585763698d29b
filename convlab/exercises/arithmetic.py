"""Exercises on convolution arithmetic: the output size and 'same' padding.

Expected answers come from :class:`convlab.ConvSpec`, the library's one place
for sizes; the classic wrong formulas are built from ConvSpec variants too
(e.g. ceil(L/s) is floor((L + s - 1)/s): a spec with s-1 more padding).
"""

from __future__ import annotations

import numbers
from dataclasses import replace
from typing import Any

import numpy as np

from ..shapes import ConvArgs, ConvSpec
from . import solutions
from .core import Exercise, Incorrect, call

# (size, kernel, stride, padding, dilation): each catches a classic mistake
OUTPUT_SIZE_CASES = [
    (10, 3, 1, 0, 1),  # the seed's height: 8
    (12, 3, 1, 0, 1),
    (8, 3, 2, 0, 1),  # ceil would give 4, floor gives 3
    (9, 2, 2, 1, 1),  # an even kernel with padding and a remainder
    (10, 3, 1, 1, 2),  # dilation changes the span
    (11, 4, 3, 2, 3),
    (224, 7, 2, 3, 1),  # ResNet's stem: 112
    (56, 1, 2, 0, 1),  # 1x1 stride-2 downsample
    (6, 3, 3, 0, 2),  # exactly one position
    (5, 5, 1, 2, 1),
]


def _spec(size: int, kernel: int, stride: int, padding: int, dilation: int) -> ConvSpec:
    return ConvSpec.create((1, size, size), 1, kernel, stride, padding, dilation)


def _random_output_cases(n: int, seed: int = 2024) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    cases: list[tuple[int, ...]] = []
    while len(cases) < n:
        size, k, s, p, d = (int(v) for v in (rng.integers(3, 40), rng.integers(1, 6),
                                             rng.integers(1, 5), rng.integers(0, 4),
                                             rng.integers(1, 4)))
        if d * (k - 1) + 1 <= size + 2 * p:  # the window fits: a valid convolution
            cases.append((size, k, s, p, d))
    return cases


class OutputSize(Exercise):
    name = "output_size"
    title = "Output size of a convolution"
    task = ("Write output_size(size, kernel, stride, padding, dilation) -> int: the output "
            "length along one axis for an input of `size` cells, padded by `padding` on both "
            "sides, as torch.nn.Conv2d computes it.")
    hints = (
        "Think about the window, not the kernel: with dilation, how many cells does it "
        "span? Then count the positions where it fits entirely inside the padded input.",
        "The padded input has size + 2*padding cells; the dilated window spans "
        "dilation*(kernel-1)+1. Moving `stride` cells at a time, count the start positions "
        "whose window ends inside: a window that would hang off the end is not counted.",
        "After the first position the window fits (size + 2*padding - span) // stride more "
        "times, with span = dilation*(kernel-1)+1: add 1 for the first. Floor (//), never "
        "/ or ceil.")
    praise = "floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1."

    def _check(self, fn: Any) -> None:
        cases = OUTPUT_SIZE_CASES + _random_output_cases(10)
        for n, (size, k, s, p, d) in enumerate(cases):
            args = {"size": size, "kernel": k, "stride": s, "padding": p, "dilation": d}
            where = f"case {n + 1}/{len(cases)}, output_size({size}, {k}, {s}, {p}, {d})"
            got = call(fn, args, where, first=n == 0)
            spec = _spec(size, k, s, p, d)
            expected = spec.out_height
            if isinstance(got, bool) or not isinstance(got, (numbers.Integral, float)):
                raise Incorrect(f"{where}: expected an int, got {got!r}")
            if isinstance(got, float):
                raise Incorrect(f"{where}: you returned the float {got!r}; a size is an "
                                "int (use // for floor division)")
            if got != expected:
                raise Incorrect(f"{where}: you returned {got}, expected {expected}"
                                + _output_size_mistake(spec, int(got)))

    def _solution(self) -> Any:
        return solutions.output_size


def _output_size_mistake(spec: ConvSpec, got: int) -> str:
    """Which classic mistake gives ``got``?  Each is a ConvSpec variant."""
    top, bottom, left, right = spec.padding
    variants = [
        (replace(spec, padding=(top, bottom + spec.stride[0] - 1, left, right)),
         "you rounded up (ceil); the window must fit entirely, so round down (floor)"),
        (replace(spec, dilation=(1, 1)), "you left out the dilation"),
        (replace(spec, padding=(top, 0, left, right)),
         "you counted the padding once; it is added on both sides"),
        (replace(spec, padding=(top, bottom + 1, left, right)),
         "you forgot the -1: the window spans dilation*(kernel-1)+1 cells, not "
         "dilation*(kernel-1)"),
    ]
    for variant, why in variants:
        if variant.out_height == got:
            return f" (it looks like {why})"
    return ""


SAME_CASES = [(3, 1), (5, 1), (4, 1), (2, 1), (1, 1), (3, 2), (4, 3), (6, 2), (7, 3), (2, 5)]


class SamePadding(Exercise):
    name = "same_padding"
    title = "How much padding 'same' adds"
    task = ("Write same_padding(kernel, dilation) -> (before, after): the padding that "
            "padding='same' adds along one axis (before = top/left, after = bottom/right) "
            "with stride 1, exactly as PyTorch splits it.")
    hints = (
        "With stride 1, an output as big as the input needs as many padding cells in total "
        "as the window's span has cells beyond the first.",
        "The total padding is dilation*(kernel-1), the window's span minus one. Split it "
        "between before and after; when the total is odd one side gets one more: which "
        "side does PyTorch choose?",
        "total = dilation*(kernel-1); before = total // 2; after = total - before (an odd "
        "total puts the extra cell after: bottom/right). Return (before, after).")
    praise = "total = dilation*(kernel-1); before = total//2, the rest after."

    def _check(self, fn: Any) -> None:
        for n, (k, d) in enumerate(SAME_CASES):
            where = f"case {n + 1}/{len(SAME_CASES)}, same_padding(kernel={k}, dilation={d})"
            got = call(fn, {"kernel": k, "dilation": d}, where, first=n == 0)
            top, bottom, _, _ = ConvArgs.create(k, padding="same", dilation=d).explicit_padding()
            try:
                pair = tuple(int(v) for v in got)
            except (TypeError, ValueError):
                raise Incorrect(f"{where}: expected a pair (before, after), got {got!r}") \
                    from None
            if pair != (top, bottom):
                raise Incorrect(f"{where}: you returned {pair}, expected {(top, bottom)}"
                                + _same_mistake(k, d, pair, (top, bottom)))

    def _solution(self) -> Any:
        return solutions.same_padding


def _same_mistake(k: int, d: int, got: tuple[int, ...], expected: tuple[int, int]) -> str:
    if got == expected[::-1]:
        return " (the extra cell goes after: bottom/right, not top/left)"
    if len(got) == 2 and got[0] == got[1] == expected[0]:
        return (" (the total padding must be dilation*(kernel-1): with an odd total, one "
                "side gets one more)")
    undilated = ConvArgs.create(k, padding="same").explicit_padding()[:2]
    if got == undilated:
        return " (you left out the dilation)"
    return ""

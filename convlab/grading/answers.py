"""The trusted side's verdicts: cases drawn at grading time, references, strict comparison.

Only the grader imports this module; the package copy a sandboxed notebook sees has
neither it nor the reference solutions (:mod:`.sandbox`). For every exercise,
:data:`SPECS` says how to draw fresh cases (from a seed drawn once per ``convlab grade``
run, so the public check's cases are not among them and no notebook can know them
before it runs), what the right answer is (convlab's float64 oracle, ConvSpec or the
reference solutions, all computed here), and what type it must have. :func:`judge`
compares what a student's function returned on those cases (:mod:`.wire` plain data,
parsed here) with the references:

* exact types: ``type(v) is int`` (an int subclass is an "other"), sequences of the
  right length, arrays of a numeric dtype and of the expected shape;
* values: integers equal, floats within ``rtol`` of the case's largest value.

The result is ``correct``, ``incorrect`` or ``not attempted``, with a message naming the
first failing case. See docs/design.md, "Grading".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import wire

N_CASES = 6


def _conv_args(rng: np.random.Generator, batched: bool = True) -> tuple[Any, ...]:
    n, c, k = (int(v) for v in rng.integers(1, 4, size=3))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    sh, sw = (int(v) for v in rng.integers(1, 3, size=2))
    ph, pw = (int(v) for v in rng.integers(0, 3, size=2))
    dh, dw = (int(v) for v in rng.integers(1, 3, size=2))
    h = int(rng.integers(dh * (kh - 1) + 1, 10))
    wd = int(rng.integers(dw * (kw - 1) + 1, 10))
    x = rng.standard_normal((n, c, h, wd) if batched else (c, h, wd))
    return x, (k, c, kh, kw), (sh, sw), (ph, pw), (dh, dw)


def _spec(x_shape: tuple[int, ...], w_shape: tuple[int, ...], s: Any, p: Any, d: Any):
    from ..shapes import ConvSpec

    return ConvSpec.create(x_shape, w_shape[0], w_shape[2:], s, p, d)


def _draw_output_size(rng: np.random.Generator) -> list[tuple]:
    cases: list[tuple] = []
    while len(cases) < 3 * N_CASES:
        size, k, s, p, d = (int(v) for v in (rng.integers(2, 60), rng.integers(1, 8),
                                             rng.integers(1, 5), rng.integers(0, 5),
                                             rng.integers(1, 4)))
        if d * (k - 1) + 1 <= size + 2 * p:
            cases.append((size, k, s, p, d))
    return cases


def _ref_output_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _draw_same(rng: np.random.Generator) -> list[tuple]:
    return [(int(rng.integers(1, 10)), int(rng.integers(1, 6))) for _ in range(3 * N_CASES)]


def _ref_same(k: int, d: int) -> list[int]:
    total = d * (k - 1)
    return [total // 2, total - total // 2]


def _draw_conv(rng: np.random.Generator) -> list[tuple]:
    cases = []
    for _ in range(N_CASES):
        x, ws, s, p, d = _conv_args(rng)
        cases.append((x, rng.standard_normal(ws), s, p, d))
    return cases


def _ref_conv(x, w, s, p, d) -> np.ndarray:
    from ..reference import conv2d_reference

    return conv2d_reference(x, w, None, _spec(x.shape, w.shape, s, p, d))


def _draw_im2col(rng: np.random.Generator) -> list[tuple]:
    cases = []
    for _ in range(N_CASES):
        x, ws, s, p, d = _conv_args(rng, batched=False)
        cases.append((x, ws[2:], s, p, d))
    return cases


def _ref_im2col(x, kernel, s, p, d) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, s, p, d
    c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((c, kh, kw, ho, wo))
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh,
                               j * dw:j * dw + (wo - 1) * sw + 1:sw]
    return cols.reshape(c * kh * kw, ho * wo)


def _draw_winograd(rng: np.random.Generator) -> list[tuple]:
    return [(rng.standard_normal(4), rng.standard_normal(3)) for _ in range(N_CASES)]


def _ref_winograd(d, g) -> np.ndarray:
    return np.correlate(d, g, mode="valid")


def _draw_prange(rng: np.random.Generator) -> list[tuple]:
    cases = []
    for _ in range(3):
        n, c, k, kh, kw = (int(v) for v in rng.integers(1, 4, size=5))
        x = rng.standard_normal((n, c, int(rng.integers(kh, 10)), int(rng.integers(kw, 10))))
        cases.append((x, rng.standard_normal((k, c, kh, kw))))
    return cases


def _ref_prange(x, w) -> np.ndarray:
    return _ref_conv(x, w, (1, 1), (0, 0), (1, 1))


def _draw_cuda(three: bool) -> Callable[[np.random.Generator], list[tuple]]:
    def draw(rng: np.random.Generator) -> list[tuple]:
        cases = []
        for _ in range(2):
            c, k = (int(v) for v in rng.integers(1, 4, size=2))
            kh, kw = (3, 3) if three else (int(v) for v in rng.integers(1, 4, size=2))
            x = rng.standard_normal((c, int(rng.integers(kh, 10)), int(rng.integers(kw, 10))))
            cases.append((x, rng.standard_normal((k, c, kh, kw))))
        return cases
    return draw


def _ref_cuda(x, w) -> np.ndarray:
    return _ref_prange(x[None], w)[0]


def _draw_backward(rng: np.random.Generator) -> list[tuple]:
    cases = []
    for _ in range(N_CASES):
        x, ws, s, p, d = _conv_args(rng)
        dout = rng.standard_normal(_spec(x.shape, ws, s, p, d).output_shape)
        cases.append((x, rng.standard_normal(ws), dout, s, p, d))
    return cases


def _ref_backward(x, w, dout, s, p, d) -> list[np.ndarray]:
    from ..reference_backward import conv2d_input_reference, conv2d_weight_reference

    spec = _spec(x.shape, w.shape, s, p, d)
    return [conv2d_input_reference(dout, w, spec), conv2d_weight_reference(x, dout, spec),
            dout.sum(axis=(0, 2, 3))]


def _draw_fft(rng: np.random.Generator) -> list[tuple]:
    cases = []
    for _ in range(N_CASES):
        k = int(rng.integers(1, 8))
        cases.append((rng.standard_normal(int(rng.integers(k, 20))),
                      rng.standard_normal(k), int(rng.integers(0, 4))))
    return cases


def _ref_fft(x, w, padding) -> np.ndarray:
    return np.correlate(np.pad(x, padding), w, mode="valid")


@dataclass(frozen=True)
class Spec:
    draw: Callable[[np.random.Generator], list[tuple]]
    reference: Callable[..., Any]
    kind: str  # "int", "pair", "array" or "arrays3"
    rtol: float = 1e-6


SPECS: dict[str, Spec] = {
    "output_size": Spec(_draw_output_size, _ref_output_size, "int"),
    "same_padding": Spec(_draw_same, _ref_same, "pair"),
    "conv_loops": Spec(_draw_conv, _ref_conv, "array"),
    "im2col": Spec(_draw_im2col, _ref_im2col, "array"),
    "winograd_1d": Spec(_draw_winograd, _ref_winograd, "array", 1e-9),
    "prange_kernel": Spec(_draw_prange, _ref_prange, "array"),
    "cuda_kernel": Spec(_draw_cuda(False), _ref_cuda, "array"),
    "cuda_tiled": Spec(_draw_cuda(True), _ref_cuda, "array"),
    "conv_backward": Spec(_draw_backward, _ref_backward, "arrays3"),
    "fft_conv1d": Spec(_draw_fft, _ref_fft, "array", 1e-9),
}


def draw_cases(names: list[str], seed: int) -> dict[str, list[tuple]]:
    """This run's cases of each exercise in ``names`` that has a spec (each exercise
    from a generator of its own, so the cases do not depend on which are asked)."""
    out = {}
    for name in names:
        if name in SPECS:
            rng = np.random.default_rng([seed, sorted(SPECS).index(name)])
            out[name] = SPECS[name].draw(rng)
    return out


def encode_cases(cases: dict[str, list[tuple]]) -> dict[str, list[list[dict]]]:
    return {name: [[wire.encode(a) for a in case] for case in found]
            for name, found in cases.items()}


def hidden_test(name: str, fn: Any, seed: int | None = None) -> None:
    """The hidden test of a teacher notebook's check cell (nbgrader's autograde runs it
    in the student's kernel): ``fn`` on cases drawn now, which the public check never
    shows, judged by :func:`judge`. Raises AssertionError with the verdict unless it is
    correct."""
    import secrets

    from .probe import arguments, run

    cases = draw_cases([name], secrets.randbits(63) if seed is None else seed)[name]
    line = run(name, fn, arguments(encode_cases({name: cases})[name])).line()
    result, message = judge(name, cases, json.loads(json.dumps(line)))  # as sent
    assert result == "correct", message


def _show(args: tuple) -> str:
    return ", ".join(f"array of shape {a.shape}" if isinstance(a, np.ndarray) else repr(a)
                     for a in args)


def _type_name(value: Any) -> str:
    return value.type_name if isinstance(value, wire.Other) else type(value).__name__


def _mismatch_int(got: Any, want: int) -> str | None:
    if type(got) is not int:
        return ("expected an int, got " + ("a float (use // for floor division)"
                                           if type(got) is float else
                                           f"a value of type {_type_name(got)}"))
    return None if got == want else f"you returned {got}, expected {want}"


def _mismatch_pair(got: Any, want: list[int]) -> str | None:
    if type(got) is np.ndarray and got.dtype.kind in "iu" and got.shape == (2,):
        got = [int(v) for v in got]
    if type(got) is not list or len(got) != 2 or any(type(v) is not int for v in got):
        return f"expected a pair of ints (before, after), got a {_type_name(got)}"
    return None if got == want else f"you returned {tuple(got)}, expected {tuple(want)}"


def _as_array(got: Any) -> np.ndarray | None:
    """A numeric array from an array or a (nested) list of plain numbers."""
    if type(got) is np.ndarray:
        return got.astype(np.float64)
    def plain(v: Any) -> bool:
        return type(v) in (int, float) or (type(v) is list and all(plain(e) for e in v))
    if type(got) is list and plain(got):
        try:
            return np.array(got, dtype=np.float64)
        except ValueError:
            return None
    return None


def _mismatch_array(got: Any, want: np.ndarray, rtol: float) -> str | None:
    arr = _as_array(got)
    if arr is None:
        return f"expected an array, got {_type_name(got)}"
    if arr.shape != want.shape:
        return f"your result has shape {arr.shape}, expected {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    bad = ~(np.abs(arr - want) <= rtol * scale)  # nan compares False: wrong
    if bad.any():
        return f"{int(bad.sum())} of {arr.size} values are wrong"
    return None


def _mismatch(spec: Spec, got: Any, want: Any) -> str | None:
    if spec.kind == "int":
        return _mismatch_int(got, want)
    if spec.kind == "pair":
        return _mismatch_pair(got, want)
    if spec.kind == "array":
        return _mismatch_array(got, want, spec.rtol)
    if type(got) is not list or len(got) != 3:
        return f"return the three gradients (dx, dw, db); got {_type_name(got)}"
    for part, g, w in zip(("dx", "dw", "db"), got, want, strict=True):
        why = _mismatch_array(g, w, spec.rtol)
        if why:
            return f"{part}: {why}"
    return None


def judge(name: str, cases: list[tuple],
          probe: wire.Probe | dict[str, Any] | None) -> tuple[str, str]:
    """(result, message) for exercise ``name`` from the probe's line (untrusted: a
    :class:`.wire.Probe`, or the JSON object as it came, read by :func:`.wire.as_event`)."""
    if name not in SPECS:
        return "error", f"convlab grade has no cases of its own for {name}"
    line = wire.as_event(probe, wire.Probe)
    if line is None:
        return "error", f"the check ran, but no answers to this run's cases of {name} came back"
    answers = line.answers
    if line.status == "not attempted":
        return "not attempted", (f"Not attempted yet ({name}): your answer is None or "
                                 "still raises NotImplementedError")
    if answers is None:
        return "error", f"the answers to this run's cases of {name} were malformed"
    spec = SPECS[name]
    for n, case in enumerate(cases):
        where = f"a case drawn at grading time, {name}({_show(case)})"
        if n >= len(answers):
            error = line.error
            why = (f"your function raised {error[0]}: {error[1]}" if error is not None
                   else "no answer came back")
            return "incorrect", f"Incorrect ({name}): {where}: {why}"
        try:
            got = wire.decode(answers[n])
        except wire.WireError as err:
            return "incorrect", f"Incorrect ({name}): {where}: a malformed answer ({err})"
        wrong = _mismatch(spec, got, spec.reference(*case))
        if wrong:
            return "incorrect", f"Incorrect ({name}): {where}: {wrong}"
    return "correct", f"Correct ({name}): right on {len(cases)} cases drawn at grading time"

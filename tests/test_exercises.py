"""Every exercise accepts its solution, rejects each classic wrong answer (naming
the mistake where it can), and says "not attempted" for untouched stubs."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from numba import cuda, njit, prange

import convlab.exercises as ex
from convlab.exercises.parallel import find_races
from convlab.exercises.winograd import _counted


def verdict(exercise, fn, capsys) -> tuple[bool, str, str]:
    # check() returns None, so a notebook cell ending in it shows the message alone
    assert exercise.check(fn) is None
    status = exercise.last_status
    return status == "correct", status, capsys.readouterr().out


def assert_rejected(exercise, fn, capsys, *words: str) -> str:
    ok, status, out = verdict(exercise, fn, capsys)
    assert ok is False and status == "incorrect", out
    assert out.startswith("Incorrect"), out
    for word in words:
        assert word in out, out
    return out


# ------------------------------------------------------------------ every exercise
def test_all_lists_the_ten():
    assert [e.name for e in ex.ALL] == ["output_size", "same_padding", "conv_loops", "im2col",
                                        "winograd_1d", "prange_kernel", "cuda_kernel",
                                        "cuda_tiled", "conv_backward", "fft_conv1d"]


@pytest.mark.parametrize("exercise", ex.ALL, ids=lambda e: e.name)
def test_solution_is_accepted(exercise, capsys):
    fn = exercise.solution()
    shown = capsys.readouterr().out
    assert "def " in shown  # the source is printed
    ok, status, out = verdict(exercise, fn, capsys)
    assert ok is True and status == "correct", out
    assert out.startswith("Correct")


@pytest.mark.parametrize("exercise", ex.ALL, ids=lambda e: e.name)
def test_none_is_not_attempted(exercise, capsys):
    ok, status, out = verdict(exercise, None, capsys)
    assert ok is False and status == "not attempted" and out.startswith("Not attempted"), out


@pytest.mark.parametrize("exercise", ex.ALL, ids=lambda e: e.name)
def test_hint_tiers_and_task(exercise, capsys):
    shown = []
    for level in (1, 2, 3):
        exercise.hint(level)
        out = capsys.readouterr().out
        assert out.startswith(f"Hint {level}/3 ({exercise.name}): "), out
        shown.append(out)
    exercise.hint()
    assert capsys.readouterr().out == shown[0]  # hint() is the nudge
    assert "hint(2)" in shown[0] and "hint(3)" in shown[1] and "solution()" in shown[2]
    assert len(set(exercise.hints)) == 3
    # a nudge names the idea, never the formula or the code: no assignment, indexing or
    # floor division (the old single hint of winograd_1d gave the whole transform)
    for sign in ("=", "[", "//"):
        assert sign not in exercise.hints[0], (sign, exercise.hints[0])
    assert exercise.title in str(exercise) and exercise.task in str(exercise)


@pytest.mark.parametrize("level", [0, 4, "2", 1.0, True])
def test_hint_levels_are_1_to_3(level):
    with pytest.raises(ValueError, match="hint level must be 1"):
        ex.output_size.hint(level)


def test_winograd_nudge_keeps_the_transform_back(capsys):
    ex.winograd_1d.hint()
    nudge = capsys.readouterr().out
    ex.winograd_1d.hint(3)
    nearly = capsys.readouterr().out
    for secret in ("(g0+g1+g2)/2", "d0-d2", "m1-m2-m3"):
        assert secret not in nudge and secret in nearly


def test_a_new_exercise_must_give_three_hint_tiers():
    from convlab.exercises.core import Exercise

    class Fine(Exercise):  # noqa: F841 - defining it is the test
        name = "fine"
        hints = ("a nudge", "more", "nearly the answer")

    for bad in [("only one",), ("a", "b"), ("a", "b", "b"), ("a", "", "c"), ["a", "b", "c"]]:
        with pytest.raises(TypeError, match="hints must be a tuple of 3"):
            type("Bad", (Exercise,), {"name": "bad", "hints": bad})
    with pytest.raises(TypeError, match="hint_text is gone"):
        type("Old", (Exercise,), {"name": "old", "hint_text": "everything at once",
                                  "hints": ("a", "b", "c")})


# ------------------------------------------------------------------ the outcome channel
def test_check_records_each_verdict_as_a_json_line(tmp_path, monkeypatch, capsys):
    import json

    log = tmp_path / "outcomes.jsonl"
    monkeypatch.setenv("CONVLAB_OUTCOMES", str(log))
    ex.output_size.check(ex.output_size.solution(show=False))
    ex.output_size.check(lambda size, kernel, stride, padding, dilation: size)
    ex.same_padding.check(None)
    printed = capsys.readouterr().out
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["exercise"], r["result"]) for r in lines] == [
        ("output_size", "correct"), ("output_size", "incorrect"),
        ("same_padding", "not attempted")]
    assert lines[-1]["message"] == ex.same_padding.last_message
    for record in lines:  # the message is what the student read, not a summary of it
        assert record["message"] in printed


def test_check_records_nothing_without_the_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CONVLAB_OUTCOMES", raising=False)
    monkeypatch.chdir(tmp_path)
    ex.same_padding.check(None)
    assert list(tmp_path.iterdir()) == []
    assert ex.same_padding.last_message.startswith("Not attempted yet (same_padding)")


def test_an_unwritable_outcome_file_costs_a_warning_not_the_check(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("CONVLAB_OUTCOMES", str(tmp_path / "no_such_dir" / "o.jsonl"))
    ex.same_padding.check(None)
    captured = capsys.readouterr()
    assert captured.out.startswith("Not attempted yet") and "could not record" in captured.err


def _raises(*args):
    raise NotImplementedError


def _returns_none(*args):
    return None


def _returns_ellipsis(*args):
    return ...


@pytest.mark.parametrize("stub", [_raises, _returns_none, _returns_ellipsis])
@pytest.mark.parametrize("exercise", ex.ALL[:5], ids=lambda e: e.name)
def test_python_stubs_are_not_attempted(exercise, stub, capsys):
    ok, status, _ = verdict(exercise, stub, capsys)
    assert (ok, status) == (False, "not attempted")


def test_docstring_example():
    failures, _ = doctest.testmod(ex, verbose=False)
    assert failures == 0


def test_a_crash_is_reported_not_raised(capsys):
    def broken(size, kernel, stride, padding, dilation):
        return size / 0

    out = assert_rejected(ex.output_size, broken, capsys, "ZeroDivisionError", "case 1")
    # the student's own function is called output_size too: name the call that works
    assert out.rstrip().endswith("(Stuck? Call ex.output_size.hint().)"), out


def test_not_a_function(capsys):
    assert_rejected(ex.output_size, 42, capsys, "needs your function, got an int")
    assert_rejected(ex.output_size, "f", capsys, "needs your function, got a str")


# ------------------------------------------------------------------ output_size
def _size(ceil=False, dilation=True, both_sides=True, minus_one=True, floordiv=True):
    def fn(size, kernel, stride, padding, dil):
        d = dil if dilation else 1
        span = d * (kernel - 1) + (1 if minus_one else 0)
        room = size + (2 if both_sides else 1) * padding - span
        if ceil:
            return math.ceil(room / stride) + 1
        return room // stride + 1 if floordiv else room / stride + 1
    return fn


@pytest.mark.parametrize("wrong, words", [
    (_size(ceil=True), ["ceil"]),
    (_size(dilation=False), ["dilation"]),
    (_size(both_sides=False), ["both sides"]),
    (_size(minus_one=False), ["-1"]),
    (_size(floordiv=False), ["float", "//"]),
    (lambda size, kernel, stride, padding, dilation: size - kernel + 1, []),
], ids=["ceil", "no-dilation", "pad-once", "minus-one", "float", "valid-only"])
def test_output_size_rejects(wrong, words, capsys):
    assert_rejected(ex.output_size, wrong, capsys, *words)


def test_output_size_names_the_case(capsys):
    out = assert_rejected(ex.output_size, _size(ceil=True), capsys)
    assert "output_size(8, 3, 2, 0, 1)" in out and "expected 3" in out


# ------------------------------------------------------------------ same_padding
@pytest.mark.parametrize("wrong, words", [
    (lambda k, d: (d * (k - 1) // 2, d * (k - 1) // 2), ["odd total"]),
    (lambda k, d: (d * (k - 1) - d * (k - 1) // 2, d * (k - 1) // 2), ["bottom/right"]),
    (lambda k, d: ((k - 1) // 2, (k - 1) - (k - 1) // 2), ["dilation"]),
    (lambda k, d: (k // 2, k // 2), []),
    (lambda k, d: d * (k - 1), ["pair"]),
], ids=["symmetric", "extra-first", "no-dilation", "k//2", "total-only"])
def test_same_padding_rejects(wrong, words, capsys):
    assert_rejected(ex.same_padding, wrong, capsys, *words)


# ------------------------------------------------------------------ conv_loops
def _loops(flip=False, swap_stride=False, dilation=True, one_side=False, ceil=False):
    def fn(x, w, stride, padding, dil):
        (sh, sw) = stride[::-1] if swap_stride else stride
        (ph, pw), (dh, dw) = padding, (dil if dilation else (1, 1))
        n_b, c_in, h, wd = x.shape
        k_out, _, kh, kw = w.shape
        pads = ((ph, 0), (pw, 0)) if one_side else ((ph, ph), (pw, pw))
        xp = np.pad(x, ((0, 0), (0, 0)) + pads)
        rnd = math.ceil if ceil else math.floor
        oh = rnd((xp.shape[2] - dh * (kh - 1) - 1) / sh) + 1
        ow = rnd((xp.shape[3] - dw * (kw - 1) - 1) / sw) + 1
        ww = w[:, :, ::-1, ::-1] if flip else w
        out = np.zeros((n_b, k_out, oh, ow))
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, :, i * sh: i * sh + dh * (kh - 1) + 1: dh,
                           j * sw: j * sw + dw * (kw - 1) + 1: dw]
                out[:, :, i, j] = np.einsum("ncpq,kcpq->nk", patch, ww)
        return out
    return fn


def test_loops_helper_is_right_when_unbroken(capsys):
    ex.conv_loops.check(_loops())  # so each rejection below is the knob's doing
    assert ex.conv_loops.last_status == "correct", capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (_loops(flip=True), ["flipped"]),
    (_loops(swap_stride=True), []),
    (_loops(dilation=False), []),
    (_loops(one_side=True), ["one side"]),
    (_loops(ceil=True), []),
], ids=["flipped", "stride-axes", "no-dilation", "pad-one-side", "ceil"])
def test_conv_loops_rejects(wrong, words, capsys):
    assert_rejected(ex.conv_loops, wrong, capsys, *words)


def test_conv_loops_rejects_in_place_changes(capsys):
    right = ex.conv_loops.solution(show=False)

    def sneaky(x, w, stride, padding, dilation):
        out = right(x, w, stride, padding, dilation)
        x *= 2  # corrupts the caller's array
        return out

    assert_rejected(ex.conv_loops, sneaky, capsys, "in place")


# ------------------------------------------------------------------ im2col
def _cols(transpose=False, pqc=False, swap_stride=False, dilation=True, one_side=False):
    def fn(x, kernel, stride, padding, dil):
        (kh, kw), (sh, sw) = kernel, (stride[::-1] if swap_stride else stride)
        (ph, pw), (dh, dw) = padding, (dil if dilation else (1, 1))
        c_in = x.shape[0]
        pads = ((ph, 0), (pw, 0)) if one_side else ((ph, ph), (pw, pw))
        xp = np.pad(x, ((0, 0),) + pads)
        oh = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
        ow = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
        cols = np.empty((c_in, kh, kw, oh, ow))
        for p in range(kh):
            for q in range(kw):
                cols[:, p, q] = xp[:, p * dh: p * dh + sh * (oh - 1) + 1: sh,
                                   q * dw: q * dw + sw * (ow - 1) + 1: sw]
        if pqc:
            cols = cols.transpose(1, 2, 0, 3, 4)
        cols = cols.reshape(c_in * kh * kw, oh * ow)
        return cols.T if transpose else cols
    return fn


def test_cols_helper_is_right_when_unbroken():
    ex.im2col.check(_cols())
    assert ex.im2col.last_status == "correct"


@pytest.mark.parametrize("wrong, words", [
    (_cols(transpose=True), []),  # most cases fail on shape; the square one is named
    (_cols(pqc=True), ["(p, q, c)"]),
    (_cols(swap_stride=True), []),
    (_cols(dilation=False), []),
    (_cols(one_side=True), []),
], ids=["transposed", "row-order", "stride-axes", "no-dilation", "pad-one-side"])
def test_im2col_rejects(wrong, words, capsys):
    assert_rejected(ex.im2col, wrong, capsys, *words)


def test_im2col_names_a_transposed_square_matrix(capsys):
    from convlab.exercises import loops

    square = [c for c in loops.IM2COL_CASES if c[0] == (3, 6, 5)]
    keep = loops.IM2COL_CASES[:]
    try:
        loops.IM2COL_CASES[:] = square
        assert_rejected(ex.im2col, _cols(transpose=True), capsys, "transposed")
    finally:
        loops.IM2COL_CASES[:] = keep


# ------------------------------------------------------------------ winograd_1d
def _direct(d, g):
    return [d[0] * g[0] + d[1] * g[1] + d[2] * g[2], d[1] * g[0] + d[2] * g[1] + d[3] * g[2]]


def test_multiplications_are_counted():
    count = [0]
    _direct(_counted(np.arange(1.0, 5.0), "d", count), _counted(np.ones(3), "g", count))
    assert count[0] == 6
    count = [0]
    sol = ex.winograd_1d.solution(show=False)
    y = sol(_counted(np.array([1.0, -2.0, 3.5, 0.25]), "d", count),
            _counted(np.array([0.5, 2.0, -1.0]), "g", count))
    assert count[0] == 4
    assert [v.value for v in y] == pytest.approx([1.0 * 0.5 - 4 - 3.5, -1 + 7 - 0.25])


def _as_floats(d, g):
    d = np.asarray(d, dtype=float)
    return ex.winograd_1d.solution(show=False)(d, np.asarray(g, dtype=float))


@pytest.mark.parametrize("wrong, words", [
    (_direct, ["6 multiplications"]),
    (lambda d, g: [d[0] * g[2] + d[1] * g[1] + d[2] * g[0],
                   d[1] * g[2] + d[2] * g[1] + d[3] * g[0]], ["convolution"]),
    (lambda d, g: [(d[0] - d[2]) * g[0] + (d[1] + d[2]) * (g[0] + g[1] + g[2]) / 2,
                   (d[1] + d[2]) * (g[0] + g[1] + g[2]) / 2], []),
    (_as_floats, ["+ - * /"]),
], ids=["direct", "convolution", "dropped-terms", "float-conversion"])
def test_winograd_rejects(wrong, words, capsys):
    assert_rejected(ex.winograd_1d, wrong, capsys, *words)


# ------------------------------------------------------------------ prange_kernel
@njit(parallel=True)
def _prange_race(x, w):
    n_b, c_in, h, wd = x.shape
    k_out, _, kh, kw = w.shape
    out = np.zeros((n_b, k_out, h - kh + 1, wd - kw + 1))
    for n in range(n_b):
        for k in range(k_out):
            for c in prange(c_in):  # the classic race: every c adds into the same out
                for i in range(h - kh + 1):
                    for j in range(wd - kw + 1):
                        for p in range(kh):
                            for q in range(kw):
                                out[n, k, i, j] += x[n, c, i + p, j + q] * w[k, c, p, q]
    return out


def _serial_body(x, w):
    n_b, c_in, h, wd = x.shape
    k_out, _, kh, kw = w.shape
    out = np.zeros((n_b, k_out, h - kh + 1, wd - kw + 1))
    for n in range(n_b):
        for k in range(k_out):
            for i in range(h - kh + 1):
                for j in range(wd - kw + 1):
                    acc = 0.0
                    for c in range(c_in):
                        for p in range(kh):
                            for q in range(kw):
                                acc += x[n, c, i + p, j + q] * w[k, c, p, q]
                    out[n, k, i, j] = acc
    return out


@njit(parallel=True)
def _prange_flipped(x, w):
    n_b, c_in, h, wd = x.shape
    k_out, _, kh, kw = w.shape
    out = np.zeros((n_b, k_out, h - kh + 1, wd - kw + 1))
    for k in prange(k_out):
        for n in range(n_b):
            for i in range(h - kh + 1):
                for j in range(wd - kw + 1):
                    acc = 0.0
                    for c in range(c_in):
                        for p in range(kh):
                            for q in range(kw):
                                acc += x[n, c, i + p, j + q] * w[k, c, kh - 1 - p, kw - 1 - q]
                    out[n, k, i, j] = acc
    return out


@njit(parallel=True)
def _prange_stub(x, w):
    raise NotImplementedError


@pytest.mark.parametrize("wrong, words", [
    (_prange_race, ["race", "out[n, k, i, j] +="]),
    (njit(_serial_body), ["parallel=True"]),
    (njit(parallel=True)(_serial_body), ["prange"]),
    (_serial_body, ["Numba"]),
    (_prange_flipped, ["flipped"]),
], ids=["race", "not-parallel", "no-prange", "plain-python", "flipped"])
def test_prange_rejects(wrong, words, capsys):
    assert_rejected(ex.prange_kernel, wrong, capsys, *words)


def test_prange_stub_is_not_attempted(capsys):
    assert verdict(ex.prange_kernel, _prange_stub, capsys)[:2] == (False, "not attempted")


def _typed_at_the_prompt(source: str, name: str):
    """``source`` compiled as the interactive prompt does: file "<stdin>", so Python keeps
    no source for inspect to read."""
    namespace = {"np": np, "njit": njit, "prange": prange}
    exec(compile(source, "<stdin>", "exec"), namespace)
    return namespace[name]


PROMPT_SOLUTION = """
@njit(parallel=True)
def conv_prange(x, w):
    n_b, c_in, h, wd = x.shape
    k_out, _, kh, kw = w.shape
    out = np.empty((n_b, k_out, h - kh + 1, wd - kw + 1))
    for nk in prange(n_b * k_out):
        n, k = nk // k_out, nk % k_out
        for i in range(h - kh + 1):
            for j in range(wd - kw + 1):
                acc = 0.0
                for c in range(c_in):
                    for p in range(kh):
                        for q in range(kw):
                            acc += x[n, c, i + p, j + q] * w[k, c, p, q]
                out[n, k, i, j] = acc
    return out
"""


def test_prange_function_typed_at_the_prompt(capsys):
    """It used to crash with OSError: could not get source code."""
    fn = _typed_at_the_prompt(PROMPT_SOLUTION, "conv_prange")
    ok, status, out = verdict(ex.prange_kernel, fn, capsys)
    assert ok and out.startswith("Correct (prange_kernel): right values"), out
    assert "Not checked" in out and "typed at the >>> prompt" in out
    flipped = PROMPT_SOLUTION.replace("w[k, c, p, q]", "w[k, c, kh - 1 - p, kw - 1 - q]")
    assert_rejected(ex.prange_kernel, _typed_at_the_prompt(flipped, "conv_prange"), capsys,
                    "flipped")
    serial = PROMPT_SOLUTION.replace("prange(n_b * k_out)", "range(n_b * k_out)")
    assert_rejected(ex.prange_kernel, _typed_at_the_prompt(serial, "conv_prange"), capsys,
                    "no `for ... in prange(...)` loop")


RACE_FREE = """
def f(x, out, tmp):
    for a in prange(4):
        n, k = a // 2, a % 2
        scratch = np.zeros(3)
        scratch[0] += 1.0
        for i in range(3):
            out[n, k, i] = scratch[0]
        tmp[a] = 1.0
"""

RACY = """
def f(x, out):
    for c in prange(4):
        row = out[0]
        row[1] = x[c]
        out[0, 1] = x[c]
"""


def test_find_races():
    assert find_races(RACE_FREE) == []
    races = find_races(RACY)
    assert len(races) == 2 and "row[1] = x[c]" in races[0] and "out[0, 1]" in races[1]


# ------------------------------------------------------------------ cuda_kernel
@cuda.jit
def _cuda_swapped(x, w, out):
    i, j = cuda.grid(2)  # x taken as the row: the wrong axis
    if i < out.shape[1] and j < out.shape[2]:
        for k in range(out.shape[0]):
            acc = 0.0
            for c in range(w.shape[1]):
                for p in range(w.shape[2]):
                    for q in range(w.shape[3]):
                        acc += x[c, i + p, j + q] * w[k, c, p, q]
            out[k, i, j] = acc


@cuda.jit
def _cuda_unguarded(x, w, out):
    j, i = cuda.grid(2)
    for k in range(out.shape[0]):
        acc = 0.0
        for c in range(w.shape[1]):
            for p in range(w.shape[2]):
                for q in range(w.shape[3]):
                    acc += x[c, i + p, j + q] * w[k, c, p, q]
        out[k, i, j] = acc


@cuda.jit
def _cuda_flipped(x, w, out):
    j, i = cuda.grid(2)
    kh, kw = w.shape[2], w.shape[3]
    if i < out.shape[1] and j < out.shape[2]:
        for k in range(out.shape[0]):
            acc = 0.0
            for c in range(w.shape[1]):
                for p in range(kh):
                    for q in range(kw):
                        acc += x[c, i + p, j + q] * w[k, c, kh - 1 - p, kw - 1 - q]
            out[k, i, j] = acc


@cuda.jit
def _cuda_first_channel_only(x, w, out):
    j, i = cuda.grid(2)
    if i < out.shape[1] and j < out.shape[2]:
        acc = 0.0
        for c in range(w.shape[1]):
            for p in range(w.shape[2]):
                for q in range(w.shape[3]):
                    acc += x[c, i + p, j + q] * w[0, c, p, q]
        out[0, i, j] = acc


@cuda.jit
def _cuda_stub(x, w, out):
    pass  # your code here


@cuda.jit
def _cuda_raises(x, w, out):
    raise NotImplementedError


@pytest.mark.parametrize("wrong, words", [
    (_cuda_swapped, []),
    (_cuda_unguarded, ["guard"]),
    (_cuda_flipped, ["flipped"]),
    (_cuda_first_channel_only, ["never written"]),
    ("def helper_missing(x, w, out):\n    out[0, 0, 0] = helper(x)\n", ["fresh process"]),
], ids=["swapped-axes", "no-guard", "flipped", "one-channel", "undefined-name"])
def test_cuda_rejects(wrong, words, capsys):
    assert_rejected(ex.cuda_kernel, wrong, capsys, *words)


@pytest.mark.parametrize("stub", [_cuda_stub, _cuda_raises], ids=["pass", "raises"])
def test_cuda_stub_is_not_attempted(stub, capsys):
    assert verdict(ex.cuda_kernel, stub, capsys)[:2] == (False, "not attempted")


def test_cuda_accepts_source_text(capsys):
    from convlab.exercises.core import source_of

    ex.cuda_kernel.check(source_of(ex.cuda_kernel.solution(show=False)))
    assert ex.cuda_kernel.last_status == "correct"


def test_cuda_reports_traffic_and_names_the_thread(capsys):
    ok, _, out = verdict(ex.cuda_kernel, ex.cuda_kernel.solution(show=False), capsys)
    assert ok, out
    # 2 loads per multiply-add, C*kh*kw = 2*3*2 = 12 multiply-adds per output in case 1
    assert "global reads per output, case 1: 24.0 (x 12.0, w 12.0;" in out, out
    out = assert_rejected(ex.cuda_kernel, _cuda_unguarded, capsys, "out-of-bounds", "guard")
    # case 1's output (2, 4, 8) is whole 4x4 blocks: no spare thread.  Case 2's (3, 6, 4)
    # is not: thread (0, 2) of block (0, 1) sits at i = 4*1 + 2 = 6, past the 6 rows; its
    # taps p = 0 read row 6 of x (inside), p = 1 row 7 of a 7-row input (outside)
    assert "case 2/2" in out and "thread (0, 2, 0) of block (0, 1, 0) reads x[0, 7, 0], " \
           "outside x's shape (1, 7, 6)" in out, out


@cuda.jit
def _cuda_every_thread_writes_row_0(x, w, out):
    j, i = cuda.grid(2)
    if i < out.shape[1] and j < out.shape[2]:
        for k in range(out.shape[0]):
            acc = 0.0
            for c in range(w.shape[1]):
                for p in range(w.shape[2]):
                    for q in range(w.shape[3]):
                        acc += x[c, i + p, j + q] * w[k, c, p, q]
            out[k, i, j] = acc
            out[k, 0, j] = acc  # every row's thread also writes row 0: a race


def test_cuda_rejects_a_race(capsys):
    assert_rejected(ex.cuda_kernel, _cuda_every_thread_writes_row_0, capsys, "race:",
                    "writes out[0, 0, 0] and thread (0, 1, 0) of block (0, 0, 0) writes it "
                    "too, in the same barrier phase 0")


# ------------------------------------------------------------------ cuda_tiled
def _tiled(first_sync=True, stage=6, shared=6, row_shift=0,
           early_return=False, weights_shared=True):
    """The solution's source with one knob turned: each knob is a classic mistake."""
    from convlab.exercises.core import source_of

    src = source_of(ex.cuda_tiled.solution(show=False))
    edits = []
    if not first_sync:
        edits.append(("        cuda.syncthreads()  # 2.", "        pass  # 2."))
    if stage != 6:
        edits.append(("for e in range(t, 36, 16):", f"for e in range(t, {stage * stage}, 16):"))
        edits.append(("py, px = e // 6, e % 6", f"py, px = e // {stage}, e % {stage}"))
    if shared != 6:
        edits.append(("cuda.shared.array((6, 6)", f"cuda.shared.array(({shared}, {shared})"))
    if row_shift:
        edits.append(("v = x[c, i0 + py, j0 + px]", f"v = x[c, i0 + py + {row_shift}, j0 + px]"))
    if early_return:
        edits.append(("    acc = 0.0\n", "    acc = 0.0\n    if i0 + ty >= out.shape[1] or "
                      "j0 + tx >= out.shape[2]:\n        return\n"))
    if not weights_shared:
        edits.append(("acc += patch[ty + p, tx + q] * w_s[p, q]",
                      "acc += patch[ty + p, tx + q] * w[k, c, p, q]"))
    for old, new in edits:
        assert old in src, old
        src = src.replace(old, new)
    return src


def test_tiled_helper_is_right_when_unbroken(capsys):
    ok, _, out = verdict(ex.cuda_tiled, _tiled(), capsys)
    assert ok, out  # so each rejection below is the knob's doing
    # case 1: x (2, 7, 10) -> out (2, 5, 8): 2x2 tiles per output channel. Per (k, c): the
    # 6x6 patches clipped to x (rows 6 + 3, columns 6 + 6) and 9 weights per block
    x_reads, w_reads = 2 * 2 * (6 + 3) * (6 + 6), 2 * 2 * 4 * 9
    assert f"case 1: {(x_reads + w_reads) / 80:.2f} global reads per output" in out, out
    assert f"naive's 36: {2 * 2 * 9 * 80 / (x_reads + w_reads):.1f}x fewer" in out, out


@pytest.mark.parametrize("kwargs, words", [
    (dict(first_sync=False), ["race:", "writes patch[", "in the same barrier phase 0",
                              "a cuda.syncthreads() is missing"]),
    (dict(stage=5), ["uninitialised:", "reads patch[", "halo off by one"]),
    (dict(stage=5, shared=5), ["out-of-bounds:", "outside patch's shape (5, 5)", "halo of 2"]),
    (dict(row_shift=1), ["out-of-bounds:", "reads x[", "halo off by one"]),
    (dict(early_return=True), ["divergent-barrier:", "passed 0 syncthreads",
                               "skip only the store"]),
    # case 1: x reads as in the solution, 2*2*9*12 = 432; w: the 144 staged plus 9 per
    # channel by each of the 8 blocks' 16 threads, 8*16*2*9 = 2,304; naive 2*2*9*80 = 2,880
    (dict(weights_shared=False), ["right values", "read 2,880 numbers", "(x 432, w 2,448)",
                                  "1.0x fewer", "the task asks for 3x"]),
], ids=["no-sync-before-sum", "halo-short", "patch-too-small",
        "halo-shifted", "early-return", "weights-from-global"])
def test_tiled_rejects(kwargs, words, capsys):
    assert_rejected(ex.cuda_tiled, _tiled(**kwargs), capsys, *words)


def test_tiled_rejects_the_naive_kernel(capsys):
    assert_rejected(ex.cuda_tiled, ex.cuda_kernel.solution(show=False), capsys, "race:",
                    "from another block", "one thread per output")


@pytest.mark.parametrize("stub", [_cuda_stub, _cuda_raises], ids=["pass", "raises"])
def test_tiled_stub_is_not_attempted(stub, capsys):
    assert verdict(ex.cuda_tiled, stub, capsys)[:2] == (False, "not attempted")

"""The CUDA exercises' second run, on a real GPU: what it does where there is none (here,
in CI) and how it judges what a GPU gives back.  The run on a real GPU itself is made by
scripts/gpu_check.py on a machine with one (its record says what ran)."""

from __future__ import annotations

import numpy as np
import pytest

import convlab.exercises as ex
from convlab.exercises import cuda as excuda
from convlab.exercises.core import Incorrect, source_of
from convlab.exercises.loops import oracle


def _case():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 6, 9)), rng.standard_normal((2, 2, 3, 2))
    want = oracle(x[None], w, 1, 0, 1)[0]
    return [(x, w)], [excuda.launch_2d(want.shape)], [want]


def _where(n):
    return f"case {n + 1}"


def test_no_driver_means_no_gpu_run_and_no_word_of_it(monkeypatch):
    monkeypatch.setattr(excuda, "gpu_driver_present", lambda: False)
    cases, launches, expected = _case()
    source = source_of(ex.cuda_kernel.solution(show=False))
    assert excuda.confirm_on_gpu(source, "conv_kernel", cases, launches, expected,
                                 _where) == ""


def test_a_driver_without_a_usable_gpu_is_said_not_hidden(monkeypatch):
    """The runner's GPU mode, started for real: numba.cuda finds no GPU on this machine,
    so the note says the GPU run did not happen (it must not claim it did)."""
    pytest.importorskip("numba.cuda")
    from numba import cuda

    if cuda.is_available():  # pragma: no cover - a machine with a GPU
        pytest.skip("this machine has a GPU: the run is real here (scripts/gpu_check.py)")
    monkeypatch.setattr(excuda, "gpu_driver_present", lambda: True)
    cases, launches, expected = _case()
    source = source_of(ex.cuda_kernel.solution(show=False))
    note = excuda.confirm_on_gpu(source, "conv_kernel", cases, launches, expected, _where)
    assert note.startswith(" (not run on this machine's GPU: ") and "no usable GPU" in note


@pytest.mark.parametrize("bad", ["nan", "wrong"])
def test_a_gpu_that_disagrees_makes_it_incorrect(monkeypatch, bad):
    cases, launches, expected = _case()
    got = expected[0].copy()
    if bad == "nan":
        got[0, 1, 2] = np.nan  # one output no thread wrote on the GPU
    else:
        got[1, 0, 0] += 0.5
    monkeypatch.setattr(excuda, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(excuda, "run_on_simulator",
                        lambda *a, **k: ({"ok": True, "traces": [], "gpu": "Fake"}, [got]))
    with pytest.raises(Incorrect, match="on the GPU, case 1"):
        excuda.confirm_on_gpu("", "k", cases, launches, expected, _where)


def test_a_gpu_that_agrees_is_named_in_the_note(monkeypatch):
    cases, launches, expected = _case()
    monkeypatch.setattr(excuda, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(excuda, "run_on_simulator", lambda *a, **k: (
        {"ok": True, "traces": [], "gpu": "NVIDIA Fake"}, [expected[0].copy()]))
    note = excuda.confirm_on_gpu("", "k", cases, launches, expected, _where)
    assert note == " Run on the GPU (NVIDIA Fake) too: the same numbers."


def test_numpy_without_row_stack_gets_it_back_for_numba_cuda():
    """NumPy 2.5 removed np.row_stack, which numba-cuda 0.30.4 overloads when it compiles
    its first kernel: every GPU kernel then failed on the H200.  The shim restores the alias
    on a NumPy that lacks it and leaves one that has it alone."""
    import types

    from convlab.kernels import cuda as ck

    bare = types.ModuleType("numpy_2_5")
    bare.vstack = np.vstack
    assert ck.restore_row_stack(bare) is True and bare.row_stack is np.vstack
    assert ck.restore_row_stack(bare) is False  # already there: untouched
    assert "row_stack" in vars(np)  # convlab's import made sure of it here too

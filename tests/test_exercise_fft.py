"""The fft_conv1d exercise accepts right answers (however they crop or pad) and rejects
the classic wrong ones, naming each: no zero padding (wrap-around), no conjugate, a
wrong crop; and an answer that does not use numpy.fft."""

from __future__ import annotations

import numpy as np
import pytest

import convlab.exercises as ex
from convlab.exercises.fourier import CASES, diagnose, expected


def verdict(fn, capsys) -> tuple[bool, str, str]:
    assert ex.fft_conv1d.check(fn) is None  # a notebook cell shows the message alone
    status = ex.fft_conv1d.last_status
    return status == "correct", status, capsys.readouterr().out


# ------------------------------------------------------------------ right answers
def rolled(x, w, padding):
    """Right, another way: transform x unpadded with room for the padding on both sides,
    then roll the circular result so output 0 is the window starting `padding` early."""
    k = len(w)
    size = len(x) + 2 * padding + k - 1
    c = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(w, size)), size)
    return np.roll(c, padding)[:len(x) + 2 * padding - k + 1]


def flipped_filter(x, w, padding):
    """Right, with the filter reversed and a convolution's crop (the other way round)."""
    xpad = np.pad(x, padding)
    size = len(xpad) + len(w) - 1
    c = np.fft.irfft(np.fft.rfft(xpad, size) * np.fft.rfft(w[::-1], size), size)
    return c[len(w) - 1:len(xpad)]


@pytest.mark.parametrize("fn", [ex.fft_conv1d.solution(show=False), rolled, flipped_filter])
def test_right_answers_are_accepted(fn, capsys):
    ok, status, out = verdict(fn, capsys)
    assert ok and status == "correct", out


# ------------------------------------------------------------------ classic mistakes
def no_zero_pad(x, w, padding):
    n = len(x)
    c = np.fft.irfft(np.fft.rfft(x) * np.conj(np.fft.rfft(w, n)), n)  # circular, length n
    return np.roll(c, padding)[:n + 2 * padding - len(w) + 1]


def no_conjugate(x, w, padding):
    xpad = np.pad(x, padding)
    size = len(xpad) + len(w) - 1
    return np.fft.irfft(np.fft.rfft(xpad, size) * np.fft.rfft(w, size), size)[:len(xpad) - len(w)
                                                                              + 1]


def convolution_crop(x, w, padding):
    xpad = np.pad(x, padding)
    size = len(xpad) + len(w) - 1
    c = np.fft.irfft(np.fft.rfft(xpad, size) * np.conj(np.fft.rfft(w, size)), size)
    return c[len(w) - 1:len(w) - 1 + len(xpad) - len(w) + 1]


def off_by_one(x, w, padding):
    xpad = np.pad(x, padding)
    size = len(xpad) + len(w) - 1
    c = np.fft.irfft(np.fft.rfft(xpad, size) * np.conj(np.fft.rfft(w, size)), size)
    return c[1:len(xpad) - len(w) + 2]


def direct_sum(x, w, padding):
    return np.correlate(np.pad(x, padding), w, mode="valid")


@pytest.mark.parametrize("fn, words", [
    (no_zero_pad, ["wrapped round", "circular", "case 1/"]),
    (no_conjugate, ["reversed", "conj(W)"]),
    (convolution_crop, ["crop starts 2 place(s) too late", "len(w) - 1"]),
    (off_by_one, ["crop starts 1 place(s) too late"]),
    (direct_sum, ["numpy.fft"]),
], ids=["no-zero-pad", "no-conjugate", "convolution-crop", "off-by-one", "no-fft"])
def test_classic_mistakes_are_named(fn, words, capsys):
    ok, status, out = verdict(fn, capsys)
    assert not ok and status == "incorrect", out
    for word in words:
        assert word in out, out


def test_a_wrong_length_is_reported():
    def too_short(x, w, padding):
        return np.correlate(x, w, mode="valid")  # padding ignored: fewer windows

    ex.fft_conv1d.check(too_short)
    assert ex.fft_conv1d.last_status == "incorrect"


def test_the_cases_tell_the_mistakes_apart():
    """Each mistake differs from the right answer on the first case with padding (so it
    is caught there), and diagnose() finds nothing in a right answer or random noise."""
    rng = np.random.default_rng(0)
    size, k, padding = CASES[0]
    assert padding > 0 and k > 1 and 2 * padding == k - 1  # 'same': every mistake has the length
    x, w = rng.standard_normal(size), rng.standard_normal(k)
    want = expected(x, w, padding)
    for wrong in (no_zero_pad, no_conjugate, convolution_crop, off_by_one):
        got = wrong(x, w, padding)
        assert got.shape == want.shape and not np.allclose(got, want)
        assert diagnose(got, x, w, padding) is not None
    assert diagnose(rng.standard_normal(want.shape), x, w, padding) is None


@pytest.mark.parametrize("stub", ["raise NotImplementedError", "return None", "return ..."])
def test_stubs_are_not_attempted(stub, capsys):
    namespace: dict = {}
    exec(f"def fft_conv1d(x, w, padding):\n    {stub}\n", namespace)
    ok, status, _ = verdict(namespace["fft_conv1d"], capsys)
    assert (ok, status) == (False, "not attempted")

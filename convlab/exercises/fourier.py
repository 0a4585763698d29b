"""1-D correlation by the convolution theorem: ``fft_conv1d(x, w, padding)``.

The student transforms, multiplies and transforms back with ``numpy.fft``.  Three
mistakes are classic, and the check names each one by reproducing it:

* **no zero padding**: a DFT is circular, so a window that hangs over an edge reads
  samples wrapped round from the other end (the student gets ``padding_mode='circular'``
  instead of zeros);
* **no conjugate (or flip)**: ``X * W`` is a *convolution*, the kernel reversed;
  a correlation needs ``X * conj(W)``;
* **a wrong crop**: the right circular result, cut at the wrong place (e.g. where a
  convolution's valid outputs would start, k - 1 further on).

Expected values come from ``numpy.correlate`` on the zero-padded input (a direct sum,
no transforms).  The wrong answers are recognised by recomputing every transform set-up
a student might have used (the signal padded or not, the transform size, conjugated or
not) at every shift, and asking which one the answer is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import Exercise, Incorrect, call, compare_arrays, source_of

# (len(x), len(w), padding): 'same'-like first (the circular answer has the right length
# there), then valid, full, and ones in between; every length differs from the others
CASES = [(9, 3, 1), (12, 5, 0), (7, 4, 3), (16, 7, 3), (10, 1, 2), (11, 6, 4), (5, 5, 2)]
RTOL = 1e-9


def expected(x: np.ndarray, w: np.ndarray, padding: int) -> np.ndarray:
    """y[i] = sum_p xpad[i + p] w[p], xpad = x with ``padding`` zeros on each side."""
    return np.correlate(np.pad(x, padding), w, mode="valid")


def _circular(signal: np.ndarray, w: np.ndarray, size: int, conj: bool) -> np.ndarray:
    spectrum = np.fft.rfft(w, size)
    return np.fft.irfft(np.fft.rfft(signal, size) * (np.conj(spectrum) if conj else spectrum),
                        size)


def diagnose(got: np.ndarray, x: np.ndarray, w: np.ndarray, padding: int) -> str | None:
    """Which classic mistake ``got`` is (None: none of them).  Every set-up a student might
    have used is tried: the signal zero-padded by ``padding`` or not, the transform as
    long as the signal or k - 1 longer, the filter spectrum conjugated or not, and every
    crop (a circular shift) of the result."""
    k, want = len(w), expected(x, w, padding)
    out, xp = len(want), np.pad(x, padding)
    atol = RTOL * max(1.0, float(np.abs(want).max(initial=0.0)))
    setups = []  # (conjugated, circular result, the shift that is right for it, size)
    for conj in (True, False):
        for signal, right in ((xp, 0), (x, padding)):  # unpadded: roll right by padding
            for size in sorted({len(signal), len(signal) + k - 1}):
                if size >= max(len(signal), k, out):
                    setups.append((conj, _circular(signal, w, size, conj), right, size))
    matches = [(conj, c, right, size, s) for conj, c, right, size in setups
               for s in range(size) if np.allclose(got, np.roll(c, s)[:out], rtol=0, atol=atol)]
    if not matches:
        return None
    if not any(conj for conj, *_ in matches):
        return ("your kernel came out reversed: X * W is a convolution. A correlation "
                "multiplies by the conjugate, X * conj(W) (or uses w[::-1])")
    for conj, c, right, size, s in matches:
        if conj and np.allclose(np.roll(c, right)[:out], want, rtol=0, atol=atol):
            off = (right - s) % size  # where the student's crop starts, from the right one
            off = off - size if off > size // 2 else off
            return (f"your transforms are right but your crop starts {abs(off)} place(s) too "
                    f"{'late' if off > 0 else 'early'}: output i is the window starting at "
                    f"xpad[i] (outputs 0 .. {out - 1} of the circular result of the zero-"
                    "padded x; a convolution's would start at len(w) - 1)")
    return ("the outputs whose window hangs over an edge read samples wrapped round from "
            "the other end: a DFT is circular. Give it zeros to read: pad x with `padding` "
            "zeros on each side, and make the transforms long enough (len(xpad) + len(w) - 1 "
            "is always enough)")


class FFTConv1D(Exercise):
    name = "fft_conv1d"
    title = "1-D correlation by the convolution theorem"
    task = ("Write fft_conv1d(x, w, padding) -> y with numpy.fft: x and w are 1-D arrays, "
            "padding an int; return the cross-correlation of x, zero-padded by `padding` "
            "on each side, with w: y[i] = sum_p xpad[i + p] * w[p], for the "
            "len(x) + 2*padding - len(w) + 1 windows that fit (what Conv1d computes). "
            "Transform, multiply pointwise, transform back; no loops over outputs.")
    hints = (
        "A product of spectra is a *circular* correlation (or, without a conjugate, a "
        "convolution): make the transforms long enough that nothing wraps round, and "
        "think about which of the two numpy.fft gives you.",
        "Pad x first (np.pad), pick a transform length L >= len(xpad) + len(w) - 1, "
        "multiply np.fft.rfft(xpad, L) by the *conjugate* of np.fft.rfft(w, L), go back "
        "with np.fft.irfft(..., L). Which of the L results are windows that fit?",
        "xpad = np.pad(x, padding); choose a transform size L >= len(xpad) + len(w) - 1 so "
        "that nothing wraps round; Y = np.fft.rfft(xpad, L) * np.conj(np.fft.rfft(w, L)) "
        "(conj: a correlation, not a convolution); y = np.fft.irfft(Y, L); output i is "
        "y[i]: keep the first len(xpad) - len(w) + 1.")
    praise = ("a pointwise product per frequency instead of len(w) products per output: "
              "convlab's fft kernel does this in 2-D, tile by tile (notebook 11).")

    def _check(self, fn: Any) -> None:
        rng = np.random.default_rng(21)
        for n, (size, k, padding) in enumerate(CASES):
            x, w = rng.standard_normal(size), rng.standard_normal(k)
            where = f"case {n + 1}/{len(CASES)}, len(x)={size}, len(w)={k}, padding={padding}"
            got = call(fn, {"x": x, "w": w, "padding": padding}, where, first=n == 0)
            want = expected(x, w, padding)
            arr = np.asarray(got, dtype=np.float64) if _numeric(got) else None
            if arr is not None and arr.shape == want.shape and not np.allclose(
                    arr, want, rtol=0, atol=RTOL * max(1.0, np.abs(want).max())):
                why = diagnose(arr, x, w, padding)
                if why is not None:
                    raise Incorrect(f"{where}: {why}")
            if arr is not None and arr.shape != want.shape:
                raise Incorrect(f"{where}: you returned {arr.shape[0] if arr.ndim else 1} "
                                f"values; there are len(x) + 2*padding - len(w) + 1 = "
                                f"{len(want)} windows that fit (a wrong crop, or a "
                                "transform shorter than the padded signal?)")
            compare_arrays(got, want, where, rtol=RTOL)
        try:
            source = source_of(fn)
        except (OSError, TypeError):  # no source to read (a builtin, a lambda in a REPL)
            return
        if "fft" not in source:
            raise Incorrect("your values are right, but the exercise is to compute them with "
                            "numpy.fft (transform, multiply, transform back)")

    def _solution(self) -> Any:
        return fft_conv1d


def _numeric(got: Any) -> bool:
    try:
        np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def fft_conv1d(x, w, padding):
    xpad = np.pad(x, padding)  # the layer's zeros (a new array: x is untouched)
    out = len(xpad) - len(w) + 1  # windows that fit
    size = len(xpad) + len(w) - 1  # long enough that no window wraps round
    spectrum = np.fft.rfft(xpad, size) * np.conj(np.fft.rfft(w, size))  # conj: correlation
    return np.fft.irfft(spectrum, size)[:out]  # output i is the window starting at xpad[i]

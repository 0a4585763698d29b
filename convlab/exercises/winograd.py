"""Winograd F(2,3) in one dimension: two outputs of a 3-tap filter with 4 multiplies.

The check runs the student's function twice: on floats (are the values right?)
and on :class:`Counted` numbers, which count every multiplication of a
data-dependent value by anything non-constant.  Products of filter values with
each other or with constants are free: the filter transform ``G g`` is computed
once per filter and reused for every tile.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from . import solutions
from .core import Exercise, Incorrect, NotAttempted, call, compare_arrays


class Counted:
    """A number that remembers whether it depends on the data ``d`` and/or the
    filter ``g``, and counts the multiplications that Winograd must pay for."""

    __slots__ = ("value", "deps", "counter")

    def __init__(self, value: float, deps: frozenset[str], counter: list[int]) -> None:
        self.value, self.deps, self.counter = float(value), deps, counter

    def _wrap(self, value: float, deps: frozenset[str]) -> Counted:
        return Counted(value, deps, self.counter)

    def _split(self, other: Any) -> tuple[float, frozenset[str]] | None:
        if isinstance(other, Counted):
            return other.value, other.deps
        if isinstance(other, (int, float, np.integer, np.floating)):
            return float(other), frozenset()
        return None

    def __add__(self, other: Any) -> Any:
        o = self._split(other)
        return NotImplemented if o is None else self._wrap(self.value + o[0], self.deps | o[1])

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        o = self._split(other)
        return NotImplemented if o is None else self._wrap(self.value - o[0], self.deps | o[1])

    def __rsub__(self, other: Any) -> Any:
        o = self._split(other)
        return NotImplemented if o is None else self._wrap(o[0] - self.value, self.deps | o[1])

    def _product(self, value: float, other_deps: frozenset[str]) -> Counted:
        deps = self.deps | other_deps
        if self.deps and other_deps and "d" in deps:
            self.counter[0] += 1  # data times something that is not a constant: paid for
        return self._wrap(value, deps)

    def __mul__(self, other: Any) -> Any:
        o = self._split(other)
        return NotImplemented if o is None else self._product(self.value * o[0], o[1])

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        o = self._split(other)
        return NotImplemented if o is None else self._product(self.value / o[0], o[1])

    def __rtruediv__(self, other: Any) -> Any:
        o = self._split(other)
        return NotImplemented if o is None else self._product(o[0] / self.value, o[1])

    def __neg__(self) -> Counted:
        return self._wrap(-self.value, self.deps)

    def __pos__(self) -> Counted:
        return self

    def __repr__(self) -> str:
        return f"Counted({self.value!r})"


def _counted(values: np.ndarray, dep: str, counter: list[int]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = Counted(v, frozenset({dep}), counter)
    return arr


class Winograd1D(Exercise):
    name = "winograd_1d"
    title = "Winograd F(2,3) in 1-D"
    task = ("Write winograd_1d(d, g) -> [y0, y1]: d holds 4 input values, g 3 filter taps; "
            "return the two outputs of the cross-correlation, y0 = d0*g0 + d1*g1 + d2*g2 and "
            "y1 = d1*g0 + d2*g1 + d3*g2, using only 4 multiplications of data values "
            "(direct needs 6). Products of filter values with constants or each other are "
            "free (the filter transform is done once). Use only + - * / on d and g.")
    hints = (
        "Do not multiply inputs by taps directly. Transform both first: sums and "
        "differences of the d values cost no multiplications, combinations of the g values "
        "are free (done once per filter). Multiply the transformed values pairwise (4 "
        "products), then add and subtract the products to get y0 and y1.",
        "Follow the notebook's matrices: u = G g (4 numbers from the filter), v = B^T d (4 "
        "numbers, additions only), m = u * v element by element (the 4 multiplies), "
        "y = A^T m (additions only). Write each row out by hand, with + - * / on elements.",
        "Transform the filter: u = (g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2); the input: "
        "v = (d0-d2, d1+d2, d2-d1, d1-d3); multiply m = v*u elementwise (4 multiplies); "
        "then y0 = m0+m1+m2 and y1 = m1-m2-m3. Check it by expanding.")
    praise = "4 multiplies instead of 6: in 2-D, F(2x2,3x3) does 16 instead of 36."

    def _check(self, fn: Any) -> None:
        rng = np.random.default_rng(13)
        cases = [(rng.standard_normal(4), rng.standard_normal(3)) for _ in range(6)]
        for n, (d, g) in enumerate(cases):
            where = f"case {n + 1}/{len(cases)}, d={np.round(d, 3)}, g={np.round(g, 3)}"
            got = call(fn, {"d": d, "g": g}, where, first=n == 0)
            expected = np.correlate(d, g, mode="valid")  # cross-correlation: g not flipped
            flipped = partial(np.convolve, d, g, mode="valid")
            compare_arrays(got, expected, where, [
                ("you computed a convolution (g flipped); Conv2d and Winograd's F(2,3) here "
                 "are cross-correlations: y0 = d0*g0 + d1*g1 + d2*g2", flipped)],
                rtol=1e-9)
        count = [0]
        d, g = cases[0]
        try:
            got = fn(_counted(d, "d", count), _counted(g, "g", count))
        except NotImplementedError:
            raise NotAttempted("your function raises NotImplementedError") from None
        except TypeError as err:
            raise Incorrect("your function must work on any numbers using + - * / only "
                            "(check() counts multiplications by passing special number "
                            f"objects; converting them with float() or np.asarray(..., "
                            f"dtype=float) is not allowed): {err}") from None
        if count[0] > 4:
            raise Incorrect(f"your values are right, but you used {count[0]} multiplications "
                            "of data values; Winograd F(2,3) needs only 4")

    def _solution(self) -> Any:
        return solutions.winograd_1d

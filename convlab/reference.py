"""The float64 oracle: obviously correct, not fast.  No Numba.

Every kernel in convlab is tested against :func:`conv2d_reference`.  It is
written to be *checkable by eye*, straight from the definition PyTorch uses
(cross-correlation: the kernel is NOT flipped)::

    out[n, k, i, j] = bias[k] + sum_{c, p, q} xpad[n, g*Cg + c, i*sh + p*dh, j*sw + q*dw]
                                               * w[k, c, p, q]

with g = k // (K / groups).  The input is padded with :func:`convlab.padding.pad`,
every (p, q) tap is a strided slice of it, and the channel sum is an einsum
in float64.  Cost: kh*kw einsums over the whole output; fine for tests.

:func:`compare` is the one place that measures how far a result is from the
oracle (tests and the benchmark's correctness gate both use it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .padding import pad
from .shapes import ConvSpec


def conv2d_reference(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec
) -> np.ndarray:
    """float64 convolution of batched ``x`` (N, C, H, W); returns (N, K, Hout, Wout)."""
    xp = pad(np.asarray(x, dtype=np.float64).reshape(spec.batch, spec.in_channels,
                                                     spec.height, spec.width), spec)
    w = np.asarray(weight, dtype=np.float64)
    n, k, ho, wo = spec.batched_output_shape
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    g, cg, kg = spec.groups, spec.in_channels // spec.groups, k // spec.groups
    out = np.zeros((n, k, ho, wo))
    for grp in range(g):
        xg = xp[:, grp * cg:(grp + 1) * cg]
        wg = w[grp * kg:(grp + 1) * kg]
        for p in range(kh):
            for q in range(kw):
                # the input pixels that tap (p, q) sees, for every output position
                patch = xg[:, :, p * dh: p * dh + sh * (ho - 1) + 1: sh,
                                 q * dw: q * dw + sw * (wo - 1) + 1: sw]
                out[:, grp * kg:(grp + 1) * kg] += np.einsum("nchw,kc->nkhw", patch,
                                                             wg[:, :, p, q])
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return out


@dataclass(frozen=True)
class ErrorReport:
    """How far a result is from the oracle."""

    max_abs: float
    max_rel: float  # max_abs / max |oracle|: a scale-free number to compare kernels
    ok: bool
    tolerance: float

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "WRONG"
        return (f"{verdict}: max abs error {self.max_abs:.3g}, relative {self.max_rel:.3g} "
                f"(tolerance {self.tolerance:.3g})")


def compare(out: np.ndarray, expected: np.ndarray, tolerance: float) -> ErrorReport:
    """Compare ``out`` with the float64 ``expected``.

    ``ok`` means ``|out - expected| <= tolerance * max(1, max|expected|)`` everywhere,
    shapes equal, and NaN exactly where the oracle has NaN.  Absolute error is scaled
    by the output's magnitude because fp32 rounding error is relative to the size
    of the numbers summed, not to each (possibly near-zero) output.
    """
    out = np.asarray(out)
    if out.shape != expected.shape:
        return ErrorReport(float("inf"), float("inf"), False, tolerance)
    if expected.size == 0:
        return ErrorReport(0.0, 0.0, True, tolerance)
    diff = np.abs(out.astype(np.float64) - expected)
    finite = np.isfinite(expected)
    scale = float(np.max(np.abs(expected[finite]), initial=0.0))
    same_nonfinite = np.array_equal(np.isnan(out), np.isnan(expected)) and np.array_equal(
        out[~np.isnan(expected)] == np.inf, expected[~np.isnan(expected)] == np.inf)
    max_abs = float(np.max(diff[finite], initial=0.0)) if finite.any() else 0.0
    if np.isnan(max_abs):
        max_abs = float("inf")
    ok = bool(same_nonfinite and max_abs <= tolerance * max(1.0, scale))
    return ErrorReport(max_abs, max_abs / max(scale, 1e-300), ok, tolerance)

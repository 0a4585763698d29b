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


def conv2d_reference_at(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                        spec: ConvSpec, positions: np.ndarray) -> np.ndarray:
    """The oracle at a few outputs only: float64 ``out[n, :, i, j]`` for each row
    (n, i, j) of ``positions``, as a (P, K) array.  Same definition as
    :func:`conv2d_reference`, at a cost of P * K * reduction multiply-adds: how a check
    stays cheap beside a fast kernel (the autotuner's gate)."""
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 3)
    images, row = np.unique(positions[:, 0], return_inverse=True)
    xb = np.asarray(x, dtype=np.float64).reshape(spec.batch, spec.in_channels, spec.height,
                                                 spec.width)[images]
    xp = pad(xb, spec.with_batch(len(images)))
    w = np.asarray(weight, dtype=np.float64)
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    g, cg, kg = spec.groups, spec.in_channels // spec.groups, spec.out_channels // spec.groups
    rows = positions[:, 1, None] * sh + np.arange(kh) * dh  # (P, kh)
    cols = positions[:, 2, None] * sw + np.arange(kw) * dw  # (P, kw)
    windows = xp[row[:, None, None, None], np.arange(spec.in_channels)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]  # (P, C, kh, kw)
    out = np.empty((len(positions), spec.out_channels))
    for grp in range(g):
        out[:, grp * kg:(grp + 1) * kg] = np.einsum(
            "pcab,kcab->pk", windows[:, grp * cg:(grp + 1) * cg], w[grp * kg:(grp + 1) * kg])
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :]
    return out


def sample_positions(spec: ConvSpec, count: int = 64, seed: int = 0) -> np.ndarray:
    """(n, i, j) rows to check with :func:`conv2d_reference_at`: in the first and last
    image, the four corners (where padding and ragged tiles live), points along each
    edge and random interior points; about ``count`` per image."""
    rng = np.random.default_rng(seed)
    ho, wo = spec.out_height, spec.out_width
    picks = []
    for n in sorted({0, spec.batch - 1}):
        corners = [(0, 0), (0, wo - 1), (ho - 1, 0), (ho - 1, wo - 1)]
        edge = count // 8
        edges = ([(0, j) for j in rng.integers(0, wo, edge)]
                 + [(ho - 1, j) for j in rng.integers(0, wo, edge)]
                 + [(i, 0) for i in rng.integers(0, ho, edge)]
                 + [(i, wo - 1) for i in rng.integers(0, ho, edge)])
        inside = list(zip(rng.integers(0, ho, count // 2), rng.integers(0, wo, count // 2),
                          strict=True))
        picks += [(n, i, j) for i, j in corners + edges + inside]
    return np.unique(np.array(picks, dtype=np.int64), axis=0)


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
                f"(tolerance {self.tolerance:.3g}, relative to max(1, max |oracle|))")


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

"""How accurate is each algorithm?  Error vs the float64 oracle, as plain data.

Every kernel rounds differently.  ``naive`` adds its C*kh*kw products one by
one in float32, so its error grows with the reduction length.  Winograd sums
only over C (in sgemm's blocked, FMA order) but adds rounding in its
transforms: the input transform B^T d B multiplies by up to 4 (F(4,3)) or 5.25
(F(6,3)) and sums (m+2)^2 pixels, the output transform scales back down, so
bigger tiles round more (F(4,3) and F(6,3) well above F(2,3); between those two
it depends, see below).  Measured here (``error_study()``,
N(0,1) input and weight, 3x3, worst of 3 seeds), float32:

===========  ==========================  ============================
algorithm    max error / max|out|, C=64  over C = 1..256
===========  ==========================  ============================
naive        1.4e-6                      9.9e-8 .. 2.0e-6 (grows with C)
winograd_f2  3.6e-7                      1.4e-7 .. 6.9e-7
winograd_f4  5.0e-6                      2.2e-6 .. 1.2e-5
winograd_f6  4.2e-6                      4.2e-6 .. 8.6e-6
===========  ==========================  ============================

F(6,3) is less accurate than F(4,3) up to C=16 and more accurate from C=64
on: the ranking of the two big tiles depends on the channel count.  float64
errors are ~2e-9 times smaller, and there F(6,3) is the worse of the two at
every C: the precisions do not rank them alike.  Relative to direct
convolution on the same data (``vs_direct``, float32) F(4,3) is 3-30x and
F(6,3) 2.5-87x worse, F(2,3) 0.2-1.6x.

The registry tolerances were set from this study: each Winograd kernel's
``rtol`` is about 10x its worst float32 ``max_rel`` scaled to the 576-product
reference (``suggest_rtol`` today: 3.6e-6, 6.2e-5, 8.6e-5 for F(2,3), F(4,3),
F(6,3); the registry holds 5e-6, 5e-5, 2e-4), and
:meth:`convlab.kernels.Kernel.tolerance` scales it by
max(1, sqrt(reduction / 576)) for longer sums and by 1e-8 for float64.
``tests/test_numerics.py`` checks the study stays under them.

FFT convolution (``fft``) is the odd one out: its error comes from the transforms,
which mix a whole tile, so it hardly depends on the kernel size or the channel count.
:func:`growth_study` grows one thing at a time (kernel 1x1 .. 15x15, image 8x10 ..
64x80, channels 1 .. 256; 'same' padding), float32, worst of 3 seeds:

===========  =====================  =====================  =====================
algorithm    kernel 1 .. 15         image 8x10 .. 64x80    channels 1 .. 256
===========  =====================  =====================  =====================
naive        1.6e-7 .. 1.7e-6       3.8e-7 .. 5.2e-7       1.1e-7 .. 2.1e-6
im2col       2.0e-7 .. 6.8e-7       4.0e-7 .. 5.2e-7       1.8e-7 .. 6.6e-7
winograd_f4  3.2e-6 (3x3 only)      3.2e-6 .. 4.3e-6       2.2e-6 .. 1.1e-5
fft          1.6e-7 .. 2.7e-7       1.9e-7 .. 2.5e-7       2.0e-7 .. 3.4e-7
===========  =====================  =====================  =====================

so ``fft``'s ``rtol`` is 3e-6 (``suggest_rtol``: 2.6e-6).

NaN and Inf: each entry of B^T d B mixes several pixels of a tile, so a
non-finite pixel reaches outputs that do not depend on it: for F(4,3) and
F(6,3) every output of each tile whose interior holds it (a row or column of
outputs when it sits on the edge of a tile's input window).  Direct
convolution poisons only the 3x3 windows over the pixel, and so does F(2,3),
whose transforms are sparse enough.  :func:`nan_footprint` draws the
difference; ``tests/test_winograd.py`` predicts it from the zeros of B^T and A^T.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .kernels import get
from .kernels.registry import REFERENCE_REDUCTION
from .reference import compare, conv2d_reference
from .shapes import ConvSpec

DEFAULT_ALGOS = ("naive", "winograd_f2", "winograd_f4", "winograd_f6")


def error_study(
    algos: Sequence[str] = DEFAULT_ALGOS,
    channels: Sequence[int] = (1, 4, 16, 64, 256),
    dtypes: Sequence[Any] = (np.float32, np.float64),
    *,
    size: tuple[int, int] = (14, 18),
    out_channels: int = 8,
    batch: int = 1,
    seeds: Sequence[int] = (0, 1, 2),
) -> list[dict[str, Any]]:
    """Error of each algorithm vs the float64 oracle, 3x3 kernel, padding 1.

    For every (dtype, channel count, seed): N(0, 1) input (batch, C, *size) and
    weight (out_channels, C, 3, 3), rounded to the dtype, run through each
    kernel and compared with :func:`convlab.reference.conv2d_reference` on the
    same rounded values (so only the kernel's own rounding is measured).

    Returns one dict per (algo, dtype, channels, seed) with keys: algo, dtype,
    channels, seed, reduction (C*9), max_abs, max_rel (max_abs / max|oracle|),
    tolerance (the registry's, relative), ok (max_rel within it) and
    vs_direct (max_abs / the first algorithm's max_abs on the same data).
    """
    rows: list[dict[str, Any]] = []
    for dtype in dtypes:
        dt = np.dtype(dtype)
        for c in channels:
            for seed in seeds:
                rng = np.random.default_rng(seed)
                x = rng.standard_normal((batch, c) + tuple(size)).astype(dt)
                w = rng.standard_normal((out_channels, c, 3, 3)).astype(dt)
                b = rng.standard_normal(out_channels).astype(dt)
                spec = ConvSpec.from_shapes(x.shape, w.shape, padding=1)
                ref = conv2d_reference(x, w, b, spec)
                first = None
                for algo in algos:
                    kernel = get(algo)
                    tol = kernel.tolerance(spec, dt)
                    report = compare(kernel(x, w, b, spec), ref, tol)
                    first = report.max_abs if first is None else first
                    rows.append(dict(
                        algo=algo, dtype=dt.name, channels=c, seed=seed,
                        reduction=spec.reduction_length, max_abs=report.max_abs,
                        max_rel=report.max_rel, tolerance=tol, ok=report.ok,
                        vs_direct=report.max_abs / first if first > 0 else float("nan"),
                    ))  # fmt: skip
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst case over seeds: one row per (algo, dtype, channels), same keys."""
    worst: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["algo"], row["dtype"], row["channels"])
        if key not in worst or row["max_rel"] > worst[key]["max_rel"]:
            worst[key] = row
    return list(worst.values())


def suggest_rtol(rows: list[dict[str, Any]], algo: str, margin: float = 10.0) -> float:
    """The registry ``rtol`` these measurements support for ``algo``: the worst float32
    ``max_rel``, scaled back to the 576-product reference reduction, times ``margin``."""
    scaled = [r["max_rel"] / max(1.0, math.sqrt(r["reduction"] / REFERENCE_REDUCTION))
              for r in rows
              if r["algo"] == algo and r["dtype"] == "float32"]
    return margin * max(scaled)


def nan_footprint(algo: str, size: tuple[int, int] = (12, 12),
                  where: tuple[int, int] = (5, 6), value: float = float("nan")) -> np.ndarray:
    """Which outputs a single NaN (or Inf, with ``value``) input pixel poisons.

    One channel in and out, 3x3 kernel, padding 1, pixel ``where`` set to ``value``.
    Returns the boolean (H, W) map of non-finite outputs: a 3x3 square for direct
    convolution and for F(2,3) (its transforms are sparse enough), whole m x m tiles
    (or a row/column of one, for a pixel on the edge of a tile's input window) for
    F(4,3) and F(6,3)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1) + tuple(size))
    x[0, 0][where] = value
    w = rng.standard_normal((1, 1, 3, 3))
    spec = ConvSpec.from_shapes(x.shape, w.shape, padding=1)
    return ~np.isfinite(get(algo)(x, w, None, spec)[0, 0])


# --------------------------------------------------------------------------- growth
GROWTH_ALGOS = ("naive", "im2col", "winograd_f4", "fft")
GROWTH_BASE = {"kernel": 3, "size": (16, 20), "channels": 16}
GROWTH_AXES: dict[str, Sequence[Any]] = {  # the values each axis takes in turn
    "kernel": (1, 3, 5, 7, 9, 11, 13, 15),
    "size": ((8, 10), (16, 20), (32, 40), (64, 80)),
    "channels": (1, 4, 16, 64, 256),
}


def growth_study(
    algos: Sequence[str] = GROWTH_ALGOS,
    axes: dict[str, Sequence[Any]] | None = None,
    dtypes: Sequence[Any] = (np.float32, np.float64),
    *,
    base: dict[str, Any] | None = None,
    out_channels: int = 8,
    batch: int = 1,
    seeds: Sequence[int] = (0, 1, 2),
) -> list[dict[str, Any]]:
    """Error vs the float64 oracle as one thing grows at a time: the kernel size, the
    image size, the input channels (the others stay at ``base``), 'same' padding.

    FFT convolution's error comes from its transforms, which mix a whole tile: it
    grows with the transform size (log2 of its points), not with the kernel's taps the
    way a direct sum's does.  Winograd appears where it applies (3x3 only).

    Returns one dict per (axis, value, algo, dtype, seed) that the kernel supports,
    with the keys of :func:`error_study`'s rows (``channels`` included) plus ``axis``,
    ``value``, ``kernel`` (kh = kw) and ``size`` ((H, W)); ``vs_direct`` is relative to
    the first algorithm.  :func:`summarize_growth` keeps the worst seed.
    """
    axes = GROWTH_AXES if axes is None else axes
    base = {**GROWTH_BASE, **(base or {})}
    rows: list[dict[str, Any]] = []
    for axis, values in axes.items():
        for value in values:
            case = {**base, axis: value}
            k, (h, w), c = case["kernel"], tuple(case["size"]), case["channels"]
            for dtype in dtypes:
                dt = np.dtype(dtype)
                for seed in seeds:
                    rng = np.random.default_rng(seed)
                    x = rng.standard_normal((batch, c, h, w)).astype(dt)
                    wt = rng.standard_normal((out_channels, c, k, k)).astype(dt)
                    b = rng.standard_normal(out_channels).astype(dt)
                    spec = ConvSpec.from_shapes(x.shape, wt.shape, padding="same")
                    ref = conv2d_reference(x, wt, b, spec)
                    first = None
                    for algo in algos:
                        kernel = get(algo)
                        if kernel.supports(spec) is not None:
                            continue
                        tol = kernel.tolerance(spec, dt)
                        report = compare(kernel(x, wt, b, spec), ref, tol)
                        first = report.max_abs if first is None else first
                        rows.append(dict(
                            axis=axis, value=value, algo=algo, dtype=dt.name, channels=c,
                            kernel=k, size=(h, w), seed=seed,
                            reduction=spec.reduction_length, max_abs=report.max_abs,
                            max_rel=report.max_rel, tolerance=tol, ok=report.ok,
                            vs_direct=report.max_abs / first if first > 0 else float("nan"),
                        ))  # fmt: skip
    return rows


def summarize_growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst case over seeds: one row per (axis, value, algo, dtype)."""
    worst: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (row["axis"], str(row["value"]), row["algo"], row["dtype"])
        if key not in worst or row["max_rel"] > worst[key]["max_rel"]:
            worst[key] = row
    return list(worst.values())

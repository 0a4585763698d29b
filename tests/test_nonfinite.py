"""NaN and Inf: each kernel does what its registry entry (``nonfinite``) says, and
``algo="auto"`` never changes PyTorch's non-finite pattern.

The pattern that counts is *where* the output is NaN, +Inf or -Inf: the float64
oracle's, which is PyTorch's (a NaN or Inf reaches exactly the windows over it; an
Inf times a zero weight, or +Inf meeting -Inf, is NaN).  The table in docs/design.md
("Numerics") and the README list what each kernel does; these tests keep it true.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import prepare
from convlab.kernels import depthwise as depthwise_module
from convlab.kernels.registry import KERNELS, SKIPS_PADDING, NonFinite, register
from convlab.reference import conv2d_reference

from helpers import cpu_kernel_names

SHAPE_X, SHAPE_W = (2, 40, 13, 11), (36, 40, 3, 3)
POISONS = {
    "+inf inside": ("x", (0, 3, 5, 5), np.inf),
    "-inf on the edge": ("x", (1, 0, 0, 10), -np.inf),
    "nan in a corner": ("x", (0, 7, 12, 0), np.nan),
    "+inf in the weight": ("w", (3, 2, 1, 1), np.inf),
    "-inf weight on the padding": ("w", (5, 1, 0, 2), -np.inf),  # a corner tap: reads padding
}


def _masks(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.isnan(a), np.isposinf(a), np.isneginf(a)


def _case(poison: str, groups: int = 1, size: int = 3, padding: int = 1):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE_X).astype(np.float32)
    k = SHAPE_W[0] if groups == 1 else 2 * SHAPE_X[1]  # depthwise: channel multiplier 2
    w = rng.standard_normal((k, SHAPE_W[1] // groups, size, size)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    where, index, value = POISONS[poison]
    if where == "w":
        index = (index[0], index[1] % w.shape[1]) + tuple(i % size for i in index[2:])
    (x if where == "x" else w)[index] = value
    xa, wa, ba, spec = prepare(x, w, b, padding=padding, groups=groups)
    return x, w, b, conv2d_reference(xa, wa, ba, spec).reshape(spec.output_shape)


def _layer_for(algo: str) -> tuple[int, int, int]:
    """(groups, kernel size, padding): the 3x3 layer with padding 1; depthwise (groups =
    channels) for a kernel that only does depthwise; 1x1 unpadded for one that only
    does 1x1 (pointwise: there is no padding for a weight tap to fall on)."""
    kern = kernels.get(algo)
    if kern.supports(convlab.ConvSpec.from_shapes(SHAPE_X, SHAPE_W, padding=1)) is None:
        return 1, 3, 1
    c = SHAPE_X[1]
    dw = convlab.ConvSpec.from_shapes(SHAPE_X, (2 * c, 1, 3, 3), padding=1, groups=c)
    return (c, 3, 1) if kern.supports(dw) is None else (1, 1, 0)


def _same_pattern(out: np.ndarray, expected: np.ndarray) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(_masks(out), _masks(expected),
                                                    strict=True))


@pytest.mark.parametrize("poison", list(POISONS))
@pytest.mark.parametrize("algo", [n for n in cpu_kernel_names() if n != "python"])
def test_each_kernel_does_what_its_entry_says(algo, poison, monkeypatch):
    groups, size, padding = _layer_for(algo)
    x, w, b, expected = _case(poison, groups, size, padding)
    if algo == "depthwise":
        # its small-plane path (one flattened loop per tap over a zero-bordered copy)
        # multiplies the padding's zeros like PyTorch: the pattern is exact there ...
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            flat = convlab.conv2d(x, w, b, padding=padding, groups=groups, algo=algo)
        assert _same_pattern(flat, expected), "depthwise's small-plane path changed it"
        # ... and the entry's sentence is about the row-by-row path of wider planes
        monkeypatch.setattr(depthwise_module, "FLAT_MAX_WIDTH", -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no RuntimeWarning about the NaN/Inf either
        out = convlab.conv2d(x, w, b, padding=padding, groups=groups, algo=algo)
    assert np.isfinite(expected).sum() < expected.size  # the poison reached some outputs
    nonfinite = kernels.get(algo).nonfinite
    if nonfinite == "exact" or (nonfinite == SKIPS_PADDING and where_of(poison) == "x"):
        assert _same_pattern(out, expected), f"{algo} changed the NaN/Inf pattern"
    elif nonfinite == SKIPS_PADDING and poison == "-inf weight on the padding":
        assert not _same_pattern(out, expected)  # the documented difference does show
        assert np.isnan(out).sum() < np.isnan(expected).sum()  # PyTorch's 0 x Inf = NaN
    elif poison == "+inf inside":  # Winograd: the documented difference does show
        assert not _same_pattern(out, expected)
        assert np.isnan(out).sum() > np.isnan(expected).sum()  # Inf comes out as NaN


def where_of(poison: str) -> str:
    return POISONS[poison][0]


def test_which_kernels_differ():
    """Winograd and fft mix tiles; the loops that skip padding taps miss 0 x Inf = NaN."""
    differ = {n for n in cpu_kernel_names() if kernels.get(n).nonfinite != "exact"}
    assert differ == {"winograd_f2", "winograd_f4", "winograd_f6", "fft", "naive", "python",
                      "depthwise"}


def test_every_entry_is_a_nonfinite_member_and_register_refuses_other_words():
    """The field is a NonFinite (its words compare and print as the plain strings did);
    a word that names no pattern is refused when the kernel is registered."""
    for op in kernels.registry.OPS:
        for kern in kernels.registry.kernels_for(op).values():
            assert type(kern.nonfinite) is NonFinite, (op, kern.name)
    assert kernels.get("naive").nonfinite is NonFinite.SKIPS_PADDING
    assert f"{kernels.get('fft').nonfinite}".startswith("its transforms mix a whole tile")
    with pytest.raises(ValueError, match="unknown nonfinite 'mostly'.*EXACT, SKIPS_PADDING"):
        register("nonfinite_test_bad", description="x", nonfinite="mostly")
    assert "nonfinite_test_bad" not in KERNELS
    try:  # the plain word is taken as its member
        register("nonfinite_test_word", description="x", nonfinite="exact")(lambda *a: None)
        assert KERNELS["nonfinite_test_word"].nonfinite is NonFinite.EXACT
    finally:
        KERNELS.pop("nonfinite_test_word", None)


@pytest.mark.parametrize("poison", list(POISONS))
def test_auto_keeps_pytorchs_pattern(poison):
    """A wide 3x3 layer (auto's Winograd territory) with one NaN/Inf: auto passes over
    Winograd, says why, and gives PyTorch's pattern."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 64, 16, 16)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    assert convlab.explain(x, w, padding=1).kernel.name.startswith("winograd")
    where, index, value = POISONS[poison]
    (x if where == "x" else w)[index[:1] + (0,) + index[2:]] = value
    choice = convlab.explain(x, w, padding=1)
    assert not choice.kernel.name.startswith("winograd")
    assert any("NaN or Inf" in why for _, why in choice.passed_over), str(choice)
    xa, wa, _, spec = prepare(x, w, None, padding=1)
    assert _same_pattern(convlab.conv2d(x, w, padding=1), conv2d_reference(xa, wa, None, spec))


def test_float32_overflow_is_documented_per_kernel():
    """Finite inputs whose products overflow float32: 2 * 3e38 is Inf.  PyTorch and the
    unfused kernels compute Inf + (-Inf) = NaN; parallel fuses each multiply-add (one
    rounding, no intermediate Inf) and keeps +Inf; python sums Python floats (float64)
    and gets the exact 0.  As docs/design.md says."""
    x = np.array([3e38, -3e38], np.float32).reshape(1, 2, 1, 1)
    w = np.full((1, 2, 1, 1), 2, np.float32)
    got = {algo: convlab.conv2d(x, w, algo=algo).item() for algo in
           ("naive", "im2col", "parallel", "python")}
    assert np.isnan(got["naive"]) and np.isnan(got["im2col"])
    assert got["parallel"] == np.inf and got["python"] == 0.0

"""Every backward kernel equals the float64 backward oracle on random specs (Hypothesis),
through the public API: every padding and padding mode, groups, dilation, stride,
unbatched input, float32 and float64.  With tests/test_backward_torch.py (a live torch
comparison) each backward kernel meets at least 300 random specs per test run."""

import zlib

import numpy as np
import pytest
from hypothesis import given, settings

import convlab
from convlab import kernels
from convlab.functional import kernel_spec
from convlab.kernels.registry import kernels_for
from convlab.reference import compare
from convlab.reference_backward import conv2d_input_reference, conv2d_weight_reference

from helpers import conv_cases

GRAD_KERNELS = [(op, name) for op in ("grad_input", "grad_weight")
                for name, k in sorted(kernels_for(op).items()) if k.device == "cpu"]
EXAMPLES = 200  # per kernel; tests/test_backward_torch.py adds 100 live ones


def test_every_algorithm_has_both_gradients():
    assert set(kernels_for("grad_input")) == set(kernels_for("grad_weight"))
    assert {"naive", "im2col", "parallel"} <= set(kernels_for("grad_input"))


@pytest.mark.parametrize("op, algo", GRAD_KERNELS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(case=conv_cases())
def test_grad_kernel_equals_oracle(op, algo, case):
    input_shape, weight_shape, args, dtype = case
    rng = np.random.default_rng(zlib.crc32(repr((input_shape, weight_shape, args, op,
                                                 algo)).encode()))
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    spec = convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)
    go = rng.standard_normal(spec.output_shape).astype(dtype)
    x_copy, w_copy, go_copy = x.copy(), w.copy(), go.copy()
    if op == "grad_input":
        got = convlab.conv2d_input(input_shape, w, go, **args, algo=algo)
        want = conv2d_input_reference(go, w, spec).reshape(spec.input_shape)
    else:
        got = convlab.conv2d_weight(x, weight_shape, go, **args, algo=algo)
        want = conv2d_weight_reference(x, go, spec)
    assert got.dtype == dtype and got.shape == want.shape
    tol = kernels.get(algo, op).tolerance(kernel_spec(spec), dtype)
    report = compare(got, want, tol)
    assert report.ok, f"{op}/{algo}: {report} on {spec.describe()}"
    # inputs are never modified in place
    assert np.array_equal(x, x_copy) and np.array_equal(w, w_copy)
    assert np.array_equal(go, go_copy)


def test_naive_grad_weight_float32_sums_a_long_reduction_accurately():
    """A 1x1 weight on one 128x128 image: each weight gradient sums 16,384 products.
    Positive values make the float32 rounding errors of a one-by-one sum add up (1.5e-6
    relative); accumulated in float64 and rounded once, the result is within two float32
    roundings of the oracle, as torch's and the other kernels' are."""
    rng = np.random.default_rng(4)
    x = rng.random((1, 1, 128, 128)).astype(np.float32)
    g = rng.random((1, 1, 128, 128)).astype(np.float32)
    spec = convlab.ConvSpec.from_shapes(x.shape, (1, 1, 1, 1))
    want = conv2d_weight_reference(x.astype(np.float64), g.astype(np.float64), spec)
    got = convlab.conv2d_weight(x, (1, 1, 1, 1), g, algo="naive")
    assert got.dtype == np.float32
    report = compare(got, want, 1e-5)
    assert report.max_rel <= 2 * 2.0 ** -24, report

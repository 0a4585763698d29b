"""Hypothesis properties: every CPU kernel equals the oracle; shapes equal ConvSpec's;
invalid arguments always raise convlab's documented errors, never a Numba error."""

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convlab
from convlab import kernels

from helpers import assert_matches_oracle, conv_cases, cpu_kernel_names


@pytest.mark.parametrize("algo", cpu_kernel_names())
@settings(max_examples=30, deadline=None)
@given(case=conv_cases())
def test_kernel_equals_oracle(algo, case):
    input_shape, weight_shape, args, dtype = case
    # a stable seed (str hashes change per process): a failure reproduces
    rng = np.random.default_rng(zlib.crc32(repr((input_shape, weight_shape, algo)).encode()))
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    b = rng.standard_normal(weight_shape[0]).astype(dtype) if rng.random() < 0.7 else None
    _, _, _, spec = convlab.functional.prepare(x, w, b, **args)
    if kernels.get(algo).supports(spec) is not None:
        with pytest.raises(kernels.UnsupportedSpecError):
            convlab.conv2d(x, w, b, algo=algo, **args)
        return
    out = assert_matches_oracle(algo, x, w, b, **args)
    assert out.shape == convlab.ConvSpec.from_shapes(input_shape, weight_shape,
                                                     **args).output_shape


def _junk():
    return st.one_of(st.integers(-3, 12), st.tuples(st.integers(-2, 4), st.integers(-2, 4)),
                     st.sampled_from(["same", "valid", "full", "", (1, 2, 3), 1.5, None, True]))


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 2), c=st.integers(0, 4), h=st.integers(0, 6), w=st.integers(0, 6),
       k=st.integers(0, 4), kh=st.integers(0, 4), kw=st.integers(-1, 4),
       ndim=st.sampled_from([2, 3, 4, 5]),
       stride=_junk(), padding=_junk(), dilation=_junk(), groups=_junk(),
       mode=st.sampled_from(["zeros", "reflect", "replicate", "circular", "bad"]))
def test_invalid_arguments_raise_clear_errors(n, c, h, w, k, kh, kw, ndim, stride, padding,
                                              dilation, groups, mode):
    """Any combination either works (and matches ConvSpec) or raises ValueError/TypeError
    from convlab's own validation: never a Numba error, a crash, or a wrong shape."""
    x = np.random.default_rng(0).standard_normal((n, c, h, w)[4 - min(ndim, 4):]
                                                 + (2,) * max(0, ndim - 4)).astype(np.float32)
    wt = np.random.default_rng(1).standard_normal((k, max(c, 1), max(kh, 0), max(kw, 0))
                                                  ).astype(np.float32)
    try:
        out = convlab.conv2d(x, wt, None, stride, padding, dilation, groups, mode, algo="naive")
    except (ValueError, TypeError) as exc:
        assert type(exc).__module__.split(".")[0] in ("convlab", "builtins")
        assert "numba" not in str(exc).lower()
        assert str(exc)
        return
    spec = convlab.ConvSpec.from_shapes(x.shape, wt.shape, stride, padding, dilation, groups,
                                        mode)
    assert out.shape == spec.output_shape

"""Shared test tools: random inputs, random valid specs, the oracle comparison.

Inputs are random normal, non-square, non-symmetric: zeros or ones hide wrong
indexing (a flipped kernel or swapped axes give the same answer on them).
"""

from __future__ import annotations

import sys

import numpy as np
from hypothesis import strategies as st

import convlab
from convlab import kernels
from convlab.functional import prepare
from convlab.reference import compare, conv2d_reference


def random_case(rng: np.random.Generator, input_shape, weight_shape, dtype=np.float32,
                bias: bool = True):
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    b = rng.standard_normal(weight_shape[0]).astype(dtype) if bias else None
    return x, w, b


def oracle(x, w, b, **conv_args) -> np.ndarray:
    """float64 expected output, through the public argument handling."""
    xa, wa, ba, spec = prepare(x, w, b, **conv_args)
    return conv2d_reference(xa, wa, ba, spec).reshape(spec.output_shape)


def assert_matches_oracle(algo: str, x, w, b=None, **conv_args) -> np.ndarray:
    """Run ``convlab.conv2d(..., algo=algo)`` and check it against the oracle within
    the kernel's own tolerance for this spec and dtype. Returns the output."""
    out = convlab.conv2d(x, w, b, algo=algo, **conv_args)
    expected = oracle(x, w, b, **conv_args)
    _, _, _, spec = prepare(x, w, b, **conv_args)
    tol = kernels.get(algo).tolerance(spec, np.asarray(x).dtype)
    report = compare(out, expected, tol)
    assert out.dtype == np.asarray(x).dtype
    assert out.shape == expected.shape
    assert report.ok, f"{algo}: {report} on {spec.describe()}"
    return out


@st.composite
def conv_cases(draw, max_hw: int = 9, max_channels: int = 6, max_batch: int = 2,
               allow_modes: bool = True, kernel: tuple[int, int] | None = None,
               stride1: bool = False):
    """A random valid (input_shape, weight_shape, conv_args, dtype) tuple."""
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, max(1, max_channels // groups)))
    kg = draw(st.integers(1, max(1, max_channels // groups)))
    kh, kw = kernel or (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    sh, sw = (1, 1) if stride1 else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dh, dw = (1, 1) if stride1 else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])
                if allow_modes else st.just("zeros"))
    pad_kind = draw(st.sampled_from(["int", "pair", "valid"] + (["same"] if (sh, sw) == (1, 1)
                                                                else [])))
    if pad_kind == "int":
        padding = draw(st.integers(0, 2))
    elif pad_kind == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 3)))
    else:
        padding = pad_kind
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    # big enough for the window (and for reflect's "padding < size" rule)
    h = draw(st.integers(max(eff_h, 4), max(eff_h, 4) + max_hw))
    w = draw(st.integers(max(eff_w, 4), max(eff_w, 4) + max_hw))
    batched = draw(st.booleans())
    n = draw(st.integers(1, max_batch))
    input_shape = (n, cg * groups, h, w) if batched else (cg * groups, h, w)
    weight_shape = (kg * groups, cg, kh, kw)
    args = dict(stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups,
                padding_mode=mode)
    try:
        convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)
    except ValueError:
        # e.g. reflect padding as large as the input: not a valid case to draw
        from hypothesis import assume
        assume(False)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return input_shape, weight_shape, args, dtype


def cpu_kernel_names() -> list[str]:
    return [k.name for k in kernels.KERNELS.values() if k.device == "cpu"]


# Tests that stop a convlab command with Ctrl-C (SIGINT) start it as a terminal would.  A
# shell that starts a job in the background (`cmd &`, as some CI runners and nohup-style
# wrappers do) makes it ignore SIGINT, and a Python started so never installs the handler
# that turns SIGINT into KeyboardInterrupt: the command then cannot be stopped by Ctrl-C,
# whatever convlab does.  This restores the handler, then runs ``python -m convlab.cli``.
_CTRL_C_WORKS = ("import runpy, signal, sys; "
                 "signal.signal(signal.SIGINT, signal.default_int_handler); "
                 "sys.argv[0] = 'convlab'; "
                 "runpy.run_module('convlab.cli', run_name='__main__', alter_sys=True)")


def convlab_command(*args: str) -> list[str]:
    """The argv of ``python -m convlab.cli *args`` with Ctrl-C working (see above)."""
    return [sys.executable, "-c", _CTRL_C_WORKS, *args]

"""parallel's grad_weight (convlab/kernels/parallel_backward.py) in both of its input
layouts, against the float64 oracle: the phase planes (junk positions included) and
the per-tap lowered copies (:func:`lowers` picks by the planes' waste), each forced on
the same specs, with the input-channel blocks of its task order cut ragged (one or a few
channels per block, the last one short).  The Hypothesis specs and golden fixtures reach
the kernel through tests/test_backward_kernels.py with the layout the rule picks."""

import zlib

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import kernel_spec
from convlab.kernels import parallel_backward as pb
from convlab.reference import compare
from convlab.reference_backward import conv2d_weight_reference

SPECS = [
    # stride, asymmetric padding and kernel, more output channels than a KB block
    ((3, 5, 13, 11), (9, 5, 3, 2), dict(padding=(1, 0), stride=(2, 1))),
    # groups (channels per group not a multiple of KB), dilation
    ((2, 6, 12, 9), (10, 3, 3, 3), dict(padding=2, dilation=(2, 1), groups=2)),
    # 1x1 stride 2, and a 7x7-style output on 9x9 planes (ResNet's last layers, small)
    ((2, 7, 9, 10), (5, 7, 1, 1), dict(stride=2)),
    ((2, 9, 7, 7), (6, 9, 3, 3), dict(padding=1)),
]


def _grad_weight(input_shape, weight_shape, dtype, **args):
    rng = np.random.default_rng(zlib.crc32(repr((input_shape, weight_shape)).encode()))
    x = rng.standard_normal(input_shape).astype(dtype)
    spec = convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)
    go = rng.standard_normal(spec.output_shape).astype(dtype)
    got = convlab.conv2d_weight(x, weight_shape, go, **args, algo="parallel")
    tol = kernels.get("parallel", "grad_weight").tolerance(kernel_spec(spec), dtype)
    report = compare(got, conv2d_weight_reference(x, go, spec), tol)
    assert report.ok, f"{report} on {spec.describe()}"
    return got


@pytest.mark.parametrize("input_shape, weight_shape, args", SPECS)
@pytest.mark.parametrize("layout", ["planes", "lowered"])
@pytest.mark.parametrize("block_bytes", [1, 300, 1 << 30])
def test_both_layouts_and_ragged_channel_blocks_equal_the_oracle(
        monkeypatch, input_shape, weight_shape, args, layout, block_bytes):
    monkeypatch.setattr(pb, "LOWER_MIN_WASTE", 0.0 if layout == "lowered" else np.inf)
    monkeypatch.setattr(pb, "LOWER_MAX_BYTES", 1 << 40)
    monkeypatch.setattr(pb, "L2_BLOCK_BYTES", block_bytes)
    spec = kernel_spec(convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args))
    assert pb.lowers(spec, 4) == (layout == "lowered")
    for dtype in (np.float32, np.float64):
        _grad_weight(input_shape, weight_shape, dtype, **args)


def test_lowered_copy_is_im2col_channel_major():
    """lowered_taps against NumPy's own shifted slices of the padded input."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8, 7)).astype(np.float32)
    spec = kernel_spec(convlab.ConvSpec.from_shapes(x.shape, (4, 3, 3, 2), stride=(2, 1),
                                                    padding=(1, 2), dilation=(1, 2)))
    xl = pb.lowered_taps(x, spec)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))
    ho, wo = spec.out_height, spec.out_width
    for p in range(3):
        for q in range(2):
            want = xp[:, :, p:p + 2 * ho - 1:2, 2 * q:2 * q + wo]
            got = xl[:, p * 2 + q, :2 * ho * wo].reshape(3, 2, ho, wo).transpose(1, 0, 2, 3)
            np.testing.assert_array_equal(got, want)
    assert not xl[:, :, 2 * ho * wo:].any()  # the padding to whole vectors is zeros


def test_rule_takes_lowered_where_planes_waste_most():
    small = kernel_spec(convlab.ConvSpec.from_shapes((8, 512, 7, 7), (512, 512, 3, 3),
                                                     padding=1))
    big = kernel_spec(convlab.ConvSpec.from_shapes((8, 64, 56, 56), (64, 64, 3, 3),
                                                   padding=1))
    assert pb.lowers(small, 4) and not pb.lowers(big, 4)

"""im2col's backward kernels (convlab/kernels/im2col_backward.py): the task splits of its
GEMMs on Numba's threads (channel blocks of grad_input's fused GEMM + col2im, row blocks
of grad_weight's, with more and fewer output channels than reduction rows) against the float64
oracle, with many blocks and a partial last one, over several chunks; and determinism.
The Hypothesis specs and the golden fixtures reach these kernels through
tests/test_backward_kernels.py and test_golden_backward.py; tests/test_one_pool.py checks
that they leave no OpenBLAS thread spinning."""

import zlib

import numba
import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import kernel_spec
from convlab.kernels import im2col_backward as ib
from convlab.kernels.im2col import workspace_cap
from convlab.reference import compare
from convlab.reference_backward import conv2d_input_reference, conv2d_weight_reference


def _check(input_shape, weight_shape, dtype=np.float32, **args):
    rng = np.random.default_rng(zlib.crc32(repr((input_shape, weight_shape)).encode()))
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    spec = convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)
    go = rng.standard_normal(spec.output_shape).astype(dtype)
    gi = convlab.conv2d_input(input_shape, w, go, **args, algo="im2col")
    gw = convlab.conv2d_weight(x, weight_shape, go, **args, algo="im2col")
    for op, got, want in (
            ("grad_input", gi, conv2d_input_reference(go, w, spec).reshape(input_shape)),
            ("grad_weight", gw, conv2d_weight_reference(x, go, spec))):
        tol = kernels.get("im2col", op).tolerance(kernel_spec(spec), dtype)
        report = compare(got, want, tol)
        assert report.ok, f"{op}: {report} on {spec.describe()}"


@pytest.mark.parametrize("input_shape, weight_shape, args", [
    # grad_weight's product as grad_W^T (C/g*kh*kw = 45 rows > K/g = 4), groups, stride
    ((3, 10, 13, 11), (8, 5, 3, 3), dict(padding=1, groups=2, stride=(2, 1))),
    # as grad_W (K/g = 12 rows > C/g*kh*kw = 6), dilation, asymmetric kernel
    ((2, 3, 12, 9), (12, 3, 1, 2), dict(padding=(0, 1), dilation=(1, 2))),
    # depthwise: one channel per task
    ((2, 7, 9, 10), (7, 1, 3, 3), dict(padding=1, groups=7)),
])
def test_many_blocks_and_chunks_equal_the_oracle(monkeypatch, input_shape, weight_shape,
                                                 args):
    """Tiny tasks: channel blocks of one or two channels (the last one partial), row
    blocks of one to three rows, and a workspace cap that cuts the batch into chunks of
    one image and bands of rows."""
    monkeypatch.setattr(ib, "TASK_BYTES", 1)
    monkeypatch.setattr(ib, "MIN_TASK_ROWS", 2 * weight_shape[2] * weight_shape[3])
    _check(input_shape, weight_shape, **args)
    with workspace_cap(4096):
        _check(input_shape, weight_shape, **args)
    _check(input_shape, weight_shape, dtype=np.float64, **args)


@pytest.mark.parametrize("input_shape, weight_shape, args", [
    ((3, 10, 13, 11), (8, 5, 3, 3), dict(padding=1, groups=2, stride=(2, 1))),
    ((2, 6, 9, 14), (4, 6, 2, 3), dict(padding=(2, 0), dilation=(2, 1), stride=(1, 3))),
])
def test_grad_weight_whole_batch_and_chunked_forms(monkeypatch, input_shape, weight_shape,
                                                    args):
    """Both forms of grad_weight, each seen to run: the whole batch's junk-free columns
    in one GEMM per group (under the default cap), and the chunked GEMMs with junk
    columns (a cap the whole batch's columns do not fit)."""
    spec = convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)
    calls = []
    whole = ib._grad_weight_whole
    monkeypatch.setattr(ib, "_grad_weight_whole",
                        lambda *a: calls.append(1) or whole(*a))
    monkeypatch.setattr(ib, "_row_block", lambda rows, groups, threads: 3)  # 3 + 1 rows
    assert ib.whole_lowering_fits(spec, 4)
    _check(input_shape, weight_shape, **args)
    assert calls == [1]
    with workspace_cap(4096):
        assert not ib.whole_lowering_fits(spec, 4)
        _check(input_shape, weight_shape, **args)
    assert calls == [1]


@pytest.mark.parametrize("cg, groups, taps, width, threads", [
    (512, 1, 9, 504, 2), (64, 1, 9, 26_000, 2), (5, 1, 9, 100, 4), (1, 32, 9, 50, 2),
    (3, 2, 49, 2000, 8), (100, 1, 1, 64, 3)])
def test_channel_blocks_cover_the_channels_and_the_threads(cg, groups, taps, width, threads):
    per = ib.channel_block(cg, groups, taps, width, 4, threads)
    blocks = -(-cg // per)
    assert 1 <= per <= cg
    assert blocks * per - cg < per  # every channel covered, no empty block
    if cg * groups >= threads:  # enough channels: every thread gets a task
        assert blocks * groups >= threads
    fit = max(ib.TASK_BYTES // (taps * width * 4), -(-ib.MIN_TASK_ROWS // taps), 1)
    assert per <= fit  # L2-sized, or the fewest rows BLAS runs well on


@pytest.mark.parametrize("rows, groups, threads", [(512, 1, 2), (7, 1, 4), (3, 8, 2),
                                                   (1, 1, 2), (0, 1, 2), (10, 3, 4)])
def test_row_blocks_give_every_thread_a_task(rows, groups, threads):
    per = ib._row_block(rows, groups, threads)
    assert per >= 1 and (rows == 0 or per <= rows)
    if rows * groups >= threads:
        assert groups * -(-rows // per) >= threads


def test_deterministic_run_to_run():
    """Every element is summed by one task in a fixed order: the same bits every run."""
    assert numba.get_num_threads() >= 2, "needs 2+ Numba threads to prove anything"
    rng = np.random.default_rng(3)
    shape, wshape = (4, 24, 15, 13), (40, 12, 3, 3)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    args = dict(padding=1, groups=2, stride=(2, 1))
    spec = convlab.ConvSpec.from_shapes(shape, wshape, **args)
    go = rng.standard_normal(spec.output_shape).astype(np.float32)
    first = (convlab.conv2d_input(shape, w, go, **args, algo="im2col"),
             convlab.conv2d_weight(x, wshape, go, **args, algo="im2col"))
    for _ in range(3):
        np.testing.assert_array_equal(
            convlab.conv2d_input(shape, w, go, **args, algo="im2col"), first[0])
        np.testing.assert_array_equal(
            convlab.conv2d_weight(x, wshape, go, **args, algo="im2col"), first[1])


def test_no_output_position_gives_zero_gradients():
    """A 3x3 kernel over a 2x2 input: no output, so both gradients are sums of nothing."""
    spec = convlab.ConvSpec(batch=2, in_channels=3, height=2, width=2, out_channels=4,
                            kernel_size=(3, 3))
    assert spec.out_width == 0
    x = np.ones(spec.input_shape, np.float32)
    w = np.ones(spec.weight_shape, np.float32)
    go = np.ones(spec.batched_output_shape, np.float32)
    gi = kernels.get("im2col", "grad_input").grad(go, w, spec)
    gw = kernels.get("im2col", "grad_weight").grad(x, go, spec)
    np.testing.assert_array_equal(gi, np.zeros(spec.input_shape, np.float32))
    np.testing.assert_array_equal(gw, np.zeros(spec.weight_shape, np.float32))

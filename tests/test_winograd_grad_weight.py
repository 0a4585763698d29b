"""Winograd's weight gradient (convlab/kernels/winograd_grad_weight.py), which polyphase's
grad_weight runs on 3x3 stride-1 layers: the transposed transforms against their
matrices, the identity it rests on, the kernel against the float64 oracle (padding
wider than the kernel, none, asymmetric, groups, non-square, Ho and Wo not multiples
of 4), over many chunks and ragged blocks of output channels, float32 and float64, run
to run determinism, and the rule.  The Hypothesis specs and golden fixtures reach it
through tests/test_backward_kernels.py and test_golden_backward.py."""

import zlib

import numba
import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import kernel_spec
from convlab.kernels import winograd_grad_weight as wg
from convlab.kernels._winograd_transforms import MATRICES, a4, gt4
from convlab.reference import compare
from convlab.reference_backward import conv2d_weight_reference

SPECS = [
    ((2, 5, 11, 9), (7, 5, 3, 3), dict(padding=1)),
    ((3, 4, 10, 13), (6, 2, 3, 3), dict(padding=(2, 0), groups=2)),  # asymmetric, groups
    ((1, 3, 6, 17), (4, 3, 3, 3), dict(padding=(0, 3))),  # padding wider than the kernel
    ((2, 6, 7, 7), (5, 6, 3, 3), dict(padding=1)),  # 7x7: 2x2 tiles of 4, 15 of 64 junk
    ((2, 3, 3, 5), (2, 3, 3, 3), {}),  # one output row
    ((300, 2, 4, 4), (3, 2, 3, 3), dict(padding=1)),  # 300 tile rows: two transform blocks
    ((1, 2, 10, 1000), (3, 2, 3, 3), dict(padding=(1, 0))),  # 250 tiles a row: one per block
]


def test_transposed_transforms_are_the_matrices():
    """``a4`` is A (the transpose of F(4,3)'s A^T), ``gt4`` is G^T."""
    _, g, at = MATRICES[4]
    for fn, mat in ((a4, at.T), (gt4, g.T)):
        got = np.empty(mat.shape)
        fn(np.eye(mat.shape[1]), got)
        np.testing.assert_allclose(got, mat, rtol=1e-15, atol=0, err_msg=fn.__name__)


def test_the_identity_the_kernel_rests_on():
    """dL/dg of Y = A^T [(G g G^T) * (B^T d B)] A for an output gradient dY is
    G^T [(A dY A^T) * (B^T d B)] G: the direct sum of dY times d's 3x3 windows."""
    bt, g, at = MATRICES[4]
    rng = np.random.default_rng(4)
    d, dy = rng.standard_normal((6, 6)), rng.standard_normal((4, 4))
    got = g.T @ ((at.T @ dy @ at) * (bt @ d @ bt.T)) @ g
    direct = np.array([[np.sum(dy * d[p:p + 4, q:q + 4]) for q in range(3)]
                       for p in range(3)])
    np.testing.assert_allclose(got, direct, rtol=0, atol=1e-12)


def _check(input_shape, weight_shape, dtype, **args):
    rng = np.random.default_rng(zlib.crc32(repr((input_shape, weight_shape)).encode()))
    x = rng.standard_normal(input_shape).astype(dtype)
    spec = convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)
    go = rng.standard_normal(spec.output_shape).astype(dtype)
    x0, go0 = x.copy(), go.copy()
    got = convlab.conv2d_weight(x, weight_shape, go, **args, algo="polyphase")
    assert got.dtype == dtype and got.shape == weight_shape
    tol = kernels.get("polyphase", "grad_weight").tolerance(kernel_spec(spec), dtype)
    report = compare(got, conv2d_weight_reference(x, go, spec), tol)
    assert report.ok, f"{report} on {spec.describe()}"
    assert np.array_equal(x, x0) and np.array_equal(go, go0)  # inputs untouched
    return got


@pytest.mark.parametrize("input_shape, weight_shape, args", SPECS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_the_oracle(monkeypatch, input_shape, weight_shape, args, dtype):
    spec = convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)
    assert wg.supports(kernel_spec(spec))
    calls = []
    run = wg.grad_weight_winograd
    monkeypatch.setattr("convlab.kernels.polyphase_backward.grad_weight_winograd",
                        lambda *a: calls.append(1) or run(*a))
    _check(input_shape, weight_shape, dtype, **args)
    assert calls == [1]  # polyphase ran Winograd, not its GEMMs over chunks


@pytest.mark.parametrize("input_shape, weight_shape, args", SPECS[:3])
def test_many_chunks_and_ragged_blocks_equal_the_oracle(monkeypatch, input_shape,
                                                        weight_shape, args):
    """One tile row per chunk (the later chunks add to M) and blocks of 2 output
    channels (the last one short where the channels are odd)."""
    monkeypatch.setattr(wg, "CHUNK_BYTES", 1)
    monkeypatch.setattr(wg, "_block_rows", lambda *a: 2)
    _check(input_shape, weight_shape, np.float32, **args)
    _check(input_shape, weight_shape, np.float64, **args)


@pytest.mark.parametrize("kg, groups, cg, threads", [
    (512, 1, 512, 2), (64, 1, 64, 2), (7, 1, 3, 4), (1, 8, 5, 2), (3, 2, 2, 8), (0, 1, 4, 2)])
def test_block_rows_cover_the_channels_and_the_threads(kg, groups, cg, threads):
    per = wg._block_rows(kg, groups, cg, 4, threads)
    assert per >= 1 and (kg == 0 or per <= kg)
    blocks = -(-kg // per)
    if kg * groups >= threads:
        assert blocks * groups >= threads
    assert wg.ALPHA ** 2 * per * cg * 4 <= max(wg.BLOCK_BYTES, wg.ALPHA ** 2 * cg * 4)


def test_deterministic_run_to_run():
    """Every M[xi] and weight gradient is summed by one task in a fixed order."""
    assert numba.get_num_threads() >= 2, "needs 2+ Numba threads to prove anything"
    first = _check((4, 16, 12, 10), (24, 16, 3, 3), np.float32, padding=1)
    for _ in range(3):
        np.testing.assert_array_equal(
            _check((4, 16, 12, 10), (24, 16, 3, 3), np.float32, padding=1), first)


@pytest.mark.parametrize("height, width", [(2, 2), (6, 2), (2, 6)])
def test_no_output_position_gives_zeros(height, width):
    """No output row, no output column, or neither: the function itself returns the
    empty sum (polyphase returns before calling it; a direct call must not fail)."""
    spec = convlab.ConvSpec(batch=2, in_channels=3, height=height, width=width,
                            out_channels=4, kernel_size=(3, 3))
    x = np.ones(spec.input_shape, np.float32)
    go = np.ones(spec.batched_output_shape, np.float32)
    assert 0 in (spec.out_height, spec.out_width)
    got = wg.grad_weight_winograd(x, go, spec)
    np.testing.assert_array_equal(got, np.zeros(spec.weight_shape, np.float32))


def test_auto_takes_it_from_32_channels():
    choice = convlab.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1, op="grad_weight")
    assert choice.kernel.name == "polyphase"
    choice = convlab.explain((8, 32, 56, 56), (32, 32, 3, 3), padding=1, op="grad_weight")
    assert choice.kernel.name == "polyphase"
    choice = convlab.explain((8, 16, 112, 112), (16, 16, 3, 3), padding=1, op="grad_weight")
    assert choice.kernel.name != "polyphase"
    assert "Winograd's transforms outweigh" in dict(choice.passed_over)["polyphase"]
    x = np.ones((2, 128, 8, 8), np.float32)
    x[0, 0, 0, 0] = np.nan  # the transforms would spread it: an exact kernel runs
    choice = convlab.explain(x, (128, 128, 3, 3), padding=1, op="grad_weight")
    assert choice.kernel.name != "polyphase"

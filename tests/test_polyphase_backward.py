"""The polyphase backward kernels (convlab/kernels/polyphase_backward.py): the phase
algebra against a direct enumeration, each route (Winograd, im2col sub-problems, the
1x1 scatter, crops for big paddings, dilation with stride) against the float64 oracle,
zero channels, the kept weight transform, determinism.  The Hypothesis specs and the
golden fixtures reach these kernels through tests/test_backward_kernels.py,
test_backward_torch.py and test_golden_backward.py (they enumerate the registry)."""

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import kernel_spec
from convlab.kernels import polyphase_backward as pb
from convlab.reference import compare
from convlab.reference_backward import conv2d_input_reference, conv2d_weight_reference


def test_polyphase_is_registered_for_both_ops():
    assert kernels.get("polyphase", "grad_input").run is pb.grad_input_polyphase
    assert kernels.get("polyphase", "grad_weight").run is pb.grad_weight_polyphase


@pytest.mark.parametrize("size, k, s, d, top, bottom", [
    (9, 3, 1, 1, 1, 1), (10, 3, 2, 1, 1, 0), (11, 7, 2, 1, 3, 3), (8, 1, 2, 1, 0, 0),
    (12, 3, 3, 2, 2, 1), (13, 4, 2, 2, 0, 3), (9, 3, 1, 1, 5, 4), (7, 2, 3, 3, 4, 0),
    (6, 5, 4, 2, 1, 2)])
def test_axis_phases_cover_every_contribution_once(size, k, s, d, top, bottom):
    """Written independently: every (output row i, tap p) whose padded row i*s + p*d
    lands on an input row y must appear in y's phase exactly once, nothing else."""
    out = (size + top + bottom - d * (k - 1) - 1) // s + 1
    want = sorted((i, p, i * s + p * d - top) for i in range(out) for p in range(k)
                  if 0 <= i * s + p * d - top < size)
    got = []
    for a, ph in enumerate(pb.axis_phases(size, out, k, s, d, top)):
        if ph is None:
            continue
        assert ph.length == len(range(a, size, s))
        n_in = out - ph.crop_lo - ph.crop_hi
        # the sub-problem: stride 1, padding pad_lo/pad_hi, dilation ph.dilation
        assert n_in + ph.pad_lo + ph.pad_hi - ph.dilation * (len(ph.taps) - 1) == ph.length
        for yp in range(ph.length):
            for j, p in enumerate(ph.taps):
                r = yp + j * ph.dilation - ph.pad_lo  # sub-problem input row
                if 0 <= r < n_in:
                    got.append((r + ph.crop_lo, p, s * yp + a))
    assert sorted(got) == want


# (input shape, weight shape, conv args): every route of the kernels, non-square,
# asymmetric sizes and paddings
CASES = [
    ((2, 40, 17, 15), (36, 40, 3, 3), dict(padding=1)),                 # Winograd F(4,3)
    ((2, 33, 7, 10), (34, 33, 3, 3), dict(padding=(2, 0))),              # F(2,3), crop
    ((2, 5, 13, 10), (6, 5, 3, 3), dict(stride=2, padding=1)),           # 4 on parallel
    ((1, 34, 9, 12), (33, 34, 3, 3), dict(stride=2, padding=1)),         # 4 on im2col
    ((1, 3, 19, 16), (8, 3, 7, 7), dict(stride=2, padding=3)),           # stem-like
    ((2, 6, 9, 8), (4, 6, 1, 1), dict(stride=2)),                        # 1x1 scatter
    ((2, 6, 9, 8), (4, 6, 1, 1), dict(stride=(1, 2), padding=(2, 1))),   # 1x1, crops
    ((1, 4, 14, 11), (6, 2, 3, 2), dict(stride=(3, 2), dilation=(2, 3), groups=2)),
    ((2, 3, 8, 9), (5, 3, 2, 3), dict(stride=(2, 3), padding=(3, 4))),   # padding > kernel
    ((1, 6, 10, 7), (6, 1, 3, 3), dict(stride=2, padding=1, groups=6)),  # depthwise
    ((2, 4, 9, 11), (3, 4, 3, 3), dict(padding="same", dilation=2)),
]


def _ids(case):
    return "x".join(map(str, case[1])) + "_" + "_".join(f"{k}{v}" for k, v in case[2].items())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_kernels_equal_the_oracle(case, dtype):
    input_shape, weight_shape, args = case
    rng = np.random.default_rng(len(repr(case)))
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    spec = convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)
    go = rng.standard_normal(spec.output_shape).astype(dtype)
    copies = x.copy(), w.copy(), go.copy()
    gi = convlab.conv2d_input(input_shape, w, go, **args, algo="polyphase")
    gw = convlab.conv2d_weight(x, weight_shape, go, **args, algo="polyphase")
    kspec = kernel_spec(spec)
    for op, got, want in (("grad_input", gi, conv2d_input_reference(go, w, spec)),
                          ("grad_weight", gw, conv2d_weight_reference(x, go, spec))):
        assert got.dtype == dtype and got.shape == want.shape
        report = compare(got, want, kernels.get("polyphase", op).tolerance(kspec, dtype))
        assert report.ok, f"{op}: {report} on {spec.describe()}"
    assert all(np.array_equal(a, b) for a, b in zip((x, w, go), copies))


def test_each_phase_runs_on_the_kernel_the_docstring_says():
    """The routes the module docstring promises (so the oracle tests above cover them)."""
    w = np.zeros((36, 40, 3, 3), np.float32)
    spec = kernel_spec(convlab.ConvSpec.from_shapes((2, 40, 17, 15), w.shape, padding=1))
    assert [p.kernel.name for p in pb.phases(w, spec)] == ["winograd_f4"]
    w = np.zeros((33, 34, 3, 3), np.float32)
    spec = kernel_spec(convlab.ConvSpec.from_shapes((1, 34, 9, 12), w.shape, stride=2,
                                                    padding=1))
    got = {(p.a, p.b): (p.kernel.name, p.spec.kernel_size) for p in pb.phases(w, spec)}
    assert got == {(0, 0): ("pointwise", (1, 1)), (0, 1): ("im2col", (1, 2)),
                   (1, 0): ("im2col", (2, 1)), (1, 1): ("im2col", (2, 2))}
    w = np.zeros((6, 5, 3, 3), np.float32)  # 5 output channels: a GEMM too thin for BLAS
    spec = kernel_spec(convlab.ConvSpec.from_shapes((2, 5, 13, 10), w.shape, stride=2,
                                                    padding=1))
    got = {(p.a, p.b): p.kernel.name for p in pb.phases(w, spec)}
    assert got[(1, 1)] == got[(0, 1)] == "parallel"  # the 2x2 and 1x2 sub-kernels
    w = np.zeros((4, 6, 1, 1), np.float32)  # 1x1 stride 2: one phase gets a gradient
    spec = kernel_spec(convlab.ConvSpec.from_shapes((2, 6, 9, 8), w.shape, stride=2))
    assert [(p.a, p.b) for p in pb.phases(w, spec)] == [(0, 0)]


def test_conv_transpose2d_runs_on_it():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 5, 7))
    w = rng.standard_normal((6, 4, 3, 3))
    b = rng.standard_normal(4)
    got = convlab.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                   algo="polyphase")
    want = convlab.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                    algo="naive")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("input_shape, weight_shape", [
    ((2, 0, 6, 5), (3, 0, 3, 3)), ((1, 0, 4, 4), (2, 0, 1, 1)), ((0, 4, 6, 5), (3, 4, 3, 3))])
def test_zero_channels_give_zeros_like_torch(input_shape, weight_shape):
    """Zero input channels (torch allows them; zero output channels ConvSpec refuses) and
    an empty batch (backward.py never passes one; called directly, zeros all the same)."""
    spec = kernel_spec(convlab.ConvSpec.from_shapes(input_shape, weight_shape, stride=2,
                                                    padding=1))
    go = np.ones(spec.batched_output_shape, np.float32)
    x = np.ones(input_shape, np.float32)
    w = np.ones(weight_shape, np.float32)
    gi = pb.grad_input_polyphase(go, w, spec)
    gw = pb.grad_weight_polyphase(x, go, spec)
    assert gi.shape == input_shape and gi.dtype == np.float32 and not gi.any()
    assert gw.shape == weight_shape and gw.dtype == np.float32 and not gw.any()


def test_kept_transform_gives_the_same_answer_and_a_stale_one_is_not_used():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((36, 40, 3, 3)).astype(np.float32)
    spec = kernel_spec(convlab.ConvSpec.from_shapes((2, 40, 17, 15), w.shape, padding=1))
    go = rng.standard_normal(spec.batched_output_shape).astype(np.float32)
    kept = pb.transform_weight_grad_input(w, spec)
    assert kept[0].transformed is not None  # Winograd's U of the flipped weight
    fresh = pb.grad_input_polyphase(go, w, spec)
    assert np.array_equal(pb.grad_input_polyphase(go, w, spec, transformed_weight=kept), fresh)
    # a transform kept for another layer's sizes (here F(2,3): fewer tiles) is not used
    small = kernel_spec(convlab.ConvSpec.from_shapes((1, 40, 4, 4), w.shape, padding=1))
    other = pb.transform_weight_grad_input(w, small)
    assert other[0].kernel.name != kept[0].kernel.name
    assert np.array_equal(pb.grad_input_polyphase(go, w, spec, transformed_weight=other), fresh)


def test_results_are_the_same_on_every_run():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 48, 12, 10)).astype(np.float32)
    w = rng.standard_normal((40, 48, 3, 3)).astype(np.float32)
    for stride in (1, 2):
        spec = kernel_spec(convlab.ConvSpec.from_shapes(x.shape, w.shape, stride=stride,
                                                        padding=1))
        go = rng.standard_normal(spec.batched_output_shape).astype(np.float32)
        runs = [pb.grad_weight_polyphase(x, go, spec) for _ in range(3)]
        assert all(np.array_equal(runs[0], r) for r in runs[1:])
        runs = [pb.grad_input_polyphase(go, w, spec) for _ in range(3)]
        assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_row_blocks_own_every_output_channel_once():
    for k_out, groups, threads in [(64, 1, 2), (7, 1, 4), (12, 3, 2), (6, 6, 16), (5, 1, 1)]:
        blocks = pb.row_blocks(k_out, groups, threads)
        rows = [k for _, k0, k1 in blocks for k in range(k0, k1)]
        assert rows == list(range(k_out))
        kg = k_out // groups
        assert all(grp * kg <= k0 < k1 <= (grp + 1) * kg for grp, k0, k1 in blocks)
        assert len(blocks) >= min(threads, k_out)


@pytest.mark.parametrize("threads", [1, 3])
def test_grad_weight_with_one_worker_or_several(threads, monkeypatch):
    """One worker lets BLAS thread each GEMM; several each own row blocks of the result.
    Chunks of the smallest length (256 positions), so the sum runs over several."""
    import numba

    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
    monkeypatch.setattr(pb, "CHUNK_BYTES", 1)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 8, 19, 23)).astype(np.float32)
    spec = convlab.ConvSpec.from_shapes(x.shape, (10, 4, 3, 2), stride=(2, 1), padding=1,
                                        groups=2)
    go = rng.standard_normal(spec.output_shape).astype(np.float32)
    assert pb.chunk_length(6 * 4, 4) == 256 < 2 * 10 * 25  # several chunks (stride 2)
    got = pb.grad_weight_polyphase(x, go, kernel_spec(spec))
    want = conv2d_weight_reference(x, go, spec)
    tol = kernels.get("polyphase", "grad_weight").tolerance(kernel_spec(spec), np.float32)
    assert compare(got, want, tol).ok


def test_concurrent_calls_from_python_threads():
    """Several Python threads share the worker pool and the one-thread-BLAS hold."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    cases = []
    for i in range(6):
        x = rng.standard_normal((2, 34, 10 + i, 9)).astype(np.float32)
        w = rng.standard_normal((33, 34, 3, 3)).astype(np.float32)
        spec = convlab.ConvSpec.from_shapes(x.shape, w.shape, stride=1 + i % 2, padding=1)
        go = rng.standard_normal(spec.output_shape).astype(np.float32)
        cases.append((x, w, go, spec))

    def both(case):
        x, w, go, spec = case
        ks = kernel_spec(spec)
        return pb.grad_input_polyphase(go, w, ks), pb.grad_weight_polyphase(x, go, ks)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(both, cases))
    for (x, w, go, spec), (gi, gw) in zip(cases, results):
        ks = kernel_spec(spec)
        for op, got, want in (("grad_input", gi, conv2d_input_reference(go, w, spec)),
                              ("grad_weight", gw, conv2d_weight_reference(x, go, spec))):
            assert compare(got, want, kernels.get("polyphase", op).tolerance(ks, np.float32)).ok

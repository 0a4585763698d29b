"""Winograd F(2,3), F(4,3), F(6,3): the matrices, the written-out transforms, every kernel
against the float64 oracle, refusals, the Conv2d filter cache, and NaN spreading."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings

import convlab
from convlab import kernels, numerics
from convlab.functional import WeightCache, prepare
from convlab.kernels import winograd
from convlab.kernels._winograd_transforms import MATRICES, TRANSFORMS
from convlab.reference import compare, conv2d_reference

from helpers import assert_matches_oracle, conv_cases, random_case

VARIANTS = {"winograd_f2": 2, "winograd_f4": 4, "winograd_f6": 6}
ALGOS = list(VARIANTS)


# ------------------------------------------------------------------ the maths
@pytest.mark.parametrize("m", [2, 4, 6])
def test_matrices_compute_a_3x3_correlation(m):
    """Y = A^T [(G g G^T) * (B^T d B)] A is the valid 3x3 cross-correlation of d."""
    bt, g, at = MATRICES[m]
    rng = np.random.default_rng(m)
    d = rng.standard_normal((m + 2, m + 2))
    k = rng.standard_normal((3, 3))
    y = at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * k) for j in range(m)] for i in range(m)])
    np.testing.assert_allclose(y, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m", [2, 4, 6])
def test_written_out_transforms_are_the_matrices(m):
    """Each hard-coded transform, applied to the unit vectors, gives its matrix."""
    for fn, mat in zip(TRANSFORMS[m], MATRICES[m]):
        rows_out, rows_in = mat.shape
        got = np.empty((rows_out, rows_in))
        fn(np.eye(rows_in), got)
        np.testing.assert_allclose(got, mat, rtol=1e-15, atol=0, err_msg=fn.__name__)
        # float32 gives the float32-rounded matrix (constants in the array's precision)
        got32 = np.empty((rows_out, rows_in), np.float32)
        fn(np.eye(rows_in, dtype=np.float32), got32)
        np.testing.assert_allclose(got32, mat, rtol=1e-7, atol=0, err_msg=fn.__name__)


def test_filter_transform_is_g_g_gt():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4, 3, 3))
    for m in (2, 4, 6):
        _, g, _ = MATRICES[m]
        u = winograd.transform_filter(w, 2, m)  # groups=2: (alpha^2, 2, 3, 4)
        expected = np.einsum("ap,kcpq,bq->abkc", g, w, g).reshape(-1, 2, 3, 4)
        np.testing.assert_allclose(u, expected, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------ against the oracle
@pytest.mark.parametrize("algo", ALGOS)
@settings(max_examples=30, deadline=None)
@given(case=conv_cases(kernel=(3, 3), stride1=True, max_hw=14, max_channels=6, max_batch=3))
def test_matches_oracle_on_random_specs(algo, case):
    input_shape, weight_shape, args, dtype = case
    x, w, b = random_case(np.random.default_rng(1), input_shape, weight_shape, dtype)
    assert_matches_oracle(algo, x, w, b, **args)


CASES = [
    # (input shape, weight shape, conv args): ragged tiles on every side and size
    ((2, 3, 13, 7), (5, 3, 3, 3), dict(padding=1)),
    ((1, 4, 3, 3), (2, 4, 3, 3), dict()),  # one output: a single, mostly empty tile
    ((3, 2, 9, 23), (4, 2, 3, 3), dict(padding=(0, 2))),
    ((2, 5, 10, 11), (7, 5, 3, 3), dict(padding="same")),
    ((2, 4, 8, 13), (6, 2, 3, 3), dict(padding=1, groups=2)),
    ((1, 6, 11, 9), (6, 1, 3, 3), dict(padding=1, groups=6)),  # depthwise
    ((2, 3, 12, 10), (4, 3, 3, 3), dict(padding=2, padding_mode="reflect")),
    ((1, 3, 7, 12), (4, 3, 3, 3), dict(padding=(1, 2), padding_mode="circular")),
    ((2, 3, 9, 8), (5, 3, 3, 3), dict(padding=1, padding_mode="replicate")),
    ((6, 9, 10), (6, 2, 3, 3), dict(padding=1, groups=3)),  # unbatched
    # tile blocks that span rows and images, several jobs, and output channels split
    ((3, 24, 21, 19), (40, 24, 3, 3), dict(padding=1)),
    ((1, 64, 8, 8), (48, 64, 3, 3), dict(padding=1)),
    ((1, 16, 4, 4), (24, 16, 3, 3), dict(padding=1)),  # one tile: output channels split
]


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[0])))
def test_matches_oracle_on_chosen_specs(algo, dtype, case):
    input_shape, weight_shape, args = case
    x, w, b = random_case(np.random.default_rng(7), input_shape, weight_shape, dtype)
    x0, w0, b0 = x.copy(), w.copy(), b.copy()
    assert_matches_oracle(algo, x, w, b, **args)
    assert_matches_oracle(algo, x, w, None, **args)
    np.testing.assert_array_equal(x, x0)  # inputs are never modified
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(b, b0)


def test_plan_balances_jobs_and_splits_output_channels_when_tiles_are_few():
    threads = numba.get_num_threads()
    spec = convlab.ConvSpec.from_shapes((1, 64, 8, 8), (24, 64, 3, 3), padding=1)
    tb, kb, kper = winograd.plan(spec, 4, 4)  # 4 tiles, 24 < 8 x 4 channels: split tiles
    assert tb == -(-4 // threads) and kb <= kper == 24
    spec = convlab.ConvSpec.from_shapes((1, 512, 14, 14), (512, 512, 3, 3), padding=1)
    tb, kb, kper = winograd.plan(spec, 4, 4)  # 16 tiles, 512 channels: U outweighs V
    assert tb == 16 and kper == -(-512 // threads)
    spec = convlab.ConvSpec.from_shapes((1, 64, 4, 4), (48, 64, 3, 3), padding=1)
    tb, kb, kper = winograd.plan(spec, 4, 4)  # 1 tile: split the output channels
    assert tb == 1 and kb <= kper == -(-48 // threads)
    big = convlab.ConvSpec.from_shapes((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    tb, kb, kper = winograd.plan(big, 4, 4)
    jobs = -(-8 * 14 * 14 // tb)
    assert jobs % threads == 0 and tb <= winograd.TILES_PER_JOB and kper == 64
    # without a way to hold the BLAS to one thread, GEMMs stay under its threshold
    tb, kb, kper = winograd.plan(big, 4, 4, single_thread_blas=False)
    assert kb * 64 * tb <= winograd.BLAS_SINGLE_THREAD_MNK


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("single_thread_blas", [True, False])
def test_both_gemm_blockings_match_the_oracle(algo, single_thread_blas):
    """The small-GEMM blocking (no threadpoolctl) and the big one give the same answers."""
    x, w, b = random_case(np.random.default_rng(8), (3, 40, 17, 15), (72, 40, 3, 3))
    xa, wa, ba, spec = prepare(x, w, b, padding=1)
    m = VARIANTS[algo]
    blocking = winograd.plan(spec, m, 4, single_thread_blas=single_thread_blas)
    out = winograd.winograd(xa, wa, ba, spec, m, blocking=blocking)
    report = compare(out, conv2d_reference(xa, wa, ba, spec),
                     kernels.get(algo).tolerance(spec, np.float32))
    assert report.ok, report


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("groups, kper, cb_threads", [(1, 7, 2), (2, 5, 4), (3, 11, 1)])
def test_shared_input_transform_matches_the_oracle(monkeypatch, algo, groups, kper,
                                                   cb_threads):
    """One tile block with the output channels split (``kper`` < K/groups): V is
    transformed once for all tiles, in jobs of input channels (ragged: 40/g channels in
    ``cb_threads`` blocks), and every job's GEMMs read it.  Several groups, ragged
    output-channel splits, an asymmetric padding and ragged edge tiles."""
    x, w, b = random_case(np.random.default_rng(groups), (3, 42, 9, 11), (48, 42 // groups, 3, 3))
    xa, wa, ba, spec = prepare(x, w, b, padding=(1, 0), groups=groups)
    m = VARIANTS[algo]
    tiles = 3 * -(-spec.out_height // m) * -(-spec.out_width // m)
    monkeypatch.setattr(numba, "get_num_threads", lambda: cb_threads)
    calls = []
    shared = winograd._shared_v
    monkeypatch.setattr(winograd, "_shared_v", lambda *a: calls.append(a[-2]) or shared(*a))
    out = winograd.winograd(xa, wa, ba, spec, m, blocking=(tiles, 3, kper))
    assert calls, "the shared transform did not run"
    report = compare(out, conv2d_reference(xa, wa, ba, spec),
                     kernels.get(algo).tolerance(spec, np.float32))
    assert report.ok, report


@pytest.mark.parametrize("algo", ALGOS)
def test_prepared_filter_gives_the_same_answer(algo):
    x, w, b = random_case(np.random.default_rng(3), (2, 4, 10, 9), (5, 4, 3, 3))
    xa, wa, ba, spec = prepare(x, w, b, padding=1)
    kern = kernels.get(algo)
    u = kern.transform_weight(wa, spec)
    np.testing.assert_array_equal(kern.run(xa, wa, ba, spec, transformed_weight=u),
                                  kern.run(xa, wa, ba, spec))


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("args, weight, why", [
    (dict(), (4, 3, 5, 5), "got kernel (5, 5)"),
    (dict(stride=2), (4, 3, 3, 3), "got stride (2, 2)"),
    (dict(dilation=2), (4, 3, 3, 3), "got dilation (2, 2)"),
    (dict(stride=(1, 2), dilation=(2, 1)), (4, 3, 3, 1), "got kernel (3, 1), stride (1, 2), "
                                                        "dilation (2, 1)"),
])  # fmt: skip
def test_refuses_what_it_cannot_do_and_says_why(algo, args, weight, why):
    x, w, b = random_case(np.random.default_rng(0), (1, 3, 12, 12), weight)
    with pytest.raises(kernels.UnsupportedSpecError) as err:
        convlab.conv2d(x, w, b, algo=algo, **args)
    msg = str(err.value)
    assert msg.startswith(f"{algo} needs a 3x3 kernel with stride 1 and dilation 1; ")
    assert msg.endswith(why)


# ------------------------------------------------------------------ the filter cache
def _prepared_of(layer, algo):
    return layer._weight_cache.kept(kernels.get(algo))


@pytest.mark.parametrize("algo", ["winograd_f2", "winograd_f4"])
def test_conv2d_caches_the_filter_transform_and_notices_every_change(algo):
    layer = convlab.Conv2d(4, 6, 3, padding=1, seed=0, algo=algo)
    x = np.random.default_rng(1).standard_normal((2, 4, 9, 11)).astype(np.float32)

    def check():
        expected = convlab.conv2d(x, layer.weight, layer.bias, padding=1, algo="naive")
        tol = kernels.get(algo).tolerance(prepare(x, layer.weight, padding=1)[3], np.float32)
        got = layer(x)
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol * np.abs(expected).max())
        return got

    first = check()
    u = _prepared_of(layer, algo)
    np.testing.assert_array_equal(layer(x), first)
    assert _prepared_of(layer, algo) is u  # reused, not rebuilt

    layer.weight[...] += 1  # in place
    check()
    assert _prepared_of(layer, algo) is not u
    u = _prepared_of(layer, algo)

    view = layer.weight[2, 1]  # through a view, one element
    view[0, 0] = -3.0
    check()
    assert _prepared_of(layer, algo) is not u

    layer.weight = np.random.default_rng(5).standard_normal(layer.weight.shape).astype(np.float32)
    check()  # a new array
    layer.load_state_dict({"weight": np.ones_like(layer.weight) * 0.5, "bias": layer.bias})
    check()
    layer.reset_parameters(seed=9)
    check()


def test_weight_cache_compares_bits_not_values():
    kern = kernels.get("winograd_f4")
    cache = WeightCache()
    w = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    spec = convlab.ConvSpec.from_shapes((1, 3, 8, 8), w.shape)
    u = cache.get(kern, w, spec)
    assert cache.get(kern, w.copy(), spec) is u  # equal values: the same entry
    w[0, 0, 0, 0] = np.nan
    u_nan = cache.get(kern, w, spec)
    assert u_nan is not u and cache.get(kern, w, spec) is u_nan  # NaN == NaN bitwise
    w[0, 0, 0, 0] = -0.0
    assert cache.get(kern, w, spec) is not u_nan
    assert cache.get(kernels.get("naive"), w, spec) is None  # no prepare: nothing cached


def test_functional_cache_argument():
    x, w, b = random_case(np.random.default_rng(4), (1, 3, 8, 8), (2, 3, 3, 3))
    cache = WeightCache()
    out = convlab.conv2d(x, w, b, padding=1, algo="winograd_f4", cache=cache)
    np.testing.assert_array_equal(
        out, convlab.conv2d(x, w, b, padding=1, algo="winograd_f4"))
    w2 = w * 2
    np.testing.assert_array_equal(
        convlab.conv2d(x, w2, b, padding=1, algo="winograd_f4", cache=cache),
        convlab.conv2d(x, w2, b, padding=1, algo="winograd_f4"))


# ------------------------------------------------------------------ NaN / Inf spreading
def _predicted_footprint(m, shape, where):
    """Outputs that a non-finite input pixel reaches through Winograd's arithmetic.

    Every written-out transform skips its zero coefficients, so pixel p of a tile's
    input window reaches row i of B^T d B when B^T[i, p] != 0, and row i of M
    reaches output row r when A^T[r, i] != 0 (the GEMM multiplies everything)."""
    bt, _, at = MATRICES[m]
    reach = (at != 0).astype(int) @ (bt != 0).astype(int) > 0  # (m, m+2): out row <- pixel
    mask = np.zeros(shape, bool)
    py, px = where[0] + 1, where[1] + 1  # padding 1
    for ty in range(-(-shape[0] // m)):
        for tx in range(-(-shape[1] // m)):
            dy, dx = py - ty * m, px - tx * m  # the pixel's place in this tile's window
            if 0 <= dy < m + 2 and 0 <= dx < m + 2:
                block = np.outer(reach[:, dy], reach[:, dx])
                rows = slice(ty * m, min(shape[0], ty * m + m))
                cols = slice(tx * m, min(shape[1], tx * m + m))
                mask[rows, cols] |= block[:rows.stop - rows.start, :cols.stop - cols.start]
    return mask


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(5, 6), (4, 4), (0, 11), (8, 3)])
def test_a_nonfinite_pixel_spreads_as_the_transforms_predict(algo, value, where):
    m = VARIANTS[algo]
    got = numerics.nan_footprint(algo, size=(12, 12), where=where, value=value)
    direct = numerics.nan_footprint("naive", size=(12, 12), where=where, value=value)
    expected_direct = np.zeros((12, 12), bool)
    expected_direct[max(0, where[0] - 1):where[0] + 2, max(0, where[1] - 1):where[1] + 2] = True
    np.testing.assert_array_equal(direct, expected_direct)  # direct: the 3x3 windows only
    np.testing.assert_array_equal(got, _predicted_footprint(m, (12, 12), where))
    assert np.all(got >= direct)  # everything direct poisons, and for m >= 4 more:
    if m == 2:  # F(2,3)'s transforms are sparse enough to reach only the true 3x3
        np.testing.assert_array_equal(got, direct)
    else:
        assert got.sum() > direct.sum()


def test_nan_in_an_interior_tile_position_fills_the_tile():
    got = numerics.nan_footprint("winograd_f4", size=(12, 12), where=(5, 6))
    expected = np.zeros((12, 12), bool)
    expected[4:8, 4:8] = True  # the one 4x4 tile whose 6x6 window holds padded pixel (6, 7)
    np.testing.assert_array_equal(got, expected)

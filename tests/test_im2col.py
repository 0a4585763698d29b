"""im2col + GEMM: every code path of the tiling and chunking plan, the workspace cap,
the textbook column matrix (the spec grid is in test_grid.py, Hypothesis specs in
test_properties.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import convlab
from convlab import kernels
from convlab.functional import prepare
from convlab.kernels import im2col as mod

from helpers import assert_matches_oracle, oracle, random_case

ALGO = "im2col"


def _spec(input_shape, weight_shape, **args):
    return convlab.ConvSpec.from_shapes(input_shape, weight_shape, **args)


def test_each_plan_path_is_exercised():
    """The specs used below really take the path their test is named after."""
    assert mod.plan(_spec((2, 4, 7, 9), (6, 4, 1, 1)), 4).identity
    assert mod.plan(_spec((2, 6, 9, 9), (6, 1, 3, 3), groups=6), 4).small_gemm
    batched = mod.plan(_spec((3, 4, 5, 6), (5, 4, 3, 3)), 4)  # 18 columns per image
    assert batched.images == 3 and batched.columns == 3 * 3 * 6
    wide = mod.plan(_spec((2, 4, 60, 60), (5, 4, 3, 3)), 4)  # 58 * 60 columns: one image
    assert mod.MIN_GEMM_COLUMNS <= 58 * 60
    assert wide.images == 1 and wide.columns == 58 * 60 and wide.chunks == 2


def test_chunks_over_images_and_rows(monkeypatch):
    rng = np.random.default_rng(3)
    x, w, b = random_case(rng, (3, 4, 16, 10), (5, 4, 3, 3))
    args = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    spec = prepare(x, w, b, **args)[3]
    assert spec.out_height == 8  # bands of 3 rows: 3, 3 and a partial 2
    ws = 12  # the padded width: one flat row of the column matrix per output row
    calls = []
    real = mod._run_chunk
    monkeypatch.setattr(mod, "_run_chunk", lambda *a: calls.append(a[4:8]) or real(*a))
    per_col = (spec.reduction_length + 1 + 5) * 4  # column rows, the bias's ones, the result
    padded = 3 * 4 * 2 * 9 * ws * 4  # the zero-padded input in two row phases of 9 rows
    # room for the padded input and exactly one image's columns: one chunk per image
    with mod.workspace_cap(padded + per_col * spec.out_height * ws) as cap:
        pl = mod.plan(spec, 4)
        assert (pl.images, pl.rows, pl.chunks, len(pl.tiles)) == (1, spec.out_height, 3, 1)
        assert pl.workspace == per_col * spec.out_height * ws + padded == cap
        assert_matches_oracle(ALGO, x, w, b, **args)
    assert calls == [(0, 1, 0, 8), (1, 1, 0, 8), (2, 1, 0, 8)]  # (image, images, row, rows)
    calls.clear()
    # room for three output rows of one image beside it: bands of rows
    with mod.workspace_cap(padded + 3 * per_col * ws) as cap:
        pl = mod.plan(spec, 4)
        assert pl.images == 1 and pl.rows == 3 and pl.workspace <= cap
        assert_matches_oracle(ALGO, x, w, b, **args)
    assert len(calls) == pl.chunks == 3 * 3
    assert calls[:3] == [(0, 1, 0, 3), (0, 1, 3, 3), (0, 1, 6, 2)]
    calls.clear()
    # no room for the padded input: tiles, each padded on its own window; still right
    with mod.workspace_cap(padded // 2) as cap:
        pl = mod.plan(spec, 4)
        assert len(pl.tiles) > 1 and pl.workspace <= cap
        assert_matches_oracle(ALGO, x, w, b, **args)
    assert len(calls) == pl.chunks
    calls.clear()
    # a cap below one output pixel's window still runs, a pixel at a time
    with mod.workspace_cap(1):
        pl = mod.plan(spec, 4)
        assert len(pl.tiles) == 3 * spec.out_height * spec.out_width
        assert_matches_oracle(ALGO, x, w, None, **args)
    assert len(calls) == pl.chunks


def test_tiny_cap_depthwise_and_float64():
    rng = np.random.default_rng(4)
    x, w, b = random_case(rng, (2, 3, 9, 8), (6, 1, 3, 3), np.float64)
    with mod.workspace_cap(100):
        assert mod.plan(prepare(x, w, b, groups=3, padding=1)[3], 8).chunks > 2
        assert_matches_oracle(ALGO, x, w, b, groups=3, padding=1)


def test_a_huge_padding_stays_under_the_cap():
    """The cap bounds everything im2col allocates, the padded input included: a (1, 16,
    1, 1) input padded by (5, 2000) for an 11x11 kernel would be a 2.8 MB padded copy
    and a 30 MB column matrix; under a 1 MiB cap the peak allocation (traced) stays
    within the cap plus the output."""
    import tracemalloc

    rng = np.random.default_rng(9)
    x, w, b = random_case(rng, (1, 16, 1, 1), (3, 16, 11, 11))
    args = dict(padding=(5, 2000))
    spec = prepare(x, w, b, **args)[3]
    cap = 2**20
    with mod.workspace_cap(cap):
        assert mod.plan(spec, 4).workspace <= cap
        assert_matches_oracle(ALGO, x, w, b, **args)  # compiles the paths it needs
        tracemalloc.start()
        try:
            out = convlab.conv2d(x, w, b, algo=ALGO, **args)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak <= cap + 2 * out.nbytes + 64 * 2**10, peak


def test_workspace_cap_is_per_context_and_nests_in_any_order():
    assert mod.get_workspace_cap() == mod.DEFAULT_WORKSPACE_CAP == 256 * 2**20
    with mod.workspace_cap(12345) as cap:
        assert cap == mod.get_workspace_cap() == 12345
        with mod.workspace_cap(999):
            assert mod.get_workspace_cap() == 999
        assert mod.get_workspace_cap() == 12345
    assert mod.get_workspace_cap() == mod.DEFAULT_WORKSPACE_CAP
    # blocks left out of order (an ExitStack misused, a generator closed late): each
    # removes exactly its own cap, and the default comes back at the end
    outer, inner = mod.workspace_cap(1000), mod.workspace_cap(2000)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert mod.get_workspace_cap() == 2000
    inner.__exit__(None, None, None)
    assert mod.get_workspace_cap() == mod.DEFAULT_WORKSPACE_CAP
    # another thread does not see this thread's cap
    import threading

    seen = []
    with mod.workspace_cap(4321):
        t = threading.Thread(target=lambda: seen.append(mod.get_workspace_cap()))
        t.start()
        t.join()
    assert seen == [mod.DEFAULT_WORKSPACE_CAP]
    for bad in (0, -5, 1.5, "big", True):
        with pytest.raises(ValueError, match="workspace cap"):
            mod.workspace_cap(bad).__enter__()


def test_registry_reports_workspace():
    kern = kernels.get(ALGO)
    spec = _spec((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert mod.blowup(spec) == 9
    # one image per GEMM: 56 rows of 58 (padded width) columns; column matrix with the
    # bias's row of ones, the GEMM's result, and the zero-padded input
    cols = 56 * 58
    assert kern.workspace(spec, 4) == (576 + 1 + 64) * cols * 4 + 8 * 64 * 58 * 58 * 4
    assert kern.workspace(spec, 4) == mod.plan(spec, 4).workspace
    assert mod.column_shape(spec, 8) == (576, 8 * 56 * 56)
    big = _spec((1, 256, 512, 512), (8, 256, 3, 3), padding=1)  # 2.4 GB of columns
    assert kern.workspace(big, 4) <= mod.DEFAULT_WORKSPACE_CAP
    assert kernels.get(ALGO).workspace(_spec((2, 4, 7, 9), (6, 4, 1, 1)), 4) == 0  # identity


def test_lower_builds_the_column_matrix():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    spec = _spec(x.shape, (4, 3, 2, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    cols = mod.lower(x, spec)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))
    ho, wo = spec.out_height, spec.out_width
    expected = np.empty((3 * 2 * 3, 2 * ho * wo), np.float32)
    for c, p, q in itertools.product(range(3), range(2), range(3)):
        for n, i, j in itertools.product(range(2), range(ho), range(wo)):
            expected[(c * 2 + p) * 3 + q, (n * ho + i) * wo + j] = xp[n, c, i * 2 + p,
                                                                       j + 2 * q]
    np.testing.assert_array_equal(cols, expected)
    w = rng.standard_normal((4, 3, 2, 3)).astype(np.float32)
    # the convolution is that matrix times the weight matrix
    prod = (w.reshape(4, -1) @ cols).reshape(4, 2, ho, wo).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(prod, oracle(x, w, None, stride=(2, 1), padding=(1, 2),
                                            dilation=(1, 2)), rtol=1e-5, atol=1e-5)

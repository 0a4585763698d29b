"""The prange direct convolution: bit-identical results run to run and for any thread
count, every blocking remainder, awkward input layouts (the spec grid is in
test_grid.py, Hypothesis specs in test_properties.py)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

import convlab
from convlab.functional import prepare
from convlab.kernels import parallel as mod

from helpers import assert_matches_oracle, random_case

ALGO = "parallel"

def test_deterministic_across_runs_and_thread_counts():
    """Bit-identical run to run and for 1 or 2 threads.  Run with at least two Numba
    threads, or the "other" thread count would be the same one and prove nothing."""
    assert numba.config.NUMBA_NUM_THREADS >= 2, "needs a machine with 2+ cores"
    rng = np.random.default_rng(7)
    x, w, b = random_case(rng, (3, 16, 23, 21), (12, 8, 3, 3))
    args = dict(padding=1, groups=2, stride=(1, 2))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        first = convlab.conv2d(x, w, b, algo=ALGO, **args)
        for _ in range(3):
            np.testing.assert_array_equal(convlab.conv2d(x, w, b, algo=ALGO, **args), first)
        numba.set_num_threads(1)
        one = convlab.conv2d(x, w, b, algo=ALGO, **args)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, first)  # a different split gives the same bits


def test_many_row_and_channel_blocks(monkeypatch):
    """Small TARGET_BLOCK: tall outputs split into many row blocks, the last one
    partial (3 of 4 rows); 10 output channels per group: blocks of 4, 4 and 2."""
    monkeypatch.setattr(mod, "TARGET_BLOCK", 40)
    rng = np.random.default_rng(8)
    x, w, b = random_case(rng, (2, 6, 31, 7), (20, 3, 3, 2))
    spec = prepare(x, w, b, padding=1, groups=2)[3]
    ws = spec.padded_width
    rows = max(1, min(spec.out_height, (mod.TARGET_BLOCK - spec.out_width) // ws + 1))
    assert rows == 4 and spec.out_height % rows == 3 and spec.out_height // rows >= 5
    assert_matches_oracle(ALGO, x, w, b, padding=1, groups=2)
    assert_matches_oracle(ALGO, x, w, b, padding=1, groups=2, stride=2)


def test_tap_offsets_follow_the_phase_planes():
    """off[(c,p,q)] points at xpad[c, p*dh, q*dw] inside the phase-split input."""
    spec = convlab.ConvSpec.from_shapes((1, 2, 9, 10), (3, 2, 3, 2), stride=(2, 3),
                                        padding=(1, 0), dilation=(1, 2))
    rng = np.random.default_rng(9)
    x = rng.standard_normal(spec.input_shape).astype(np.float32)
    xs = mod.phase_planes(x, spec)
    off = mod.tap_offsets(spec, xs.shape[4], xs.shape[5])
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    flat = xs.reshape(-1)
    for (c, p, q), o in zip(itertools.product(range(2), range(3), range(2)), off):
        assert flat[o] == xp[0, c, p * 1, q * 2]


def test_weight_repack_pads_partial_blocks_with_zeros():
    w = np.arange(2 * 3 * 2 * 2 * 1, dtype=np.float32).reshape(6, 2, 2, 1) + 1  # 3 per group
    wr = mod._repack_weight(w, groups=2)
    assert wr.shape == (2, 4, mod.KB)  # one block of 4 per group, 2*2*1 taps
    np.testing.assert_array_equal(wr[0, :, :3], w[:3].reshape(3, 4).T)
    np.testing.assert_array_equal(wr[1, :, :3], w[3:].reshape(3, 4).T)
    assert not wr[:, :, 3].any()


@pytest.mark.slow
def test_no_out_of_bounds_access(tmp_path):
    """Both fast kernels under NUMBA_BOUNDSCHECK=1 (a fresh process, its own cache):
    the rounded-up vector loops and the lowering never step outside an array."""
    script = tmp_path / "bounds.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        from helpers import assert_matches_oracle, random_case
        rng = np.random.default_rng(0)
        cases = [((2, 4, 11, 9), (4, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
                 ((1, 3, 8, 13), (5, 3, 3, 2), dict(stride=(3, 2), dilation=(1, 3))),
                 ((2, 2, 9, 9), (2, 1, 3, 3), dict(groups=2, padding="same", dilation=2)),
                 ((3, 3, 5, 6), (7, 3, 1, 1), dict())]
        for algo in ("parallel", "im2col"):
            for xs, ws, args in cases:
                x, w, b = random_case(rng, xs, ws)
                assert_matches_oracle(algo, x, w, b, **args)
    """))
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

"""conv_transpose2d with ``algo="auto"`` against torch on ResNet-18's stride-2 3x3 shapes.

    python scripts/transpose_s2.py [--rounds 9]

``convlab bench --suite resnet --backward`` times the transposed convolution of the
suite's layers, which has no stride-2 3x3 one; these are the transposes of ResNet-18's
downsampling 3x3 layers (batch 8, float32, the machine's threads for both): each the
median of ``--rounds`` calls after an untimed one, checked against torch in float64
first.  Run it on a quiet machine; the tuning memory is left out (the rule's kernels).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial

# the rule's kernels, not whatever this machine's tuning memory holds
os.environ.setdefault("CONVLAB_TUNE_CACHE", os.path.join(tempfile.mkdtemp(), "tuning.json"))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import convlab  # noqa: E402

# (in, out, size) of the forward 3x3 stride-2 layers; the transpose maps out -> in
LAYERS = [(64, 128, 56), (128, 256, 28), (256, 512, 14)]


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(numba.get_num_threads())
    rng = np.random.default_rng(0)
    ratios = []
    for c, k, size in LAYERS:
        y = rng.standard_normal((8, k, size // 2, size // 2)).astype(np.float32)
        w = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        ty, tw = torch.from_numpy(y), torch.from_numpy(w)
        with torch.no_grad():
            want = torch.nn.functional.conv_transpose2d(ty.double(), tw.double(), None, 2, 1,
                                                        1).numpy()
            got = convlab.conv_transpose2d(y, w, None, 2, 1, 1)
            err = float(np.abs(got - want).max() / np.abs(want).max())
            assert err < 1e-5, err
            ours = median_ms(partial(convlab.conv_transpose2d, y, w, None, 2, 1, 1),
                             args.rounds)
            theirs = median_ms(partial(torch.nn.functional.conv_transpose2d, ty, tw, None, 2, 1,
                                       1), args.rounds)
        ratios.append(theirs / ours)
        print(f"{k}->{c} transposed to {size}x{size}: convlab {ours:.2f} ms, torch "
              f"{theirs:.2f} ms, {theirs / ours:.2f}x torch (rel err {err:.1e})")
    print(f"geomean {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}x torch")


if __name__ == "__main__":
    main()

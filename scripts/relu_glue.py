"""The ReLU between layers: NumPy's ``np.maximum``, ``convlab.relu`` and ``torch.relu_``.

    python scripts/relu_glue.py [--rounds 15]

In place on MobileNetV2's and ResNet-18's activation sizes (batch 8, float32), the
fastest of ``--rounds`` calls after an untimed one, in ms, all three in one process on
the machine's threads.  After the first call every value is non-negative: each call
still reads and writes the whole array, which is what a ReLU between layers costs.
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

import convlab
from convlab.bench.timing import wall_timer

SHAPES = [(8, 96, 112, 112), (8, 64, 112, 112), (8, 144, 56, 56), (8, 384, 14, 14),
          (8, 960, 7, 7)]


def best_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()
    return 1e3 * min(wall_timer(fn, 1) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)))
    rng = np.random.default_rng(0)
    print(f"{'activation':>20} {'MB':>6} {'np.maximum':>11} {'convlab.relu':>13} "
          f"{'torch.relu_':>12}")
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        a, b, t = x.copy(), x.copy(), torch.from_numpy(x.copy())
        cells = [best_ms(partial(np.maximum, a, 0, out=a), args.rounds),
                 best_ms(partial(convlab.relu, b, inplace=True), args.rounds),
                 best_ms(partial(torch.relu_, t), args.rounds)]
        print(f"{'x'.join(map(str, shape)):>20} {x.nbytes / 2**20:6.1f} {cells[0]:11.3f} "
              f"{cells[1]:13.3f} {cells[2]:12.3f}")


if __name__ == "__main__":
    main()

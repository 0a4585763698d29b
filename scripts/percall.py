"""Per-call cost of convlab's Python layer on a tiny input, against torch's.

    python scripts/percall.py [--rounds 7] [--calls 2000]

A 1x1x4x4 input through ``Conv2d(1, 1, 3)`` does almost no arithmetic, so its time is
what a call costs around the kernel: checking the arrays, the spec, the plan (the
kernel decision, docs/design.md "Data flow"), copies for the backward.  Every case is
timed in the same process, interleaved, for several rounds; each figure is the fastest
round (another program can only add time), and the ratio to ``torch.nn.Conv2d`` on the
same input is printed beside it, so a busy machine changes both alike.

Cases: ``decision`` (the plan of a spec already planned: ``plan.plan(...)``),
``kernel_only`` (the chosen kernel's own call, no checks), ``conv2d`` (``algo="auto"``
and a named kernel), ``Conv2d`` (with and without ``no_grad``), torch's module.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

# the rule's choice, not whatever this machine's tuning memory holds
os.environ.setdefault("CONVLAB_TUNE_CACHE", os.path.join(tempfile.mkdtemp(), "tuning.json"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import convlab  # noqa: E402
from convlab.plan import plan  # noqa: E402
from convlab.validate import kernel_spec  # noqa: E402


def cases() -> dict[str, Callable[[], object]]:
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4)).astype(np.float32)
    layer = convlab.Conv2d(1, 1, 3, seed=0)
    w, b = layer.weight, layer.bias
    spec = kernel_spec(convlab.ConvSpec.from_shapes(x.shape, w.shape))
    kernel = plan(spec, np.float32, cached=True).forward.kernel
    rival, tx = torch.nn.Conv2d(1, 1, 3), torch.from_numpy(x)

    def no_grad() -> object:
        with convlab.no_grad():
            return layer(x)

    def torch_no_grad() -> object:
        with torch.no_grad():
            return rival(tx)

    print(f"auto runs {kernel.name!r} here; torch {torch.__version__}, 1 thread")
    return {
        "decision": lambda: plan(spec, np.float32, "auto", True, True),
        "kernel_only": lambda: kernel.execute(x, w, b, spec),
        "conv2d_auto": lambda: convlab.conv2d(x, w, b),
        "conv2d_naive": lambda: convlab.conv2d(x, w, b, algo="naive"),
        "Conv2d": lambda: layer(x),
        "Conv2d_no_grad": no_grad,
        "torch_Conv2d": lambda: rival(tx),
        "torch_Conv2d_no_grad": torch_no_grad,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    timed = cases()
    for call in timed.values():
        call(), call()  # compiles, plans
    best = dict.fromkeys(timed, float("inf"))
    for _ in range(args.rounds):
        for name, call in timed.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / args.calls)
    for name, seconds in best.items():
        print(f"{name:22s} {seconds * 1e6:8.2f} us/call  {seconds / best['torch_Conv2d']:6.2f}x "
              "torch's Conv2d")


if __name__ == "__main__":
    main()

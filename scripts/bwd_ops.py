"""Each backward kernel of ResNet-18's conv layers, timed alone, beside torch's backward.

    python scripts/bwd_ops.py [--layers 0,10] [--rounds 5]

For every layer (batch 8, float32, the machine's threads) and every grad_input /
grad_weight kernel that ``algo="auto"`` may pick, the fastest of ``--rounds`` calls
after an untimed one, in ms; a grad_input kernel that transforms its weight is timed
twice, transforming on every call (``conv2d_input``) and with the transform kept
(``[kept]``, as ``Conv2d.backward`` runs it).  ``torch bwd~`` is torch's autograd
backward of the same layer (forward+backward minus forward: grad_input, grad_weight
and grad_bias).  The backward ``auto`` rules (``kernels/im2col_backward.py``,
``kernels/polyphase_backward.py``) quote these figures; run it on a quiet machine:
another process's work lands in whichever kernel runs beside it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial

# the rule's kernels, not whatever this machine's tuning memory holds
os.environ.setdefault("CONVLAB_TUNE_CACHE", os.path.join(tempfile.mkdtemp(), "tuning.json"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from convlab.kernels import registry  # noqa: E402
from convlab.shapes import ConvSpec  # noqa: E402

# ResNet-18's distinct conv layers: (in, out, size, kernel, stride, padding)
LAYERS = [(3, 64, 224, 7, 2, 3), (64, 64, 56, 3, 1, 1), (64, 128, 56, 3, 2, 1),
          (64, 128, 56, 1, 2, 0), (128, 128, 28, 3, 1, 1), (128, 256, 28, 3, 2, 1),
          (128, 256, 28, 1, 2, 0), (256, 256, 14, 3, 1, 1), (256, 512, 14, 3, 2, 1),
          (256, 512, 14, 1, 2, 0), (512, 512, 7, 3, 1, 1)]
BATCH = 8


def best_ms(call: Callable[[], object], rounds: int) -> float:
    call()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def layer_row(layer: tuple[int, ...], rng: np.random.Generator, rounds: int) -> str:
    """One printed row: every auto-eligible backward kernel's time, then torch's."""
    c, k, size, ks, s, p = layer
    spec = ConvSpec.create((BATCH, c, size, size), k, ks, stride=s, padding=p)
    x = rng.standard_normal((BATCH, c, size, size), dtype=np.float32)
    w = rng.standard_normal(spec.weight_shape, dtype=np.float32) * 0.05
    go = rng.standard_normal(spec.output_shape, dtype=np.float32)
    cells = [f"{c}->{k}@{size} k{ks} s{s}:"]
    for op in ("grad_input", "grad_weight"):
        tag = "gi" if op == "grad_input" else "gw"
        a, b = (go, w) if op == "grad_input" else (x, go)
        for name, kern in registry.kernels_for(op).items():
            if kern.auto_rank is None or kern.why_not(spec) is not None or name == "naive":
                continue
            cells.append(f"{tag}.{name} {best_ms(partial(kern.grad, a, b, spec), rounds):.1f}")
            if kern.transform_weight is not None:
                kept = kern.transform_weight(w, spec)
                t = best_ms(partial(kern.grad, a, b, spec, kept), rounds)
                cells.append(f"{tag}.{name}[kept] {t:.1f}")
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    tb, tgo = torch.zeros(k, requires_grad=True), torch.from_numpy(go)

    def both() -> None:
        torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=p).backward(tgo)
        tx.grad = tw.grad = tb.grad = None

    def forward() -> None:
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=p)

    cells.append(f"torch bwd~{best_ms(both, rounds) - best_ms(forward, rounds):.1f}")
    return " | ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", help="indices into the layer list, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)))
    layers = LAYERS if not args.layers else [LAYERS[int(i)] for i in args.layers.split(",")]
    rng = np.random.default_rng(0)
    for layer in layers:
        print(layer_row(layer, rng, args.rounds), flush=True)


if __name__ == "__main__":
    main()

"""Time the CPU kernels against torch.nn.functional.conv2d (temporary, until
convlab.bench lands and absorbs it).

    flock /tmp/convlab-cpu.lock /work/venv/bin/python scripts/bench_cpu.py \
        [--kernels im2col,parallel,naive] [--suite all|resnet] [--repeats 7] [--dtype float32]

For each layer: a correctness gate vs torch, the first call (compile) apart,
then ``repeats`` rounds; in each round every provider runs once, in turn, so a
burst of load from elsewhere hits all of them alike.  Reported: median time,
GFLOP/s (ConvSpec.flops()), % of a float32 GEMM measured in the same run, and
the ratio torch time / kernel time (> 1: faster than torch).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import convlab
from convlab.shapes import ConvSpec

# (name, input shape, out channels, kernel, stride, padding, dilation, groups); batch 8
# unless the shape says otherwise.  DESIGN.md section 7.
SUITE = [
    ("seed 5->2 3x3 10x12 N=64", (64, 5, 10, 12), 2, 3, 1, 0, 1, 1),
    ("resnet 3x3 64@56", (8, 64, 56, 56), 64, 3, 1, 1, 1, 1),
    ("resnet 3x3 128@28", (8, 128, 28, 28), 128, 3, 1, 1, 1, 1),
    ("resnet 3x3 256@14", (8, 256, 14, 14), 256, 3, 1, 1, 1, 1),
    ("resnet 3x3 512@7", (8, 512, 7, 7), 512, 3, 1, 1, 1, 1),
    ("stem 7x7/2 3->64@224", (8, 3, 224, 224), 64, 7, 2, 3, 1, 1),
    ("1x1/2 256->512@56", (8, 256, 56, 56), 512, 1, 2, 0, 1, 1),
    ("depthwise 3x3 128@56", (8, 128, 56, 56), 128, 3, 1, 1, 1, 128),
    ("dilated 3x3 d2 256@28", (8, 256, 28, 28), 256, 3, 1, 2, 2, 1),
]
RESNET = [layer for layer in SUITE if layer[0].startswith("resnet")]


def sgemm_peak(dtype: np.dtype, size: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((size, size)).astype(dtype)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="im2col,parallel,naive")
    ap.add_argument("--suite", choices=["all", "resnet"], default="all")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--naive-max-gflop", type=float, default=4.0,
                    help="run naive only on layers under this many GFLOP (it is slow)")
    args = ap.parse_args()
    import numba
    import torch

    dtype = np.dtype(args.dtype)
    names = args.kernels.split(",")
    layers = SUITE if args.suite == "all" else RESNET
    peak = sgemm_peak(dtype)
    print(f"# torch {torch.__version__} threads {torch.get_num_threads()}, numba threads "
          f"{numba.get_num_threads()}, "
          f"load avg {os.getloadavg()[0]:.2f}, {dtype}")
    print(f"# measured {dtype} GEMM peak: {peak:.1f} GFLOP/s")
    ratios: dict[str, list[float]] = {n: [] for n in names}
    header = f"{'layer':26s} {'GFLOP':>6s} {'torch ms':>9s} {'GF/s':>6s}"
    for n in names:
        header += f" | {n + ' ms':>12s} {'GF/s':>6s} {'%pk':>4s} {'xtorch':>6s}"
    print(header)
    for name, shape, k_out, ks, st, pad, dil, grp in layers:
        rng = np.random.default_rng(0)
        spec = ConvSpec.create(shape, k_out, ks, st, pad, dil, grp)
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(spec.weight_shape).astype(dtype) / math.sqrt(
            spec.reduction_length)
        b = rng.standard_normal(k_out).astype(dtype)
        xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        conv_args = dict(stride=st, padding=pad, dilation=dil, groups=grp)
        providers = {"torch": lambda: torch.nn.functional.conv2d(xt, wt, bt, **conv_args)}
        expected = providers["torch"]().numpy()
        gflop = spec.flops() / 1e9
        first = {}
        for n in names:
            if n == "naive" and gflop > args.naive_max_gflop:
                continue
            fn = (lambda n=n: convlab.conv2d(x, w, b, algo=n, **conv_args))
            t0 = time.perf_counter()
            got = fn()
            first[n] = time.perf_counter() - t0
            err = np.max(np.abs(got - expected)) / max(1.0, np.max(np.abs(expected)))
            if not err < 1e-3:
                raise SystemExit(f"{n} is WRONG on {name}: relative error {err:.3g}")
            providers[n] = fn
        times: dict[str, list[float]] = {p: [] for p in providers}
        for rep in range(args.repeats):
            for p, fn in providers.items():
                if p == "naive" and rep >= 2:
                    continue  # naive takes seconds: two rounds are enough
                times[p].append(_timed(fn))
        t_torch = float(np.median(times["torch"]))
        line = f"{name:26s} {gflop:6.2f} {t_torch * 1e3:9.2f} {gflop / t_torch:6.1f}"
        for n in names:
            if n not in providers:
                line += f" | {'skipped':>12s} {'':>6s} {'':>4s} {'':>6s}"
                continue
            t = float(np.median(times[n]))
            ratios[n].append(t_torch / t)
            line += (f" | {t * 1e3:12.2f} {gflop / t:6.1f} {100 * gflop / t / peak:4.0f} "
                     f"{t_torch / t:6.2f}")
        print(line, flush=True)
        firsts = ", ".join(f"{n} {t:.2f}s" for n, t in first.items())
        print(f"{'':26s} first call (compile + run): {firsts}", flush=True)
    for n in names:
        if ratios[n]:
            gm = math.exp(sum(math.log(r) for r in ratios[n]) / len(ratios[n]))
            print(f"# {n}: geometric mean speed vs torch {gm:.2f}x over {len(ratios[n])} layers")
    print(f"# load avg at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

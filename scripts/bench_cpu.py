"""Time the CPU kernels against torch.nn.functional.conv2d, and split im2col's time
into lowering and GEMM (a small script; ``convlab bench`` is the full harness).

    flock /tmp/convlab-cpu.lock /work/venv/bin/python scripts/bench_cpu.py \
        [--suite all|resnet|...] [--kernels im2col,parallel,naive] [--repeats 7] \
        [--split] [--set im2col.MIN_GEMM_COLUMNS=0]

Layers are convlab.bench's suites (DESIGN.md section 7), batch 8 unless the layer
says otherwise.  Per layer: a correctness check vs torch, the first call (compile
or cache load) apart, then ``repeats`` rounds; in each round every provider, in
turn, sleeps ``--pause`` seconds, makes one untimed call and one timed sample
(>= 20 ms of back-to-back calls), so load from elsewhere hits all alike; rounds
during which other processes took more than 10% of the CPUs are dropped.  Pause
and untimed call matter on this kind of machine: right after a call into another
library its thread pool is still spinning (OpenBLAS's for ~0.2 s) and slows the
next one down 2-4x, and memory freed a while ago has been handed back to the VM
host and costs ~8x more to fault in again (the untimed call takes that hit).
Reported: median time, GFLOP/s (ConvSpec.flops()), % of a float32 GEMM measured
in the same run, and torch's time / kernel's time (> 1: faster than torch).
``--split`` adds im2col's stages: lowering, GEMMs, copy into NCHW (same chunks,
same BLAS calls).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import os
import time

import numba
import numpy as np

import convlab
from convlab import bench
from convlab.functional import prepare
from convlab.kernels import im2col
from convlab.kernels.parallel import phase_planes, tap_offsets


def _timed(fn, number: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _cpu_ticks() -> tuple[int, int, int]:
    """(all CPUs' busy ticks, all CPUs' total ticks, this process's ticks)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    me = os.times()
    mine = round((me.user + me.system) * os.sysconf("SC_CLK_TCK"))
    return sum(vals) - vals[3] - vals[4], sum(vals), mine


def _others_share(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """Fraction of the machine other processes used between two _cpu_ticks()."""
    busy, total, mine = (a - b for a, b in zip(after, before))
    return max(0, busy - mine) / max(1, total)


def sgemm_peak(dtype: np.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Best of ``repeats`` size^3 GEMMs (a burst of load elsewhere only lowers some)."""
    a = np.random.default_rng(0).standard_normal((size, size)).astype(dtype)
    b = a.T.copy()
    a @ b
    best = float("inf")
    for _ in range(repeats):
        time.sleep(0.05)
        best = min(best, _timed(lambda: a @ b))
    return 2 * size**3 / best / 1e9


def im2col_stages(x: np.ndarray, w: np.ndarray, spec) -> tuple:
    """Three callables following the kernel's own plan: all of im2col's lowering
    calls, all of its GEMMs (on columns lowered once), all of its copies of the
    GEMM result into the output (None where the kernel has no such step)."""
    pl = im2col.plan(spec, x.dtype.itemsize)
    kg, g, rg = spec.out_channels // spec.groups, spec.groups, spec.reduction_length
    if pl.identity:
        x3 = x.reshape(spec.batch, spec.in_channels, -1)
        w2 = w.reshape(spec.out_channels, -1)
        out = np.empty((kg, x3.shape[2]), x.dtype)
        return None, (lambda: [np.matmul(w2[:kg], x3[n, :rg], out=out)
                               for n in range(len(x3)) for _ in range(g)]), None
    xs = phase_planes(x, spec)
    ws = xs.shape[5]
    off = tap_offsets(spec, xs.shape[4], ws)
    rows = rg if pl.small_gemm else rg + 1
    cols = np.zeros((g * rows, pl.columns), x.dtype)
    chunks = [(n0, min(pl.images, spec.batch - n0), i0, min(pl.rows, spec.out_height - i0))
              for n0 in range(0, spec.batch, pl.images)
              for i0 in range(0, spec.out_height, pl.rows)]
    chan_block = spec.in_channels // g * xs[0, 0].size

    def lower():
        for n0, nb, i0, nr in chunks:
            im2col._lower(xs.reshape(-1), cols, xs[0].size, chan_block, off, rows, n0, nb,
                          i0 * ws, nr * ws)

    if pl.small_gemm:  # lowering and product fused in one Numba pass: not split
        return None, None, None
    wb = np.ones((spec.out_channels, rows), x.dtype)
    res = np.empty((kg, cols.shape[1]), x.dtype)
    out = np.empty(spec.batched_output_shape, x.dtype)

    def gemm():
        for _ in chunks:
            for grp in range(g):
                np.matmul(wb[grp * kg:(grp + 1) * kg], cols[grp * rows:(grp + 1) * rows],
                          out=res)

    def copy_out():
        for n0, nb, i0, nr in chunks:
            for grp in range(g):
                out[n0:n0 + nb, grp * kg:(grp + 1) * kg, i0:i0 + nr] = res[:, :nb * nr * ws] \
                    .reshape(kg, nb, nr, ws)[..., :spec.out_width].transpose(1, 0, 2, 3)

    return lower, gemm, copy_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="all", choices=sorted(bench.SUITES))
    ap.add_argument("--only", default=None, help="comma-separated layer names of the suite")
    ap.add_argument("--kernels", default="im2col,parallel,naive")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--split", action="store_true", help="time im2col's lowering and GEMM")
    ap.add_argument("--pause", type=float, default=0.3,
                    help="seconds of sleep before each sample")
    ap.add_argument("--naive-max-gflop", type=float, default=4.0,
                    help="run naive only on layers under this many GFLOP (it is slow)")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="override a kernel module's constant, e.g. parallel.TARGET_BLOCK=256")
    args = ap.parse_args()
    import torch

    for item in args.set:
        target, value = item.split("=")
        mod_name, attr = target.rsplit(".", 1)
        mod = importlib.import_module(f"convlab.kernels.{mod_name}")
        setattr(mod, attr, type(getattr(mod, attr))(value))
    torch.set_num_threads(numba.get_num_threads())
    dtype = np.dtype(args.dtype)
    names = args.kernels.split(",")
    peak = sgemm_peak(dtype)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; numba "
          f"{numba.get_num_threads()} threads ({numba.config.THREADING_LAYER}); "
          f"load avg {os.getloadavg()[0]:.2f}; {dtype}; overrides {args.set or 'none'}")
    print(f"# measured {dtype} GEMM peak (2048^3): {peak:.1f} GFLOP/s")
    header = f"{'layer':18s} {'GFLOP':>6s} {'torch ms':>8s} {'GF/s':>6s}"
    for n in names:
        header += f" | {n:>9s} ms {'GF/s':>6s} {'%pk':>4s} {'xtorch':>6s}"
    if args.split:
        header += " | lower ms  gemm ms  copy ms"
    print(header)
    ratios: dict[str, list[float]] = {n: [] for n in names}
    firsts: dict[str, float] = {}
    only = args.only.split(",") if args.only else None
    noisy: list[str] = []
    for layer in bench.suite_layers(args.suite, only):
        spec = layer.spec(layer.batch or bench.DEFAULT_BATCH)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(spec.input_shape).astype(dtype)
        w = (rng.standard_normal(spec.weight_shape) / math.sqrt(spec.reduction_length)
             ).astype(dtype)
        b = rng.standard_normal(spec.out_channels).astype(dtype)
        conv_args = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                         groups=layer.groups)
        xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        providers = {"torch": functools.partial(torch.nn.functional.conv2d, xt, wt, bt,
                                                **conv_args)}
        expected = providers["torch"]().numpy()
        gflop = spec.flops() / 1e9
        for n in names:
            if n == "naive" and gflop > args.naive_max_gflop:
                continue
            xa, wa, ba, sp = prepare(x, w, b, **conv_args)
            kern = convlab.kernels.get(n)
            fn = functools.partial(kern.run, xa, wa, ba, sp)
            t0 = time.perf_counter()
            got = fn()
            firsts[n] = max(firsts.get(n, 0.0), time.perf_counter() - t0)
            err = np.max(np.abs(got - expected)) / max(1.0, np.max(np.abs(expected)))
            if not err < 1e-3:
                raise SystemExit(f"{n} is WRONG on {layer.name}: relative error {err:.3g}")
            providers[n] = fn
        if args.split and "im2col" in names:
            stages = im2col_stages(*prepare(x, w, b, **conv_args)[:2], spec)
            for name, fn in zip(("lower", "gemm", "copy"), stages):
                if fn is not None:
                    providers[name] = fn
        # a sample is >= 20 ms of back-to-back calls after one untimed call (which
        # absorbs switching costs: another library's threads still spinning, fresh
        # memory faulted in); a round takes one sample of every provider; rounds
        # during which other processes used more than 10% of the machine are dropped
        # (up to 6x the wanted number of rounds is tried)
        number = {p: max(1, math.ceil(0.02 / _timed(fn))) for p, fn in providers.items()}
        times: dict[str, list[float]] = {p: [] for p in providers}
        clean = tried = 0
        while clean < args.repeats and tried < 6 * args.repeats:
            tried += 1
            before = _cpu_ticks()
            sample = {}
            for p, fn in providers.items():
                if p == "naive" and len(times[p]) >= 2:
                    continue  # naive takes seconds: two samples are enough
                time.sleep(args.pause)
                if p != "naive":
                    fn()
                sample[p] = _timed(fn, number[p])
            if _others_share(before, _cpu_ticks()) <= 0.1 or tried > 5 * args.repeats:
                clean += 1
                for p, t in sample.items():
                    times[p].append(t)
        noisy.append(f"{layer.name}: {clean} of {tried} rounds clean")
        med = {p: float(np.median(t)) for p, t in times.items()}
        line = f"{layer.name:18s} {gflop:6.2f} {med['torch'] * 1e3:8.2f} " \
               f"{gflop / med['torch']:6.1f}"
        for n in names:
            if n not in med:
                line += f" | {'skipped':>12s} {'':>6s} {'':>4s} {'':>6s}"
                continue
            ratios[n].append(med["torch"] / med[n])
            line += (f" | {med[n] * 1e3:12.2f} {gflop / med[n]:6.1f} "
                     f"{100 * gflop / med[n] / peak:4.0f} {med['torch'] / med[n]:6.2f}")
        if args.split and "im2col" in names:
            line += " | " + " ".join(f"{med[p] * 1e3:8.2f}" if p in med else f"{'-':>8s}"
                                     for p in ("lower", "gemm", "copy"))
        print(line, flush=True)
    for n in names:
        if ratios[n]:
            gm = math.exp(sum(math.log(r) for r in ratios[n]) / len(ratios[n]))
            print(f"# {n}: geometric mean of torch time / {n} time = {gm:.2f} over "
                  f"{len(ratios[n])} layers; slowest first call {firsts[n]:.2f} s")
    print(f"# load avg at end {os.getloadavg()[0]:.2f}; " + "; ".join(noisy))


if __name__ == "__main__":
    main()

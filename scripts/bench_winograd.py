"""Time winograd_f2/f4/f6 against torch.nn.functional.conv2d on ResNet 3x3 layers.

A temporary script until the bench harness covers the per-stage split.  Run it alone:

    flock /tmp/convlab-cpu.lock /work/venv/bin/python scripts/bench_winograd.py

For each layer (float32, batch 8, padding 1) it times, round-robin so that load
from elsewhere hits every contender alike, ``repeats`` single calls of

* torch: ``F.conv2d`` with as many threads as Numba;
* ``f<m>``: the kernel with its filter transform cached (what ``Conv2d`` runs);
* ``f<m>+U``: the kernel transforming the filter in every call (what ``conv2d`` runs);
* ``f<m>:in`` / ``f<m>:in+gemm``: the pipeline stopped after the input transform /
  after the GEMMs (``stages=1`` / ``stages=3``), to split the time by stage.

and prints medians, ratios (torch's time / ours), GFLOP/s counted as direct
convolution FLOPs (``ConvSpec.flops``), the stage split and the geometric means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numba
import numpy as np

from convlab import kernels
from convlab.kernels import winograd
from convlab.shapes import ConvSpec

LAYERS = {"64ch@56": (64, 56), "128ch@28": (128, 28), "256ch@14": (256, 14), "512ch@7": (512, 7)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--variants", default="2,4,6")
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--no-split", action="store_true", help="skip the stage split")
    ap.add_argument("--json", help="write the medians here")
    ap.add_argument("--max-foreign", type=float, default=0.05,
                    help="redo a layer (up to 4 times) when other processes used more than "
                         "this fraction of the machine's CPU time while it was timed")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(numba.get_num_threads())
    ms = [int(v) for v in args.variants.split(",")]
    print(f"numba threads {numba.get_num_threads()}, torch threads {torch.get_num_threads()}, "
          f"load average before {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(0)
    results = {}
    for name in args.layers.split(","):
        c, hw = LAYERS[name]
        x = rng.standard_normal((args.batch, c, hw, hw)).astype(np.float32)
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        spec = ConvSpec.from_shapes(x.shape, w.shape, padding=1)
        calls = _contenders(x, w, b, spec, ms, not args.no_split, torch, F)
        torch_call = calls["torch"]
        # correctness first (against torch, float32) and warm-up (JIT compile / cache load)
        ref = torch_call().numpy()
        for m in ms:
            out = calls[f"f{m}"]()
            tol = kernels.get(f"winograd_f{m}").tolerance(spec, np.float32)
            err = np.abs(out - ref).max() / np.abs(ref).max()
            assert err < 2 * tol, (name, m, err, tol)
        for call in calls.values():
            call()
        for _attempt in range(5):
            _wait_until_idle()
            before = _cpu_times()
            samples: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(args.repeats):
                for key, call in calls.items():
                    t0 = time.perf_counter()
                    call()
                    samples[key].append(time.perf_counter() - t0)
            foreign = _foreign_share(before, _cpu_times())
            if foreign <= args.max_foreign:
                break
            print(f"  ({name}: other processes took {foreign:.0%} of the CPU; timing again)")
        med = {k: float(np.median(v)) for k, v in samples.items()}
        results[name] = dict(med=med, flops=spec.flops(), foreign_cpu_share=foreign,
                             plan={m: winograd.plan(spec, m, 4) for m in ms})
        _print_layer(name, spec, med, ms, args.no_split, results[name]["plan"], foreign)
    print(f"\nload average after {os.getloadavg()[0]:.2f}")
    print("geometric mean of torch time / ours over the layers:")
    for m in ms:
        for key in (f"f{m}", f"f{m}+U"):
            ratios = [r["med"]["torch"] / r["med"][key] for r in results.values()]
            print(f"  {key:6s} {math.exp(np.mean(np.log(ratios))):.2f}x   "
                  + " ".join(f"{v:.2f}" for v in ratios))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


def _cpu_times() -> tuple[float, float, float]:
    """(machine busy CPU-seconds, this process's CPU-seconds, wall seconds)."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(ticks) - ticks[3] - ticks[4]) / hz
    own = os.times()
    return busy, own.user + own.system, time.perf_counter()


def _foreign_share(a, b) -> float:
    """Share of the machine's CPU capacity used by other processes between a and b."""
    others = (b[0] - a[0]) - (b[1] - a[1])
    return max(0.0, others) / ((b[2] - a[2]) * os.cpu_count())


def _wait_until_idle(limit_s: float = 600) -> None:
    """Wait (up to limit_s) until the machine is >= 90% idle for 2 s running."""
    end, calm = time.perf_counter() + limit_s, 0
    while time.perf_counter() < end and calm < 2:
        a = _cpu_times()
        time.sleep(1)
        calm = calm + 1 if _foreign_share(a, _cpu_times()) < 0.1 else 0


def _contenders(x, w, b, spec, ms, split, torch, F) -> dict:
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

    def torch_call():
        with torch.no_grad():
            return F.conv2d(tx, tw, tb, 1, 1)

    calls = {"torch": torch_call}
    for m in ms:
        u = winograd.transform_filter(w, 1, m)
        calls[f"f{m}"] = lambda m=m, u=u: winograd.winograd(x, w, b, spec, m, u)
        calls[f"f{m}+U"] = lambda m=m: winograd.winograd(x, w, b, spec, m)
        if split:
            calls[f"f{m}:U"] = lambda m=m: winograd.transform_filter(w, 1, m)
            for stages, tag in ((1, "in"), (3, "in+gemm")):
                calls[f"f{m}:{tag}"] = (lambda m=m, u=u, s=stages:
                                        winograd.winograd(x, w, b, spec, m, u, stages=s))
    return calls


def _print_layer(name, spec, med, ms, no_split, plans, foreign) -> None:
    gf = spec.flops() / 1e9
    t = med["torch"]
    print(f"\n{name}: {spec.describe()}\n  torch   {t * 1e3:7.2f} ms  {gf / t:6.1f} GFLOP/s"
          f"   (other processes' share of the CPU meanwhile: {foreign:.1%})")
    for m in ms:
        for key in (f"f{m}", f"f{m}+U"):
            print(f"  {key:6s}  {med[key] * 1e3:7.2f} ms  {gf / med[key]:6.1f} GFLOP/s  "
                  f"{t / med[key]:5.2f}x torch")
        if not no_split:
            tin, tgemm = med[f"f{m}:in"], med[f"f{m}:in+gemm"]
            total = med[f"f{m}"]
            alpha2 = (m + 2) ** 2
            tiles = spec.batch * math.ceil(spec.out_height / m) * math.ceil(spec.out_width / m)
            gemm_flops = 2 * alpha2 * spec.out_channels * spec.in_channels * tiles
            print(f"          split: filter {med[f'f{m}:U'] * 1e3:.2f} (cached above) | "
                  f"input {tin * 1e3:.2f} | gemm {(tgemm - tin) * 1e3:.2f} "
                  f"({gemm_flops / max(tgemm - tin, 1e-9) / 1e9:.0f} GFLOP/s of GEMM) | "
                  f"output+bias {(total - tgemm) * 1e3:.2f} ms   plan (tb, kb, kper) {plans[m]}")


if __name__ == "__main__":
    main()

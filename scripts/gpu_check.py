"""The one prepared check for a machine with an NVIDIA GPU (issue 6).

    python3 scripts/gpu_check.py            # on the GPU machine: ~2-4 minutes
    NUMBA_ENABLE_CUDASIM=1 python3 scripts/gpu_check.py --sim   # here, tiny shapes

1. correctness: cuda_naive and cuda_tiled against the float64 oracle on random
   specs (ragged edges, stride, dilation, groups, depthwise, 'same', float64);
2. timings of the ResNet 3x3 layers at batch 8 (64@56, 128@28, 256@14, 512@7,
   padding 1), CUDA events, float32: cuda_naive, cuda_tiled (its default tiles
   and a small sweep of others), torch/cuDNN with TF32 off and with torch's
   defaults; a table with the ratios the issue targets
   (tiled >= 0.25x cuDNN fp32 speed, tiled >= 5x naive);
3. everything as JSON in $OUT/gpu_check.json (or --json PATH) when set.

Runs from a plain checkout (it puts the repository on sys.path). Exit status 1
if any result is wrong, 0 otherwise (missed speed targets are reported, not fatal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
import warnings
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from convlab import ConvSpec  # noqa: E402
from convlab.functional import prepare  # noqa: E402
from convlab.kernels import cuda as ck  # noqa: E402
from convlab.kernels import get  # noqa: E402
from convlab.reference import compare, conv2d_reference  # noqa: E402

RESNET = [(64, 56), (128, 28), (256, 14), (512, 7)]
# tiny correctness launches are meant to under-fill the GPU: don't warn about each one
warnings.filterwarnings("ignore", message=".*[Gg]rid size.*")
START = time.perf_counter()
BUDGET = [420.0]  # seconds; the sweep stops early past it so the script ends in time


def _late(share: float = 1.0) -> bool:
    return time.perf_counter() - START > BUDGET[0] * share
TARGET_VS_CUDNN, TARGET_VS_NAIVE = 0.25, 5.0


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    info = {"cuda": ck.status(), "python": platform.python_version(),
            "versions": {p: _version(p) for p in ("numpy", "numba", "numba-cuda", "torch")}}
    try:
        from numba import cuda

        info["numba_cuda_implementation"] = getattr(cuda, "implementation", "?")
        if not ck.is_simulator():
            dev = cuda.get_current_device()
            info["compute_capability"] = list(dev.compute_capability)
            info["multiprocessors"] = dev.MULTIPROCESSOR_COUNT
    except Exception as exc:  # report, don't die: the rest may still run
        info["error"] = repr(exc)
    if ck.torch_cuda_unavailable() is None:
        import torch

        info["torch_device"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def random_specs(rng: np.random.Generator, count: int, small: bool) -> list[dict]:
    """Random specs with every feature; `small` keeps them simulator-sized."""
    cases = []
    for i in range(count):
        groups = [1, 1, 2, 3, 4][i % 5]
        depthwise = i % 7 == 6
        cg = 1 if depthwise else int(rng.integers(1, 4 if small else 40))
        kg = int(rng.integers(1, 4 if small else 70))
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        same = i % 4 == 0
        sh, sw = (1, 1) if same else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dh, dw = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        h = int(rng.integers(dh * (kh - 1) + 1, dh * (kh - 1) + (6 if small else 40)))
        w = int(rng.integers(dw * (kw - 1) + 1, dw * (kw - 1) + (7 if small else 45)))
        n = int(rng.integers(1, 3 if small else 5))
        pad = "same" if same else (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        dtype = np.float64 if i % 3 == 2 else np.float32
        cases.append(dict(x=(n, cg * groups, h, w), w=(kg * groups, cg, kh, kw),
                          args=dict(stride=(sh, sw), padding=pad, dilation=(dh, dw),
                                    groups=groups), dtype=dtype))
    return cases


def correctness(count: int, small: bool, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    results = []
    for case in random_specs(rng, count, small):
        if _late(0.35):  # every case compiles a kernel (~1 s each on a GPU)
            print("  (time budget: stopping correctness early)", flush=True)
            break
        x = rng.standard_normal(case["x"]).astype(case["dtype"])
        w = rng.standard_normal(case["w"]).astype(case["dtype"])
        b = rng.standard_normal(case["w"][0]).astype(case["dtype"])
        xa, wa, ba, spec = prepare(x, w, b, **case["args"])
        expected = conv2d_reference(xa, wa, ba, spec)
        for algo in ("cuda_naive", "cuda_tiled"):
            row = {"algo": algo, "spec": spec.describe(), "dtype": np.dtype(case["dtype"]).name}
            try:
                out = get(algo)(xa, wa, ba, spec)
                report = compare(out, expected, get(algo).tolerance(spec, case["dtype"]))
                row.update(ok=report.ok, max_rel=report.max_rel, detail=str(report))
            except Exception as exc:
                row.update(ok=False, detail=f"{type(exc).__name__}: {exc}")
            results.append(row)
            if not row["ok"]:
                print(f"  WRONG {algo}: {row['detail']} on {row['spec']}", flush=True)
    bad = sum(not r["ok"] for r in results)
    print(f"correctness: {len(results) - bad}/{len(results)} ok", flush=True)
    return results


def sweep_configs(spec: ConvSpec, sms: int, limit: int) -> list[ck.TileConfig]:
    """The default tiles first, then every other register blocking on the same pixel
    tile, then other pixel tiles with the default blocking."""
    default = ck.choose_config(spec, 4, sms)
    kg = spec.out_channels // spec.groups
    # 8x8 per thread: more reuse per shared-memory load, but 162 registers (ptxas,
    # sm_90, no spills) so fewer threads per multiprocessor
    blockings = ((64, 8, 8), (32, 8, 8)) + ck.BLOCKINGS
    candidates = [ck.TileConfig(min(tk, kg), min(rk, tk, kg), default.th, default.tw, rp,
                                default.ck) for tk, rk, rp in blockings]
    candidates += [default._replace(th=th, tw=tw) for th, tw in ((8, 16), (8, 8), (16, 8),
                                                                  (4, 32))]
    configs = [default]
    for cfg in candidates:
        if cfg not in configs and cfg.problem(spec, 4) is None and cfg.threads >= 32:
            configs.append(cfg)
    return configs[:limit]


def timings(layers: list[tuple[int, int, int]], sweep: int, repeats: int) -> list[dict]:
    sms = ck._multiprocessors()
    rows = []
    for batch, c, hw in layers:
        spec = ConvSpec.create((batch, c, hw, hw), c, 3, padding=1)
        rng = np.random.default_rng(c)
        x = rng.standard_normal(spec.input_shape).astype(np.float32)
        w = (rng.standard_normal(spec.weight_shape) / np.sqrt(9 * c)).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        t0 = time.perf_counter()
        expected = conv2d_reference(x, w, b, spec)
        row: dict = {"layer": f"{c}@{hw} N={batch}", "gflop": spec.flops() / 1e9,
                     "oracle_s": time.perf_counter() - t0, "timings": {}, "sweep": []}
        print(f"\n{row['layer']}: {spec.describe()}", flush=True)
        for algo in ("cuda_naive", "cuda_tiled", "torch_fp32", "torch_default"):
            try:
                t = ck.time_on_gpu(algo, x, w, b, spec, repeats=repeats, expected=expected)
                row["timings"][algo] = t.as_dict()
                print(f"  {algo:<14} {t.kernel_ms:9.4f} ms  {t.gflops:9.1f} GFLOP/s  "
                      f"(h2d {t.h2d_ms:.3f} ms, d2h {t.d2h_ms:.3f} ms, first call "
                      f"{t.first_call_s:.2f} s) {t.note}", flush=True)
            except Exception as exc:
                row["timings"][algo] = {"error": f"{type(exc).__name__}: {exc}"}
                row["wrong"] = row.get("wrong", False) or "wrong result" in str(exc)
                print(f"  {algo:<14} FAILED: {type(exc).__name__}: {exc}", flush=True)
        for cfg in sweep_configs(spec, sms, sweep)[1:]:
            if _late():
                print("  (time budget: sweep cut short)", flush=True)
                break
            try:
                t = ck.time_on_gpu("cuda_tiled", x, w, b, spec, repeats=repeats, config=cfg,
                                   expected=expected)
                row["sweep"].append({"config": list(cfg), "kernel_ms": t.kernel_ms,
                                     "gflops": t.gflops, "threads": cfg.threads})
                print(f"  sweep {tuple(cfg)} {cfg.threads:4d} thr  {t.kernel_ms:9.4f} ms  "
                      f"{t.gflops:9.1f} GFLOP/s", flush=True)
            except Exception as exc:
                row["sweep"].append({"config": list(cfg), "error": f"{type(exc).__name__}: "
                                     f"{exc}"})
                row["wrong"] = row.get("wrong", False) or "wrong result" in str(exc)
                print(f"  sweep {tuple(cfg)} FAILED: {exc}", flush=True)
        rows.append(row)
    return rows


def ms(row: dict, algo: str) -> float | None:
    return row["timings"].get(algo, {}).get("kernel_ms")


def table(rows: list[dict]) -> str:
    head = (f"{'layer':<14}{'naive':>10}{'tiled':>10}{'best swp':>10}{'cuDNN32':>10}"
            f"{'torch def':>10}{'tiled/cuDNN32':>15}{'tiled/naive':>13}  (ms; ratios are "
            "speed ratios)")
    lines = [head]
    fmt = lambda v: f"{v:10.4f}" if v else f"{'-':>10}"  # noqa: E731
    for row in rows:
        naive, tiled = ms(row, "cuda_naive"), ms(row, "cuda_tiled")
        fp32, default = ms(row, "torch_fp32"), ms(row, "torch_default")
        swept = [s["kernel_ms"] for s in row["sweep"] if "kernel_ms" in s]
        best = min([tiled] + swept) if tiled else None
        vs_cudnn = fp32 / tiled if fp32 and tiled else None
        vs_naive = naive / tiled if naive and tiled else None
        row["ratios"] = {"tiled_vs_cudnn_fp32": vs_cudnn, "tiled_vs_naive": vs_naive,
                         "best_sweep_vs_cudnn_fp32": fp32 / best if fp32 and best else None}
        mark = lambda v, t: (f"{v:.2f}x " + ("ok" if v >= t else "MISS")) if v else "-"  # noqa: E731
        lines.append(f"{row['layer']:<14}{fmt(naive)}{fmt(tiled)}{fmt(best)}{fmt(fp32)}"
                     f"{fmt(default)}{mark(vs_cudnn, TARGET_VS_CUDNN):>15}"
                     f"{mark(vs_naive, TARGET_VS_NAIVE):>13}")
    lines.append(f"targets: tiled >= {TARGET_VS_CUDNN}x cuDNN float32 (TF32 off) speed, "
                 f">= {TARGET_VS_NAIVE}x cuda_naive; 'best swp' = fastest tile config tried")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim", "--quick", action="store_true", dest="sim",
                        help="tiny shapes (for the CUDA simulator): proves the script runs")
    parser.add_argument("--json", default=None, help="where to write the JSON record "
                        "(default: $OUT/gpu_check.json when $OUT is set)")
    parser.add_argument("--cases", type=int, default=None, help="random correctness specs")
    parser.add_argument("--sweep", type=int, default=None, help="tile configs per layer")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which "
                        "correctness and the sweep stop early (default 420)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    BUDGET[0] = args.budget
    record: dict = {"machine": machine(), "mode": "sim" if args.sim else "gpu"}
    print(json.dumps(record["machine"], indent=1), flush=True)
    why = ck.cuda_unavailable()
    if why is not None:
        print(f"CUDA kernels unavailable: {why}")
        return 2
    if args.sim != ck.is_simulator():
        print("note: --sim and the simulator go together (NUMBA_ENABLE_CUDASIM=1 --sim)")
    failed = False
    try:
        record["correctness"] = correctness(args.cases or (6 if args.sim else 30), args.sim)
        failed = not all(r["ok"] for r in record["correctness"])
    except Exception:
        traceback.print_exc()
        failed = True
    layers = [(1, 4, 7), (2, 8, 5)] if args.sim else [(8, c, hw) for c, hw in RESNET]
    try:
        record["timings"] = timings(layers, args.sweep or (2 if args.sim else 14),
                                    repeats=2 if args.sim else 10)
        print("\n" + table(record["timings"]), flush=True)
        failed = failed or any(row.get("wrong") for row in record["timings"])
        if args.sim:
            print("(simulator: wall-clock times of Python threads, not GPU speed)")
    except Exception:
        traceback.print_exc()
        failed = True
    record["seconds"] = time.perf_counter() - start
    path = args.json or (os.path.join(os.environ["OUT"], "gpu_check.json")
                         if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as fh:
            json.dump(record, fh, indent=1, default=str)
        print(f"wrote {path}")
    print(f"done in {record['seconds']:.0f} s: {'SOME RESULTS WRONG' if failed else 'all correct'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

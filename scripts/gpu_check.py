"""The one prepared check for a machine with an NVIDIA GPU: nothing lost, nothing wasted.

    python3 scripts/gpu_check.py                  # on the GPU machine: about 4-8 minutes
    NUMBA_ENABLE_CUDASIM=1 python3 scripts/gpu_check.py --sim   # here, tiny shapes

A lent GPU comes with little time, so the steps run cheapest first, and the record
(JSON: --json PATH, else $OUT/gpu_check.json when $OUT is set) is rewritten after each
step and after every layer, so a run that is killed keeps what it finished:

0. preflight: driver, NVVM, nvJitLink and numba-cuda versions, then one tiny launch of
   each kernel checked against the oracle; if anything is missing it stops at once,
   with the reason (exit status 2);
1. correctness: ``cuda_naive`` and ``cuda_tiled`` against the float64 oracle on random
   specs (ragged edges, stride, dilation, groups, depthwise, 'same', float64), the tiled
   kernel in the tile configuration ``choose_config`` gives each spec on this GPU;
2. the ResNet 3x3 layers at batch 8 through the benchmark harness
   (``run_benchmark(device="cuda")``: CUDA events, inputs placed once, checked before
   timed): ``cuda_naive``, ``cuda_tiled``, cuDNN with TF32 off and with torch's
   defaults, and a sweep of other tile configurations of ``cuda_tiled``; a table with
   the targets (tiled >= 0.5x cuDNN float32 speed, >= 5x cuda_naive).

``--budget`` (seconds, default 540) keeps the run inside the lease: correctness stops at
a third of it, the sweep is left out of layers that start after three quarters of it,
and no layer starts after all of it.  Exit status: 0 all results right, 1 a convlab
kernel gave a wrong result or crashed, 2 the preflight failed.  Runs from a plain
checkout (it puts the repository on sys.path).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from convlab import bench, kernels  # noqa: E402
from convlab.functional import prepare  # noqa: E402
from convlab.kernels import cuda as ck  # noqa: E402
from convlab.reference import compare, conv2d_reference  # noqa: E402

# tiny correctness launches are meant to under-fill the GPU: don't warn about each one
warnings.filterwarnings("ignore", message=".*[Gg]rid size.*")
TARGET_VS_CUDNN, TARGET_VS_NAIVE = 0.5, 5.0  # the targets set for an H100/H200-class GPU
OURS = ("cuda_naive", "cuda_tiled")


class Run:
    """The record being built, the clock, and where the record goes."""

    def __init__(self, path: str | None, budget: float, sim: bool) -> None:
        self.path, self.budget, self.sim = path, budget, sim
        self.start = time.perf_counter()
        self.record: dict[str, Any] = {"mode": "sim" if sim else "gpu", "complete": False,
                                       "budget_s": budget, "layers": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def late(self, share: float = 1.0) -> bool:
        return self.elapsed() > self.budget * share

    def save(self) -> None:
        """Rewrite the record: to a temporary file first, then renamed over the old one,
        so a kill during the write leaves the previous complete record."""
        self.record["seconds"] = round(self.elapsed(), 1)
        if not self.path:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".gpu_check-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.record, fh, indent=1, default=str)
        os.replace(tmp, self.path)


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # a version we cannot read is reported, not fatal
        return f"unknown ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]})"


def versions() -> dict[str, Any]:
    """Driver, compiler and package versions (what a failed run needs to be understood)."""
    out: dict[str, Any] = {"python": platform.python_version()}
    out.update({p: _version(p) for p in ("numpy", "numba", "numba-cuda", "torch",
                                         "nvidia-cuda-nvcc-cu12", "nvidia-nvjitlink-cu12",
                                         "cuda-bindings")})
    if ck.is_simulator():
        return out
    from numba import cuda
    from numba.cuda.cudadrv import nvvm

    out["driver"] = _try(lambda: ".".join(map(str, cuda.cudadrv.driver.driver.get_version())))
    out["nvvm"] = _try(lambda: ".".join(map(str, nvvm.NVVM().get_version())))
    out["nvvm_ir"] = _try(lambda: ".".join(map(str, nvvm.NVVM().get_ir_version())))

    def nvjitlink() -> str:
        from cuda.bindings import nvjitlink as lib

        return ".".join(map(str, lib.version()))

    out["nvjitlink"] = _try(nvjitlink)
    return out


def preflight(run: Run) -> str | None:
    """Versions, the device, one tiny launch of each kernel.  None if all is well, else
    the reason to stop (also in the record)."""
    rec: dict[str, Any] = {"cuda": ck.status()}
    run.record["preflight"] = rec
    why = ck.cuda_unavailable()
    if why is None and run.sim != ck.is_simulator():
        why = ("--sim runs on the CUDA simulator: set NUMBA_ENABLE_CUDASIM=1 before Python "
               "starts" if run.sim else "the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): "
               "unset it, or pass --sim for the tiny simulator check")
    rec["versions"] = versions() if why is None else {
        p: _version(p) for p in ("numba", "numba-cuda", "nvidia-cuda-nvcc-cu12",
                                 "nvidia-nvjitlink-cu12")}
    if why is None:
        try:
            from numba import cuda

            if not ck.is_simulator():
                dev = cuda.get_current_device()
                rec["device"] = {"name": str(dev.name), "compute_capability":
                                 list(dev.compute_capability),
                                 "multiprocessors": dev.MULTIPROCESSOR_COUNT}
            rng = np.random.default_rng(1)
            x = rng.standard_normal((1, 3, 5, 7)).astype(np.float32)
            w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
            xa, wa, _, spec = prepare(x, w, None, padding=1)
            expected = conv2d_reference(xa, wa, None, spec)
            for algo in OURS:
                t0 = time.perf_counter()
                out = kernels.get(algo)(xa, wa, None, spec)
                report = compare(out, expected, kernels.get(algo).tolerance(spec, np.float32))
                rec[f"{algo}_first_call_s"] = round(time.perf_counter() - t0, 3)
                if not report.ok:
                    why = f"{algo} gave a wrong result on a tiny layer: {report}"
                    break
        except Exception as exc:
            why = f"the tiny launch failed: {type(exc).__name__}: {exc}"
            rec["traceback"] = traceback.format_exc()
    rec["ok"], rec["error"] = why is None, why
    run.save()
    print(f"preflight: {rec['cuda']}")
    print("  " + ", ".join(f"{k} {v}" for k, v in rec["versions"].items() if v))
    if "device" in rec:
        print(f"  device {rec['device']}")
    print("  ok: both kernels compiled, launched and matched the oracle" if why is None
          else f"  STOP: {why}", flush=True)
    return why


def random_specs(rng: np.random.Generator, count: int, small: bool) -> list[dict[str, Any]]:
    """Random specs with every feature; ``small`` keeps them simulator-sized."""
    cases = []
    for i in range(count):
        groups = [1, 1, 2, 3, 4][i % 5]
        depthwise = i % 7 == 6
        cg = 1 if depthwise else int(rng.integers(1, 4 if small else 40))
        # enough output channels, even small, for register blocking (rk > 1) to occur
        kg = int(rng.integers(1, 12 if small else 70))
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        same = i % 4 == 0
        sh, sw = (1, 1) if same else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dh, dw = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        h = int(rng.integers(dh * (kh - 1) + 1, dh * (kh - 1) + (5 if small else 40)))
        w = int(rng.integers(dw * (kw - 1) + 1, dw * (kw - 1) + (6 if small else 45)))
        n = int(rng.integers(1, 3 if small else 5))
        pad = "same" if same else (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        dtype = np.float64 if i % 3 == 2 else np.float32
        cases.append(dict(x=(n, cg * groups, h, w), w=(kg * groups, cg, kh, kw),
                          args=dict(stride=(sh, sw), padding=pad, dilation=(dh, dw),
                                    groups=groups), dtype=dtype))
    return cases


def correctness(run: Run, count: int, seed: int = 0) -> bool:
    """Both kernels on random specs; cuda_tiled in the tiles this GPU would get (on the
    simulator: those of a 132-SM GPU).  True when every result is right."""
    from numba import cuda

    sms = ck._multiprocessors()
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    run.record["correctness"] = rows
    for case in random_specs(rng, count, run.sim):
        if run.late(1 / 3):
            print("  (time budget: correctness stopped early)", flush=True)
            run.record["correctness_cut_short"] = True
            break
        dtype = case["dtype"]
        x = rng.standard_normal(case["x"]).astype(dtype)
        w = rng.standard_normal(case["w"]).astype(dtype)
        b = rng.standard_normal(case["w"][0]).astype(dtype)
        xa, wa, ba, spec = prepare(x, w, b, **case["args"])
        expected = conv2d_reference(xa, wa, ba, spec)
        cfg = ck.choose_config(spec, np.dtype(dtype).itemsize, sms)
        for algo in OURS:
            row: dict[str, Any] = {"algo": algo, "spec": spec.describe(),
                                   "dtype": np.dtype(dtype).name}
            if algo == "cuda_tiled":
                row["config"] = list(cfg)
            try:
                xd, wd, bd = cuda.to_device(xa), cuda.to_device(wa), cuda.to_device(ba)
                if algo == "cuda_naive":
                    out = ck.naive_device(xd, wd, bd, spec)
                else:
                    out = ck.tiled_device(xd, wd, bd, spec, config=cfg)
                report = compare(out.copy_to_host(), expected,
                                 kernels.get(algo).tolerance(spec, dtype))
                row.update(ok=report.ok, max_rel=report.max_rel, detail=str(report))
            except Exception as exc:
                row.update(ok=False, detail=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            if not row["ok"]:
                print(f"  WRONG {algo} {row.get('config', '')}: {row['detail']} on "
                      f"{row['spec']}", flush=True)
        run.save()
    bad = sum(not r["ok"] for r in rows)
    print(f"correctness: {len(rows) - bad}/{len(rows)} right (cuda_tiled in this GPU's "
          f"tiles: {len({tuple(r['config']) for r in rows if 'config' in r})} configs)",
          flush=True)
    return bad == 0


def sweep_configs(spec: Any, sms: int, limit: int) -> list[ck.TileConfig]:
    """Alternatives to the default tiles: one register blocking per accumulator count
    (8x8 = 64 down to 2) on the default pixel tile, then other pixel tiles."""
    default = ck.choose_config(spec, 4, sms)
    kg = spec.out_channels // spec.groups
    per_acc: dict[int, ck.TileConfig] = {}
    for tk, rk, rp in ((64, 8, 8), (32, 8, 8)) + ck.BLOCKINGS:
        tk = min(tk, ck._pow2_at_least(kg, 64))
        cfg = ck.TileConfig(tk, min(rk, tk), default.th, default.tw, rp, default.ck)
        if cfg.rk * cfg.rp not in per_acc and cfg != default and (
                default.th * default.tw) % rp == 0 and 64 <= cfg.threads <= 1024:
            per_acc[cfg.rk * cfg.rp] = cfg
    # the 16-warp rule's tiles (choose_config before the H200 sweep), for before/after
    candidates = [ck.choose_config(spec, 4, sms, fill_warps=16, fill_blocks=0)]
    candidates += list(per_acc.values())
    candidates += [default._replace(th=th, tw=tw) for th, tw in ((8, 16), (8, 8), (16, 8),
                                                                 (4, 32))]
    configs: list[ck.TileConfig] = []
    for cfg in candidates:
        if cfg != default and cfg not in configs and cfg.problem(spec, 4) is None:
            configs.append(cfg)
    return configs[:limit]


def tile_contender(cfg: ck.TileConfig) -> bench.Contender:
    """``cuda_tiled`` in fixed tiles, through the same harness as everything else."""
    kern = kernels.get("cuda_tiled")

    def make(spec: Any, dtype: Any) -> Any:
        return ck._tiled_launch(spec, dtype, config=cfg)

    def supports(spec: Any) -> str | None:
        return cfg.problem(spec, 4)

    swept = dataclasses.replace(kern, name=f"tiled{tuple(cfg)}".replace(" ", ""),
                                place=ck._place(make), supports=supports)
    return bench.kernel_contender(swept, timer=bench.gpu.cuda_timer(),
                                  estimate=bench.gpu.simulator_estimate())


def timings(run: Run, layers: list[bench.Layer], sweep: int, repeats: int | None) -> bool:
    """Each layer through the harness, the record rewritten after each.  True when no
    convlab kernel gave a wrong result or crashed."""
    sms, ok = ck._multiprocessors(), True
    for layer in layers:
        if run.late():
            print(f"(time budget: {layer.name} and later layers not run)", flush=True)
            run.record["layers_cut_short"] = True
            break
        names: list[Any] = [*OURS, *bench.GPU_RIVALS]
        if not run.late(0.75):
            names += [tile_contender(c) for c in sweep_configs(layer.spec(layer.batch or 8),
                                                                  sms, sweep)]
        result = bench.run_benchmark(layers=[layer], kernel_names=names, device="cuda",
                                     repeats=repeats, budget_s=0.2 if run.sim else 0.5,
                                     progress=False)
        run.record["layers"].append(result.to_dict())
        run.save()
        print("\n" + bench.format_table(result), flush=True)
        for r in result.records:
            if r.status in ("wrong", "error") and (r.kernel in OURS or
                                                  r.kernel.startswith("tiled(")):
                ok = False
                print(f"  {r.kernel} on {r.layer}: {r.status.upper()}: {r.reason}", flush=True)
    return ok


def summary(run: Run) -> str:
    """Per layer: the times and the ratios the targets are about."""
    head = (f"{'layer':<12}{'naive':>10}{'tiled':>10}{'best swp':>10}{'cuDNN32':>10}"
            f"{'torch def':>10}{'tiled/cuDNN32':>15}{'tiled/naive':>13}  (ms; ratios are "
            "speed ratios)")
    lines = [head]
    for layer in run.record["layers"]:
        med = {r["kernel"]: r["median_s"] for r in layer["records"]
               if r["status"] == "ok" and r["median_s"]}
        naive, tiled = med.get("cuda_naive"), med.get("cuda_tiled")
        fp32, default = med.get("torch_fp32"), med.get("torch_default")
        swept = [t for k, t in med.items() if k.startswith("tiled(")]
        best = min([tiled, *swept]) if tiled else None
        vs_cudnn = fp32 / tiled if fp32 and tiled else None
        vs_naive = naive / tiled if naive and tiled else None

        def ms(v: float | None) -> str:
            return f"{v * 1e3:10.4f}" if v else f"{'-':>10}"

        def mark(v: float | None, target: float) -> str:
            return (f"{v:.2f}x " + ("ok" if v >= target else "MISS")) if v else "-"

        lines.append(f"{layer['settings']['layers'][0]:<12}{ms(naive)}{ms(tiled)}{ms(best)}"
                     f"{ms(fp32)}{ms(default)}{mark(vs_cudnn, TARGET_VS_CUDNN):>15}"
                     f"{mark(vs_naive, TARGET_VS_NAIVE):>13}")
    lines.append(f"targets: tiled >= {TARGET_VS_CUDNN}x cuDNN float32 (TF32 off) speed, "
                 f">= {TARGET_VS_NAIVE}x cuda_naive; 'best swp' = fastest tiles tried")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sim", action="store_true",
                        help="tiny shapes on the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    parser.add_argument("--json", default=None, help="where to write the record (default: "
                        "$OUT/gpu_check.json when $OUT is set)")
    parser.add_argument("--cases", type=int, default=30, help="random correctness specs")
    parser.add_argument("--sweep", type=int, default=None,
                        help="other tile configs per layer (default 10; 2 with --sim)")
    parser.add_argument("--budget", type=float, default=540.0,
                        help="seconds the whole run may take (default 540)")
    args = parser.parse_args(argv)
    path = args.json or (os.path.join(os.environ["OUT"], "gpu_check.json")
                         if os.environ.get("OUT") else None)
    run = Run(path, args.budget, args.sim)
    why = preflight(run)
    if why is not None:
        return 2
    right = True
    try:
        right = correctness(run, args.cases)
    except Exception:
        traceback.print_exc()
        run.record["correctness_error"] = traceback.format_exc()
        right = False
    run.save()
    layers = list(bench.TOY_SUITES["tiny"]) if args.sim else list(bench.RESNET[:4])
    sweep = args.sweep if args.sweep is not None else (2 if args.sim else 10)
    try:
        right = timings(run, layers, sweep, repeats=1 if args.sim else None) and right
        print("\n" + summary(run), flush=True)
        if args.sim:
            print("(simulator: wall-clock times of Python threads, not GPU speed)")
    except Exception:
        traceback.print_exc()
        run.record["timings_error"] = traceback.format_exc()
        right = False
    run.record["complete"] = True
    run.record["all_right"] = right
    run.save()
    if path:
        print(f"wrote {path}")
    verdict = "all results right" if right else "SOME RESULTS WRONG"
    print(f"done in {run.elapsed():.0f} s: {verdict}")
    return 0 if right else 1


if __name__ == "__main__":
    sys.exit(main())

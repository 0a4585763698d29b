"""The report people read: one block per layer, a GFLOP/s grid, geometric means.

Drawn from a :class:`~convlab.bench.records.BenchResult` (a run, or a saved one), so
the table, the plots and the JSON always say the same thing.  Times are formatted by
:func:`format_time`, shared with the plots.  A run disturbed by other programs says
so in one line at the top (the ceilings disagreed) and at the bottom (timings whose
samples scattered too much are marked ``noisy``), instead of printing numbers
nobody can read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .ceilings import disturbance
from .contenders import RIVAL
from .gpu import CUDNN
from .records import BenchResult, Record
from .timing import NOISY_SPREAD, format_time


def geomean(values: Sequence[float]) -> float:
    """The geometric mean (the right average of speed ratios)."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _on_gpu(result: BenchResult) -> bool:
    return (result.settings.get("device") == "cuda"
            or any(r.device == "cuda" for r in result.records))


def _header(result: BenchResult) -> list[str]:
    c, st = result.calibration, result.settings
    run = (f"run:     {st.get('elapsed_s', '?')} s, batch {st.get('batch') or 'per layer'}, "
           f"repeats {st.get('repeats') or 'adaptive'}; numba cache "
           f"{st.get('numba_cache', '?')}")
    warnings = [f"PARTIAL: {result.partial}"] if result.partial else []
    busy = disturbance(c)
    if busy:
        warnings.append(f"NOTE:    {busy}")
    return warnings + _header_lines(result, c, st, run)


def _header_lines(result: BenchResult, c: dict, st: dict, run: str) -> list[str]:
    if _on_gpu(result):
        gpu = str(result.machine.get("cuda", "?"))
        sim = gpu.startswith("simulator")
        return [f"machine: {result.machine_line()}",
                *(["SIMULATOR: the kernels ran on the CPU, one CUDA thread at a time; these "
                   "times say nothing about a GPU"] if sim else []),
                run,
                "times:   kernel = CUDA events around back-to-back launches on inputs already "
                f"on the GPU (median{'; the wall clock on the simulator' if sim else ''}); "
                "copy in = x, weight, bias to the GPU; copy out = the "
                "output back; first call = the gate's call from NumPy (copies + kernel + "
                "compile on first use)",
                "ratios:  x cudnn = torch_fp32's kernel time (cuDNN float32, TF32 off) / this "
                "one; x naive = cuda_naive's / this one (> 1: faster); spread = half the "
                "interquartile range of the samples, over the median",
                f"GFLOP/s: direct-convolution FLOPs / kernel time; ceilings "
                f"{c.get('peak_what', '?')}", ""]
    return [f"machine: {result.machine_line()}",
            f"peak:    {c['peak_gflops']:.1f} GFLOP/s ({c['peak_what']}); memory "
            f"{c['bandwidth_gbs']:.1f} GB/s ({c['bandwidth_what']})", run,
            "weights: " + ("prepared once per layer (weight_cache: Winograd's filter "
                           "transform not timed)" if st.get("weight_cache") else
                           "raw on every call, as torch.nn.functional.conv2d takes them"),
            *([] if result.machine.get("versions", {}).get("torch") else
              ["torch:   not installed, so no PyTorch comparison (pip install "
               "'convlab[torch]')"]),
            *(["ops:     name-bwd = the backward: grad_input + grad_weight + grad_bias "
               "(torch-bwd: torch.autograd.grad through F.conv2d); name-tr = "
               "conv_transpose2d of an output-shaped array back to the input's shape "
               "(torch-tr: F.conv_transpose2d); ratios compare the same op"]
              if any(r.op != "forward" for r in result.records) else []),
            "ratios:  x torch / x naive = their time / this time (> 1: faster); spread = "
            "half the interquartile range of the samples, over the median",
            "GFLOP/s: direct-convolution FLOPs for every kernel (Winograd does fewer "
            "multiplies, so it can pass 100% of the GEMM peak)", ""]  # fmt: skip


def _spread_text(r: Record) -> str:
    med = r.median_s or 0.0
    spread = ((r.q3_s or med) - (r.q1_s or med)) / med * 50 if med else 0.0
    text = ">±100%" if spread > 100 else "±" + format(spread, ".0f") + "%"
    return text + ("!" if r.noisy else "")


def _row(r: Record, gpu: bool, width: int = 13) -> str:
    if r.status != "ok":
        label = {"wrong": "WRONG", "error": "ERROR"}.get(r.status, r.status)
        return f"  {r.kernel:<{14 if gpu else width}}{label}: {r.reason}"
    spread_txt = _spread_text(r)
    if gpu:
        return (f"  {r.kernel:<14}{format_time(r.first_call_s):>11}{format_time(r.h2d_s):>10}"
                f"{format_time(r.median_s):>10}{format_time(r.d2h_s):>10}{spread_txt:>8}"
                f"{_fmt(r.gflops, '.3g'):>9}{_fmt(r.vs_cudnn, '.3g'):>9}"
                f"{_fmt(r.vs_naive, '.3g'):>9}{_fmt(r.max_rel_err, '.1e'):>9}"
                + (f"  {r.note}" if r.note else ""))
    pct = None if r.peak_fraction is None else 100 * r.peak_fraction
    return (f"  {r.kernel:<{width}}{format_time(r.first_call_s):>11}"
            f"{format_time(r.median_s):>11}"
            f"{spread_txt:>8}{_fmt(r.gflops, '.3g'):>9}"
            f"{_fmt(pct, '.1f'):>8}{_fmt(r.vs_torch, '.3g'):>9}"
            f"{_fmt(r.vs_naive, '.3g'):>9}{_fmt(r.max_rel_err, '.1e'):>9}"
            + (f"  {r.note}" if r.note else ""))


def format_table(result: BenchResult) -> str:
    """The human-readable report: one block per layer, one line per kernel, then a
    GFLOP/s summary (layers x kernels) and geometric means vs torch (on a GPU: vs
    cuDNN in float32, TF32 off)."""
    gpu = _on_gpu(result)
    lines = _header(result)
    width = max([13] + [len(r.kernel) + 1 for r in result.records])  # "parallel-bwd" etc.
    if gpu:
        head = (f"  {'kernel':<14}{'first call':>11}{'copy in':>10}{'kernel':>10}"
                f"{'copy out':>10}{'spread':>8}{'GFLOP/s':>9}{'x cudnn':>9}{'x naive':>9}"
                f"{'rel err':>9}")
    else:
        head = (f"  {'kernel':<{width}}{'first call':>11}{'median':>11}{'spread':>8}"
                f"{'GFLOP/s':>9}{'% peak':>8}{'x torch':>9}{'x naive':>9}{'rel err':>9}")
    by_layer: dict[str, list[Record]] = {}
    for r in result.records:
        by_layer.setdefault(r.layer, []).append(r)
    for layer, recs in by_layer.items():
        r0 = recs[0]
        lines.append(f"{layer}: {r0.layer_desc}, batch {r0.batch}, {r0.flops / 1e9:.3g} GFLOP, "
                     f"{r0.intensity:.1f} FLOP/byte")
        lines.append(head)
        for r in recs:
            lines.append(_row(r, gpu, width))
            if r.stages_s:
                parts = ", ".join(f"{k} {format_time(v)}" for k, v in r.stages_s.items())
                lines.append(f"    {'':<{12}}split: {parts}")
        lines.append("")
    lines.append("GFLOP/s (median; n/a = refused, skip = too slow, WRONG = failed the oracle)")
    names = result.kernels()
    col = max([12] + [len(n) + 1 for n in names])
    width = max([len(n) for n in result.layers()] + [5]) + 2
    lines.append(" " * width + "".join(f"{n:>{col}}" for n in names))
    for layer, recs in by_layer.items():
        cells = []
        for n in names:
            found = next((x for x in recs if x.kernel == n), None)
            if found is None:
                cells.append("")
            elif found.status == "ok":
                cells.append(format(found.gflops, ".3g"))
            else:
                cells.append({"wrong": "WRONG", "error": "ERROR"}.get(found.status, found.status))
        lines.append(f"{layer:<{width}}" + "".join(f"{cell:>{col}}" for cell in cells))
    base, attr, what = (CUDNN, "vs_cudnn", "cuDNN (float32, TF32 off)") if gpu else (
        RIVAL, "vs_torch", "torch")
    means = []
    for n in names:
        ratios = [getattr(r, attr) for r in result.records
                  if r.kernel == n and getattr(r, attr) is not None and n != base]
        if ratios:
            means.append(f"{n} {geomean(ratios):.3g}x ({len(ratios)} layers)")
    if means:
        lines.append("")
        lines.append(f"geometric mean speed vs {what}: " + ", ".join(means))
    noisy = [f"{r.layer}/{r.kernel}" for r in result.records if r.noisy]
    if noisy:
        lines.append("")
        lines.append(f"noisy (marked !): {len(noisy)} timings still scattered by more than "
                     f"±{NOISY_SPREAD:.0%} after re-sampling: other programs were using the "
                     "CPU; rerun on a quiet machine before trusting their ratios "
                     f"({', '.join(noisy[:6])}{', ...' if len(noisy) > 6 else ''})")
    return "\n".join(lines)

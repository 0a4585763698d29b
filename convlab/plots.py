"""Benchmark plots, drawn from saved records: never by timing again.

Every function takes a :class:`convlab.bench.BenchResult` (or the path of the
JSON file :meth:`~convlab.bench.BenchResult.save` wrote), returns a matplotlib
:class:`~matplotlib.figure.Figure` and, given ``path``, saves it there too:

* :func:`gflops_plot`   GFLOP/s per layer, one line per kernel (PyTorch its own
  series), a band for the spread, the measured GEMM peak as a line;
* :func:`ladder_plot`   the speed-up ladder on one layer, python -> ... -> PyTorch,
  each step labelled with its factor over the one before;
* :func:`roofline_plot` achieved GFLOP/s against arithmetic intensity, under the
  measured compute and memory-bandwidth ceilings;
* :func:`compile_plot`  Numba's first call (compile or cache load) vs a warm call;
* :func:`error_plot`    each kernel's error vs the float64 oracle, with its tolerance;
* :func:`crossover_plot` time vs kernel size on a sweep (the ``kernels`` suite), with the
  multiplies each algorithm does drawn beside: where FFT overtakes direct convolution;
* :func:`network_plot`  the network benchmark (``convlab bench --model``): each layer's
  ratio vs torch inside the pass, coloured by the kernel that ran.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so
drawing many of them leaks nothing and needs no GUI backend (PNG output uses
Agg); in Jupyter a returned figure displays inline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .bench import RIVAL, BenchResult, Record, format_time, load
from .kernels import ladder
from .shapes import ConvSpec

DPI = 110
RIVAL_LABEL = "PyTorch conv2d"
_FIXED_COLOURS = {
    "python": "#8c564b", "naive": "#7f7f7f", "parallel": "#2ca02c", "im2col": "#1f77b4",
    "winograd_f2": "#ff7f0e", "winograd_f4": "#d62728", "winograd_f6": "#9467bd",
    "cuda_naive": "#bcbd22", "cuda_tiled": "#17becf", RIVAL: "#000000",
    "fft": "#e6ab02",
}
_SPARE_COLOURS = ["#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]

ResultLike = BenchResult | str | os.PathLike


def _result(result: ResultLike) -> BenchResult:
    return result if isinstance(result, BenchResult) else load(result)


def colour(kernel: str, known: Sequence[str] = ()) -> str:
    """A kernel's colour, the same in every plot."""
    if kernel in _FIXED_COLOURS:
        return _FIXED_COLOURS[kernel]
    others = [k for k in known if k not in _FIXED_COLOURS] or [kernel]
    index = others.index(kernel) if kernel in others else len(others)
    return _SPARE_COLOURS[index % len(_SPARE_COLOURS)]


def _label(kernel: str) -> str:
    return RIVAL_LABEL if kernel == RIVAL else kernel


def _order(names: Sequence[str]) -> list[str]:
    """Ladder order (``Kernel.ladder``) first, then other kernels, PyTorch last."""
    rank = {n: i for i, n in enumerate(ladder())}
    return sorted(names, key=lambda n: (n == RIVAL, rank.get(n, len(rank)), n))


def _footnote(fig: Figure, result: BenchResult, extra: str = "") -> None:
    text = f"measured on {result.machine_line()}"
    if extra:
        text += "\n" + extra
    fig.text(0.01, 0.005, text, fontsize=7, color="#555555", ha="left", va="bottom",
             wrap=True)


def _finish(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        save(fig, path)
    return fig


def save(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Save ``fig`` (format from the suffix) with convlab's modest default dpi."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _ok(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r.status == "ok" and r.median_s]


def _known(value: float | None, what: str) -> float:
    """A measurement every record a plot draws has (its filter kept only those): typed."""
    if value is None:
        raise ValueError(f"a record drawn here has no {what}")
    return value


def _number(v: float) -> str:
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


_plain = FuncFormatter(lambda v, _: _number(v) if v > 0 else "0")


# --------------------------------------------------------------------------- GFLOP/s
def gflops_plot(result: ResultLike, path: str | os.PathLike | None = None, *,
                kernels: Sequence[str] | None = None, log: bool | None = None,
                title: str | None = None) -> Figure:
    """GFLOP/s per layer, one line per kernel, the measured peak as a horizontal line.

    The band around each line spans the interquartile range of the timing samples.
    Missing points were refused (n/a), skipped as too slow, or wrong: the table says which.
    """
    res = _result(result)
    layers = res.layers()
    names = _order(kernels or res.kernels())
    fig = Figure(figsize=(max(9.5, 5.5 + 0.6 * len(layers)), 5.4))
    ax = fig.add_subplot()
    xs = np.arange(len(layers))
    values: list[float] = []
    for name in names:
        recs = [res.get(layer, name) for layer in layers]
        timed = [r if r is not None and r.status == "ok" and r.gflops else None for r in recs]
        if not any(timed):
            continue
        # NaN where a kernel has no time: the line breaks there instead of bridging the gap
        y = np.array([r.gflops if r else np.nan for r in timed])
        lo = np.array([(r.gflops_at(r.q3_s) or r.gflops) if r else np.nan for r in timed])
        hi = np.array([(r.gflops_at(r.q1_s) or r.gflops) if r else np.nan for r in timed])
        c = colour(name, names)
        rival = name == RIVAL
        ax.plot(xs, y, marker="o", ms=5, lw=2.4 if rival else 1.6, ls="--" if rival else "-",
                color=c, label=_label(name), zorder=3 if rival else 2)
        ax.fill_between(xs, lo, hi, color=c, alpha=0.18, lw=0)
        values += [v for v in y if np.isfinite(v)]
    peak = res.calibration.get("peak_gflops")
    if peak:
        what = res.calibration.get("peak_what", "GEMM")
        ax.axhline(peak, color="#b22222", ls=":", lw=1.5,
                   label=f"measured peak {peak:.0f} GFLOP/s\n({what})")
        values.append(peak)
    if log is None:
        log = bool(values) and max(values) / max(min(values), 1e-12) > 30
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_plain)
    else:
        ax.set_ylim(bottom=0)
    firsts = [next(r for r in res.records if r.layer == layer) for layer in layers]
    batches = [r.batch for r in firsts]
    usual = max(set(batches), key=batches.count)
    ax.set_xticks(xs, [f"{r.layer}\n{r.layer_desc}" + (f", N={r.batch}" if r.batch != usual
                                                        else "") for r in firsts],
                  rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_ylabel("GFLOP/s (direct-convolution FLOPs / median time)")
    ax.set_xlabel("layer (name, kernel in->out channels @ input size)", fontsize=9)
    ax.set_title(title or f"Convolution throughput per layer ({res.settings.get('dtype')}, "
                          f"batch {usual})")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    _footnote(fig, res, "bands: interquartile range of the timing samples; missing points: "
                        "refused, skipped as too slow, or wrong (see the table); Winograd does "
                        "fewer multiplies than the direct FLOPs it is credited with, so it can "
                        "pass the peak")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _finish(fig, path)


# --------------------------------------------------------------------------- ladder
def ladder_layer(result: ResultLike) -> str:
    """The layer with the most ladder rungs measured (the first such, in suite order)."""
    res = _result(result)
    rungs = [*ladder(), RIVAL]
    best, count = None, -1
    for layer in res.layers():
        n = sum(1 for k in rungs if (r := res.get(layer, k)) is not None and r.status == "ok")
        if n > count:
            best, count = layer, n
    if best is None:
        raise ValueError("no records to draw a ladder from")
    return best


def ladder_plot(result: ResultLike, layer: str | None = None,
                path: str | os.PathLike | None = None) -> Figure:
    """The speed-up ladder on one layer: each rung's GFLOP/s (log), each step labelled
    with its speed-up over the rung before.  Rungs not measured are skipped and named."""
    res = _result(result)
    layer = layer or ladder_layer(res)
    ladder_rungs = ladder()
    rungs = [k for k in ladder_rungs if k in res.kernels()] + [
        k for k in res.kernels() if k not in ladder_rungs and k != RIVAL]
    rungs.append(RIVAL)
    shown: list[Record] = []
    missing: list[str] = []
    for k in rungs:
        r = res.get(layer, k)
        if r is not None and r.status == "ok" and r.median_s:
            shown.append(r)
        elif r is not None:
            missing.append(f"{k} ({r.status})")
    if not shown:
        raise ValueError(f"no kernel was timed on layer {layer!r}")
    fig = Figure(figsize=(9, 5.2))
    ax = fig.add_subplot()
    names = [r.kernel for r in shown]
    ys = [r.gflops or 0.0 for r in shown]
    xs = np.arange(len(shown))
    ax.bar(xs, ys, color=[colour(n, names) for n in names], width=0.62, zorder=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_plain)
    for i, r in enumerate(shown):
        ax.annotate(_time_label(r.median_s), (i, ys[i]), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
        if i:  # the step from the previous rung, in a row of boxes above the bars
            factor = _known(shown[i - 1].median_s, "time") / _known(r.median_s, "time")
            # a slower step reads "÷N", not "×0.0N"
            text = f"×{_number(factor)}" if factor >= 1 else f"÷{_number(1 / factor)}"
            ax.annotate(text, (i - 0.5, 0.93), xycoords=("data", "axes fraction"),
                        ha="center", va="center", fontsize=9, fontweight="bold",
                        color="#222222" if factor >= 1 else "#b22222",
                        bbox=dict(boxstyle="round,pad=0.2", fc="#fff8dc", ec="#999999", lw=0.6))
    peak = res.calibration.get("peak_gflops")
    top = max(ys + ([peak] if peak else []))
    if peak:
        ax.axhline(peak, color="#b22222", ls=":", lw=1.5)
        ax.annotate(f"measured peak {peak:.0f} GFLOP/s", (len(shown) - 0.5, peak),
                    xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom",
                    fontsize=8, color="#b22222")
    low = min(y for y in ys if y > 0) / 3
    ax.set_ylim(low, top * (top / low) ** 0.25)  # headroom (in log space) for the boxes
    ax.set_xticks(xs, [_label(n) for n in names], rotation=15)
    ax.set_ylabel("GFLOP/s (log scale)")
    ax.set_xlabel("kernel, in the order of the optimisation ladder")
    r0 = shown[0]
    ax.set_title(f"The speed-up ladder on '{layer}' ({r0.layer_desc}, batch {r0.batch}, "
                 f"{r0.dtype})\nlabels: time per call; boxes: speed-up over the step before "
                 "(÷: a slow-down)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3, zorder=0)
    extra = "not on this layer: " + ", ".join(missing) if missing else ""
    _footnote(fig, res, extra)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _finish(fig, path)


def _time_label(s: float | None) -> str:
    return format_time(s, missing="", micro="µs")


# --------------------------------------------------------------------------- roofline
def roofline_plot(result: ResultLike, path: str | os.PathLike | None = None) -> Figure:
    """Achieved GFLOP/s vs arithmetic intensity, under the measured ceilings.

    Intensity is FLOPs per *compulsory* byte (input, weight and output moved once,
    :meth:`ConvSpec.arithmetic_intensity`): an upper bound; a kernel that moves more
    (im2col's column matrix) has a lower real intensity.
    """
    res = _result(result)
    ok = _ok(res.records)
    if not ok:
        raise ValueError("no timed records to draw a roofline from")
    peak = res.calibration["peak_gflops"]
    bw = res.calibration["bandwidth_gbs"]
    fig = Figure(figsize=(10.5, 5.6))
    ax = fig.add_subplot()
    xs_all = [r.intensity for r in ok]
    x0, x1 = min(xs_all + [peak / bw]) / 3, max(xs_all + [peak / bw]) * 3
    grid = np.geomspace(x0, x1, 200)
    ax.plot(grid, np.minimum(peak, bw * grid), color="#b22222", lw=2,
            label=f"ceiling: min({peak:.0f} GFLOP/s, {bw:.1f} GB/s × intensity)")
    ax.axvline(peak / bw, color="#b22222", lw=0.6, ls=":")
    ax.annotate(f"ridge {peak / bw:.1f} FLOP/B", (peak / bw, peak), xytext=(4, -12),
                textcoords="offset points", fontsize=7, color="#b22222")
    names = _order(list(dict.fromkeys(r.kernel for r in ok)))
    for name in names:
        pts = [r for r in ok if r.kernel == name]
        # a record without GFLOP/s is a NaN: not drawn (as matplotlib draws a None)
        ax.scatter([r.intensity for r in pts],
                   [math.nan if r.gflops is None else r.gflops for r in pts],
                   s=42 if name == RIVAL else 30, marker="s" if name == RIVAL else "o",
                   color=colour(name, names), edgecolor="white", lw=0.5, label=_label(name),
                   zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(_plain)
    ax.yaxis.set_major_formatter(_plain)
    ymin = min(r.gflops for r in ok if r.gflops) / 3
    ax.set_ylim(ymin, peak * 2.5)
    ax.set_xlim(x0, x1)
    groups: list[tuple[float, list[str]]] = []  # layers of (nearly) equal intensity share a label
    for r in sorted(ok, key=lambda r: r.intensity):
        if groups and r.intensity < groups[-1][0] * 1.04:
            if r.layer not in groups[-1][1]:
                groups[-1][1].append(r.layer)
        else:
            groups.append((r.intensity, [r.layer]))
    for x, layers in groups:
        ax.annotate(", ".join(layers), (x, ymin), xytext=(2, 4), textcoords="offset points",
                    rotation=90, fontsize=6.5, color="#666666", va="bottom")
    ax.set_xlabel("arithmetic intensity (FLOP per compulsory byte moved)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title(f"Roofline: every timed (layer, kernel) under the measured ceilings "
                 f"({res.settings.get('dtype')})", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    _footnote(fig, res, f"compute ceiling: {res.calibration.get('peak_what')}; memory "
                        f"ceiling: {res.calibration.get('bandwidth_what')}; Winograd is "
                        "credited with direct FLOPs, so it can sit above the ceiling")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _finish(fig, path)


# --------------------------------------------------------------------------- compile
def compile_plot(result: ResultLike, path: str | os.PathLike | None = None) -> Figure:
    """Per kernel: its first call in the process (Numba compiles, or loads compiled
    code from disk, then runs) next to a warm call of the same size (median)."""
    res = _result(result)
    firsts = [r for r in _ok(res.records) if r.first_use and r.first_call_s is not None]
    if not firsts:
        raise ValueError("no first-call records to draw compile times from")
    order = _order([r.kernel for r in firsts])
    firsts.sort(key=lambda r: order.index(r.kernel))
    fig = Figure(figsize=(9, 2.1 + 0.55 * len(firsts)))
    ax = fig.add_subplot()
    ys = np.arange(len(firsts))
    h = 0.38
    first = [max(r.first_call_s or 0.0, 1e-7) for r in firsts]
    # the first call ran at the gate's batch: compare it with a warm call of that size
    warm = [max((r.median_s or 0.0) * (r.gate_batch or r.batch) / r.batch, 1e-7)
            for r in firsts]
    ax.barh(ys - h / 2, first, h, color="#d62728", alpha=0.85,
            label="first call in the process (compile or cache load + run)")
    ax.barh(ys + h / 2, warm, h, color="#1f77b4", alpha=0.85,
            label="warm call, same size (median)")
    for y, f, w in zip(ys, first, warm, strict=True):
        for v, dy in ((f, -h / 2), (w, h / 2)):
            ax.annotate(_time_label(v), (v, y + dy), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7.5)
    ax.set_xscale("log")
    ax.set_yticks(ys, [f"{_label(r.kernel)}\n({r.layer}, batch {r.gate_batch or r.batch})"
                       for r in firsts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(min(first + warm) / 3, max(first + warm) * 8)
    ax.set_xlabel("seconds per call (log scale)")
    ax.set_ylabel("kernel (its first layer, batch)")
    ax.set_title("Compile time vs run time: each kernel's first call vs a warm call",
                 fontsize=10)
    ax.grid(True, axis="x", which="major", alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right")
    cache = res.settings.get("numba_cache", "")
    _footnote(fig, res, f"Numba cache: {cache}" if cache else "")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _finish(fig, path)


# --------------------------------------------------------------------------- error
ERROR_FLOOR = 1e-12


def error_plot(result: ResultLike, path: str | os.PathLike | None = None) -> Figure:
    """Each kernel's error vs the float64 oracle on every layer it was checked on
    (max |out - oracle| / max |oracle|), with the tolerance it had to meet."""
    res = _result(result)
    checked = [r for r in res.records if r.max_rel_err is not None]
    if not checked:
        raise ValueError("no correctness-gate records to draw errors from")
    names = _order(list(dict.fromkeys(r.kernel for r in checked)))
    fig = Figure(figsize=(9, 5))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only: the same picture every time
    for i, name in enumerate(names):
        pts = [r for r in checked if r.kernel == name]
        jit = rng.uniform(-0.18, 0.18, len(pts))
        errs = np.array([max(e, ERROR_FLOOR) if math.isfinite(e) else 1.0
                         for e in (_known(r.max_rel_err, "error") for r in pts)])
        good = np.array([r.status != "wrong" for r in pts])
        c = colour(name, names)
        ax.scatter(i + jit[good], errs[good], color=c, s=26, zorder=3, edgecolor="white", lw=0.4)
        if (~good).any():
            ax.scatter(i + jit[~good], errs[~good], color="red", marker="x", s=50, zorder=4,
                       label="failed the gate" if not ax.get_legend_handles_labels()[0] else None)
        tols = np.array([r.tolerance or np.nan for r in pts])
        ax.hlines(tols, i + jit - 0.09, i + jit + 0.09, color="#333333", lw=1.2, zorder=2)
    ax.plot([], [], color="#333333", lw=1.2, label="tolerance (scaled with C·kh·kw)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [_label(n) for n in names], rotation=15)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("max |out − oracle| / max |oracle|")
    ax.set_xlabel("kernel")
    dtype = res.settings.get("dtype")
    ax.set_title(f"Numerical error vs the float64 oracle ({dtype} inputs, one point per layer)",
                 fontsize=10)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _footnote(fig, res, f"errors below {ERROR_FLOOR:g} drawn at {ERROR_FLOOR:g}; checked at "
                        "the gate's batch (smaller for big layers)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _finish(fig, path)


# --------------------------------------------------------------------------- crossover
def sweep_specs(result: ResultLike) -> dict[str, ConvSpec]:
    """Each layer's :class:`ConvSpec` (at its recorded batch), rebuilt from the run's
    settings: the records keep the arguments every layer was built from."""
    from .bench import Layer

    res = _result(result)
    args = res.settings.get("layer_args", {})
    specs = {}
    for layer in res.layers():
        if layer not in args:
            raise ValueError(f"the records do not say how layer {layer!r} was built")
        a = dict(args[layer])
        a["size"] = tuple(a["size"])
        batch = next(r.batch for r in res.records if r.layer == layer)
        specs[layer] = Layer(**a).spec(batch)
    return specs


def algorithm_multiplies(spec: ConvSpec, algo: str) -> int | None:
    """Real multiplies ``algo`` does for ``spec`` (None where it cannot run it): direct
    convolution's N K (C/g) kh kw Ho Wo; Winograd F(m x m, 3 x 3)'s (m+2)^2 per output
    tile and (c, k) pair; FFT's products plus transforms (:func:`convlab.kernels.fft.
    multiplies`); each kernel's own ``Kernel.multiplies``."""
    from .kernels import get

    kern = get(algo)
    if kern.supports(spec) is not None:
        return None
    return spec.macs() if kern.multiplies is None else kern.multiplies(spec)


def crossover(result: ResultLike, challenger: str = "fft") -> int | None:
    """The smallest kernel size from which ``challenger`` was the fastest convlab kernel
    on every larger layer of the sweep (PyTorch not counted), or None."""
    res = _result(result)
    specs = sweep_specs(res)
    ours = [k for k in res.kernels() if k != RIVAL]
    start = None
    for layer in sorted(specs, key=lambda la: specs[la].kernel_size):
        times = {k: r.median_s for k in ours
                 if (r := res.get(layer, k)) is not None and r.status == "ok" and r.median_s}
        if challenger in times and min(times, key=times.get) == challenger:  # type: ignore[arg-type]
            start = specs[layer].kernel_size[0] if start is None else start
        else:
            start = None
    return start


def crossover_plot(result: ResultLike, path: str | os.PathLike | None = None, *,
                   kernels: Sequence[str] | None = None) -> Figure:
    """Left: median time per call vs kernel size, one line per kernel (band: interquartile
    range), PyTorch dashed.  Right: the multiplies each algorithm does on the same layers
    (direct convolution, Winograd F(4,3) where it applies, FFT's products and transforms).
    Drawn from a sweep whose layers differ in kernel size (``convlab bench --suite
    kernels``)."""
    from .kernels import fft

    res = _result(result)
    specs = sweep_specs(res)
    sizes = [s.kernel_size[0] for s in specs.values()]
    if len(set(sizes)) != len(sizes) or len(sizes) < 2:
        raise ValueError("a crossover plot needs layers that differ in kernel size "
                         "(convlab bench --suite kernels)")
    layers = sorted(specs, key=lambda la: specs[la].kernel_size[0])
    ks = [specs[la].kernel_size[0] for la in layers]
    names = _order(kernels or res.kernels())
    fig = Figure(figsize=(12.5, 5.2))
    ax, bx = fig.subplots(1, 2)
    for name in names:
        pts = [(k, r) for k, la in zip(ks, layers, strict=True)
               if (r := res.get(la, name)) is not None and r.status == "ok" and r.median_s]
        if not pts:
            continue
        x = [k for k, _ in pts]
        c = colour(name, names)
        rival = name == RIVAL
        medians = [_known(r.median_s, "time") for _, r in pts]
        ax.plot(x, [m * 1e3 for m in medians], marker="o", ms=5, color=c,
                lw=2.4 if rival else 1.7, ls="--" if rival else "-", label=_label(name))
        ax.fill_between(x, [(r.q1_s or m) * 1e3 for (_, r), m in zip(pts, medians)],
                        [(r.q3_s or m) * 1e3 for (_, r), m in zip(pts, medians)], color=c,
                        alpha=0.18, lw=0)
    start = crossover(res)
    if start is not None:
        ax.axvline(start, color="#666666", lw=1, ls=":")
        ax.annotate(f"fft fastest convlab kernel\nfrom k = {start} on", (start, 0.97),
                    xycoords=("data", "axes fraction"), xytext=(4, 0),
                    textcoords="offset points", va="top", fontsize=8, color="#444444")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_plain)
    ax.set_xticks(ks)
    ax.set_xlabel("kernel size k (k x k, 'same' padding)")
    ax.set_ylabel("median time per call (ms, log scale)")
    first = specs[layers[0]]
    ax.set_title(f"Time vs kernel size: {first.in_channels}->{first.out_channels} @"
                 f"{first.height}x{first.width}, batch {first.batch}, "
                 f"{res.settings.get('dtype')}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")
    # per curve: multiplies per layer (None: the algorithm cannot run it), colour, line style
    counts: dict[str, tuple[Sequence[int | None], str, str]] = {
        "direct (parallel, im2col)": ([specs[la].macs() for la in layers], "#1f77b4", "-"),
        "Winograd F(4,3)": ([algorithm_multiplies(specs[la], "winograd_f4")
                             for la in layers], colour("winograd_f4"), "-"),
        "FFT products": ([fft.multiplies(specs[la])["products"] for la in layers],
                         colour("fft"), "--"),
        "FFT products + transforms": ([algorithm_multiplies(specs[la], "fft")
                                       for la in layers], colour("fft"), "-"),
    }
    for label, (values, c, ls) in counts.items():
        curve = [(k, v / 1e9) for k, v in zip(ks, values, strict=True) if v is not None]
        if curve:
            bx.plot(*zip(*curve, strict=True), marker="s", ms=4, color=c, ls=ls, label=label)
    bx.set_yscale("log")
    bx.yaxis.set_major_formatter(_plain)
    bx.set_xticks(ks)
    bx.set_xlabel("kernel size k")
    bx.set_ylabel("real multiplies per call (billions, log scale)")
    bx.set_title("The work each algorithm does on the same layers", fontsize=10)
    bx.grid(True, which="both", alpha=0.25)
    bx.legend(fontsize=8, loc="upper left")
    _footnote(fig, res, "bands: interquartile range; FFT counts use its planned tiles "
                        "(4 real multiplies per complex product, P log2 P per real transform "
                        "of P points); direct convolution: N K C kh kw Ho Wo")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _finish(fig, path)


PLOTS = {
    "gflops": gflops_plot,
    "ladder": ladder_plot,
    "roofline": roofline_plot,
    "compile": compile_plot,
    "error": error_plot,
}


# --------------------------------------------------------------------------- networks
def network_plot(result: Any, path: str | os.PathLike | None = None) -> Figure:
    """The network benchmark (:mod:`convlab.bench.network`): one panel per network and
    op, one bar per layer (convlab's speed ratio vs torch's same layer inside the pass,
    log scale, coloured by the kernel ``auto`` ran), the whole pass's ratio in the title.

    ``result``: a :class:`convlab.bench.network.NetworkResult` or its JSON file."""
    from .bench import network as netbench

    res = result if isinstance(result, netbench.NetworkResult) else netbench.load(result)
    panels = [r for r in res.networks() if r.op != "step"]
    fig = Figure(figsize=(11, 2.2 + 3.2 * max(1, len(panels))))
    kernels = sorted({r.kernel for r in res.rows if r.scope == "layer" and r.kernel})
    for k, net in enumerate(panels):
        ax = fig.add_subplot(max(1, len(panels)), 1, k + 1)
        rows = res.layers(net.network, net.op)
        xs = np.arange(len(rows))
        ratios = [r.vs_torch or np.nan for r in rows]
        ax.bar(xs, ratios, color=[colour(r.kernel.split("+")[0], kernels) for r in rows],
               width=0.8)
        ax.axhline(1.0, color="black", lw=1, ls="--")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_plain)
        ax.set_xticks(xs, [r.layer.split(".", 2)[-1] for r in rows], rotation=60,
                      ha="right", fontsize=6)
        ax.set_ylabel("vs torch (x)")
        what = (f"{net.vs_torch:.2f}x torch ({format_time(net.convlab_s)} vs "
                f"{format_time(net.torch_s)} per pass)" if net.status == "ok"
                else "WRONG: not timed")
        ax.set_title(f"{net.network} {net.op}, batch {net.batch}: {what}", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    seen = {r.kernel.split("+")[0] for r in res.rows if r.scope == "layer" and r.kernel}
    handles = [_patch(colour(k, kernels), k) for k in sorted(seen)]
    if handles:
        fig.legend(handles=handles, fontsize=8, loc="upper right", title="kernel (auto)")
    s = res.settings
    fig.text(0.01, 0.005, f"measured on {res.machine.get('cpu', '?')}, {s.get('threads')} "
             f"threads, import order {s.get('import_order')}, {s.get('passes')} passes "
             f"(median); bars: each layer timed inside the pass", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 0.9, 1))
    return _finish(fig, path)


def _patch(c: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=c, label=label)

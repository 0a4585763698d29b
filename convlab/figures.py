"""``convlab figures``: every figure the README and notebooks show, from one command.

1. Runs the benchmark once, in a fresh process with an empty Numba cache (so the
   compile-time figure shows real compiles), and saves its records as
   ``bench.json`` / ``bench.csv`` in the output folder.
2. Draws the benchmark plots from those saved records (:mod:`convlab.plots`).
3. Runs the ``kernels`` sweep (one layer, k = 3 .. 15) the same way, saved as
   ``bench_kernels.json``, and draws the algorithm crossover from it (with ``--from``,
   the ``bench_kernels.json`` beside the given file is used if there is one).
4. Draws the conv-arithmetic pictures with :mod:`convlab.viz` when that module
   exists (imported lazily; if it is missing, or lacks a function, the picture is
   skipped with a printed note rather than failing the rest).
4. Draws the traced CUDA pictures of :func:`convlab.cuda_viz.example_figures` (a
   small layer on the CUDA simulator; no GPU needed).

The committed ``figures/`` folder is this command's output; ``bench.json`` in it
says on which machine the numbers were measured.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import bench, plots

DPI = plots.DPI
# The full run lets naive take a few seconds per call, so the ResNet ladder has its rung.
FULL_BENCH_ARGS = ["--suite", "all", "--max-call", "4"]
QUICK_BENCH_ARGS = ["--suite", "quick"]
RESNET_LADDER = ("res_64x56", "res_128x28", "res_256x14", "res_512x7")


def _resnet_ladder(result: bench.BenchResult, path: Path) -> Any:
    layer = next((la for la in RESNET_LADDER if la in result.layers()), None)
    if layer is None:
        raise ValueError("no ResNet 3x3 layer in these records")
    return plots.ladder_plot(result, layer=layer, path=path)


# file name -> (what it shows, plot function of the saved records)
BENCH_FIGURES: dict[str, tuple[str, Callable[..., Any]]] = {
    "bench_gflops.png": ("GFLOP/s per layer per kernel, PyTorch and the measured peak",
                         plots.gflops_plot),
    "bench_ladder.png": ("the speed-up ladder on the seed layer, python -> PyTorch",
                         plots.ladder_plot),
    "bench_ladder_resnet.png": ("the speed-up ladder on a ResNet 3x3 layer",
                                _resnet_ladder),
    "bench_roofline.png": ("roofline: achieved GFLOP/s vs arithmetic intensity",
                           plots.roofline_plot),
    "bench_compile.png": ("first call (JIT compile) vs warm call per kernel",
                          plots.compile_plot),
    "bench_error.png": ("error vs the float64 oracle per kernel", plots.error_plot),
}


# The algorithm crossover (time vs kernel size): the contenders of the target, one
# run of the kernels sweep.  --quick measures three kernel sizes.
SWEEP_JSON = "bench_kernels.json"
SWEEP_BENCH_ARGS = ["--suite", "kernels", "--kernels", "parallel,im2col,winograd_f4,fft,torch"]
QUICK_SWEEP_ARGS = [*SWEEP_BENCH_ARGS, "--layers", "k3_64x56,k7_64x56,k15_64x56"]
SWEEP_FIGURES: dict[str, tuple[str, Callable[..., Any]]] = {
    "crossover.png": ("time vs kernel size (the kernels suite) beside the multiplies each "
                      "algorithm does: where FFT overtakes direct convolution",
                      plots.crossover_plot),
}


def build_sweep(out_dir: Path, *, quick: bool = False,
                source: str | os.PathLike | None = None,
                log: Callable[[str], None] = print) -> list[Path]:
    """The crossover figure: benchmark the kernels sweep in a fresh process (or, given
    ``source``, use the ``bench_kernels.json`` beside it) and draw from its records."""
    json_path = out_dir / SWEEP_JSON
    if source is not None:
        sibling = Path(source).with_name(SWEEP_JSON)
        if not sibling.is_file():
            log(f"note: {', '.join(SWEEP_FIGURES)} skipped: no {SWEEP_JSON} beside {source}")
            return []
        if sibling.resolve() != json_path.resolve():
            bench.load(sibling).save(json_path)
    else:
        argv = [*(QUICK_SWEEP_ARGS if quick else SWEEP_BENCH_ARGS), "--out", str(json_path)]
        log(f"running: convlab bench {' '.join(argv)}  (fresh process)")
        if bench.run_in_fresh_process(argv, cold_cache=False) != 0:
            raise RuntimeError("the kernels sweep benchmark failed")
    written = [json_path, json_path.with_suffix(".csv")]
    for name, (what, draw) in SWEEP_FIGURES.items():
        try:
            draw(json_path, path=out_dir / name)
        except ValueError as exc:
            log(f"note: {name} skipped: {exc}")
            continue
        written.append(out_dir / name)
        log(f"wrote {out_dir / name}  ({what})")
    return written


def _viz_figures() -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(file name, what it shows, draw(viz) -> Figure or FuncAnimation).

    The hook for :mod:`convlab.viz`: a picture whose function viz lacks is skipped
    with a note, so this list may run ahead of (or behind) viz.py.
    """
    return [
        ("arith_no_padding.png", "3x3 kernel over a 5x5 input, no padding, stride 1",
         lambda v: v.draw_conv(v.grid_spec(5, 3), (0, 0))),
        ("arith_same_padding.png", "3x3 kernel, padding 1 ('same'): output = input size",
         lambda v: v.draw_conv(v.grid_spec(5, 3, padding=1), (0, 0))),
        ("arith_stride2.png", "3x3 kernel, stride 2, padding 1 (the next step dashed)",
         lambda v: v.draw_conv(v.grid_spec(5, 3, stride=2, padding=1), (0, 0))),
        ("arith_dilation2.png", "3x3 kernel with dilation 2 over a 7x7 input",
         lambda v: v.draw_conv(v.grid_spec(7, 3, dilation=2), (0, 0))),
        ("arith_frames.png", "numbered frames of the sliding window (4x5 input, padding 1)",
         lambda v: v.draw_frames(v.grid_spec((4, 5), 3, padding=1), max_frames=12)),
        ("arith_receptive_field.png", "the inputs that feed output (1, 2): stride 2, pad 1",
         lambda v: v.draw_receptive_field(v.grid_spec((6, 7), 3, stride=2, padding=1), 1, 2)[0]),
        ("arith_slide.gif", "animation of the window sliding (4x4 input, padding 1)",
         lambda v: v.animate_conv(v.grid_spec(4, 3, padding=1))),
        ("im2col.png", "im2col: each window becomes one column of the lowered matrix",
         lambda v: v.draw_im2col(v.grid_spec((3, 4), 2, padding=1, in_channels=2))),
        ("winograd_tiles.png", "Winograd F(2x2,3x3): overlapping 4x4 input tiles",
         lambda v: v.draw_winograd_tiles(v.grid_spec((6, 7), 3, padding=1), 2)),
        ("groups.png", "groups as channel connections: groups = 1, 2, 4 (depthwise)",
         lambda v: v.draw_groups(4, 4, (1, 2, 4))),
        ("backward_output_gradient.png", "the gradient of one output: the kernel on the "
         "window it read (stride 2, padding 1)",
         lambda v: v.draw_output_gradient(v.grid_spec((5, 6), 3, stride=2, padding=1), 1, 2)),
        ("backward_grad_input.png", "grad_input: zeros inserted into grad_output for stride "
         "2, the flipped kernel, stride 1",
         lambda v: v.draw_grad_input(v.grid_spec((5, 6), 3, stride=2, padding=1), (2, 3))),
        ("backward_grad_weight.png", "grad_weight: the input cells one tap read, times "
         "grad_output",
         lambda v: v.draw_grad_weight(v.grid_spec((5, 6), 3, stride=2, padding=1), 0, 1)),
        ("transposed_stride2.png", "transposed convolution: 3x3 input, 3x3 kernel, stride 2 "
         "-> 7x7 (conv_arithmetic's 'no padding, strides, transposed')",
         lambda v: v.draw_transposed(_transposed((1, 3, 3), 3, stride=2), (1, 1))),
        ("transposed_pad_outpad.png", "transposed convolution: 3x3 input, stride 2, padding "
         "1, output_padding 1 -> 6x6",
         lambda v: v.draw_transposed(_transposed((1, 3, 3), 3, stride=2, padding=1,
                                                 output_padding=1), (2, 3))),
        ("fft_circular.png", "circular vs linear correlation: DFTs of 10 wrap the last 2 "
         "outputs, zero-padded ones do not", lambda v: v.draw_circular_vs_linear(*_signal())),
        ("fft_overlap_save.png", "overlap-save: 6x6 transforms of a 7x9 input, 3x3 kernel",
         lambda v: v.draw_fft_tiles(v.grid_spec((7, 9), 3, padding=1), 6, "save")),
        ("fft_overlap_add.png", "overlap-add, the dual: disjoint blocks, outputs added",
         lambda v: v.draw_fft_tiles(v.grid_spec((7, 9), 3, padding=1), 6, "add")),
    ]


def _transposed(input_shape: tuple[int, ...], kernel_size: int, **kwargs: Any) -> Any:
    from .shapes import TransposedSpec

    return TransposedSpec.create(input_shape, 1, kernel_size, **kwargs)


def _signal() -> tuple[Any, Any]:
    """A fixed random signal (10 samples) and 3-tap filter for the circular picture."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal(10), rng.standard_normal(3)


def _save_any(obj: Any, path: Path, viz: Any) -> None:
    if hasattr(obj, "savefig"):
        obj.savefig(path, dpi=DPI)
    elif hasattr(viz, "save_gif"):
        viz.save_gif(obj, path)
    else:  # an animation, and no helper to write it
        obj.save(str(path), writer="pillow", fps=2)


def build_viz(out_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """The conv-arithmetic pictures, if :mod:`convlab.viz` is importable."""
    try:
        viz = importlib.import_module("convlab.viz")
    except ImportError as exc:
        log(f"note: convlab.viz not importable ({exc}); conv-arithmetic pictures skipped")
        return []
    written = []
    for name, what, draw in _viz_figures():
        try:
            obj = draw(viz)
        except AttributeError as exc:
            log(f"note: {name} skipped: convlab.viz has no {exc.name or exc}")
            continue
        path = out_dir / name
        _save_any(obj, path, viz)
        written.append(path)
        log(f"wrote {path}  ({what})")
    return written


def build_cuda(out_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """The traced CUDA pictures (:func:`convlab.cuda_viz.example_figures`)."""
    from .cuda_viz import example_figures

    written = []
    for name, (what, draw) in example_figures().items():
        path = Path(out_dir) / name
        draw().savefig(path, dpi=DPI)
        written.append(path)
        log(f"wrote {path}  ({what})")
    return written


def build_bench_plots(result: bench.BenchResult | str | os.PathLike, out_dir: Path,
                      log: Callable[[str], None] = print) -> list[Path]:
    """The benchmark plots from saved records (no timing)."""
    res = result if isinstance(result, bench.BenchResult) else bench.load(result)
    written = []
    for name, (what, draw) in BENCH_FIGURES.items():
        try:
            draw(res, path=out_dir / name)
        except ValueError as exc:  # e.g. nothing timed: say so, draw the rest
            log(f"note: {name} skipped: {exc}")
            continue
        written.append(out_dir / name)
        log(f"wrote {out_dir / name}  ({what})")
    return written


def build(out_dir: str | os.PathLike = "figures", *, quick: bool = False,
          source: str | os.PathLike | None = None, bench_args: list[str] | None = None,
          viz: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """Rebuild every figure into ``out_dir``; returns the files written.

    ``source``: an existing bench JSON to draw from instead of benchmarking (it is
    saved again as ``out_dir/bench.json``).  Otherwise the ``quick`` or ``all`` suite is
    run (plus ``bench_args``) in a fresh process with a cold Numba cache.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    if source is not None:
        bench.load(source).save(json_path)  # JSON and the CSV beside it
    else:
        argv = [*(QUICK_BENCH_ARGS if quick else FULL_BENCH_ARGS), "--out", str(json_path),
                *(bench_args or [])]
        log(f"running: convlab bench {' '.join(argv)}  (fresh process, cold Numba cache)")
        rc = bench.run_in_fresh_process(argv)
        if rc != 0:
            raise RuntimeError(f"the benchmark exited with status {rc}")
    written = [json_path, json_path.with_suffix(".csv")]
    written += build_bench_plots(json_path, out, log)
    written += build_sweep(out, quick=quick, source=source, log=log)
    if viz:
        written += build_viz(out, log) + build_cuda(out, log)
    written.append(write_index(out, written, bench.load(json_path), quick))
    return written


def write_index(out: Path, written: list[Path], result: bench.BenchResult,
                quick: bool = False) -> Path:
    """``README.md`` in the figures folder: what each file shows, and where the numbers
    were measured (so a reader of the README can tell whose machine it was)."""
    what = {name: desc for name, (desc, _) in BENCH_FIGURES.items()}
    what |= {name: desc for name, desc, _ in _viz_figures()}
    from .cuda_viz import example_figures

    what |= {name: desc for name, (desc, _) in example_figures().items()}
    what |= {"bench.json": "the benchmark records every plot is drawn from",
             "bench.csv": "the same records, one row per (layer, kernel)"}
    what |= {name: desc for name, (desc, _) in SWEEP_FIGURES.items()}
    what |= {SWEEP_JSON: "the kernels sweep's records (the crossover figure)",
             "bench_kernels.csv": "the same records, one row per (layer, kernel)"}
    c, st = result.calibration, result.settings
    lines = [
        "# figures/",
        "",
        "Generated by `convlab figures" + (" --quick" if quick else "") + "`; do not edit by "
        "hand, run the command again.",
        "",
        f"Benchmark: suite `{st.get('suite')}`, measured on "
        f"{result.machine_line()}.",
        f"Measured ceilings in the same run: {c['peak_gflops']:.0f} GFLOP/s "
        f"({c.get('peak_what')}), {c['bandwidth_gbs']:.1f} GB/s ({c.get('bandwidth_what')}). "
        f"Numba cache: {st.get('numba_cache', '?')}.",
        "",
        "| file | what it shows |",
        "|---|---|",
    ]
    lines += [f"| [{p.name}]({p.name}) | {what.get(p.name, '')} |" for p in written]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path

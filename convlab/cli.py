"""The ``convlab`` command.

    convlab shape --input 64,5,10,12 --out-channels 2 --kernel-size 3 --padding same
    convlab shape --transposed --input 1,4,5,5 --out-channels 2 --kernel-size 3 --stride 2
    convlab info [--cuda-static]
    convlab bench --suite quick --kernels naive,im2col --out r.json --plot r.png
    convlab bench --backward --suite resnet --layers res_64x56,res_128x28
    convlab bench --device cuda --suite resnet
    convlab bench --model resnet18 --train --out net.json --plot net.png
    convlab tune --suite resnet            (then --show, --clear)
    convlab figures [--out DIR] [--quick]
    convlab release notebooks/exercises/source --out handout
    convlab grade submissions/ --out grades.csv --jobs 2
    convlab explore

Bad arguments print one line saying what was wrong and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_args import names, plot_path, positive_float, positive_int
from .cli_bench import add_parsers
from .errors import UsageError, usage
from .shapes import ConvSpec, TransposedSpec


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 3 or 3,5; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected integers like 3 or 3,5; got {text!r}")
    return values


def _int_or_pair(text: str) -> int | tuple[int, ...]:
    values = _ints(text)
    return values[0] if len(values) == 1 else values


def _padding(text: str) -> int | str | tuple[int, ...]:
    try:
        return _int_or_pair(text)
    except argparse.ArgumentTypeError:
        return text  # 'same', 'valid', or a bad string ConvSpec will name


def _cmd_shape_transposed(args: argparse.Namespace) -> int:
    if args.padding_mode != "zeros":
        raise UsageError('Only "zeros" padding mode is supported for ConvTranspose2d')
    with usage():  # torch's words for a bad convolution: one line, exit 2
        spec = TransposedSpec.create(args.input, args.out_channels, args.kernel_size,
                                     args.stride, args.padding, args.output_padding,
                                     args.groups, args.dilation)
    bias = not args.no_bias
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel_size, spec.stride, spec.padding
    (dh, dw), (oh, ow) = spec.dilation, spec.output_padding
    print(f"input            {spec.input_shape}")
    print(f"output           {spec.output_shape}")
    print(f"  height         ({spec.height}-1)*{sh} - 2*{ph} + {dh}*({kh}-1) + {oh} + 1 = "
          f"{spec.out_height}")
    print(f"  width          ({spec.width}-1)*{sw} - 2*{pw} + {dw}*({kw}-1) + {ow} + 1 = "
          f"{spec.out_width}")
    print(f"weight           {spec.weight_shape}   (in, out/groups, kh, kw)")
    print(f"bias             {spec.bias_shape if bias else None}")
    print(f"parameters       {spec.parameter_count(bias):,}")
    print(f"FLOPs            {spec.flops():,}   (2 x multiply-adds, bias not counted)")
    fwd = spec.forward_spec()
    print(f"is the gradient  of conv2d {fwd.input_shape} -> {fwd.output_shape} with the same "
          "weight, stride, padding, dilation, groups")
    if fwd.output_shape != spec.batched_output_shape[:1] + spec.input_shape[-3:]:
        print("                 (output_padding >= stride: that convolution's output has "
              f"{fwd.out_height - spec.height} extra row(s), {fwd.out_width - spec.width} extra "
              "column(s), which this input leaves at zero)")
    return 0


def _cmd_shape(args: argparse.Namespace) -> int:
    if args.transposed:
        return _cmd_shape_transposed(args)
    if args.output_padding != 0:
        raise UsageError("--output-padding is for transposed convolutions: add --transposed")
    with usage():  # torch's words for a bad convolution: one line, exit 2
        spec = ConvSpec.create(args.input, args.out_channels, args.kernel_size, args.stride,
                               args.padding, args.dilation, args.groups, args.padding_mode)
    top, bottom, left, right = spec.padding
    bias = not args.no_bias
    print(f"input            {spec.input_shape}")
    print(f"output           {spec.output_shape}")
    print(f"padding applied  top={top} bottom={bottom} left={left} right={right}"
          + (f"  ({spec.padding_mode})" if spec.padding_mode != "zeros" else ""))
    print(f"weight           {spec.weight_shape}   (out, in/groups, kh, kw)")
    print(f"bias             {spec.bias_shape if bias else None}")
    print(f"parameters       {spec.parameter_count(bias):,}")
    print(f"FLOPs            {spec.flops():,}   (2 x multiply-adds, bias not counted)")
    print(f"MACs per output  {spec.reduction_length:,}   (C/groups x kh x kw)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    if args.cuda_static:
        return _cuda_static()
    from . import kernels
    from .system import describe

    info = describe()
    print(f"convlab {info['versions']['convlab']}  python {info['python']}  "
          f"({info['platform']})")
    print(f"cpu              {info['cpu']}, {info['cores']} cores")
    from .threads import THREADSAFE_LAYERS

    layer = info["threading_layer"]
    print(f"numba threads    {info['numba_threads']} (threading layer: {layer}; "
          + ("calls from several Python threads run in parallel)" if layer in THREADSAFE_LAYERS
             else "calls from several Python threads take turns: this layer is not "
                  "thread-safe)"))
    from ._blas_threads import describe as blas_threads

    print(f"blas threads     {blas_threads()}")
    print("versions         " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()
                                         if v and k != "convlab"))
    missing = [k for k, v in info["versions"].items() if not v]
    if missing:
        print(f"not installed    {', '.join(missing)}")
    print(f"cuda             {info['cuda']}")
    for op in ("forward", "grad_input", "grad_weight"):
        print("kernels:" if op == "forward" else f"{op} kernels (the backward):")
        for name, kern in kernels.kernels_for(op).items():
            why = kern.available()
            state = "available" if why is None else f"unavailable: {why}"
            print(f"  {name:<13} {kern.device:<5} {kern.description}  [{state}]")
    return 0


def _cuda_static() -> int:
    """``convlab info --cuda-static``: registers, spills and occupancy of every CUDA kernel
    variant, from NVIDIA's compiler without a GPU (convlab.cuda_static)."""
    from .cuda_static import format_static_report, static_report, toolchain_missing

    why = toolchain_missing()
    if why is not None:
        print(f"convlab info --cuda-static: needs the CUDA compiler: {why}", file=sys.stderr)
        return 2
    print(format_static_report(static_report()))
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from . import figures

    if args.source is not None and not Path(args.source).is_file():
        raise UsageError(f"--from {args.source!r}: no such file")
    try:
        written = figures.build(args.out, quick=args.quick, source=args.source,
                                viz=not args.no_viz)
    except RuntimeError as exc:
        print(f"convlab figures: {exc}", file=sys.stderr)
        return 1
    print(f"{len(written)} files in {args.out}/")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from .release import release

    targets, differ = release(args.sources, args.out, check=args.check)
    if args.check:
        for path in differ:
            print(f"differs from its teacher version: {path}")
        print(f"{len(targets) - len(differ)} of {len(targets)} student notebooks in "
              f"{args.out}/ match their teacher versions")
        return 1 if differ else 0
    print(f"{len(targets)} student notebooks in {args.out}/ ({len(differ)} changed)")
    return 0


def _size(text: str) -> int:
    """Bytes from '1GiB', '1G', '512M', '1500MB' or a plain number (K, M, G are powers
    of 1024)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size like 1GiB, 512M or 2000000000; "
                                         f"got {text!r}")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def _cmd_grade(args: argparse.Namespace) -> int:
    from . import grading
    from .grading import report

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise UsageError(f"--out {args.out!r}: the grades file must end in .csv")
    if not out.resolve().parent.is_dir():
        raise UsageError(f"cannot write --out {args.out!r}: its folder does not exist")
    stem = out.with_suffix("")
    feedback = Path(args.feedback) if args.feedback else Path(f"{stem}_feedback")
    summary = Path(f"{stem}_summary.md")
    plot = plot_path(args.plot) if args.plot else Path(f"{stem}.png")
    limits = grading.Limits(timeout_s=args.timeout, memory_bytes=args.memory,
                            disk_bytes=args.disk)

    def progress(task, rows, seconds: float) -> None:
        if args.progress:
            counts = ", ".join(f"{sum(r.result == h for r in rows)} {h}"
                               for h in grading.RESULTS if any(r.result == h for r in rows))
            print(f"graded {task.student}: {task.notebook} ({counts or 'no checks'}; "
                  f"{seconds:.1f} s)", file=sys.stderr, flush=True)

    try:
        rows = grading.grade(args.submissions, limits=limits, jobs=args.jobs,
                             scheduler=args.scheduler, exercises=args.exercises,
                             progress=progress, sandbox=args.sandbox)
    except (RuntimeError, OSError) as exc:
        print(f"convlab grade: {exc}", file=sys.stderr)
        return 1
    report.write_csv(rows, out)
    written = report.write_feedback(rows, feedback)
    table = report.summary_table(rows)
    summary.write_text(table + "\n", encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    report.plot_summary(rows, plot)
    print(table)
    print(f"\ngrades in {out}, feedback for {len(written)} students in {feedback}/, "
          f"summary in {summary}, histograms in {plot}")
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    from .explore import serve

    size = args.size if len(args.size) == 2 else args.size * 2
    if len(size) != 2 or min(size) < 1:
        raise UsageError(f"--size: expected H,W (at least 1), got {args.size}")
    try:
        return serve(size, port=args.port, open_browser=args.browser)
    except RuntimeError as exc:
        print(f"convlab explore: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convlab", description="convlab: a 2-D convolution kernel lab")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    shape = sub.add_parser("shape", help="output shape, padding, parameters and FLOPs of a "
                                         "convolution")
    shape.add_argument("--input", required=True, type=_ints, metavar="N,C,H,W",
                       help="input shape: N,C,H,W (batched) or C,H,W (unbatched)")
    shape.add_argument("--out-channels", required=True, type=int)
    shape.add_argument("--kernel-size", required=True, type=_int_or_pair, metavar="K|KH,KW")
    shape.add_argument("--stride", default=1, type=_int_or_pair, metavar="S|SH,SW")
    shape.add_argument("--padding", default=0, type=_padding, metavar="P|PH,PW|same|valid")
    shape.add_argument("--dilation", default=1, type=_int_or_pair, metavar="D|DH,DW")
    shape.add_argument("--groups", default=1, type=int)
    shape.add_argument("--padding-mode", default="zeros",
                       choices=["zeros", "reflect", "replicate", "circular"])
    shape.add_argument("--no-bias", action="store_true", help="a layer without bias")
    shape.add_argument("--transposed", action="store_true",
                       help="a transposed convolution (ConvTranspose2d): --input is its input")
    shape.add_argument("--output-padding", default=0, type=_int_or_pair, metavar="P|PH,PW",
                       help="extra rows/columns on one side of a transposed output (< stride "
                            "or < dilation; with --transposed)")
    shape.set_defaults(func=_cmd_shape)

    info = sub.add_parser("info", help="versions, CPU, threads and which kernels run here")
    info.add_argument("--cuda-static", action="store_true",
                      help="instead: registers, spills, shared memory, blocks and warps per "
                           "multiprocessor and waves of every CUDA kernel variant on a T4 "
                           "(sm_75), A100 (sm_80) and H100 (sm_90), from NVIDIA's compiler; "
                           "no GPU needed (pip install 'convlab[cuda]')")
    info.set_defaults(func=_cmd_info)

    add_parsers(sub)  # bench, tune: convlab/cli_bench.py

    figs = sub.add_parser("figures", help="rebuild every figure of the README and notebooks")
    figs.add_argument("--out", default="figures", metavar="DIR",
                      help="output folder (default ./figures)")
    figs.add_argument("--quick", action="store_true", help="benchmark the quick suite only")
    figs.add_argument("--from", dest="source", metavar="BENCH.json",
                      help="draw from saved records instead of benchmarking")
    figs.add_argument("--no-viz", action="store_true", help="skip the conv-arithmetic pictures")
    figs.set_defaults(func=_cmd_figures)

    rel = sub.add_parser(
        "release", help="write the student versions of teacher exercise notebooks "
                        "(solutions and hidden tests stripped, as nbgrader does)",
        description="Write the student version of each teacher notebook: every region "
                    "between '### BEGIN SOLUTION' and '### END SOLUTION' becomes "
                    "nbgrader's stub, '### BEGIN/END HIDDEN TESTS' regions are removed, "
                    "outputs cleared, graded cells locked. The teacher notebooks stay "
                    "nbgrader source notebooks as they are.")
    rel.add_argument("sources", nargs="+", metavar="SOURCE",
                     help="teacher notebooks, or folders of them (e.g. "
                          "notebooks/exercises/source)")
    rel.add_argument("--out", required=True, metavar="DIR",
                     help="where the student notebooks go (same file names)")
    rel.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 if a student notebook in --out differs "
                          "from what its teacher version gives")
    rel.set_defaults(func=_cmd_release)

    from .grading import ISOLATION

    grade = sub.add_parser(
        "grade", help="run every student's exercise notebooks and collect the checks' "
                      "verdicts (CSV, feedback per student, summary, histograms)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run each submitted exercise notebook top to bottom in a fresh kernel "
                    "and collect every check's verdict: correct, incorrect, not attempted, "
                    "error or timed out.\n\nSUBMISSIONS: folders holding one notebook per "
                    "student (named by the file) or one folder per student (named by the "
                    "folder, all its notebooks), or single notebooks.\n\n" + ISOLATION)
    grade.add_argument("submissions", nargs="+", metavar="SUBMISSIONS",
                       help="folders of submissions, or notebooks")
    grade.add_argument("--out", required=True, metavar="GRADES.csv",
                       help="the grades: student, exercise, result, message, notebook; "
                            "beside it GRADES_feedback/ (one markdown file per student), "
                            "GRADES_summary.md and GRADES.png (histograms)")
    grade.add_argument("--feedback", metavar="DIR",
                       help="where the feedback files go (default GRADES_feedback)")
    grade.add_argument("--plot", metavar="FILE.png",
                       help="the histograms (default GRADES.png)")
    grade.add_argument("--timeout", type=positive_float, default=300.0, metavar="SECONDS",
                       help="wall-clock limit per notebook, first cell to last (default 300)")
    grade.add_argument("--memory", type=_size, default=1 << 30, metavar="SIZE",
                       help="memory a notebook's kernel may allocate (its data segment, "
                            "Python and Numba included, about 400 MiB of it; default 1GiB)")
    grade.add_argument("--disk", type=_size, default=256 << 20, metavar="SIZE",
                       help="in the sandbox, the size of each of its writable folders (the "
                            "submission's copy, the home, /tmp: each a tmpfs, in memory; "
                            "default 256MiB)")
    grade.add_argument("--jobs", type=positive_int, default=1,
                       help="notebooks run at once on this machine (each kernel gets 2 Numba "
                            "threads; default 1)")
    grade.add_argument("--scheduler", metavar="ADDRESS",
                       help="hand the notebooks to this Dask distributed scheduler (e.g. "
                            "tcp://10.0.0.5:8786) instead of running them here; needs "
                            "convlab[grade] installed on every worker")
    grade.add_argument("--exercises", type=names, metavar="NAME,...",
                       help="the exercises to grade (default: every exercise some "
                            "notebook checks); one a student's notebooks never check is "
                            "'not attempted'")
    grade.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no line per graded notebook on stderr")
    grade.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                       help="run the notebooks without a sandbox where Linux namespaces "
                            "are not available (isolation only: a notebook can read and "
                            "write your files); verdicts are still decided outside it")
    grade.set_defaults(func=_cmd_grade)

    explore = sub.add_parser(
        "explore", help="the conv-arithmetic explorer as a page of its own, to project in "
                        "class (served by Voila until Ctrl-C)")
    explore.add_argument("--size", type=_ints, default=(5, 7), metavar="H,W",
                         help="the input's height and width at the start (default 5,7)")
    explore.add_argument("--port", type=positive_int, metavar="PORT",
                         help="serve on this port of 127.0.0.1 (default: a free one)")
    explore.add_argument("--no-browser", dest="browser", action="store_false",
                         help="do not open a browser; just print the address")
    explore.set_defaults(func=_cmd_explore)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # to re-run the command
    try:
        return args.func(args)
    except UsageError as exc:
        # a bad argument: one line, the usage-error status (anything else is a bug in
        # convlab and shows its traceback: convlab.errors)
        print(f"convlab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

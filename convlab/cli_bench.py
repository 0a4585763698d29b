"""The timing commands of ``convlab``: ``convlab bench`` (layer suites, ``--backward``,
``--device cuda``, whole networks with ``--model``) and ``convlab tune`` (the per-machine
winners ``algo="auto"`` follows).  convlab/cli.py builds the parser and dispatches here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .cli_args import (
    fraction,
    names,
    nonnegative_float,
    plot_path,
    positive_float,
    positive_int,
    suite,
    suite_help,
)
from .errors import UsageError, usage


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.model is not None:
        return _cmd_bench_model(args)
    for flag in ("train", "import_order", "passes", "quick"):
        if getattr(args, flag):
            raise UsageError(f"--{flag.replace('_', '-')} only goes with --model")
    # everything that can fail is checked now, not after a long run: where the results
    # go, the kernel names, the suite, a GPU when one is asked for
    if args.out:
        try:
            bench.check_writable(args.out)
        except ValueError as exc:
            raise UsageError(f"--out: {exc}") from None
    plot = plot_path(args.plot) if args.plot else None
    ops = ("forward", "backward", "transpose") if args.backward else ("forward",)
    if args.backward and args.device != "cpu":
        raise UsageError("--backward runs on the CPU only (there are no CUDA backward kernels)")
    with usage():  # an unknown kernel name
        names = bench.resolve_kernels(args.kernels, args.device, not args.no_torch, ops)
    bench.check_device(args.device, names)
    if args.suite is None:  # the CUDA simulator takes ~1 s per toy layer: only toys fit it
        from .kernels.cuda import is_simulator

        args.suite = "tiny" if args.device == "cuda" and is_simulator() else "quick"
    bench.suite_layers(args.suite, args.layers)
    if args.cold_cache and os.environ.get(bench.COLD_CACHE_ENV) != "1":
        return bench.run_in_fresh_process([a for a in args.argv if a != "--cold-cache"])

    def save(result: bench.BenchResult) -> None:  # after every layer: a kill loses one layer
        if args.out:
            result.save(args.out)

    try:
        result = bench.run_benchmark(
            args.suite, args.kernels, only_layers=args.layers, batch=args.batch,
            dtype=args.dtype, repeats=args.repeats, max_call_s=args.max_call,
            budget_s=args.budget, device=args.device, rival=not args.no_torch,
            progress=not args.no_progress, weight_cache=args.weight_cache, split=args.split,
            settle=bench.DEFAULT_SETTLE if args.settle is None else args.settle,
            drop_busy=args.drop_busy, on_layer=save, ops=ops)
    except bench.BenchmarkInterrupted as stop:
        result = stop.result
        if result.records:
            print(bench.format_table(result))
        if args.out:
            json_path, csv_path = result.save(args.out)
            print(f"\ninterrupted: the {len(result.layers())} finished layers are saved in "
                  f"{json_path} and {csv_path} (marked partial)", file=sys.stderr)
        else:
            print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        return 130
    print(bench.format_table(result))
    if args.out:
        json_path, csv_path = result.save(args.out)
        print(f"\nsaved {json_path} and {csv_path}")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        from . import plots

        plots.gflops_plot(result, path=plot)
        print(f"plot written to {plot}")
    return 0


def _cmd_bench_model(args: argparse.Namespace) -> int:
    """``convlab bench --model``: the network benchmark (convlab/bench/network.py), run in
    a fresh process that imports NumPy and torch in the order asked for."""
    from .bench import models, network, torch_available
    from .bench.records import output_paths

    with usage("--model: "):
        names = models.model_names(args.model)
    clash = [f"--{flag.replace('_', '-')}" for flag in
             ("suite", "layers", "kernels", "repeats", "backward", "split", "weight_cache",
              "cold_cache", "no_torch", "drop_busy", "settle")
             if getattr(args, flag) not in (None, False)]
    if clash or args.device != "cpu" or args.dtype != "float32":
        raise UsageError(f"--model runs whole networks on the CPU in float32 against torch; "
                         f"it does not take {', '.join(clash) or '--device/--dtype'}")
    if not torch_available():
        raise UsageError("--model compares with torch, which is not installed; "
                         "pip install 'convlab[torch]'")
    if args.out:
        from .bench import check_writable

        try:
            check_writable(args.out)
        except ValueError as exc:
            raise UsageError(f"--out: {exc}") from None
    plot = plot_path(args.plot) if args.plot else None
    out = args.out
    if plot is not None and not out:  # the plot is drawn from the saved record
        out = str(Path(tempfile.mkdtemp(prefix="convlab-network-")) / "network.json")
    options = {"models": names, "quick": args.quick, "batch": args.batch,
               "passes": args.passes or network.DEFAULT_PASSES, "train": args.train,
               "progress": not args.no_progress, "out": out}
    status = network.run_in_child(options, args.import_order or "numpy-first")
    saved = output_paths(out)[0] if out else None
    if plot is not None and saved is not None and saved.exists():
        import matplotlib

        matplotlib.use("Agg")
        from .plots import network_plot

        network_plot(saved, path=plot)
        print(f"plot written to {plot}")
    return status


def cmd_tune(args: argparse.Namespace) -> int:
    from . import bench, kernels, tuning
    from .bench import format_time
    from .functional import kernel_spec

    cache = tuning.default_cache()
    if args.clear:
        print(f"forgot {cache.clear()} measurements ({cache.path})")
        return 0
    if args.show:
        entries = cache.entries()
        print(f"{len(entries)} measurements in {cache.path}")
        for key, entry in sorted(entries.items(), key=lambda kv: kv[1].get("date", "")):
            k = json.loads(key)
            times = entry.get("times", {})
            best = times.get(entry.get("winner"))
            how = k.get("op") or ("Conv2d" if k.get("weight_cache") else "conv2d")
            print(f"  {entry.get('date', '?')[:16]}  spec {k['spec']} {k['dtype']}, "
                  f"{k['threads']} threads, {how}: {entry.get('winner')} {format_time(best)}"
                  + ("" if k["kernels"] == tuning.kernel_set() else
                     "  (stale: another convlab version or kernel set)"))
        return 0
    from tqdm.auto import tqdm

    layers = bench.suite_layers(args.suite, args.layers)
    rows = []
    grads: list[tuple[str, list[tuple[str, tuning.Tuned, str]]]] = []
    for layer in tqdm(layers, desc="tuning", unit="layer", disable=None if args.progress
                      else True, leave=False):
        spec = kernel_spec(layer.spec(args.batch or layer.batch or bench.DEFAULT_BATCH))
        rule = kernels.choose(spec).kernel.name
        # one measurement, two winners: as Conv2d runs a layer and as conv2d does
        module = tuning.tune(spec, args.dtype, cache=cache, force=args.force,
                             repeats=args.repeats, cached=True)
        functional = tuning.lookup(spec, args.dtype, cache, cached=False)
        rows.append((layer.name, module, functional, rule))
        if args.backward:  # each backward op's kernels, measured alone
            grads.append((layer.name, [(op, tuning.tune(
                spec, args.dtype, cache=cache, force=args.force, repeats=args.repeats, op=op),
                kernels.choose(spec, op=op).kernel.name) for op in ("grad_input", "grad_weight")]))
    print(f"tuned {len(rows)} layers ({args.dtype}; {cache.path}); the fastest kernel "
          "as Conv2d runs a layer (a Winograd or FFT weight transformed once) and as "
          "conv2d does (on every call):")
    print(f"  {'layer':<18}{'Conv2d':<13}{'time':>9}   {'conv2d':<13}{'time':>9}   "
          f"{'rule picks':<13}{'its time':>9}   tuning cost")
    for name, module, functional, rule in rows:
        fun = functional or module
        cost = ("remembered (--force measures again)" if module.remembered else
                f"{module.cost_s:.2f} s, {module.compile_s:.2f} s of it compiling")
        print(f"  {name:<18}{module.winner:<13}{format_time(module.times[module.winner]):>9}   "
              f"{fun.winner:<13}{format_time(fun.times[fun.winner]):>9}   "
              f"{rule:<13}{format_time(fun.times.get(rule)):>9}   {cost}")
    if grads:
        print("and the backward kernels (each gradient timed alone; Conv2d(backward_algo="
              "'tune') and conv2d_input/conv2d_weight(algo='tune') use them):")
        print(f"  {'layer':<18}{'op':<13}{'fastest':<13}{'time':>9}   {'rule picks':<13}"
              f"{'its time':>9}")
        for name, per_op in grads:
            for op, found, rule in per_op:
                print(f"  {name:<18}{op:<13}{found.winner:<13}"
                      f"{format_time(found.times[found.winner]):>9}   {rule:<13}"
                      f"{format_time(found.times.get(rule)):>9}")
    return 0


def add_parsers(sub: Any) -> None:
    """The ``bench`` and ``tune`` subcommands, on ``sub`` (argparse's subparsers)."""
    bench = sub.add_parser("bench", help="time kernels on a layer suite (checked against the "
                                         "oracle first; PyTorch and the machine peak in the "
                                         "same run)")
    bench.add_argument("--suite", type=suite, help=suite_help())
    bench.add_argument("--layers", type=names, metavar="NAME,...",
                       help="only these layers, from any suite (names as in the table)")
    bench.add_argument("--kernels", type=names, metavar="NAME,...",
                       help="kernels to run (default: every one for --device, plus torch)")
    bench.add_argument("--batch", type=positive_int,
                       help="batch for every layer (default 8; the seed layer keeps 64)")
    bench.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    bench.add_argument("--repeats", type=positive_int,
                       help="timing samples per layer and kernel (default: adaptive, about "
                            "--budget seconds each)")
    bench.add_argument("--out", metavar="FILE.json",
                       help="save the records as JSON and CSV (rewritten after every layer, "
                            "so an interrupted run keeps what it finished)")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="save the GFLOP/s plot (.png, .svg, .pdf or .jpg)")
    bench.add_argument("--max-call", type=positive_float, default=2.0, metavar="SECONDS",
                       help="skip slow kernels (python, naive) estimated to take longer than "
                            "this per call (default 2)")
    bench.add_argument("--budget", type=positive_float, default=0.5, metavar="SECONDS",
                       help="timing time per layer and kernel when --repeats is not given "
                            "(default 0.5)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                       help="which kernels run by default (default cpu); cuda: cuda_naive, "
                            "cuda_tiled and cuDNN via torch (TF32 off, and torch's default), "
                            "timed by CUDA events with the copies in and out apart; needs an "
                            "NVIDIA GPU with convlab[cuda], or NUMBA_ENABLE_CUDASIM=1")
    bench.add_argument("--weight-cache", action="store_true",
                       help="kernels that transform their weight (Winograd) do it once per "
                            "layer, as Conv2d does (default: every call, as conv2d does)")
    bench.add_argument("--split", action="store_true",
                       help="also time each stage of kernels that can be split (im2col: "
                            "lower/GEMM/copy out; Winograd: input/GEMMs/output transform)")
    bench.add_argument("--settle", type=nonnegative_float, default=None,
                       metavar="SECONDS",
                       help="before each sample, sleep this long and make one untimed call "
                            "(so another library's still-spinning threads slow that call, "
                            "not the timed one; default 0.001, 0 turns it off)")
    bench.add_argument("--drop-busy", type=fraction, metavar="FRACTION",
                       help="take a round of samples again when other processes used more "
                            "than this share of the CPUs during it (Linux; e.g. 0.1)")
    bench.add_argument("--backward", action="store_true",
                       help="also time each layer's backward (grad_input + grad_weight + "
                            "grad_bias: name-bwd, torch-bwd = torch.autograd) and its "
                            "transposed convolution (name-tr, torch-tr), in the same run")
    bench.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--cold-cache", action="store_true",
                       help="run in a fresh process with an empty Numba cache, so first "
                            "calls show real compile times")
    bench.add_argument("--model", metavar="NAME",
                       help="instead of layers, whole networks' conv stacks: resnet18, "
                            "mobilenet_v2, vgg16 or all; passes of convlab.Conv2d (auto) and "
                            "of the same torch.nn.Conv2d modules alternate in one run, checked "
                            "against torch in float64 first; per network and per layer "
                            "(the kernel that ran, its share, its ratio)")
    bench.add_argument("--train", action="store_true",
                       help="with --model: time a training step (forward, then "
                            "Conv2d.backward against torch autograd), split per layer")
    bench.add_argument("--import-order", choices=["numpy-first", "convlab-first"],
                       default=None,
                       help="with --model: the fresh process that runs the passes imports "
                            "NumPy and torch before convlab (numpy-first, the default: as a "
                            "notebook does) or after it")
    bench.add_argument("--passes", type=positive_int, default=None,
                       help="with --model: timed passes per side (default 5, after one "
                            "warm-up pass each)")
    bench.add_argument("--quick", action="store_true",
                       help="with --model: tiny networks (32x32 input, an eighth of the "
                            "channels, batch 2) for tests and CI")
    bench.set_defaults(func=cmd_bench)

    tune = sub.add_parser("tune", help="measure which kernel is fastest here for each layer "
                                       "of a suite, and remember it for algo='auto'")
    tune.add_argument("--suite", type=suite, default="resnet",
                      help="the layers to tune (default resnet)")
    tune.add_argument("--layers", type=names, metavar="NAME,...", help="only these layers")
    tune.add_argument("--batch", type=positive_int,
                      help="batch for every layer (default 8; the seed layer keeps 64); "
                           "a measurement holds for its batch only")
    tune.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    tune.add_argument("--repeats", type=positive_int, default=5,
                      help="timed calls per kernel after its checked first call (default 5; "
                           "algo='tune' inside a program takes 1)")
    tune.add_argument("--force", action="store_true", help="measure again what is remembered")
    tune.add_argument("--backward", action="store_true",
                      help="also the backward kernels (grad_input, grad_weight) of each layer")
    tune.add_argument("--show", action="store_true", help="list what is remembered")
    tune.add_argument("--clear", action="store_true", help="forget everything remembered")
    tune.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar")
    tune.set_defaults(func=cmd_tune)

"""The network benchmark: whole conv stacks, pass after pass, against torch in the same run.

``convlab bench --model resnet18|mobilenet_v2|vgg16|all`` runs a network's convolutions
(:mod:`convlab.bench.models`) the way a user's model runs them: ``convlab.Conv2d``
modules (``algo="auto"``), one forward pass after another, each layer's ReLU'd output
the next one's input; and the same ``torch.nn.Conv2d`` modules (the same weights and
biases) on the same input, in the same process, on as many threads as Numba uses.
Passes alternate (convlab, torch, torch, convlab, ...) so that load from elsewhere hits
both alike.  The layer suites time each kernel alone after an untimed call of itself;
here a kernel runs right after another one, as in use: whatever the previous layer left
behind (a thread pool still spinning, a cold cache) is paid for.

Per network: the median time per pass, its ratio (torch's time / convlab's: > 1 is
faster), GFLOP/s (direct-convolution FLOPs).  Per layer, timed inside the passes: the
kernel ``auto`` ran, its share of convlab's pass, its ratio against torch's same layer.

**Checked before timed.**  The first convlab pass is compared, layer by layer, with
torch in float64 on the same input (each layer's tolerance is its kernel's:
:meth:`~convlab.kernels.registry.Kernel.tolerance`).  A network with a wrong layer is
reported (``status="wrong"``, the layer and kernel named) and never timed.

``train=True`` (``--train``) times a training step instead: the forward as above with
gradients kept, then the backward, layer by layer in reverse, ``Conv2d.backward``
(grad_input + grad_weight + grad_bias) against ``torch.autograd.grad`` of each layer's
output w.r.t. its input, weight and bias (the graph built by the timed forward).  Each
layer gets a forward and a backward row, the network a forward, backward and step row.
Between the layers both sides run the same glue, in place where the arrays are the
pass's own, each with its own library: the forward's ReLU is ``convlab.relu`` (Numba's
threads) against ``torch.relu_``; the backward's (ReLU's mask, the subsample's scatter,
the residual sums) NumPy on one core against torch's elementwise ops on its threads.
The network rows include it, the layer rows do not.

The JSON and CSV (:meth:`NetworkResult.save`) hold one :class:`Row` per network and op
and one per layer and op.  ``convlab bench --model`` runs all this in a fresh process that
imports NumPy and torch before or after convlab (``--import-order``), because a user's
notebook imports NumPy first and some thread settings are only read at import.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..activation import relu
from .models import INPUT, Network, build
from .records import _atomic_write, output_paths
from .table import format_time

IMPORT_ORDERS = ("numpy-first", "convlab-first")
DEFAULT_PASSES = 5
_IMPORTS = {"numpy-first": "import numpy, torch; import convlab",
            "convlab-first": "import convlab; import numpy, torch"}


@dataclass
class Row:
    """One network (``scope="network"``) or one layer (``scope="layer"``) for one op.

    ``op``: "forward", "backward" or (network rows of a training run) "step".  Times in
    seconds (medians over the passes); ``vs_torch`` = torch's time / convlab's (> 1:
    convlab is faster); ``share``: of convlab's time for the op in the pass."""

    network: str
    scope: str
    op: str
    index: int  # the layer's place in the pass; -1 for a network row
    layer: str
    layer_desc: str
    batch: int
    status: str  # "ok", or "wrong" (differs from torch in float64: not timed)
    reason: str = ""
    kernel: str = ""  # the kernel auto ran (backward: grad_input+grad_weight kernels)
    flops: int = 0
    passes: int = 0
    convlab_s: float | None = None
    torch_s: float | None = None
    convlab_min_s: float | None = None
    torch_min_s: float | None = None
    vs_torch: float | None = None
    gflops: float | None = None
    torch_gflops: float | None = None
    share: float | None = None
    max_rel_err: float | None = None
    tolerance: float | None = None


ROW_FIELDS = [f.name for f in fields(Row)]


@dataclass
class NetworkResult:
    """Everything a network benchmark measured: plain data, saved as JSON and CSV."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    def networks(self) -> list[Row]:
        return [r for r in self.rows if r.scope == "network"]

    def layers(self, network: str, op: str = "forward") -> list[Row]:
        return [r for r in self.rows if r.scope == "layer" and r.network == network
                and r.op == op]

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write JSON and CSV (each atomically, so a save after every network keeps the
        last complete one when a run is stopped)."""
        json_path, csv_path = output_paths(path)
        data = {"machine": self.machine, "settings": self.settings,
                "rows": [asdict(r) for r in self.rows]}
        _atomic_write(json_path, json.dumps(data, indent=1, default=str) + "\n")
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})
        _atomic_write(csv_path, buf.getvalue())
        return json_path, csv_path


def load(path: str | os.PathLike) -> NetworkResult:
    """Read a result :meth:`NetworkResult.save` wrote (the JSON file)."""
    data = json.loads(Path(path).read_text())
    known = set(ROW_FIELDS)
    rows = [Row(**{k: v for k, v in r.items() if k in known}) for r in data["rows"]]
    return NetworkResult(data["machine"], data["settings"], rows)


# --------------------------------------------------------------------------- the run
def run_networks(models: Sequence[str], *, quick: bool = False, batch: int | None = None,
                 passes: int = DEFAULT_PASSES, train: bool = False, seed: int = 0,
                 progress: bool = True,
                 on_network: Callable[[NetworkResult], None] | None = None) -> NetworkResult:
    """Check, then time every network in ``models`` (see the module docstring).

    ``quick``: tiny networks (:data:`convlab.bench.models.QUICK_SIZE`); ``batch``
    overrides each network's; ``on_network(result)`` is called after each network (to
    save as it goes)."""
    import numba
    import torch

    from ..system import describe
    from .contenders import torch_on_numba_threads

    if passes < 1 or (batch is not None and batch < 1):
        raise ValueError(f"passes and batch must be positive, got {passes} and {batch}")
    threads, restore = torch_on_numba_threads(torch)
    result = NetworkResult(describe(), {
        "models": list(models), "quick": quick, "batch": batch, "passes": passes,
        "train": train, "seed": seed, "dtype": "float32", "threads": threads,
        "numba_threads": numba.get_num_threads(), "torch_threads": torch.get_num_threads(),
        "import_order": os.environ.get("CONVLAB_IMPORT_ORDER", "in-process"),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "date": _dt.datetime.now().isoformat(timespec="seconds")})
    try:
        for index, name in enumerate(models):
            net = build(name, quick)
            if progress:
                print(f"{name}: checking against torch (float64), then {passes} passes ...",
                      flush=True)
            result.rows += _run_network(net, batch or net.batch, passes, train, seed + index)
            if on_network is not None:
                on_network(result)
    finally:
        restore()
    return result


@dataclass
class _Modules:
    convlab: list[Any]
    torch: list[Any]


def _modules(net: Network, seed: int) -> _Modules:
    import torch

    from ..nn import Conv2d

    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for node in net.nodes:
        la = node.layer
        hyper: tuple[Any, ...] = (la.kernel_size, la.stride, la.padding, la.dilation, la.groups)
        m = Conv2d(la.in_channels, la.out_channels, *hyper, seed=rng)
        t = torch.nn.Conv2d(la.in_channels, la.out_channels, *hyper)
        assert t.bias is not None and m.bias is not None  # both built with a bias
        with torch.no_grad():  # the same weights: torch's a copy of convlab's
            t.weight.copy_(torch.from_numpy(m.weight))
            t.bias.copy_(torch.from_numpy(m.bias))
        ours.append(m)
        theirs.append(t)
    return _Modules(ours, theirs)


def _input_of(node: Any, x: Any, acts: dict[int, Any], contiguous: Callable[[Any], Any]) -> Any:
    inp = x if node.source == INPUT else acts[node.source]
    return contiguous(inp[:, :, ::2, ::2]) if node.subsample else inp


def _sinks(net: Network) -> list[int]:
    """The nodes whose output no other node reads (they get a random gradient)."""
    read = {n.source for n in net.nodes}
    return [i for i in range(len(net.nodes)) if i not in read]


# --- one pass each way; times[i] gets layer i's time (glue outside it) -------------
def _convlab_forward(mods: list[Any], net: Network, x: np.ndarray, times: list[float],
                     capture: dict[int, Any] | None = None) -> dict[int, np.ndarray]:
    acts: dict[int, np.ndarray] = {}
    for i, (node, m) in enumerate(zip(net.nodes, mods)):
        inp = _input_of(node, x, acts, np.ascontiguousarray)
        t0 = time.perf_counter()
        y = m(inp)
        times[i] = time.perf_counter() - t0
        if capture is not None:
            capture[i] = (inp, y.copy())
        acts[i] = relu(y, inplace=True)  # convlab's ReLU (torch's relu_ on that side)
    return acts


def _convlab_backward(mods: list[Any], net: Network, acts: dict[int, np.ndarray],
                      seeds: dict[int, np.ndarray], times: list[float],
                      capture: dict[int, Any] | None = None) -> None:
    # every array in ``grads`` is this pass's own (a seed's copy, a layer's returned
    # gradient or a sum of them): the glue works on them in place, as NumPy code should
    grads = {i: g.copy() for i, g in seeds.items()}
    for i in reversed(range(len(net.nodes))):
        node = net.nodes[i]
        g = grads.pop(i)
        np.multiply(g, acts[i] > 0, out=g)  # through the ReLU
        t0 = time.perf_counter()
        gin = mods[i].backward(g)
        times[i] = time.perf_counter() - t0
        if capture is not None:
            capture[i] = (g, gin)
        if node.source == INPUT:
            continue
        if node.subsample:
            full = np.zeros_like(acts[node.source])
            full[:, :, ::2, ::2] = gin
            gin = full
        if node.source in grads:
            np.add(grads[node.source], gin, out=grads[node.source])
        else:  # (a captured gradient is kept as it was: the sum goes to a copy)
            grads[node.source] = gin if capture is None else gin.copy()


def _torch_forward(mods: list[Any], net: Network, x: Any, times: list[float],
                   graph: dict[int, Any] | None = None) -> dict[int, Any]:
    import torch

    acts: dict[int, Any] = {}
    for i, (node, m) in enumerate(zip(net.nodes, mods)):
        inp = _input_of(node, x, acts, lambda t: t.contiguous())
        if graph is not None:  # training: each layer's own graph, from a leaf input
            inp = inp.detach().requires_grad_(True)
        t0 = time.perf_counter()
        y = m(inp)
        times[i] = time.perf_counter() - t0
        if graph is not None:
            graph[i] = (inp, y)
            y = y.detach()
        acts[i] = torch.relu_(y) if graph is None else torch.relu(y)
    return acts


def _torch_backward(mods: list[Any], net: Network, acts: dict[int, Any],
                    graph: dict[int, Any], seeds: dict[int, Any], times: list[float]) -> None:
    import torch

    grads = {i: g.clone() for i, g in seeds.items()}  # in place, as convlab's side
    for i in reversed(range(len(net.nodes))):
        node = net.nodes[i]
        g = grads.pop(i)
        g.mul_(acts[i] > 0)  # through the ReLU
        inp, y = graph.pop(i)
        t0 = time.perf_counter()
        gin, _, _ = torch.autograd.grad(y, (inp, mods[i].weight, mods[i].bias), g)
        times[i] = time.perf_counter() - t0
        if node.source == INPUT:
            continue
        if node.subsample:
            full = torch.zeros_like(acts[node.source])
            full[:, :, ::2, ::2] = gin
            gin = full
        if node.source in grads:
            grads[node.source].add_(gin)
        else:
            grads[node.source] = gin


# --- the check ---------------------------------------------------------------------
def _check(net: Network, mods: _Modules, x: np.ndarray, seeds: dict[int, np.ndarray],
           train: bool) -> tuple[list[dict[str, Any]], str | None]:
    """One convlab pass compared layer by layer with torch in float64 on the same inputs
    (for ``train``, the backward too).  Returns each layer's kernel names and error
    (forward, then backward), and the first failure's description, or None."""
    import torch
    import torch.nn.functional as F

    from ..reference import compare

    n = len(net.nodes)
    fwd: dict[int, Any] = {}
    acts = _convlab_forward(mods.convlab, net, x, [0.0] * n, capture=fwd)
    bwd: dict[int, Any] = {}
    if train:
        for m in mods.convlab:
            m.zero_grad()
        _convlab_backward(mods.convlab, net, acts, seeds, [0.0] * n, capture=bwd)
    info: list[dict[str, Any]] = []
    failure = None
    for i, node in enumerate(net.nodes):
        la, m = node.layer, mods.convlab[i]
        inp, out = fwd[i]
        args: tuple[Any, ...] = (la.stride, la.padding, la.dilation, la.groups)
        spec = la.spec(inp.shape[0])
        choice = m.explain(inp)  # the layer's own plan: its weight cache changes the pick
        x64 = torch.from_numpy(inp).double().requires_grad_(train)
        w64 = torch.from_numpy(m.weight).double().requires_grad_(train)
        b64 = torch.from_numpy(m.bias).double().requires_grad_(train)
        y64 = F.conv2d(x64, w64, b64, *args)
        checks = [("forward", choice.kernel, out, y64.detach().numpy())]
        entry: dict[str, Any] = {"forward": choice.kernel.name}
        if train:
            g, gin = bwd[i]
            gx, gw, gb = torch.autograd.grad(y64, (x64, w64, b64), torch.from_numpy(g).double())
            k_in = m.explain(inp, op="grad_input").kernel
            k_w = m.explain(inp, op="grad_weight").kernel
            entry["backward"] = f"{k_in.name}+{k_w.name}"
            checks += [("grad_input", k_in, gin, gx.numpy()),
                       ("grad_weight", k_w, m.grad["weight"], gw.numpy()),
                       ("grad_bias", k_w, m.grad["bias"], gb.numpy())]
        for what, kernel, got, want in checks:
            report = compare(got, want, kernel.tolerance(spec, np.float32))
            key = "forward" if what == "forward" else "backward"
            old = entry.get(key + "_err")
            entry[key + "_err"] = max(old or 0.0, report.max_rel)
            entry[key + "_tol"] = report.tolerance
            if not report.ok:
                entry[key + "_wrong"] = (f"{what} of {la.name} ({la.describe()}) by "
                                         f"{kernel.name!r} differs from torch float64: max "
                                         f"relative error {report.max_rel:.3g} > "
                                         f"{report.tolerance:.3g}")
                failure = failure or entry[key + "_wrong"]
        info.append(entry)
    return info, failure


# --- one network -------------------------------------------------------------------
def _run_network(net: Network, batch: int, passes: int, train: bool,
                 seed: int) -> list[Row]:
    import torch

    from ..nn import no_grad

    mods = _modules(net, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, *net.input_shape)).astype(np.float32)
    specs = [node.layer.spec(batch) for node in net.nodes]
    shapes = {i: s.batched_output_shape for i, s in enumerate(specs)}
    seeds = {i: rng.standard_normal(shapes[i]).astype(np.float32) for i in _sinks(net)}
    info, failure = _check(net, mods, x, seeds, train)
    ops = ("forward", "backward") if train else ("forward",)
    n = len(net.nodes)
    if failure is not None:
        return _rows(net, batch, ops, info, specs, None, failure)

    tx = torch.from_numpy(x).requires_grad_(train)
    tseeds = {i: torch.from_numpy(g) for i, g in seeds.items()}
    # samples[side][op] = list of (pass total, per-layer times)
    samples: dict[str, dict[str, list[tuple[float, list[float]]]]] = {
        side: {op: [] for op in ops} for side in ("convlab", "torch")}

    def convlab_pass() -> dict[str, tuple[float, list[float]]]:
        ft, bt = [0.0] * n, [0.0] * n
        t0 = time.perf_counter()
        acts = _convlab_forward(mods.convlab, net, x, ft)
        t1 = time.perf_counter()
        if not train:
            return {"forward": (t1 - t0, ft)}
        _convlab_backward(mods.convlab, net, acts, seeds, bt)
        return {"forward": (t1 - t0, ft), "backward": (time.perf_counter() - t1, bt)}

    def torch_pass() -> dict[str, tuple[float, list[float]]]:
        ft, bt = [0.0] * n, [0.0] * n
        graph: dict[int, Any] | None = {} if train else None
        t0 = time.perf_counter()
        acts = _torch_forward(mods.torch, net, tx, ft, graph)
        t1 = time.perf_counter()
        if graph is None:
            return {"forward": (t1 - t0, ft)}
        _torch_backward(mods.torch, net, acts, graph, tseeds, bt)
        return {"forward": (t1 - t0, ft), "backward": (time.perf_counter() - t1, bt)}

    grad_off = contextlib.ExitStack()
    if not train:  # inference: neither side keeps anything for a backward
        grad_off.enter_context(no_grad())
        grad_off.enter_context(torch.no_grad())
    with grad_off:
        for p in range(passes + 1):  # pass 0 warms both up (torch's first call, caches)
            sides = (("convlab", convlab_pass), ("torch", torch_pass))
            for side, run in sides if p % 2 == 0 else sides[::-1]:
                got = run()
                if p > 0:
                    for op in ops:
                        samples[side][op].append(got[op])
    return _rows(net, batch, ops, info, specs, samples, None)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _rows(net: Network, batch: int, ops: Sequence[str], info: list[dict[str, Any]],
          specs: list[Any], samples: dict[str, dict[str, list[tuple[float, list[float]]]]]
          | None, failure: str | None) -> list[Row]:
    rows: list[Row] = []
    shape = "x".join(map(str, net.input_shape[1:]))
    totals: dict[str, tuple[float, float, float, float]] = {}
    for op in ops:
        flops_each = [s.flops() * (2 if op == "backward" else 1) for s in specs]
        net_row = Row(net.name, "network", op, -1, net.name,
                      f"{len(net.nodes)} convs, {net.input_shape[0]}x{shape} input",
                      batch, "wrong" if failure else "ok", failure or "",
                      flops=sum(flops_each))
        layer_rows = []
        for i, node in enumerate(net.nodes):
            la, entry = node.layer, info[i]
            wrong = entry.get(op + "_wrong")
            layer_rows.append(Row(
                net.name, "layer", op, i, la.name, la.describe(), batch,
                "wrong" if wrong else "ok", wrong or "", entry.get(op, ""), flops_each[i],
                max_rel_err=entry.get(op + "_err"), tolerance=entry.get(op + "_tol")))
        if samples is not None:
            ours, theirs = samples["convlab"][op], samples["torch"][op]
            c_tot, t_tot = _median([s[0] for s in ours]), _median([s[0] for s in theirs])
            totals[op] = (c_tot, t_tot, min(s[0] for s in ours), min(s[0] for s in theirs))
            _fill(net_row, c_tot, t_tot, totals[op][2], totals[op][3], len(ours))
            for i, row in enumerate(layer_rows):
                c = [s[1][i] for s in ours]
                t = [s[1][i] for s in theirs]
                _fill(row, _median(c), _median(t), min(c), min(t), len(c))
                row.share = (row.convlab_s or 0.0) / c_tot if c_tot else None
        rows.append(net_row)
        rows += layer_rows
    if len(ops) == 2:  # the training step: forward + backward
        step = Row(net.name, "network", "step", -1, net.name, rows[0].layer_desc, batch,
                   rows[0].status, rows[0].reason,
                   flops=sum(r.flops for r in rows if r.scope == "network"))
        if totals:
            f, b = totals["forward"], totals["backward"]
            _fill(step, f[0] + b[0], f[1] + b[1], f[2] + b[2], f[3] + b[3],
                  rows[0].passes)
        rows.insert(0, step)
    return rows


def _fill(row: Row, ours: float, theirs: float, ours_min: float, theirs_min: float,
          passes: int) -> None:
    row.convlab_s, row.torch_s, row.passes = ours, theirs, passes
    row.convlab_min_s, row.torch_min_s = ours_min, theirs_min
    row.vs_torch = theirs / ours if ours else None
    row.gflops = row.flops / ours / 1e9 if ours else None
    row.torch_gflops = row.flops / theirs / 1e9 if theirs else None


# --------------------------------------------------------------------------- report
def format_network_table(result: NetworkResult, layers: bool = True) -> str:
    """The report people read: one line per network and op, then its layers."""
    lines = []
    s = result.settings
    lines.append(f"network benchmark: {s.get('threads')} threads, import order "
                 f"{s.get('import_order')}, {s.get('passes')} passes (median), float32")
    for net in result.networks():
        head = (f"\n{net.network} {net.op} (batch {net.batch}, {net.layer_desc}): ")
        if net.status != "ok":
            lines.append(head + f"WRONG, not timed: {net.reason}")
            continue
        lines.append(head + f"convlab {format_time(net.convlab_s)}/pass "
                     f"({net.gflops:.3g} GFLOP/s), torch {format_time(net.torch_s)} "
                     f"({net.torch_gflops:.3g} GFLOP/s): {net.vs_torch:.2f}x torch")
        if not layers or net.op == "step":
            continue
        lines.append(f"  {'#':>2} {'layer':<22} {'shape':<30} {'kernel':<22} {'share':>6} "
                     f"{'convlab':>9} {'torch':>9} {'ratio':>6}")
        for r in result.layers(net.network, net.op):
            lines.append(f"  {r.index:>2} {r.layer.split('.', 2)[-1]:<22} {r.layer_desc:<30} "
                         f"{r.kernel:<22} {100 * (r.share or 0):5.1f}% "
                         f"{format_time(r.convlab_s):>9} {format_time(r.torch_s):>9} "
                         f"{(r.vs_torch or 0):5.2f}x")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command
def child_main(options: dict[str, Any]) -> int:
    """Run in the fresh process ``convlab bench --model`` starts (see :func:`run_in_child`):
    run, save after each network, print the table.  (The plot is drawn by the command,
    from the saved JSON: :mod:`convlab.plots` sits above the harness.)"""
    out = options.pop("out", None)

    def save(result: NetworkResult) -> None:
        if out:
            result.save(out)

    try:
        result = run_networks(on_network=save, **options)
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): the networks finished so far are saved"
              + (f" in {out}" if out else " nowhere (no --out)"), flush=True)
        return 130
    print(format_network_table(result))
    if out:
        json_path, csv_path = result.save(out)
        print(f"\nsaved {json_path} and {csv_path}")
    return 0


def run_in_child(options: dict[str, Any], import_order: str = "numpy-first") -> int:
    """Run :func:`child_main` in a new Python process that imports NumPy and torch
    before convlab (``numpy-first``, as a notebook does) or after it."""
    import subprocess
    import sys

    if import_order not in IMPORT_ORDERS:
        raise ValueError(f"unknown import order {import_order!r}; "
                         f"choose from {', '.join(IMPORT_ORDERS)}")
    code = (f"{_IMPORTS[import_order]}; import json, sys; "
            "from convlab.bench.network import child_main; "
            "sys.exit(child_main(json.loads(sys.argv[1])))")
    env = dict(os.environ, CONVLAB_IMPORT_ORDER=import_order)
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(options)], env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the child got the Ctrl-C too: let it save and stop
        return proc.wait()

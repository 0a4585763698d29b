"""What the harness times: registry kernels and the rivals, behind one small interface.

A :class:`Contender` says whether it can run a layer (``why_not``), how close to the
float64 oracle it must be (``tolerance``), how to set a layer up once (``setup``: place
the inputs, transform the weight when the run caches it) and how to time a call
(``timer``).  Everything the harness does (gate, warm-up, round-robin samples, the time
split) goes through these, so a CPU kernel, a CUDA kernel and PyTorch are measured the
same way.

* a **registry kernel** (:func:`kernel_contender`) brings its hooks from its
  :class:`~convlab.kernels.registry.Kernel`: ``place`` (device kernels: inputs copied to
  the device once), ``transform_weight`` (done once per layer with ``weight_cache``,
  as ``Conv2d`` does, else on every call as ``conv2d`` does), ``stages`` (the time
  split), ``macs_per_s`` (to skip hopeless layers);
* **PyTorch on the CPU** (:func:`torch_contender`, the rival ``torch``):
  ``torch.nn.functional.conv2d`` with as many threads as Numba uses;
* PyTorch on a GPU (cuDNN) lives in :mod:`convlab.bench.gpu`;
* the backward ops (:mod:`convlab.bench.ops`): :func:`backward_contender` (an
  algorithm's grad_input and grad_weight kernels, and the bias's sum),
  :func:`transpose_contender` (its grad_input kernel plus the bias), and their
  rivals :func:`torch_backward_contender` (``torch.autograd.grad`` through
  ``F.conv2d``) and :func:`torch_transpose_contender` (``F.conv_transpose2d``).
  Their names carry the op (``parallel-bwd``, ``torch-tr``); ``setup`` receives the
  op's arrays (:class:`~convlab.bench.ops.Problem`), and a backward contender's
  ``tolerance`` gives one tolerance per gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import kernels
from ..kernels.registry import Kernel, Placed, dtype_scale, kernels_for, reduction_scale
from ..shapes import ConvSpec, TransposedSpec
from .ops import BACKWARD, FORWARD, KERNEL_OPS, TRANSPOSE, Op, op_named
from .timing import Timer, wall_timer

RIVAL = "torch"
# The order the ladder plot and the default kernel list use; missing names are skipped.
LADDER = ("python", "naive", "parallel", "im2col", "winograd_f2", "winograd_f4", "winograd_f6",
          "cuda_naive", "cuda_tiled")
# A rival is not ours: its gate only catches gross errors (layout, padding), with room for
# the library's own algorithm choices (cuDNN or oneDNN may pick Winograd, whose float32
# error is F(6,3)-like: convlab's winograd_f6 allows 2e-4 at 576 products).
RIVAL_RTOL = 2e-4

Setup = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", ConvSpec], Placed]


@dataclass
class Contender:
    """Something the harness can gate and time (see the module docstring)."""

    name: str
    device: str
    description: str
    why_not: Callable[[ConvSpec], str | None]
    tolerance: Callable[[ConvSpec, Any], float]
    setup: Setup
    timer: Timer = wall_timer
    # a rough time per call, (seconds, how it was estimated): to skip hopeless layers
    estimate: Callable[[ConvSpec], tuple[float, str]] | None = None
    # the time split: (x, w, b, spec) -> [(stage, call running up to that stage)]
    stages: Callable[..., Sequence[tuple[str, Callable[[], Any]]]] | None = None
    close: Callable[[], None] = field(default=lambda: None)
    op: str = "forward"  # which bench op (convlab.bench.ops) it times


def _on_host(call: Callable[[], Any]) -> Placed:
    return Placed(call, np.asarray)


def kernel_contender(kern: Kernel, weight_cache: bool = False, *,
                     timer: Timer = wall_timer,
                     estimate: Callable[[ConvSpec], tuple[float, str]] | None = None
                     ) -> Contender:
    """A registry kernel.  ``weight_cache``: a kernel with ``transform_weight`` gets its
    weight transformed once per layer (as ``Conv2d`` does) instead of on every call."""

    def transformed(w: np.ndarray, spec: ConvSpec) -> Any:
        if weight_cache and kern.transform_weight is not None:
            return kern.transform_weight(w, spec)
        return None

    def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> Placed:
        if kern.place is not None:
            return kern.place(x, w, b, spec)
        t = transformed(w, spec)  # once, outside every timed call
        return _on_host(lambda: kern.execute(x, w, b, spec, t))

    stages = None
    if kern.stages is not None:
        stage_fn = kern.stages

        def stages(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                   spec: ConvSpec) -> Sequence[tuple[str, Callable[[], Any]]]:
            return stage_fn(x, w, b, spec, transformed(w, spec))

    if estimate is None and kern.macs_per_s:
        rate = kern.macs_per_s

        def estimate(spec: ConvSpec) -> tuple[float, str]:
            return spec.macs() / rate, f"{spec.macs():.3g} multiply-adds at ~{rate:.0e}/s"

    return Contender(kern.name, kern.device, kern.description, kern.why_not, kern.tolerance,
                     setup, timer, estimate, stages)


def rival_tolerance(spec: ConvSpec, dtype: Any, op: str = "forward") -> float:
    """The gate for a library that is not ours (see RIVAL_RTOL), for a registry op."""
    return RIVAL_RTOL * reduction_scale(spec, op) * dtype_scale(dtype)


def torch_args(x: np.ndarray, spec: ConvSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """torch pads symmetrically only: an asymmetric padding ('same' with an even
    kernel) is applied to ``x`` first (once, in setup, outside any timed call)."""
    top, bottom, left, right = spec.padding
    if top == bottom and left == right:
        return x, (top, left)
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))), (0, 0)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def unavailable(name: str, device: str, description: str, why: str) -> Contender:
    """A contender that is n/a everywhere, with the reason."""

    def setup(*args: Any) -> Placed:
        raise RuntimeError(why)

    return Contender(name, device, description, lambda spec: why, lambda s, d: 0.0, setup)


def torch_contender() -> Contender:
    """``torch.nn.functional.conv2d`` on the CPU, with as many threads as Numba uses."""
    import numba

    try:
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        return unavailable(RIVAL, "cpu", "torch.nn.functional.conv2d",
                           f"torch is not installed ({exc}); pip install 'convlab[torch]'")

    before = torch.get_num_threads()
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)

    def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> Placed:
        xp, pad = torch_args(x, spec)
        tx, tw = torch.from_numpy(xp), torch.from_numpy(w)  # zero-copy views
        tb = None if b is None else torch.from_numpy(b)
        stride, dilation, groups = spec.stride, spec.dilation, spec.groups

        def call() -> Any:
            with torch.no_grad():
                return F.conv2d(tx, tw, tb, stride, pad, dilation, groups)

        return Placed(call, lambda out: out.numpy())

    return Contender(RIVAL, "cpu",
                     f"torch.nn.functional.conv2d (torch {torch.__version__}, {threads} threads)",
                     lambda spec: None, rival_tolerance, setup,
                     close=lambda: torch.set_num_threads(before))


def known_kernels(device: str | None = None, op: str = "forward") -> list[str]:
    """Registered kernel names (for ``device`` if given) in ladder order, then the rest;
    for a bench ``op`` other than "forward", the algorithms that have every kernel it
    needs (``ops.KERNEL_OPS``: the backward needs a grad_input and a grad_weight)."""
    tables = [kernels_for(k) for k in KERNEL_OPS[op_named(op).name]]
    names = [n for n, k in tables[0].items() if (device is None or k.device == device)
             and all(n in t for t in tables)]
    return sorted(names, key=lambda n: (LADDER.index(n) if n in LADDER else len(LADDER), n))


def resolve_kernels(names: Sequence[str | Contender] | None, device: str = "cpu",
                    rival: bool = True,
                    ops: Sequence[str] = ("forward",)) -> list[str | Contender]:
    """Validate kernel names (a :class:`Contender` passes as it is: a kernel of your own,
    or a stand-in in a test); the default is every kernel for ``device`` (and ``ops``)
    plus the rival(s)."""
    from .gpu import GPU_RIVALS

    if names is None and tuple(ops) != ("forward",):
        return list(op_default_names(ops, device, rival))
    if names is None:
        chosen = known_kernels(device)
        if rival and device == "cpu" and torch_available():
            chosen.append(RIVAL)
        if rival and device == "cuda":  # n/a records (with the reason) when torch can't
            chosen.extend(GPU_RIVALS)
        return chosen
    known = list(dict.fromkeys(known_kernels() + [n for op in ops for n in known_kernels(op=op)]
                               + [RIVAL, *GPU_RIVALS]))
    chosen: list[str | Contender] = []
    for name in names:
        if isinstance(name, Contender):
            chosen.append(name)
        elif name not in known:
            raise ValueError(f"unknown kernel {name!r}; known kernels: {', '.join(known)}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def make_contenders(names: Sequence[str | Contender], weight_cache: bool,
                    op: Op = FORWARD) -> dict[str, Contender]:
    """The contender for each name: the CPU rival, a GPU rival, or a registry kernel
    (device kernels timed and estimated as :mod:`convlab.bench.gpu` says); for the
    backward ops, the algorithm's backward kernels or torch's backward (names get the
    op's suffix; a Contender passed in is used for the op it names)."""
    from . import gpu

    if op is not FORWARD:
        return _op_contenders(names, op)
    made: dict[str, Contender] = {}
    for name in names:
        if isinstance(name, Contender):
            if name.op == FORWARD.name:
                made[name.name] = name
        elif name == RIVAL:
            made[name] = torch_contender()
        elif name in gpu.GPU_RIVALS:
            made[name] = gpu.torch_gpu_contender(name)
        elif name not in kernels.KERNELS:  # an algorithm with backward kernels only
            made[name] = unavailable(name, "cpu", name, f"{name} has no forward kernel")
        else:
            kern = kernels.KERNELS[name]
            if kern.device == "cuda":
                made[name] = kernel_contender(kern, weight_cache, timer=gpu.cuda_timer(),
                                              estimate=gpu.simulator_estimate())
            else:
                made[name] = kernel_contender(kern, weight_cache)
    return made


def estimate(who: Contender, spec: ConvSpec) -> tuple[float, str]:
    """(seconds per call, how) from the contender's estimate, or (0, '') without one."""
    if who.estimate is None:
        return 0.0, ""
    seconds, how = who.estimate(spec)
    return (seconds if math.isfinite(seconds) else math.inf), how


# ----------------------------------------------------------------- the backward ops
def backward_contender(gi: Kernel, gw: Kernel) -> Contender:
    """An algorithm's backward: its grad_input and grad_weight kernels back to back, and
    the bias's gradient (one NumPy sum), on the arrays of a BACKWARD problem."""

    def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, go: np.ndarray,
              spec: ConvSpec) -> Placed:
        def call() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return gi.run(go, w, spec), gw.run(x, go, spec), go.sum(axis=(0, 2, 3))

        return Placed(call, lambda out: out)

    def tolerance(spec: ConvSpec, dtype: Any) -> tuple[float, float, float]:
        tw = gw.tolerance(spec, dtype)
        return gi.tolerance(spec, dtype), tw, tw  # the bias's sum is as long as gw's

    estimate = None
    if gi.macs_per_s and gw.macs_per_s:
        rate = 1 / (1 / gi.macs_per_s + 1 / gw.macs_per_s)

        def estimate(spec: ConvSpec) -> tuple[float, str]:
            return spec.macs() / rate, (f"2 x {spec.macs():.3g} multiply-adds at "
                                        f"~{gi.macs_per_s:.0e}/s and ~{gw.macs_per_s:.0e}/s")

    return Contender(BACKWARD.label(gi.name), gi.device,
                     f"{gi.name}'s grad_input + grad_weight kernels, grad_output.sum for the bias",
                     lambda spec: gi.why_not(spec) or gw.why_not(spec), tolerance, setup,
                     estimate=estimate, op=BACKWARD.name)


def transpose_contender(gi: Kernel) -> Contender:
    """conv_transpose2d on an algorithm's grad_input kernel, plus the bias."""

    def setup(y: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> Placed:
        def call() -> np.ndarray:
            out = gi.run(y, w, spec)
            if b is not None:
                out += b[None, :, None, None]
            return out

        return Placed(call, np.asarray)

    estimate = None
    if gi.macs_per_s:
        rate = gi.macs_per_s

        def estimate(spec: ConvSpec) -> tuple[float, str]:
            return spec.macs() / rate, f"{spec.macs():.3g} multiply-adds at ~{rate:.0e}/s"

    return Contender(TRANSPOSE.label(gi.name), gi.device,
                     f"{gi.name}'s grad_input kernel plus the bias", gi.why_not,
                     gi.tolerance, setup, estimate=estimate, op=TRANSPOSE.name)


def _torch_or_reason() -> tuple[Any, str | None]:
    try:
        import torch
    except ImportError as exc:
        return None, f"torch is not installed ({exc}); pip install 'convlab[torch]'"
    return torch, None


def torch_backward_contender() -> Contender:
    """torch's backward of conv2d on the CPU: ``torch.autograd.grad`` of the output (the
    graph built once in setup) w.r.t. input, weight and bias, as many threads as Numba."""
    import numba

    torch, why = _torch_or_reason()
    name = BACKWARD.label(RIVAL)
    if torch is None:
        return unavailable(name, "cpu", "torch.autograd.grad through F.conv2d", why or "")
    import torch.nn.functional as F

    before = torch.get_num_threads()
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)

    def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, go: np.ndarray,
              spec: ConvSpec) -> Placed:
        tx = torch.from_numpy(x).requires_grad_(True)
        tw = torch.from_numpy(w).requires_grad_(True)
        tb = torch.from_numpy(b).requires_grad_(True)
        top, bottom, left, right = spec.padding
        if top == bottom and left == right:
            out = F.conv2d(tx, tw, tb, spec.stride, (top, left), spec.dilation, spec.groups)
        else:  # asymmetric ('same', even kernel): the padding is part of the graph
            xp = F.pad(tx, (left, right, top, bottom))
            out = F.conv2d(xp, tw, tb, spec.stride, 0, spec.dilation, spec.groups)
        tgo = torch.from_numpy(go)

        def call() -> Any:
            return torch.autograd.grad(out, (tx, tw, tb), tgo, retain_graph=True)

        return Placed(call, lambda grads: tuple(g.numpy() for g in grads))

    def tolerance(spec: ConvSpec, dtype: Any) -> tuple[float, float, float]:
        tw = rival_tolerance(spec, dtype, "grad_weight")
        return rival_tolerance(spec, dtype, "grad_input"), tw, tw

    return Contender(name, "cpu", f"torch.autograd.grad through F.conv2d (torch "
                     f"{torch.__version__}, {threads} threads)", lambda spec: None, tolerance,
                     setup, close=lambda: torch.set_num_threads(before), op=BACKWARD.name)


def torch_transpose_contender() -> Contender:
    """``torch.nn.functional.conv_transpose2d`` on the CPU, as many threads as Numba."""
    import numba

    torch, why = _torch_or_reason()
    name = TRANSPOSE.label(RIVAL)
    if torch is None:
        return unavailable(name, "cpu", "torch.nn.functional.conv_transpose2d", why or "")
    import torch.nn.functional as F

    before = torch.get_num_threads()
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)

    def setup(y: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> Placed:
        t = TransposedSpec.inverting(spec)
        ty, tw = torch.from_numpy(y), torch.from_numpy(w)
        tb = None if b is None else torch.from_numpy(b)

        def call() -> Any:
            with torch.no_grad():
                return F.conv_transpose2d(ty, tw, tb, t.stride, t.padding, t.output_padding,
                                          t.groups, t.dilation)

        return Placed(call, lambda out: out.numpy())

    return Contender(name, "cpu", f"torch.nn.functional.conv_transpose2d (torch "
                     f"{torch.__version__}, {threads} threads)", lambda spec: None,
                     lambda spec, dtype: rival_tolerance(spec, dtype, "grad_input"), setup,
                     close=lambda: torch.set_num_threads(before), op=TRANSPOSE.name)


def _op_contenders(names: Sequence[str | Contender], op: Op) -> dict[str, Contender]:
    """Contenders of a backward op for the (forward) names of a run."""
    made: dict[str, Contender] = {}
    needs = KERNEL_OPS[op.name]
    for name in names:
        if isinstance(name, Contender):
            if name.op == op.name:
                made[name.name] = name
            continue
        label = op.label(name)
        if name == RIVAL:
            made[label] = (torch_backward_contender() if op is BACKWARD
                           else torch_transpose_contender())
            continue
        missing = [k for k in needs if name not in kernels_for(k)]
        if missing:
            have = known_kernels(op=op.name)
            made[label] = unavailable(label, "cpu", f"{name}'s {op.name}",
                                      f"{name} has no {' or '.join(missing)} kernel (the "
                                      f"{op.name} runs on: {', '.join(have)})")
            continue
        gi = kernels_for("grad_input")[name]
        made[label] = (backward_contender(gi, kernels_for("grad_weight")[name])
                       if op is BACKWARD else transpose_contender(gi))
    return made


def op_default_names(ops: Sequence[str], device: str, rival: bool) -> list[str]:
    """The default names of a run timing ``ops``: every forward kernel for ``device``,
    and for the backward ops the algorithms that have their kernels (all of them get a
    row per op they can run; the others are left out, not listed as n/a)."""
    chosen = known_kernels(device)
    for op in ops:
        chosen += [n for n in known_kernels(device, op) if n not in chosen]
    if rival and device == "cpu" and torch_available():
        chosen.append(RIVAL)
    return chosen


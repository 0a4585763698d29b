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

from ..kernels.registry import Kernel, Placed, dtype_scale, kernels_for, reduction_scale
from ..shapes import ConvSpec
from .ops import KERNEL_OPS, op_named
from .timing import Timer, wall_timer

RIVAL = "torch"
AUTO = "auto"  # algo="auto" as a contender: whatever it picks on each layer
# A rival is not ours: its gate only catches gross errors (layout, padding), with room for
# the library's own algorithm choices (cuDNN or oneDNN may pick Winograd, whose float32
# error is F(6,3)-like: convlab's winograd_f6 allows 2e-4 at 576 products).
RIVAL_RTOL = 2e-4

# setup(*arrays, spec): the op's arrays (convlab.bench.ops.Problem.arrays: x, w, b for the
# forward; x, w, b, grad_output for the backward; ...), then the kernels' spec
Setup = Callable[..., Placed[Any]]


@dataclass
class Contender:
    """Something the harness can gate and time (see the module docstring)."""

    name: str
    device: str
    description: str
    why_not: Callable[[ConvSpec], str | None]
    # one tolerance, or one per part of the op's result (the backward's three gradients)
    tolerance: Callable[[ConvSpec, Any], float | tuple[float, ...]]
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


def torch_or_reason() -> tuple[Any, str | None]:
    """(the torch module, None), or (None, why it cannot be imported)."""
    try:
        import torch
    except ImportError as exc:
        return None, f"torch is not installed ({exc}); pip install 'convlab[torch]'"
    return torch, None


def torch_on_numba_threads(torch: Any) -> tuple[int, Callable[[], None]]:
    """Give torch as many threads as Numba uses (a fair race); returns that count and
    the contender's ``close``, which gives torch its own count back."""
    import numba

    before = torch.get_num_threads()
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    return threads, lambda: torch.set_num_threads(before)


def torch_contender() -> Contender:
    """``torch.nn.functional.conv2d`` on the CPU, with as many threads as Numba uses."""
    torch, why = torch_or_reason()
    if torch is None:
        return unavailable(RIVAL, "cpu", "torch.nn.functional.conv2d", why or "")
    import torch.nn.functional as F

    threads, restore = torch_on_numba_threads(torch)

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
                     lambda spec: None, rival_tolerance, setup, close=restore)


def known_kernels(device: str | None = None, op: str = "forward") -> list[str]:
    """Registered kernel names (for ``device`` if given) in ladder order
    (``Kernel.ladder``), then the rest by name;
    for a bench ``op`` other than "forward", the algorithms that have every kernel it
    needs (``ops.KERNEL_OPS``: the backward needs a grad_input and a grad_weight)."""
    tables = [kernels_for(k) for k in KERNEL_OPS[op_named(op).name]]
    names = [n for n, k in tables[0].items() if (device is None or k.device == device)
             and all(n in t for t in tables)]
    rung = {n: tables[0][n].ladder for n in names}
    return sorted(names, key=lambda n: (rung[n] is None, rung[n] or 0, n))


def estimate(who: Contender, spec: ConvSpec) -> tuple[float, str]:
    """(seconds per call, how) from the contender's estimate, or (0, '') without one."""
    if who.estimate is None:
        return 0.0, ""
    seconds, how = who.estimate(spec)
    return (seconds if math.isfinite(seconds) else math.inf), how

"""The contenders of the backward ops (:mod:`convlab.bench.ops`): convlab's and torch's.

* ``<algorithm>-bwd``: the algorithm's grad_input and grad_weight kernels back to back,
  plus the bias's gradient (one NumPy sum); the rival ``torch-bwd`` is
  ``torch.autograd.grad`` through ``F.conv2d`` (the graph built once in setup);
* ``<algorithm>-tr``: ``conv_transpose2d`` on the algorithm's grad_input kernel plus the
  bias; the rival ``torch-tr`` is ``F.conv_transpose2d``.

Like every contender they are checked against the op's float64 oracle before they are
timed, in the same round-robin as the layer's forward contenders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..kernels.registry import Kernel, Placed, kernels_for
from ..shapes import ConvSpec, TransposedSpec
from .contenders import (
    RIVAL,
    Contender,
    known_kernels,
    rival_tolerance,
    torch_on_numba_threads,
    torch_or_reason,
    unavailable,
)
from .ops import BACKWARD, GRAD_OPS, KERNEL_OPS, TRANSPOSE, Op


def backward_contender(gi: Kernel, gw: Kernel) -> Contender:
    """An algorithm's backward: its grad_input and grad_weight kernels back to back, and
    the bias's gradient (one NumPy sum), on the arrays of a BACKWARD problem."""

    def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, go: np.ndarray,
              spec: ConvSpec) -> Placed:
        def call() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return gi.grad(go, w, spec), gw.grad(x, go, spec), go.sum(axis=(0, 2, 3))

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


def grad_contender(kern: Kernel) -> Contender:
    """One gradient kernel alone (its op, grad_input or grad_weight), on the arrays of a
    :func:`~convlab.bench.ops.grad_problem`: how the tuner times backward kernels."""
    op = GRAD_OPS[kern.op.value]

    def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, go: np.ndarray,
              spec: ConvSpec) -> Placed:
        if op.name == "grad_input":
            return Placed(lambda: kern.grad(go, w, spec), lambda out: out)
        return Placed(lambda: kern.grad(x, go, spec), lambda out: out)

    return Contender(kern.name, kern.device, kern.description, kern.why_not, kern.tolerance,
                     setup, op=op.name)


def transpose_contender(gi: Kernel) -> Contender:
    """conv_transpose2d on an algorithm's grad_input kernel, plus the bias."""

    def setup(y: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> Placed:
        def call() -> np.ndarray:
            out = gi.grad(y, w, spec)
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


def torch_backward_contender() -> Contender:
    """torch's backward of conv2d on the CPU: ``torch.autograd.grad`` of the output (the
    graph built once in setup) w.r.t. input, weight and bias, as many threads as Numba."""
    torch, why = torch_or_reason()
    name = BACKWARD.label(RIVAL)
    if torch is None:
        return unavailable(name, "cpu", "torch.autograd.grad through F.conv2d", why or "")
    import torch.nn.functional as F

    threads, restore = torch_on_numba_threads(torch)

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
                     setup, close=restore, op=BACKWARD.name)


def torch_transpose_contender() -> Contender:
    """``torch.nn.functional.conv_transpose2d`` on the CPU, as many threads as Numba."""
    torch, why = torch_or_reason()
    name = TRANSPOSE.label(RIVAL)
    if torch is None:
        return unavailable(name, "cpu", "torch.nn.functional.conv_transpose2d", why or "")
    import torch.nn.functional as F

    threads, restore = torch_on_numba_threads(torch)

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
                     close=restore, op=TRANSPOSE.name)


def op_contenders(names: Sequence[str | Contender], op: Op) -> dict[str, Contender]:
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

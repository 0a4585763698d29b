"""Which contenders a run times: names resolved, contenders made, ``auto`` included.

This sits above :mod:`convlab.bench.contenders` (how one kernel or rival is timed),
:mod:`convlab.bench.gpu` and :mod:`convlab.bench.backward`, and above the tuner: the
``auto`` contenders (the forward, and ``auto-bwd`` / ``auto-tr`` for the backward ops)
run what :func:`convlab.plan.plan` picks, and the plan may ask the tuner, which times
kernels with the layers below (docs/design.md, "Layers").  Nothing below imports this
module, so there is no loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import kernels
from ..kernels.registry import Kernel, Placed
from ..plan import plan
from ..shapes import ConvSpec
from .backward import op_contenders
from .contenders import (
    AUTO,
    RIVAL,
    Contender,
    kernel_contender,
    known_kernels,
    torch_available,
    torch_contender,
    unavailable,
)
from .gpu import GPU_RIVALS, cuda_timer, simulator_estimate, torch_gpu_contender
from .ops import BACKWARD, FORWARD, TRANSPOSE, Op


def auto_contender(weight_cache: bool = False) -> Contender:
    """What ``conv2d(..., algo="auto")`` runs on each layer: the kernel the autotuner
    measured fastest on this machine, else the rule's (:func:`convlab.plan.plan`),
    timed like that kernel; its record's note names the kernel.  With ``weight_cache``
    it runs as a ``Conv2d`` layer does."""
    ran: list[Kernel] = []  # the kernel the last setup chose: its tolerance is the gate's

    def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, spec: ConvSpec) -> Placed:
        choice = plan(spec, x.dtype, cached=weight_cache).choice_for("forward", x, w, b)
        ran[:] = [choice.kernel]
        placed = kernel_contender(choice.kernel, weight_cache).setup(x, w, b, spec)
        return dataclasses.replace(placed, note=f"ran {choice.kernel.name} ({choice.source})")

    def tolerance(spec: ConvSpec, dtype: Any) -> Any:
        # Not choose(spec): the harness asks for the gated batch's spec, which the tuner
        # may never have measured, so the rule's pick there can be another kernel (with
        # a tighter tolerance) than the one that ran on the layer.
        kern = ran[0] if ran else plan(spec, dtype, cached=weight_cache).forward.kernel
        return kern.tolerance(spec, dtype)

    return Contender(AUTO, "cpu", "algo='auto': the measured winner, else the rule",
                     lambda spec: None, tolerance, setup)


def auto_op_contender(op: Op, weight_cache: bool) -> Contender:
    """``auto-bwd`` / ``auto-tr``: what ``algo="auto"`` runs for the layer's gradients
    (:func:`convlab.plan.plan`: the measured winner, else the rule), as
    ``conv2d_input`` / ``conv2d_weight`` / ``conv_transpose2d`` run them: each call asks
    the plan for its kernels on its arrays (the dispatch a call pays, a NaN/Inf scan
    where a kernel needs one).  With ``weight_cache``, as ``Conv2d.backward`` does: the
    grad_input kernel's weight transform made once (in setup) and kept.  The note names
    the kernels."""
    ran: list[Kernel] = []  # the last setup's kernels: their tolerances gate the check

    def kept(gi: Kernel, w: np.ndarray, spec: ConvSpec) -> Any:
        return (gi.transform_weight(w, spec)
                if weight_cache and gi.transform_weight is not None else None)

    if op is BACKWARD:
        def setup(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, go: np.ndarray,
                  spec: ConvSpec) -> Placed:
            the_plan = plan(spec, x.dtype, cached=weight_cache)
            ran[:] = [the_plan.kernel_for("grad_input", go, w),
                      the_plan.kernel_for("grad_weight", x, go)]
            tw = kept(ran[0], w, spec)

            def call() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                gi = the_plan.kernel_for("grad_input", go, w)
                gw = the_plan.kernel_for("grad_weight", x, go)
                return gi.grad(go, w, spec, tw), gw.grad(x, go, spec), go.sum(axis=(0, 2, 3))

            return Placed(call, lambda out: out, note=f"ran {ran[0].name}+{ran[1].name}")

        def tolerance(spec: ConvSpec, dtype: Any) -> Any:
            the_plan = plan(spec, dtype, cached=weight_cache)
            gi, gw = ran if ran else (the_plan.grad_input.kernel, the_plan.grad_weight.kernel)
            tol = gw.tolerance(spec, dtype)
            return gi.tolerance(spec, dtype), tol, tol

        return Contender(BACKWARD.label(AUTO), "cpu", "algo='auto''s grad_input + "
                         "grad_weight kernels, grad_output.sum for the bias",
                         lambda spec: None, tolerance, setup, op=BACKWARD.name)

    def setup_tr(y: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                 spec: ConvSpec) -> Placed:
        the_plan = plan(spec, y.dtype, cached=weight_cache)
        ran[:] = [the_plan.kernel_for("grad_input", y, w)]
        tw = kept(ran[0], w, spec)

        def call() -> np.ndarray:
            out = the_plan.kernel_for("grad_input", y, w).grad(y, w, spec, tw)
            if b is not None:
                out += b[None, :, None, None]
            return out

        return Placed(call, np.asarray, note=f"ran {ran[0].name}")

    def tolerance_tr(spec: ConvSpec, dtype: Any) -> float:
        gi = ran[0] if ran else plan(spec, dtype, cached=weight_cache).grad_input.kernel
        return gi.tolerance(spec, dtype)

    return Contender(TRANSPOSE.label(AUTO), "cpu", "conv_transpose2d on algo='auto''s "
                     "grad_input kernel, plus the bias", lambda spec: None, tolerance_tr,
                     setup_tr, op=TRANSPOSE.name)


def resolve_kernels(names: Sequence[str | Contender] | None, device: str = "cpu",
                    rival: bool = True,
                    ops: Sequence[str] = ("forward",)) -> list[str | Contender]:
    """Validate kernel names (a :class:`Contender` passes as it is: a kernel of your own,
    or a stand-in in a test); the default is every kernel for ``device`` (and ``ops``)
    plus the rival(s)."""
    if names is None and tuple(ops) != ("forward",):
        return list(op_default_names(ops, device, rival))
    chosen: list[str | Contender]
    if names is None:
        chosen = list(known_kernels(device))
        if rival and device == "cpu" and torch_available():
            chosen.append(RIVAL)
        if rival and device == "cuda":  # n/a records (with the reason) when torch can't
            chosen.extend(GPU_RIVALS)
        return chosen
    known = list(dict.fromkeys(known_kernels() + [n for op in ops for n in known_kernels(op=op)]
                               + [RIVAL, AUTO, *GPU_RIVALS]))
    chosen = []
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
    if op is not FORWARD:
        made_op: dict[str, Contender] = {}
        for name in names:
            if name == AUTO:  # the plan's kernels: the decision is a layer above the timing
                made_op[op.label(AUTO)] = auto_op_contender(op, weight_cache)
            else:
                made_op.update(op_contenders([name], op))
        return made_op
    made: dict[str, Contender] = {}
    for name in names:
        if isinstance(name, Contender):
            if name.op == FORWARD.name:
                made[name.name] = name
        elif name == RIVAL:
            made[name] = torch_contender()
        elif name == AUTO:
            made[name] = auto_contender(weight_cache)
        elif name in GPU_RIVALS:
            made[name] = torch_gpu_contender(name)
        elif name not in kernels.KERNELS:  # an algorithm with backward kernels only
            made[name] = unavailable(name, "cpu", name, f"{name} has no forward kernel")
        else:
            kern = kernels.KERNELS[name]
            if kern.device == "cuda":
                made[name] = kernel_contender(kern, weight_cache, timer=cuda_timer(),
                                              estimate=simulator_estimate())
            else:
                made[name] = kernel_contender(kern, weight_cache)
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


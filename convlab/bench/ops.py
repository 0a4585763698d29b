"""What the harness times on a layer: its forward, its backward, its transposed convolution.

* **forward** (always): ``conv2d(x, weight, bias)``; contenders are the forward
  kernels and ``torch`` (``torch.nn.functional.conv2d``).
* **backward** (``--backward``): grad_input + grad_weight + grad_bias from the layer's
  input, weight and a random grad_output: what the layer costs in a training step's
  backward pass.  The contender ``parallel-bwd`` runs the ``parallel`` grad_input
  and grad_weight kernels back to back (and ``grad_output.sum``); the rival
  ``torch-bwd`` is ``torch.autograd.grad`` through ``F.conv2d`` (the forward's graph
  is built once in setup, outside the timed calls).
* **transpose** (``--backward``): ``conv_transpose2d`` of an output-shaped array with the
  layer's weight, back to the input's shape (``TransposedSpec.inverting``: "the same
  shapes transposed"); ``im2col-tr`` is the im2col grad_input kernel plus the bias,
  the rival ``torch-tr`` is ``F.conv_transpose2d``.

A contender's name carries its op (``-bwd``, ``-tr``), so records, the table, the
plots and the JSON keep one row per (layer, contender); a record's ``op`` field says
which op it timed, and ratios (x torch, x naive) compare records of the same op (the
suffix is a label, never parsed back).  Each op brings its inputs, its float64 oracle (the
gate: :mod:`convlab.reference_backward` for the backward ones), its FLOPs
(direct-convolution FLOPs: the backward does two convolutions' worth, grad_input
and grad_weight) and its compulsory bytes.  The gate of a backward checks all three
gradients: grad_input on the first :func:`~convlab.bench.measure.gate_batch` images,
grad_weight and grad_bias (sums over the whole batch) in full.  (A forward may
instead be gated at sampled outputs: :func:`forward_problem`.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..reference import conv2d_reference, conv2d_reference_at, sample_positions
from ..reference_backward import conv2d_input_reference, conv2d_weight_reference
from ..shapes import ConvSpec, TransposedSpec
from ..validate import prepare


@dataclass(frozen=True)
class Op:
    """One thing the harness can time on a layer (see the module docstring)."""

    name: str
    suffix: str  # appended to a contender's name: "parallel" -> "parallel-bwd"
    title: str  # for the table
    parts: tuple[str, ...]  # what a call returns, in order

    def label(self, name: str) -> str:
        return name + self.suffix


FORWARD = Op("forward", "", "conv2d", ("output",))
BACKWARD = Op("backward", "-bwd", "backward: grad_input + grad_weight + grad_bias",
              ("grad_input", "grad_weight", "grad_bias"))
TRANSPOSE = Op("transpose", "-tr", "conv_transpose2d back to the input's shape",
               ("output",))
OPS: dict[str, Op] = {op.name: op for op in (FORWARD, BACKWARD, TRANSPOSE)}
# one gradient alone, as the tuner measures each backward kernel (not a `convlab bench` op)
GRAD_INPUT = Op("grad_input", "-gi", "grad_input alone", ("grad_input",))
GRAD_WEIGHT = Op("grad_weight", "-gw", "grad_weight alone", ("grad_weight",))
GRAD_OPS: dict[str, Op] = {op.name: op for op in (GRAD_INPUT, GRAD_WEIGHT)}
# the registry ops a contender of each bench op needs
KERNEL_OPS: dict[str, tuple[str, ...]] = {"forward": ("forward",),
                                          "backward": ("grad_input", "grad_weight"),
                                          "transpose": ("grad_input",)}


def op_named(name: str) -> Op:
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; ops: {', '.join(OPS)}")
    return OPS[name]


@dataclass
class Problem:
    """One (layer, op), set up for the gate: the arrays every contender's ``setup``
    receives (then the spec), the kernels' spec, and the float64 answer."""

    op: Op
    arrays: tuple[Any, ...]
    spec: ConvSpec  # what the kernels see (zero padding; the forward's spec)
    oracle: Callable[[], tuple[np.ndarray, ...]]  # cached: computed once, on first use
    gate_batch: int
    flops: int
    bytes: int
    why_not: str | None = None  # why no contender can run this op on this layer
    # a forward checked at sampled outputs instead (rows n, i, j; every image counts)
    positions: np.ndarray | None = None

    def gated(self, result: Any) -> tuple[np.ndarray, ...]:
        """The parts of a contender's result the oracle covers (the first gate_batch
        images of a per-image result, sums in full; or the sampled outputs)."""
        parts = result if isinstance(result, tuple) else (result,)
        gb = self.gate_batch
        if self.op is BACKWARD:
            gi, gw, gbias = parts
            return (np.asarray(gi)[:gb], np.asarray(gw), np.asarray(gbias))
        if self.op is GRAD_WEIGHT:  # a sum over the whole batch: checked in full
            return (np.asarray(parts[0]),)
        out = np.asarray(parts[0])
        if self.positions is not None:
            p = self.positions
            return (out[p[:, 0], :, p[:, 1], p[:, 2]],)
        return (out[:gb],)

    def gate_spec(self) -> ConvSpec:
        """The spec tolerances are computed for: the gated batch for the forward (as
        the harness always did), the full batch for the backward (grad_weight sums over
        it)."""
        whole = self.op is BACKWARD or self.op is GRAD_WEIGHT
        return self.spec if whole else self.spec.with_batch(self.gate_batch)


def forward_problem(arrays: tuple[Any, ...], spec: ConvSpec,
                    gate_batch: Callable[[ConvSpec], int], sampled: bool = False) -> Problem:
    """The forward of prepared ``arrays`` (x, weight, bias) and their kernel ``spec``:
    gated on the whole output of the first ``gate_batch`` images, or, ``sampled``, on
    :func:`~convlab.reference.sample_positions` of every image (the oracle at a few
    outputs costs little beside a fast kernel: the autotuner's gate)."""
    x, w, b = arrays
    if sampled:
        positions = sample_positions(spec)
        oracle = functools.cache(lambda: (conv2d_reference_at(x, w, b, spec, positions),))
        return Problem(FORWARD, arrays, spec, oracle, spec.batch, spec.flops(),
                       spec.bytes_moved(x.dtype.itemsize), positions=positions)
    gb = gate_batch(spec)
    oracle = functools.cache(lambda: (conv2d_reference(x[:gb], w, b, spec.with_batch(gb)),))
    return Problem(FORWARD, arrays, spec, oracle, gb, spec.flops(),
                   spec.bytes_moved(x.dtype.itemsize))


def grad_problem(op: Op, arrays: tuple[Any, ...], spec: ConvSpec,
                 gate_batch: Callable[[ConvSpec], int]) -> Problem:
    """One gradient of a convolution alone (``GRAD_INPUT`` or ``GRAD_WEIGHT``) on prepared
    ``arrays`` (x, weight, bias, grad_output) and their kernel ``spec``: what the tuner
    gates and times a backward kernel on.  grad_input is gated on the first
    ``gate_batch`` images, grad_weight (a sum over the batch) in full."""
    x, w, _, go = arrays
    gb = gate_batch(spec)
    if op is GRAD_INPUT:
        oracle = functools.cache(lambda: (conv2d_input_reference(go[:gb], w,
                                                                 spec.with_batch(gb)),))
    elif op is GRAD_WEIGHT:
        oracle = functools.cache(lambda: (conv2d_weight_reference(x, go, spec),))
    else:
        raise ValueError(f"not a single gradient: {op.name!r}")
    return Problem(op, arrays, spec, oracle, gb, spec.flops(),
                   spec.bytes_moved(x.dtype.itemsize))


def problem(op: Op, layer_args: dict[str, Any], spec: ConvSpec, dtype: Any, seed: int,
            gate_batch: Callable[[ConvSpec], int]) -> Problem:
    """Random normal inputs for ``op`` on a layer of ``spec`` (never zeros or ones:
    they hide wrong indexing), passed through :func:`convlab.functional.prepare` once,
    exactly as ``conv2d`` hands them to a kernel."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((spec.batch, spec.in_channels, spec.height, spec.width))
    w = rng.standard_normal(spec.weight_shape)
    b = rng.standard_normal(spec.bias_shape)
    xa, wa, ba, kspec = prepare(x.astype(dtype), w.astype(dtype), b.astype(dtype),
                                **layer_args)
    assert ba is not None
    gb = gate_batch(kspec)
    if op is FORWARD:
        return forward_problem((xa, wa, ba), kspec, gate_batch)
    go = rng.standard_normal(kspec.batched_output_shape).astype(dtype)
    if op is BACKWARD:
        def backward_oracle() -> tuple[np.ndarray, ...]:
            return (conv2d_input_reference(go[:gb], wa, kspec.with_batch(gb)),
                    conv2d_weight_reference(xa, go, kspec),
                    go.astype(np.float64).sum(axis=(0, 2, 3)))

        return Problem(op, (xa, wa, ba, go), kspec, functools.cache(backward_oracle), gb,
                       2 * kspec.flops(), kspec.backward_bytes_moved(xa.dtype.itemsize))

    # transpose: y (the layer's output shape) -> the input's shape; its bias has one
    # element per channel of that result (the layer's input channels)
    bt = rng.standard_normal(kspec.in_channels).astype(dtype)

    def transpose_oracle() -> tuple[np.ndarray, ...]:
        out = conv2d_input_reference(go[:gb], wa, kspec.with_batch(gb))
        return (out + bt.astype(np.float64)[None, :, None, None],)

    why = None if transposed(kspec) is not None else (
        f"conv_transpose2d pads symmetrically; this layer pads (t,b,l,r) {kspec.padding}")
    return Problem(op, (go, wa, bt), kspec, functools.cache(transpose_oracle), gb,
                   kspec.flops(), kspec.bytes_moved(xa.dtype.itemsize), why)


def transposed(spec: ConvSpec) -> TransposedSpec | None:
    """The transposed convolution a layer's transpose op runs, or None (asymmetric
    padding: torch's ConvTranspose2d has none)."""
    try:
        return TransposedSpec.inverting(spec)
    except ValueError:
        return None

"""The backward pass, PyTorch's functional API on NumPy: ``conv2d_input``,
``conv2d_weight`` and ``conv_transpose2d``.

A convolution's output is a sum of products, ``out = sum x * w``, so its gradient
with respect to each factor is a convolution-like sum of the other factor times
the output's gradient (``convlab.reference_backward`` derives it):

* ``conv2d_input(input_size, weight, grad_output, ...)``: d loss / d input, as
  ``torch.nn.grad.conv2d_input``;
* ``conv2d_weight(input, weight_size, grad_output, ...)``: d loss / d weight, as
  ``torch.nn.grad.conv2d_weight``;
* the bias's gradient is ``grad_output.sum((0, 2, 3))`` (one NumPy call);
* ``conv_transpose2d(x, weight, ...)``: the transposed convolution, as
  ``torch.nn.functional.conv_transpose2d``.  It *is* ``conv2d_input`` (the gradient
  of the convolution that goes the other way, :meth:`TransposedSpec.forward_spec`)
  plus a bias, so it runs on the same ``grad_input`` kernels: convlab registers no
  separate "transpose" op (one algorithm, one kernel per file, and the only
  differences, the bias and ``output_padding``'s extra zero rows, are bookkeeping).

This layer does for the backward what :mod:`convlab.functional` does for the
forward: checks arrays and dtypes, builds the forward's :class:`ConvSpec` (every
padding the forward takes: ints, pairs, 'valid', 'same' incl. the asymmetric
kind, every ``padding_mode``), hands the kernel C-contiguous batched arrays and
the zero-padded spec, and brings the answer back to the caller's shape.  For a
'reflect', 'replicate' or 'circular' padding the kernel computes the gradient with
respect to the *padded* input, and :func:`convlab.padding.pad_adjoint` folds it back: each padded
cell was a copy of an input cell, so its gradient adds onto that cell (the adjoint
of :func:`convlab.padding.pad`).

torch's own ``conv2d_input``/``conv2d_weight`` take 4-D tensors and no string
padding; convlab's also take unbatched arrays and every padding the forward takes.
Arrays are never modified in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels
from .functional import _all_finite, _as_array, kernel_input, kernel_spec
from .kernels.registry import Kernel
from .padding import pad_adjoint
from .shapes import ConvSpec, IntOrPair, PaddingArg, TransposedSpec, _shape_str


def _same_dtype(names: tuple[str, ...], arrays: tuple[np.ndarray, ...]) -> None:
    if len({a.dtype for a in arrays}) > 1:
        got = ", ".join(f"{n} {a.dtype}" for n, a in zip(names, arrays))
        raise TypeError(f"{' and '.join(names)} must have the same dtype; got {got}")


def _check_grad_output(grad_output: np.ndarray, spec: ConvSpec) -> None:
    if grad_output.shape != spec.output_shape:
        raise ValueError(
            f"grad_output has size {_shape_str(grad_output.shape)}, but the convolution of an "
            f"input of size {_shape_str(spec.input_shape)} with a weight of size "
            f"{_shape_str(spec.weight_shape)} (stride {spec.stride}, padding (t,b,l,r) "
            f"{spec.padding}, dilation {spec.dilation}, groups {spec.groups}) has an output "
            f"of size {_shape_str(spec.output_shape)}"
        )


def _shape_arg(value: Any, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of ints (a shape), got {value!r}") from None


def _kernel(algo: str, op: str) -> str | Kernel:
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a kernel name (str), got {algo!r}")
    # an unknown name fails before anything else is checked
    return algo if algo == "auto" else kernels.get(algo, op)


def _empty(spec: ConvSpec) -> bool:
    """A batch or input channels of 0: the output had no element, so both gradients are
    zeros of torch's shape, without a kernel (as the forward's empty output,
    ``convlab.functional.conv2d``)."""
    return spec.batch == 0 or spec.in_channels == 0


def _resolve(chosen: str | Kernel, spec: ConvSpec, op: str, *arrays: np.ndarray) -> Kernel:
    finite = True
    if chosen == "auto" and kernels.choose(spec, op=op).kernel.nonfinite != "exact":
        finite = _all_finite(*arrays)  # ~0.1 ms per million values
    return kernels.resolve(chosen, spec, finite, op)


def conv2d_input(
    input_size: Any,
    weight: Any,
    grad_output: Any,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    algo: str = "auto",
) -> np.ndarray:
    """Gradient of ``conv2d`` with respect to its input, as ``torch.nn.grad.conv2d_input``.

    Args:
        input_size: the input's shape, (N, C, H, W) or unbatched (C, H, W).
        weight: (K, C/groups, kh, kw) float32/float64 array.
        grad_output: the loss's gradient w.r.t. the output, shaped like the output.
        stride, padding, dilation, groups, padding_mode: the forward's arguments, as
            ``convlab.conv2d`` takes them ('same'/'valid' and every padding mode too).
        algo: a grad_input kernel name (``kernels.kernels_for("grad_input")``) or "auto".

    Returns:
        A new array of shape ``input_size``, of the weight's dtype.
    """
    chosen = _kernel(algo, "grad_input")
    size = _shape_arg(input_size, "input_size")
    wa, go = _as_array(weight, "weight"), _as_array(grad_output, "grad_output")
    _same_dtype(("weight", "grad_output"), (wa, go))
    spec = ConvSpec.from_shapes(size, wa.shape, stride, padding, dilation, groups, padding_mode)
    _check_grad_output(go, spec)
    kspec = kernel_spec(spec)
    go4 = np.ascontiguousarray(go.reshape(spec.batched_output_shape))
    wa = np.ascontiguousarray(wa)
    kernel = _resolve(chosen, kspec, "grad_input", go4, wa)
    if _empty(spec):
        grad = np.zeros((spec.batch, spec.in_channels, spec.height, spec.width), dtype=wa.dtype)
    else:
        grad = kernel.run(go4, wa, kspec)
        if spec.padding_mode != "zeros":
            grad = pad_adjoint(grad, spec)  # kernel gave d/d(padded input): fold back
    return grad.reshape(spec.input_shape)


def conv2d_weight(
    input: Any,  # torch's name
    weight_size: Any,
    grad_output: Any,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    algo: str = "auto",
) -> np.ndarray:
    """Gradient of ``conv2d`` with respect to its weight, as ``torch.nn.grad.conv2d_weight``.

    Args:
        input: the forward's input, (N, C, H, W) or unbatched (C, H, W).
        weight_size: the weight's shape, (K, C/groups, kh, kw).
        grad_output: the loss's gradient w.r.t. the output, shaped like the output.
        stride, padding, dilation, groups, padding_mode: the forward's arguments.
        algo: a grad_weight kernel name (``kernels.kernels_for("grad_weight")``) or "auto".

    Returns:
        A new array of shape ``weight_size``, of the input's dtype (summed over the batch).
    """
    chosen = _kernel(algo, "grad_weight")
    size = _shape_arg(weight_size, "weight_size")
    xa, go = _as_array(input, "input"), _as_array(grad_output, "grad_output")
    _same_dtype(("input", "grad_output"), (xa, go))
    spec = ConvSpec.from_shapes(xa.shape, size, stride, padding, dilation, groups, padding_mode)
    _check_grad_output(go, spec)
    x4 = kernel_input(xa, spec)  # the kernel sees what the forward's kernel saw
    kspec = kernel_spec(spec)
    go4 = np.ascontiguousarray(go.reshape(spec.batched_output_shape))
    kernel = _resolve(chosen, kspec, "grad_weight", x4, go4)
    if _empty(spec):
        return np.zeros(spec.weight_shape, dtype=xa.dtype)
    return kernel.run(x4, go4, kspec)


def conv2d_bias(grad_output: Any, out_channels: int | None = None) -> np.ndarray:
    """Gradient of ``conv2d`` with respect to its bias: ``grad_output`` summed over the
    batch and every position, (K,).  ``grad_output`` is (N, K, Ho, Wo) or (K, Ho, Wo).

    ``out_channels`` (K), when given, fixes the result's shape: an input with zero
    channels gives an output with zero channels (torch's, ``ConvSpec.output_shape``),
    which the bias never reached, so its gradient is K zeros, as torch's is.  An empty
    batch gives K zeros by itself (a sum over nothing)."""
    go = _as_array(grad_output, "grad_output")
    if go.ndim not in (3, 4):
        raise ValueError("Expected 3D (unbatched) or 4D (batched) grad_output, but got "
                         f"grad_output of size: {_shape_str(go.shape)}")
    channels = go.shape[-3]
    if out_channels is not None and channels != out_channels:
        if channels:
            raise ValueError(f"grad_output has {channels} channels, expected {out_channels} "
                             "(the bias's size) or 0 (an input with zero channels)")
        return np.zeros(out_channels, dtype=go.dtype)
    return go.sum(axis=(0, 2, 3) if go.ndim == 4 else (1, 2))


def conv_transpose2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
    *,
    algo: str = "auto",
) -> np.ndarray:
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d`` computes it.

    Args:
        x: (N, C_in, H, W) or unbatched (C_in, H, W) float32/float64 array.
        weight: (C_in, C_out/groups, kh, kw), same dtype (torch's layout).
        bias: (C_out,) or None.
        stride, padding, output_padding, groups, dilation: torch's, in torch's order;
            padding is an int or a pair (no strings: torch takes none here).
        algo: a grad_input kernel name or "auto": this *is* the input gradient of the
            convolution ``TransposedSpec.forward_spec()``.

    Returns:
        A new (N, C_out, H_out, W_out) array, H_out = (H-1)*stride - 2*padding +
        dilation*(kh-1) + output_padding + 1 (``convlab.shapes``).
    """
    chosen = _kernel(algo, "grad_input")
    xa, wa = _as_array(x, "input"), _as_array(weight, "weight")
    ba = None if bias is None else _as_array(bias, "bias")
    _same_dtype(("input", "weight") + (("bias",) if ba is not None else ()),
                (xa, wa) + ((ba,) if ba is not None else ()))
    tspec = TransposedSpec.from_shapes(xa.shape, wa.shape, stride, padding, output_padding,
                                       groups, dilation)
    if ba is not None and ba.shape != tspec.bias_shape:
        raise ValueError(
            f"Given transposed=1, weight of size {_shape_str(wa.shape)}, expected bias to be "
            f"1-dimensional with {tspec.out_channels} elements, but got bias of size "
            f"{_shape_str(ba.shape)} instead")
    fspec = tspec.forward_spec()
    x4 = xa.reshape(tspec.batch, tspec.in_channels, tspec.height, tspec.width)
    if fspec.batched_output_shape != x4.shape:
        # output_padding >= stride (allowed when < dilation): the forward convolution of
        # the bigger output has output_padding // stride more rows, which nothing fed
        grown = np.zeros(fspec.batched_output_shape, dtype=xa.dtype)
        grown[:, :, :tspec.height, :tspec.width] = x4
        x4 = grown
    go4 = np.ascontiguousarray(x4)
    wa = np.ascontiguousarray(wa)
    kernel = _resolve(chosen, fspec, "grad_input", go4, wa)
    if tspec.batch == 0:
        out = np.zeros(tspec.batched_output_shape, dtype=xa.dtype)
    else:
        out = kernel.run(go4, wa, fspec)
    if ba is not None:
        out += ba[None, :, None, None]  # the kernel's result is a new array: add in place
    return out.reshape(tspec.output_shape)

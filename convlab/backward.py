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

from .functional import WeightCache
from .kernels import registry
from .padding import pad_adjoint
from .plan import Plan, plan
from .shapes import ConvSpec, IntOrPair, PaddingArg, TransposedSpec, _shape_str
from .validate import (
    as_array,
    check_algo,
    contiguous,
    conv_spec,
    kernel_input,
    kernel_spec,
    same_dtype,
    shape_arg,
)


def _check_grad_output(grad_output: np.ndarray, spec: ConvSpec) -> None:
    if grad_output.shape != spec.output_shape:
        raise ValueError(
            f"grad_output has size {_shape_str(grad_output.shape)}, but the convolution of an "
            f"input of size {_shape_str(spec.input_shape)} with a weight of size "
            f"{_shape_str(spec.weight_shape)} (stride {spec.stride}, padding (t,b,l,r) "
            f"{spec.padding}, dilation {spec.dilation}, groups {spec.groups}) has an output "
            f"of size {_shape_str(spec.output_shape)}"
        )


def _backward_algo(algo: Any, op: str) -> str:
    """A kernel name, "auto" or "tune" (measure this op's kernels here, remember the
    fastest: :func:`convlab.tuning.tune` with ``op``)."""
    if check_algo(algo) not in ("auto", "tune"):
        registry.get(algo, op)  # an unknown name fails before anything else is checked
    return algo


def input_grad(the_plan: Plan, spec: ConvSpec, go4: np.ndarray,
               weight: np.ndarray, cache: WeightCache | None = None) -> np.ndarray:
    """d loss / d input of the convolution ``spec`` (batched ``go4`` and ``weight``,
    C-contiguous), by ``the_plan``'s grad_input kernel; shaped as ``spec.input_shape``.

    ``cache``: where the kernel's weight transform (``polyphase``'s flipped sub-kernels
    and their Winograd ``U``) is kept between calls, checked against ``weight``'s bits
    on every call (``Conv2d.backward`` passes its layer's); None computes it per call,
    as the functional ``conv2d_input`` does (and ``conv_transpose2d`` without ``cache=``)."""
    if _empty(spec):
        return np.zeros(spec.input_shape, dtype=weight.dtype)
    kernel = the_plan.kernel_for("grad_input", go4, weight)
    transformed = None if cache is None else cache.get(kernel, weight, the_plan.spec)
    grad = kernel.grad(go4, weight, the_plan.spec, transformed)
    if spec.padding_mode != "zeros":
        grad = pad_adjoint(grad, spec)  # kernel gave d/d(padded input): fold back
    return grad if spec.batched else grad[0]


def _empty(spec: ConvSpec) -> bool:
    """A batch or input channels of 0: the output had no element, so both gradients are
    zeros of torch's shape, without a kernel (as the forward's empty output,
    ``convlab.functional.conv2d``)."""
    return spec.batch == 0 or spec.in_channels == 0


def weight_grad(the_plan: Plan, spec: ConvSpec, x4: np.ndarray,
                go4: np.ndarray) -> np.ndarray:
    """d loss / d weight of the convolution ``spec``, from the input as its kernel saw it
    (``x4``: batched, padded for a non-zero padding mode) and batched ``go4``."""
    if _empty(spec):
        return np.zeros(spec.weight_shape, dtype=x4.dtype)
    kernel = the_plan.kernel_for("grad_weight", x4, go4)
    return kernel.grad(x4, go4, the_plan.spec)


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
    algo = _backward_algo(algo, "grad_input")
    size = shape_arg(input_size, "input_size")
    wa, go = as_array(weight, "weight"), as_array(grad_output, "grad_output")
    same_dtype(("weight", "grad_output"), (wa, go))
    spec = conv_spec(size, wa.shape, stride, padding, dilation, groups, padding_mode)
    _check_grad_output(go, spec)
    go4 = contiguous(go.reshape(spec.batched_output_shape))
    the_plan = plan(kernel_spec(spec), wa.dtype, backward_algo=algo)
    return input_grad(the_plan, spec, go4, contiguous(wa))


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
    algo = _backward_algo(algo, "grad_weight")
    size = shape_arg(weight_size, "weight_size")
    xa, go = as_array(input, "input"), as_array(grad_output, "grad_output")
    same_dtype(("input", "grad_output"), (xa, go))
    spec = conv_spec(xa.shape, size, stride, padding, dilation, groups, padding_mode)
    _check_grad_output(go, spec)
    x4 = kernel_input(xa, spec)  # the kernel sees what the forward's kernel saw
    go4 = contiguous(go.reshape(spec.batched_output_shape))
    the_plan = plan(kernel_spec(spec), xa.dtype, backward_algo=algo)
    return weight_grad(the_plan, spec, x4, go4)


def conv2d_bias(grad_output: Any, out_channels: int | None = None) -> np.ndarray:
    """Gradient of ``conv2d`` with respect to its bias: ``grad_output`` summed over the
    batch and every position, (K,).  ``grad_output`` is (N, K, Ho, Wo) or (K, Ho, Wo).

    ``out_channels`` (K), when given, fixes the result's shape: an input with zero
    channels gives an output with zero channels (torch's, ``ConvSpec.output_shape``),
    which the bias never reached, so its gradient is K zeros, as torch's is.  An empty
    batch gives K zeros by itself (a sum over nothing)."""
    go = as_array(grad_output, "grad_output")
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
    cache: WeightCache | None = None,
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
        cache: a :class:`~convlab.functional.WeightCache` keeping the grad_input kernel's
            weight transform between calls (``ConvTranspose2d`` passes its own), as
            ``conv2d``'s; None transforms per call.

    Returns:
        A new (N, C_out, H_out, W_out) array, H_out = (H-1)*stride - 2*padding +
        dilation*(kh-1) + output_padding + 1 (``convlab.shapes``).
    """
    algo = _backward_algo(algo, "grad_input")
    xa, wa = as_array(x, "input"), as_array(weight, "weight")
    ba = None if bias is None else as_array(bias, "bias")
    same_dtype(("input", "weight") + (("bias",) if ba is not None else ()),
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
    # with a cache the transform is kept between calls: the rule may pick a kernel whose
    # transform only pays back when kept (Kernel.auto_when_per_call)
    the_plan = plan(fspec, xa.dtype, cached=cache is not None, backward_algo=algo)
    out = input_grad(the_plan, fspec, contiguous(x4), contiguous(wa), cache)
    if ba is not None:
        out += ba[None, :, None, None]  # the kernel's result is a new array: add in place
    return out.reshape(tspec.output_shape)

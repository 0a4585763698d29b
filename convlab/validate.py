"""Checking what a caller hands convlab, and shaping it for a kernel: the one public
validation module (the functional API, the backward, the layers and the benchmark
harness all call it; nobody imports another module's private checks).

What it does, in the order a call needs it:

1. :func:`as_array`: a NumPy array (or a torch tensor, detached) of float32 or float64,
   with PyTorch-like wording when it is not; :func:`check_arrays` and
   :func:`same_dtype` insist that every operand has one dtype;
2. :func:`conv_spec`: :meth:`ConvSpec.from_shapes`, remembered per argument tuple.
   Building a spec checks every argument with PyTorch's wording (about 20 us); a layer
   called on the same shape again pays a dictionary look-up instead.  Only arguments of
   exactly ``int``/``str``/tuples of ``int`` are remembered: ``1.0 == 1`` and
   ``True == 1`` in a dict, and those must still be refused each time;
3. :func:`kernel_spec` / :func:`kernel_input`: what a kernel sees (zero padding only:
   a non-zero ``padding_mode`` is materialised with :func:`convlab.padding.pad`);
4. :func:`all_finite`: whether NaN/Inf are present (``algo="auto"`` passes over kernels
   whose NaN pattern differs from PyTorch's, docs/design.md "Numerics").

Nothing here picks a kernel (that is :mod:`convlab.plan`) or runs one.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import _scan
from .padding import pad
from .shapes import ConvSpec, IntOrPair, PaddingArg, _shape_str

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a float32/float64 array (a torch tensor is detached and copied to
    the host); any other dtype is a TypeError that says how to convert it."""
    if type(value) is np.ndarray:  # the common case, without asarray's overhead
        arr = value
    else:
        if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
    if arr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"conv2d supports float32 and float64 arrays; got {name} of dtype "
                        f"{arr.dtype} (convert it with .astype(np.float32))")
    return arr


def same_dtype(names: tuple[str, ...], arrays: tuple[np.ndarray, ...]) -> None:
    """A TypeError naming each operand's dtype unless they all have one."""
    first = arrays[0].dtype
    if any(a.dtype != first for a in arrays[1:]):
        got = ", ".join(f"{n} {a.dtype}" for n, a in zip(names, arrays))
        raise TypeError(f"{' and '.join(names)} must have the same dtype; got {got}")


def check_arrays(x: Any, weight: Any, bias: Any) -> tuple[np.ndarray, np.ndarray,
                                                            np.ndarray | None]:
    """conv2d's three operands as arrays of one supported dtype."""
    x = as_array(x, "input")
    weight = as_array(weight, "weight")
    bias = None if bias is None else as_array(bias, "bias")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        got = f"input {x.dtype}, weight {weight.dtype}" + (
            f", bias {bias.dtype}" if bias is not None else "")
        raise TypeError(f"input, weight and bias must have the same dtype; got {got}")
    return x, weight, bias


def check_bias(bias: np.ndarray | None, weight: np.ndarray) -> None:
    """torch's error for a bias that is not (out_channels,)."""
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"Given weight of size {_shape_str(weight.shape)}, expected bias to "
                         f"be 1-dimensional with {weight.shape[0]} elements, but got bias of "
                         f"size {_shape_str(bias.shape)} instead")


def shape_arg(value: Any, name: str) -> tuple[int, ...]:
    """A shape given as a sequence of ints (``input_size``, ``weight_size``)."""
    try:
        return tuple(int(s) for s in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of ints (a shape), got {value!r}") from None


def check_algo(algo: Any) -> str:
    """``algo`` must be a string (a kernel name, "auto" or "tune")."""
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a kernel name (str), got {algo!r}")
    return algo


# ------------------------------------------------------------------ specs, remembered
_SPECS: dict[tuple[Any, ...], ConvSpec] = {}
_SPECS_LOCK = threading.Lock()
_SPECS_MAX = 4096  # distinct argument tuples kept; past that the memory starts again


def _exact(value: Any) -> bool:
    """Whether ``value`` can key the memory exactly: an int, a str or a tuple of ints.
    A float, a bool, a NumPy integer or a list is checked every time instead."""
    kind = type(value)
    if kind is int or kind is str:
        return True
    if kind is tuple:
        for item in value:
            if type(item) is not int:
                return False
        return True
    return False


def conv_spec(input_shape: tuple[int, ...], weight_shape: tuple[int, ...],
              stride: IntOrPair = 1, padding: PaddingArg = 0, dilation: IntOrPair = 1,
              groups: int = 1, padding_mode: str = "zeros") -> ConvSpec:
    """:meth:`ConvSpec.from_shapes`, remembered per exact argument tuple (module
    docstring): the same arguments give the same spec, or the same error, every time."""
    key = (input_shape, weight_shape, stride, padding, dilation, groups, padding_mode)
    spec = _SPECS.get(key) if all(map(_exact, key)) else None
    if spec is None:
        spec = ConvSpec.from_shapes(input_shape, weight_shape, stride, padding, dilation,
                                    groups, padding_mode)  # raises: nothing is kept
        if all(map(_exact, key)):
            with _SPECS_LOCK:
                if len(_SPECS) >= _SPECS_MAX:
                    _SPECS.clear()
                _SPECS[key] = spec
    return spec


# ------------------------------------------------------------------ what a kernel sees
def kernel_spec(spec: ConvSpec) -> ConvSpec:
    """The spec a kernel sees for ``spec``: the same, or, for a non-zero padding mode,
    the explicitly padded one (the input arrives padded, kernels pad with zeros only)."""
    return spec if spec.padding_mode == "zeros" else spec.explicitly_padded()


def kernel_input(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``x`` as a kernel sees it: batched, padded for a non-zero padding mode (kernels pad
    with zeros only), C-contiguous; ``x`` itself when nothing had to change."""
    if spec.batched:
        x4 = x
    else:
        x4 = x.reshape(spec.batch, spec.in_channels, spec.height, spec.width)
    if spec.padding_mode != "zeros":
        x4 = pad(x4, spec)
    return x4 if x4.flags.c_contiguous else np.ascontiguousarray(x4)


def contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` itself when C-contiguous, else a C-contiguous copy."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def prepare(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, ConvSpec]:
    """Validate and normalise arguments: returns the arrays and spec a kernel takes.

    The arrays are C-contiguous, batched, and new copies wherever a change was
    needed; the spec is the one the kernel must see (:func:`kernel_spec`: padding
    materialised for non-zero modes).  Exposed for the benchmark harness, which
    times kernels without this step.
    """
    x, weight, bias = check_arrays(x, weight, bias)
    spec = conv_spec(x.shape, weight.shape, stride, padding, dilation, groups, padding_mode)
    check_bias(bias, weight)
    return (kernel_input(x, spec), contiguous(weight),
            None if bias is None else contiguous(bias), kernel_spec(spec))


def all_finite(*arrays: np.ndarray | None) -> bool:
    """No NaN and no Inf in any of ``arrays`` (None is skipped): one pass over each,
    on Numba's threads for big ones (:mod:`convlab._scan`)."""
    return all(a is None or _scan.all_finite(a) for a in arrays)

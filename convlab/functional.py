"""``conv2d``: the functional API, PyTorch's ``torch.nn.functional.conv2d`` on NumPy.

This is the layer between people and kernels.  It

1. turns whatever it was given into arrays and checks their dtypes
   (float32 or float64, all alike: a kernel never sees a surprise type);
2. builds the :class:`ConvSpec`, which validates every argument with PyTorch's
   wording and knows every size;
3. materialises non-zero padding modes ('reflect', 'replicate', 'circular')
   with :func:`convlab.padding.pad`, so kernels only ever handle zero padding;
4. picks the kernel (``algo=``) and runs it on C-contiguous copies when needed:
   the caller's arrays are never written to.

Unbatched (C, H, W) input is run as a batch of one and squeezed back, as
PyTorch does.  A batch of zero gives an empty output without calling a kernel.

A kernel that transforms its weight before use (Winograd's U = G g G^T)
registers ``transform_weight=fn``; a :class:`WeightCache` passed as ``cache=``
(every ``Conv2d`` has one) keeps that transform between calls.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import kernels
from .kernels.registry import Choice, Kernel
from .padding import pad
from .shapes import ConvSpec, IntOrPair, PaddingArg

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"conv2d supports float32 and float64 arrays; got {name} of dtype "
                        f"{arr.dtype} (convert it with .astype(np.float32))")
    return arr


def _check_arrays(x: Any, weight: Any, bias: Any) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray | None]:
    x = _as_array(x, "input")
    weight = _as_array(weight, "weight")
    bias = None if bias is None else _as_array(bias, "bias")
    dtypes = {x.dtype, weight.dtype} | ({bias.dtype} if bias is not None else set())
    if len(dtypes) > 1:
        got = f"input {x.dtype}, weight {weight.dtype}" + (
            f", bias {bias.dtype}" if bias is not None else "")
        raise TypeError(f"input, weight and bias must have the same dtype; got {got}")
    return x, weight, bias


def _check_bias(bias: np.ndarray | None, weight: np.ndarray) -> None:
    if bias is not None and bias.shape != (weight.shape[0],):
        wshape = "[" + ", ".join(map(str, weight.shape)) + "]"
        bshape = "[" + ", ".join(map(str, bias.shape)) + "]"
        raise ValueError(f"Given weight of size {wshape}, expected bias to be 1-dimensional "
                         f"with {weight.shape[0]} elements, but got bias of size {bshape} "
                         "instead")


def kernel_spec(spec: ConvSpec) -> ConvSpec:
    """The spec a kernel sees for ``spec``: the same, or, for a non-zero padding mode,
    the explicitly padded one (the input arrives padded, kernels pad with zeros only)."""
    return spec if spec.padding_mode == "zeros" else spec.explicitly_padded()


def kernel_input(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``x`` as a kernel sees it: batched, padded for a non-zero padding mode (kernels pad
    with zeros only), C-contiguous; ``x`` itself when nothing had to change."""
    x4 = x.reshape(spec.batch, spec.in_channels, spec.height, spec.width)
    if spec.padding_mode != "zeros":
        x4 = pad(x4, spec)
    return np.ascontiguousarray(x4)


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
    x, weight, bias = _check_arrays(x, weight, bias)
    spec = ConvSpec.from_shapes(x.shape, weight.shape, stride, padding, dilation, groups,
                                padding_mode)
    _check_bias(bias, weight)
    return (kernel_input(x, spec), np.ascontiguousarray(weight),
            None if bias is None else np.ascontiguousarray(bias), kernel_spec(spec))


class WeightCache:
    """Kernel-specific transforms of a weight, kept between calls and never stale.

    A kernel opts in by registering ``transform_weight=fn`` (docs/design.md, "The
    kernel contract"): ``fn(weight, spec)`` returns what its ``run(...,
    transformed_weight=...)`` accepts in place of redoing that work.  ``fn`` may
    depend on the weight and the layer's hyper-parameters (groups), never on the
    input size.

    Staleness is ruled out by brute force: each entry keeps a private copy of the
    weight bits it was built from (its key), and every call compares the current
    weight with the key bit for bit (``np.array_equal`` on unsigned views: NaN-safe,
    ~0.5 ms for a 512x512x3x3 float32 weight, where transforming it takes ~10 ms).
    That sees every way NumPy can change a weight (``w[...] += 1``, writes through a
    view, ``load_state_dict``, assigning a new array), which an identity or version
    check would not.

    Thread safety: on a miss the weight is *copied first* and the copy is
    transformed, so an entry's transform is always the transform of exactly its key,
    even if another thread writes the weight meanwhile (a transform of the live
    array could mix old and new values and be filed under either).  A hit returns
    the transform of bits equal to the weight at the moment of the comparison.
    Entries are replaced under a lock; two threads missing at once both transform
    (the same bits, so either entry is right).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[np.ndarray, int, Any]] = {}
        self._lock = threading.Lock()

    def get(self, kernel: Kernel, weight: np.ndarray, spec: ConvSpec) -> Any:
        """``kernel``'s transform of ``weight`` (C-contiguous), or None if it has none."""
        transform = kernel.transform_weight
        if transform is None:
            return None
        with self._lock:
            entry = self._entries.get(kernel.name)
        if entry is not None and entry[1] == spec.groups and _same_bits(entry[0], weight):
            return entry[2]
        snapshot = weight.copy()  # the key: transform exactly these bits
        transformed = transform(snapshot, spec)
        with self._lock:
            self._entries[kernel.name] = (snapshot, spec.groups, transformed)
        return transformed

    def clear(self) -> None:
        """Forget every transform (they are rebuilt on the next call)."""
        with self._lock:
            self._entries.clear()

    # A pickled or copied layer carries no transforms: they are rebuilt on first use
    # (a 256x256 3x3 layer's F(4,3) filter is 16x its weight), and a lock cannot travel.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._entries)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_uint = np.dtype(f"u{a.itemsize}")
    return bool(np.array_equal(a.view(as_uint), b.view(as_uint)))


SELECTORS = ("auto", "tune")


def _lookup(algo: Any) -> Kernel | None:
    """The kernel ``algo`` names, or None for "auto"/"tune" (chosen per spec)."""
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a kernel name (str), got {algo!r}")
    return None if algo in SELECTORS else kernels.get(algo)


def _pick(algo: str, spec: ConvSpec, x: np.ndarray, w: np.ndarray,
          b: np.ndarray | None, cached: bool = False) -> Kernel:
    """The kernel "auto" or "tune" runs for these (prepared) arrays; ``cached``: a
    WeightCache keeps the weight's transform between calls (the tuner measured both)."""
    from . import tuning

    if algo == "tune" and spec.output_elements() > 0:
        tuned = tuning.tune(spec, x.dtype, cached=cached)
        kernel = kernels.get(tuned.winner)
        if kernel.nonfinite == "exact" or _all_finite(x, w, b):
            return kernel
    choice = tuning.choose(spec, x.dtype, cached=cached)
    if choice.kernel.nonfinite != "exact" and not _all_finite(x, w, b):  # ~0.1 ms / 1e6
        choice = tuning.choose(spec, x.dtype, finite=False, cached=cached)
    return choice.kernel


def _all_finite(*arrays: np.ndarray | None) -> bool:
    return all(a is None or bool(np.isfinite(a).all()) for a in arrays)


def explain(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    dtype: Any = None,
    op: str = "forward",
) -> Choice:
    """What ``conv2d(..., algo="auto")`` would run for these arguments, and why: a
    kernel measured fastest on this machine (:mod:`convlab.tuning`), or the rule.

    Arrays or shapes are accepted for ``x`` and ``weight``: a dry run, nothing is
    computed (``dtype``: for shapes, float32 unless given).  ``print(explain(...))``
    lists the kernels passed over too.  Given arrays holding NaN or Inf, the choice is
    the one ``conv2d`` makes for them.  ``op="grad_input"`` / ``"grad_weight"``: what
    ``convlab.conv2d_input`` / ``conv2d_weight`` would run for the backward of this
    convolution (by the rule: the autotuner measures forwards only).
    """
    from . import tuning

    xs = x if isinstance(x, tuple) else np.shape(x)
    ws = weight if isinstance(weight, tuple) else np.shape(weight)
    spec = kernel_spec(ConvSpec.from_shapes(xs, ws, stride, padding, dilation, groups,
                                            padding_mode))
    arrays = [a for a in (x, weight, bias) if isinstance(a, np.ndarray)]
    if op != "forward":
        return kernels.choose(spec, finite=_all_finite(*arrays), op=op)
    if dtype is None:
        dtype = arrays[0].dtype if arrays else np.float32
    return tuning.choose(spec, dtype, finite=_all_finite(*arrays))


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    algo: str = "auto",
    cache: WeightCache | None = None,
) -> np.ndarray:
    """2-D cross-correlation, exactly as ``torch.nn.functional.conv2d`` computes it.

    Args:
        x: (N, C, H, W) or unbatched (C, H, W) float32/float64 array.
        weight: (K, C/groups, kh, kw), same dtype.
        bias: (K,) or None.
        stride, padding, dilation, groups: as in PyTorch; padding may be an int, a
            pair, 'valid' or 'same'.
        padding_mode: 'zeros', 'reflect', 'replicate' or 'circular' (what
            ``torch.nn.Conv2d`` takes; the functional torch API has no such argument).
        algo: a kernel name from ``convlab.kernels.KERNELS``; "auto": the kernel measured
            fastest here if ``convlab.tuning`` remembers one, else the registry's rule
            (either way passing over kernels that would spread NaN/Inf differently from
            PyTorch when the input or weight holds any: ``Kernel.nonfinite``); "tune":
            measure every candidate now if nothing is remembered, then run the fastest.
        cache: a :class:`WeightCache` keeping kernel-specific transforms of ``weight``
            between calls (``Conv2d`` passes its own); None recomputes them.

    Returns:
        A new (N, K, Hout, Wout) array ((K, Hout, Wout) for unbatched input) of x's dtype.
    """
    kernel = _lookup(algo)  # an unknown name fails before anything else is checked
    xa, wa, ba, spec = prepare(x, weight, bias, stride, padding, dilation, groups,
                               padding_mode)
    if kernel is None:
        kernel = _pick(algo, spec, xa, wa, ba, cached=cache is not None)
    else:
        kernel.check(spec)
    if spec.output_elements() == 0:  # a batch or channels of 0: torch's empty output
        out = np.empty(spec.batched_output_shape, dtype=xa.dtype)
    else:
        transformed = None if cache is None else cache.get(kernel, wa, spec)
        out = kernel.execute(xa, wa, ba, spec, transformed)
    return out.reshape(spec.output_shape)  # unbatched input: drop the batch axis

"""``conv2d``: the functional API, PyTorch's ``torch.nn.functional.conv2d`` on NumPy.

This is the layer between people and kernels.  It

1. turns whatever it was given into arrays and checks their dtypes
   (float32 or float64, all alike: a kernel never sees a surprise type);
2. builds the :class:`ConvSpec`, which validates every argument with PyTorch's
   wording and knows every size;
3. materialises non-zero padding modes ('reflect', 'replicate', 'circular')
   with :func:`convlab.padding.pad`, so kernels only ever handle zero padding;
4. asks :func:`convlab.plan.plan` for the kernel (``algo=``; decided once per spec,
   dtype and algorithm, then remembered) and runs it on C-contiguous copies when
   needed: the caller's arrays are never written to.

Steps 1-3 live in :mod:`convlab.validate` (shared with the backward and the layers).

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

from ._scan import same_bits
from .kernels import registry
from .kernels.registry import Choice, Kernel
from .plan import SELECTORS, Plan, plan
from .shapes import ConvSpec, IntOrPair, PaddingArg
from .validate import (
    SUPPORTED_DTYPES,
    check_algo,
    check_arrays,
    check_bias,
    contiguous,
    conv_spec,
    kernel_input,
    kernel_spec,
    prepare,
)

__all__ = ["SELECTORS", "SUPPORTED_DTYPES", "WeightCache", "conv2d", "explain",
           "forward_with_plan", "kernel_input", "kernel_spec", "prepare"]


class WeightCache:
    """Kernel-specific transforms of a weight, kept between calls and never stale.

    A kernel opts in by registering ``transform_weight=fn`` (docs/design.md, "The
    kernel contract"): ``fn(weight, spec)`` returns what its ``run(...,
    transformed_weight=...)`` accepts in place of redoing that work.  ``fn`` may
    depend on the weight and the layer's hyper-parameters (groups), never on the
    input size.

    Staleness is ruled out by brute force: each entry keeps a private copy of the
    weight bits it was built from (its key), and every call compares the current
    weight with the key bit for bit (:func:`convlab._scan.same_bits`, unsigned views:
    NaN-safe, ~0.2 ms for a 512x512x3x3 float32 weight, where transforming it takes
    ~10 ms).
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

    One entry per (op, kernel name): a ``Conv2d``'s forward transform (Winograd's ``U``
    of the weight) and its backward's grad_input transform (``polyphase``'s flipped
    sub-kernels and their ``U``) live side by side, each checked against the weight
    it is asked for in the same way.  A forward transform depends on the weight and
    ``groups`` only (the kernel contract); a grad_input one may depend on the whole
    spec (``polyphase`` picks each sub-problem's kernel by its sizes), so it is reused
    only for the spec it was made for, and a new spec replaces it.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[np.ndarray, Any, Any]] = {}
        self._local = threading.local()  # the key of this thread's last get (take_key)
        self._lock = threading.Lock()

    def get(self, kernel: Kernel, weight: np.ndarray, spec: ConvSpec) -> Any:
        """``kernel``'s transform of ``weight`` (C-contiguous) for ``spec`` (the kernel
        spec), or None if it has none."""
        transform = kernel.transform_weight
        if transform is None:
            return None
        key, scope = (str(kernel.op), kernel.name), _scope(kernel, spec)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[1] == scope and same_bits(entry[0], weight):
            self._local.key = entry[0]
            return entry[2]
        snapshot = weight.copy()  # the key: transform exactly these bits
        snapshot.flags.writeable = False  # never written: shared by the forwards it serves
        transformed = transform(snapshot, spec)
        with self._lock:
            self._entries[key] = (snapshot, scope, transformed)
        self._local.key = snapshot
        return transformed

    def take_key(self) -> np.ndarray | None:
        """The key (the private, read-only copy of the weight bits) behind the transform
        that this thread's last :meth:`get` returned, and forget it; None if that get
        had no transform to return, or the key was taken already.  ``Conv2d.forward``
        saves it for the backward: exactly the bits the forward computed with, and no
        copy of its own (ResNet-18's weights are 45 MB)."""
        key = getattr(self._local, "key", None)
        self._local.key = None
        return key

    def kept(self, kernel: Kernel) -> Any:
        """The transform kept for ``kernel`` (its op and name), or None: a look that
        neither compares nor computes (tests, teaching)."""
        with self._lock:
            entry = self._entries.get((str(kernel.op), kernel.name))
        return None if entry is None else entry[2]

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


def _scope(kernel: Kernel, spec: ConvSpec) -> Any:
    """What besides the weight's bits a kept transform must match (class docstring)."""
    return spec.groups if kernel.op == "forward" else spec


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
    algo: str = "auto",
    cached: bool = False,
) -> Choice:
    """What ``conv2d(..., algo="auto")`` would run for these arguments, and why: a
    kernel measured fastest on this machine (:mod:`convlab.tuning`), or the rule.

    Arrays or shapes are accepted for ``x`` and ``weight``: a dry run, nothing is
    computed (``dtype``: for shapes, float32 unless given).  ``print(explain(...))``
    lists the kernels passed over too.  Given arrays holding NaN or Inf, the choice is
    the one ``conv2d`` makes for them.  ``op="grad_input"`` / ``"grad_weight"``: what
    ``convlab.conv2d_input`` / ``conv2d_weight`` would run for the backward of this
    convolution (the kernel measured fastest here when ``convlab tune --backward`` or
    ``algo="tune"`` measured it, else the rule).  ``algo``: as ``conv2d``'s (or, for a
    backward op, the kernels' name or "tune"); ``cached=True``: as a
    ``Conv2d`` layer runs it, its weight transform kept (``Conv2d.explain`` says so).

    The answer is :meth:`convlab.plan.Plan.choice_for`, the call ``conv2d`` makes to pick
    its kernel, so it names the kernel that runs.
    """
    check_algo(algo)
    xs = x if isinstance(x, tuple) else np.shape(x)
    ws = weight if isinstance(weight, tuple) else np.shape(weight)
    spec = kernel_spec(conv_spec(tuple(xs), tuple(ws), stride, padding, dilation, groups,
                                 padding_mode))
    arrays = [a for a in (x, weight, bias) if isinstance(a, np.ndarray)]
    if dtype is None:
        dtype = arrays[0].dtype if arrays else np.float32
    forward_algo, backward_algo = (algo, "auto") if op == "forward" else ("auto", algo)
    the_plan = plan(spec, dtype, forward_algo, cached=cached, backward_algo=backward_algo)
    return the_plan.choice_for(op, *arrays)


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
    return forward_with_plan(x, weight, bias, stride, padding, dilation, groups,
                             padding_mode, algo, cache)[0]


def forward_with_plan(
    x: Any, weight: Any, bias: Any, stride: IntOrPair, padding: PaddingArg,
    dilation: IntOrPair, groups: int, padding_mode: str, algo: str,
    cache: WeightCache | None, backward_algo: str = "auto",
) -> tuple[np.ndarray, Plan, np.ndarray, ConvSpec]:
    """``conv2d``, also returning what a layer's backward needs: the plan, the input as
    the kernel saw it (batched, padded for a non-zero padding mode) and the spec."""
    if check_algo(algo) not in SELECTORS:
        registry.get(algo)  # an unknown name fails before anything else is checked
    xa, wa, ba = check_arrays(x, weight, bias)
    spec = conv_spec(xa.shape, wa.shape, stride, padding, dilation, groups, padding_mode)
    check_bias(ba, wa)
    x4, wa = kernel_input(xa, spec), contiguous(wa)
    ba = None if ba is None else contiguous(ba)
    the_plan = plan(kernel_spec(spec), xa.dtype, algo, True, cache is not None,
                    backward_algo)
    kernel = the_plan.kernel_for("forward", x4, wa, ba)
    if the_plan.empty:  # a batch or channels of 0: torch's empty output
        out = np.empty(the_plan.spec.batched_output_shape, dtype=xa.dtype)
    else:
        transformed = None if cache is None else cache.get(kernel, wa, the_plan.spec)
        out = kernel.execute(x4, wa, ba, the_plan.spec, transformed)
    # unbatched input: drop the batch axis
    return (out if spec.batched else out[0]), the_plan, x4, spec

"""``Conv2d``: the module a student types, with ``torch.nn.Conv2d``'s constructor,
parameters, initialisation and ``repr``, holding NumPy arrays.

Initialisation is PyTorch's: ``kaiming_uniform_(a=sqrt(5))`` on the weight, which
works out to U(-1/sqrt(fan_in), +1/sqrt(fan_in)) with fan_in = in/groups*kh*kw,
and the bias drawn from the same range.  (Same distribution, not the same
numbers: torch's generator is its own.  To reproduce a torch layer exactly,
``load_state_dict(torch_layer.state_dict())``.)

The layer keeps derived forms of its weight between calls (a :class:`WeightCache`: e.g.
Winograd's transformed filter, up to 16 times the weight; after a ``backward``, also its
grad_input kernel's transform of the flipped weight: ``Conv2d.backward``). They are
rebuilt on demand,
so pickling or deep-copying a layer leaves them out: the copy holds its parameters and
hyper-parameters only.

**Learning** (cs231n-style, explicit instead of autograd): ``forward(x)`` keeps what
the backward needs, ``backward(grad_output)`` returns the gradient w.r.t. that
forward's input and *adds* the parameters' gradients into ``layer.grad``, a dict
under ``state_dict``'s keys ('weight', 'bias') holding arrays of the parameters'
shapes and dtype, zero at first; ``zero_grad()`` sets them back to 0 (in place).
The contract, as in PyTorch:

* ``backward`` differentiates the **most recent** ``forward`` of this layer (from
  any thread), with the input and the weight *as they were then*: ``forward``
  keeps a copy of both (one pass over the input), so changing them in place
  afterwards, or an optimizer step before ``backward``, does not change the
  gradient (PyTorch raises an error instead);
* one ``forward``, one ``backward``: the saved input is released by ``backward``, so a
  second ``backward`` without a new ``forward`` raises ``RuntimeError`` (PyTorch's
  "backward through the graph a second time"); gradients of several
  forward/backward pairs accumulate in ``layer.grad`` until ``zero_grad()``;
* ``grad_output`` has the output's shape; a float array of another dtype is cast to
  the layer's, as autograd does;
* a forward inside ``with convlab.no_grad():`` saves nothing (inference: no copy of
  the input), so a backward after it is an error;
* a pickled or deep-copied layer carries neither the saved forward nor the gradients
  (it starts with zero gradients and needs a new forward), so it stays as small as
  its parameters.  ``backward_algo`` (an attribute, "auto" by default)
  names the backward kernels (``kernels.kernels_for("grad_input")``), or is "tune":
  each gradient's kernels measured here on first use and the fastest remembered
  (``convlab tune --backward`` measures a whole suite ahead of time).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kernels
from .backward import conv2d_bias, conv2d_weight, conv_transpose2d, input_grad, weight_grad
from .functional import WeightCache, conv2d, forward_with_plan
from .kernels.registry import Choice, UnsupportedSpecError
from .plan import SELECTORS, Plan, plan
from .shapes import (
    ConvArgs,
    ConvSpec,
    IntOrPair,
    PaddingArg,
    TransposedSpec,
    _pair,
    _transposed_out_size,
    check_channels,
    check_transposed_padding,
)
from .validate import SUPPORTED_DTYPES, as_array, check_arrays, contiguous, conv_spec, kernel_spec

_GRAD_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("convlab_grad_enabled",
                                                                    default=True)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """``with convlab.no_grad(): y = layer(x)``: forwards keep nothing for a backward.

    A layer's forward normally copies its input and weight for ``backward`` (one pass
    over the input); for inference that copy is wasted work, as in PyTorch, where
    ``torch.no_grad()`` stops autograd from saving tensors.  Per thread and per task
    (a ``ContextVar``); blocks nest."""
    token = _GRAD_ENABLED.set(False)
    try:
        yield
    finally:
        _GRAD_ENABLED.reset(token)


def grad_enabled() -> bool:
    """False inside :func:`no_grad`."""
    return _GRAD_ENABLED.get()


class Conv2d:
    """2-D convolution layer on NumPy arrays, argument for argument ``torch.nn.Conv2d``.

    Extra keyword-only arguments: ``dtype`` (float32 by default), ``seed`` (an int
    or a ``numpy.random.Generator``, for reproducible initialisation) and ``algo``
    (which kernel ``forward`` runs; "auto" by default).
    """

    _algo_op = "forward"  # the registry op that ``algo`` names

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: PaddingArg = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = np.float32,
        seed: int | np.random.Generator | None = None,
        algo: str = "auto",
    ) -> None:
        # torch checks groups first, then channel divisibility, then the rest; like torch,
        # a layer may have zero input channels (its output then has none either)
        check_channels(in_channels, out_channels, groups, zero_in_ok=True)
        args = ConvArgs.create(kernel_size, stride, padding, dilation, groups, padding_mode)
        if np.dtype(dtype) not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        if not isinstance(algo, str):
            raise TypeError(f"algo must be a kernel name (str), got {algo!r}")
        # "auto" (and for a forward "tune") choose per input; a name must exist and be
        # able to run this layer on some input
        if algo != "auto" and not (algo in SELECTORS and self._algo_op == "forward"):
            _check_algo(kernels.get(algo, op=self._algo_op), int(in_channels),
                        int(out_channels), args)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = args.kernel_size
        self.stride = args.stride
        self.padding = args.padding
        self.dilation = args.dilation
        self.groups = args.groups
        self.padding_mode = args.padding_mode
        self.dtype = np.dtype(dtype)
        self.algo = algo
        self.weight = np.empty((self.out_channels, self.in_channels // self.groups)
                               + self.kernel_size, dtype=self.dtype)
        self.bias = np.empty(self.out_channels, dtype=self.dtype) if bias else None
        self._weight_cache = WeightCache()  # e.g. Winograd's transformed filter
        self.reset_parameters(seed)
        # learning (module docstring): gradients under state_dict's keys, what the last
        # forward saved for backward, the backward's kernels
        self.grad = _Gradients({name: np.zeros_like(arr) for name, arr in self._named().items()})
        self.backward_algo = "auto"
        self._saved: _Saved | None = None

    def reset_parameters(self, seed: int | np.random.Generator | None = None) -> None:
        """Draw weight and bias as PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
        if fan_in == 0:  # zero input channels: an empty weight, and torch leaves the bias
            if self.bias is not None:  # uninitialised (no bound): convlab makes it 0
                self.bias[...] = 0
            return
        bound = 1.0 / math.sqrt(fan_in)
        self.weight[...] = rng.uniform(-bound, bound, self.weight.shape)
        if self.bias is not None:
            self.bias[...] = rng.uniform(-bound, bound, self.bias.shape)

    # ------------------------------------------------------------ forward
    def forward(self, x: Any) -> np.ndarray:
        """Convolve ``x`` ((N, C, H, W) or (C, H, W)) with this layer's parameters
        (and keep a copy of ``x`` and the weight for :meth:`backward`)."""
        self._weight_cache.take_key()  # none left over from another call of this thread
        out, forward_plan, x4, spec = forward_with_plan(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
            self.padding_mode, self.algo, self._weight_cache, self.backward_algo)
        if grad_enabled():
            # the input as the kernel saw it (a padded copy already for a non-zero
            # padding mode; otherwise copied here, so later writes cannot reach it)
            saved_x = x4 if spec.padding_mode != "zeros" else x4.copy()
            self._saved = _Saved(saved_x, self._saved_weight(), out.shape, forward_plan, spec)
        else:
            self._saved = None
        return out

    def __call__(self, x: Any) -> np.ndarray:
        return self.forward(x)

    def _saved_weight(self) -> np.ndarray:
        """The weight bits this forward computed with, for its backward: the weight
        cache's read-only key when the kernel transformed the weight (Winograd, FFT: no
        copy of its own), else a copy (so later writes cannot reach it)."""
        key = self._weight_cache.take_key()
        return self.weight.copy() if key is None else key

    def plan(self, x: Any) -> Plan:
        """The plan a forward of ``x`` (an array or a shape) runs by, and its backward
        (:mod:`convlab.plan`): ``print(layer.plan(x))`` names all three kernels."""
        shape = tuple(x) if isinstance(x, tuple) else np.shape(x)
        spec = conv_spec(shape, self.weight.shape, self.stride, self.padding, self.dilation,
                         self.groups, self.padding_mode)
        return plan(kernel_spec(spec), self.dtype, self.algo, True, True, self.backward_algo)

    def explain(self, x: Any, op: str = "forward") -> Choice:
        """What this layer runs for ``op`` on input ``x`` (arrays are checked for NaN/Inf
        as a forward does), and why: its :meth:`plan`'s choice for this call."""
        if isinstance(x, tuple):
            return self.plan(x).choice_for(op)
        xa, wa, ba = check_arrays(x, self.weight, self.bias)
        return self.plan(xa.shape).choice_for(op, *((xa, wa, ba) if op == "forward"
                                                     else (wa,)))

    # ------------------------------------------------------------ learning
    def backward(self, grad_output: Any) -> np.ndarray:
        """Gradient w.r.t. the last forward's input; adds the weight's and bias's
        gradients into ``self.grad`` (module docstring: the contract).  Runs on the
        forward's plan and its padded input: nothing is validated or padded again.

        What it keeps, and for how long:

        * the forward's saved input and weight are released here (one backward per
          forward); the weight is a copy, or, when the forward's kernel transformed it,
          the weight cache's read-only copy behind that transform (kept by the cache
          anyway, see below);
        * the grad_input kernel's weight transform (``polyphase``: the flipped,
          channel-swapped sub-kernels and, for 3x3 stride-1 layers, their Winograd ``U``:
          a few times the weight's bytes, like the forward's) stays in the layer's weight
          cache, beside the forward's, so the next backward with the same weight reuses
          it instead of transforming again.  Every backward compares the weight it differentiates
          (the forward's copy) with the bits the transform was made from: an optimizer
          step, ``load_state_dict`` or any in-place write makes the next backward
          transform again (never a stale transform), and a new input size replaces it.
          It lives until then, until ``self._weight_cache.clear()``, or for the layer's
          lifetime; a pickled or copied layer leaves it behind;
        * under ``convlab.no_grad()`` a forward saves nothing and no backward runs, so
          no backward transform is made or kept.
        """
        saved, go = self._take_saved(grad_output)
        assert saved.plan is not None and saved.spec is not None  # set by Conv2d.forward
        spec = saved.spec
        backward_plan = saved.plan.with_backward(self.backward_algo)
        go4 = contiguous(go.reshape(spec.batched_output_shape))
        grad_x = input_grad(backward_plan, spec, go4, saved.weight, self._weight_cache)
        self.grad["weight"] += weight_grad(backward_plan, spec, saved.input, go4)
        if self.bias is not None:
            self.grad["bias"] += conv2d_bias(go, self.out_channels)
        return grad_x

    def zero_grad(self) -> None:
        """Set every gradient in ``self.grad`` to 0 (in place: references stay valid)."""
        for g in self.grad.values():
            g[...] = 0

    def _take_saved(self, grad_output: Any) -> tuple[_Saved, np.ndarray]:
        """The last forward's saved values (released: one backward per forward) and
        ``grad_output`` checked against its output and cast to the layer's dtype."""
        if self._saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() needs a forward() first: it differentiates "
                "the most recent forward, whose saved input is released by backward (so a "
                "second backward without a new forward is an error, like PyTorch's 'Trying "
                "to backward through the graph a second time'), and a forward under "
                "convlab.no_grad() saves nothing")
        go = as_array(grad_output, "grad_output")
        if go.shape != self._saved.output_shape:
            raise ValueError(f"Mismatch in shape: grad_output has a shape of {go.shape} and "
                             f"output has a shape of {self._saved.output_shape}")
        saved, self._saved = self._saved, None
        return saved, go.astype(self.dtype, copy=False)

    # ------------------------------------------------------------ parameters
    def parameters(self) -> list[np.ndarray]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters under torch's keys ('weight', and 'bias' if any)."""
        return {name: arr.copy() for name, arr in self._named().items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load parameters from NumPy arrays or torch tensors under torch's keys.

        Shapes must match exactly; values are cast to this layer's dtype.  With
        ``strict`` (the default) missing or unexpected keys are errors, as in torch.
        """
        own = self._named()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        if strict and unexpected:
            problems.append("Unexpected key(s) in state_dict: "
                            + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if strict and missing:
            problems.append("Missing key(s) in state_dict: "
                            + ", ".join(f'"{k}"' for k in missing) + ".")
        arrays = {}
        for key in own:
            if key not in state_dict:
                continue
            try:
                arr = np.asarray(_from_torch(state_dict[key], key))
            except TypeError as exc:
                problems.append(str(exc))
                continue
            if arr.shape != own[key].shape:
                problems.append(f"size mismatch for {key}: copying a param with shape "
                                f"{arr.shape} from checkpoint, the shape in current model "
                                f"is {own[key].shape}.")
            elif not (np.issubdtype(arr.dtype, np.floating)
                      or np.issubdtype(arr.dtype, np.integer)):
                problems.append(f"{key}: expected a numeric array, got dtype {arr.dtype}.")
            arrays[key] = arr
        if problems:
            raise ValueError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                             + "\n\t".join(problems))
        for key, arr in arrays.items():
            own[key][...] = arr  # in place, cast to self.dtype

    def _named(self) -> dict[str, np.ndarray]:
        named = {"weight": self.weight}
        if self.bias is not None:
            named["bias"] = self.bias
        return named

    # ------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        """torch's ``_ConvNd.extra_repr``: non-default arguments only."""
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"  # a string prints bare: padding=same
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def __repr__(self) -> str:
        return f"Conv2d({self.extra_repr()})"


def _from_torch(value: Any, key: str) -> Any:
    """A torch tensor as a NumPy array; anything else unchanged.

    NumPy has no bfloat16 (nor float8): such tensors go through float32, which holds each
    of their values exactly; torch's own ``load_state_dict`` casts them the same way.
    """
    if not (hasattr(value, "detach") and hasattr(value, "numpy")):
        return value
    tensor = value.detach().cpu()
    try:
        return tensor.numpy()
    except TypeError:
        if tensor.is_floating_point():
            return tensor.float().numpy()
        raise TypeError(
            f"{key}: a torch tensor of dtype {tensor.dtype}, which NumPy cannot hold; Conv2d "
            f"loads real floating-point or integer values: convert it first, e.g. "
            f"state_dict['{key}'].real.float()") from None


def _check_algo(kernel: kernels.Kernel, in_channels: int, out_channels: int,
                args: ConvArgs) -> None:
    """Refuse, at construction, a kernel that cannot run this layer on any input.

    ``kernel.supports`` is asked about the smallest input the layer accepts (batch 1, the
    fewest rows and columns that leave a 1x1 output and fit the padding mode). The limits
    kernels have are either independent of the input (Winograd's 3x3, stride 1) or grow
    with it (pure Python's work cap, CUDA's grid), so a refusal there holds for every
    input, and a layer that some input could run is never refused. Whether the kernel can
    run on this machine (a GPU) is left to the first forward: a layer may be built on one
    machine and run on another.
    """
    top, bottom, left, right = args.explicit_padding()
    size = []
    for k, d, lo, hi in ((args.kernel_size[0], args.dilation[0], top, bottom),
                         (args.kernel_size[1], args.dilation[1], left, right)):
        n = max(1, d * (k - 1) + 1 - lo - hi)
        if args.padding_mode == "reflect":
            n = max(n, lo + 1, hi + 1)
        elif args.padding_mode == "circular":
            n = max(n, lo, hi)
        size.append(n)
    weight = (out_channels, in_channels // args.groups) + args.kernel_size
    spec = ConvSpec.from_shapes((1, in_channels, *size), weight, args.stride, args.padding,
                                args.dilation, args.groups, args.padding_mode)
    if spec.padding_mode != "zeros":
        spec = spec.explicitly_padded()  # what conv2d hands the kernel
    why = kernel.supports(spec)
    if why is not None:
        raise UnsupportedSpecError(f"{kernel.name} {why}")


@dataclass(frozen=True)
class _Saved:
    """What a forward keeps for its backward: copies, so later writes cannot change it.

    A pickled or copied layer leaves it behind (it unpickles as None: no forward to
    differentiate yet), as a pickled PyTorch module carries no autograd graph: a layer
    stays as small as its parameters."""

    input: np.ndarray  # Conv2d: as its kernel saw it (batched, padded); else as given
    weight: np.ndarray
    output_shape: tuple[int, ...]
    plan: Plan | None = None  # Conv2d: the forward's plan, handed to backward
    spec: ConvSpec | None = None  # Conv2d: the forward's spec (caller's padding mode)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_nothing, ())


def _nothing() -> None:
    return None


class _Gradients(dict):
    """``layer.grad``: a dict of arrays that a pickled or copied layer does not carry (it
    unpickles as zeros of the same shapes; PyTorch does not pickle ``.grad`` either)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_zero_gradients, ({k: (v.shape, v.dtype.str) for k, v in self.items()},))


def _zero_gradients(shapes: dict[str, tuple[tuple[int, ...], str]]) -> _Gradients:
    return _Gradients({k: np.zeros(shape, dtype) for k, (shape, dtype) in shapes.items()})


class ConvTranspose2d(Conv2d):
    """2-D transposed convolution layer on NumPy arrays, argument for argument
    ``torch.nn.ConvTranspose2d``: weight (in_channels, out_channels/groups, kh, kw),
    initialised from that shape (fan_in = out_channels/groups*kh*kw), ``repr``,
    ``state_dict``, errors; only ``padding_mode='zeros'`` and int/pair padding, as in
    torch.  ``forward(x, output_size=None)`` picks ``output_padding`` from a requested
    size, as torch does.  Learns like :class:`Conv2d` (``backward``, ``grad``,
    ``zero_grad``; the module docstring has the contract).

    It shares Conv2d's parameter handling (``state_dict``, ``load_state_dict``,
    ``reset_parameters``, the weight cache); ``isinstance(layer, Conv2d)`` is
    therefore True here, unlike in PyTorch.  ``algo`` names a grad_input kernel: the
    transposed convolution *is* a convolution's input gradient, and the layer's weight
    cache keeps that kernel's weight transform (``polyphase``'s flipped sub-kernels and
    their Winograd ``U``) between forwards, and its backward's forward-kernel transform,
    both checked against the weight's bits on every call as ``Conv2d``'s are.
    """

    _algo_op = "grad_input"  # a transposed convolution runs on grad_input kernels

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrPair = 1,
        padding_mode: str = "zeros",
        *,
        dtype: Any = np.float32,
        seed: int | np.random.Generator | None = None,
        algo: str = "auto",
    ) -> None:
        # torch's order: the padding mode, then groups and channels, then the rest
        if padding_mode != "zeros":
            raise ValueError('Only "zeros" padding mode is supported for ConvTranspose2d')
        check_channels(in_channels, out_channels, groups)
        check_transposed_padding(padding)
        args = ConvArgs.create(kernel_size, stride, padding, dilation, groups)
        out_pad = _pair(output_padding, "output_padding")
        # the rule is the functional one; checking a 1x1 input validates it now
        TransposedSpec.from_shapes((in_channels, 1, 1), (in_channels, out_channels // groups)
                                   + args.kernel_size, args.stride, (0, 0), out_pad,
                                   groups, args.dilation)  # fmt: skip
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        # the weight is a Conv2d weight from out_channels to in_channels, read backwards;
        # the bias belongs to the output (out_channels): drawn after the weight, as torch
        super().__init__(out_channels, in_channels, kernel_size, stride, padding, dilation,
                         groups, False, "zeros", dtype=dtype, seed=rng, algo=algo)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.output_padding = out_pad
        if bias:
            bound = 1.0 / math.sqrt(self.weight.shape[1] * args.kernel_size[0]
                                    * args.kernel_size[1])
            self.bias = rng.uniform(-bound, bound, out_channels).astype(self.dtype)
        self.grad = _Gradients({name: np.zeros_like(arr) for name, arr in self._named().items()})

    def _output_padding(self, input_shape: tuple[int, ...],
                        output_size: Any) -> tuple[int, int]:
        """torch's ``_output_padding``: the output_padding giving ``output_size``."""
        if output_size is None:
            return self.output_padding
        size = [int(s) for s in output_size]
        spatial = input_shape[-2:]
        if len(size) == len(input_shape):
            size = size[-2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2D: for {len(input_shape)}D input, output_size must "
                             f"have 2 or {len(input_shape)} elements (got {len(size)})")
        padding = self._pair_padding()
        low = [_transposed_out_size(spatial[d], padding[d], self.kernel_size[d],
                                    self.stride[d], self.dilation[d], 0)
               for d in range(2)]  # no output_padding: the smallest size
        high = [low[d] + self.stride[d] - 1 for d in range(2)]
        if any(not low[d] <= size[d] <= high[d] for d in range(2)):
            raise ValueError(f"requested an output size of {size}, but valid sizes range from "
                             f"{low} to {high} (for an input of {tuple(spatial)})")
        return size[0] - low[0], size[1] - low[1]

    def _pair_padding(self) -> tuple[int, int]:
        """The padding, a pair of ints (a transposed convolution takes no strings)."""
        assert not isinstance(self.padding, str)  # refused by check_transposed_padding
        return self.padding

    def forward(self, x: Any, output_size: Any = None) -> np.ndarray:
        """Transposed convolution of ``x`` ((N, C_in, H, W) or (C_in, H, W)); keeps a
        copy of ``x`` and the weight for :meth:`backward`."""
        xa = as_array(x, "input")
        out_pad = self._output_padding(xa.shape, output_size)
        self._weight_cache.take_key()  # none left over from another call of this thread
        out = conv_transpose2d(xa, self.weight, self.bias, self.stride, self._pair_padding(),
                               out_pad, self.groups, self.dilation, algo=self.algo,
                               cache=self._weight_cache)
        self._saved = (_Saved(np.array(xa), self._saved_weight(), out.shape)
                       if grad_enabled() else None)
        self._saved_output_padding = out_pad
        return out

    def __call__(self, x: Any, output_size: Any = None) -> np.ndarray:
        return self.forward(x, output_size)

    def backward(self, grad_output: Any) -> np.ndarray:
        """Gradient w.r.t. the last forward's input (a convolution of ``grad_output``
        with the weight); adds the weight's and bias's gradients into ``self.grad``."""
        saved, go = self._take_saved(grad_output)
        tspec = TransposedSpec.from_shapes(saved.input.shape, saved.weight.shape, self.stride,
                                           self._pair_padding(), self._saved_output_padding,
                                           self.groups, self.dilation)  # fmt: skip
        fspec = tspec.forward_spec()
        conv = (self.stride, self.padding, self.dilation, self.groups)
        go4 = go.reshape(tspec.batched_output_shape)
        # d/dx of W^T x is W: the forward convolution of grad_output (its output has
        # output_padding // stride extra rows, which x never fed: cropped)
        grad_x = conv2d(go4, saved.weight, None, *conv, algo=self.backward_algo,
                        cache=self._weight_cache)
        grad_x = np.ascontiguousarray(grad_x[:, :, :tspec.height, :tspec.width])
        # d/dW: the weight gradient of that convolution, with x as its output gradient
        x4 = np.zeros(fspec.batched_output_shape, dtype=self.dtype)
        x4[:, :, :tspec.height, :tspec.width] = saved.input.reshape(
            tspec.batch, tspec.in_channels, tspec.height, tspec.width)
        self.grad["weight"] += conv2d_weight(go4, saved.weight.shape, x4, *conv,
                                             algo=self.backward_algo)
        if self.bias is not None:
            self.grad["bias"] += conv2d_bias(go4, self.out_channels)
        return grad_x.reshape(saved.input.shape)

    def extra_repr(self) -> str:
        """torch's ``_ConvNd.extra_repr`` (output_padding after dilation)."""
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s

    def __repr__(self) -> str:
        return f"ConvTranspose2d({self.extra_repr()})"

"""``Conv2d``: the module a student types, with ``torch.nn.Conv2d``'s constructor,
parameters, initialisation and ``repr``, holding NumPy arrays.

Initialisation is PyTorch's: ``kaiming_uniform_(a=sqrt(5))`` on the weight, which
works out to U(-1/sqrt(fan_in), +1/sqrt(fan_in)) with fan_in = in/groups*kh*kw,
and the bias drawn from the same range.  (Same distribution, not the same
numbers: torch's generator is its own.  To reproduce a torch layer exactly,
``load_state_dict(torch_layer.state_dict())``.)

The layer keeps derived forms of its weight between calls (a :class:`WeightCache`: e.g.
Winograd's transformed filter, up to 16 times the weight). They are rebuilt on demand,
so pickling or deep-copying a layer leaves them out: the copy holds its parameters and
hyper-parameters only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import kernels
from .functional import SELECTORS, SUPPORTED_DTYPES, WeightCache, conv2d
from .kernels.registry import UnsupportedSpecError
from .shapes import ConvArgs, ConvSpec, IntOrPair, PaddingArg, check_channels


class Conv2d:
    """2-D convolution layer on NumPy arrays, argument for argument ``torch.nn.Conv2d``.

    Extra keyword-only arguments: ``dtype`` (float32 by default), ``seed`` (an int
    or a ``numpy.random.Generator``, for reproducible initialisation) and ``algo``
    (which kernel ``forward`` runs; "auto" by default).
    """

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
        # any integer type goes where an int does (np.int64 from a config or a shape)
        if (isinstance(groups, bool) or not isinstance(groups, numbers.Integral)
                or groups <= 0):
            raise ValueError("groups must be a positive integer")
        check_channels(in_channels, out_channels, groups)
        args = ConvArgs.create(kernel_size, stride, padding, dilation, groups, padding_mode)
        if np.dtype(dtype) not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        if not isinstance(algo, str):
            raise TypeError(f"algo must be a kernel name (str), got {algo!r}")
        if algo not in SELECTORS:  # "auto" and "tune" choose per input
            _check_algo(kernels.get(algo), int(in_channels), int(out_channels), args)
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

    def reset_parameters(self, seed: int | np.random.Generator | None = None) -> None:
        """Draw weight and bias as PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        self.weight[...] = rng.uniform(-bound, bound, self.weight.shape)
        if self.bias is not None:
            self.bias[...] = rng.uniform(-bound, bound, self.bias.shape)

    # ------------------------------------------------------------ forward
    def forward(self, x: Any) -> np.ndarray:
        """Convolve ``x`` ((N, C, H, W) or (C, H, W)) with this layer's parameters."""
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups, self.padding_mode, algo=self.algo, cache=self._weight_cache)

    __call__ = forward

    # ------------------------------------------------------------ copies
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
            raise ValueError("Error(s) in loading state_dict for Conv2d:\n\t"
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

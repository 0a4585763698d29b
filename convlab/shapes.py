"""The shape calculator: the ONE place in convlab that knows how big things are.

A 2-D convolution slides a ``kh x kw`` window (with holes of ``dilation - 1``
between its taps) over a zero- or otherwise-padded input, ``stride`` steps at a
time.  Along one axis, with ``pad_lo``/``pad_hi`` cells of padding::

    out = floor((size + pad_lo + pad_hi - dilation * (k - 1) - 1) / stride) + 1

(PyTorch's formula; note *floor*: a window that would hang off the end is
dropped, never padded in).  That formula lives in :func:`_out_size` and nowhere
else: every kernel, the CLI, the plots and the exercises ask a :class:`ConvSpec`.

``padding='same'`` pads ``dilation * (k - 1)`` cells in total per axis; the
top/left side gets ``total // 2`` and the extra cell of an odd total goes to the
bottom/right, exactly as PyTorch does.  ``'valid'`` is simply ``padding=0``.

Validation follows PyTorch's meaning and wording (torch 2.13) so an error in
convlab reads like the one a student would get from ``torch.nn.Conv2d``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

IntOrPair = int | Sequence[int]
PaddingArg = int | Sequence[int] | str

PADDING_STRINGS = ("valid", "same")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _fmt_set(items: Sequence[str]) -> str:
    return "{" + ", ".join(repr(i) for i in items) + "}"


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """Normalise an int or a pair of ints to a pair, rejecting anything else."""
    if isinstance(value, (bool, str)) or not (
        isinstance(value, numbers.Integral) or isinstance(value, (tuple, list))
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value), int(value)
    items = list(value)
    if len(items) == 1:
        items = items * 2
    if len(items) != 2:
        shown = "[" + ", ".join(str(v) for v in items) + "]"
        raise ValueError(
            f"expected {name} to be a single integer value or a list of 2 values to match "
            f"the convolution dimensions, but got {name}={shown}"
        )
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


@dataclass(frozen=True)
class ConvArgs:
    """The hyper-parameters of a convolution, normalised and validated.

    Everything that can be checked without knowing the input: the module
    constructor validates these at build time, ConvSpec adds the input.
    """

    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"

    @classmethod
    def create(
        cls,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: PaddingArg = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
    ) -> ConvArgs:
        check_groups(groups)
        kh, kw = _pair(kernel_size, "kernel_size")
        if kh <= 0 or kw <= 0:
            raise ValueError(
                f"kernel size should be greater than zero, but got kernel_height: {kh} "
                f"kernel_width: {kw}"
            )
        st = _pair(stride, "stride")
        if min(st) <= 0:
            raise ValueError("non-positive stride is not supported")
        dil = _pair(dilation, "dilation")
        if min(dil) <= 0:
            raise ValueError(f"dilation should be greater than zero, but got [{dil[0]}, {dil[1]}]")
        pad: tuple[int, int] | str
        if isinstance(padding, str):
            if padding not in PADDING_STRINGS:
                raise ValueError(
                    f"Invalid padding string {padding!r}, should be one of "
                    f"{_fmt_set(PADDING_STRINGS)}"
                )
            if padding == "same" and st != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            pad = padding
        else:
            pad = _pair(padding, "padding")
            if min(pad) < 0:
                raise ValueError("negative padding is not supported")
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {_fmt_set(PADDING_MODES)}, "
                f"but got padding_mode={padding_mode!r}"
            )
        return cls((kh, kw), st, pad, dil, int(groups), padding_mode)

    def explicit_padding(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding actually applied."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            (kh, kw), (dh, dw) = self.kernel_size, self.dilation
            th, tw = dh * (kh - 1), dw * (kw - 1)  # the window's extent past one cell
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)  # extra cell bottom/right
        if isinstance(self.padding, str):  # only a ConvArgs built without create() gets here
            raise ValueError(f"Invalid padding string {self.padding!r}, should be one of "
                             f"{_fmt_set(PADDING_STRINGS)}")
        ph, pw = self.padding
        return (ph, ph, pw, pw)


def _out_size(size: int, pad_lo: int, pad_hi: int, k: int, stride: int, dilation: int) -> int:
    """THE output-size formula (see the module docstring)."""
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _input_dims(input_shape: Sequence[int], op: str = "conv2d") -> tuple[int, ...]:
    """The input's sizes as ints: 3 or 4 of them, none negative (``op`` names the
    function in the message, as torch's does)."""
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4):
        raise ValueError(
            f"Expected 3D (unbatched) or 4D (batched) input to {op}, but got input "
            f"of size: {_shape_str(input_shape)}"
        )
    _no_negative(input_shape, "input")
    return input_shape


def _no_negative(shape: tuple[int, ...], name: str) -> None:
    # torch cannot even build such a tensor ("Trying to create tensor with negative dimension")
    for size in shape:
        if size < 0:
            raise ValueError(f"negative dimension {size} in {name} of size {_shape_str(shape)}: "
                             "sizes must be >= 0")


@dataclass(frozen=True)
class ConvSpec:
    """Everything about one convolution's sizes: built once, asked by everyone.

    Shapes are always held batched (``batch`` = N); ``batched`` remembers whether
    the caller passed (C, H, W) so :attr:`output_shape` answers in kind.
    """

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"
    batched: bool = True

    # ---------------------------------------------------------------- building
    @classmethod
    def from_shapes(
        cls,
        input_shape: Sequence[int],
        weight_shape: Sequence[int],
        stride: IntOrPair = 1,
        padding: PaddingArg = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
    ) -> ConvSpec:
        """Spec for an input of ``input_shape`` and a weight of ``weight_shape``."""
        input_shape = _input_dims(input_shape)
        weight_shape = tuple(int(s) for s in weight_shape)
        if len(weight_shape) != 4:
            raise ValueError(
                "Expected 4-dimensional weight (out_channels, in_channels/groups, kh, kw) "
                f"for conv2d, but got weight of size {_shape_str(weight_shape)}"
            )
        _no_negative(weight_shape, "weight")
        batched = len(input_shape) == 4
        full_in = input_shape if batched else (1,) + input_shape
        n, c, h, w = full_in
        k, cg, kh, kw = weight_shape
        args = ConvArgs.create((kh, kw), stride, padding, dilation, groups, padding_mode)
        g = args.groups
        if args.padding_mode in ("reflect", "replicate") and 0 in full_in[1:]:
            # torch pads with F.pad before convolving, and F.pad refuses these
            raise ValueError(
                "Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other "
                f"non-zero dimensions for input, but got: {_shape_str(full_in)}"
            )
        if k < g:
            raise ValueError(
                f"Given groups={g}, expected weight to be at least {g} at dimension 0, but got "
                f"weight of size {_shape_str(weight_shape)} instead"
            )
        if k % g:
            raise ValueError(
                f"Given groups={g}, expected weight to be divisible by {g} at dimension 0, "
                f"but got weight of size {_shape_str(weight_shape)} instead"
            )
        if c != cg * g:  # zero channels on both sides is valid, as in torch
            raise ValueError(
                f"Given groups={g}, weight of size {_shape_str(weight_shape)}, expected "
                f"input{_shape_str(full_in)} to have {cg * g} channels, but got {c} "
                "channels instead"
            )
        top, bottom, left, right = args.explicit_padding()
        eff_h = args.dilation[0] * (kh - 1) + 1
        eff_w = args.dilation[1] * (kw - 1) + 1
        if h + top + bottom < eff_h or w + left + right < eff_w:
            raise ValueError(
                f"Calculated padded input size per channel: ({h + top + bottom} x "
                f"{w + left + right}). Kernel size: ({eff_h} x {eff_w}). Kernel size can't "
                "be greater than actual input size"
            )
        if n and c and not (h and w):
            raise ValueError(
                "Only zero batch or zero channel inputs are supported, but got input shape: "
                f"{_shape_str(full_in)}"
            )
        if args.padding_mode == "reflect":
            # torch checks the last dimension first, then the height.
            for dim, size, lo, hi in ((3, w, left, right), (2, h, top, bottom)):
                if lo >= size or hi >= size:
                    raise ValueError(
                        "Padding size should be less than the corresponding input dimension, "
                        f"but got: padding ({lo}, {hi}) at dimension {dim} of input "
                        f"{_shape_str(full_in)}"
                    )
        if args.padding_mode == "circular":
            if max(top, bottom) > h or max(left, right) > w:
                raise ValueError("Padding value causes wrapping around more than once.")
        return cls(
            batch=n, in_channels=c, height=h, width=w, out_channels=k,
            kernel_size=(kh, kw), stride=args.stride, padding=(top, bottom, left, right),
            dilation=args.dilation, groups=g, padding_mode=args.padding_mode, batched=batched,
        )  # fmt: skip

    @classmethod
    def create(
        cls,
        input_shape: Sequence[int],
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: PaddingArg = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
    ) -> ConvSpec:
        """Spec from layer hyper-parameters, as ``torch.nn.Conv2d`` takes them."""
        args = ConvArgs.create(kernel_size, stride, padding, dilation, groups, padding_mode)
        input_shape = _input_dims(input_shape)
        in_channels = input_shape[-3]
        # torch.nn.Conv2d(0, ...) is a valid layer: its output has no elements
        check_channels(in_channels, out_channels, args.groups, zero_in_ok=True)
        weight = (out_channels, in_channels // args.groups) + args.kernel_size
        return cls.from_shapes(input_shape, weight, stride, padding, dilation, groups, padding_mode)

    # ---------------------------------------------------------------- sizes
    @property
    def out_height(self) -> int:
        top, bottom, _, _ = self.padding
        return _out_size(self.height, top, bottom, self.kernel_size[0], self.stride[0],
                         self.dilation[0])  # fmt: skip

    @property
    def out_width(self) -> int:
        _, _, left, right = self.padding
        return _out_size(self.width, left, right, self.kernel_size[1], self.stride[1],
                         self.dilation[1])  # fmt: skip

    @property
    def input_shape(self) -> tuple[int, ...]:
        full = (self.batch, self.in_channels, self.height, self.width)
        return full if self.batched else full[1:]

    @property
    def output_shape(self) -> tuple[int, ...]:
        full = self.batched_output_shape
        return full if self.batched else full[1:]

    @property
    def batched_output_shape(self) -> tuple[int, int, int, int]:
        # An input with zero channels gives an output with zero channels, whatever the
        # weight's out_channels: what torch returns (its empty-input shortcut multiplies
        # the empty input by the weight), so convlab returns it too.
        channels = self.out_channels if self.in_channels else 0
        return (self.batch, channels, self.out_height, self.out_width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    @property
    def bias_shape(self) -> tuple[int]:
        return (self.out_channels,)

    @property
    def padded_height(self) -> int:
        return self.height + self.padding[0] + self.padding[1]

    @property
    def padded_width(self) -> int:
        return self.width + self.padding[2] + self.padding[3]

    @property
    def effective_kernel_size(self) -> tuple[int, int]:
        """The dilated window's extent: d*(k-1)+1 per axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))  # type: ignore[return-value]

    @property
    def reduction_length(self) -> int:
        """Products summed into one output: (C/groups) * kh * kw."""
        return self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]

    @property
    def grad_input_reduction_length(self) -> int:
        """Products summed into one element of grad_input, at most: every output channel
        of its group times every tap, (K/groups) * kh * kw (fewer with a stride)."""
        return self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]

    @property
    def grad_weight_reduction_length(self) -> int:
        """Products summed into one element of grad_weight: one per output position of
        every image, N * Hout * Wout."""
        return self.batch * self.out_height * self.out_width

    def parameter_count(self, bias: bool = True) -> int:
        kout, cg, kh, kw = self.weight_shape
        return kout * cg * kh * kw + (kout if bias else 0)

    # ---------------------------------------------------------------- cost
    def output_elements(self) -> int:
        n, k, ho, wo = self.batched_output_shape
        return n * k * ho * wo

    def macs(self) -> int:
        """Multiply-accumulates of direct convolution (bias not counted)."""
        return self.output_elements() * self.reduction_length

    def flops(self) -> int:
        """2 * N * K * (C/groups) * kh * kw * Hout * Wout, the convention every
        benchmark uses (a Winograd kernel is credited with these direct FLOPs)."""
        return 2 * self.macs()

    def bytes_moved(self, itemsize: int = 4) -> int:
        """Compulsory memory traffic: read input and weight once, write output once."""
        elems = (self.batch * self.in_channels * self.height * self.width
                 + self.out_channels * self.reduction_length
                 + self.output_elements())  # fmt: skip
        return elems * itemsize

    def backward_bytes_moved(self, itemsize: int = 4) -> int:
        """Compulsory memory traffic of grad_input + grad_weight (+ grad_bias): read
        grad_output, the weight and the input once, write grad_input and grad_weight."""
        inputs = self.batch * self.in_channels * self.height * self.width
        weights = self.out_channels * self.reduction_length
        outputs = self.batch * self.out_channels * self.out_height * self.out_width
        return (2 * inputs + 2 * weights + outputs + self.out_channels) * itemsize

    def arithmetic_intensity(self, itemsize: int = 4) -> float:
        """FLOPs per compulsory byte (the x-axis of a roofline)."""
        return self.flops() / self.bytes_moved(itemsize)

    # ---------------------------------------------------------------- variants
    def with_batch(self, batch: int) -> ConvSpec:
        return replace(self, batch=int(batch), batched=True)

    def explicitly_padded(self) -> ConvSpec:
        """The spec a kernel sees after the input was padded by hand: no padding left,
        a bigger input, the same output."""
        return replace(self, height=self.padded_height, width=self.padded_width,
                       padding=(0, 0, 0, 0), padding_mode="zeros")  # fmt: skip

    def describe(self) -> str:
        """One line for people: shapes and hyper-parameters."""
        return (
            f"input {self.input_shape} -> output {self.output_shape}, weight "
            f"{self.weight_shape}, stride {self.stride}, padding (t,b,l,r) {self.padding}, "
            f"dilation {self.dilation}, groups {self.groups}, padding_mode {self.padding_mode}"
        )


def check_groups(groups: int) -> None:
    """``groups``: a positive integer of any integer type (np.int64 from a config or a
    shape goes where an int does, as in torch)."""
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups <= 0:
        raise ValueError("groups must be a positive integer")


def check_transposed_padding(padding: Any) -> None:
    """A transposed convolution's padding: ints, never 'same' or 'valid' (torch's words)."""
    if isinstance(padding, str):
        raise TypeError("conv_transpose2d(): argument 'padding' must be tuple of ints, "
                        f"not str (got {padding!r}: transposed convolutions take no "
                        "'same' or 'valid')")


def check_channels(in_channels: int, out_channels: int, groups: int, *,
                   zero_in_ok: bool = False) -> None:
    """Channel counts of a layer: ``groups`` (:func:`check_groups`) first, then positive
    integers (``in_channels`` may be 0 when ``zero_in_ok``) divisible by ``groups``, in
    torch's order."""
    check_groups(groups)
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if value < 0 or (value == 0 and not (zero_in_ok and name == "in_channels")):
            least = "a non-negative" if zero_in_ok and name == "in_channels" else "a positive"
            raise ValueError(f"{name} must be {least} integer, got {value!r}")
    if in_channels % groups:
        raise ValueError("in_channels must be divisible by groups")
    if out_channels % groups:
        raise ValueError("out_channels must be divisible by groups")


def output_shape(
    input_shape: Sequence[int],
    out_channels: int,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: PaddingArg = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> tuple[int, ...]:
    """Shape of ``Conv2d(C, out_channels, kernel_size, ...)(x)`` for ``x.shape == input_shape``.

    >>> output_shape((64, 5, 10, 12), 2, 3)
    (64, 2, 8, 10)
    """
    return ConvSpec.create(input_shape, out_channels, kernel_size, stride, padding, dilation,
                           groups).output_shape  # fmt: skip


# ======================================================================= transposed
def _transposed_out_size(size: int, pad: int, k: int, stride: int, dilation: int,
                         output_padding: int) -> int:
    """THE transposed-convolution output-size formula (``torch.nn.ConvTranspose2d``):

        out = (size - 1) * stride - 2 * pad + dilation * (k - 1) + output_padding + 1

    It inverts :func:`_out_size`: a convolution of an ``out``-sized input with the
    same stride, padding and dilation gives back ``size`` (plus
    ``output_padding // stride``), and ``output_padding`` picks one of the ``stride``
    input sizes that the forward's floor maps to the same output size."""
    return (size - 1) * stride - 2 * pad + dilation * (k - 1) + output_padding + 1


@dataclass(frozen=True)
class TransposedSpec:
    """Everything about one transposed convolution's sizes (``conv_transpose2d``).

    A transposed convolution *is* the gradient of a convolution with respect to its
    input: ``conv_transpose2d(x, weight)`` with ``weight`` of shape (in_channels,
    out_channels/groups, kh, kw) is ``conv2d_input`` of the convolution from
    out_channels to in_channels channels whose input has this spec's output size,
    :meth:`forward_spec`.  Padding is symmetric ints only (torch takes no strings and
    only 'zeros' here)."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    output_padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    batched: bool = True

    @classmethod
    def from_shapes(
        cls,
        input_shape: Sequence[int],
        weight_shape: Sequence[int],
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        dilation: IntOrPair = 1,
    ) -> TransposedSpec:
        """Spec for ``conv_transpose2d`` of an input of ``input_shape`` with a weight of
        ``weight_shape`` (torch's argument order), validated in torch's words."""
        input_shape = _input_dims(input_shape, "conv_transpose2d")
        weight_shape = tuple(int(s) for s in weight_shape)
        if len(weight_shape) != 4:
            raise ValueError(
                "Expected 4-dimensional weight (in_channels, out_channels/groups, kh, kw) for "
                f"conv_transpose2d, but got weight of size {_shape_str(weight_shape)}"
            )
        check_transposed_padding(padding)
        batched = len(input_shape) == 4
        full_in = input_shape if batched else (1,) + input_shape
        n, c, h, w = full_in
        c_w, kg, kh, kw = weight_shape
        args = ConvArgs.create((kh, kw), stride, padding, dilation, groups)
        g = args.groups
        out_pad = _pair(output_padding, "output_padding")
        if min(out_pad) < 0:
            raise ValueError("negative output_padding is not supported")
        if c_w % g:
            raise ValueError(
                f"Given groups={g}, expected weight to be divisible by {g} at dimension 0, "
                f"but got weight of size {_shape_str(weight_shape)} instead"
            )
        if c != c_w:
            raise ValueError(
                f"Given transposed=1, weight of size {_shape_str(weight_shape)}, expected "
                f"input{_shape_str(full_in)} to have {c_w} channels, but got {c} channels "
                "instead"
            )
        (sh, sw), (dh, dw) = args.stride, args.dilation
        if not (out_pad[0] < sh or out_pad[0] < dh) or not (out_pad[1] < sw or out_pad[1] < dw):
            raise ValueError(
                "output padding must be smaller than either stride or dilation, but got "
                f"output_padding_height: {out_pad[0]} output_padding_width: {out_pad[1]} "
                f"stride_height: {sh} stride_width: {sw} dilation_height: {dh} "
                f"dilation_width: {dw}"
            )
        spec = cls(batch=n, in_channels=c, height=h, width=w, out_channels=kg * g,
                   kernel_size=(kh, kw), stride=args.stride,
                   padding=args.padding,  # type: ignore[arg-type]
                   output_padding=out_pad, dilation=args.dilation, groups=g,
                   batched=batched)  # fmt: skip
        if spec.out_height <= 0 or spec.out_width <= 0:
            raise ValueError(
                f"Given input size per channel: ({h} x {w}). Calculated output size per "
                f"channel: ({spec.out_height} x {spec.out_width}). Output size is too small"
            )
        return spec

    @classmethod
    def create(
        cls,
        input_shape: Sequence[int],
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        dilation: IntOrPair = 1,
    ) -> TransposedSpec:
        """Spec from layer hyper-parameters, as ``torch.nn.ConvTranspose2d`` takes them."""
        input_shape = _input_dims(input_shape, "conv_transpose2d")
        in_channels = input_shape[-3]
        check_channels(in_channels, out_channels, groups)
        kh, kw = _pair(kernel_size, "kernel_size")
        weight = (in_channels, out_channels // groups, kh, kw)
        return cls.from_shapes(input_shape, weight, stride, padding, output_padding, groups,
                               dilation)  # fmt: skip

    @classmethod
    def inverting(cls, spec: ConvSpec) -> TransposedSpec:
        """The transposed convolution that takes ``spec``'s output back to its input's
        size, with ``spec``'s weight: ``output_padding`` is what the forward's floor
        dropped, ``(H + 2*pad - d*(k-1) - 1) % stride`` per axis (always < stride).
        Its :meth:`forward_spec` is ``spec`` itself (batched, zero padding).  Needs
        symmetric padding (torch's ConvTranspose2d has no other kind)."""
        top, bottom, left, right = spec.padding
        if top != bottom or left != right:
            raise ValueError(f"a transposed convolution pads symmetrically; this convolution "
                             f"pads (t,b,l,r) {spec.padding}")
        (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
        out_pad = ((spec.padded_height - dh * (kh - 1) - 1) % sh,
                   (spec.padded_width - dw * (kw - 1) - 1) % sw)
        return cls.from_shapes(spec.batched_output_shape, spec.weight_shape, spec.stride,
                               (top, left), out_pad, spec.groups, spec.dilation)

    # ---------------------------------------------------------------- sizes
    @property
    def out_height(self) -> int:
        return _transposed_out_size(self.height, self.padding[0], self.kernel_size[0],
                                    self.stride[0], self.dilation[0], self.output_padding[0])

    @property
    def out_width(self) -> int:
        return _transposed_out_size(self.width, self.padding[1], self.kernel_size[1],
                                    self.stride[1], self.dilation[1], self.output_padding[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        full = (self.batch, self.in_channels, self.height, self.width)
        return full if self.batched else full[1:]

    @property
    def output_shape(self) -> tuple[int, ...]:
        full = (self.batch, self.out_channels, self.out_height, self.out_width)
        return full if self.batched else full[1:]

    @property
    def batched_output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """(in_channels, out_channels/groups, kh, kw): the forward convolution's layout,
        read the other way round."""
        return (self.in_channels, self.out_channels // self.groups) + self.kernel_size

    @property
    def bias_shape(self) -> tuple[int]:
        return (self.out_channels,)

    def forward_spec(self) -> ConvSpec:
        """The convolution whose input gradient this transposed convolution is: from
        ``out_channels`` to ``in_channels`` channels, on an input of this spec's output
        size, same weight, stride, padding, dilation and groups (batched).  Its output is
        this spec's input plus ``output_padding // stride`` rows/columns (zeros)."""
        return ConvSpec.from_shapes(self.batched_output_shape, self.weight_shape, self.stride,
                                    self.padding, self.dilation, self.groups)  # fmt: skip

    def macs(self) -> int:
        """Multiply-accumulates: every input element times (out/groups)*kh*kw weights."""
        return (self.batch * self.in_channels * self.height * self.width
                * (self.out_channels // self.groups) * self.kernel_size[0]
                * self.kernel_size[1])  # fmt: skip

    def flops(self) -> int:
        return 2 * self.macs()

    def parameter_count(self, bias: bool = True) -> int:
        cin, cg, kh, kw = self.weight_shape
        return cin * cg * kh * kw + (self.out_channels if bias else 0)

    def describe(self) -> str:
        return (
            f"transposed: input {self.input_shape} -> output {self.output_shape}, weight "
            f"{self.weight_shape}, stride {self.stride}, padding {self.padding}, "
            f"output_padding {self.output_padding}, dilation {self.dilation}, "
            f"groups {self.groups}"
        )


def transposed_output_shape(
    input_shape: Sequence[int],
    out_channels: int,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> tuple[int, ...]:
    """Shape of ``ConvTranspose2d(C, out_channels, kernel_size, ...)(x)``.

    >>> transposed_output_shape((1, 4, 5, 5), 2, 3, stride=2, padding=1, output_padding=1)
    (1, 2, 10, 10)
    """
    return TransposedSpec.create(input_shape, out_channels, kernel_size, stride, padding,
                                 output_padding, groups, dilation).output_shape  # fmt: skip

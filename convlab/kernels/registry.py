"""The kernel registry: every convolution algorithm behind one explicit contract.

A kernel is registered with :func:`register` and described by a :class:`Kernel`.
The contract (docs/design.md, "The kernel contract"):

``run(x, weight, bias, spec) -> out`` receives

* ``x``: a C-contiguous batched (N, C, H, W) array of float32 or float64,
* ``weight``: C-contiguous (K, C/groups, kh, kw), same dtype,
* ``bias``: (K,) of the same dtype, or None,
* ``spec``: the :class:`~convlab.shapes.ConvSpec`, whose ``padding_mode`` is
  always 'zeros' (other modes are materialised by :func:`convlab.conv2d` first),

and returns a new (N, K, Hout, Wout) array of x's dtype with the bias added.
It never modifies its inputs and never re-derives a shape: it asks ``spec``.
The bias is the kernel's job so fast kernels can fuse it into their last pass.

Everything else a kernel may provide is a typed, optional field of :class:`Kernel`:

* ``supports(spec)``: None, or why it cannot run ``spec`` (a teaching lab never falls
  back silently: asking a kernel for what it cannot do raises
  :class:`UnsupportedSpecError` with that reason);
* ``available()``: None, or why it cannot run on this machine
  (:class:`KernelUnavailableError`);
* ``transform_weight(weight, spec)``: a weight-only precomputation (Winograd's
  ``U = G g G^T``).  Such a kernel's ``run`` also accepts
  ``transformed_weight=`` and then skips that work; ``Conv2d`` keeps the transform
  between calls (:class:`convlab.functional.WeightCache`; a grad_input kernel may
  have one too: "Ops" below);
* ``stages(x, weight, bias, spec, transformed_weight)``: the time split for the
  benchmark (``convlab bench --split``): a list of ``(name, call)`` where each
  ``call()`` runs the kernel *up to and including* that stage, so the harness can
  time the prefixes and report each stage's increment;
* ``place(x, weight, bias, spec)``: device kernels only: copy the inputs to the
  device once and return a :class:`Placed` (a call on the device-resident inputs,
  how to fetch its output), so transfers stay out of the timed calls;
* ``workspace(spec, itemsize)``: extra bytes it allocates for ``spec``;
* ``rtol``: its float32 error budget vs the float64 oracle (see :meth:`Kernel.tolerance`);
* ``nonfinite``: a :class:`NonFinite`: ``EXACT`` when NaN/Inf in the input give the
  oracle's NaN/Inf pattern, else the member whose sentence says how they differ
  (``algo="auto"`` then avoids the kernel for non-finite input: :func:`choose`);
* ``auto_rank`` / ``auto_when(spec)``: whether and where ``algo="auto"`` picks it;
  ``auto_when_per_call(spec)``: its further condition where the caller transforms the
  weight on every call (no layer keeps the transform: :func:`choose`, ``cached``);
* ``macs_per_s``: a rough speed for slow kernels, so the benchmark can skip layers
  that would take minutes;
* ``multiplies(spec)``: the real multiplies it does, where that is not the direct
  convolution's ``spec.macs()`` (Winograd, FFT): what the plots count, instead of reading
  it out of the kernel's name;
* ``ladder``: its rung in the teaching ladder (python, naive, parallel, im2col, ...,
  cuda_tiled: lower first), or None: the order of the ladder plot and of the benchmark's
  default kernel list (:func:`ladder`), instead of a list of names kept elsewhere.

**Ops.**  A kernel computes one of three things, its ``op`` (docs/design.md, "The
kernel contract"); kernels are keyed by (op, name), so the same algorithm name
(naive, im2col, parallel) exists once per op.  ``KERNELS`` holds the forward kernels
(as it always did); :func:`kernels_for` gives any op's; :func:`get`, :func:`choose`
and :func:`resolve` take ``op=``.  Every op takes the *forward's* ``ConvSpec`` with
zero padding (the functional code pads, folds the gradient back through other
padding modes and handles unbatched arrays around the kernel):

* ``"forward"``: ``run(x, weight, bias, spec) -> out`` as above;
* ``"grad_input"``: ``run(grad_output, weight, spec) -> grad_input``: ``grad_output``
  C-contiguous (N, K, Hout, Wout), ``weight`` (K, C/groups, kh, kw), same dtype;
  returns a new (N, C, H, W) array, the gradient w.r.t. the spec's (unpadded) input;
  ``torch.nn.grad.conv2d_input``, and the transposed convolution without its bias;
* ``"grad_weight"``: ``run(x, grad_output, spec) -> grad_weight``: ``x`` (N, C, H, W),
  ``grad_output`` (N, K, Hout, Wout), C-contiguous, same dtype; returns a new
  (K, C/groups, kh, kw) array (``torch.nn.grad.conv2d_weight``).

A grad kernel is called as ``kernel.grad(a, b, spec)`` after :meth:`Kernel.check`;
``stages`` and ``place`` are forward-only (``register`` refuses them elsewhere).  A
grad_input kernel may have a ``transform_weight(weight, spec)`` too (the forward's
weight and spec; polyphase's flipped sub-kernels and their Winograd ``U``): its ``run``
then also takes ``transformed_weight=`` and ``kernel.grad(go, weight, spec,
transformed)`` passes it; ``Conv2d.backward`` keeps it in the layer's ``WeightCache``.
A grad_weight kernel has no weight to transform (``register`` refuses it).  A grad
kernel's ``rtol`` holds at REFERENCE_REDUCTION products per output element, like a
forward kernel's, and is scaled by that op's reduction length (:func:`reduction_length`).
The bias gradient is ``grad_output.sum((0, 2, 3))``, one NumPy call, not a kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from ..shapes import ConvSpec


class UnsupportedSpecError(ValueError):
    """A kernel was asked for a convolution it does not implement."""


class KernelUnavailableError(RuntimeError):
    """A kernel cannot run on this machine (e.g. no GPU and no CUDA simulator)."""


class KernelOp(str, Enum):
    """What a kernel computes (module docstring, "Ops").  A ``str``: ``op == "forward"``,
    printing and JSON behave as the plain names did, and a name is accepted wherever an
    op is (``register(..., op="grad_input")``)."""

    FORWARD = "forward"
    GRAD_INPUT = "grad_input"
    GRAD_WEIGHT = "grad_weight"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Device(str, Enum):
    """Where a kernel runs (a ``str``, like :class:`KernelOp`)."""

    CPU = "cpu"
    CUDA = "cuda"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class NonFinite(str, Enum):
    """What NaN or Inf in a kernel's input or weight give, against the oracle's (PyTorch's)
    pattern (docs/design.md, "Numerics").  ``EXACT``: the same pattern.  Every other
    member's value is the sentence that says how the pattern differs, and why: ``choose``
    and ``explain`` print it when ``algo="auto"`` passes a kernel over for non-finite input.
    A ``str``, like :class:`KernelOp`: ``nonfinite == "exact"`` and printing behave as the
    plain words did.  A kernel whose pattern none of these describes adds a member here
    (``register`` refuses anything else)."""

    EXACT = "exact"
    # loops that test bounds instead of reading a padded copy (naive, python, depthwise,
    # cuda_*): exact for NaN/Inf in the input, not for a non-finite weight tap over the
    # padding, which PyTorch multiplies by 0 (NaN); exact whenever the spec has no padding
    SKIPS_PADDING = ("it skips taps that fall on zero padding, so a NaN or Inf weight there "
                     "adds nothing where PyTorch's 0 x Inf gives NaN (NaN/Inf in the input: "
                     "exact)")
    # fft.py's module docstring
    FFT_TILES = ("its transforms mix a whole tile, so a NaN or Inf pixel turns every output "
                 "of each tile that reads it (all output channels) into NaN, and an Inf "
                 "weight gives NaN where the oracle gives Inf")
    # winograd.py: every entry of B^T d B mixes several pixels of a tile (and the
    # transforms subtract): one NaN/Inf pixel reaches outputs that do not depend on it
    WINOGRAD_TILES = ("its input transform mixes the pixels of a tile, so a NaN or Inf "
                      "reaches outputs that do not depend on it and an Inf comes out as NaN")
    # parallel_backward.py's grad_input: the forward kernel on the zero-dilated grad_output
    INSERTED_ZEROS = ("the inserted zeros and the full-correlation padding multiply the "
                      "weight, so an Inf in the weight makes every input gradient NaN")
    # polyphase_backward.py's grad_input: sub-convolutions, some of them Winograd's
    SUB_CONVOLUTIONS = ("its sub-convolutions' zero padding multiplies the weight and "
                        "Winograd's transforms mix a tile's values, so a NaN or Inf "
                        "reaches input gradients that PyTorch leaves finite")
    # the grad_weight kernels that compute outputs past the edge and drop them
    JUNK_POSITIONS = ("the junk positions multiply the input by 0, so a NaN or Inf in the "
                      "input can make weight gradients NaN that PyTorch leaves finite")
    # polyphase_backward.py's grad_weight: junk positions, and on 3x3 stride-1 layers
    # winograd_grad_weight.py's transforms, which mix a tile's values (and subtract)
    JUNK_OR_TILES = ("the junk positions multiply the input by 0 and, on 3x3 stride-1 "
                     "layers, Winograd's transforms mix a tile's values, so a NaN or Inf "
                     "in the input or grad_output can make weight gradients NaN that "
                     "PyTorch leaves finite")

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


OPS = tuple(KernelOp)  # forward, grad_input, grad_weight


class RunFn(Protocol):
    """``run(x, weight, bias, spec)``; kernels with ``transform_weight`` also take
    ``transformed_weight=`` (keyword only)."""

    def __call__(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                 spec: ConvSpec, /, **transformed_weight: Any) -> np.ndarray: ...


# a grad kernel: run(grad_output, weight, spec) or run(x, grad_output, spec)
GradRunFn = Callable[[np.ndarray, np.ndarray, ConvSpec], np.ndarray]
SpecCheck = Callable[[ConvSpec], "str | None"]
TransformFn = Callable[[np.ndarray, ConvSpec], Any]
StagesFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", ConvSpec, Any],
                    Sequence[tuple[str, Callable[[], Any]]]]


# What ``Placed.fetch`` returns: a kernel's output array; the bench's backward contenders
# (convlab.bench.backward) fetch a tuple of three gradients
Fetched = TypeVar("Fetched")


@dataclass(frozen=True)
class Placed(Generic[Fetched]):
    """A device kernel's inputs, copied to the device once (``Kernel.place``).

    ``call()`` launches the kernel on them and returns its device-resident output;
    ``fetch(out)`` copies that output back as a NumPy array (as a tuple of them for an
    op with several outputs); ``copy_in_s`` is how long the copies to the device took;
    ``note`` says how it will run (e.g. its tiles)."""

    call: Callable[[], Any]
    fetch: Callable[[Any], Fetched]
    copy_in_s: float | None = None  # None: nothing was copied (a CPU kernel)
    note: str = ""


def _always(spec: ConvSpec) -> str | None:
    return None


def _here() -> str | None:
    return None


def _no_workspace(spec: ConvSpec, itemsize: int) -> int:
    return 0


# The tolerance a kernel's float32 result must meet vs the float64 oracle is given for
# a reduction of this many products (64 channels x 3 x 3; docs/design.md, "Numerics")
# and scaled with the square root of the actual reduction length.
REFERENCE_REDUCTION = 576
# float64 rounding is ~2**-29 (1.9e-9) times float32's; keep a 5x margin.
FLOAT64_FACTOR = 1e-8


def reduction_length(spec: ConvSpec, op: str = "forward") -> int:
    """Products summed into one element of ``op``'s result (the longest sum): the
    forward's (C/groups)*kh*kw, grad_input's (K/groups)*kh*kw, grad_weight's N*Hout*Wout."""
    if op == "grad_input":
        return spec.grad_input_reduction_length
    if op == "grad_weight":
        return spec.grad_weight_reduction_length
    return spec.reduction_length


def reduction_scale(spec: ConvSpec, op: str = "forward") -> float:
    """sqrt(reduction / REFERENCE_REDUCTION), never below 1: rounding error of a sum
    grows like the square root of its length."""
    return max(1.0, math.sqrt(reduction_length(spec, op) / REFERENCE_REDUCTION))


def dtype_scale(dtype: Any) -> float:
    """1 for float32, FLOAT64_FACTOR for float64."""
    return FLOAT64_FACTOR if np.dtype(dtype) == np.float64 else 1.0


@dataclass(frozen=True)
class Kernel:
    """One registered convolution algorithm (see the module docstring for each field)."""

    name: str
    # called through execute() (forward: RunFn's signature) or grad() (gradient ops:
    # GradRunFn's): one field, two typed calls, so no caller handles a union
    run: Callable[..., np.ndarray]
    description: str
    supports: SpecCheck = _always
    device: Device = Device.CPU
    rtol: float = 1e-5
    available: Callable[[], str | None] = _here
    workspace: Callable[[ConvSpec, int], int] = _no_workspace
    auto_rank: int | None = None  # lower = preferred by algo="auto"; None = never picked
    auto_when: SpecCheck = _always
    # the rule's further condition where the weight's transform is made on every call
    # (conv2d, conv2d_input), not kept by a layer's WeightCache (Conv2d): is it paid back
    auto_when_per_call: SpecCheck = _always
    transform_weight: TransformFn | None = None
    stages: StagesFn | None = None
    place: Callable[..., Placed] | None = None
    nonfinite: NonFinite = NonFinite.EXACT
    macs_per_s: float | None = None
    op: KernelOp = KernelOp.FORWARD  # (module docstring, "Ops")
    # real multiplies it does for a spec, where that is not the direct convolution's
    # spec.macs() (Winograd's fewer, FFT's products plus transforms): the plots' count
    multiplies: Callable[[ConvSpec], int] | None = None
    # its rung in the teaching ladder, lower first (None: not a rung): ladder()
    ladder: int | None = None

    def __call__(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                 spec: ConvSpec, transformed_weight: Any = None) -> np.ndarray:
        """Check ``spec``, then :meth:`execute`."""
        self.check(spec)
        return self.execute(x, weight, bias, spec, transformed_weight)

    def execute(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                spec: ConvSpec, transformed_weight: Any = None) -> np.ndarray:
        """Run on arrays and a spec already checked (the transformed weight, if given,
        must come from this kernel's ``transform_weight``)."""
        if self.op != "forward":
            raise TypeError(f"{self.op} kernel {self.name!r} is called as "
                            f"run(a, b, spec) (registry docstring), not with a bias")
        if transformed_weight is None:
            return self.run(x, weight, bias, spec)
        return self.run(x, weight, bias, spec, transformed_weight=transformed_weight)

    def grad(self, a: np.ndarray, b: np.ndarray, spec: ConvSpec,
             transformed_weight: Any = None) -> np.ndarray:
        """Run a gradient kernel on arrays and a spec already checked:
        ``grad(grad_output, weight, spec)`` for grad_input, ``grad(x, grad_output, spec)``
        for grad_weight (module docstring).  ``transformed_weight``: a grad_input
        kernel's ``transform_weight(weight, spec)`` of this very weight, kept by the
        caller (``Conv2d``'s WeightCache); None computes it inside the call."""
        if self.op == "forward":
            raise TypeError(f"forward kernel {self.name!r} is called as "
                            "execute(x, weight, bias, spec), not as a gradient")
        if transformed_weight is None:
            return self.run(a, b, spec)
        return self.run(a, b, spec, transformed_weight=transformed_weight)

    def keeps_nonfinite(self, spec: ConvSpec) -> bool:
        """True when NaN or Inf in the input or weight give PyTorch's (the oracle's)
        pattern on ``spec``: always for an "exact" kernel; for one that skips the taps in
        the zero padding (:data:`SKIPS_PADDING`), whenever ``spec`` has no padding, since
        then there is no tap to skip.  ``auto`` scans the arrays only when this is False."""
        return self.nonfinite is NonFinite.EXACT or (
            self.nonfinite is NonFinite.SKIPS_PADDING and not any(spec.padding))

    def why_not(self, spec: ConvSpec) -> str | None:
        """None if this kernel can run ``spec`` here, else the full reason."""
        why = self.available()
        if why is not None:
            return f"kernel {self.name!r} is not available here: {why}"
        why = self.supports(spec)
        return None if why is None else f"{self.name} {why}"

    def check(self, spec: ConvSpec) -> None:
        """Raise a clear error if this kernel cannot run ``spec`` here."""
        why = self.available()
        if why is not None:
            raise KernelUnavailableError(f"kernel {self.name!r} is not available here: {why}")
        why = self.supports(spec)
        if why is not None:
            raise UnsupportedSpecError(f"{self.name} {why}")

    def tolerance(self, spec: ConvSpec, dtype: Any) -> float:
        """Allowed error for this spec and dtype, as a fraction of
        ``max(1, max|oracle output|)`` (what :func:`convlab.reference.compare` checks).

        ``rtol`` holds at REFERENCE_REDUCTION products per output and is scaled by
        :func:`reduction_scale` (never below ``rtol``) and :func:`dtype_scale`."""
        return self.rtol * reduction_scale(spec, self.op) * dtype_scale(dtype)


# (kept by its old name: tests/test_nonfinite.py compares with it)
SKIPS_PADDING = NonFinite.SKIPS_PADDING

KERNELS: dict[str, Kernel] = {}  # the forward kernels
_GRAD_KERNELS: dict[str, dict[str, Kernel]] = {"grad_input": {}, "grad_weight": {}}
# hooks that only make sense for the forward op (the harness and Conv2d call them);
# transform_weight also exists for grad_input (a weight to transform), not grad_weight
_FORWARD_ONLY = ("stages", "place")
_WEIGHT_OPS = ("forward", "grad_input")


def _check_op(op: str) -> KernelOp:
    try:
        return KernelOp(op)
    except ValueError:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}") from None


def kernels_for(op: str = "forward") -> dict[str, Kernel]:
    """The kernels registered for ``op`` (``KERNELS`` for "forward"), by name."""
    return KERNELS if _check_op(op) == "forward" else _GRAD_KERNELS[op]


KernelFn = TypeVar("KernelFn", bound=Callable[..., np.ndarray])


def register(name: str, *, description: str,
             **fields: Any) -> Callable[[KernelFn], KernelFn]:
    """Decorator: ``@register("naive", description=..., rtol=...)`` adds a kernel;
    ``op="grad_input"`` or ``op="grad_weight"`` registers a backward kernel.

    ``fields`` are :class:`Kernel`'s optional fields; anything else is an error."""
    known = set(Kernel.__dataclass_fields__) - {"name", "run", "description"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"register({name!r}): unknown field(s) {', '.join(unknown)}; "
                        f"a kernel may set {', '.join(sorted(known))}")
    op = fields["op"] = _check_op(fields.get("op", "forward"))
    try:
        fields["device"] = Device(fields.get("device", "cpu"))
    except ValueError:
        raise ValueError(f"register({name!r}): unknown device {fields['device']!r}; "
                         f"devices: {', '.join(Device)}") from None
    try:
        fields["nonfinite"] = NonFinite(fields.get("nonfinite", "exact"))
    except ValueError:
        raise ValueError(f"register({name!r}): unknown nonfinite "
                         f"{str(fields['nonfinite'])[:60]!r}; give a NonFinite: "
                         f"{', '.join(m.name for m in NonFinite)} (a new pattern is a new "
                         "member, with its sentence)") from None
    forward_only = sorted(f for f in _FORWARD_ONLY if fields.get(f) is not None)
    if op != "forward" and forward_only:
        raise TypeError(f"register({name!r}, op={op!r}): {', '.join(forward_only)} "
                        "only exist for forward kernels")
    if op not in _WEIGHT_OPS and fields.get("transform_weight") is not None:
        raise TypeError(f"register({name!r}, op={op!r}): transform_weight only exists for "
                        "forward and grad_input kernels (a grad_weight kernel is given no "
                        "weight)")

    def decorate(run: KernelFn) -> KernelFn:
        global _registered
        table = kernels_for(op)
        if name in table:
            what = "a kernel" if op == "forward" else f"a {op} kernel"
            raise ValueError(f"{what} named {name!r} is already registered")
        table[name] = Kernel(name, run, description, **fields)
        _registered += 1
        return run

    return decorate


_registered = 0  # register() calls so far: part of version()


def version() -> tuple[int, ...]:
    """A stamp that changes when the kernel tables do (a kernel registered, one removed
    from a table, a table replaced): :mod:`convlab.plan` drops its plans then."""
    gi, gw = _GRAD_KERNELS["grad_input"], _GRAD_KERNELS["grad_weight"]
    return (_registered, id(KERNELS), len(KERNELS), id(gi), len(gi), id(gw), len(gw))


def ladder() -> list[str]:
    """The forward kernels that are rungs of the teaching ladder (``Kernel.ladder``), in
    its order: python -> naive -> parallel -> ... -> cuda_tiled.  The ladder plot and the
    benchmark's default kernel list use it."""
    rungs = [k for k in KERNELS.values() if k.ladder is not None]
    return [k.name for k in sorted(rungs, key=lambda k: (k.ladder, k.name))]


def get(name: str, op: str = "forward") -> Kernel:
    """The ``op`` kernel called ``name``; an unknown name lists the known ones."""
    table = kernels_for(op)
    try:
        return table[name]
    except (KeyError, TypeError):
        known = ", ".join(["auto"] + sorted(table))
        what = "" if op == "forward" else f" for {op}"
        raise ValueError(f"unknown algo {name!r}{what}; known algorithms: {known}") from None


@dataclass(frozen=True)
class Choice:
    """What ``algo="auto"`` picked for a spec, and why: by the rule (``source="rule"``,
    the reason is the kernel's description) or by a measurement on this machine
    (``source="measured"``, see :mod:`convlab.tuning`); or named by the caller
    (``source="named"``, ``algo="im2col"``: :mod:`convlab.plan`)."""

    kernel: Kernel
    reason: str
    passed_over: tuple[tuple[str, str], ...]  # (kernel name, why not) for better-ranked ones
    source: str = "rule"

    def __str__(self) -> str:
        if self.source == "named":
            lines = [f"runs {self.kernel.name!r}, as named: {self.reason}"]
        else:
            how = "by the rule" if self.source == "rule" else "as measured"
            lines = [f"auto picks {self.kernel.name!r} {how}: {self.reason}"]
        lines += [f"  not {name!r}: {why}" for name, why in self.passed_over]
        return "\n".join(lines)


def choose(spec: ConvSpec, finite: bool = True, op: str = "forward",
           cached: bool = False) -> Choice:
    """The ``algo="auto"`` rule: the best-ranked available ``op`` kernel that supports
    ``spec`` and says it is a good fit for it (``auto_when``).  Ranks come from
    measurements recorded where each kernel is registered.  ``finite=False`` (the input
    holds NaN or Inf) passes over kernels whose non-finite pattern differs from the
    oracle's.  ``cached``: the caller keeps the weight's transform between calls
    (``Conv2d``'s WeightCache), so a kernel's ``auto_when_per_call`` does not apply."""
    passed: list[tuple[str, str]] = []
    ranked = sorted((k for k in kernels_for(op).values() if k.auto_rank is not None),
                    key=lambda k: k.auto_rank)  # type: ignore[arg-type,return-value]
    for kern in ranked:
        why = kern.available() or kern.supports(spec) or kern.auto_when(spec)
        if why is None and not cached:
            why = kern.auto_when_per_call(spec)
        if why is None and not finite and not kern.keeps_nonfinite(spec):
            why = f"the input holds NaN or Inf, and {kern.nonfinite}"
        if why is None:
            return Choice(kern, kern.description, tuple(passed))
        passed.append((kern.name, why))
    what = "kernel" if op == "forward" else f"{op} kernel"
    raise UnsupportedSpecError(f"no registered {what} can run {spec.describe()}")


def resolve(algo: str | Kernel, spec: ConvSpec, finite: bool = True,
            op: str = "forward") -> Kernel:
    """The ``op`` kernel for ``algo`` (a name, "auto", or a :class:`Kernel` already
    looked up), checked against ``spec``."""
    if isinstance(algo, Kernel):
        algo.check(spec)
        return algo
    if algo == "auto":
        return choose(spec, finite, op).kernel
    kernel = get(algo, op)
    kernel.check(spec)
    return kernel


def output_with_bias(spec: ConvSpec, dtype: Any, bias: np.ndarray | None) -> np.ndarray:
    """A new (N, K, Hout, Wout) output, holding the bias (or zeros): kernels that
    accumulate into their output start from here, so the bias costs no extra pass."""
    out = np.empty(spec.batched_output_shape, dtype=dtype)
    out[...] = 0 if bias is None else bias[None, :, None, None]
    return out

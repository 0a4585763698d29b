"""The kernel registry: every convolution algorithm behind one signature.

A kernel is a function ``run(x, weight, bias, spec) -> out`` registered with
:func:`register`.  It receives

* ``x``: a C-contiguous batched (N, C, H, W) array of float32 or float64,
* ``weight``: C-contiguous (K, C/groups, kh, kw), same dtype,
* ``bias``: (K,) of the same dtype, or None,
* ``spec``: the :class:`~convlab.shapes.ConvSpec`, whose ``padding_mode`` is
  always 'zeros' (other modes are materialised by :func:`convlab.conv2d` first),

and returns a new (N, K, Hout, Wout) array of x's dtype with the bias added.
It never modifies its inputs and never re-derives a shape: it asks ``spec``.

The bias is the kernel's job (not the caller's) so fast kernels can fuse it
into their last pass over the output instead of making another one.

A kernel asked for a spec it cannot do raises :class:`UnsupportedSpecError`
naming the reason; it never falls back to another kernel silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..shapes import ConvSpec

RunFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", ConvSpec], np.ndarray]
SpecCheck = Callable[[ConvSpec], "str | None"]


class UnsupportedSpecError(ValueError):
    """A kernel was asked for a convolution it does not implement."""


class KernelUnavailableError(RuntimeError):
    """A kernel cannot run on this machine (e.g. no GPU and no CUDA simulator)."""


def _always(spec: ConvSpec) -> str | None:
    return None


def _here() -> str | None:
    return None


def _no_workspace(spec: ConvSpec, itemsize: int) -> int:
    return 0


# The tolerance a kernel's float32 result must meet vs the float64 oracle, for a
# reduction of this many products (64 channels x 3 x 3, DESIGN.md section 5).
REFERENCE_REDUCTION = 576
# float64 rounding is ~2**-29 (1.9e-9) times float32's; keep a 5x margin.
FLOAT64_FACTOR = 1e-8


@dataclass(frozen=True)
class Kernel:
    """One registered convolution algorithm."""

    name: str
    run: RunFn
    description: str
    supports: SpecCheck = _always  # None = yes, else the reason it cannot
    device: str = "cpu"  # "cpu" | "cuda"
    # float32 error allowed vs the oracle at REFERENCE_REDUCTION, as a fraction of max|out|
    rtol: float = 1e-5
    available: Callable[[], str | None] = _here  # None = runs here, else how to get it
    workspace: Callable[[ConvSpec, int], int] = _no_workspace  # extra bytes it allocates
    auto_rank: int | None = None  # lower = preferred by algo="auto"; None = never picked
    auto_when: SpecCheck = _always  # None = auto may pick it for this spec, else why not
    extras: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                 spec: ConvSpec) -> np.ndarray:
        self.check(spec)
        return self.run(x, weight, bias, spec)

    def check(self, spec: ConvSpec) -> None:
        """Raise a clear error if this kernel cannot run ``spec`` here."""
        why = self.available()
        if why is not None:
            raise KernelUnavailableError(f"kernel {self.name!r} is not available here: {why}")
        why = self.supports(spec)
        if why is not None:
            raise UnsupportedSpecError(f"{self.name} {why}")

    def tolerance(self, spec: ConvSpec, dtype: Any) -> float:
        """Allowed error, relative to max|output|, for this spec and dtype.

        Rounding error of a sum grows like the square root of its length, so the
        tolerance is scaled by sqrt(reduction / 576) (never below the base).
        """
        scale = max(1.0, math.sqrt(spec.reduction_length / REFERENCE_REDUCTION))
        tol = self.rtol * scale
        return tol * FLOAT64_FACTOR if np.dtype(dtype) == np.float64 else tol


KERNELS: dict[str, Kernel] = {}


def register(
    name: str,
    *,
    description: str,
    supports: SpecCheck = _always,
    device: str = "cpu",
    rtol: float = 1e-5,
    available: Callable[[], str | None] = _here,
    workspace: Callable[[ConvSpec, int], int] = _no_workspace,
    auto_rank: int | None = None,
    auto_when: SpecCheck = _always,
    **extras: Any,
) -> Callable[[RunFn], RunFn]:
    """Decorator: ``@register("naive", description=...)`` adds a kernel to the registry."""

    def decorate(run: RunFn) -> RunFn:
        if name in KERNELS:
            raise ValueError(f"a kernel named {name!r} is already registered")
        KERNELS[name] = Kernel(name, run, description, supports, device, rtol, available,
                               workspace, auto_rank, auto_when, dict(extras))  # fmt: skip
        return run

    return decorate


def get(name: str) -> Kernel:
    """The kernel called ``name``; an unknown name lists the known ones."""
    try:
        return KERNELS[name]
    except (KeyError, TypeError):
        known = ", ".join(["auto"] + sorted(KERNELS))
        raise ValueError(f"unknown algo {name!r}; known algorithms: {known}") from None


@dataclass(frozen=True)
class Choice:
    """What ``algo="auto"`` picked for a spec, and why."""

    kernel: Kernel
    reason: str
    passed_over: tuple[tuple[str, str], ...]  # (kernel name, why not) for better-ranked ones

    def __str__(self) -> str:
        lines = [f"auto picks {self.kernel.name!r}: {self.reason}"]
        lines += [f"  not {name!r}: {why}" for name, why in self.passed_over]
        return "\n".join(lines)


def choose(spec: ConvSpec) -> Choice:
    """The ``algo="auto"`` rule: the best-ranked available kernel that supports ``spec``
    and says it is a good fit for it (``auto_when``).  Ranks come from measurements
    recorded where each kernel is registered."""
    passed: list[tuple[str, str]] = []
    ranked = sorted((k for k in KERNELS.values() if k.auto_rank is not None),
                    key=lambda k: k.auto_rank)  # type: ignore[arg-type,return-value]
    for kern in ranked:
        why = kern.available() or kern.supports(spec) or kern.auto_when(spec)
        if why is None:
            return Choice(kern, kern.description, tuple(passed))
        passed.append((kern.name, why))
    raise UnsupportedSpecError(f"no registered kernel can run {spec.describe()}")


def output_with_bias(spec: ConvSpec, dtype: Any, bias: np.ndarray | None) -> np.ndarray:
    """A new (N, K, Hout, Wout) output, holding the bias (or zeros): kernels that
    accumulate into their output start from here, so the bias costs no extra pass."""
    out = np.empty(spec.batched_output_shape, dtype=dtype)
    out[...] = 0 if bias is None else bias[None, :, None, None]
    return out

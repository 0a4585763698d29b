"""The plan: which kernel runs a convolution, decided once, and why.

Every public entry point asks one function, :func:`plan`, for the kernels of a
convolution: ``conv2d``, ``conv2d_input``, ``conv2d_weight``, ``conv_transpose2d``,
``Conv2d`` (forward and backward), ``explain``, the benchmark's ``auto`` contender and
``convlab tune``.  A :class:`Plan` holds, for one kernel spec (zero padding: what the
kernels see), dtype, choice of algorithms and weight-cache mode:

* ``forward``, ``grad_input`` and ``grad_weight``: each a :class:`Choice` (the kernel,
  the reason, what was passed over, and how it was picked: ``"rule"``, ``"measured"``
  or ``"named"``), each worked out the first time it is asked for;
* :meth:`Plan.choice_for`: the choice for *this call's* arrays.  Most kernels keep
  PyTorch's NaN/Inf pattern; for one that does not (``Kernel.nonfinite``), and only
  then, the arrays are scanned once, and a non-finite call takes the ``finite=False``
  plan's choice instead.

This is NNPACK's single decision point and einops' cached recipe: the decision (ask the
tuner's memory, walk the registry's ranked rule) costs tens of microseconds, so it is
made once per (spec, dtype, algorithms, finite, weight cache, workspace cap) and
remembered for the process.  A remembered plan is dropped when anything it depended on
changes: the registry (a kernel registered or removed), the tuning memory (this
process tuned or cleared it, or the file changed on disk, looked at every
:data:`convlab.tuning.REFRESH_S` seconds) or Numba's thread count.

``explain(...)`` returns ``plan(...).choice_for(op, arrays)``, the very object whose
kernel the call would run, so it cannot disagree with what runs; ``print(a_plan)``
lists all three ops.

Cost (``python scripts/percall.py``): a remembered plan is a dictionary look-up behind a
four-number stamp, 2-4 us (the first decision of a spec walks the registry's ranked rule
and reads the tuning memory: 20-60 us, once).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from . import tuning
from .kernels import registry
from .kernels.im2col import get_workspace_cap, workspace_cap
from .kernels.registry import OPS, Choice, Kernel
from .shapes import ConvSpec
from .validate import all_finite

# algo values that are not kernel names: chosen per spec ("tune": measured first)
SELECTORS = ("auto", "tune")


def _thread_counter() -> Callable[[], int]:
    """Numba's thread count for this thread, as cheaply as it can be read.

    ``numba.get_num_threads()`` costs ~1.5 us (it makes sure the pool is launched on
    every call); once it is, the pool's own reader costs ~0.2 us.  Falls back to the
    public call if Numba's layout changes."""
    import numba

    try:
        from numba.np.ufunc import parallel

        numba.get_num_threads()  # launches the pool
        fast: Callable[[], int] = getattr(parallel, "_get_num_threads")  # noqa: B009
        if fast() == numba.get_num_threads():
            return fast
    except (ImportError, AttributeError):  # pragma: no cover - another Numba
        pass
    public: Callable[[], int] = numba.get_num_threads
    return public


_threads: Callable[[], int] | None = None


def _stamp() -> tuple[Any, ...]:
    """What every remembered plan depends on (module docstring)."""
    global _threads
    if _threads is None:
        _threads = _thread_counter()
    return (registry.version(), tuning.default_cache().generation(), _threads())


class Plan:
    """The kernels for one convolution (module docstring); made by :func:`plan`."""

    __slots__ = ("spec", "dtype", "algo", "backward_algo", "finite", "cached", "empty",
                 "cap", "_choices", "_lock")

    def __init__(self, spec: ConvSpec, dtype: np.dtype, algo: str, finite: bool,
                 cached: bool, backward_algo: str, cap: int) -> None:
        self.spec = spec  # what the kernels see: zero padding only
        self.dtype = dtype
        self.algo = algo
        self.backward_algo = backward_algo
        self.finite = finite
        self.cached = cached
        self.empty = spec.output_elements() == 0  # torch's empty output, no kernel call
        # the workspace cap the plan was made under (part of its key): each choice is
        # decided under it, whichever cap is in force when it is first asked for
        self.cap = cap
        self._choices: dict[str, Choice] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the three choices
    def choice(self, op: str = "forward") -> Choice:
        """The ``op`` kernel of this plan (worked out on first use, then kept)."""
        found = self._choices.get(op)
        if found is None:
            with self._lock:
                found = self._choices.get(op)
                if found is None:
                    with workspace_cap(self.cap):
                        found = self._decide(op)
                    self._choices[op] = found
        return found

    @property
    def forward(self) -> Choice:
        return self.choice("forward")

    @property
    def grad_input(self) -> Choice:
        return self.choice("grad_input")

    @property
    def grad_weight(self) -> Choice:
        return self.choice("grad_weight")

    def _decide(self, op: str) -> Choice:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
        algo = self.algo if op == "forward" else self.backward_algo
        spec = self.spec
        if algo not in SELECTORS:
            kernel = registry.get(algo, op)
            kernel.check(spec)
            return Choice(kernel, kernel.description, (), source="named")
        # backward kernels are measured with their transform on every call (as
        # conv2d_input runs them): one measured winner per op; the rule knows that
        # Conv2d keeps polyphase's grad_input transform (auto_when_per_call)
        cached = self.cached and op != "grad_weight"
        if algo == "tune" and not self.empty:
            tuned = tuning.tune(spec, self.dtype, cached=cached and op == "forward", op=op)
            kernel = registry.kernels_for(op)[tuned.winner]
            if self.finite or kernel.keeps_nonfinite(spec):
                return Choice(kernel, tuned.describe(), (), source="measured")
        return tuning.choose(spec, self.dtype, self.finite, cached, op)

    # ------------------------------------------------------------ for one call
    def choice_for(self, op: str, *arrays: np.ndarray | None) -> Choice:
        """The choice that runs ``op`` on these arrays: this plan's, unless its kernel
        spreads NaN/Inf unlike PyTorch, was picked (not named), and an array holds one;
        then the ``finite=False`` plan's.  The arrays are scanned at most once."""
        found = self.choice(op)
        if (found.kernel.keeps_nonfinite(self.spec) or found.source == "named"
                or not self.finite or all_finite(*arrays)):
            return found
        return self.nonfinite().choice(op)

    def kernel_for(self, op: str, *arrays: np.ndarray | None) -> Kernel:
        """``choice_for(op, *arrays).kernel``."""
        return self.choice_for(op, *arrays).kernel

    def nonfinite(self) -> Plan:
        """The same plan for arrays holding NaN or Inf."""
        return plan(self.spec, self.dtype, self.algo, False, self.cached, self.backward_algo,
                    self.cap)

    def with_backward(self, backward_algo: str) -> Plan:
        """This plan with other backward kernels (``Conv2d.backward_algo`` changed)."""
        if backward_algo == self.backward_algo:
            return self
        return plan(self.spec, self.dtype, self.algo, self.finite, self.cached,
                    backward_algo, self.cap)

    def __str__(self) -> str:
        mode = "weight transformed once (Conv2d)" if self.cached else "conv2d"
        lines = [f"plan for {self.spec.describe()}, {self.dtype.name}, {mode}"
                 + ("" if self.finite else ", input holding NaN/Inf") + ":"]
        for op in OPS:
            try:
                text = str(self.choice(op))
            except (registry.UnsupportedSpecError, registry.KernelUnavailableError) as exc:
                text = f"no kernel: {exc}"
            lines.append(f"{op}: " + text.replace("\n", "\n  "))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Plan({self.spec!r}, {self.dtype.name}, algo={self.algo!r}, "
                f"backward_algo={self.backward_algo!r}, finite={self.finite}, "
                f"cached={self.cached})")


_PLANS: dict[tuple[Any, ...], Plan] = {}
_PLANS_STAMP: tuple[Any, ...] | None = None
_PLANS_MAX = 4096  # distinct plans kept; past that the memory starts again
_FLOAT32 = np.dtype(np.float32)


def plan(spec: ConvSpec, dtype: Any = _FLOAT32, algo: str = "auto", finite: bool = True,
         cached: bool = False, backward_algo: str = "auto", cap: int | None = None) -> Plan:
    """The plan for kernel spec ``spec`` (zero padding: :func:`convlab.validate.kernel_spec`)
    in ``dtype``.

    ``algo``: the forward kernel's name, "auto" or "tune"; ``backward_algo``: the
    grad_input and grad_weight kernels' name or "auto"; ``finite``: False for arrays
    holding NaN or Inf; ``cached``: the weight's transform is kept between calls
    (``Conv2d``'s :class:`~convlab.functional.WeightCache`), which the tuner measures
    apart; ``cap``: the workspace cap its choices are decided under (default: the one in
    force here, :func:`convlab.kernels.im2col.workspace_cap`).  Remembered for the
    process (module docstring)."""
    global _PLANS_STAMP
    if not isinstance(dtype, np.dtype):
        dtype = np.dtype(dtype)
    stamp = _stamp()
    if stamp != _PLANS_STAMP or len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
        _PLANS_STAMP = stamp
    # The workspace cap in force (a thread's or task's own, kernels.im2col.workspace_cap)
    # is part of the key, not the stamp: im2col's grad_weight rule asks whether the
    # whole batch's columns fit it, and two threads under different caps each keep theirs.
    if cap is None:
        cap = get_workspace_cap()
    key = (spec, dtype, algo, backward_algo, finite, cached, cap)
    found = _PLANS.get(key)
    if found is None:
        found = _PLANS[key] = Plan(spec, dtype, algo, finite, cached, backward_algo, cap)
    return found


def forget() -> None:
    """Drop every remembered plan (they are made again on the next call)."""
    _PLANS.clear()

"""``gradcheck``: is an analytic gradient right?  Compare it with central differences.

The numerical derivative of output element m with respect to input element e is

    (f(x + eps * e) - f(x - eps * e))[m] / (2 * eps)

whose error shrinks like eps**2 (the first-order terms cancel); in float64 with
eps = 1e-6 the rounding error is ~1e-10 relative, far below any real bug.  Doing
this for every input element gives the numerical Jacobian; calling the backward
once per output element (with a one-hot ``grad_output``) gives the analytic one;
they must agree element by element within ``atol + rtol * |numerical|``, exactly
``torch.autograd.gradcheck``'s test (and its defaults: eps=1e-6, atol=1e-5,
rtol=1e-3).  The check reports the *worst* element: which input, where, both
values.

It costs two forward calls per input element plus one backward per output
element: a tool for small arrays (tens to a few hundred elements), as in torch.

``fn`` is either

* a **layer** with ``forward``, ``backward`` and ``grad`` (``convlab.Conv2d``,
  ``convlab.ConvTranspose2d``, or your own): ``inputs = (x,)``; the gradient
  w.r.t. ``x`` and every parameter in ``layer.grad`` is checked (the layer must be
  float64: ``Conv2d(..., dtype=np.float64)``; its ``grad`` is restored afterwards), or
* a function ``fn(*inputs) -> (output, backward)`` where ``backward(grad_output)``
  returns one gradient per input (None for an input it does not differentiate);
  floating inputs are passed as float64 copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the numerical one; ``worst`` says where."""

    def __init__(self, message: str, worst: Mismatch) -> None:
        super().__init__(message)
        self.worst = worst


@dataclass(frozen=True)
class Mismatch:
    """The worst element of a Jacobian comparison."""

    name: str  # which input or parameter
    input_index: tuple[int, ...]
    output_index: tuple[int, ...]
    numerical: float
    analytical: float
    allowed: float  # atol + rtol * |numerical|

    @property
    def excess(self) -> float:
        """|analytical - numerical| / allowed: above 1 fails."""
        return abs(self.analytical - self.numerical) / self.allowed


def _as_float64(value: Any) -> Any:
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float64)
    return value


def _layer_problem(fn: Any) -> tuple[Callable[..., Any], dict[str, np.ndarray],
                                     Callable[[], None]]:
    """(evaluate(x) -> (output, backward), parameters by name, restore) for a layer."""
    params = {name: arr for name, arr in fn._named().items()}
    for name, arr in params.items():
        if arr.dtype != np.float64:
            raise ValueError(f"gradcheck needs a float64 layer (its {name} is {arr.dtype}): "
                             "create it with dtype=np.float64; float32 central differences "
                             "are rounding noise at eps=1e-6")
    saved = {name: g.copy() for name, g in fn.grad.items()}

    def evaluate(x: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], list]]:
        out = fn.forward(x)

        def backward(grad_output: np.ndarray) -> list:
            fn.zero_grad()
            gx = fn.backward(grad_output)
            return [gx] + [fn.grad[name].copy() for name in params]

        return out, backward

    def restore() -> None:
        for name, g in saved.items():
            fn.grad[name][...] = g

    return evaluate, params, restore


def gradcheck(fn: Any, inputs: Sequence[Any], eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, *, raise_exception: bool = True) -> bool:
    """True if ``fn``'s analytic gradient equals central differences (see the module
    docstring); else raises :class:`GradcheckError` naming the worst element (or
    returns False with ``raise_exception=False``)."""
    if eps <= 0 or atol < 0 or rtol < 0:
        raise ValueError(f"need eps > 0, atol >= 0, rtol >= 0; got eps={eps}, atol={atol}, "
                         f"rtol={rtol}")
    restore: Callable[[], None] = lambda: None  # noqa: E731
    if hasattr(fn, "backward") and hasattr(fn, "grad") and hasattr(fn, "forward"):
        if len(inputs) != 1:
            raise ValueError(f"a layer takes one input, got {len(inputs)}")
        evaluate, params, restore = _layer_problem(fn)
        x = np.array(inputs[0], dtype=np.float64)
        names = ["input"] + list(params)
        arrays = [x] + list(params.values())  # perturbed in place (parameters restored)

        def run() -> tuple[np.ndarray, Callable[[np.ndarray], list]]:
            return evaluate(x)
    else:
        arrays = [_as_float64(np.array(a)) if isinstance(a, np.ndarray) else a for a in inputs]
        names = [f"input {i}" for i in range(len(arrays))]

        def run() -> tuple[np.ndarray, Callable[[np.ndarray], list]]:
            return _output_and_backward(fn, arrays)
    try:
        worst = _compare(run, arrays, names, eps, atol, rtol)
    finally:
        restore()
    if worst is None or worst.excess <= 1:
        return True
    if not raise_exception:
        return False
    raise GradcheckError(
        f"Jacobian mismatch for {worst.name}, element {worst.input_index}, output "
        f"{worst.output_index}: numerical {worst.numerical:.6g}, analytical "
        f"{worst.analytical:.6g}, difference {abs(worst.analytical - worst.numerical):.3g} > "
        f"atol + rtol * |numerical| = {worst.allowed:.3g}", worst)


def _output_and_backward(fn: Any, arrays: list[Any]) -> tuple[np.ndarray,
                                                                Callable[[np.ndarray], list]]:
    """``fn(*arrays)``, checked to be the ``(output, backward)`` pair gradcheck needs."""
    result = fn(*arrays)
    if isinstance(result, (tuple, list)) and len(result) == 2 and callable(result[1]):
        return result[0], result[1]
    what = (f"a {type(result).__name__} of {len(result)} items"
            if isinstance(result, (tuple, list)) else
            f"a {type(result).__name__}" + (f" of shape {result.shape}"
                                            if isinstance(result, np.ndarray) else ""))
    name = getattr(fn, "__name__", type(fn).__name__)
    raise TypeError(
        f"gradcheck(fn, inputs) needs fn(*inputs) to return (output, backward), where "
        f"backward(grad_output) returns one gradient per input; {name} returned {what}. "
        "convlab has no autograd: unlike torch.autograd.gradcheck it cannot derive the "
        "analytic gradient from a function's output, so pass either a layer (forward, "
        "backward and grad, e.g. convlab.Conv2d(..., dtype=np.float64)) with inputs=(x,), "
        "or a function that returns its output together with its own backward")


def _compare(run: Callable[[], tuple[np.ndarray, Callable[[np.ndarray], list]]],
             arrays: list[Any], names: list[str], eps: float, atol: float,
             rtol: float) -> Mismatch | None:
    out, backward = run()
    out = np.asarray(out)
    # analytic Jacobians: one backward per output element (a one-hot grad_output)
    analytic: list[list[np.ndarray | None]] = [[] for _ in arrays]
    for m in range(out.size):
        onehot = np.zeros(out.shape)
        onehot.flat[m] = 1.0
        grads = list(backward(onehot))
        if len(grads) != len(arrays):
            raise ValueError(f"backward returned {len(grads)} gradients for {len(arrays)} "
                             "inputs")
        for i, g in enumerate(grads):
            analytic[i].append(None if g is None else np.asarray(g, dtype=np.float64))
        if m + 1 < out.size:
            out, backward = run()  # a layer frees its saved input after a backward
    worst: Mismatch | None = None
    for i, arr in enumerate(arrays):
        given = [g for g in analytic[i] if g is not None]
        if not isinstance(arr, np.ndarray) or not given:
            continue
        if len(given) < len(analytic[i]):  # None means "not differentiated": for every m
            raise ValueError(f"backward returned None for {names[i]} for some grad_outputs "
                             f"and a gradient for others ({len(given)} of "
                             f"{len(analytic[i])}); return None for every grad_output, or "
                             "a gradient for every one")
        jac_a = np.stack([g.reshape(-1) for g in given], axis=1)  # (inputs, outputs)
        if jac_a.shape[0] != arr.size:
            raise ValueError(f"the gradient for {names[i]} has {jac_a.shape[0]} elements, the "
                             f"input {arr.size}")
        jac_n = np.empty_like(jac_a)
        flat = arr.reshape(-1)  # a view: perturb in place, then put the value back
        for e in range(arr.size):
            keep = flat[e]
            flat[e] = keep + eps  # np.array copies: an output may be a view of the input
            plus = np.array(run()[0], dtype=np.float64).reshape(-1)
            flat[e] = keep - eps
            minus = np.array(run()[0], dtype=np.float64).reshape(-1)
            flat[e] = keep
            jac_n[e] = (plus - minus) / (2 * eps)
        allowed = atol + rtol * np.abs(jac_n)
        excess = np.abs(jac_a - jac_n) / allowed
        e, m = (int(v) for v in np.unravel_index(int(np.argmax(excess)), excess.shape))
        cand = Mismatch(names[i], tuple(int(v) for v in np.unravel_index(e, arr.shape)),
                        tuple(int(v) for v in np.unravel_index(m, out.shape)),
                        float(jac_n[e, m]), float(jac_a[e, m]), float(allowed[e, m]))
        if worst is None or cand.excess > worst.excess:
            worst = cand
    return worst

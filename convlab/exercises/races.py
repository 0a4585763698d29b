"""Which output elements may a ``prange`` iteration write?  A static race check.

``for v in prange(n)`` hands iterations to threads in any order, at once.  The loop is
race-free when no array element is written by two iterations: each iteration must
*own* the elements it stores to.  This module reads a function's source (``ast``) and,
for every store ``a[...] = ...`` or ``a[...] += ...`` inside a ``prange`` body, asks
whether the index singles out the iteration.

The reasoning, in three steps:

1. **Fixed by v alone.**  A name is *fixed* when its value depends only on ``v`` and on
   names the body never assigns (the arrays, their shapes): ``n, k = nk // K, nk % K``
   or ``n, k = divmod(nk, K)``.  A name that an inner loop or a second assignment
   changes (``p`` in ``for p in range(kh)``, or ``yy = y - p``) is not fixed.
2. **Views carry their index.**  ``o = out[n]`` makes ``o[k, i, j]`` the element
   ``out[n, k, i, j]``, and ``row = out[n, k, i]`` makes ``row[j]`` the element
   ``out[n, k, i, j]``; ``.reshape``/``.ravel``/``.T`` of a view keep its prefix.  An
   array allocated inside the body (``np.zeros(...)``) is the iteration's own.
3. **The fixed parts must determine v.**  The store is owned when the fixed parts of
   its index (the view's prefix and its own subscripts) together determine ``v``: two
   iterations then differ in one of them, so they write different elements.  ``v``
   itself does, as do ``v + c`` and ``c * v`` (c independent of v), and ``v // M``
   together with ``v % M`` (recursively, for an index flattened over three loops).

A store that fails step 3 is reported.  ``out[n, k, i, j] += ...`` inside ``for c in
prange(C)`` has no part that depends on c: every iteration adds into the same element.
``out[n, k, y - p, j] += ...`` inside ``for y in prange(H)`` depends on y, but ``y - p``
is not fixed: iteration y writes rows y - kh + 1 .. y, iteration y + 1 rows y - kh + 2 ..
y + 1, and those overlap (the scatter form of a convolution: at 16 threads it gave wrong
sums in 1 run of 30).

Limits (it is a check for a teaching exercise, not a proof): a slice in an index
(``out[n, :, a:b]``) counts as not fixed, so a store that owns a block through a slice
computed from v is reported; writes through two different index patterns into one
array are judged one at a time; an index that determines v in a way not built from
``+ - *``, ``//`` and ``%`` (``min``, a lookup table) is reported.

Source: the "no cross-iteration dependencies" rule of Numba's ``prange`` documentation
(numba.readthedocs.io, "Explicit Parallel Loops").
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

# calls that make a new array: stores into it belong to the iteration that made it
_ALLOCATORS = {"zeros", "empty", "ones", "full", "zeros_like", "empty_like", "ones_like",
               "full_like", "copy", "array"}
# methods that return a view of (or, for copy, a new) array with the same elements
_VIEW_METHODS = {"reshape", "ravel", "transpose", "swapaxes", "view"}
_MAX_DEPTH = 8  # how deep // and % may be nested in a flattened index


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def is_prange(loop: ast.For) -> bool:
    """``for ... in prange(...)`` (or ``numba.prange``)."""
    f = loop.iter.func if isinstance(loop.iter, ast.Call) else None
    return (isinstance(f, ast.Name) and f.id == "prange") or (
        isinstance(f, ast.Attribute) and f.attr == "prange")


def _binop(left: ast.expr, op: ast.operator, right: ast.expr) -> ast.expr:
    return ast.BinOp(left=left, op=op, right=right)


@dataclass
class _Body:
    """What a prange body binds: each name's assignments (``(value, plain)``: plain for
    ``name = value``; a loop variable, ``+=`` or unpacking of unknown shape is not)."""

    var: str
    defs: dict[str, list[tuple[ast.expr | None, bool]]] = field(default_factory=dict)

    def bind(self, target: ast.expr, value: ast.expr | None, plain: bool = True) -> None:
        if isinstance(target, ast.Name):
            self.defs.setdefault(target.id, []).append((value, plain and value is not None))
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
                parts: list[ast.expr | None] = list(value.elts)
            elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                  and value.func.id == "divmod" and len(value.args) == 2
                  and len(target.elts) == 2):
                a, m = value.args
                parts = [_binop(a, ast.FloorDiv(), m), _binop(a, ast.Mod(), m)]
            elif value is not None:  # a, b = x.shape: a is x.shape[0]
                parts = [ast.Subscript(value=value, slice=ast.Constant(i), ctx=ast.Load())
                         for i in range(len(target.elts))]
            else:
                parts = [None] * len(target.elts)
            for t, v in zip(target.elts, parts):
                self.bind(t, v, plain)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, value, plain=False)

    @classmethod
    def read(cls, loop: ast.For) -> _Body:
        body = cls(var=next(iter(_names(loop.target)), ""))
        for node in (n for stmt in loop.body for n in ast.walk(stmt)):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    body.bind(t, node.value)
            elif isinstance(node, ast.AnnAssign):
                body.bind(node.target, node.value)
            elif isinstance(node, ast.AugAssign):  # x += ...: x changes within the iteration
                body.bind(node.target, node.value, plain=False)
            elif isinstance(node, (ast.For, ast.comprehension)):
                body.bind(node.target, node.iter, plain=False)  # an inner loop's variable
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                body.bind(node.optional_vars, node.context_expr, plain=False)
            elif isinstance(node, ast.NamedExpr):
                body.bind(node.target, node.value)
        return body

    def depends(self, node: ast.AST, seen: frozenset[str] = frozenset()) -> bool:
        """Whether ``node``'s value may change with the prange variable."""
        for name in _names(node):
            if name == self.var:
                return True
            if name in self.defs and name not in seen:
                if any(v is not None and self.depends(v, seen | {name})
                       for v, _ in self.defs[name]):
                    return True
        return False

    def fixed(self, node: ast.AST, seen: frozenset[str] = frozenset()) -> bool:
        """Whether ``node`` has one value per iteration, a function of the prange
        variable and of names the body never assigns."""
        for name in _names(node):
            if name == self.var or name not in self.defs:
                continue
            ds = self.defs[name]
            if name in seen or len(ds) != 1 or not ds[0][1]:
                return False
            value = ds[0][0]
            if value is None or not self.fixed(value, seen | {name}):
                return False
        return True

    def changing(self, node: ast.AST) -> list[str]:
        """The names in ``node`` that change within an iteration (why it is not fixed)."""
        return sorted(n for n in _names(node)
                      if n in self.defs and not self.fixed(ast.Name(id=n, ctx=ast.Load())))

    def single(self, name: str) -> ast.expr | None:
        """The one plain value ``name`` is bound to in the body, if that is all."""
        ds = self.defs.get(name)
        if name != self.var and ds and len(ds) == 1 and ds[0][1]:
            return ds[0][0]
        return None

    def inline(self, node: ast.expr) -> ast.expr:
        """``node`` with every fixed name replaced by its definition (a canonical form in
        the prange variable and loop invariants), for comparing index expressions."""
        body = self

        class Inline(ast.NodeTransformer):
            def visit_Name(self, n: ast.Name) -> ast.expr:
                value = body.single(n.id)
                return n if value is None else body.inline(value)

        return _canon(Inline().visit(copy.deepcopy(node)))


def _factors(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _factors(node.left) + _factors(node.right)
    return [node]


def _product(factors: list[ast.expr]) -> ast.expr:
    factors = sorted(factors, key=ast.dump)
    out = factors[0]
    for f in factors[1:]:
        out = _binop(out, ast.Mult(), f)
    return out


def _canon(node: ast.expr) -> ast.expr:
    """One form for equal index arithmetic: products with their factors sorted, and
    ``(a // b) // c`` as ``a // (b * c)`` (equal for the non-negative indices here)."""
    if not isinstance(node, ast.BinOp):
        return node
    left, right = _canon(node.left), _canon(node.right)
    if isinstance(node.op, ast.Mult):
        return _product(_factors(left) + _factors(right))
    if isinstance(node.op, ast.FloorDiv) and isinstance(left, ast.BinOp) \
            and isinstance(left.op, ast.FloorDiv):
        return _binop(left.left, ast.FloorDiv(), _product(_factors(left.right)
                                                           + _factors(right)))
    return _binop(left, node.op, right)


def _same(a: ast.AST, b: ast.AST) -> bool:
    return ast.dump(a) == ast.dump(b)


def _injective_in(s: ast.expr, e: ast.expr, body: _Body) -> bool:
    """``s`` is ``e`` shifted or scaled by values independent of the prange variable
    (``e``, ``e + c``, ``c - e``, ``c * e``, ``-e``), so equal ``s`` means equal ``e``."""
    if _same(s, e):
        return True
    if isinstance(s, ast.UnaryOp) and isinstance(s.op, ast.USub):
        return _injective_in(s.operand, e, body)
    if isinstance(s, ast.BinOp) and isinstance(s.op, (ast.Add, ast.Sub, ast.Mult)):
        for this, other in ((s.left, s.right), (s.right, s.left)):
            if not body.depends(other) and _injective_in(this, e, body):
                return True
        if isinstance(s.op, ast.Mult):  # c * e with the factors of c sorted around e
            fs = _factors(s)
            rest = [f for f in fs if not _same(f, e)]
            if len(rest) == len(fs) - 1 and not any(body.depends(f) for f in rest):
                return True
    return False


def _determines(parts: list[ast.expr], e: ast.expr, body: _Body, depth: int = 0) -> bool:
    """Whether knowing every expression in ``parts`` fixes the value of ``e``."""
    if depth > _MAX_DEPTH:
        return False
    if any(_injective_in(s, e, body) for s in parts):
        return True
    for s in parts:  # e is known from e // M and e % M
        if isinstance(s, ast.BinOp) and isinstance(s.op, (ast.FloorDiv, ast.Mod)) \
                and _same(s.left, e):
            other = ast.Mod() if isinstance(s.op, ast.FloorDiv) else ast.FloorDiv()
            if _determines(parts, _canon(_binop(e, other, s.right)), body, depth + 1):
                return True
    return False


def _index_parts(sub: ast.Subscript) -> list[ast.expr]:
    idx = sub.slice
    return list(idx.elts) if isinstance(idx, ast.Tuple) else [idx]


@dataclass
class _Target:
    """Where a store lands: the array it writes (``root``), the index parts that a view
    fixed before the store (``prefix``), whether the array is the iteration's own, and
    how the view was made (for the message)."""

    root: str
    prefix: list[ast.expr]
    private: bool = False
    via: list[str] = field(default_factory=list)


def _resolve(node: ast.expr, body: _Body, seen: frozenset[str] = frozenset()) -> _Target:
    """The array ``node`` (a name, a subscript of one, a view method of one) stands for."""
    if isinstance(node, ast.Subscript):
        inner = _resolve(node.value, body, seen)
        return _Target(inner.root, inner.prefix + _index_parts(node), inner.private, inner.via)
    if isinstance(node, ast.Attribute) and node.attr == "T":
        return _resolve(node.value, body, seen)
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in _ALLOCATORS:
            return _Target(ast.unparse(node), [], private=True)  # np.zeros(...), a.copy()
        if isinstance(f, ast.Name) and f.id in _ALLOCATORS:
            return _Target(ast.unparse(node), [], private=True)
        if isinstance(f, ast.Attribute) and f.attr in _VIEW_METHODS:
            return _resolve(f.value, body, seen)
        return _Target(ast.unparse(node), [])
    if isinstance(node, ast.Name):
        ds = body.defs.get(node.id)
        if node.id in seen or not ds or node.id == body.var:
            return _Target(node.id, [])
        value = body.single(node.id)
        if value is not None:
            t = _resolve(value, body, seen | {node.id})
            t.via = [f"{node.id} = {ast.unparse(value)}"] + t.via
            return t
        if all(v is not None and plain and _resolve(v, body, seen | {node.id}).private
               for v, plain in ds):
            return _Target(node.id, [], private=True)
        return _Target(node.id, [])  # rebound several ways: judged by its own index only
    return _Target(ast.unparse(node), [])


def _stores(loop: ast.For) -> Iterable[tuple[ast.stmt, ast.Subscript]]:
    for stmt in loop.body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Assign):
                targets: list[ast.expr] = list(node.targets)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            else:
                continue
            for t in targets:
                for sub in _outermost(t):
                    yield node, sub


def _outermost(target: ast.expr) -> list[ast.Subscript]:
    """The subscripts a target assigns into (``a[i][j] = ...`` assigns into ``a[i][j]``,
    not ``a[i]``)."""
    if isinstance(target, ast.Subscript):
        return [target]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [s for t in target.elts for s in _outermost(t)]
    return []


def _problem(stmt: ast.stmt, sub: ast.Subscript, body: _Body) -> str | None:
    target = _resolve(sub, body)
    if target.private:
        return None
    parts = [p for p in target.prefix if not isinstance(p, ast.Slice)]
    fixed = [body.inline(p) for p in parts if body.fixed(p)]
    var = ast.Name(id=body.var, ctx=ast.Load())
    if _determines(fixed, var, body):
        return None
    line = ast.unparse(stmt).splitlines()[0]
    where = f"`{line}` inside `for {body.var} in prange(...)`"
    view = f" (through {'; '.join(f'`{v}`' for v in target.via)})" if target.via else ""
    moving = [p for p in parts if body.depends(p) and not body.fixed(p)]
    if not any(body.depends(p) for p in parts):
        return (f"{where} writes {target.root}[...]{view} at an index that does not depend "
                f"on {body.var}, so every iteration writes the same elements: several "
                "threads write one element at once (a race)")
    if moving:
        names = ", ".join(f"`{n}`" for n in body.changing(moving[0]) if n != body.var)
        return (f"{where} writes {target.root}[...]{view} at `{ast.unparse(moving[0])}`, "
                f"which depends on {body.var} but also on {names or 'a name'} that changes "
                f"within an iteration: neighbouring iterations of {body.var} write the same "
                "elements (a race). An iteration may write only elements whose index is "
                f"fixed by {body.var} alone (such as out[..., {body.var}, ...], or a view "
                f"out[{body.var}] taken inside the loop)")
    return (f"{where} writes {target.root}[...]{view} at an index whose parts fixed by "
            f"{body.var} do not determine {body.var}: two iterations can write the same "
            "element (a race). Index with every value you derived from "
            f"{body.var} (for n, k = nk // K, nk % K: both n and k)")


def find_races(source: str) -> list[str]:
    """Stores inside a ``prange`` body that two iterations may make to one element
    (module docstring), each as a sentence."""
    problems = []
    for loop in ast.walk(ast.parse(source)):
        if not (isinstance(loop, ast.For) and is_prange(loop)):
            continue
        body = _Body.read(loop)
        for stmt, sub in _stores(loop):
            why = _problem(stmt, sub, body)
            if why is not None:
                problems.append(why)
    return problems

"""No import loops between convlab's modules, lazy imports (inside functions) included.

A loop means no module of it can be read, tested or replaced without the others, and a
lazy import only hides one (docs/design.md, "Layers").  The graph is read from the
source with ``ast``: every ``import`` and ``from ... import`` anywhere in a module (module
level, function bodies, class bodies), resolved to the convlab module it loads.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "convlab"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The convlab modules that ``name`` (at ``path``) imports, anywhere in its body."""
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if origin not in modules:
                continue
            for alias in node.names:  # `from pkg import submodule` loads the submodule
                sub = f"{origin}.{alias.name}"
                targets.add(sub if sub in modules else origin)
    targets.discard(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    """The reader sees the imports it must (else an empty graph would pass)."""
    graph = import_graph()
    assert "convlab.plan" in graph["convlab.functional"]
    assert "convlab.tuning" in graph["convlab.plan"]
    assert "convlab.kernels.registry" in graph["convlab.kernels"]
    # a lazy import inside a function counts: tune() loads the harness when it runs
    assert "convlab.bench.measure" in graph["convlab.tuning"]


def test_the_cycle_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    loops = cycles(import_graph())
    assert not loops, "import loops (module -> module, lazy imports included):\n" + "\n".join(
        " <-> ".join(loop) for loop in loops)

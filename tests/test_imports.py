"""No import loops between convlab's modules, and no import from a lower layer, lazy
imports (inside functions) included.

A loop means no module of it can be read, tested or replaced without the others, and a
lazy import only hides one (docs/design.md, "Layers").  The layers are read from that
table itself (the paths in backticks of each row), so the table and the code cannot
drift apart: each module is in exactly one row and imports only from its own row and
the rows above.  The graph is read from the
source with ``ast``: every ``import`` and ``from ... import`` anywhere in a module (module
level, function bodies, class bodies), resolved to the convlab module it loads.
"""

from __future__ import annotations

import ast
import fnmatch
import re
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


# ------------------------------------------------------------------------------ layers
DESIGN = PACKAGE.parent / "docs" / "design.md"


def layer_table(text: str) -> list[tuple[str, list[str]]]:
    """The rows of design.md's "Layers" table, top first: (layer, the paths in backticks
    in its modules column: ``shapes.py``, ``kernels/<name>.py``, ``grading/``)."""
    lines = text[text.index("### Layers"):].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        cells = line.split("|")
        rows.append((cells[1].strip(), re.findall(r"`([^`]+)`", cells[2])))
    return rows


def _covers(pattern: str, path: str) -> bool:
    """``grading/`` covers the folder; ``kernels/<name>.py`` any file in it; else exact."""
    if pattern.endswith("/"):
        return path.startswith(pattern)
    return fnmatch.fnmatchcase(path, re.sub(r"<[^>]+>", "*", pattern))


def layer_of(rows: list[tuple[str, list[str]]]) -> tuple[dict[str, int], list[str]]:
    """Each convlab module's row number in ``rows``, and what is wrong with the table: a
    module in no row or in two."""
    where: dict[str, int] = {}
    wrong = []
    for name, path in sorted(_modules().items()):
        rel = path.relative_to(PACKAGE).as_posix()
        found = [i for i, (_, patterns) in enumerate(rows)
                 if any(_covers(p, rel) for p in patterns)]
        if len(found) != 1:
            wrong.append(f"{rel} is in {len(found)} rows of the table"
                         + (f" ({', '.join(rows[i][0] for i in found)})" if found else ""))
        else:
            where[name] = found[0]
    return where, wrong


def upward_imports(graph: dict[str, set[str]], where: dict[str, int],
                   names: list[str]) -> list[str]:
    """Every import of a module from a lower layer than the importer's (a higher row
    number): 'module (layer) -> module (layer)'."""
    return [f"{m} ({names[where[m]]}) -> {t} ({names[where[t]]})"
            for m in sorted(graph) for t in sorted(graph[m])
            if m in where and t in where and where[t] > where[m]]


def test_the_layer_table_is_read():
    """The table is found, whole: its ten layers in order, each with modules."""
    rows = layer_table(DESIGN.read_text())
    assert [name for name, _ in rows] == [
        "foundations", "kernels", "oracles and checks", "gate and time one spec", "tuning",
        "the decision", "the API", "benchmark runs", "teaching and classroom", "the command"]
    assert all(patterns for _, patterns in rows)
    where, _ = layer_of(rows)
    assert where["convlab.shapes"] == 0 and where["convlab.kernels.winograd"] == 1
    assert where["convlab.grading.wire"] == where["convlab.exercises.core"] == 8


def test_an_upward_import_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert upward_imports(graph, {"a": 0, "b": 1, "c": 1}, ["top", "low"]) == [
        "a (top) -> b (low)"]
    assert upward_imports(graph, {"a": 1, "b": 1, "c": 0}, ["top", "low"]) == []


def test_every_module_imports_only_from_its_layer_and_those_above():
    """docs/design.md, "Layers": each module is in exactly one row, and imports (lazy
    ones included) only modules of its own row or the rows above it."""
    rows = layer_table(DESIGN.read_text())
    where, wrong = layer_of(rows)
    assert not wrong, "docs/design.md's Layers table:\n" + "\n".join(wrong)
    bad = upward_imports(import_graph(), where, [name for name, _ in rows])
    assert not bad, "imports from a lower layer:\n" + "\n".join(bad)


def test_importing_the_gate_and_time_modules_loads_no_lower_layer():
    """What the graph above cannot see: a package's ``__init__`` runs first.  The tuner's
    lazy import of ``bench.measure`` must not load the benchmark-runs layer (``roster``
    imports ``plan``, which imports ``tuning``: a loop at run time); checked in a fresh
    process, where nothing else has loaded them."""
    import subprocess
    import sys

    code = ("import sys, convlab.bench.measure, convlab.bench.timing, convlab.tuning\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('convlab.bench'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent).stdout.split()
    assert "convlab.bench.measure" in out, out
    lower = {"convlab.bench.roster", "convlab.bench.run", "convlab.bench.suites",
             "convlab.bench.network", "convlab.bench.models", "convlab.bench.table"}
    assert not lower & set(out), sorted(lower & set(out))


def test_the_lazy_bench_package_still_has_its_names_and_submodules():
    code = ("from convlab import bench\n"
            "assert bench.gpu.__name__ == 'convlab.bench.gpu'\n"
            "assert callable(bench.run_benchmark) and bench.RESNET\n"
            "assert set(bench.__all__) <= set(dir(bench))\n"
            "try:\n    bench.no_such_name\nexcept AttributeError:\n    pass\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)

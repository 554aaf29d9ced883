"""The project's import graph, read from the source with ``ast`` (nothing is imported): no circles, the
layers point one way (``cast_model`` <- ``pipelines`` <- ``workflows``), and the doors of ``workflows/``
(its top-level files, the entry points) are never imported by library code.

Every import counts, at any depth of a module: an import inside a function that closes a circle is
still a circle, only deferred."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cast_model", "pipelines", "workflows")


def module_files() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    files = module_files()
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def entry_points() -> set[str]:
    return {f"workflows.{p.stem}" for p in (REPO / "workflows").glob("*.py") if p.name != "__init__.py"}


def test_the_graph_is_read_from_the_source():
    """The reader sees the imports it must judge (a reader that sees nothing would pass everything)."""
    graph = import_graph()
    assert "cast_model.model" in graph["cast_model"]  # relative, from a package's __init__
    assert "workflows.inference.model" in graph["workflows.inference.pyfunc"]  # `from .model import`
    assert "workflows.tracking.store" in graph["workflows.tracking.registry"]  # `from . import store`
    assert "workflows.evaluation.metrics" in graph["workflows.training.loop"]  # `from ..evaluation import`
    assert "workflows.training.launch" in graph["workflows.train_ssv2"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_layers_point_one_way():
    graph = import_graph()
    wrong = sorted((m, t) for m, targets in graph.items() for t in targets
                   if (m.startswith("cast_model") and not t.startswith("cast_model"))
                   or (m.startswith("pipelines") and t.startswith("workflows")))
    assert wrong == []


def test_entry_points_are_doors_that_library_code_never_imports():
    """``workflows/`` top level holds only entry points (each has a ``main``), and no library module
    imports one: they are the doors, the library is behind them."""
    doors = entry_points()
    assert {"workflows.predict", "workflows.batch_infer", "workflows.train_ssv2", "workflows.synthetic"} <= doors
    for door in doors:
        tree = ast.parse((REPO / "workflows" / f"{door.split('.')[1]}.py").read_text())
        assert "main" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{door} has no main()"
    graph = import_graph()
    wrong = sorted((m, t) for m, targets in graph.items() if m not in doors for t in targets & doors)
    assert wrong == []

"""The import graph of ``src/reca``: no cycles, and the layers lean one way.

Every ``import`` and ``from ... import`` is read with ``ast``, those inside
functions included (a lazy import is still an edge: it only hides the cycle
until the function runs), relative imports resolved. A strongly connected
component of more than one module is a cycle and fails the test with its
members listed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "reca"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imported(module: str, is_package: bool, tree: ast.AST, known: set[str]) -> set[str]:
    """The ``known`` modules that ``tree`` imports (``from pkg import mod`` names the submodule)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            # `import a.b.c` imports a, a.b and a.b.c; keep the deepest module we know.
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):
                if ".".join(parts[:cut]) in known:
                    found.add(".".join(parts[:cut]))
                    break
    found.discard(module)
    return found


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, anywhere in its body."""
    files = {_module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}
    known = set(files)
    return {
        name: _imported(name, path.name == "__init__.py", ast.parse(path.read_text(encoding="utf-8")), known)
        for name, path in files.items()
    }


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(root: str) -> None:
        # Iterative, so a deep graph cannot hit the recursion limit.
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _violations(graph: Mapping[str, set[str]], importer: str, forbidden: Iterable[str]) -> list[str]:
    return sorted(
        f"{mod} -> {dep}"
        for mod, deps in graph.items() if _under(mod, importer)
        for dep in deps if any(_under(dep, f) for f in forbidden)
    )


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_cycle_finder_finds_a_cycle_in_a_synthetic_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_resolves_relative_and_lazy_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..top import g\n")
    (pkg / "top.py").write_text("import pkg.sub.leaf\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.top"}
    assert cycles(graph) == [["pkg.sub.leaf", "pkg.top"]]


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles in src/reca:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_two_layers_lean_on_each_other(graph):
    # reca.data <-> reca.evaluation, say: each module may be acyclic while the packages still lean both ways.
    layers: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        layer = ".".join(mod.split(".")[:2])
        layers.setdefault(layer, set()).update(".".join(d.split(".")[:2]) for d in deps)
    found = cycles({layer: deps - {layer} for layer, deps in layers.items()})
    assert not found, "packages of src/reca that import each other:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_schema_imports_no_model_data_or_evaluation_code(graph):
    forbidden = ["reca.models", "reca.data", "reca.evaluation", "reca.shapeworld"]
    bad = _violations(graph, "reca.params", forbidden) + _violations(graph, "reca.schema", forbidden)
    assert not bad, bad


def test_no_stage_imports_another_stage(graph):
    bad = sorted(
        f"{mod} -> {dep}"
        for mod, deps in graph.items() if mod.startswith("reca.stages.")
        for dep in deps if dep.startswith("reca.stages.")
    )
    assert not bad, bad


def test_training_imports_no_stage(graph):
    bad = _violations(graph, "reca.training", ["reca.stages"])
    assert not bad, bad


def test_evaluation_imports_nothing_of_the_embedded_world(graph):
    bad = _violations(graph, "reca.evaluation", ["reca.shapeworld"])
    assert not bad, bad

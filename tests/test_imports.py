"""The package's dependencies point one way: engine at the bottom, the CLI at the top, no cycles.

The graph is read from the source (every ``import`` statement, including those inside functions,
so a local import cannot hide a cycle); importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``, so those count as edges too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "revrnn_cli"
PKG = "revrnn_cli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if not t.startswith(PKG):
                    continue
                parts = t.split(".")
                for i in range(1, len(parts) + 1):  # the module and every package above it
                    name = ".".join(parts[:i])
                    if name in modules and name != mod and not mod.startswith(name + "."):
                        graph[mod].add(name)
    return graph


GRAPH = import_graph()


def test_the_graph_was_read():
    assert "revrnn_cli.engine.segment" in GRAPH["revrnn_cli.engine.layers"]
    assert "revrnn_cli.spec" in GRAPH["revrnn_cli.runner"]


@pytest.mark.parametrize("mod", sorted(m for m in GRAPH if m.startswith(f"{PKG}.engine")))
def test_engine_imports_only_the_engine(mod):
    outside = {d for d in GRAPH[mod] if not d.startswith(f"{PKG}.engine")}
    assert not outside, f"{mod} imports {sorted(outside)}"


def test_spec_imports_no_task_or_training_module():
    bad = {d for d in GRAPH[f"{PKG}.spec"] if d.startswith((f"{PKG}.tasks", f"{PKG}.training", f"{PKG}.runner"))}
    assert not bad, f"spec imports {sorted(bad)}"


def test_models_and_data_do_not_import_the_runner_side():
    for mod, deps in GRAPH.items():
        if mod.startswith((f"{PKG}.models", f"{PKG}.data")):
            bad = {d for d in deps if d.startswith((f"{PKG}.tasks", f"{PKG}.training", f"{PKG}.memory",
                                                    f"{PKG}.cli", f"{PKG}.runner"))}
            assert not bad, f"{mod} imports {sorted(bad)}"


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)

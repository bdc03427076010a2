"""The import graph of netdiff_lib, from the source (module-level imports, ``ast``): no circles, kfp only in
its two modules, stages never import the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "netdiff_lib"
KFP_MODULES = {"netdiff_lib.kfp_local", "netdiff_lib.kfp_pipelines"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run at import: the module body and its if/try blocks, except ``if TYPE_CHECKING:``."""
    out, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        else:
            out.append(node)
    return out


def _targets(node: ast.stmt, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    return []


def import_graph() -> dict[str, set[str]]:
    """module -> the modules (and packages) it imports when it is imported, plus every package it sits in."""
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        found = {t for node in _top_level(tree) for t in _targets(node, mod, path.name == "__init__.py")}
        graph[mod] = {t for t in found if t in files} | {t for t in found if not t.startswith("netdiff_lib")}
    return graph


def _all_imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Every import, inside functions too (not those under ``if TYPE_CHECKING:``, which never run)."""
    out: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.stmt):
            out.update(_targets(node, module, is_package))
        todo.extend(ast.iter_child_nodes(node))
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle among netdiff_lib modules, or None (a package importing its own submodules is fine:
    Python imports the package first)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if not n.startswith("netdiff_lib") or n == m or n.startswith(m + "."):
                continue
            if state.get(n) == 1:
                return [*stack[stack.index(n):], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "netdiff_lib.models.base" in graph["netdiff_lib.models.native.model"]
    assert "torch" in graph["netdiff_lib.models.native.train"]


def test_a_planted_circle_is_found() -> None:
    assert _cycle({"netdiff_lib.a": {"netdiff_lib.b"}, "netdiff_lib.b": {"netdiff_lib.a"}}) is not None


def test_no_import_circles() -> None:
    assert _cycle(import_graph()) is None


def test_no_import_circles_hidden_in_functions() -> None:
    """Deferred imports (torch, kfp, ... on purpose) must not hide a circle among netdiff_lib's own modules."""
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {m: {t for t in _all_imports(ast.parse(p.read_text()), m, p.name == "__init__.py") if t in files}
             for m, p in files.items()}
    assert _cycle(graph) is None


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_kfp_only_in_its_two_modules_and_stages_never_import_the_cli(path: Path) -> None:
    mod = _module(path)
    imports = _all_imports(ast.parse(path.read_text()), mod, path.name == "__init__.py")  # function level too
    if mod not in KFP_MODULES:
        assert not {i for i in imports if i.split(".")[0] in ("kfp", "pipelines", "components")}, mod
    if mod.startswith("netdiff_lib.stages"):
        assert not {i for i in imports if i.startswith("netdiff_lib.cli")}, mod

"""Issue 8, section 5: the tracer asks modules about leaves, imports have no cycles, py.typed.

Import edges are read from the source (AST): ``import``/``from ... import`` statements outside
``if TYPE_CHECKING:`` blocks, at module level ("top-level") or inside functions ("lazy").
``from package import submodule`` is an edge to the submodule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import plait
from plait import LLMInference, Module
from plait.graph import Ref
from plait.tracing import Tracer, trace

PLAIT = Path(plait.__file__).resolve().parent
# The object model and its tracer/interpreter: no import cycle may pass through these, not
# even through imports inside functions (the old module -> execution -> interpreter -> module).
CORE = ("plait.module", "plait.parameter", "plait.llm", "plait.graph", "plait.tracing",
        "plait.execution.interpreter", "plait.errors", "plait.events")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in PLAIT.rglob("*.py"):
        parts = list(path.relative_to(PLAIT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict[str, Path], lazy: bool) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt], top: bool) -> None:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse, top)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:
                        found.add(sub)
                    elif base in modules:
                        found.add(base)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if lazy:
                    visit(node.body, False)
            else:
                for field in ("body", "orelse", "finalbody"):
                    inner: Any = getattr(node, field, None)
                    if isinstance(inner, list):
                        visit(inner, top)  # pyright: ignore[reportUnknownArgumentType]
                for handler in getattr(node, "handlers", []):
                    visit(handler.body, top)

    visit(ast.parse(path.read_text()).body, True)
    found.discard(name)
    return found


def _cycles(lazy: bool) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    modules = _modules()
    graph = {m: _imports(m, p, modules, lazy) for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycle_at_import_time() -> None:
    assert _cycles(lazy=False) == []


def test_no_import_cycle_through_the_core_even_inside_functions() -> None:
    touching = [c for c in _cycles(lazy=True)
                if any(m == core or m.startswith(core + ".") for m in c for core in CORE)]
    assert touching == []


@pytest.mark.parametrize("name", ["plait.module", "plait.execution.interpreter", "plait.tracing"])
def test_each_core_module_imports_first_in_a_fresh_interpreter(name: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_the_tracer_does_not_import_leaf_classes() -> None:
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("plait.tracing"):
            assert "plait.llm" not in _imports(name, path, modules, lazy=True), name


def test_the_package_ships_py_typed() -> None:
    assert (PLAIT / "py.typed").is_file()
    pyproject = (PLAIT.parent / "pyproject.toml").read_text()
    assert '"py.typed"' in pyproject


# --- leaves are the module's business ---------------------------------------------------
class Shout(Module):
    """A leaf that records itself as a ``call`` of str.upper instead of a module node."""

    leaf = True

    def trace_leaf(self, tracer: Any, path: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        return tracer.record_call("operator:methodcaller", str.upper, args, kwargs)

    def forward(self, text: str) -> str:
        return text.upper()


class UsesLeaves(Module):
    def __init__(self) -> None:
        super().__init__()
        self.shout = Shout()
        self.llm = LLMInference(alias="a")
        self.inner = Inner()

    def forward(self, text: Any) -> Any:
        return self.inner(self.llm(self.shout(text)))


class Inner(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="b")

    def forward(self, text: Any) -> Any:
        return self.llm(text)


def test_the_tracer_asks_each_module_how_to_record_it() -> None:
    g = trace(UsesLeaves())
    kinds = {nid: n.kind for nid, n in g.nodes.items()}
    assert kinds == {"input:text": "input", "upper": "call", "llm": "llm",
                     "inner.llm": "llm"}
    assert g.nodes["inner.llm"].args == (Ref("llm"),)


def test_a_tracer_subclass_may_choose_the_leaves() -> None:
    class InlineNothing(Tracer):
        def is_leaf_module(self, module: Module) -> bool:
            return module.leaf or isinstance(module, Inner)

    g = InlineNothing(UsesLeaves()).trace(1, ())
    assert g.nodes["inner"].kind == "module" and g.nodes["inner"].args == (Ref("llm"),)

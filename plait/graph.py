"""The traced graph: plain, picklable data.

Nodes name modules by dotted path and endpoints by alias; they never hold clients, locks or
event loops, so a graph can be pickled, hashed, cached and shipped to Ray workers.

Node kinds (a closed set):

- ``input``: a forward() argument (target: position or keyword name).
- ``param``: the current value of a Parameter (target: its dotted name).
- ``llm``: an LLMInference call (target: the module's dotted path).
- ``module``: a leaf Module's forward() run on real values (target: dotted path).
- ``format``: string building from f-strings, ``str.format``, ``+`` (target: segments).
- ``getitem`` / ``getattr``: indexing / attribute access on a value (target: key or name).
- ``method``: a method call on a value, e.g. ``text.strip()`` (target: method name).
- ``call``: a ``plait.functional`` op or ``@plait.functional.op`` function (target: import path).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FormatField", "GraphNode", "InferenceGraph", "NodeKind", "Ref", "iter_refs"]

NodeKind = Literal["input", "param", "llm", "module", "format", "getitem", "getattr", "method",
                   "call"]


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to another node's value inside a node's arguments or the graph output."""

    node: str


@dataclass(frozen=True, slots=True)
class FormatField:
    """One replacement field of a format node: ``format(conv(args[index]), spec)``."""

    index: int
    conversion: str  # "", "r" or "s"
    spec: str


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One node of an ``InferenceGraph``.

    Attributes:
        id: Unique, readable id (``summarizer``, ``extractor_1``, ``format_2``).
        kind: What the node does (see the module docstring).
        target: Kind-specific: module path, key, method name, segments or import path.
        args: Positional arguments, nested structures whose leaves are ``Ref`` or literals.
        kwargs: Keyword arguments, same form as ``args``.
        deps: Ids of the nodes referenced by args/kwargs, in first-use order.
        module_path: Dotted path of the module whose forward() created the node.
        module_type: Class name of the module the node runs (or of its creator).
        alias: Endpoint alias for ``llm`` nodes.
        source: ``file.py:line`` of the user code that created the node.
    """

    id: str
    kind: NodeKind
    target: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict[str, Any])
    deps: tuple[str, ...] = ()
    module_path: str = ""
    module_type: str = ""
    alias: str | None = None
    source: str = "<unknown>"


def iter_refs(value: Any) -> Iterator[Ref]:
    """Yield every ``Ref`` inside a nested structure of lists, tuples and dicts."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:  # pyright: ignore[reportUnknownVariableType]
            yield from iter_refs(item)
    elif isinstance(value, dict):
        for item in value.values():  # pyright: ignore[reportUnknownVariableType]
            yield from iter_refs(item)


@dataclass(slots=True)
class InferenceGraph:
    """A traced forward(): nodes in a valid execution order, inputs and the output structure.

    Attributes:
        nodes: Node id -> node, in the order they were traced (a topological order).
        input_ids: Ids of the ``input`` nodes.
        output: The forward() result: a nested structure whose leaves are ``Ref`` or literals.
    """

    nodes: dict[str, GraphNode]
    input_ids: list[str]
    output: Any

    def topological_order(self) -> list[str]:
        """Node ids such that every node comes after all of its dependencies."""
        indegree = {nid: len(set(n.deps)) for nid, n in self.nodes.items()}
        dependents = self.dependents()
        ready = deque(nid for nid, d in indegree.items() if d == 0)
        order: list[str] = []
        while ready:
            nid = ready.popleft()
            order.append(nid)
            for child in dependents[nid]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self.nodes):
            raise ValueError("InferenceGraph has a cycle; this is a plait bug, please report it.")
        return order

    def dependents(self) -> dict[str, list[str]]:
        """Node id -> ids of the nodes that use its value directly."""
        out: dict[str, list[str]] = {nid: [] for nid in self.nodes}
        for node in self.nodes.values():
            for dep in dict.fromkeys(node.deps):
                out[dep].append(node.id)
        return out

    def ancestors(self, node_id: str) -> set[str]:
        """Every node the given node depends on, directly or not."""
        seen: set[str] = set()
        stack = list(self.nodes[node_id].deps)
        while stack:
            nid = stack.pop()
            if nid not in seen:
                seen.add(nid)
                stack.extend(self.nodes[nid].deps)
        return seen

    def descendants(self, node_id: str) -> set[str]:
        """Every node that depends on the given node, directly or not."""
        dependents = self.dependents()
        seen: set[str] = set()
        stack = list(dependents[node_id])
        while stack:
            nid = stack.pop()
            if nid not in seen:
                seen.add(nid)
                stack.extend(dependents[nid])
        return seen

    def llm_nodes(self) -> list[GraphNode]:
        """The LLM call nodes, in execution order."""
        return [n for n in self.nodes.values() if n.kind == "llm"]

    def aliases(self) -> set[str]:
        """The endpoint aliases the graph calls."""
        return {n.alias for n in self.nodes.values() if n.alias is not None}

    def output_refs(self) -> list[str]:
        """Ids of the nodes the output refers to."""
        return [r.node for r in iter_refs(self.output)]

    def structural_hash(self) -> str:
        """A stable hash of the graph's structure (not of parameter values or sources).

        Equal for the same forward() traced in another process or on another day; changes
        when a node, an edge, a module type, an alias or a literal argument changes.
        """
        h = hashlib.sha256()
        for node in self.nodes.values():
            h.update(
                repr(
                    (node.id, node.kind, node.target, node.args, sorted(node.kwargs.items()),
                     node.module_type, node.alias)
                ).encode()
            )
        h.update(repr((self.input_ids, self.output)).encode())
        return h.hexdigest()[:16]

    def to_dot(self) -> str:
        """Graphviz DOT text; LLM nodes are boxes labelled with their alias."""
        lines = ["digraph plait {", "  rankdir=TB;"]
        for node in self.nodes.values():
            label = f"{node.id}\\n({node.alias})" if node.alias else node.id
            shape = {"llm": "box", "input": "ellipse", "param": "note"}.get(node.kind, "plain")
            lines.append(f'  "{node.id}" [label="{label}", shape={shape}];')
        for node in self.nodes.values():
            for dep in dict.fromkeys(node.deps):
                lines.append(f'  "{dep}" -> "{node.id}";')
        for ref in dict.fromkeys(self.output_refs()):
            lines.append(f'  "{ref}" -> "output";')
        lines.append('  "output" [shape=doublecircle];')
        lines.append("}")
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        """Mermaid flowchart text (renders on GitHub and in notebooks)."""
        ids = {nid: f"n{i}" for i, nid in enumerate(self.nodes)}
        lines = ["flowchart TD"]
        for nid, node in self.nodes.items():
            label = f"{nid}<br/>{node.alias}" if node.alias else nid
            lines.append(f'  {ids[nid]}["{label}"]')
        for node in self.nodes.values():
            for dep in dict.fromkeys(node.deps):
                lines.append(f"  {ids[dep]} --> {ids[node.id]}")
        lines.append("  out((output))")
        for ref in dict.fromkeys(self.output_refs()):
            lines.append(f"  {ids[ref]} --> out")
        return "\n".join(lines)

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for n in self.nodes.values():
            kinds[n.kind] = kinds.get(n.kind, 0) + 1
        return f"InferenceGraph({len(self.nodes)} nodes: {kinds}, aliases={sorted(self.aliases())})"

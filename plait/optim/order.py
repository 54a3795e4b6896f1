"""Where each learnable Parameter sits in the graphs that backward() walked.

The optimizer updates upstream Parameters before downstream ones and shows a downstream
updater what changed upstream. ``Optimizer(pipeline.parameters())`` only receives the
Parameters, so the graph facts are noted here by ``loss.backward()``: a weak table keyed by
Parameter (entries vanish with their Parameter; nothing here keeps a pipeline alive).

A Parameter is *used* by the LLM node whose system prompt it is, or by the consumers of its
``param`` node. P is upstream of Q when a node using P is an ancestor of a node using Q.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from plait.graph import InferenceGraph
from plait.module import Module
from plait.parameter import Parameter

__all__ = ["ParamPosition", "note_graph", "position_of"]


@dataclass(eq=False)
class ParamPosition:
    """A Parameter's place in the last graph it was seen in.

    Attributes:
        name: Dotted name in the root module (``analyzer.system_prompt``).
        rank: Index of its first use in topological order (smaller is upstream).
        upstream: Parameters used by ancestors of its uses.
    """

    name: str
    rank: int
    upstream: weakref.WeakSet[Parameter] = field(default_factory=weakref.WeakSet[Parameter])


_POSITIONS: weakref.WeakKeyDictionary[Parameter, ParamPosition] = weakref.WeakKeyDictionary()


def position_of(param: Parameter) -> ParamPosition | None:
    """The noted position of ``param``, or None if no backward() has seen it."""
    return _POSITIONS.get(param)


def note_graph(root: Module, graph: InferenceGraph) -> None:
    """Note the position of every learnable Parameter used in ``graph``."""
    names = {id(p): name for name, p in root.named_parameters()}
    index = {nid: i for i, nid in enumerate(graph.topological_order())}
    dependents = graph.dependents()
    uses: dict[Parameter, list[str]] = {}
    for node in graph.nodes.values():
        if node.kind == "llm":
            prompt = getattr(root.get_submodule(node.target), "system_prompt", None)
            if isinstance(prompt, Parameter) and prompt.requires_grad:
                uses.setdefault(prompt, []).append(node.id)
        elif node.kind == "param":
            param = root.get_parameter(node.target)
            if param.requires_grad:
                uses.setdefault(param, []).extend(dependents[node.id] or [node.id])
    ancestors = {nid: graph.ancestors(nid) for used in uses.values() for nid in used}
    for param, used in uses.items():
        position = ParamPosition(names.get(id(param), "parameter"), min(index[n] for n in used))
        for other, other_used in uses.items():
            if other is not param and any(o in ancestors[n] for n in used for o in other_used):
                position.upstream.add(other)
        _POSITIONS[param] = position

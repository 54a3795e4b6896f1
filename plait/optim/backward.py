"""Backward propagation: feedback on an output flows back through the recorded forward graph.

Nodes are visited in reverse topological order, consumers before producers. Nodes that do
not depend on each other are visited concurrently (so LLM backward calls overlap):

- ``llm`` and leaf ``module`` nodes call ``module.backward(feedback, ctx)``; its return value
  says what feedback each input receives (``Module.backward`` passes it through;
  ``LLMInference.backward`` also gives feedback to a learnable system prompt).
- ``format``, ``getitem``, ``getattr``, ``method`` and ``call`` nodes pass feedback through
  to every input.
- ``param`` nodes deliver the feedback to their Parameter.
- ``input`` nodes end the walk.

A value used by several consumers (fan-out) receives one combined feedback. Feedback for
Parameters is collected per row and accumulated by the caller in row order, so a batch gives
deterministic ``Parameter.feedback`` lists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from plait.graph import GraphNode, InferenceGraph, Ref, iter_refs
from plait.module import Module
from plait.optim._calls import StructuredCall
from plait.optim._errors import BackwardError
from plait.optim.record import ForwardRecord
from plait.parameter import Parameter

__all__ = [
    "BackwardContext",
    "BackwardLLM",
    "BackwardPlan",
    "InputFeedback",
    "combine_feedback",
    "propagate",
]

InputFeedback = str | Mapping[int | str, str] | None
"""What ``Module.backward`` returns: one feedback for every input (``str``), feedback per
positional index / keyword name (mapping), or None to stop here."""

T = TypeVar("T", bound=BaseModel)


class BackwardLLM:
    """The LLM that backward steps may use (None in ``BackwardContext.llm`` means templates).

    Args:
        alias: Endpoint alias for backward calls.
        resources: Resources to send them with (None: the active ``ExecutionSettings``).
    """

    def __init__(self, alias: str, resources: Any) -> None:
        self.alias = alias
        self.resources = resources
        self.calls = 0
        self._callers: dict[tuple[str, type[BaseModel]], StructuredCall[Any]] = {}

    async def ask(self, system_prompt: str, prompt: str, schema: type[T]) -> T:
        """One structured call; the reply parsed into ``schema``."""
        key = (system_prompt, schema)
        caller = self._callers.get(key)
        if caller is None:
            caller = StructuredCall(self.alias, system_prompt, schema, self.resources,
                                    role="backward")
            self._callers[key] = caller
        self.calls += 1
        reply: T = await caller(prompt)
        return reply


@dataclass
class BackwardContext:
    """What a module's ``backward`` sees about its own forward call.

    Attributes:
        node: The graph node of the call.
        module_path: Dotted path of the module in the root pipeline.
        args: The positional input values of the call.
        kwargs: The keyword input values of the call.
        output: The value the call produced.
        llm: The backward LLM, or None when backward runs on templates only.
        inputs_learnable: Whether anything upstream of the call has a learnable Parameter
            (when False, feedback for the inputs would reach nothing and may be skipped).
    """

    node: GraphNode
    module_path: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any
    llm: BackwardLLM | None
    inputs_learnable: bool = True
    deliveries: list[tuple[Parameter, str]] = field(default_factory=list[tuple[Parameter, str]])

    def add_parameter_feedback(self, param: Parameter, feedback: str) -> None:
        """Give ``feedback`` to ``param`` (accumulated after the whole batch has run)."""
        if param.requires_grad and feedback:
            self.deliveries.append((param, feedback))


def combine_feedback(items: list[str]) -> str:
    """One feedback text from the feedback of several consumers of a value (fan-out)."""
    unique = [t for t in dict.fromkeys(i.strip() for i in items) if t]
    if len(unique) <= 1:
        return unique[0] if unique else ""
    lines = "\n".join(f"{n}. {t}" for n, t in enumerate(unique, 1))
    return f"This value is used in {len(unique)} places, which gave this feedback:\n{lines}"


@dataclass(frozen=True)
class BackwardPlan:
    """The per-graph part of a backward pass, computed once for all rows of a batch.

    Attributes:
        levels: Node ids grouped so each group only feeds groups before it.
        learnable: Ids of the nodes with something learnable upstream.
    """

    levels: list[list[str]]
    learnable: frozenset[str]

    @classmethod
    def of(cls, record: ForwardRecord) -> BackwardPlan:
        """The plan for the record's graph and root module."""
        graph = record.graph
        levels = _reverse_levels(graph, list(dict.fromkeys(graph.output_refs())))
        return cls(levels, frozenset(_learnable_upstream(record)))


async def propagate(
    record: ForwardRecord, feedback: str, llm: BackwardLLM | None,
    plan: BackwardPlan | None = None,
) -> list[tuple[Parameter, str]]:
    """Send ``feedback`` on the record's output back through its graph.

    Args:
        record: The row's forward record.
        feedback: Feedback on the row's output.
        llm: The backward LLM, or None for templates.
        plan: ``BackwardPlan.of(record)``, shared by rows of the same graph (computed if None).

    Returns:
        (Parameter, feedback) deliveries in graph order, for the caller to accumulate.
    """
    graph = record.graph
    plan = plan or BackwardPlan.of(record)
    pending: dict[str, list[str]] = {}
    for node_id in dict.fromkeys(graph.output_refs()):
        pending.setdefault(node_id, []).append(feedback)
    deliveries: list[tuple[Parameter, str]] = []
    learnable = plan.learnable
    for level in plan.levels:
        work = [(nid, combine_feedback(pending.pop(nid))) for nid in level if nid in pending]
        work = [(nid, text) for nid, text in work if text]
        visits = [_visit(record, graph.nodes[nid], text, llm, nid in learnable)
                  for nid, text in work]
        # One node per level is the common case: await it directly, no task per node.
        results = [await visits[0]] if len(visits) == 1 else await asyncio.gather(*visits)
        for sent, delivered in results:  # merged in node order: deterministic fan-in
            deliveries.extend(delivered)
            for dep, text in sent.items():
                pending.setdefault(dep, []).append(text)
    return deliveries


def _reverse_levels(graph: InferenceGraph, outputs: list[str]) -> list[list[str]]:
    """Nodes reachable backward from ``outputs``, grouped so each group only feeds earlier ones."""
    relevant = set(outputs)
    for node_id in outputs:
        relevant |= graph.ancestors(node_id)
    dependents = graph.dependents()
    level: dict[str, int] = {}
    for node_id in reversed(graph.topological_order()):
        if node_id in relevant:
            users = [level[d] for d in dependents[node_id] if d in level]
            level[node_id] = 1 + max(users) if users else 0
    groups: dict[int, list[str]] = {}
    for node_id in graph.nodes:  # graph order inside a level
        if node_id in level:
            groups.setdefault(level[node_id], []).append(node_id)
    return [groups[k] for k in sorted(groups)]


def _learnable_upstream(record: ForwardRecord) -> set[str]:
    """Ids of the nodes with something learnable among their ancestors."""
    root, graph = record.module, record.graph
    owns: set[str] = set()
    for node in graph.nodes.values():
        if node.kind == "param":
            found = root.get_parameter(node.target).requires_grad
        elif node.kind in ("llm", "module"):
            found = any(p.requires_grad for p in root.get_submodule(node.target).parameters())
        else:
            found = False
        if found:
            owns.add(node.id)
    return {nid for nid in graph.nodes if graph.ancestors(nid) & owns}


async def _visit(
    record: ForwardRecord, node: GraphNode, feedback: str, llm: BackwardLLM | None,
    inputs_learnable: bool,
) -> tuple[dict[str, str], list[tuple[Parameter, str]]]:
    root = record.module
    if node.kind == "input":
        return {}, []
    if node.kind == "param":
        param = root.get_parameter(node.target)
        return {}, [(param, feedback)] if param.requires_grad else []
    if node.kind not in ("llm", "module"):
        return dict.fromkeys(node.deps, feedback), []
    module = root.get_submodule(node.target)
    ctx = BackwardContext(
        node=node, module_path=node.target,
        args=tuple(_resolve(a, record.values) for a in node.args),
        kwargs={k: _resolve(v, record.values) for k, v in node.kwargs.items()},
        output=record.values.get(node.id), llm=llm, inputs_learnable=inputs_learnable,
    )
    result: InputFeedback = await module.backward(feedback, ctx)
    return _route(node, module, result), ctx.deliveries


def _route(node: GraphNode, module: Module, result: InputFeedback) -> dict[str, str]:
    """Map a module's ``backward`` result onto the ids of the nodes that fed it."""
    if result is None:
        return {}
    if isinstance(result, str):
        return dict.fromkeys(node.deps, result) if result else {}
    sent: dict[str, list[str]] = {}
    for key, text in result.items():
        if isinstance(key, int) and 0 <= key < len(node.args):
            refs = list(iter_refs(node.args[key]))
        elif isinstance(key, str) and key in node.kwargs:
            refs = list(iter_refs(node.kwargs[key]))
        else:
            raise BackwardError(
                f"{type(module).__name__}.backward for node '{node.id}' returned feedback for "
                f"input {key!r}, but the call has {len(node.args)} positional argument(s) and "
                f"keywords {sorted(node.kwargs)}. Key the mapping by position or keyword name."
            )
        for ref in refs:
            sent.setdefault(ref.node, []).append(text)
    return {dep: combine_feedback(texts) for dep, texts in sent.items()}


def _resolve(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, Ref):
        return values.get(value.node)
    if isinstance(value, list):
        return [_resolve(v, values) for v in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, tuple):
        return tuple(_resolve(v, values) for v in value)  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return {k: _resolve(v, values) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    return value

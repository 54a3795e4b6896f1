"""A pessimistic cost of one row before it runs, from the graph and the row's inputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from plait.pricing._cost import DEFAULT_OUTPUT_TOKENS, estimate_tokens
from plait.pricing._table import Price

if TYPE_CHECKING:
    from plait.graph import InferenceGraph
    from plait.module import Module

__all__ = ["RowBound"]


class RowBound:
    """Prices a row's LLM calls before they run (computed per graph once, per row cheaply).

    Each call is priced at its prompt: its system prompt, the row's input text (a bound on
    what the prompt quotes of the input), plus the output cap of every LLM call upstream of
    it (what the prompt may quote of earlier replies), in tokens by the ~4 chars/token
    approximation; and ``max_tokens`` (or 1,024) output tokens.

    Args:
        graph: The traced graph.
        root: The module it was traced from (system prompts and max_tokens are read now).
        price_of: alias -> price.
    """

    def __init__(self, graph: InferenceGraph, root: Module,
                 price_of: Callable[[str], Price]) -> None:
        self._calls: list[tuple[Price, int, int]] = []  # price, fixed input tokens, output cap
        out_cap: dict[str, int] = {}
        upstream: dict[str, int] = {}  # node -> output tokens of LLM calls upstream of it
        for node_id in graph.topological_order():
            node = graph.nodes[node_id]
            quoted = sum(upstream.get(d, 0) + out_cap.get(d, 0) for d in node.deps)
            upstream[node_id] = quoted
            if node.kind != "llm":
                continue
            module: Any = root.get_submodule(node.target)
            cap = int(getattr(module, "max_tokens", None) or DEFAULT_OUTPUT_TOKENS)
            out_cap[node_id] = cap
            system = getattr(getattr(module, "system_prompt", None), "value", "") or ""
            fixed = estimate_tokens(str(system)) + quoted
            self._calls.append((price_of(node.alias or ""), fixed, cap))

    def row(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> float:
        """The bound for one row with these inputs, in USD."""
        chars = sum(len(v) if isinstance(v, str) else len(str(v)) for v in args)
        chars += sum(len(v) if isinstance(v, str) else len(str(v)) for v in kwargs.values())
        tokens = -(-chars // 4)
        return sum(price.cost(fixed + tokens, cap) for price, fixed, cap in self._calls)

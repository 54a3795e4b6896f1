"""``visualize_graph``: a traced graph as Mermaid or Graphviz DOT text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from plait.errors import ConfigError
from plait.graph import InferenceGraph

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["visualize_graph"]


def visualize_graph(
    graph: InferenceGraph | Module,
    format: Literal["mermaid", "dot"] = "mermaid",
    *,
    num_args: int = 1,
) -> str:
    """Render a traced graph (or a module, traced for ``num_args`` inputs) as text.

    Mermaid renders on GitHub and in notebooks; DOT renders with Graphviz
    (``dot -Tsvg graph.dot``). LLM nodes show their endpoint alias.

    Args:
        graph: An ``InferenceGraph`` or a ``Module`` to trace.
        format: ``"mermaid"`` or ``"dot"``.
        num_args: Positional inputs of forward(), when ``graph`` is a module.

    Example:
        >>> print(visualize_graph(SummarizeAndAnalyze()))
        flowchart TD
        ...
    """
    if not isinstance(graph, InferenceGraph):
        from plait.tracing import trace

        graph = trace(graph, num_args=num_args)
    if format == "mermaid":
        return graph.to_mermaid()
    if format == "dot":
        return graph.to_dot()
    raise ConfigError(f"visualize_graph format must be 'mermaid' or 'dot', got {format!r}.")

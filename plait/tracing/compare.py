"""Refusing a forward() whose graph depends on how placeholders are spelled.

forward() is traced twice with two different placeholder encodings (see
``plait.tracing.encoding``). Any difference between the two graphs means plain Python looked
into the text of a traced value (sliced, changed, escaped or measured it), which would happen
once, on a placeholder, instead of on every row's real text. Such a graph is never run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from plait.errors import TraceError

if TYPE_CHECKING:
    from plait.graph import GraphNode, InferenceGraph
    from plait.module import Module

__all__ = ["WHAT_TO_DO", "check_same_graph", "forward_location"]

WHAT_TO_DO = (
    "Strings that contain a traced value (an input, a model reply, a Parameter's value) are "
    "placeholders while forward() is traced, so plain Python that slices, changes (.upper(), "
    ".strip(), .replace(), .split(), textwrap.dedent), escapes (json.dumps, repr) or measures "
    "(len, `in`) such a string would run once, on the placeholder, not on each row's text. "
    "Apply the operation to the value itself, which records it in the graph (t[:2000], "
    "t.upper(), f\"{t}\".strip()), use a plait.functional op (F.render(template, x=t), "
    "F.to_json(v), F.join(items), F.strip(t), F.upper(t), ...), or do the processing in a leaf "
    "module (a Module with `leaf = True` runs its forward() on real values). For a prompt "
    "template, dedent or strip the template text first and insert the values after: "
    "F.render(textwrap.dedent(TEMPLATE), doc=doc)."
)


def check_same_graph(root: Module, first: InferenceGraph, second: InferenceGraph) -> None:
    """Raise ``TraceError`` unless the two traces of ``root`` recorded the same graph."""
    if (first.nodes == second.nodes and first.output == second.output
            and first.input_ids == second.input_ids):
        return
    a, b = list(first.nodes.values()), list(second.nodes.values())
    for x, y in zip(a, b, strict=False):
        if x != y:
            raise _diverged(root, x.source, f"{_describe(x)}, the other {_describe(y)}")
    if len(a) != len(b):
        extra = a[len(b)] if len(a) > len(b) else b[len(a)]
        raise _diverged(root, extra.source, f"{_describe(extra)} only once")
    raise _diverged(
        root,
        forward_location(root),
        f"different return values: {_short(first.output)} and {_short(second.output)}",
    )


def _diverged(root: Module, where: str, what: str) -> TraceError:
    return TraceError(
        f"{type(root).__name__}.forward() builds a different graph depending on the text of a "
        f"traced value, at {where}: traced with two placeholder spellings, one recorded {what}. "
        f"{WHAT_TO_DO} forward() must also build the same graph every time it runs (no random "
        "choices, clocks or counters while tracing)."
    )


def _describe(node: GraphNode) -> str:
    return (f"node '{node.id}' ({node.kind} {_short(node.target)} of {_short(node.args)}, "
            f"at {node.source})")


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def forward_location(root: Module) -> str:
    """``file.py:line`` where ``root``'s forward() is defined (no source file is read)."""
    code = getattr(type(root).forward, "__code__", None)
    if code is None:
        return f"{type(root).__name__}.forward()"
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"

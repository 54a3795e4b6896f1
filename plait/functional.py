"""Stateless operations that work on traced values (graph nodes) and on real values.

Inside forward(), traced values are placeholders, so Python functions that need the real text
(``json.dumps``, ``str.join``, ``len``) cannot run on them. Functions decorated with ``@op``
become graph nodes instead and run on the real values when the row executes.

Example:
    >>> @plait.functional.op
    ... def word_count(text: str) -> int:
    ...     return len(text.split())
    >>> class P(Module):
    ...     def forward(self, text):
    ...         return word_count(self.llm(text))
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from pydantic import BaseModel

from plait.errors import TraceError
from plait.tracing.context import active_tracer
from plait.tracing.proxy import SENTINEL_CHARS, Proxy

__all__ = ["concat", "join", "op", "parse_json", "render", "to_json"]

P = ParamSpec("P")
R = TypeVar("R")


def _traced(value: Any) -> bool:
    if isinstance(value, Proxy):
        return True
    if isinstance(value, str):
        return bool(SENTINEL_CHARS.intersection(value))
    if isinstance(value, list | tuple):
        return any(_traced(v) for v in value)  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return any(_traced(v) for v in value.values())  # pyright: ignore[reportUnknownVariableType]
    return False


def op(fn: Callable[P, R]) -> Callable[P, R]:
    """Make a module-level function usable on traced values (it becomes a graph node).

    The function must be importable by name (defined at module top level) so the graph stays
    plain data that another process (a Ray worker) can run. It may be ``async``.
    """
    qualname = fn.__qualname__
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise TraceError(
            f"@plait.functional.op needs a module-level function; {qualname} is local. Move it "
            "to the top level of a module so graphs can refer to it by import path."
        )
    target = f"{fn.__module__}:{qualname}"

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tracer = active_tracer()
        if tracer is not None and (_traced(args) or _traced(kwargs)):
            return cast(R, tracer.record_call(target, fn, tuple(args), dict(kwargs)))
        return fn(*args, **kwargs)

    wrapper.__plait_op__ = fn  # type: ignore[attr-defined]
    return wrapper


@op
def render(template: str, **values: Any) -> str:
    """``template.format(**values)`` with traced values."""
    return template.format(**values)


@op
def concat(*parts: Any, sep: str = "") -> str:
    """Join the parts' string forms with ``sep``."""
    return sep.join(str(p) for p in parts)


@op
def join(items: list[Any], sep: str = "\n") -> str:
    """``sep.join`` of a list's string forms (the list may be a traced value)."""
    return sep.join(str(i) for i in items)


@op
def to_json(value: Any, indent: int | None = None) -> str:
    """JSON text of a value (pydantic models included)."""
    if isinstance(value, BaseModel):
        return value.model_dump_json(indent=indent)
    return json.dumps(value, indent=indent, default=_default)


@op
def parse_json(text: str) -> Any:
    """Parse JSON text into Python data."""
    return json.loads(text)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

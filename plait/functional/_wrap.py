"""How the built-in ops treat ``Value`` arguments: a Value in gives a Value out.

Plain arguments give plain results and a failure raises. When any argument is (or holds) a
``Value``, payloads are unwrapped for the computation and the result is wrapped again; an
ERROR Value among the arguments is returned as the result without running the op, so
errors-as-values flow to the end of a pipeline where ``unwrap_or`` or ``is_error`` handle them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from plait.values import Value, ValueKind, infer_kind, unwrap

__all__ = ["scan_values", "value_aware"]

P = ParamSpec("P")
R = TypeVar("R")


def scan_values(value: Any) -> tuple[bool, Value | None]:
    """(whether ``value`` holds a Value, the first ERROR Value in it)."""
    if isinstance(value, Value):
        return True, value if value.is_error else None
    found = False
    items: Any
    if isinstance(value, list | tuple):
        items = cast(list[Any], value)
    elif isinstance(value, Mapping):
        items = list(cast(Mapping[Any, Any], value).values())
    else:
        return False, None
    for item in items:
        has, error = scan_values(item)
        if error is not None:
            return True, error
        found = found or has
    return found, None


def value_aware(kind: ValueKind | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an op so Value arguments give a Value result (``kind`` or inferred)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            has, error = scan_values((args, kwargs))
            if error is not None:
                return cast(R, error)
            if not has:
                return fn(*args, **kwargs)
            plain_args = [unwrap(a) for a in args]
            plain_kwargs = {k: unwrap(v) for k, v in kwargs.items()}
            result: Any = cast(Any, fn)(*plain_args, **plain_kwargs)
            if isinstance(result, Value):
                return cast(R, result)
            return cast(R, Value(kind or infer_kind(result), result))

        return wrapper

    return decorate

"""``@op``: functions that run eagerly on real values and become graph nodes on traced ones."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from plait.errors import TraceError
from plait.tracing.context import active_tracer, user_source_location
from plait.tracing.proxy import SENTINEL_CHARS, Proxy

__all__ = ["StaticArg", "op"]

P = ParamSpec("P")
R = TypeVar("R")


class StaticArg(BaseModel):
    """A class or function passed to an op while tracing (a schema, a mapped function).

    Graph arguments are plain data; a module-level class or function is kept by reference,
    so the graph still pickles (classes and functions pickle by import path) and hashes the
    same in every process.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    obj: Any

    def __repr__(self) -> str:
        return f"StaticArg({_import_name(self.obj)})"


def op(fn: Callable[P, R]) -> Callable[P, R]:
    """Make a module-level function usable on traced values (it becomes a graph node).

    Called on real values the function simply runs. Called inside a traced forward() with a
    traced value (a module's output, an input, a Parameter, or an f-string of them) anywhere
    in its arguments, it records a ``call`` node that runs on the real values when the row
    executes. Classes and module-level functions may be passed as arguments too.

    The function must be importable by name (defined at module top level) so the graph stays
    plain data that another process (a Ray worker) can run. It may be ``async``.

    Example:
        >>> @plait.functional.op
        ... def word_count(text: str) -> int:
        ...     return len(text.split())
        >>> class P(Module):
        ...     def forward(self, text):
        ...         return word_count(self.llm(text))
    """
    qualname = fn.__qualname__
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise TraceError(
            f"@plait.functional.op needs a module-level function; {qualname} is local. Move it "
            "to the top level of a module so graphs can refer to it by import path."
        )
    module = fn.__module__
    # Built-in ops are recorded under their public path, so graphs (and their hashes, which
    # checkpoints compare) do not depend on which private file defines them.
    target = ("plait.functional:" if module.startswith("plait.functional._") else
              f"{module}:") + qualname

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tracer = active_tracer()
        if tracer is not None and (is_traced(args) or is_traced(kwargs)):
            static_args = tuple(_to_static(a) for a in args)
            static_kwargs = {k: _to_static(v) for k, v in kwargs.items()}
            return cast(R, tracer.record_call(target, runner, static_args, static_kwargs))
        return fn(*args, **kwargs)

    runner = _runner(fn)
    wrapper.__plait_op__ = runner  # type: ignore[attr-defined]
    return wrapper


def _runner(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What the graph node runs: ``fn`` with StaticArgs turned back into their objects."""
    if _is_async(fn):

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return await fn(*_from_static(args), **_from_static(kwargs))

        return functools.update_wrapper(run_async, fn)

    def run(*args: Any, **kwargs: Any) -> Any:
        return fn(*_from_static(args), **_from_static(kwargs))

    return functools.update_wrapper(run, fn)


def is_traced(value: Any) -> bool:
    """True when ``value`` holds a traced value (proxy, sentinel string or Parameter)."""
    if isinstance(value, Proxy):
        return True
    if isinstance(value, str):
        return bool(SENTINEL_CHARS.intersection(value))
    if isinstance(value, list | tuple):
        return any(is_traced(v) for v in cast(list[Any], value))
    if isinstance(value, Mapping):
        return any(is_traced(v) for v in cast(Mapping[Any, Any], value).values())
    from plait.parameter import Parameter

    # A Parameter read while tracing must stay a node: its value changes between runs.
    return isinstance(value, Parameter)


def _is_async(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


def _to_static(value: Any) -> Any:
    if isinstance(value, Proxy | BaseModel | str | int | float | bool | None):
        return value
    if isinstance(value, list | tuple):
        items = [_to_static(v) for v in cast(list[Any], value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, Mapping):
        return {k: _to_static(v) for k, v in cast(Mapping[Any, Any], value).items()}
    if isinstance(value, type) or _is_function(value):
        _check_importable(value)
        return StaticArg(obj=value)
    return value  # the tracer decides (Parameters, and a clear error for the rest)


def _from_static(value: Any) -> Any:
    if isinstance(value, StaticArg):
        return value.obj
    if isinstance(value, list | tuple):
        items = [_from_static(v) for v in cast(list[Any], value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: _from_static(v) for k, v in cast(dict[Any, Any], value).items()}
    return value


def _is_function(value: Any) -> bool:
    import types

    return isinstance(value, types.FunctionType | types.BuiltinFunctionType
                      | types.MethodDescriptorType | functools.partial)


def _import_name(obj: Any) -> str:
    owner = getattr(obj, "__objclass__", None)  # str.upper and other method descriptors
    module = getattr(owner if owner is not None else obj, "__module__", "?")
    return f"{module}:{getattr(obj, '__qualname__', repr(obj))}"


def _check_importable(obj: Any) -> None:
    name = _import_name(obj)
    module_name, _, qualname = name.partition(":")
    found: Any = None
    if "<" not in qualname:
        try:
            found = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            found = None
    if found is not obj:
        raise TraceError(
            f"{name} is passed to a plait.functional op on a traced value at "
            f"{user_source_location()}, but it is not importable by that name (a lambda, a "
            "local function or class, or a partial). Define it at the top level of a module "
            "so the graph can refer to it in any process."
        )

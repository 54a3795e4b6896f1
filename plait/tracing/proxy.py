r"""Placeholders for values while forward() is traced.

A ``Proxy`` stands for a node's future value. Operations on it record nodes: indexing,
attribute access, method calls, ``+``. Formatting it (f-strings, ``str.format``, ``%``,
``str()``) cannot return a proxy, because Python forces those results to be ``str``; instead it
returns a *sentinel* string (private-use code points around an index). Wherever a string
reaches a module call or the output, the tracer splits it at the sentinels into a ``format``
node, so ``f"Analyze:\\n{summary}"`` becomes a node that waits for ``summary``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from plait.errors import TraceError
from plait.tracing.context import user_source_location

if TYPE_CHECKING:
    from plait.tracing.tracer import Tracer

__all__ = ["SENTINEL_CHARS", "Proxy"]

SENTINEL_OPEN = "\ue000"
SENTINEL_CLOSE = "\ue001"
# Anything the sentinel markers touch means a traced value leaked into a real string.
SENTINEL_CHARS = frozenset(SENTINEL_OPEN + SENTINEL_CLOSE)


class Proxy:
    """The value of graph node ``node_id``, not yet computed."""

    __slots__ = ("_plait_node", "_plait_tracer")
    _plait_node: str
    _plait_tracer: Tracer

    def __init__(self, node_id: str, tracer: Tracer) -> None:
        object.__setattr__(self, "_plait_node", node_id)
        object.__setattr__(self, "_plait_tracer", tracer)

    @property
    def node_id(self) -> str:
        """The id of the node this proxy stands for."""
        return self._plait_node

    # --- string building: sentinels -------------------------------------------------------
    def __format__(self, spec: str) -> str:
        return self._plait_tracer.sentinel(self._plait_node, "", spec)

    def __str__(self) -> str:
        return _Converted.make(self._plait_tracer, self._plait_node, "s")

    def __repr__(self) -> str:
        return _Converted.make(self._plait_tracer, self._plait_node, "r")

    def __add__(self, other: Any) -> Proxy:
        return self._plait_tracer.record_concat(self, other)

    def __radd__(self, other: Any) -> Proxy:
        return self._plait_tracer.record_concat(other, self)

    # --- structured access ----------------------------------------------------------------
    def __getitem__(self, key: Any) -> Proxy:
        return self._plait_tracer.record_access("getitem", self, key)

    def __getattr__(self, name: str) -> Proxy:
        if name.startswith("_"):
            # Protocol probes (pickle, numpy, IPython) must not become graph nodes.
            raise AttributeError(name)
        return self._plait_tracer.record_access("getattr", self, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Proxy:
        """A method call on the value, e.g. ``text.strip()``."""
        return self._plait_tracer.record_method_call(self, args, kwargs)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        _fail("assign an attribute on", "Build a new value instead (e.g. a dict) and return it.")

    # --- things tracing cannot capture ----------------------------------------------------
    def __bool__(self) -> NoReturn:
        _fail(
            "branch on",
            "Values are placeholders while tracing, so `if`/`while`/`and`/`or` cannot see "
            "them. Run both branches and choose inside a leaf module (a Module with "
            "`leaf = True` runs its forward() on real values), or use a "
            "@plait.functional.op function that takes the value.",
        )

    def __iter__(self) -> NoReturn:
        _fail(
            "iterate over",
            "Index it instead (value[0], value['key'], value.field), or process it in a "
            "@plait.functional.op function.",
        )

    def __len__(self) -> NoReturn:
        _fail("take len() of", "Compute it in a @plait.functional.op function.")

    def __contains__(self, item: Any) -> NoReturn:
        _fail("test membership (`in`) on", "Do it in a @plait.functional.op function.")

    def __eq__(self, other: object) -> NoReturn:  # type: ignore[override]
        _fail("compare (==)", "Compare inside a @plait.functional.op function or leaf module.")

    def __hash__(self) -> int:
        return id(self)

    def __await__(self) -> NoReturn:
        _fail(
            "await",
            "forward() is written as plain synchronous code; plait runs it asynchronously. "
            "Remove the `await`.",
        )

    def __reduce__(self) -> NoReturn:
        _fail("pickle", "Only real values can be pickled; return the value from forward().")


class _Converted(str):
    """The sentinel of ``str(proxy)`` / ``repr(proxy)``.

    In ``f"{x!r:>9}"`` Python applies the conversion first and then formats the resulting
    string with the spec; a plain sentinel string would be padded as itself, so the spec would
    be lost. This subclass records the spec in a new sentinel instead.
    """

    _plait: tuple[Tracer, str, str]

    @classmethod
    def make(cls, tracer: Tracer, node_id: str, conversion: str) -> _Converted:
        text = cls(tracer.sentinel(node_id, conversion, ""))
        text._plait = (tracer, node_id, conversion)
        return text

    def __format__(self, spec: str) -> str:
        if not spec:
            return str.__str__(self)
        tracer, node_id, conversion = self._plait
        return tracer.sentinel(node_id, conversion, spec)


def _fail(action: str, hint: str) -> NoReturn:
    where = user_source_location()
    raise TraceError(f"Cannot {action} a traced value in forward() ({where}). {hint}")

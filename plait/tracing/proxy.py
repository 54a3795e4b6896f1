"""``Proxy``: a node's value while forward() is traced.

Operations on a proxy record nodes: indexing, attribute access, method calls, ``+``. Formatting
it (f-strings, ``str.format``, ``%``, ``str()``, ``repr()``) cannot return a proxy, because
Python forces those results to be ``str``; it returns a ``TracedText`` placeholder instead
(see ``plait.tracing.text`` and ``plait.tracing.encoding``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from plait.tracing.encoding import SENTINEL_CHARS
from plait.tracing.errors import fail

if TYPE_CHECKING:
    from plait.tracing.tracer import Tracer

__all__ = ["SENTINEL_CHARS", "Proxy"]


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

    # --- string building: placeholders -------------------------------------------------------
    def __format__(self, spec: str) -> str:
        return self._plait_tracer.text(self._plait_node, "", spec)

    def __str__(self) -> str:
        return self._plait_tracer.text(self._plait_node, "s", "")

    def __repr__(self) -> str:
        return self._plait_tracer.text(self._plait_node, "r", "")

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
        fail("assign an attribute on", "Build a new value instead (e.g. a dict) and return it.")

    # --- things tracing cannot capture ----------------------------------------------------
    def __bool__(self) -> NoReturn:
        fail(
            "branch on",
            "Values are placeholders while tracing, so `if`/`while`/`and`/`or` cannot see "
            "them. Run both branches and choose inside a leaf module (a Module with "
            "`leaf = True` runs its forward() on real values), or use a "
            "@plait.functional.op function that takes the value.",
        )

    def __iter__(self) -> NoReturn:
        fail(
            "iterate over",
            "Index it instead (value[0], value['key'], value.field), or process it in a "
            "@plait.functional.op function.",
        )

    def __len__(self) -> NoReturn:
        fail("take len() of", "Compute it in a @plait.functional.op function.")

    def __contains__(self, item: Any) -> NoReturn:
        fail("test membership (`in`) on", "Do it in a @plait.functional.op function.")

    def __eq__(self, other: object) -> NoReturn:  # type: ignore[override]
        fail("compare (==)", "Compare inside a @plait.functional.op function or leaf module.")

    def __hash__(self) -> int:
        # A dict lookup or set test would be decided once, on the placeholder's identity.
        fail("use as a dict key or set member",
             "Look the value up inside a @plait.functional.op function or leaf module.")

    def __await__(self) -> NoReturn:
        fail(
            "await",
            "forward() is written as plain synchronous code; plait runs it asynchronously. "
            "Remove the `await`.",
        )

    def __reduce__(self) -> NoReturn:
        fail("pickle", "Only real values can be pickled; return the value from forward().")

"""``TracedText``: the string that formatting one traced value returns while tracing.

``f"{doc}"``, ``str(doc)``, ``format(doc, spec)``, ``repr(doc)`` and a Parameter's ``.value``
return a ``TracedText``: a ``str`` whose characters are a placeholder (so it can be built into
f-strings and joined like any string) and whose string methods are recorded as graph nodes,
so they act on the real text when the row runs:

- ``f"{doc}"[:2000]``, ``f"{t}".upper()``, ``self.template.value.format(input=x)`` become
  ``getitem``/``method`` nodes: the Python result, computed on real values;
- ``len(...)``, ``in``, ``==``/``<`` and truth tests need the real text *now*, so they raise a
  ``TraceError`` naming the line.

Outside the trace that made it, a ``TracedText`` behaves as the plain string it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from plait.tracing.context import active_tracer
from plait.tracing.errors import fail

if TYPE_CHECKING:
    from plait.tracing.proxy import Proxy
    from plait.tracing.tracer import Tracer

__all__ = ["TracedText"]

# Public str methods: called on a TracedText, each becomes a ``method`` node.
_STR_METHODS = frozenset(n for n in dir(str) if not n.startswith("_"))


class TracedText(str):
    """A placeholder string standing for ``format(conv(value of node), spec)``."""

    _plait_tracer: Tracer
    _plait_node: str
    _plait_conversion: str
    _plait_spec: str
    _plait_is_text: bool
    _plait_proxy: Proxy | None

    @classmethod
    def make(cls, tracer: Tracer, text: str, node_id: str, conversion: str, spec: str,
             is_text: bool) -> TracedText:
        """Wrap placeholder ``text`` for ``node_id`` (``is_text``: the value is a str)."""
        out = cls(text)
        d = out.__dict__
        d["_plait_tracer"] = tracer
        d["_plait_node"] = node_id
        d["_plait_conversion"] = conversion
        d["_plait_spec"] = spec
        d["_plait_is_text"] = is_text
        d["_plait_proxy"] = None
        return out

    def _plait_live(self) -> Tracer | None:
        tracer = self.__dict__["_plait_tracer"]
        return tracer if active_tracer() is tracer else None

    def _plait_value(self, tracer: Tracer) -> Proxy:
        """The proxy of the string this text stands for (a format node, made once)."""
        d = self.__dict__
        proxy = d["_plait_proxy"]
        if proxy is None:
            proxy = tracer.text_node(d["_plait_node"], d["_plait_conversion"], d["_plait_spec"],
                                     d["_plait_is_text"])
            d["_plait_proxy"] = proxy
        return proxy

    # --- string methods become nodes --------------------------------------------------------
    def __getattribute__(self, name: str) -> Any:
        if name in _STR_METHODS:
            tracer = self._plait_live()
            if tracer is not None:
                value = self._plait_value(tracer)

                def method(*args: Any, **kwargs: Any) -> Proxy:
                    return tracer.record_method(value, name, args, kwargs)

                return method
        return super().__getattribute__(name)

    def __getitem__(self, key: Any) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        tracer = self._plait_live()
        if tracer is None:
            return str.__getitem__(self, key)
        return tracer.record_access("getitem", self._plait_value(tracer), key)

    def __mod__(self, values: Any) -> Any:
        tracer = self._plait_live()
        if tracer is None:
            return str.__mod__(self, values)
        return tracer.record_method(self._plait_value(tracer), "__mod__", (values,), {})

    def __format__(self, spec: str) -> str:
        tracer = self._plait_live()
        if tracer is None or not spec:
            return self if tracer is not None else str.__format__(self, spec)
        d = self.__dict__
        if not d["_plait_spec"]:
            return tracer.text(d["_plait_node"], d["_plait_conversion"], spec, d["_plait_is_text"])
        return tracer.text(self._plait_value(tracer).node_id, "", spec, True)

    def __str__(self) -> str:
        return self if self._plait_live() is not None else str.__str__(self)

    def __repr__(self) -> str:
        tracer = self._plait_live()
        if tracer is None:
            return str.__repr__(self)
        return tracer.text(self._plait_value(tracer).node_id, "r", "", True)

    # --- what needs the real text now -------------------------------------------------------
    def __len__(self) -> int:
        if self._plait_live() is None:
            return str.__len__(self)
        _needs_text("take len() of", "an @plait.functional.op function returning len(text)")

    def __contains__(self, item: object) -> bool:  # pyright: ignore[reportIncompatibleMethodOverride]
        if self._plait_live() is None:
            return str.__contains__(self, item)  # type: ignore[operator]
        _needs_text("test membership (`in`) on", "an @plait.functional.op function")

    def __bool__(self) -> bool:
        if self._plait_live() is None:
            return str.__len__(self) > 0
        _needs_text("branch on", "an @plait.functional.op function that chooses")

    def __eq__(self, other: object) -> bool:
        if self._plait_live() is None:
            return str.__eq__(self, other)
        _needs_text("compare (==)", "an @plait.functional.op function")

    def __ne__(self, other: object) -> bool:
        if self._plait_live() is None:
            return str.__ne__(self, other)
        _needs_text("compare (!=)", "an @plait.functional.op function")

    def __lt__(self, other: str) -> bool:
        if self._plait_live() is None:
            return str.__lt__(self, other)
        _needs_text("order (<)", "an @plait.functional.op function")

    def __le__(self, other: str) -> bool:
        if self._plait_live() is None:
            return str.__le__(self, other)
        _needs_text("order (<=)", "an @plait.functional.op function")

    def __gt__(self, other: str) -> bool:
        if self._plait_live() is None:
            return str.__gt__(self, other)
        _needs_text("order (>)", "an @plait.functional.op function")

    def __ge__(self, other: str) -> bool:
        if self._plait_live() is None:
            return str.__ge__(self, other)
        _needs_text("order (>=)", "an @plait.functional.op function")

    def __hash__(self) -> int:
        if self._plait_live() is None:
            return str.__hash__(self)
        _needs_text("use as a dict key or set member", "an @plait.functional.op function")

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self._plait_live() is None:
            return (str, (str.__str__(self),))
        fail("pickle", "Only real values can be pickled; return the value from forward().")


def _needs_text(action: str, instead: str) -> NoReturn:
    fail(
        action,
        "The text of a traced value (an input, a model reply, a Parameter's value) is not known "
        "while forward() is traced, so this would be decided once, on a placeholder. Use a "
        f"traced operation instead ({instead}), or do it in a leaf "
        "module (a Module with `leaf = True` runs its forward() on real values).",
    )

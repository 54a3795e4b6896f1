"""Forward records: what produced a training-mode output, so ``backward()`` can walk it.

In training mode (``pipeline.train()``) every output carries a ``ForwardRecord``: the root
module, the traced graph and the value of every node of that row. The output stays usable as
the plain value:

- ``str`` outputs become ``RecordedStr`` (a ``str`` subclass), ``dict`` / ``list`` / ``tuple``
  / ``int`` / ``float`` outputs become the matching ``Recorded*`` subclass. They compare,
  hash, format, JSON-encode and pickle exactly like the plain value (pickling drops the record).
- Any other object that supports weak references (pydantic models, dataclasses, user
  classes) is returned unchanged; its record lives in a side table keyed by the object's
  identity and disappears with the object. ``model_dump()``, ``==`` and ``type(out)`` are
  untouched.
- ``None`` and ``bool`` cannot carry a record; they are returned as they are, and
  ``backward()`` on them raises ``BackwardError`` saying so.

Records are released by ``backward()`` (node values dropped, the link removed), so memory
does not grow with the number of training steps.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plait.graph import InferenceGraph
    from plait.module import Module

__all__ = [
    "ForwardRecord",
    "RecordedDict",
    "RecordedFloat",
    "RecordedInt",
    "RecordedList",
    "RecordedStr",
    "RecordedTuple",
    "attach_record",
    "live_records",
    "record_of",
    "release_record",
    "was_released",
]

_ATTR = "_plait_record"


@dataclass(eq=False)
class ForwardRecord:
    """What one row's forward pass computed.

    Attributes:
        module: The root module that ran.
        graph: The traced graph that ran.
        values: Node id -> the value the node produced in this row (empty once released).
        released: True after ``backward()`` used it.
    """

    module: Module
    graph: InferenceGraph
    values: dict[str, Any] = field(default_factory=dict[str, Any])
    released: bool = False

    def release(self) -> None:
        """Drop the node values; the record can no longer be used for backward()."""
        self.values = {}
        self.released = True


class _Carrier:
    """Mixin of the ``Recorded*`` subclasses: pickles as the plain value, without the record."""

    __slots__ = ()
    _plain: type

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (self._plain, (self._plain(self),))  # pyright: ignore[reportCallIssue]


class RecordedStr(_Carrier, str):
    """A ``str`` output of a training-mode run, carrying its forward record."""

    _plain = str


class RecordedDict(_Carrier, dict[Any, Any]):
    """A ``dict`` output of a training-mode run, carrying its forward record."""

    _plain = dict


class RecordedList(_Carrier, list[Any]):
    """A ``list`` output of a training-mode run, carrying its forward record."""

    _plain = list


class RecordedTuple(_Carrier, tuple[Any, ...]):
    """A ``tuple`` output of a training-mode run, carrying its forward record."""

    _plain = tuple


class RecordedInt(_Carrier, int):
    """An ``int`` output of a training-mode run, carrying its forward record."""

    _plain = int


class RecordedFloat(_Carrier, float):
    """A ``float`` output of a training-mode run, carrying its forward record."""

    _plain = float


_CARRIERS: dict[type, type] = {
    str: RecordedStr, dict: RecordedDict, list: RecordedList, tuple: RecordedTuple,
    int: RecordedInt, float: RecordedFloat,
}
# Objects that cannot carry an attribute: id -> (weak reference, record). The weakref
# callback removes the entry when the output is garbage collected.
_SIDE: dict[int, tuple[weakref.ref[Any], ForwardRecord]] = {}
# Side-table outputs whose record was released, so a second backward() can say so.
_RELEASED: dict[int, weakref.ref[Any]] = {}


def attach_record(
    output: Any, module: Module, graph: InferenceGraph | None, record: Mapping[str, Any]
) -> Any:
    """Return ``output`` carrying its forward record (see the module docstring).

    Args:
        output: The row's output as the executor produced it.
        module: The root module that ran.
        graph: The graph that ran.
        record: Node id -> value for every node of the row (``RowOutcome.values``).

    Returns:
        The output, or a transparent subclass instance of it, linked to a ``ForwardRecord``.
    """
    if graph is None:
        return output
    rec = ForwardRecord(module=module, graph=graph, values=dict(record))
    kind: type = type(output)  # pyright: ignore[reportUnknownVariableType]
    carrier = _CARRIERS.get(kind)
    if carrier is not None:
        wrapped = carrier(output)
        setattr(wrapped, _ATTR, rec)
        return wrapped
    try:
        key = id(output)
        ref = weakref.ref(output, lambda _r, key=key: _SIDE.pop(key, None))
    except TypeError:
        return output  # None, bool and other values that cannot be referenced weakly
    _SIDE[key] = (ref, rec)
    return output


def record_of(output: Any) -> ForwardRecord | None:
    """The forward record carried by ``output``, or None (eval mode, or not an output)."""
    rec = getattr(output, _ATTR, None) if isinstance(output, _Carrier) else None
    if isinstance(rec, ForwardRecord):
        return rec
    entry = _SIDE.get(id(output))
    if entry is not None and entry[0]() is output:
        return entry[1]
    return None


def release_record(output: Any) -> None:
    """Release ``output``'s record and unlink it (called by ``backward()``)."""
    rec = record_of(output)
    if rec is None:
        return
    rec.release()
    if isinstance(output, _Carrier):
        setattr(output, _ATTR, rec)  # keep the released marker: a second backward says so
    else:
        key = id(output)
        _SIDE.pop(key, None)
        _RELEASED[key] = weakref.ref(output, lambda _r, key=key: _RELEASED.pop(key, None))


def was_released(output: Any) -> bool:
    """True when ``output`` had a record that backward() already released."""
    rec = getattr(output, _ATTR, None) if isinstance(output, _Carrier) else None
    if isinstance(rec, ForwardRecord):
        return rec.released
    ref = _RELEASED.get(id(output))
    return ref is not None and ref() is output


def live_records() -> int:
    """How many side-table records are alive (outputs not yet released nor collected)."""
    return len(_SIDE)

"""Values to JSON-able data and back, without pickle.

Checkpoints, fingerprints and traces store node values as JSON. JSON has no tuples, no bytes,
no non-string dict keys and no classes, so :func:`to_jsonable` adds small type tags and
:func:`from_jsonable` removes them:

```
str, int, float, bool, None, list, dict[str, ...]   as themselves
tuple                    {"__tuple__": [...]}
bytes                    {"__bytes__": "<base64>"}
dict with other keys     {"__dict__": [[key, value], ...]}   (also dicts whose keys look like tags)
pydantic BaseModel       {"__pydantic__": "module:QualName", "data": model.model_dump(mode="json")}
exception                {"__error__": {"type": ..., "message": ..., "status": ...}}
```

Pydantic models are rebuilt only through classes the caller hands in (``models``: for a
checkpoint, the classes the pipeline itself declares, see :func:`model_registry`), never by
importing a name found in the data: a file plait reads cannot make it import a module. Exceptions
are kept as text only (:class:`ErrorInfo`): a stored error is a record of what happened, never
something to re-raise with its original class. Anything else is refused with a
:class:`~plait.errors.CheckpointError` naming the type and where it sits in the value; nothing
is ever pickled.
"""

from __future__ import annotations

import base64
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from plait.errors import CheckpointError

__all__ = [
    "ErrorInfo",
    "ModelRegistry",
    "from_jsonable",
    "jsonable_default",
    "model_name",
    "model_registry",
    "to_jsonable",
]

_TUPLE = "__tuple__"
_BYTES = "__bytes__"
_DICT = "__dict__"
_PYDANTIC = "__pydantic__"
_ERROR = "__error__"
_TAGS = frozenset({_TUPLE, _BYTES, _DICT, _PYDANTIC, _ERROR})
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A stored error: its class name, message and HTTP status (if it had one).

    Attributes:
        type: The exception's class name, e.g. ``"RateLimitError"``.
        message: ``str(error)``.
        status: The error's ``status`` attribute when it is an int, else None.
    """

    type: str
    message: str
    status: int | None = None

    @classmethod
    def from_exception(cls, error: BaseException) -> ErrorInfo:
        """Summarize ``error`` as text; tracebacks and attributes other than status are dropped."""
        status = getattr(error, "status", None)
        return cls(type(error).__name__, str(error), status if isinstance(status, int) else None)


class _Refused(Exception):
    """Internal: a value cannot be converted; ``path`` grows as the recursion unwinds."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` to JSON-able data (dicts, lists, scalars) with type tags.

    Args:
        value: A str, int, float, bool, None, list, tuple, dict, bytes, pydantic model or
            exception, nested freely.

    Returns:
        Data that ``json.dumps`` accepts and :func:`from_jsonable` turns back into ``value``.

    Raises:
        CheckpointError: ``value`` holds something else (a set, a datetime, a custom object,
            a model class defined inside a function); the message names the type and where.

    Example:
        >>> to_jsonable({"pair": (1, "a")})
        {'pair': {'__tuple__': [1, 'a']}}
    """
    try:
        return _encode(value)
    except _Refused as refused:
        where = "value" + "".join(reversed(refused.path))
        raise CheckpointError(
            f"Cannot store {where} in a checkpoint: {refused.reason}. Node values and row "
            "outputs must be str, int, float, bool, None, list, tuple, dict, bytes or pydantic "
            "models (plait never pickles); convert the value, e.g. to a dict or a BaseModel."
        ) from None


def _encode(value: Any) -> Any:
    kind = cast("type[object]", type(value))
    # Exact-type checks first: the common case (strings, numbers) returns after one lookup.
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        items = [_encode_item(item, index) for index, item in enumerate(value)]
        return items if kind is list else {_TUPLE: items}
    if kind is dict:
        return _encode_dict(value)
    if isinstance(value, BaseModel):
        return _encode_model(value)
    if isinstance(value, bytes | bytearray):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, BaseException):
        info = ErrorInfo.from_exception(value)
        return {_ERROR: {"type": info.type, "message": info.message, "status": info.status}}
    if isinstance(value, ErrorInfo):
        return {_ERROR: {"type": value.type, "message": value.message, "status": value.status}}
    if isinstance(value, _SCALARS):  # subclasses: str enums, IntEnum, numpy-free bools
        return _encode_scalar_subclass(value)
    if isinstance(value, list | tuple | dict):
        return _encode(_as_builtin(value))  # OrderedDict, defaultdict, namedtuple...
    raise _Refused(f"type {kind.__module__}.{kind.__qualname__} is not supported")


def _encode_item(item: Any, index: int) -> Any:
    try:
        return _encode(item)
    except _Refused as refused:
        refused.path.append(f"[{index}]")
        raise


def _encode_dict(value: dict[Any, Any]) -> Any:
    # Tag-shaped user dicts take the pairs form too, so decoding never mistakes them for tags.
    if all(type(key) is str for key in value) and not any(key in _TAGS for key in value):
        return {key: _encode_value_at(item, repr(key)) for key, item in value.items()}
    return {_DICT: [[_encode(key), _encode_value_at(item, repr(key))]
                    for key, item in value.items()]}


def _encode_value_at(item: Any, key_repr: str) -> Any:
    try:
        return _encode(item)
    except _Refused as refused:
        refused.path.append(f"[{key_repr}]")
        raise


def _encode_model(model: BaseModel) -> dict[str, Any]:
    cls = type(model)
    if "<locals>" in cls.__qualname__:
        raise _Refused(
            f"pydantic model {cls.__module__}.{cls.__qualname__} is defined inside a function, "
            "so it could not be re-imported on resume; define it at module level"
        )
    return {_PYDANTIC: model_name(cls), "data": model.model_dump(mode="json")}


def _encode_scalar_subclass(value: Any) -> Any:
    # bool before int: bool is an int subclass, and IntEnum/StrEnum members keep their value.
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    return None  # NoneType has no subclasses; unreachable


def _as_builtin(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(cast("dict[Any, Any]", value))
    if isinstance(value, list):
        return list(cast("list[Any]", value))
    return tuple(cast("tuple[Any, ...]", value))


ModelRegistry = Mapping[str, type[BaseModel]]
"""``"module:QualName"`` -> pydantic class: the only classes :func:`from_jsonable` rebuilds."""


def model_name(cls: type[BaseModel]) -> str:
    """The name a model class is stored under: ``"module:QualName"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def model_registry(classes: Iterable[Any]) -> dict[str, type[BaseModel]]:
    """The registry of the pydantic classes in ``classes`` and of every model nested in them.

    Args:
        classes: Classes or type annotations (``list[Verdict]``, ``Verdict | None``); what is
            not a pydantic model is skipped.

    Returns:
        ``"module:QualName"`` -> class, for the classes and the models their fields use.
    """
    registry: dict[str, type[BaseModel]] = {}
    pending: list[Any] = list(classes)
    while pending:
        item = pending.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            name = model_name(item)
            if name in registry:
                continue
            registry[name] = item
            pending.extend(field.annotation for field in item.model_fields.values())
        elif isinstance(item, types.UnionType) or typing.get_origin(item) is not None:
            pending.extend(typing.get_args(item))
    return registry


def from_jsonable(data: Any, models: ModelRegistry | None = None) -> Any:
    """Turn data made by :func:`to_jsonable` back into the value.

    Args:
        data: JSON-decoded data with type tags.
        models: The pydantic classes that may be rebuilt (see :func:`model_registry`). A
            ``__pydantic__`` tag naming any other class is refused; nothing is imported.

    Returns:
        The value: tuples, bytes and pydantic models rebuilt; errors as :class:`ErrorInfo`.

    Raises:
        CheckpointError: A tag is malformed, names a class not in ``models``, or the class no
            longer accepts the data.
    """
    try:
        return _decode(data, models or {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"A stored value has a malformed type tag ({type(exc).__name__}: {exc}); it was "
            "not written by plait."
        ) from None


def _decode(data: Any, models: ModelRegistry) -> Any:
    kind = cast("type[object]", type(data))
    if kind is list:
        return [_decode(item, models) for item in data]
    if kind is not dict:
        return data
    if len(data) == 1:
        ((key, inner),) = data.items()
        if key == _TUPLE:
            return tuple(_decode(item, models) for item in inner)
        if key == _BYTES:
            return base64.b64decode(inner, validate=True)
        if key == _DICT:
            return {_decode(k, models): _decode(v, models) for k, v in inner}
        if key == _ERROR:
            status = inner.get("status")
            return ErrorInfo(str(inner["type"]), str(inner["message"]),
                             status if isinstance(status, int) else None)
    if _PYDANTIC in data:
        return _decode_model(data[_PYDANTIC], data.get("data"), models)
    return {key: _decode(item, models) for key, item in data.items()}


def _decode_model(name: Any, payload: Any, models: ModelRegistry) -> BaseModel:
    if name == "plait.values:Value":  # plait's own container; its payload uses this registry
        from plait.values import Value

        return Value.from_stored(payload, lambda data: _decode(data, models))
    cls = models.get(name) if isinstance(name, str) else None
    if cls is None:
        declared = sorted(models) or "none"
        raise CheckpointError(
            f"A stored value is tagged as pydantic model {name!r}, which this pipeline does not "
            f"declare (declared: {declared}). plait rebuilds models only from classes the "
            "pipeline names (an LLMInference response_format or a forward() return "
            "annotation) and never imports a name read from a file. Annotate forward() with "
            "that model if it is yours, or rerun with resume='fresh'."
        )
    try:
        return cls.model_validate(payload)
    except ValidationError as exc:
        raise CheckpointError(
            f"Stored output of pydantic model {name} no longer validates against that class "
            f"({exc.error_count()} errors). The model changed since the checkpoint was written; "
            "rerun with resume='fresh' to recompute."
        ) from exc


def jsonable_default(value: Any) -> Any:
    """A ``default=`` hook for ``json.dumps`` that applies :func:`to_jsonable`'s rules.

    ``json.dumps`` calls it only for objects it cannot encode itself (so tuples still become
    plain lists here); use :func:`to_jsonable` first when the value must round-trip exactly.

    Raises:
        TypeError: The value is not supported (``json.dumps`` expects a TypeError).
    """
    try:
        return to_jsonable(value)
    except CheckpointError as exc:
        raise TypeError(str(exc)) from None

"""Structured ops: parse_structured, select, merge, coerce."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from plait.errors import FunctionalError
from plait.functional._op import op
from plait.functional._wrap import value_aware
from plait.values import Value, ValueKind, infer_kind

__all__ = ["coerce", "merge", "parse_structured", "select"]

_MISSING: Any = object()
_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]|\[['\"]([^'\"]*)['\"]\]")


@op
@value_aware(ValueKind.STRUCTURED)
def parse_structured(text: Any, schema: Any = None) -> Any:
    r"""Parse JSON text (also inside a Markdown code fence) into data or a pydantic model.

    Args:
        text: JSON text, e.g. an LLM reply.
        schema: A pydantic model class (the result is validated into it), a type or tuple of
            types the parsed value must be an instance of, or None.

    Example:
        >>> F.parse_structured('```json\n{"a": [1, 2]}\n```')
        {'a': [1, 2]}

    Raises:
        FunctionalError: The text is not JSON or does not fit ``schema``.
    """
    if not isinstance(text, str):
        raise FunctionalError(f"F.parse_structured needs text, got {type(text).__name__}.")
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        raise FunctionalError(
            f"F.parse_structured: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{text!r:.120}"
        ) from exc
    if schema is None:
        return parsed
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(parsed)
        except ValidationError as exc:
            raise FunctionalError(
                f"F.parse_structured: the JSON does not fit {schema.__name__} "
                f"({exc.error_count()} errors): {exc}"
            ) from exc
    if isinstance(schema, type | tuple) and not isinstance(parsed, schema):
        raise FunctionalError(
            f"F.parse_structured: expected {schema!r}, parsed a {type(parsed).__name__}."
        )
    return parsed


def _path_parts(path: str | int | Sequence[str | int]) -> list[str | int]:
    if isinstance(path, int):
        return [path]
    if isinstance(path, str):
        parts: list[str | int] = []
        for name, index, quoted in _PATH_PART.findall(path):
            if index:
                parts.append(int(index))
            elif name:
                parts.append(int(name) if name.lstrip("-").isdigit() else name)
            else:
                parts.append(quoted)
        if not parts:
            raise FunctionalError(f"F.select: empty path {path!r}.")
        return parts
    return list(path)


def _step(current: Any, part: str | int) -> Any:
    if isinstance(current, Value):
        current = current.payload
    if isinstance(current, Mapping):
        return cast(Mapping[Any, Any], current)[part]
    if isinstance(current, list | tuple) and isinstance(part, int):
        return cast(Sequence[Any], current)[part]
    if isinstance(current, BaseModel) and isinstance(part, str):
        if part in type(current).model_fields:
            return getattr(current, part)
        raise KeyError(part)
    raise TypeError(f"a {type(cast(object, current)).__name__} cannot be indexed by {part!r}")


@op
@value_aware()
def select(struct: Any, path: str | int | Sequence[str | int], default: Any = _MISSING) -> Any:
    """The value at a dotted/indexed ``path`` inside dicts, lists and pydantic models.

    Args:
        struct: The structure.
        path: ``"a.b[0].c"``, ``"items.0"``, an int index, or a list of keys and indices.
        default: Returned when the path does not exist; without it a missing path raises.

    Example:
        >>> F.select({"a": {"b": [10, 20]}}, "a.b[1]")
        20
        >>> F.select({"a": 1}, "x.y", default=0)
        0

    Raises:
        FunctionalError: The path does not exist and no default was given (names the step).
    """
    parts = _path_parts(path)
    current = struct
    for depth, part in enumerate(parts):
        try:
            current = _step(current, part)
        except (KeyError, IndexError, TypeError) as exc:
            if default is not _MISSING:
                return default
            done = parts[:depth]
            raise FunctionalError(
                f"F.select: path {path!r} fails at step {part!r} (after {done}): "
                f"{_describe(current)}; {exc}. Pass default=... to get a value instead."
            ) from None
    return current


def _describe(current: Any) -> str:
    if isinstance(current, Mapping):
        return f"keys are {sorted(map(str, cast(Mapping[Any, Any], current)))[:20]}"
    if isinstance(current, list | tuple):
        return f"a sequence of length {len(cast(Sequence[Any], current))}"
    if isinstance(current, BaseModel):
        return f"{type(current).__name__} fields are {sorted(type(current).model_fields)}"
    return f"a {type(current).__name__}"


@op
@value_aware(ValueKind.STRUCTURED)
def merge(*structs: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """Merge mappings (and pydantic models, as dicts) left to right; later keys win.

    Example:
        >>> F.merge({"a": 1, "b": 2}, {"b": 3})
        {'a': 1, 'b': 3}
    """
    merged: dict[str, Any] = {}
    for i, struct in enumerate(structs):
        if isinstance(struct, BaseModel):
            merged.update(struct.model_dump())
        elif isinstance(struct, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
            merged.update(struct)
        else:
            raise FunctionalError(
                f"F.merge argument {i} is a {type(struct).__name__}; only mappings and "
                "pydantic models merge."
            )
    return merged


@op
def coerce(value: Any, kind: ValueKind | str) -> Any:
    """Convert ``value`` to ``kind`` when that is safe (no silent loss).

    TEXT -> INT/FLOAT parses numbers; INT -> FLOAT widens; FLOAT -> INT only for whole
    numbers; STRUCTURED -> TEXT gives compact JSON; TEXT -> STRUCTURED parses JSON; anything
    -> TEXT uses ``str``. A Value gives a Value of ``kind``; an ERROR Value passes through.

    Example:
        >>> F.coerce("42", ValueKind.INT)
        42

    Raises:
        FunctionalError: The conversion is not possible or would lose information.
    """
    target = ValueKind(kind)
    if isinstance(value, Value):
        if value.is_error:
            return value
        return Value(target, _coerce(value.payload, target), value.ref, value.meta)
    return _coerce(value, target)


def _coerce(payload: Any, target: ValueKind) -> Any:
    source = infer_kind(payload)
    if source is target:
        return payload
    try:
        if target is ValueKind.INT:
            if isinstance(payload, float) and not payload.is_integer():
                raise ValueError("it is not a whole number")
            if isinstance(payload, bool) or not isinstance(payload, str | int | float):
                raise TypeError("only text and numbers convert to int")
            return int(payload.strip() if isinstance(payload, str) else payload)
        if target is ValueKind.FLOAT:
            if isinstance(payload, bool) or not isinstance(payload, str | int | float):
                raise TypeError("only text and numbers convert to float")
            return float(payload)
        if target is ValueKind.TEXT:
            if source is ValueKind.STRUCTURED:
                data: Any = (payload.model_dump(mode="json") if isinstance(payload, BaseModel)
                             else payload)
                return json.dumps(data, sort_keys=True, separators=(",", ":"))
            return str(payload)
        if target is ValueKind.STRUCTURED and isinstance(payload, str):
            return parse_structured(payload)
    except (TypeError, ValueError) as exc:
        raise FunctionalError(
            f"F.coerce cannot convert {payload!r:.80} ({source.value}) to {target.value}: {exc}."
        ) from exc
    raise FunctionalError(
        f"F.coerce does not convert {source.value} to {target.value} ({payload!r:.80})."
    )

"""Text ops: render, try_render, format, concat, join, strip, lower, upper, JSON text."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from plait.errors import FunctionalError
from plait.functional._op import op
from plait.functional._wrap import scan_values, value_aware
from plait.values import Value, ValueKind, unwrap

__all__ = ["concat", "format", "join", "lower", "parse_json", "render", "strip", "to_json",
           "try_render", "upper"]


def _fields(template: str, values: Mapping[str, Any], op_name: str) -> dict[str, Any]:
    # Checked up front so a missing name is reported with the names that were given.
    names = {name.split(".")[0].split("[")[0]
             for _, name, _, _ in string.Formatter().parse(template) if name}
    missing = sorted(n for n in names if n not in values and not n.isdigit())
    if missing:
        raise FunctionalError(
            f"F.{op_name}: the template needs {missing} but got {sorted(values)}. Pass every "
            f"field, e.g. F.{op_name}(template, {{{missing[0]!r}: ...}})."
        )
    return dict(values)


def _text(value: Any, op_name: str, what: str = "text") -> str:
    if not isinstance(value, str):
        raise FunctionalError(
            f"F.{op_name} needs {what} as a str, got {type(value).__name__}: {value!r:.80}. "
            "Convert it first, e.g. with F.to_json or F.coerce(x, ValueKind.TEXT)."
        )
    return value


@op
@value_aware(ValueKind.TEXT)
def render(template: str, variables: Mapping[str, Any] | None = None, /, **values: Any) -> str:
    """Fill a ``{name}`` template from a mapping and/or keyword values.

    Example:
        >>> F.render("Summary of {title}: {text}", {"title": "A"}, text="b")
        'Summary of A: b'

    Raises:
        FunctionalError: A field of the template has no value (the message lists both).
    """
    tmpl = _text(template, "render", "the template")
    merged = _fields(tmpl, {**(variables or {}), **values}, "render")
    return tmpl.format_map(merged)


@op
def try_render(
    template: str, variables: Mapping[str, Any] | None = None, /, **values: Any
) -> str | Value:
    """``render`` that returns an ERROR ``Value`` instead of raising.

    The rendered text is returned as ``render`` would (a Value when given Values). Use it where
    a failure should travel as data, then ``F.unwrap_or(result, default)`` or ``F.is_error``.

    Example:
        >>> F.try_render("{missing}").is_error
        True
    """
    try:
        return render(template, variables, **values)
    except (FunctionalError, KeyError, IndexError, ValueError, AttributeError) as exc:
        _, error = scan_values((template, variables, values))
        if error is not None:
            return error
        return Value(ValueKind.ERROR, exc, meta={"op": "try_render"})


@op
@value_aware(ValueKind.TEXT)
def format(template: str, /, *args: Any, **kwargs: Any) -> str:
    """``template.format(*args, **kwargs)``; a single mapping argument fills named fields.

    Example:
        >>> F.format("{} + {}", 1, 2)
        '1 + 2'
        >>> F.format("{a}", {"a": 1})
        '1'
    """
    tmpl = _text(template, "format", "the template")
    if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
        named: Mapping[str, Any] = args[0]  # pyright: ignore[reportUnknownVariableType]
        if any(name and not name.isdigit()
               for _, name, _, _ in string.Formatter().parse(tmpl)):
            return tmpl.format_map(_fields(tmpl, named, "format"))
    try:
        return tmpl.format(*args, **kwargs)
    except (KeyError, IndexError) as exc:
        raise FunctionalError(
            f"F.format: the template {tmpl!r:.80} needs field {exc} that was not given "
            f"({len(args)} positional, keywords {sorted(kwargs)})."
        ) from exc


@op
@value_aware(ValueKind.TEXT)
def concat(*parts: Any, sep: str = "") -> str:
    """Join the parts' string forms with ``sep``.

    Example:
        >>> F.concat("a", "b", 1, sep="-")
        'a-b-1'
    """
    return sep.join(str(p) for p in parts)


@op
@value_aware(ValueKind.TEXT)
def join(items: list[Any], sep: str = "\n") -> str:
    """``sep.join`` of a list's string forms (the list may be a traced value)."""
    return sep.join(str(unwrap(i)) for i in items)


@op
@value_aware(ValueKind.TEXT)
def strip(text: str, chars: str | None = None) -> str:
    r"""``text.strip(chars)``.

    Example:
        >>> F.strip("  hi \n")
        'hi'
    """
    return _text(text, "strip").strip(chars)


@op
@value_aware(ValueKind.TEXT)
def lower(text: str) -> str:
    """``text.lower()``."""
    return _text(text, "lower").lower()


@op
@value_aware(ValueKind.TEXT)
def upper(text: str) -> str:
    """``text.upper()``."""
    return _text(text, "upper").upper()


@op
@value_aware(ValueKind.TEXT)
def to_json(value: Any, indent: int | None = None) -> str:
    """JSON text of a value (pydantic models included)."""
    if isinstance(value, BaseModel):
        return value.model_dump_json(indent=indent)
    return json.dumps(value, indent=indent, default=_default)


@op
@value_aware(ValueKind.STRUCTURED)
def parse_json(text: str) -> Any:
    """Parse JSON text into Python data."""
    return json.loads(text)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

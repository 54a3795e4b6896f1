"""Which inputs of forward() are annotated as lists (then a list passed there is one value)."""

from __future__ import annotations

import collections.abc
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["ListAnnotation", "list_annotations"]

# A list is an instance of each of these, so an input annotated with one takes a list as-is.
_LIST_TYPES: tuple[Any, ...] = (
    list, collections.abc.Sequence, collections.abc.MutableSequence,
    collections.abc.Collection, collections.abc.Iterable,
)
_LIST_NAMES = r"(?:typing\.|collections\.abc\.|abc\.)?" \
    r"(?:list|List|Sequence|MutableSequence|Collection|Iterable)"
_LIST_TEXT = re.compile(rf"^\s*{_LIST_NAMES}\s*(?:\[(.*)\])?\s*$")


@dataclass(frozen=True, slots=True)
class ListAnnotation:
    """A positional input of forward() annotated as a list.

    Attributes:
        name: The parameter's name.
        text: The annotation as written.
        element_is_list: True if the elements are lists too (``list[list[str]]``), False if
            they are not (``list[str]``), None if unknown (``list``, ``list[Any]``).
    """

    name: str
    text: str
    element_is_list: bool | None


def list_annotations(module: Module) -> dict[int, ListAnnotation]:
    """Positional index -> annotation, for forward()'s inputs annotated as a list."""
    forward = module.forward
    params = [p for p in inspect.signature(forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        hints = typing.get_type_hints(forward)
    except Exception:  # a name only known where forward() was defined: read the text instead
        hints = {}
    found: dict[int, ListAnnotation] = {}
    for i, param in enumerate(params):
        raw = param.annotation
        if raw is inspect.Parameter.empty:
            continue
        text = raw if isinstance(raw, str) else _text(raw)
        kind = _kind(hints[param.name]) if param.name in hints else _kind_of_text(text)
        if kind is not None:
            found[i] = ListAnnotation(param.name, text, kind[0])
    return found


def _text(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _kind(tp: Any) -> tuple[bool | None] | None:
    """``(element_is_list,)`` if ``tp`` takes a list as-is, else None."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _kind(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        for arm in typing.get_args(tp):
            kind = _kind(arm)
            if kind is not None:
                return kind
        return None
    if (origin or tp) not in _LIST_TYPES:
        return None
    args = typing.get_args(tp)
    if not args or args[0] is Any:
        return (None,)
    return (_kind(args[0]) is not None,)


def _kind_of_text(text: str) -> tuple[bool | None] | None:
    for arm in _split_union(text):
        match = _LIST_TEXT.match(arm)
        if match is not None:
            inner = (match.group(1) or "").strip()
            if not inner or inner in ("Any", "typing.Any"):
                return (None,)
            return (_kind_of_text(inner.split(",")[0]) is not None,)
    return None


def _split_union(text: str) -> list[str]:
    arms: list[str] = []
    depth = 0
    current = ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            arms.append(current)
            current = ""
        else:
            current += char
    arms.append(current)
    return arms

"""Turning a call's arguments into rows: one row, or a batch."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from plait.errors import CallError, InputError
from plait.execution.annotations import ListAnnotation, list_annotations
from plait.execution.contract import Row

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["Batch", "CallInputs", "split_inputs"]


class Batch:
    """An explicit batch: each element of ``rows`` is one row of the call.

    A plain list is a batch too, unless forward()'s input is annotated as a list (then the
    list is one input); ``Batch`` is a batch in every case.

    Example:
        >>> summaries = await pipeline(Batch([["doc a", "doc b"], ["doc c"]]))  # 2 rows
    """

    __slots__ = ("rows",)

    def __init__(self, rows: Iterable[Any]) -> None:
        value = cast("object", rows)  # checked: callers pass anything
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise InputError(
                f"Batch() takes a list (or iterable) of rows, got a {type(rows).__name__}. "
                "Each element is one row: Batch([row1, row2])."
            )
        self.rows = rows

    def __repr__(self) -> str:
        return f"Batch({self.rows!r})"


@dataclass
class CallInputs:
    """The rows of one call.

    Attributes:
        is_batch: True for ``pipeline([...])``; the result is then a list (or a stream).
        rows: The rows (lazy for generator inputs).
        originals: Row index -> the user's original element (for BatchResult.input); only
            kept for list inputs, where the user holds them anyway.
        total: The number of rows, if known.
        shape: (number of positional inputs, sorted keyword names) of every row.
    """

    is_batch: bool
    rows: Iterable[Row]
    originals: list[Any] | None
    total: int | None
    shape: tuple[int, tuple[str, ...]]


def forward_arity(module: Module) -> int | None:
    """Number of positional inputs forward() takes, or None if it takes *args."""
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _one_required_input(module: Module) -> bool:
    """True if forward() needs exactly one positional input (the others have defaults)."""
    params = inspect.signature(module.forward).parameters.values()
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty]
    return len(required) == 1


def _is_batch_container(value: Any) -> bool:
    return isinstance(value, list) or (
        isinstance(value, Iterator) and not isinstance(value, str | bytes | Mapping)
    )


def split_inputs(module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallInputs:
    """Decide single vs batch and produce rows.

    ``Batch(rows)`` is a batch. A single positional ``list`` (or iterator) is a batch too,
    unless forward()'s first input is annotated as a list (``docs: list[str]``): then the list
    is one input. Each element of a batch is one row: the one input of a one-input forward(),
    or a tuple (positional) / dict (keyword) of inputs.
    """
    arity = forward_arity(module)
    name = type(module).__name__
    _check_values(module, args, kwargs)
    if len(args) == 1 and not kwargs and isinstance(args[0], Batch):
        return _batch(module, args[0].rows, arity)
    lists = list_annotations(module) if any(isinstance(a, list) for a in args) else {}
    if len(args) == 1 and not kwargs and _is_batch_container(args[0]):
        first: Any = args[0]
        if not (isinstance(first, list) and 0 in lists and _one_required_input(module)):
            return _batch(module, cast("Iterable[Any]", first), arity)
        _check_one_list(module, cast("list[Any]", first), lists[0])  # forward takes a list
    for i, a in enumerate(args):
        if isinstance(a, list) and len(args) > 1 and i not in lists:
            raise InputError(
                f"{name}() got a list as input {i} next to other inputs. To run a batch, pass "
                f"ONE list of rows, each row a tuple of inputs: {name.lower()}([(a1, b1), "
                "(a2, b2)]). To pass a list as a single value, annotate that input of forward() "
                f"as a list (`x: list[str]`), or make it one row of a batch: "
                f"{name.lower()}([(my_list, other)])."
            )
    shape = (len(args), tuple(sorted(kwargs)))
    return CallInputs(False, [(0, tuple(args), dict(kwargs))], None, 1, shape)


def _batch(module: Module, items: Iterable[Any], arity: int | None) -> CallInputs:
    originals = items if isinstance(items, list) else None
    total = len(originals) if originals is not None else None
    if originals is not None and originals:
        first = _row_of(module, 0, originals[0], arity)
        shape = _shape(first)
        for i, item in enumerate(originals):
            got = _shape(_row_of(module, i, item, arity))
            if got != shape:
                raise InputError(_mixed(module, 0, shape, i, got))
        rows: Iterable[Row] = (_row_of(module, i, it, arity) for i, it in enumerate(originals))
        return CallInputs(True, rows, originals, total, shape)
    if originals is not None:
        return CallInputs(True, [], originals, 0, (0, ()))
    iterator = iter(items)
    first_item = next(iterator, _END)
    if first_item is _END:
        return CallInputs(True, [], None, 0, (0, ()))
    first = _row_of(module, 0, first_item, arity)
    shape = _shape(first)
    return CallInputs(True, _lazy_rows(module, first, iterator, arity, shape), None, None, shape)


_END = object()


def _lazy_rows(module: Module, first: Row, rest: Iterator[Any], arity: int | None,
               shape: tuple[int, tuple[str, ...]]) -> Iterator[Row]:
    yield first
    for i, item in enumerate(rest, start=1):
        row = _row_of(module, i, item, arity)
        if _shape(row) != shape:
            raise InputError(_mixed(module, 0, shape, i, _shape(row)))
        yield row


def _row_of(module: Module, index: int, item: Any, arity: int | None) -> Row:
    if arity == 1:
        return (index, (item,), {})
    if isinstance(item, tuple):
        return (index, item, {})  # pyright: ignore[reportUnknownVariableType]
    if isinstance(item, Mapping):
        return (index, (), dict(item))  # pyright: ignore[reportUnknownArgumentType]
    if arity is None or _one_required_input(module):  # the others have defaults
        return (index, (item,), {})
    raise InputError(
        f"Row {index} of the batch is a {type(item).__name__}, but {type(module).__name__}."
        f"forward takes {arity} inputs. Make each row a tuple (a, b) or a dict "
        "{'name': value} of inputs."
    )


def _shape(row: Row) -> tuple[int, tuple[str, ...]]:
    return (len(row[1]), tuple(sorted(row[2])))


def _mixed(module: Module, i: int, a: tuple[int, tuple[str, ...]], j: int,
           b: tuple[int, tuple[str, ...]]) -> str:
    return (
        f"The batch for {type(module).__name__} mixes row shapes: row {i} has {a[0]} "
        f"positional input(s) and keys {list(a[1])}, row {j} has {b[0]} and keys {list(b[1])}. "
        "Every row must pass the same inputs; split the batch or fill in the missing inputs."
    )


def _check_values(module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    from collections.abc import Coroutine

    name = type(module).__name__
    for where, value in [*enumerate(args), *kwargs.items()]:
        if isinstance(value, Batch) and (len(args) != 1 or kwargs):
            raise InputError(
                f"{name}() got Batch(...) as input {where!r} next to other inputs. A Batch must "
                f"be the only argument, each row a tuple of inputs: "
                f"{name.lower()}(Batch([(a1, b1), (a2, b2)]))."
            )
        if isinstance(value, Coroutine):
            value.close()  # pyright: ignore[reportUnknownMemberType]
            raise CallError(
                f"{name}() got an un-awaited call (a coroutine) as input {where!r}. Await it "
                f"first: `{name.lower()}(await other(x))`, or call both inside one module's "
                "forward() so plait traces them into one graph."
            )


def _check_one_list(module: Module, value: list[Any], annotation: ListAnnotation) -> None:
    if annotation.element_is_list or not value:
        return
    if all(isinstance(item, list) for item in value):
        name = type(module).__name__
        raise InputError(
            f"{name}.forward takes `{annotation.name}: {annotation.text}`, so a list passed "
            f"to {name}() is ONE input; but this list holds {len(value)} lists, so it may be "
            f"meant as a batch of {len(value)} rows. To run a batch, pass "
            f"pipeline(Batch(rows)) (from plait import Batch). To pass one list of lists, "
            f"annotate the input as `{annotation.name}: list[list[...]]`."
        )

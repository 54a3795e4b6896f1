"""Numeric ops: add, sub, mul, div, sum, min, max, mean (booleans are not numbers here)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, cast

from plait.errors import FunctionalError
from plait.functional._op import op
from plait.functional._wrap import value_aware

__all__ = ["add", "div", "max", "mean", "min", "mul", "sub", "sum"]

Number = int | float


def _number(value: Any, op_name: str) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FunctionalError(
            f"F.{op_name} needs numbers, got {type(value).__name__}: {value!r:.80}. Convert "
            "text with F.coerce(x, ValueKind.INT or FLOAT) first."
        )
    return value


def _numbers(values: Any, op_name: str, *, non_empty: bool = False) -> list[Number]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise FunctionalError(
            f"F.{op_name} needs a list of numbers, got {type(values).__name__}."
        )
    if non_empty and not values:
        raise FunctionalError(f"F.{op_name} of an empty list is undefined.")
    return [_number(v, op_name) for v in cast(Sequence[Any], values)]


@op
@value_aware()
def add(a: Number, b: Number) -> Number:
    """``a + b``."""
    return _number(a, "add") + _number(b, "add")


@op
@value_aware()
def sub(a: Number, b: Number) -> Number:
    """``a - b``."""
    return _number(a, "sub") - _number(b, "sub")


@op
@value_aware()
def mul(a: Number, b: Number) -> Number:
    """``a * b``."""
    return _number(a, "mul") * _number(b, "mul")


@op
@value_aware()
def div(a: Number, b: Number) -> float:
    """``a / b`` (always a float).

    Raises:
        FunctionalError: ``b`` is zero.
    """
    divisor = _number(b, "div")
    if divisor == 0:
        raise FunctionalError(f"F.div: division of {a!r} by zero.")
    return _number(a, "div") / divisor


@op
@value_aware()
def sum(values: Sequence[Number]) -> Number:
    """The sum of a list of numbers (0 for an empty list).

    Example:
        >>> F.sum([1, 2, 3.5])
        6.5
    """
    return builtins.sum(_numbers(values, "sum"))


@op
@value_aware()
def min(values: Sequence[Number]) -> Number:
    """The smallest number of a non-empty list."""
    return builtins.min(_numbers(values, "min", non_empty=True))


@op
@value_aware()
def max(values: Sequence[Number]) -> Number:
    """The largest number of a non-empty list."""
    return builtins.max(_numbers(values, "max", non_empty=True))


@op
@value_aware()
def mean(values: Sequence[Number]) -> float:
    """The arithmetic mean of a non-empty list (a float)."""
    numbers = _numbers(values, "mean", non_empty=True)
    return builtins.sum(numbers) / len(numbers)

"""Mapping source columns to forward() arguments, and chunks to executor rows."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from plait.errors import InputError
from plait.execution.contract import Row
from plait.io._source import Chunk

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["ColumnMap", "chunk_rows", "resolve_columns"]

ColumnMap = dict[str, str]
"""forward() argument name -> source column name."""


def resolve_columns(module: Module, source_columns: Sequence[str],
                    columns: Mapping[str, str] | None) -> ColumnMap:
    """Which column feeds each forward() argument.

    By default each argument reads the column of the same name.

    Raises:
        InputError: An argument has no column, a mapped column is missing, or a mapped name
            is not an argument of forward().
    """
    name = type(module).__name__
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in params if p.default is p.empty]
    names = [p.name for p in params]
    mapping = dict(columns or {})
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise InputError(f"columns= names {unknown}, which are not arguments of {name}.forward "
                         f"(arguments: {names}).")
    for arg in names:
        if arg not in mapping and arg in source_columns:
            mapping[arg] = arg
    missing = [arg for arg in required if arg not in mapping]
    if missing:
        python = ", ".join(f"{a!r}: 'COLUMN'" for a in missing)
        cli = ",".join(f"{a}=COLUMN" for a in missing)
        raise InputError(
            f"{name}.forward needs {missing}, but the source has no column of that name "
            f"(columns: {list(source_columns)}). Map them: columns={{{python}}} "
            f"(CLI: --columns {cli})."
        )
    absent = sorted(col for col in mapping.values() if col not in source_columns)
    if absent:
        raise InputError(f"columns= refers to {absent}, which are not in the source "
                         f"(columns: {list(source_columns)}).")
    return mapping


def chunk_rows(chunk: Chunk, mapping: ColumnMap) -> list[Row]:
    """The chunk's rows as keyword-argument rows, indexed by row id."""
    args = sorted(mapping)
    table: Any = chunk.table
    columns: list[list[Any]] = [table.column(mapping[arg]).to_pylist() for arg in args]
    return [(chunk.start + i, (), dict(zip(args, values, strict=True)))
            for i, values in enumerate(zip(*columns, strict=True))]

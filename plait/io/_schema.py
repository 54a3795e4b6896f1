"""The Parquet schema of a dataset run's output, shared by the local and Ray executors.

Every output row holds the input row's columns, then:

```
output          the pipeline's output: str, number, list, or a struct for dicts and pydantic
                models (model_dump(mode="json")); null when the row failed
error           "<ErrorType>: <message>" when the row failed, else null
input_tokens    int64, tokens sent by the row's LLM calls
output_tokens   int64, tokens received
latency_s       float64, seconds from the row's first node to its output
row_id          int64, the row's position in the source (stable across runs and resumes)
cost_usd        float64, what the row's LLM calls cost (plait.pricing prices; 0 for hits)
cache_hits      int64, the row's LLM calls answered from the response cache (cache=...)
```

Values Arrow cannot hold as one typed column (mixed types across rows) fall back to JSON text,
so a row's output is never dropped for its shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from plait.errors import InputError
from plait.execution.results import RowResult
from plait.io._arrow import Table, pa
from plait.serialize import jsonable_default

__all__ = ["RESULT_COLUMNS", "check_input_columns", "error_text", "plain_value", "result_table"]

RESULT_COLUMNS = ("output", "error", "input_tokens", "output_tokens", "latency_s", "row_id",
                  "cost_usd", "cache_hits")


def check_input_columns(names: Sequence[str]) -> None:
    """Refuse input columns that would collide with the result columns.

    Raises:
        InputError: A source column is named like a result column.
    """
    clash = sorted(set(names) & set(RESULT_COLUMNS))
    if clash:
        raise InputError(
            f"The source has column(s) {clash}, which the output adds itself "
            f"({list(RESULT_COLUMNS)}). Rename them in the source (e.g. "
            "ds.rename_columns({'output': 'previous_output'}) or in the file) and map them "
            "with columns={'arg': 'previous_output'}."
        )


def plain_value(value: Any) -> Any:
    """``value`` as plain Python data Arrow can type: models and dicts become dicts."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        mapping: Mapping[Any, Any] = value  # pyright: ignore[reportUnknownVariableType]
        return {str(k): plain_value(v) for k, v in mapping.items()}
    if isinstance(value, list | tuple):
        items: list[Any] | tuple[Any, ...] = value  # pyright: ignore[reportUnknownVariableType]
        return [plain_value(v) for v in items]
    return value


def error_text(error: BaseException) -> str:
    """How a row's error is written to the ``error`` column."""
    return f"{type(error).__name__}: {error}"


def _json_default(value: Any) -> Any:
    try:
        return jsonable_default(value)
    except TypeError:
        return repr(value)  # a record of the value beats losing the row's output


def _output_array(values: list[Any]) -> Any:
    plain = [plain_value(v) for v in values]
    try:
        return pa.array(plain)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        # Rows disagree on the output's shape: keep every value as JSON text instead.
        return pa.array([None if v is None else json.dumps(v, default=_json_default)
                         for v in plain], type=pa.string())


def result_table(inputs: Table, row_ids: Sequence[int],
                 results: Mapping[int, RowResult]) -> Table:
    """The output rows of one chunk: ``inputs`` plus the result columns, in ``row_ids`` order.

    Args:
        inputs: The chunk's input rows, one per row id.
        row_ids: The rows' ids, in the order of ``inputs``.
        results: Row id -> result; a missing result is written as an error (never dropped).
    """
    outputs: list[Any] = []
    errors: list[str | None] = []
    tokens_in: list[int] = []
    tokens_out: list[int] = []
    latency: list[float] = []
    costs: list[float] = []
    hits: list[int] = []
    for row_id in row_ids:
        result = results.get(row_id)
        if result is None:
            result = RowResult(row_id, error=RuntimeError("no result was produced"))
        outputs.append(result.output if result.error is None else None)
        errors.append(None if result.error is None else error_text(result.error))
        tokens_in.append(result.input_tokens)
        tokens_out.append(result.output_tokens)
        latency.append(result.latency)
        costs.append(result.cost_usd)
        hits.append(result.cache_hits)
    table = inputs
    for name, array in (
        ("output", _output_array(outputs)),
        ("error", pa.array(errors, type=pa.string())),
        ("input_tokens", pa.array(tokens_in, type=pa.int64())),
        ("output_tokens", pa.array(tokens_out, type=pa.int64())),
        ("latency_s", pa.array(latency, type=pa.float64())),
        ("row_id", pa.array(row_ids, type=pa.int64())),
        ("cost_usd", pa.array(costs, type=pa.float64())),
        ("cache_hits", pa.array(hits, type=pa.int64())),
    ):
        table = table.append_column(name, array)
    return table

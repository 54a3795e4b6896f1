"""The Ray-free dataset pieces shared by both executors: chunking, resume ranges, schema."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import BaseModel

from plait.errors import InputError
from plait.execution.results import RowResult
from plait.io import ChunkStats, OutputDir, check_input_columns, iter_chunks, read_output
from plait.io import result_table as make_table


def _batches(n: int, size: int) -> list[pa.RecordBatch]:
    table = pa.table({"x": list(range(n))})
    return table.to_batches(max_chunksize=size)


def test_chunks_align_to_multiples_and_skip_committed() -> None:
    chunks = list(iter_chunks(_batches(100, 7), 25, [(10, 30), (50, 75)]))
    spans = [(c.start, c.end) for c in chunks]
    assert spans == [(0, 10), (30, 50), (75, 100)]
    for c in chunks:
        assert c.table.column("x").to_pylist() == list(range(c.start, c.end))


class Out(BaseModel):
    label: str


def test_result_table_keeps_failed_rows_and_structs(tmp_path: Path) -> None:
    inputs = pa.table({"text": ["a", "b", "c"]})
    results = {0: RowResult(0, Out(label="x"), None, 1, 2, 0.1),
               2: RowResult(2, None, ValueError("boom"))}
    table = make_table(inputs, [0, 1, 2], results)
    assert table.column("output").to_pylist() == [{"label": "x"}, None, None]
    errors = table.column("error").to_pylist()
    assert errors[0] is None and "boom" in errors[2] and "no result" in errors[1]
    out = OutputDir(tmp_path)
    out.prepare("h", "s", "auto")
    out.write_part(0, 3, table, ChunkStats(rows=3, errors=2))
    out.write_part(3, 4, make_table(pa.table({"text": ["d"]}), [3],
                                    {3: RowResult(3, error=ValueError("x"))}), ChunkStats(1, 1))
    assert out.committed_ranges() == [(0, 4)]
    assert out.committed_stats().errors == 3
    assert read_output(tmp_path).column("row_id").to_pylist() == [0, 1, 2, 3]


def test_reserved_column_names_are_refused() -> None:
    with pytest.raises(InputError, match="Rename"):
        check_input_columns(["text", "output"])

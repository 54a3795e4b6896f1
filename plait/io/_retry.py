"""Retrying the failed rows of committed parts: what a resumed run does by default.

A committed part holds every input column of its rows, so its failed rows can run again
without the source. The part is then rewritten in place (same name, atomic replace): rows
that succeeded before are kept as they were, retried rows replace their failed versions, and
the part keeps exactly the rows it had, so the output still holds each input row once.
Used by the Ray dataset workers and by ``plait run --executor local``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plait.execution.contract import Job, Row
from plait.execution.local import LocalExecutor
from plait.execution.results import RowResult
from plait.execution.settings import resolve_settings
from plait.io._arrow import Table, pa, pq
from plait.io._inputs import ColumnMap, chunk_rows, resolve_columns
from plait.io._output import ChunkStats, OutputDir
from plait.io._schema import RESULT_COLUMNS, result_table
from plait.io._source import Chunk
from plait.module import Module
from plait.resources.manager import ResourceManager

__all__ = ["aretry_failed_local", "failed_parts", "failed_rows", "rewrite_part"]


def failed_parts(out: OutputDir) -> list[tuple[int, int, int]]:
    """``(start, end, failed rows)`` of each committed part holding failures (footers only)."""
    found: list[tuple[int, int, int]] = []
    for path in out.part_paths():
        errors = out.part_stats(path).errors
        if errors:
            start, end = _part_range(path)
            found.append((start, end, errors))
    return found


def failed_rows(out: OutputDir, start: int, end: int, mapping: ColumnMap
                ) -> tuple[Table, list[Row]]:
    """The part [start, end) as read, and its failed rows as executor rows (by row id)."""
    table: Any = pq.read_table(out.part_path(start, end)).replace_schema_metadata(None)
    failed = [i for i, e in enumerate(table.column("error").to_pylist()) if e is not None]
    inputs = table.drop_columns(list(RESULT_COLUMNS)).take(failed)
    rows = chunk_rows(Chunk(0, inputs), mapping)
    return table, [(start + failed[i], args, kwargs) for i, args, kwargs in rows]


def rewrite_part(out: OutputDir, start: int, end: int, table: Table,
                 results: Mapping[int, RowResult]) -> ChunkStats:
    """Replace the part's failed rows by ``results`` (row id -> result); commit atomically.

    Returns:
        The rewritten part's counts.
    """
    errors = table.column("error").to_pylist()
    failed = [i for i, e in enumerate(errors) if e is not None]
    kept_mask = pa.array([e is None for e in errors])
    inputs = table.drop_columns(list(RESULT_COLUMNS)).take(failed)
    retried = result_table(inputs, [start + i for i in failed], results)
    merged = pa.concat_tables([table.filter(kept_mask), retried],
                              promote_options="permissive").sort_by("row_id")
    tokens_in = sum(v or 0 for v in merged.column("input_tokens").to_pylist())
    tokens_out = sum(v or 0 for v in merged.column("output_tokens").to_pylist())
    stats = ChunkStats(rows=merged.num_rows,
                       errors=merged.num_rows - merged.column("error").null_count,
                       input_tokens=tokens_in, output_tokens=tokens_out)
    out.write_part(start, end, merged, stats)
    return stats


async def aretry_failed_local(
    pipeline: Module,
    output: str | Path,
    parts: list[tuple[int, int, int]],
    *,
    resources: Any = None,
    columns: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Run the failed rows of ``parts`` again in this process; rewrite those parts.

    Call it after a run that checked ``output`` belongs to ``pipeline`` (``prepare``).

    Returns:
        ``(rows retried, rows still failing)``.
    """
    out = OutputDir(output)
    overrides: dict[str, Any] = {} if resources is None else {"resources": resources}
    settings, _ = resolve_settings(overrides, pipeline.__dict__.get("_bound"))
    retried = still_failing = 0
    manager = ResourceManager(settings.resources)
    try:
        for start, end, _ in parts:
            schema: Any = pq.read_schema(out.part_path(start, end))
            names = [n for n in schema.names if n not in RESULT_COLUMNS]
            mapping = resolve_columns(pipeline, names, columns)
            table, rows = failed_rows(out, start, end, mapping)
            graph = pipeline.graph_for(0, tuple(sorted(mapping)))
            job = Job(module=pipeline, graph=graph, rows=rows, settings=settings,
                      manager=manager)
            results = {r.index: r async for r in LocalExecutor().execute(job)}
            rewrite_part(out, start, end, table, results)
            retried += len(results)
            still_failing += sum(r.error is not None for r in results.values())
    finally:
        await manager.aclose()
    return retried, still_failing


def _part_range(path: Path) -> tuple[int, int]:
    _, start, end = path.stem.split("-")
    return int(start), int(end)


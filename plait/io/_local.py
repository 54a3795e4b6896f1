"""Dataset runs in this process: plait's local executor, committing Parquet parts per chunk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import BudgetExceededError
from plait.events import EventSink
from plait.execution.checkpointing import pipeline_hash
from plait.execution.contract import Job, Row
from plait.execution.local import LocalExecutor
from plait.execution.results import RowResult
from plait.execution.settings import resolve_settings
from plait.io._inputs import chunk_rows, resolve_columns
from plait.io._output import ChunkStats, OutputDir, ResumeMode
from plait.io._retry import aretry_failed_local, failed_parts
from plait.io._schema import check_input_columns, result_table
from plait.io._source import Chunk, iter_chunks, open_source
from plait.io._summary import DatasetSummary
from plait.module import Module
from plait.profiling.progress import make_progress
from plait.resources.manager import ResourceManager

__all__ = ["arun_dataset_local", "chunk_result", "run_dataset_local"]


def chunk_result(chunk: Chunk, results: Mapping[int, RowResult], out: OutputDir) -> ChunkStats:
    """Write one chunk's part file and return its counts (shared with the Ray workers)."""
    row_ids = list(range(chunk.start, chunk.end))
    stats = ChunkStats(rows=len(row_ids))
    for r in results.values():
        stats.errors += r.error is not None
        stats.input_tokens += r.input_tokens
        stats.output_tokens += r.output_tokens
    stats.errors += len(row_ids) - len(results)
    out.write_part(chunk.start, chunk.end, result_table(chunk.table, row_ids, results), stats)
    return stats


@dataclass
class _Open:
    chunk: Chunk
    results: dict[int, RowResult] = field(default_factory=dict[int, RowResult])


def run_dataset_local(pipeline: Module, source: Any, output: str | Path, **options: Any
                      ) -> DatasetSummary:
    """Synchronous ``arun_dataset_local`` (runs its own event loop)."""
    return asyncio.run(arun_dataset_local(pipeline, source, output, **options))


async def arun_dataset_local(
    pipeline: Module,
    source: Any,
    output: str | Path,
    *,
    resources: Any = None,
    columns: Mapping[str, str] | None = None,
    checkpoint: bool = True,
    resume: ResumeMode = "auto",
    rows_per_chunk: int = 1000,
    progress: bool | None = None,
    max_inflight: int | None = None,
    events: EventSink | None = None,
    cache: Any = None,
    budget_usd: float | None = None,
    retry_failed: bool = True,
) -> DatasetSummary:
    """Run ``pipeline`` over every row of ``source``, writing a Parquet dataset to ``output``.

    Rows are pipelined across chunks; a chunk's part file is committed once all its rows are
    done. See :mod:`plait.io` for the output schema and resume rules. ``cache`` and
    ``budget_usd`` are the ``ExecutionSettings`` of those names; rows a budget did not start
    are not committed, so a rerun with the same output runs them. A rerun also runs the rows
    earlier runs committed as failed again (``retry_failed=False`` keeps them).

    Example:
        >>> summary = await arun_dataset_local(pipeline, "in.parquet", "out/",
        ...                                    resources="resources.yaml")  # doctest: +SKIP
    """
    started = time.perf_counter()
    overrides: dict[str, Any] = {"max_inflight": max_inflight, "cache": cache,
                                 "budget_usd": budget_usd}
    if resources is not None:
        overrides["resources"] = resources
    settings, _ = resolve_settings(overrides, pipeline.__dict__.get("_bound"))
    src = open_source(source)
    check_input_columns(src.column_names())
    mapping = resolve_columns(pipeline, src.column_names(), columns)
    graph = pipeline.graph_for(0, tuple(sorted(mapping)))
    out = OutputDir(output)
    out.prepare(pipeline_hash(pipeline, graph), src.description,
                resume if checkpoint else "fresh", total=src.total)
    committed = out.committed_ranges()
    earlier_failures = failed_parts(out) if retry_failed else []
    open_chunks: dict[int, _Open] = {}
    owner: dict[int, int] = {}

    def rows() -> Iterator[Row]:
        for chunk in iter_chunks(src.batches(rows_per_chunk), rows_per_chunk, committed):
            open_chunks[chunk.start] = _Open(chunk)
            for row in chunk_rows(chunk, mapping):
                owner[row[0]] = chunk.start
                yield row

    manager = ResourceManager(settings.resources, events=events)
    job = Job(module=pipeline, graph=graph, rows=rows(), settings=settings, events=events,
              manager=manager)
    ran = 0
    bar = make_progress(src.total, progress, f"{type(pipeline).__name__} rows")
    bar.update(sum(hi - lo for lo, hi in committed))
    executor = LocalExecutor()
    try:
        async for result in executor.execute(job):
            if isinstance(result.error, BudgetExceededError):
                continue  # not started: left uncommitted for the next run
            ran += 1
            bar.update(failed=result.error is not None, cost_usd=result.cost_usd)
            state = open_chunks[owner.pop(result.index)]
            state.results[result.index] = result
            if len(state.results) == state.chunk.table.num_rows:
                del open_chunks[state.chunk.start]
                await asyncio.to_thread(chunk_result, state.chunk, state.results, out)
        cost = sum(float(s.get("cost", 0.0)) for s in manager.stats().values())
    finally:
        bar.close()
        await manager.aclose()
    if earlier_failures:
        retried, _ = await aretry_failed_local(pipeline, out.path, earlier_failures,
                                               resources=resources, columns=columns)
        ran += retried
    total = out.committed_stats()
    budget = executor.budget.report() if executor.budget is not None else None
    return DatasetSummary(total.rows, total.errors, total.input_tokens, total.output_tokens,
                          cost, time.perf_counter() - started, out.path, ran, budget)

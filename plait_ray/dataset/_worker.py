"""Dataset worker actors: run a chunk of rows and commit its Parquet part themselves.

A worker writes the part file it produced, so results never travel back through the driver
(the driver's memory stays flat) and a chunk is committed exactly when its rows are paid for.
Before running a chunk the worker checks whether its part already exists (the chunk was
committed by a worker that died before reporting), so a redone chunk costs nothing twice.

A resumed run retries the failed rows of a committed part (``retry_part``): the part holds
every input column, so only its failed rows run again and the part is rewritten in place,
atomically, with the rows that succeeded before kept as they were.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plait.errors import ConfigError
from plait.events import Event, EventSink
from plait.execution.contract import Row
from plait.execution.results import RowResult
from plait.io import Chunk, ChunkStats, ColumnMap, OutputDir, chunk_result, chunk_rows
from plait.io._retry import failed_rows, rewrite_part
from plait_ray._env_file import load_env_file
from plait_ray.limits import leased_permit_factory
from plait_ray.limits.caps import call_cap_permits
from plait_ray.metrics import RayMetricsSink
from plait_ray.replica_client import replica_client_factory
from plait_ray.runtime import EventCollector, RuntimeOptions, WorkerRuntime

if TYPE_CHECKING:
    from plait.cache import ResponseCache
    from plait.graph import InferenceGraph
    from plait.module import Module
    from plait.resources.config import EndpointConfig, ResourceConfig
    from plait.resources.manager import PermitFactory
    from plait.resources.permits import PermitSource

__all__ = ["ChunkDone", "ClosingPermits", "DatasetPayload", "DatasetWorker",
           "WorkerImportError"]


_pickler: Any = importlib.import_module("ray.cloudpickle")


class WorkerImportError(ConfigError):
    """Code the pipeline calls cannot be imported on the Ray worker."""


@dataclass
class ChunkDone:
    """A committed chunk's counts, and its events when the run is profiled."""

    stats: ChunkStats
    events: list[Event] = field(default_factory=list[Event])


@dataclass(frozen=True)
class DatasetPayload:
    """What every worker of one dataset run needs (put in the object store once).

    Attributes:
        module: The pipeline (pickled without bound settings).
        graph: Its traced graph.
        resources: Endpoints (inline keys are not pickled; workers read key env vars).
        mapping: forward() argument -> source column.
        output: The output directory (shared storage all workers can write).
        options: Per-worker concurrency settings.
        workers: Workers in the run.
        namespace: Namespace of the cluster-wide limiter actors (from the driver).
        metrics: Export Ray metrics from the workers.
        collect_events: Ship each chunk's events back (for a Chrome trace).
        env_file: A NAME=VALUE file each worker loads into its environment at start.
        cache: The shared response cache, or None.
        cap: The run's global ``max_concurrent``, leased from ``caps`` under ``cap_key``
            (exact over all workers, ``plait_ray.limits.caps``), or None.
        caps: The limiter actor hosting the cap when ``cap`` is set.
        cap_key: The run's key for its cap.
    """

    module: Module
    graph: InferenceGraph
    resources: ResourceConfig
    mapping: ColumnMap
    output: Path
    options: RuntimeOptions
    workers: int
    namespace: str = "plait"
    metrics: bool = True
    collect_events: bool = False
    env_file: str | None = None
    cache: ResponseCache | None = None
    cap: int | None = None
    caps: Any = None
    cap_key: str = ""


class ClosingPermits:
    """A permit factory that remembers its sources, so closing ends their background syncs.

    A leased permit source keeps a sync task running; left pending when the actor exits, it
    prints "Task was destroyed but it is pending" and "Event loop is closed".
    """

    def __init__(self, factory: PermitFactory) -> None:
        self._factory = factory
        self._sources: list[PermitSource] = []

    def __call__(self, alias: str, config: EndpointConfig) -> PermitSource:
        source = self._factory(alias, config)
        self._sources.append(source)
        return source

    async def aclose(self) -> None:
        """Close every source made so far (ending its lease and sync task)."""
        sources, self._sources = self._sources, []
        for source in sources:
            close: Any = getattr(source, "aclose", None)
            if close is not None:
                await close()


class DatasetWorker:
    """The body of a dataset worker actor (an async actor: chunks overlap in one loop)."""

    def __init__(self, payload_bytes: bytes, index: int) -> None:
        self._load_error: WorkerImportError | None = None
        try:
            payload: DatasetPayload = _pickler.loads(payload_bytes)
        except ModuleNotFoundError as exc:
            self._load_error = WorkerImportError(_import_message(exc, "the pipeline uses"))
            return
        if payload.env_file:
            load_env_file(payload.env_file)  # before the runtime reads the keys
        self._metrics = (RayMetricsSink(type(payload.module).__name__)
                         if payload.metrics else None)
        self._collector = EventCollector() if payload.collect_events else None
        self._permits = ClosingPermits(leased_permit_factory(payload.namespace))
        cap = None
        if payload.cap is not None and payload.caps is not None:
            cap = call_cap_permits(payload.caps, payload.cap_key, payload.cap)
        self._runtime = WorkerRuntime(payload.module, payload.graph, payload.resources,
                                      options=payload.options, events=self._sink(),
                                      permit_factory=self._permits,
                                      client_factory=replica_client_factory(),
                                      global_permits=cap, cache=payload.cache)
        self._mapping = payload.mapping
        self._out = OutputDir(payload.output)
        self._rows_done = [0, 0]  # succeeded, failed
        self._spent = 0.0  # USD of the rows finished so far (the driver's progress bar)

    def _sink(self) -> EventSink | None:
        metrics, collector = self._metrics, self._collector
        if metrics is None or collector is None:
            return metrics or collector

        def both(event: Event) -> None:
            metrics(event)
            collector(event)

        return both

    async def ready(self) -> bool:
        """Check the endpoints' keys in this process; True when the worker can run rows.

        Raises:
            MissingAPIKeyError: This worker's environment lacks a key.
            WorkerImportError: The pipeline uses a module this worker cannot import.
        """
        if self._load_error is not None:
            raise self._load_error
        await self._runtime.start()
        return True

    async def run_chunk(self, chunk: Chunk) -> ChunkDone:
        """Run the chunk's rows and commit its part; row failures are written, not raised."""
        if await asyncio.to_thread(self._out.is_committed, chunk.start, chunk.end):
            path = self._out.part_path(chunk.start, chunk.end)
            stats = await asyncio.to_thread(self._out.part_stats, path)
            stats.skipped = True
            return ChunkDone(stats)
        results = await self._run(chunk_rows(chunk, self._mapping))
        by_id = {r.index: r for r in results}
        stats = await asyncio.to_thread(chunk_result, chunk, by_id, self._out)
        if self._metrics is not None:
            self._metrics.rows_finished(stats.rows - stats.errors, stats.errors)
        # Events of overlapping chunks are drained together; the trace only needs them all.
        return ChunkDone(stats, self._collector.drain() if self._collector is not None else [])

    async def retry_part(self, start: int, end: int) -> ChunkDone:
        """Run the failed rows of the committed part [start, end) again; rewrite the part.

        Returns:
            Counts of the rows run again (not of the whole part).
        """
        table, rows = await asyncio.to_thread(failed_rows, self._out, start, end,
                                              self._mapping)
        if not rows:
            return ChunkDone(ChunkStats(skipped=True))
        results = await self._run(rows)
        await asyncio.to_thread(rewrite_part, self._out, start, end, table,
                                {r.index: r for r in results})
        errors = sum(r.error is not None for r in results)
        if self._metrics is not None:
            self._metrics.rows_finished(len(results) - errors, errors)
        events = self._collector.drain() if self._collector is not None else []
        return ChunkDone(ChunkStats(rows=len(results), errors=errors), events)

    async def _run(self, rows: Sequence[Row]) -> list[RowResult]:
        """Run rows concurrently, counting each as it finishes (for the driver's progress)."""

        async def one(row: Row) -> RowResult:
            result = await self._runtime.run_row(row)
            if result.error is not None:
                result.error = _explain_import_error(result.error)
            self._rows_done[result.error is not None] += 1
            self._spent += result.cost_usd
            return result

        return list(await asyncio.gather(*(one(r) for r in rows)))

    def rows_done(self) -> tuple[int, int, float]:
        """(succeeded, failed, USD spent) of the rows finished so far (the driver's bar)."""
        return self._rows_done[0], self._rows_done[1], self._spent

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-alias request statistics of this worker (for the run's cost)."""
        if self._metrics is not None:
            self._metrics.flush()
        return self._runtime.stats()

    async def close(self) -> dict[str, dict[str, Any]]:
        """Flush metrics, close the clients and return the final statistics."""
        stats = self.stats()
        await self._runtime.aclose()
        await self._permits.aclose()
        return stats


def _explain_import_error(error: BaseException) -> BaseException:
    """A row's ``ModuleNotFoundError`` (its own or its cause's), with where and the fix."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ModuleNotFoundError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return error
    return WorkerImportError(_import_message(cause, "the pipeline calls"))


def _import_message(exc: ModuleNotFoundError, what: str) -> str:
    name = exc.name or "module"
    return (
        f"{exc} on the Ray worker: {what} code from a module the workers cannot import. "
        f"Ship it with the run: executor_options={{'runtime_env': {{'py_modules': "
        f"['path/to/{name}']}}}} (CLI: --runtime-env), or "
        f"ray.cloudpickle.register_pickle_by_value({name}) before the run (`plait run` does "
        "this for the modules next to the pipeline file), or install it on the nodes.")

"""The Ray executor: the same pipeline, rows spread over Ray workers.

Two lowerings, chosen per call:

- **Batches** go in chunks of rows to warm ``RowWorker`` actors (``plait:worker:<Class>:<i>``),
  each running the same asyncio interpreter as a local run. On this machine Ray manages about
  1,000 tasks/s and 1,500 actor calls/s, while one worker alone makes thousands of LLM calls
  per second against a fast endpoint: one Ray call per LLM call would cap throughput, one
  per chunk keeps Ray's cost per row at ``~0.7 ms / rows_per_chunk``.
- **A single call** is interpreted on the driver (every node once), and each LLM call is a
  call named ``plait:<module path>`` on a warm worker (``plait_ray.lowering``), so
  independent branches run on different workers and the dashboard shows the pipeline's
  structure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import math
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from plait.cache import MeteredRouter
from plait.errors import ConfigError
from plait.events import Event
from plait.execution.contract import Job, Row
from plait.execution.results import RowResult
from plait.execution.settings import ResolvedSettings
from plait.graph import InferenceGraph
from plait_ray._ray_init import ensure_ray, ray_api
from plait_ray.cluster_resources import hold_cluster_resources
from plait_ray.limits.caps import cap_holder
from plait_ray.lowering import NodeCallRouter, run_single_row
from plait_ray.runtime import RuntimeOptions, merge_stats
from plait_ray.worker import (
    ChunkResult,
    JobPayload,
    WorkerLostError,
    worker_key_hint,
    worker_pool,
)

__all__ = ["OPTIONS", "ChunkPlan", "RayExecutor", "plan_chunks"]

OPTIONS = {
    "address": "Ray address to connect to (default: RAY_ADDRESS, a running local Ray, or a "
               "new local Ray)",
    "namespace": "Ray namespace, when plait initializes Ray",
    "runtime_env": "Ray runtime_env, when plait initializes Ray",
    "num_cpus": "CPUs of a local Ray started by plait",
    "workers": "row worker actors for batches (default: the cluster's CPUs minus one, 1..8)",
    "rows_per_chunk": "rows per Ray call to a worker (default: adaptive, 1..16)",
    "single_call": "'tasks' (each LLM call a named call on a worker, default) or 'rows' "
                   "(the whole row on one worker actor)",
    "limits_namespace": "Ray namespace of the cluster-wide limiter actors (default: derived "
                        "from the endpoints' limits)",
    "env_vars": "environment variables of the row worker actors (their runtime_env; values "
                "are shown in plain text in Ray's runtime_env_agent logs and dashboard)",
    "env_file": "path of a NAME=VALUE file each row worker reads at start (shared storage or "
                "a mounted secret): key values never travel through Ray",
}

MAX_ROWS_PER_CHUNK = 16
"""Past ~16 rows a chunk's Ray cost per row is already small (one ~0.7 ms actor call per
chunk), while larger chunks pin more rows to one worker (worse balance, and a lost worker loses
more rows). Chunks are Ray streaming generators that return rows as they finish, so chunk size
does not delay streaming; under load, rows finishing together travel in one message."""

_UNLOAD_TIMEOUT = 30.0


@dataclass(frozen=True)
class ChunkPlan:
    """How a batch is spread over worker actors.

    Attributes:
        workers: Row worker actors used.
        rows_per_chunk: Rows per Ray call.
        chunks_per_worker: Chunks kept in flight per worker.
    """

    workers: int
    rows_per_chunk: int
    chunks_per_worker: int


def plan_chunks(settings: ResolvedSettings, graph: InferenceGraph, total: int | None,
                cluster_cpus: float) -> ChunkPlan:
    """Choose workers and chunk size for a batch.

    Each worker gets ``inflight_limit / workers`` rows in flight, split into at least four
    chunks so results stream back in small steps. Limits are leased from the cluster-wide
    limiter actors, so the worker count does not change them.
    """
    options = settings.executor_options
    # One CPU is left to the driver and Ray's own processes: on a small cluster a worker
    # process per CPU only adds per-process overhead (each worker alone handles thousands of
    # LLM calls per second).
    workers = _positive(options, "workers") or max(1, min(int(cluster_cpus) - 1, 8))
    inflight = settings.inflight_limit()
    if total is not None:
        workers = min(workers, max(1, total))
    per_worker = max(1, math.ceil(inflight / workers))
    rows = _positive(options, "rows_per_chunk") or max(1, min(MAX_ROWS_PER_CHUNK,
                                                               per_worker // 4))
    if total is not None and "rows_per_chunk" not in options:
        rows = min(rows, max(1, math.ceil(total / workers)))
    return ChunkPlan(workers, rows, max(1, math.ceil(per_worker / rows)))


def _check_env_options(options: Mapping[str, Any]) -> None:
    env_vars = options.get("env_vars")
    if env_vars is not None and (not isinstance(env_vars, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str)
            for k, v in env_vars.items())):  # pyright: ignore[reportUnknownVariableType]
        raise ConfigError("executor_options['env_vars'] must be a dict of str to str, e.g. "
                          "{'OPENAI_API_KEY': os.environ['OPENAI_API_KEY']}.")
    env_file = options.get("env_file")
    if env_file is not None and not isinstance(env_file, str | os.PathLike):
        raise ConfigError(f"executor_options['env_file'] must be a path, got {env_file!r}.")


def _env_file(options: Mapping[str, Any]) -> str | None:
    path: str | os.PathLike[str] | None = options.get("env_file")
    return None if path is None else os.fspath(path)


def _positive(options: Mapping[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"executor_options[{key!r}] must be an integer >= 1, got {value!r}.")
    return value


class RayExecutor:
    """Runs a pipeline's rows on a Ray cluster; same results and errors as ``LocalExecutor``.

    Ray is used as already initialized, or initialized by plait (see ``plait_ray._ray_init``:
    ``executor_options={"address": ...}``, else ``RAY_ADDRESS`` / a running local Ray, else a
    new local Ray). Workers read API keys from each endpoint's ``api_key_env`` in their own
    environment; keys given inline are never shipped. Give workers their keys with
    ``executor_options={"env_file": PATH}`` (each worker reads ``NAME=VALUE`` lines from a
    file on shared storage; values never travel through Ray) or ``{"env_vars": {...}}`` (the
    workers' ``runtime_env``; shown in plain text in Ray's logs and dashboard).

    Example:
        >>> pipeline = Pipeline().bind(resources=config, executor="ray")
        >>> outputs = await pipeline(["a", "b", "c"])   # rows in chunks on worker actors
        >>> answer = await pipeline("a")                # LLM nodes as Ray tasks
        >>> async for r in run(pipeline, rows, executor="ray",
        ...                    executor_options={"workers": 4, "rows_per_chunk": 8}):
        ...     print(r.index, r.ok)
    """

    name = "ray"

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, Any]] = {}
        self._events: list[Event] = []
        self._cache_hits: dict[str, int] = {}  # a single call's, counted on the driver

    def endpoint_stats(self) -> dict[str, dict[str, Any]]:
        """Per-alias statistics of the last job, merged over workers (see ``merge_stats``)."""
        return self._stats

    def collected_events(self) -> list[Event]:
        """Profiling events recorded in workers during the last job."""
        return self._events

    async def execute(self, job: Job) -> AsyncIterator[RowResult]:
        """Yield a RowResult per row as rows finish (see ``Executor``).

        Raises:
            ConfigError: Unknown or invalid ``executor_options``.
            RayConnectionError: Ray cannot be reached.
            MissingAPIKeyError: A worker's environment lacks an endpoint's key.
        """
        options = job.settings.executor_options
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"Unknown executor_options {unknown} for executor 'ray'. "
                              f"Valid: {OPTIONS}.")
        _check_env_options(options)
        ensure_ray(options)
        namespace = hold_cluster_resources(job.settings.resources, job.graph.aliases(), options)
        single = isinstance(job.rows, list) and len(job.rows) == 1  # pyright: ignore[reportUnknownArgumentType]
        self._events = []
        self._cache_hits = {}
        if single and options.get("single_call", "tasks") == "tasks":
            async for result in self._run_single(job, namespace):
                yield result
            return
        async for result in self._run_chunks(job, namespace):
            yield result

    async def _run_single(self, job: Job, namespace: str) -> AsyncIterator[RowResult]:
        cpus = float(ray_api.cluster_resources().get("CPU", 1))
        calls = max(1, len(job.graph.llm_nodes()))
        workers = min(plan_chunks(job.settings, job.graph, None, cpus).workers, calls)
        # The driver's metered router holds the global cap and the cache (every call of
        # the row passes through it); workers only send.
        options = RuntimeOptions(max_inflight=1, record=False)
        settings = job.settings
        async with self._loaded(job, namespace, workers, options,
                                cache=False) as (handles, job_id):
            names = {n.id: n.target for n in job.graph.llm_nodes()}
            router = NodeCallRouter(handles, job_id, names, self._events)
            meter = MeteredRouter(router, settings.resources, cache=settings.cache,
                                  events=job.events, max_concurrent=settings.max_concurrent)
            try:
                yield await run_single_row(job, router, meter)
            finally:
                self._cache_hits = dict(meter.hits_by_alias) if meter.cache is not None else {}

    async def _run_chunks(self, job: Job, namespace: str) -> AsyncIterator[RowResult]:
        total = len(job.rows) if isinstance(job.rows, list) else None  # pyright: ignore[reportUnknownArgumentType]
        cpus = float(ray_api.cluster_resources().get("CPU", 1))
        plan = plan_chunks(job.settings, job.graph, total, cpus)
        # The global cap is leased from one limiter for the call (exact), not split.
        options = dataclasses.replace(RuntimeOptions.from_settings(
            job.settings, record=job.record, workers=plan.workers), max_concurrent=None)
        cap = job.settings.max_concurrent
        async with self._loaded(job, namespace, plan.workers, options,
                                cap) as (handles, job_id):
            async for result in _Dispatch(job, plan, handles, job_id, self._events).run():
                yield result

    @contextlib.asynccontextmanager
    async def _loaded(self, job: Job, namespace: str, workers: int, options: RuntimeOptions,
                      cap: int | None = None, *, cache: bool = True
                      ) -> AsyncGenerator[tuple[list[Any], str]]:
        """``workers`` warm row workers with the job loaded; unloaded (stats kept) on exit.

        With ``cap``, the workers lease the call's global ``max_concurrent`` from the
        limiter actor of the call's first alias (``plait_ray.limits.caps``); the cap is made
        there on the first lease and dropped when the call ends.
        """
        exec_options = job.settings.executor_options
        pool = worker_pool(type(job.module).__name__, exec_options.get("env_vars"))
        handles = pool.ensure(workers)
        job_id = uuid.uuid4().hex
        caps = None
        if cap is not None:
            caps = cap_holder(job.graph.aliases(), job.settings.resources, namespace)
        payload = JobPayload(job.module, job.graph, job.settings.resources, options, workers,
                             namespace, job.events is not None, cap, caps,
                             cache=job.settings.cache if cache else None,
                             env_file=_env_file(exec_options))
        payload_ref = ray_api.put(payload)  # shipped once per worker, not per chunk
        try:
            await _load(handles, job_id, payload_ref)
            yield handles, job_id
        finally:
            parts = await _unload(handles, job_id, pool)
            self._stats = merge_stats(parts)
            for alias, hits in self._cache_hits.items():
                self._stats.setdefault(alias, {})["cache_hits"] = hits
            if caps is not None:
                caps.cap_close.remote(job_id)


async def _load(handles: list[Any], job_id: str, payload_ref: Any) -> None:
    refs = [h.load.remote(job_id, payload_ref, i) for i, h in enumerate(handles)]
    try:
        await asyncio.gather(*refs)
    except ray_api.exceptions.RayTaskError as exc:
        raise _cause(exc) from None


def _cause(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return worker_key_hint(cause) if isinstance(cause, BaseException) else exc



async def _unload(handles: list[Any], job_id: str, pool: Any) -> list[dict[str, dict[str, Any]]]:
    futures = [asyncio.wrap_future(h.unload.remote(job_id).future()) for h in handles]
    await asyncio.wait(futures, timeout=_UNLOAD_TIMEOUT)
    parts: list[dict[str, dict[str, Any]]] = []
    for handle, future in zip(handles, futures, strict=True):
        if future.done() and future.exception() is None:
            parts.append(future.result())
            continue
        # Dead or stuck: a fresh worker replaces it rather than leaking a job's clients.
        future.cancel()
        pool.discard(handle)
        ray_api.kill(handle, no_restart=True)
    return parts


class _Dispatch:
    """Keeps each worker's chunks in flight and turns streamed chunk parts into RowResults.

    A row whose worker died before it finished is run again, once, on a surviving worker:
    nothing of it reached the driver, so nothing is reported twice. If that worker dies too,
    the row's result is a ``WorkerLostError``.
    """

    def __init__(self, job: Job, plan: ChunkPlan, handles: list[Any], job_id: str,
                 events: list[Event]) -> None:
        self.job = job
        self.plan = plan
        self.handles = handles
        self.job_id = job_id
        self.events = events
        self.load = [0] * len(handles)
        self.dead: set[int] = set()
        self.retry: list[Row] = []  # rows of dead workers, to run again
        self.retried: set[int] = set()
        self.streams: dict[asyncio.Task[None], Any] = {}
        self.parts: asyncio.Queue[tuple[int, list[RowResult] | None]] = asyncio.Queue()

    def _submit(self, worker: int, chunk: list[Row]) -> None:
        job = self.job
        presets: dict[int, Any] = {}
        if job.presets is not None:
            for index, _, _ in chunk:
                preset = job.presets(index)
                if preset:
                    presets[index] = preset
        stream = self.handles[worker].run_chunk.options(num_returns="streaming").remote(
            self.job_id, chunk, presets, job.on_node is not None)
        task = asyncio.create_task(self._consume(worker, chunk, stream))
        self.streams[task] = stream
        self.load[worker] += 1

    async def _consume(self, worker: int, chunk: list[Row], stream: Any) -> None:
        unreported = {index for index, _, _ in chunk}
        try:
            async for ref in stream:
                part: ChunkResult = await ref
                hook = self.job.on_node
                if hook is not None:
                    for row, node_id, value, usage in part.nodes:
                        hook(row, node_id, value, usage)
                self.events.extend(part.events)
                unreported.difference_update(r.index for r in part.results)
                self.parts.put_nowait((worker, part.results))
        except (ray_api.exceptions.RayActorError, ray_api.exceptions.ObjectLostError) as exc:
            # The actor died, or its node did while holding a chunk result: re-run the rest.
            self.dead.add(worker)
            again = [r for r in chunk if r[0] in unreported and r[0] not in self.retried]
            self.retry.extend(again)
            self.retried.update(r[0] for r in again)
            unreported.difference_update(r[0] for r in again)
            lost = WorkerLostError(
                f"The Ray worker running this row died ({type(exc).__name__}), also on its "
                "rerun; the row was not finished. Rerun it (with checkpoint_dir= set, finished "
                "rows are kept).")
            self.parts.put_nowait((worker, [RowResult(i, error=lost) for i in unreported]))
        except ray_api.exceptions.RayTaskError as exc:
            cause = _cause(exc)
            self.parts.put_nowait((worker, [RowResult(i, error=cause) for i in unreported]))
        except Exception as exc:  # any other failure still reports every row of the chunk
            self.parts.put_nowait((worker, [RowResult(i, error=exc) for i in unreported]))
        finally:
            self.parts.put_nowait((worker, None))  # the chunk is over

    def _fill(self, rows: Iterator[Row]) -> bool:
        """Submit chunks while a worker has room; False once the rows (and reruns) are out."""
        while True:
            alive = [w for w in range(len(self.handles)) if w not in self.dead]
            if not alive:
                raise WorkerLostError("Every Ray row worker died; check the Ray logs "
                                      "(out of memory? node lost?) and rerun.")
            worker = min(alive, key=self.load.__getitem__)
            if self.load[worker] >= self.plan.chunks_per_worker:
                return True
            size = self.plan.rows_per_chunk
            chunk, self.retry = self.retry[:size], self.retry[size:]
            chunk.extend(itertools.islice(rows, size - len(chunk)))
            if not chunk:
                return False
            self._submit(worker, chunk)

    async def run(self) -> AsyncIterator[RowResult]:
        rows = iter(self.job.rows)
        more = True
        chunks = 0
        try:
            while True:
                if more or self.retry:
                    before = sum(self.load)
                    more = self._fill(rows)
                    chunks += sum(self.load) - before
                if chunks == 0 and not more:
                    return
                worker, results = await self.parts.get()
                if results is None:
                    self.load[worker] -= 1
                    chunks -= 1
                    continue
                for result in results:
                    yield result
        finally:
            for task, stream in self.streams.items():
                if not task.done():
                    ray_api.cancel(stream)
                    task.cancel()
            if self.streams:
                await asyncio.gather(*self.streams, return_exceptions=True)

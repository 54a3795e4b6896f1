"""Row worker actors: a ``WorkerRuntime`` per job inside a long-lived async Ray actor.

A ``RowWorker`` is an async actor (one asyncio loop, many chunks at once). The driver ships a
job's module, graph and resources to each worker once (``load``), then sends chunks of rows
(``run_chunk``) that name the job; ``unload`` closes the job's clients and returns its stats.

Workers are kept warm per pipeline class in a ``WorkerPool`` and reused by later calls,
because starting an actor (a new Python process importing plait) costs about a second while
a call to a warm one costs about a millisecond. They are owned by the driver, so they end
with it (or with ``ray.shutdown()``); ``shutdown_workers()`` ends them earlier.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray

from plait.clients.base import LLMRequest, Usage
from plait.errors import MissingAPIKeyError, PlaitError
from plait.events import Event
from plait.execution.contract import Row
from plait.execution.results import RowResult
from plait_ray._env_file import load_env_file
from plait_ray._ray_init import ray_api, ray_session_key
from plait_ray.limits import leased_permit_factory
from plait_ray.limits.caps import call_cap_permits
from plait_ray.replica_client import replica_client_factory
from plait_ray.runtime import (
    EventCollector,
    NodeRecord,
    RuntimeOptions,
    WorkerRuntime,
    portable_error,
)

if TYPE_CHECKING:
    from plait.graph import InferenceGraph
    from plait.module import Module
    from plait.resources.config import ResourceConfig

__all__ = [
    "WORKER_CPUS",
    "ChunkResult",
    "JobPayload",
    "NodeOutcome",
    "RowWorker",
    "WorkerLostError",
    "WorkerPool",
    "shutdown_workers",
    "worker_key_hint",
    "worker_pool",
]

WORKER_CPUS = 0.1
"""CPU reservation of a row worker: it mostly waits on HTTP, so warm workers must not starve
the cluster of CPUs for other tasks."""


STREAM_COALESCE_S = 0.005
"""Rows finishing within this long of a finished row travel to the driver with it."""


class WorkerLostError(PlaitError):
    """The Ray worker running a row died (node lost, out of memory, killed)."""


@dataclass(frozen=True)
class JobPayload:
    """What a worker needs to run a job's rows; put in the object store once per job.

    Attributes:
        module: The root module (pickles without bound settings).
        graph: The traced graph.
        resources: The endpoints (pickle without inline API keys).
        options: Per-worker concurrency and recording settings.
        workers: Workers sharing the job.
        namespace: Namespace of the cluster-wide limiter actors to lease permits from.
        collect_events: Ship profiling events back with each chunk.
        cap: The call's global ``max_concurrent``, leased from ``caps`` under the job's id
            (exact over all workers), or None.
        caps: The limiter actor hosting the cap (``plait_ray.limits.caps``) when ``cap``
            is set.
        cache: The shared response cache, or None.
        env_file: Path of a ``NAME=VALUE`` file the worker loads into its environment
            before building the job (``executor_options["env_file"]``): only the path
            travels through Ray, never the values.
    """

    module: Module
    graph: InferenceGraph
    resources: ResourceConfig
    options: RuntimeOptions
    workers: int
    namespace: str
    collect_events: bool = False
    cap: int | None = None
    caps: Any = None
    cache: Any = None  # plait.cache.ResponseCache (a shared directory), or None
    env_file: str | None = None  # NAME=VALUE lines the worker reads itself (keys stay local)


@dataclass
class ChunkResult:
    """A finished chunk: its rows' results, LLM node values (checkpoints) and events."""

    results: list[RowResult]
    nodes: list[NodeRecord] = field(default_factory=list[NodeRecord])
    events: list[Event] = field(default_factory=list[Event])


@dataclass
class NodeOutcome:
    """One LLM call of a single-call job (errors are returned, not raised: clean logs)."""

    value: Any = None
    error: BaseException | None = None
    usage: Usage = field(default_factory=Usage)
    events: list[Event] = field(default_factory=list[Event])


def worker_key_hint(exc: BaseException) -> BaseException:
    """Add to a worker's ``MissingAPIKeyError`` that the key must be in the *worker's* env."""
    if isinstance(exc, MissingAPIKeyError) and not getattr(exc, "_ray_hint", False):
        exc.args = (f"{exc.args[0]} (in the Ray worker process: keys are never shipped to "
                    f"workers; give it to them with executor_options={{'env_file': PATH}} (a "
                    f"NAME=VALUE file each worker reads) or {{'env_vars': {{'{exc.env_var}': "
                    "...}} (shown in Ray's logs), or set it in the cluster's environment)",)
        exc._ray_hint = True  # pyright: ignore[reportAttributeAccessIssue]
    return exc


class _LoadedJob:
    def __init__(self, job_id: str, payload: JobPayload) -> None:
        self.collector = EventCollector() if payload.collect_events else None
        cap = None
        if payload.cap is not None and payload.caps is not None:
            cap = call_cap_permits(payload.caps, job_id, payload.cap)
        self.runtime = WorkerRuntime(payload.module, payload.graph, payload.resources,
                                     options=payload.options, events=self.collector,
                                     permit_factory=leased_permit_factory(payload.namespace),
                                     client_factory=replica_client_factory(),
                                     global_permits=cap, cache=payload.cache)


class RowWorker:
    """Runs chunks of rows of loaded jobs (the body of the ``plait:worker:...`` actors)."""

    def __init__(self) -> None:
        self._jobs: dict[str, _LoadedJob] = {}

    async def load(self, job_id: str, payload: JobPayload, index: int) -> None:
        """Build the job's runtime and check its credentials here (keys come from env).

        Raises:
            MissingAPIKeyError: The worker's environment lacks an endpoint's key.
            ConfigError: ``env_file`` cannot be read on this node or is malformed.
        """
        if payload.env_file is not None:
            load_env_file(payload.env_file)
        job = _LoadedJob(job_id, payload)
        try:
            await job.runtime.start()
        except BaseException:
            await job.runtime.aclose()
            raise
        self._jobs[job_id] = job

    async def run_chunk(self, job_id: str, rows: Sequence[Row],
                        presets: Mapping[int, Mapping[str, Any]], want_nodes: bool
                        ) -> AsyncIterator[ChunkResult]:
        """Run ``rows`` of a loaded job, yielding the rows finished since the last yield.

        A Ray streaming generator: a finished row is not held back by a slow row of the same
        chunk, and under load rows that finish together travel together. Row failures are in
        the results, never raised; cancelling the generator cancels the unfinished rows.
        """
        job = self._jobs[job_id]
        nodes: list[NodeRecord] = []

        def keep(row: int, node_id: str, value: Any, usage: Any) -> None:
            nodes.append((row, node_id, value, usage))

        hook = keep if want_nodes else None
        running = {asyncio.create_task(job.runtime.run_row(r, preset=presets.get(r[0]),
                                                           on_node=hook)) for r in rows}
        try:
            while running:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                if running:
                    # Rows of a chunk start together and tend to finish together: gather
                    # those finishing within a few ms into one message (each streamed item
                    # costs a thread hop and an RPC here and in the driver).
                    more, running = await asyncio.wait(running, timeout=STREAM_COALESCE_S)
                    done |= more
                events = job.collector.drain() if job.collector is not None else []
                # Take the records before yielding: other rows keep running (and recording)
                # while the generator is suspended at the yield.
                records = nodes.copy()
                nodes.clear()
                yield ChunkResult([t.result() for t in done], records, events)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def call_node(self, job_id: str, node_id: str, request: LLMRequest,
                        row: int | None) -> NodeOutcome:
        """Send one LLM node's request of a loaded job (a single call's LLM node)."""
        job = self._jobs[job_id]
        try:
            value, usage = await job.runtime.call_node(node_id, request, row)
        except Exception as exc:
            outcome = NodeOutcome(error=portable_error(exc))
        else:
            outcome = NodeOutcome(value, usage=usage)
        if job.collector is not None:
            outcome.events = job.collector.drain()
        return outcome

    async def unload(self, job_id: str) -> dict[str, dict[str, Any]]:
        """Close the job's clients; return its per-alias stats (empty if never loaded)."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return {}
        stats = job.runtime.stats()
        await job.runtime.aclose()
        return stats

    def ready(self) -> bool:
        """True once the actor is up (used to wait for startup)."""
        return True


class WorkerPool:
    """Warm ``RowWorker`` actors for one pipeline class, named ``plait:worker:<Class>:<i>``.

    Args:
        pipeline: The pipeline class name (shown in the Ray dashboard).
        env_vars: Environment variables of the workers (their ``runtime_env``), or None.
    """

    def __init__(self, pipeline: str, env_vars: Mapping[str, str] | None = None) -> None:
        self.pipeline = pipeline
        self.env_vars = dict(env_vars or {})
        self.handles: list[Any] = []
        self._suffix = ""

    def ensure(self, count: int) -> list[Any]:
        """At least ``count`` live workers (started if needed); returns the first ``count``."""
        actor_class: Any = ray.remote(num_cpus=WORKER_CPUS, max_restarts=0)(RowWorker)
        extra: dict[str, Any] = {}
        if self.env_vars:
            # Merged by Ray with the job's runtime_env env_vars (these win).
            extra["runtime_env"] = {"env_vars": self.env_vars}
        while len(self.handles) < count:
            name = f"plait:worker:{self.pipeline}:{len(self.handles)}{self._suffix}"
            try:
                handle = actor_class.options(name=name, max_concurrency=1000,
                                             **extra).remote()
            except ValueError:
                # Another pool (another driver sharing the namespace) holds the names.
                self._suffix = f":{uuid.uuid4().hex[:6]}"
                continue
            self.handles.append(handle)
        return self.handles[:count]

    def discard(self, handle: Any) -> None:
        """Forget a dead worker; the next ``ensure`` starts a replacement."""
        if handle in self.handles:
            self.handles.remove(handle)
            self._suffix = f":{uuid.uuid4().hex[:6]}"  # the dead actor's name may linger

    def kill(self) -> None:
        """End every worker of the pool now."""
        handles, self.handles = self.handles, []
        for handle in handles:
            try:
                ray_api.kill(handle, no_restart=True)
            except Exception:  # already gone (its node or Ray session ended): nothing to end
                pass


_POOLS: dict[tuple[str, str, frozenset[tuple[str, str]]], WorkerPool] = {}


def worker_pool(pipeline: str, env_vars: Mapping[str, str] | None = None) -> WorkerPool:
    """The warm pool of ``pipeline`` for the current Ray session (made on first use).

    Workers started with other ``env_vars`` are another pool: an actor's environment is
    fixed when it starts.
    """
    session = ray_session_key()
    for key in [k for k in _POOLS if k[0] != session]:
        del _POOLS[key]  # a pool of an earlier ray.init(): its actors are gone
    key = (session, pipeline, frozenset((env_vars or {}).items()))
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = WorkerPool(pipeline, env_vars)
    return pool


def shutdown_workers() -> None:
    """Kill every warm row worker of this process (they also end with the driver)."""
    pools = list(_POOLS.values())
    _POOLS.clear()
    for pool in pools:
        if ray.is_initialized():
            pool.kill()

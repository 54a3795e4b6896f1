"""GPU-pinned replica actors for local-model aliases, and the pool that routes to them.

Each local alias (``TorchEndpointConfig`` / ``VLLMEndpointConfig``) becomes ``replicas``
named actors ``plait:replica:<alias>:<i>``, each reserving ``num_gpus_per_replica`` GPUs
(fractional shares a GPU). Ray pins an actor to its GPUs by setting
``CUDA_VISIBLE_DEVICES``, so ``device="cuda"`` inside a replica is its own GPU. Inside,
the replica is the same ``LocalModelRunner`` the local executor uses: the model is loaded
once and concurrent requests are micro-batched.

Every worker of a job shares the replicas: actors are found (or created) by name. The
driver should create them first (``ensure_replica_pools``): a non-detached actor shares
the fate of the process that created it.

Batching happens twice. A Ray actor call costs milliseconds of caller CPU, so one call per
request would cap throughput whatever the model does: each process's ``ReplicaPool``
collects its concurrent requests in a micro-batcher (``caller_wait_ms``, 0 by default)
and sends one ``generate_many`` call per micro-batch to the least-loaded replica, which
batches again across every process that calls it.

Failure handling: Ray restarts a replica that died up to ``max_restarts`` times; every
request of a micro-batch in flight on a dying replica fails with its own
``ReplicaUnavailableError`` (a retryable ``APIConnectionError``), so the ``EndpointPool``
retries each one, and the pool looks the actor up again by name, creating a fresh one when
the old one is gone for good. A replica's own errors (e.g. ``ServerError``) map per request.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from plait.batching import AsyncBatcher
from plait.clients.base import LLMRequest, LLMResponse
from plait.errors import APIConnectionError, APITimeoutError, PlaitError, ServerError
from plait.local_models.config import LocalModelConfig
from plait.local_models.runner import LocalModelRunner
from plait.resources.config import ResourceConfig
from plait_ray._ray_init import ray_api

__all__ = [
    "DEFAULT_NAMESPACE",
    "ReplicaActor",
    "ReplicaInfo",
    "ReplicaPool",
    "ReplicaUnavailableError",
    "ensure_replica_pools",
    "replica_name",
]

#: Ray namespace of the replica actors (the same default as the limiter actors).
DEFAULT_NAMESPACE = "plait"
#: How long a caller's first request waits for company before its micro-batch is sent.
#: 0 batches what this process's callers submit in the same event-loop turn: no added
#: latency, and batches grow with load (a busy loop turns slowly). The replica batches
#: again across callers with the config's ``max_wait_ms``. (A 1 ms window measured
#: ~2 ms more per lone request on a 2-core box: bench/results_local_model.md.)
DEFAULT_CALLER_WAIT_MS = 0.0

Outcome = LLMResponse | PlaitError


class ReplicaUnavailableError(APIConnectionError):
    """A replica died or is restarting; the request is retried (on the next replica)."""


@dataclass(frozen=True)
class ReplicaInfo:
    """Where a replica runs and what it has done.

    Attributes:
        alias: The endpoint alias.
        index: The replica's index in its pool.
        node_id: The Ray node it was placed on.
        pid: Its process id.
        gpu_ids: ``ray_api.get_gpu_ids()`` inside the replica.
        cuda_visible_devices: Its ``CUDA_VISIBLE_DEVICES`` (None when unset).
        loaded: Whether the model is in memory.
        batches: Model batches so far.
        items: Requests answered so far.
        calls: Actor calls that brought requests (one per caller micro-batch).
    """

    alias: str
    index: int
    node_id: str
    pid: int
    gpu_ids: tuple[str, ...]
    cuda_visible_devices: str | None
    loaded: bool
    batches: int
    items: int
    calls: int = 0


def replica_name(alias: str, index: int) -> str:
    """The Ray name of replica ``index`` of ``alias``."""
    return f"plait:replica:{alias}:{index}"


class ReplicaActor:
    """The body of one replica actor (an async actor: requests batch on its event loop).

    Not used directly: ``ReplicaPool`` wraps it with ``ray.remote`` and its GPU options.
    """

    def __init__(self, alias: str, config: LocalModelConfig, index: int) -> None:
        self._alias = alias
        self._index = index
        self._runner = LocalModelRunner(config, alias)
        self._calls = 0

    async def ready(self) -> ReplicaInfo | PlaitError:
        """Load the model (once) and report where this replica runs."""
        try:
            await self._runner.load()
        except PlaitError as exc:
            return exc
        return self.info()

    async def generate(self, request: LLMRequest) -> LLMResponse | PlaitError:
        """Answer one request, micro-batched with the others on this replica.

        plait errors are returned, not raised, so they reach the caller as themselves
        (with ``retryable`` and ``status``) rather than wrapped in a Ray task error.
        """
        self._calls += 1
        return await self._generate(request)

    async def _generate(self, request: LLMRequest) -> Outcome:
        try:
            return await self._runner.generate(request)
        except PlaitError as exc:
            return exc

    async def generate_many(self, requests: list[LLMRequest]) -> list[Outcome]:
        """Answer one caller's micro-batch: one outcome per request, in order.

        Each request joins this replica's batcher on its own, so micro-batches from several
        callers still share a model call; a failure is that request's error only.
        """
        self._calls += 1
        return list(await asyncio.gather(*(self._answer(r) for r in requests)))

    async def _answer(self, request: LLMRequest) -> Outcome:
        try:
            return await self._generate(request)
        except Exception as exc:  # a bug, not a plait error: fail this request, not its batch
            return ServerError(
                f"Replica {self._index} of local model alias '{self._alias}' failed on a "
                f"request: {type(exc).__name__}: {exc}. Retried within max_retries.",
                alias=self._alias)

    def info(self) -> ReplicaInfo:
        """Placement (node, GPUs) and counters of this replica."""
        stats = self._runner.stats()
        context: Any = ray_api.get_runtime_context()
        return ReplicaInfo(
            alias=self._alias,
            index=self._index,
            node_id=str(context.get_node_id()),
            pid=os.getpid(),
            gpu_ids=tuple(str(g) for g in ray_api.get_gpu_ids()),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            loaded=self._runner.loaded,
            batches=stats.batches,
            items=stats.items,
            calls=self._calls,
        )


_RemoteReplica: Any = ray_api.remote(ReplicaActor)
_Handle = ActorHandle[Any]
#: Collects (request, timeout) pairs of one process into micro-batches of actor calls.
_CallerBatcher = AsyncBatcher[tuple[LLMRequest, float], Outcome]


def _chained(error: PlaitError, cause: BaseException) -> PlaitError:
    # Each request gets its own error object (raised in its own task), chained to the cause.
    error.__cause__ = cause
    return error


class ReplicaPool:
    """The replicas of one local alias, as seen from one process: batching, routing, recovery.

    Concurrent ``call``s are collected into micro-batches (up to the config's ``max_batch``,
    for at most ``caller_wait_ms``); each micro-batch is spread over the replicas by items
    in flight from this process, fewest first (ties rotate), and each replica that gets
    some receives them in one ``generate_many`` actor call.

    Args:
        alias: The endpoint alias.
        config: The local-model config (replica count, GPUs, restarts, ``max_batch``).
        namespace: Ray namespace of the actors; ``DEFAULT_NAMESPACE`` if None.
        detached: Keep the actors after the creating job ends (then ``kill()`` them).
        caller_wait_ms: How long a request waits here for others to share its actor call.
        caller_max_batch: The most requests per actor call; None uses ``config.max_batch``.

    Example:
        >>> pool = ReplicaPool("local", TorchEndpointConfig(
        ...     model_factory="plait.local_models.tiny:tiny_char_lm", replicas=2))
        >>> infos = pool.wait_ready(timeout=120)      # in the driver
        >>> response = await pool.call(LLMRequest(prompt="hi"), timeout=60)
    """

    def __init__(self, alias: str, config: LocalModelConfig, namespace: str | None = None,
                 *, detached: bool = False,
                 caller_wait_ms: float = DEFAULT_CALLER_WAIT_MS,
                 caller_max_batch: int | None = None) -> None:
        self.alias = alias
        self.config = config
        self.namespace = namespace or DEFAULT_NAMESPACE
        self._detached = detached
        self._caller_wait_ms = caller_wait_ms
        self._caller_max_batch = caller_max_batch or config.max_batch
        self._handles: list[_Handle | None] = [None] * config.replicas
        self._loaded: list[bool] = [False] * config.replicas
        self.inflight: list[int] = [0] * config.replicas
        self._turn = itertools.count()
        self._batchers: dict[asyncio.AbstractEventLoop, _CallerBatcher] = {}

    def handle(self, index: int) -> _Handle:
        """Replica ``index``'s actor, found by name or created."""
        handle = self._handles[index]
        if handle is None:
            cfg = self.config
            options: dict[str, Any] = {
                "name": replica_name(self.alias, index),
                "namespace": self.namespace,
                "get_if_exists": True,
                "num_gpus": cfg.gpus_per_replica,
                "num_cpus": cfg.num_cpus_per_replica,
                "max_restarts": cfg.max_restarts,
                "max_concurrency": 1000,
            }
            if self._detached:
                options["lifetime"] = "detached"
            handle = cast(_Handle, _RemoteReplica.options(**options).remote(
                self.alias, cfg, index))
            self._handles[index] = handle
        return handle

    def pick(self) -> int:
        """The replica to use next: fewest in flight, ties rotating."""
        return self.spread(1)[0]

    def spread(self, count: int) -> list[int]:
        """Replicas for ``count`` new items, one each, filling the least loaded first.

        Load is this process's items in flight plus the items placed before; ties rotate.
        """
        n = len(self.inflight)
        start = next(self._turn) % n
        order = [(start + k) % n for k in range(n)]
        load = list(self.inflight)
        placed: list[int] = []
        for _ in range(count):
            index = min(order, key=lambda i: load[i])
            load[index] += 1
            placed.append(index)
        return placed

    async def call(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Answer one request on a replica, batched with this process's concurrent calls.

        ``timeout`` covers the actor call and starts once the replica's model is loaded.

        Raises:
            ReplicaUnavailableError: The replica died or is restarting (retryable).
            APITimeoutError: No reply within ``timeout`` (retryable).
            LLMError: The replica's own error (e.g. ``ServerError`` from generation).
            ConfigError: The model cannot be loaded.
        """
        outcome = await self._caller_batcher().submit((request, timeout))
        if isinstance(outcome, PlaitError):
            raise outcome
        return outcome

    def _caller_batcher(self) -> _CallerBatcher:
        # One batcher per event loop: callers may come from several loops (one asyncio.run
        # per Ray task, possibly in threads), and a batcher lives on one loop.
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            for closed in [other for other in self._batchers if other.is_closed()]:
                del self._batchers[closed]
            batcher = self._batchers[loop] = _CallerBatcher(
                max_batch=self._caller_max_batch, max_wait_ms=self._caller_wait_ms,
                executor=self._send, max_concurrent_batches=None)
        return batcher

    async def _send(self, items: list[tuple[LLMRequest, float]]) -> list[Outcome]:
        # The batcher's executor: one generate_many per replica that gets part of the batch.
        placed = self.spread(len(items))
        groups: dict[int, list[int]] = {}
        for position, index in enumerate(placed):
            groups.setdefault(index, []).append(position)
        timeout = max(t for _, t in items)
        results = await asyncio.gather(*(
            self._generate_on(index, [items[p][0] for p in positions], timeout)
            for index, positions in groups.items()))
        outcomes: list[Outcome | None] = [None] * len(items)
        for positions, answers in zip(groups.values(), results, strict=True):
            for position, answer in zip(positions, answers, strict=True):
                outcomes[position] = answer
        return cast(list[Outcome], outcomes)

    async def _generate_on(self, index: int, requests: Sequence[LLMRequest],
                           timeout: float) -> Sequence[Outcome]:
        self.inflight[index] += len(requests)
        try:
            handle = self.handle(index)
            try:
                await self._wait_loaded(index, handle)
                ref: Any = handle.generate_many.remote(list(requests))
                try:
                    return cast(list[Outcome], await asyncio.wait_for(ref, timeout))
                except TimeoutError as exc:
                    ray_api.cancel(ref)
                    return [_chained(APITimeoutError(
                        f"Replica {index} of local model alias '{self.alias}' gave no reply "
                        f"within {timeout}s. Raise the endpoint's timeout, add replicas, or "
                        "lower max_concurrent.", alias=self.alias), exc) for _ in requests]
            except RayActorError as exc:
                self._forget(index, handle)
                return [_chained(ReplicaUnavailableError(
                    f"Replica {index} of local model alias '{self.alias}' died or is "
                    f"restarting ({type(exc).__name__}); the request is retried.",
                    alias=self.alias), exc) for _ in requests]
        finally:
            self.inflight[index] -= len(requests)

    async def aclose(self) -> None:
        """Send what this event loop's callers already submitted; the replicas live on."""
        batcher = self._batchers.pop(asyncio.get_running_loop(), None)
        if batcher is not None:
            await batcher.close()

    async def _wait_loaded(self, index: int, handle: _Handle) -> None:
        # Loading is not part of a request's timeout. A flag, not a shared future: callers
        # may come from several event loops (one asyncio.run per Ray task), and concurrent
        # first calls are cheap because the replica loads under its own lock.
        if self._loaded[index]:
            return
        method: Any = handle.ready
        outcome: Any = await method.remote()
        if isinstance(outcome, PlaitError):
            raise outcome
        if self._handles[index] is handle:
            self._loaded[index] = True

    def _forget(self, index: int, handle: _Handle) -> None:
        # Look the name up again next time: Ray's restart keeps it, a dead actor frees it.
        if self._handles[index] is handle:
            self._handles[index] = None
            self._loaded[index] = False

    def wait_ready(self, timeout: float) -> list[ReplicaInfo]:
        """Create every replica, load its model and report placement (blocking; driver).

        Raises:
            ConfigError: A replica cannot load the model.
            ServerError: Not all replicas were ready within ``timeout`` seconds.
        """
        refs: list[Any] = [self.handle(i).ready.remote() for i in range(len(self._handles))]
        ready, _ = ray_api.wait(refs, num_returns=len(refs), timeout=timeout)
        if len(ready) < len(refs):
            raise ServerError(
                f"Only {len(ready)} of {len(refs)} replicas of '{self.alias}' were ready "
                f"within {timeout}s. Check that the cluster has {self.config.gpus_per_replica} "
                "free GPU(s) per replica (ray status) or raise the timeout.", alias=self.alias)
        outcomes: list[Any] = ray_api.get(refs)
        for outcome in outcomes:
            if isinstance(outcome, PlaitError):
                raise outcome
        return cast(list[ReplicaInfo], outcomes)

    async def infos(self) -> list[ReplicaInfo]:
        """Placement and counters of every replica."""
        refs: list[Any] = [self.handle(i).info.remote() for i in range(len(self._handles))]
        return list(await asyncio.gather(*refs))

    def kill(self) -> None:
        """Kill every replica for good (e.g. detached ones at the end of a run)."""
        for index in range(len(self._handles)):
            try:
                handle: Any = ray_api.get_actor(replica_name(self.alias, index), self.namespace)
            except ValueError:  # never created, or already gone
                continue
            ray_api.kill(handle, no_restart=True)
            self._handles[index] = None
            self._loaded[index] = False


def ensure_replica_pools(
    resources: ResourceConfig,
    aliases: Iterable[str] | None = None,
    namespace: str | None = None,
    *,
    detached: bool = False,
    wait_timeout: float | None = None,
) -> dict[str, ReplicaPool]:
    """Create the replicas of every local-model alias; call this in the driver first.

    Args:
        resources: The run's endpoints; hosted ones are skipped.
        aliases: Only these aliases (all if None).
        namespace: Ray namespace; ``DEFAULT_NAMESPACE`` if None.
        detached: Keep the replicas after the job ends.
        wait_timeout: If given, also load every model and wait up to this many seconds.
    """
    names = resources.aliases() if aliases is None else list(aliases)
    pools: dict[str, ReplicaPool] = {}
    for alias in names:
        config: object = resources[alias]
        if isinstance(config, LocalModelConfig):
            pool = ReplicaPool(alias, config, namespace, detached=detached)
            for index in range(config.replicas):
                pool.handle(index)
            if wait_timeout is not None:
                pool.wait_ready(wait_timeout)
            pools[alias] = pool
    return pools

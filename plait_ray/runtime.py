"""What runs rows inside one worker process, free of any actor or task specifics.

A ``WorkerRuntime`` is the worker-side twin of ``LocalExecutor``: one ``ResourceManager``
(clients, permits, retries, stats), one ``PoolRouter`` and one ``Interpreter`` for a pipeline,
and a bounded number of rows in flight. Row actors (``plait_ray.worker``), single-call node
tasks (``plait_ray.lowering``) and dataset workers all wrap this one class, so node semantics,
retries and error types are exactly those of a local run.

This module does not import ``ray``: it is plain asyncio, usable (and testable) anywhere.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from plait.cache import MeteredRouter, ResponseCache
from plait.clients.base import LLMRequest, Usage
from plait.errors import PlaitError
from plait.events import Event
from plait.execution.contract import Row
from plait.execution.interpreter import Interpreter, Router
from plait.execution.results import RowResult
from plait.resources.manager import ClientFactory, PermitFactory, ResourceManager
from plait.resources.permits import Permit
from plait.resources.router import PoolRouter

if TYPE_CHECKING:
    from plait.events import EventSink
    from plait.execution.settings import ResolvedSettings
    from plait.graph import InferenceGraph
    from plait.module import Module
    from plait.resources.config import ResourceConfig

__all__ = [
    "EventCollector",
    "GlobalPermits",
    "NodeRecord",
    "RuntimeOptions",
    "UnpicklableError",
    "WorkerRuntime",
    "merge_stats",
    "portable_error",
]

NodeRecord = tuple[int, str, Any, "Usage | None"]
"""(row, node_id, value, usage) of one finished LLM node, for the driver's checkpoint."""


@dataclass(frozen=True)
class RuntimeOptions:
    """The plain-data settings a worker needs (``ResolvedSettings`` holds callbacks).

    Attributes:
        max_concurrent: Cap on LLM requests in flight in this runtime across all aliases.
        max_inflight: Rows in flight at once in this runtime.
        record: Keep every node's value per row (training mode).
    """

    max_concurrent: int | None = None
    max_inflight: int = 64
    record: bool = False

    @classmethod
    def from_settings(cls, settings: ResolvedSettings, *, record: bool = False,
                      workers: int = 1) -> RuntimeOptions:
        """This worker's share of a call's settings when ``workers`` runtimes run it."""
        cap = settings.max_concurrent
        return cls(
            max_concurrent=None if cap is None else max(1, cap // workers),
            max_inflight=max(1, math.ceil(settings.inflight_limit() / workers)),
            record=record,
        )


class GlobalPermits(Protocol):
    """Where a runtime takes one permit per LLM request across all aliases."""

    async def acquire(self, tokens: int) -> Permit:
        """Wait for a permit."""
        ...

    def release(self, permit: Permit, *, used_tokens: int | None) -> None:
        """Give the permit back."""
        ...

    async def aclose(self) -> None:
        """Stop and give back everything held."""
        ...


class EventCollector:
    """An event sink that keeps events until drained (shipped back to the driver)."""

    def __init__(self) -> None:
        self._events: list[Event] = []

    def __call__(self, event: Event) -> None:
        """Keep ``event``."""
        self._events.append(event)

    def drain(self) -> list[Event]:
        """Return and forget the events collected so far."""
        events, self._events = self._events, []
        return events


class UnpicklableError(PlaitError):
    """Stands in for a row error that cannot be pickled back to the driver."""


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` if it pickles, else a ``PlaitError`` keeping its type name and message.

    Row errors travel from workers to the driver; a user exception holding a lock or a
    socket would otherwise turn one row's failure into a lost chunk.
    """
    try:
        pickle.dumps(exc)
    except Exception:
        return UnpicklableError(
            f"{type(exc).__name__}: {exc} (the original error could not be pickled back from "
            "the Ray worker; make the exception class picklable to receive it as is)"
        )
    return exc


class WorkerRuntime:
    """Runs rows of one pipeline in this process, as ``LocalExecutor`` does in the driver.

    Args:
        module: The root module (unpickled in the worker; bound settings are not shipped).
        graph: The traced graph to run.
        resources: Aliases -> endpoints. Keys are read from each endpoint's ``api_key_env``
            in this process (inline keys are never pickled).
        options: Concurrency and recording settings for this runtime.
        events: Event sink (e.g. an ``EventCollector``), or None.
        permit_factory: Builds each alias's permit source (cluster-leased permits from
            ``plait_ray.limits``); None uses the full limits in this process.
        client_factory: Builds each alias's client (None: plait's default clients).
        global_permits: One permit per LLM request across all aliases, held for the whole
            call as the local ``max_concurrent`` is (the call's cluster-wide cap from
            ``plait_ray.limits.caps``), or None.
        cache: The response cache (a directory every node can read and write), or None.
            It is consulted before the global permit and the pools: a hit costs nothing.

    Example:
        >>> runtime = WorkerRuntime(module, graph, resources, options=RuntimeOptions())
        >>> results = await runtime.run_rows([(0, ("text",), {})])
        >>> await runtime.aclose()
    """

    def __init__(
        self,
        module: Module,
        graph: InferenceGraph,
        resources: ResourceConfig,
        *,
        options: RuntimeOptions | None = None,
        events: EventSink | None = None,
        permit_factory: PermitFactory | None = None,
        client_factory: ClientFactory | None = None,
        global_permits: GlobalPermits | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.options = options or RuntimeOptions()
        self.graph = graph
        self.manager = ResourceManager(resources, events=events, permit_factory=permit_factory,
                                       client_factory=client_factory)
        self.module = module
        self.global_permits = global_permits
        self.router: Router = PoolRouter(self.manager)
        if global_permits is not None:
            self.router = _CappedRouter(self.router, global_permits)
        # What sends a single call's LLM node (the driver meters and caches those).
        self.sender: Router = self.router
        # The metered router holds max_concurrent (outside the cap), so hits never wait.
        self.meter = MeteredRouter(self.router, resources, cache=cache, events=events,
                                   max_concurrent=self.options.max_concurrent)
        self.router = self.meter
        self.interpreter = Interpreter(graph, module, self.router, events=events)
        self._slots = asyncio.Semaphore(self.options.max_inflight)
        self._started = False

    async def start(self) -> None:
        """Check credentials and build the pools of the graph's aliases (once).

        Raises:
            MissingAPIKeyError: A key is not set in this process's environment.
        """
        if not self._started:
            await self.manager.start(sorted(self.graph.aliases()))
            self._started = True

    async def run_row(
        self,
        row: Row,
        *,
        preset: Mapping[str, Any] | None = None,
        on_node: Callable[[int, str, Any, Usage | None], None] | None = None,
    ) -> RowResult:
        """Run one row; its failure is the result's ``error`` (never raised)."""
        index, args, kwargs = row
        started = time.perf_counter()
        hook = None if on_node is None else _bind_row(on_node, index)
        try:
            await self.start()
            async with self._slots:
                outcome = await self.interpreter.run_row(
                    args, kwargs, row=index, preset=preset, record=self.options.record,
                    on_node=hook)
        except Exception as exc:
            spent = self.meter.pop_row(index)
            return RowResult(index, error=portable_error(exc),
                             latency=time.perf_counter() - started, cost_usd=spent.cost_usd,
                             cache_hits=spent.cache_hits)
        spent = self.meter.pop_row(index)
        return RowResult(index, outcome.output, None, outcome.input_tokens,
                         outcome.output_tokens, time.perf_counter() - started, outcome.values,
                         spent.cost_usd, spent.cache_hits)

    async def call_node(self, node_id: str, request: LLMRequest,
                        row: int | None) -> tuple[Any, Usage]:
        """Send LLM node ``node_id``'s ``request`` (built by the driver) through the pools.

        The driver's router already consulted the cache, priced the call and held the
        call's ``max_concurrent``; this sends it (global permit, pool, retries, parsing).

        Raises:
            PlaitError: The call's failure, as the local pool raises it.
        """
        node = self.graph.nodes[node_id]
        module = self.module.get_submodule(node.target)
        await self.start()
        return await self.sender.complete(node.alias or "", request, parse=module.parse,
                                          node_id=node_id, row=row)

    async def run_rows(
        self,
        rows: Sequence[Row],
        *,
        presets: Mapping[int, Mapping[str, Any]] | None = None,
        on_node: Callable[[int, str, Any, Usage | None], None] | None = None,
    ) -> list[RowResult]:
        """Run ``rows`` concurrently (at most ``options.max_inflight`` at once).

        Args:
            rows: (index, args, kwargs) rows.
            presets: Row index -> node values already known (resumed from a checkpoint).
            on_node: Called as (row, node_id, value, usage) after each LLM node.

        Returns:
            One RowResult per row, in the order of ``rows``.
        """
        presets = presets or {}
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.run_row(r, preset=presets.get(r[0]),
                                                    on_node=on_node)) for r in rows]
        return [t.result() for t in tasks]

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-alias request statistics of this runtime (with ``cache_hits`` when caching)."""
        stats = self.manager.stats()
        if self._started:
            for alias in self.graph.aliases():
                # Seconds this worker was paused by 429s (leased permits count them).
                paused = getattr(self.manager.pool(alias).permits, "paused_s", None)
                if isinstance(paused, float):
                    stats.setdefault(alias, {})["paused_s"] = paused
        if self.meter.cache is not None:
            for alias in self.graph.aliases():
                entry = stats.setdefault(alias, {})
                entry["cache_hits"] = self.meter.hits_by_alias.get(alias, 0)
        return stats

    async def aclose(self) -> None:
        """Close the clients (in-flight rows should be finished or cancelled first)."""
        # Leased permit sources end their leases (slots go back at once, the sync task
        # stops); a closed runtime must not keep heartbeating a limiter.
        sources: list[Any] = [self.global_permits]
        if self._started:
            sources += [self.manager.pool(alias).permits for alias in sorted(self.graph.aliases())]
        try:
            await self.manager.aclose()
        finally:
            for source in sources:
                close = getattr(source, "aclose", None)
                if close is not None:
                    await close()


class _CappedRouter:
    """A router that holds one of ``permits`` around every call (retries included)."""

    def __init__(self, inner: Router, permits: GlobalPermits) -> None:
        self._inner = inner
        self._permits = permits

    async def complete(self, alias: str, request: LLMRequest, *, parse: Callable[[str], Any],
                       node_id: str, row: int | None) -> tuple[Any, Usage]:
        permit = await self._permits.acquire(0)
        try:
            return await self._inner.complete(alias, request, parse=parse, node_id=node_id,
                                              row=row)
        finally:
            self._permits.release(permit, used_tokens=None)


def _bind_row(hook: Callable[[int, str, Any, Usage | None], None],
              index: int) -> Callable[[str, Any, Usage | None], None]:
    return lambda node_id, value, usage: hook(index, node_id, value, usage)


def merge_stats(parts: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Merge per-worker ``EndpointStats.to_dict()`` results into one per alias.

    Counts, tokens, cost and error counts are summed exactly. Latencies are approximate: the
    mean and each percentile are the per-worker values weighted by the worker's successes
    (exact when workers see the same latency distribution, which is the usual case since they
    call the same endpoint; raw samples are not shipped, to keep stats calls small).
    """
    merged: dict[str, dict[str, Any]] = {}
    weights: dict[str, dict[str, float]] = {}
    for part in parts:
        for alias, stats in part.items():
            out = merged.setdefault(alias, {})
            weight = float(stats.get("successes") or 0)
            sums = weights.setdefault(alias, {})
            for key, value in stats.items():
                if key.startswith("latency_"):
                    if value is not None and weight > 0:
                        out[key] = out.get(key) or 0.0
                        out[key] += value * weight
                        sums[key] = sums.get(key, 0.0) + weight
                    else:
                        out.setdefault(key, None)
                elif key == "errors":
                    errors: dict[str, int] = out.setdefault("errors", {})
                    for name, count in dict(value).items():
                        errors[name] = errors.get(name, 0) + count
                elif isinstance(value, int | float):
                    out[key] = out.get(key, 0) + value
                else:
                    out.setdefault(key, value)
    for alias, sums in weights.items():
        for key, total in sums.items():
            merged[alias][key] = merged[alias][key] / total
    return merged

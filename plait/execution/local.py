"""The local executor: one asyncio loop, rows pipelined, in-flight rows bounded."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from plait.cache import MeteredRouter
from plait.clients.base import Usage
from plait.errors import BudgetExceededError, ConfigError
from plait.execution.contract import Job, Row
from plait.execution.interpreter import Interpreter
from plait.execution.results import RowResult
from plait.execution.shared import CALL_EVENTS
from plait.pricing import Budget, RowBound
from plait.resources.manager import ResourceManager
from plait.resources.router import PoolRouter
from plait.resources.stats import CALL_STATS, EndpointStats

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Runs every row in this process's event loop.

    Rows start as capacity frees up (at most ``settings.inflight_limit()`` at once), and each
    row's nodes start as soon as their inputs are ready, so row 2's first call never waits for
    row 1's last. One resource manager (a client, a slot pool and a rate limiter per alias)
    serves all rows.

    Example:
        >>> results = await run(pipeline, rows, executor="local", max_inflight=128)
    """

    name = "local"

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, Any]] = {}
        self._call_stats: dict[str, EndpointStats] = {}
        self.meter: MeteredRouter | None = None
        self.budget: Budget | None = None

    def endpoint_stats(self) -> dict[str, dict[str, Any]]:
        """Per-alias statistics of the last job."""
        return self._stats

    async def execute(self, job: Job) -> AsyncIterator[RowResult]:
        """Yield a RowResult per row as rows finish (see ``Executor``)."""
        settings = job.settings
        if settings.executor_options:
            raise ConfigError(
                f"executor_options {sorted(settings.executor_options)} were given, but the local "
                "executor takes none. Use executor='ray' for them, or drop executor_options."
            )
        owned = job.manager is None
        manager = job.manager or ResourceManager(settings.resources, events=job.events)
        try:
            await manager.start(sorted(job.graph.aliases()))
            # The metered router sits outside the pools: a cache hit takes no permit.
            # It also holds max_concurrent (not the interpreter), so hits never wait for it.
            meter = self.meter = MeteredRouter(PoolRouter(manager), settings.resources,
                                               cache=settings.cache, events=job.events,
                                               max_concurrent=settings.max_concurrent)
            budget = self.budget = (None if settings.budget_usd is None
                                    else Budget(settings.budget_usd))
            interp = Interpreter(job.graph, job.module, meter, events=job.events)
            self._call_stats = {}
            async for result in _pipeline_rows(job, interp, settings.inflight_limit(),
                                               self._call_stats, meter, budget):
                yield result
        finally:
            self._stats = {alias: s.to_dict() for alias, s in self._call_stats.items()}
            if self.meter is not None and self.meter.cache is not None:
                for alias, hits in self.meter.hits_by_alias.items():
                    self._stats.setdefault(alias, EndpointStats().to_dict())["cache_hits"] = hits
            if owned:
                await manager.aclose()


async def _pipeline_rows(job: Job, interp: Interpreter, limit: int,
                         call_stats: dict[str, EndpointStats], meter: MeteredRouter,
                         budget: Budget | None) -> AsyncIterator[RowResult]:
    finished: deque[RowResult] = deque()
    wake = asyncio.Event()
    running: set[asyncio.Task[None]] = set()
    rows = iter(job.rows)
    exhausted = False
    # Row tasks carry the call's event sink and counters, so a shared manager's pools report
    # to this call.
    context = contextvars.copy_context()
    context.run(CALL_EVENTS.set, job.events)
    context.run(CALL_STATS.set, call_stats)

    bound = None if budget is None else RowBound(job.graph, job.module, meter.price)

    async def run_one(row: Row, reservation: float) -> None:
        index, args, kwargs = row
        started = time.perf_counter()
        try:
            preset = job.presets(index) if job.presets is not None else None
            outcome = await interp.run_row(args, kwargs, row=index, preset=preset,
                                           record=job.record, on_node=_node_hook(job, index))
        except Exception as exc:
            result = RowResult(index, error=exc, latency=time.perf_counter() - started)
        else:
            result = RowResult(index, outcome.output, None, outcome.input_tokens,
                               outcome.output_tokens, time.perf_counter() - started,
                               outcome.values)
        spent = meter.pop_row(index)
        result.cost_usd, result.cache_hits = spent.cost_usd, spent.cache_hits
        if budget is not None:
            budget.settle(reservation, spent.cost_usd)
        # Leave `running` before waking the consumer: a done-callback would run too late.
        running.discard(asyncio.current_task())  # type: ignore[arg-type]
        finished.append(result)
        wake.set()

    try:
        while True:
            while not exhausted and len(running) < limit:
                row = next(rows, None)
                if row is None:
                    exhausted = True
                    break
                reservation = 0.0
                if budget is not None and bound is not None:
                    reservation = budget.reservation(bound.row(row[1], row[2]))
                    if not budget.admit(reservation):
                        # Rows not started are reported as such (and rerun on resume).
                        budget.rows_not_started += 1
                        finished.append(RowResult(row[0], error=_not_started(budget,
                                                                             reservation)))
                        break  # yield it before looking at the next row: memory stays flat
                running.add(asyncio.create_task(run_one(row, reservation),
                                                context=context.copy()))
            if not finished:
                if exhausted and not running:
                    return
                wake.clear()
                await wake.wait()
                continue
            while finished:
                yield finished.popleft()
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


def _not_started(budget: Budget, reservation: float) -> BudgetExceededError:
    return BudgetExceededError(
        f"Row not started: budget_usd={budget.limit_usd:g} would be exceeded (spent "
        f"${budget.spent_usd:.4f}, ${budget.reserved_usd:.4f} reserved by rows in flight, "
        f"this row reserves ~${reservation:.4f}). Rerun with a larger budget_usd and the "
        "same checkpoint_dir to run it; finished rows are not paid again.")


def _node_hook(job: Job, index: int) -> Callable[[str, Any, Usage | None], None] | None:
    hook = job.on_node
    if hook is None:
        return None
    return lambda node_id, value, usage: hook(index, node_id, value, usage)

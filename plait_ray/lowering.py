"""A single call on Ray: the driver interprets the row, each LLM call runs on a row worker.

For one row the interesting parallelism is inside the graph. The driver runs the row through
the same ``Interpreter`` as a local run, so every node, LLM or not, is evaluated exactly once
and the output is built from the very values the LLM calls saw (a leaf that samples, logs or
retrieves runs once); the driver also consults the response cache, prices each call and
holds the call's ``max_concurrent`` (``MeteredRouter``, as locally). Only the LLM calls that
must be sent leave the driver: each becomes a call on a warm
``RowWorker`` actor named ``plait:<module path>`` (the dashboard shows the pipeline's
structure), and independent calls go to different workers. The worker sends the request
through the job's ``WorkerRuntime`` (one per worker process and job: one HTTP session, one
lease per endpoint), so retries, errors and parsing are those of a local run.

Paid calls are not retried by Ray (actor calls are not retried): plait's endpoint pool
retries where its limiter sees it. A call whose worker died is sent once more to another
worker (nothing of it reached the driver). The driver holds a slot of the call's endpoint
while the call runs, and the interpreter holds one of the global ``max_concurrent``, so both
caps hold exactly for the call; workers also lease the endpoint's slots from its
cluster-wide limiter, so concurrent jobs share the endpoint's cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plait.cache import MeteredRouter
from plait.clients.base import LLMRequest, Usage
from plait.events import Event
from plait.execution.contract import Job
from plait.execution.interpreter import Interpreter
from plait.execution.results import RowResult
from plait_ray._ray_init import ray_api
from plait_ray.worker import NodeOutcome, WorkerLostError, worker_key_hint

__all__ = ["NodeCallRouter", "NodeOutcome", "run_single_row"]


@dataclass
class _Worker:
    handle: Any
    load: int = 0


@dataclass
class NodeCallRouter:
    """The driver interpreter's router: each LLM call runs on the least busy row worker.

    Args:
        handles: Row workers with the job loaded.
        job_id: The loaded job.
        names: LLM node id -> its module path (the Ray task's name).
        events: Where the workers' events go (shipped back with each call).
    """

    handles: list[Any]
    job_id: str
    names: dict[str, str]
    events: list[Event] = field(default_factory=list[Event])

    def __post_init__(self) -> None:
        self._workers = [_Worker(h) for h in self.handles]

    async def complete(self, alias: str, request: LLMRequest, *, parse: Callable[[str], Any],
                       node_id: str, row: int | None) -> tuple[Any, Usage]:
        """Run the call on a worker; its error is raised here as in a local run.

        ``parse`` is the worker's own copy of the module's (the worker parses, so a reply
        that fails validation is retried by the worker's pool, as locally).
        """
        tried: set[int] = set()
        while True:
            candidates = [i for i in range(len(self._workers)) if i not in tried]
            if not candidates:
                raise WorkerLostError(
                    f"The Ray workers running LLM node '{node_id}' died (twice); the call did "
                    "not finish. Check the Ray logs (out of memory? node lost?) and rerun.")
            index = min(candidates, key=lambda i: self._workers[i].load)
            worker = self._workers[index]
            worker.load += 1
            try:
                ref = worker.handle.call_node.options(name=f"plait:{self.names[node_id]}").remote(
                    self.job_id, node_id, request, row)
                outcome: NodeOutcome = await ref
            except (ray_api.exceptions.RayActorError, ray_api.exceptions.ObjectLostError):
                tried.add(index)
                if len(tried) >= 2:
                    tried.update(range(len(self._workers)))
                continue
            finally:
                worker.load -= 1
            self.events.extend(outcome.events)
            if outcome.error is not None:
                raise worker_key_hint(outcome.error)
            return outcome.value, outcome.usage


async def run_single_row(job: Job, router: NodeCallRouter, meter: MeteredRouter) -> RowResult:
    """Run ``job``'s one row on the driver; failures are the result's error.

    ``meter`` wraps ``router`` as in a local run: it consults the response cache, prices
    each call and holds the call's ``max_concurrent`` (every call of the row passes here).
    """
    ((index, args, kwargs),) = list(job.rows)
    started = time.perf_counter()
    hook = job.on_node
    on_node: Callable[[str, Any, Usage | None], None] | None = None
    if hook is not None:
        on_node = lambda node_id, value, usage: hook(index, node_id, value, usage)  # noqa: E731
    interp = Interpreter(job.graph, job.module, meter, events=job.events)
    try:
        preset = job.presets(index) if job.presets is not None else None
        outcome = await interp.run_row(args, kwargs, row=index, preset=preset,
                                       record=job.record, on_node=on_node)
    except Exception as exc:
        spent = meter.pop_row(index)
        return RowResult(index, error=exc, latency=time.perf_counter() - started,
                         cost_usd=spent.cost_usd, cache_hits=spent.cache_hits)
    spent = meter.pop_row(index)
    return RowResult(index, outcome.output, None, outcome.input_tokens, outcome.output_tokens,
                     time.perf_counter() - started, outcome.values, spent.cost_usd,
                     spent.cache_hits)

"""A single call lowered to Ray tasks: one task per LLM node, linked by object refs.

For one row, the interesting parallelism is inside the graph, so each LLM node becomes a Ray
task named ``plait:<module path>``: the dashboard shows the pipeline's structure, and
independent branches run in different worker processes. An LLM task receives the outputs of
the LLM nodes it depends on as object refs (values go worker to worker through the object
store, never back through the driver) and runs the small *fused* subgraph that turns them
into its prompt, then the call itself, through the same ``Interpreter`` and a
``WorkerRuntime`` in its own process (so retries, errors and parsing are those of a local run).

Non-LLM nodes (formatting, indexing, plain-Python modules) are not tasks of their own: they
take microseconds, a task costs about a millisecond and a process hop, and one task per node
would flood the dashboard. They are evaluated inside the LLM task that needs them (fused), and
once more on the driver to build the output (and every value, in training mode). They are
pure functions of their inputs, so evaluating one twice is harmless.

Paid calls are never retried by Ray (``max_retries=0``): plait's endpoint pool retries where
its limiter sees it. The driver starts a node's task only when its LLM inputs are done and a
slot of its endpoint is free, so ``max_concurrent`` holds for the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from plait.clients.base import LLMRequest, Usage
from plait.errors import PlaitError
from plait.events import Event
from plait.execution.contract import Job, Row
from plait.execution.interpreter import Interpreter
from plait.execution.results import RowResult
from plait.graph import GraphNode, InferenceGraph, Ref
from plait.module import Module
from plait.resources.config import ResourceConfig
from plait_ray._ray_init import ray_api
from plait_ray.limits import leased_permit_factory
from plait_ray.replica_client import replica_client_factory
from plait_ray.runtime import EventCollector, RuntimeOptions, WorkerRuntime, merge_stats
from plait_ray.worker import worker_key_hint

__all__ = ["LLM_TASK_CPUS", "NodeOutcome", "NodeTaskRunner", "fused_subgraph"]

LLM_TASK_CPUS = 0.1
"""CPU reservation of an LLM node task: it waits on HTTP, so branches should not queue for
whole CPUs."""


@dataclass
class NodeOutcome:
    """What an LLM node task returns (errors are returned, not raised, to keep logs clean)."""

    value: Any = None
    error: BaseException | None = None
    usage: Usage = field(default_factory=Usage)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict[str, dict[str, Any]])
    events: list[Event] = field(default_factory=list[Event])


def fused_subgraph(graph: InferenceGraph, node_id: str) -> tuple[InferenceGraph, list[str]]:
    """The nodes a task runs to compute LLM node ``node_id`` from its upstream LLM outputs.

    Walks back from the node through non-LLM nodes; each upstream LLM node met becomes a
    dependency-free stub whose value the task receives (as a preset).

    Returns:
        The subgraph (output: the node's value) and the ids of its upstream LLM nodes.
    """
    keep: dict[str, GraphNode] = {node_id: graph.nodes[node_id]}
    upstream: list[str] = []
    stack = list(graph.nodes[node_id].deps)
    while stack:
        nid = stack.pop()
        if nid in keep:
            continue
        node = graph.nodes[nid]
        if node.kind == "llm":
            keep[nid] = dataclasses.replace(node, args=(), kwargs={}, deps=())
            upstream.append(nid)
        else:
            keep[nid] = node
            stack.extend(node.deps)
    nodes = {nid: keep[nid] for nid in graph.nodes if nid in keep}
    inputs = [nid for nid in graph.input_ids if nid in keep]
    upstream.sort(key=list(graph.nodes).index)
    return InferenceGraph(nodes, inputs, Ref(node_id)), upstream


def _run_llm_node(base: tuple[Module, ResourceConfig], graph: InferenceGraph, row: Row,
                  names: tuple[str, ...], collect_events: bool, namespace: str,
                  *upstream: NodeOutcome) -> NodeOutcome:
    """Body of an LLM node task (in a Ray worker process)."""
    module, resources = base
    preset = {name: outcome.value for name, outcome in zip(names, upstream, strict=True)}
    collector = EventCollector() if collect_events else None

    async def run() -> NodeOutcome:
        runtime = WorkerRuntime(
            module, graph, resources, options=RuntimeOptions(max_inflight=1), events=collector,
            permit_factory=leased_permit_factory(namespace),
            client_factory=replica_client_factory())
        try:
            result = await runtime.run_row(row, preset=preset)
        finally:
            await runtime.aclose()
        return NodeOutcome(result.output, result.error,
                           Usage(result.input_tokens, result.output_tokens), runtime.stats(),
                           collector.drain() if collector is not None else [])

    return asyncio.run(run())


class _NoCalls:
    """The driver's router for the final pass: every LLM value is already known."""

    async def complete(self, alias: str, request: LLMRequest, *, parse: Callable[[str], Any],
                       node_id: str, row: int | None) -> tuple[Any, Usage]:
        raise PlaitError(f"LLM node '{node_id}' reached the driver's final pass without a "
                         "value; this is a plait bug, please report it.")


class NodeTaskRunner:
    """Runs one row of ``job`` as Ray tasks (see the module docstring).

    Args:
        job: The job; its ``rows`` hold exactly one row.
        namespace: Namespace of the cluster-wide limiter actors (from the driver).
    """

    def __init__(self, job: Job, *, namespace: str) -> None:
        self.job = job
        self.namespace = namespace
        self.stats: dict[str, dict[str, Any]] = {}
        self.events: list[Event] = []
        self._parts: list[dict[str, dict[str, Any]]] = []
        self._refs: dict[str, Any] = {}
        self._outcomes: dict[str, asyncio.Task[NodeOutcome]] = {}
        self._slots = {
            alias: asyncio.Semaphore(getattr(job.settings.resources[alias], "max_concurrent",
                                             None) or 1_000_000)
            for alias in job.graph.aliases()
        }

    async def run(self) -> RowResult:
        """Run the row; its failure is the result's ``error`` (never raised)."""
        job = self.job
        (row,) = list(job.rows)
        index = row[0]
        started = time.perf_counter()
        preset = dict(job.presets(index) or {}) if job.presets is not None else {}
        base = ray_api.put((job.module, job.settings.resources))
        try:
            for node in job.graph.llm_nodes():
                self._outcomes[node.id] = asyncio.create_task(
                    self._node(node, base, row, preset.get(node.id, _UNSET)))
            values = await self._gather()
            interp = Interpreter(job.graph, job.module, _NoCalls(), events=job.events)
            outcome = await interp.run_row(row[1], row[2], row=index, preset=preset | values,
                                           record=job.record)
        except Exception as exc:
            return RowResult(index, error=exc, latency=time.perf_counter() - started)
        finally:
            await self._cancel()
            self.stats = merge_stats(self._parts)
        used = [t.result().usage for t in self._outcomes.values()]
        return RowResult(index, outcome.output, None, sum(u.input_tokens for u in used),
                         sum(u.output_tokens for u in used), time.perf_counter() - started,
                         outcome.values)

    async def _gather(self) -> dict[str, Any]:
        pending = set(self._outcomes.values())
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            # exception() on every done task: a downstream node fails with its upstream's
            # error in the same round, and an unread one is logged as never retrieved.
            failures = [exc for task in done if (exc := task.exception()) is not None]
            if failures:
                raise failures[0]
        return {nid: task.result().value for nid, task in self._outcomes.items()}

    async def _node(self, node: GraphNode, base: Any, row: Row, preset: Any) -> NodeOutcome:
        if preset is not _UNSET:
            self._refs[node.id] = ray_api.put(NodeOutcome(preset))
            return NodeOutcome(preset)
        subgraph, upstream = fused_subgraph(self.job.graph, node.id)
        for nid in upstream:
            await self._outcomes[nid]  # an upstream failure ends this node too
        task: Any = _LLM_TASK.options(name=f"plait:{node.target}")
        async with self._slots[node.alias or ""]:
            ref = task.remote(base, subgraph, row, tuple(upstream), self.job.events is not None,
                              self.namespace, *(self._refs[nid] for nid in upstream))
            self._refs[node.id] = ref
            outcome: NodeOutcome = await ref
        self._parts.append(outcome.stats)
        self.events.extend(outcome.events)
        if outcome.error is not None:
            raise worker_key_hint(outcome.error)
        if self.job.on_node is not None:
            self.job.on_node(row[0], node.id, outcome.value, outcome.usage)
        return outcome

    async def _cancel(self) -> None:
        running = [t for t in self._outcomes.values() if not t.done()]
        for task in running:
            task.cancel()
        for nid, task in self._outcomes.items():
            if task in running and nid in self._refs:
                ray_api.cancel(self._refs[nid])
        if running:
            await asyncio.gather(*running, return_exceptions=True)


_UNSET: Any = object()
# Made once: each ray.remote(...) object is exported to the cluster separately.
_LLM_TASK: Any = ray.remote(max_retries=0, num_cpus=LLM_TASK_CPUS)(_run_llm_node)

"""Running one call to completion: settings, inputs, graph, executor, results.

``plait.execution.call`` decides *how* a call is started (awaited, streamed, run at once);
this module runs it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plait.batch_api._run import with_journal_dir
from plait.errors import BatchError, ConfigError, PlaitError
from plait.execution.contract import Job, get_executor
from plait.execution.inputs import CallInputs, split_inputs
from plait.execution.report import RunObserver
from plait.execution.results import BatchResult, RowResult
from plait.execution.settings import ResolvedSettings, resolve_settings
from plait.execution.shared import loop_manager
from plait.graph import InferenceGraph

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["CallSpec", "await_call", "stream_call"]


@dataclass(slots=True)
class CallSpec:
    """What was called: the module, its arguments and the per-call settings.

    Attributes:
        module: The called module.
        args: Positional arguments of the call.
        kwargs: Keyword arguments of the call.
        overrides: Per-call settings (``run(..., **settings)``).
        inputs: The rows, when they were already split at call time (a generator can be
            read only once, so they are never split twice).
    """

    module: Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict[str, Any])
    inputs: CallInputs | None = None

    def split(self) -> CallInputs:
        """The call's rows (split once, then kept)."""
        if self.inputs is None:
            self.inputs = split_inputs(self.module, self.args, self.kwargs)
        return self.inputs


class _Prepared:
    def __init__(self, spec: CallSpec) -> None:
        self.module = spec.module
        self.settings, self.context = resolve_settings(spec.overrides,
                                                       spec.module.__dict__.get("_bound"))
        journaled = with_journal_dir(self.settings.resources, self.settings.checkpoint_dir,
                                     fresh=self.settings.resume == "fresh")
        if journaled is not self.settings.resources:  # batched endpoints journal there
            self.settings = dataclasses.replace(self.settings, resources=journaled)
        self.inputs: CallInputs = spec.split()
        self.graph: InferenceGraph | None = None
        if self.inputs.total != 0:
            self.graph = spec.module.graph_for(*self.inputs.shape)
            _check_aliases(self.graph, self.settings, spec.module)


async def _results(prepared: _Prepared) -> AsyncGenerator[RowResult, None]:
    """Run the prepared call; yield RowResults as rows finish."""
    if prepared.graph is None:
        return
    settings = prepared.settings
    executor = get_executor(settings.executor)
    if settings.budget_usd is not None and getattr(executor, "name", None) != "local":
        raise ConfigError(
            f"budget_usd={settings.budget_usd:g} is enforced by the local executor only, not "
            f"by {getattr(executor, 'name', type(executor).__name__)!r}. Run with "
            "executor='local', or drop budget_usd and check plait.pricing.estimate() first.")
    shared = prepared.context.shared if prepared.context is not None else None
    observer = RunObserver(prepared.module, settings, prepared.inputs.total,
                           shared=shared if shared is not None and shared.owns(settings) else None,
                           batch=prepared.inputs.is_batch)
    manager = observer.manager
    if manager is None and getattr(executor, "name", None) == "local":
        manager = await loop_manager(settings.resources)  # warm connections across calls
    job = Job(module=prepared.module, graph=prepared.graph, rows=prepared.inputs.rows,
              settings=settings, events=observer.events, record=prepared.module.training,
              manager=manager)
    started = time.perf_counter()
    checkpoint = observer.open_checkpoint(prepared.graph, prepared.inputs, job)
    try:
        async for result in checkpoint.results(executor.execute(job)):
            observer.row_done(result)
            yield result
    finally:
        await checkpoint.aclose()
        observer.finish(executor, time.perf_counter() - started)


async def await_call(spec: CallSpec) -> Any:
    """Run the call; the output, the outputs in input order, or BatchResults (streaming)."""
    prepared = _Prepared(spec)
    inputs = prepared.inputs
    if not inputs.is_batch:
        (result,) = [r async for r in _results(prepared)]
        if result.error is not None:
            raise result.error
        return _attach(prepared, result)
    outputs: dict[int, Any] = {}
    failures: dict[int, BaseException] = {}
    results: dict[int, RowResult] = {}
    async for result in _results(prepared):
        if prepared.settings.streaming:
            results[result.index] = result
        elif result.error is not None:
            failures[result.index] = result.error
        else:
            outputs[result.index] = _attach(prepared, result)
    if prepared.settings.streaming:
        return [_batch_result(inputs, results[i]) for i in sorted(results)]
    count = max([*outputs, *failures], default=-1) + 1
    if inputs.total is not None:
        count = max(count, inputs.total)
    for i in range(count):
        if i not in outputs and i not in failures:  # never fill a lost row in silently
            failures[i] = PlaitError(
                f"Row {i} got no result from the executor. This is a plait bug; please "
                "report it. Re-run the row to get its output."
            )
    ordered = [outputs.get(i) for i in range(count)]
    if failures:
        raise BatchError(failures, ordered)
    return ordered


async def stream_call(spec: CallSpec) -> AsyncIterator[BatchResult]:
    """Run the call; yield a BatchResult per row as rows finish (or in order)."""
    prepared = _Prepared(spec)
    results = _results(prepared)
    try:
        if not prepared.settings.preserve_order:
            async for result in results:
                yield _batch_result(prepared.inputs, result)
            return
        waiting: dict[int, RowResult] = {}
        next_index = 0
        async for result in results:
            waiting[result.index] = result
            while next_index in waiting:
                yield _batch_result(prepared.inputs, waiting.pop(next_index))
                next_index += 1
    finally:
        await results.aclose()


def _batch_result(inputs: CallInputs, result: RowResult) -> BatchResult:
    original = inputs.originals[result.index] if inputs.originals is not None else None
    return BatchResult(result.index, original, result.output, result.error)


def _attach(prepared: _Prepared, result: RowResult) -> Any:
    if result.record is None:
        return result.output
    from plait.optim.record import attach_record

    return attach_record(result.output, prepared.module, prepared.graph, result.record)


def _check_aliases(graph: InferenceGraph, settings: ResolvedSettings, module: Module) -> None:
    known = set(settings.resources.aliases())
    for node in graph.llm_nodes():
        if node.alias not in known:
            hint = (
                "No resources are bound: call pipeline.bind(resources=ResourceConfig(...)), "
                "use `async with ExecutionSettings(resources=...)`, or pass resources= to run()."
                if not known else
                f"Add endpoints={{'{node.alias}': OpenAIEndpointConfig(model=...)}} to the "
                "ResourceConfig, or change the module's alias."
            )
            raise ConfigError(
                f"{type(module).__name__} node '{node.id}' (LLMInference at {node.source}) uses "
                f"alias '{node.alias}', which is not in the ResourceConfig (known: "
                f"{sorted(known)}). {hint}"
            )

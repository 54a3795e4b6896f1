"""Calling a pipeline: ``await pipeline(x)``, batches, streams, ``run()`` and ``run_sync``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from plait.errors import BatchError, ConfigError, PlaitError
from plait.execution.contract import Job, get_executor
from plait.execution.inputs import CallInputs, split_inputs
from plait.execution.report import RunObserver
from plait.execution.results import BatchResult, RowResult
from plait.execution.settings import ExecutionSettings, ResolvedSettings, resolve_settings
from plait.execution.shared import loop_manager
from plait.graph import InferenceGraph
from plait.module import Module

__all__ = ["PendingCall", "run", "run_sync"]


class PendingCall:
    """A pipeline call not yet started.

    ``await`` it for the result, or ``async for`` over it to receive ``BatchResult``s as rows
    finish.

    Awaiting a single input returns the output or raises the row's error. Awaiting a batch
    returns the outputs in input order, or raises ``BatchError`` carrying every failure and
    the successful outputs; with ``streaming=True`` it returns ``BatchResult``s instead.
    """

    __slots__ = ("args", "kwargs", "module", "overrides")

    def __init__(self, module: Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                 overrides: dict[str, Any] | None = None) -> None:
        self.module = module
        self.args = args
        self.kwargs = kwargs
        self.overrides = overrides or {}

    def __await__(self) -> Any:
        return _await_call(self).__await__()

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        return _stream_call(self)


def run(module: Module, *args: Any, **settings: Any) -> PendingCall:
    """Run ``module`` on ``args`` with per-call settings (highest priority).

    Args:
        module: The pipeline.
        *args: Inputs, as for ``module(...)`` (a list is a batch).
        **settings: ``ExecutionSettings`` fields: ``resources``, ``executor``,
            ``max_inflight``, ``checkpoint_dir``, ``streaming``, ...

    Example:
        >>> result = await run(pipeline, "text", resources=config, max_inflight=32)
        >>> async for r in run(pipeline, rows, resources=config):
        ...     print(r.index, r.ok)
    """
    ExecutionSettings.check_keys(settings)
    return PendingCall(module, args, {}, settings)


def run_sync(module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a call to completion from synchronous code, even inside a running event loop.

    The call runs on plait's own event loop in a daemon thread, so it works the same in a
    script and in Jupyter (whose loop is already running), and clients shared by an
    ``ExecutionSettings`` block stay on one loop across calls. The caller's context
    (active ExecutionSettings) is carried over.
    """
    loop = _background_loop()
    ctx = contextvars.copy_context()
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def start() -> None:
        task = loop.create_task(_await_call(PendingCall(module, args, kwargs)), context=ctx)
        task.add_done_callback(lambda t: _copy_outcome(t, done))

    loop.call_soon_threadsafe(start)
    return done.result()


def _copy_outcome(task: asyncio.Task[Any], done: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        done.cancel()
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(task.result())


_loop_holder: list[asyncio.AbstractEventLoop] = []
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    with _loop_lock:
        if not _loop_holder or _loop_holder[0].is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="plait-loop", daemon=True)
            thread.start()
            _loop_holder[:] = [loop]
        return _loop_holder[0]


class _Prepared:
    def __init__(self, call: PendingCall) -> None:
        self.module = call.module
        self.settings, self.context = resolve_settings(call.overrides, call.module.__dict__.get(
            "_bound"))
        self.inputs: CallInputs = split_inputs(call.module, call.args, call.kwargs)
        self.graph: InferenceGraph | None = None
        if self.inputs.total != 0:
            self.graph = call.module.graph_for(*self.inputs.shape)
            _check_aliases(self.graph, self.settings, call.module)


async def _results(prepared: _Prepared) -> AsyncGenerator[RowResult, None]:
    """Run the prepared call; yield RowResults as rows finish."""
    if prepared.graph is None:
        return
    settings = prepared.settings
    executor = get_executor(settings.executor)
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
        async for done in checkpoint.completed():
            observer.row_done(done)
            yield done
        async for result in executor.execute(job):
            await checkpoint.row_finished(result)
            observer.row_done(result)
            yield result
    finally:
        await checkpoint.aclose()
        observer.finish(executor, time.perf_counter() - started)


async def _await_call(call: PendingCall) -> Any:
    prepared = _Prepared(call)
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


async def _stream_call(call: PendingCall) -> AsyncIterator[BatchResult]:
    prepared = _Prepared(call)
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

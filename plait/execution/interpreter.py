"""What each node does: the ONE place that gives graph nodes their meaning.

Executors decide where and when rows run; inside every executor (local asyncio, or a Ray
worker) rows run through ``Interpreter.run_row``. A row's nodes start as soon as their inputs
are ready, so independent LLM calls of a row overlap, and nothing waits for other rows.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from plait.clients.base import LLMRequest, Usage
from plait.errors import NodeExecutionError, TraceError
from plait.events import Event, EventSink
from plait.graph import FormatField, GraphNode, InferenceGraph, Ref

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["Interpreter", "Router", "RowOutcome", "resolve_import_path"]

_MISSING: Any = object()


class Router(Protocol):
    """Sends LLM requests for an interpreter (one pool per alias behind it)."""

    async def complete(
        self,
        alias: str,
        request: LLMRequest,
        *,
        parse: Callable[[str], Any],
        node_id: str,
        row: int | None,
    ) -> tuple[Any, Usage]:
        """Send ``request`` to ``alias``; return the parsed reply and its usage."""
        ...


class RowOutcome:
    """A finished row: output, token usage and (when recording) every node's value."""

    __slots__ = ("input_tokens", "output", "output_tokens", "values")

    def __init__(self, output: Any, input_tokens: int, output_tokens: int,
                 values: dict[str, Any] | None) -> None:
        self.output = output
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.values = values


class _Compiled:
    __slots__ = ("dependents", "deps", "fn", "index", "is_async", "kwargs", "node", "plain_args")

    def __init__(self, index: int, node: GraphNode) -> None:
        self.index = index
        self.node = node
        self.deps: list[int] = []
        self.dependents: list[int] = []
        self.fn: Any = None
        self.is_async = False
        # Most nodes take a flat tuple of refs/literals: resolve those without recursion.
        self.plain_args = not node.kwargs and all(
            isinstance(a, Ref) or not isinstance(a, list | tuple | dict) for a in node.args
        )
        self.kwargs = node.kwargs


class Interpreter:
    """Runs rows of one graph for one root module.

    Args:
        graph: The traced graph.
        root: The module it was traced from (LLM nodes read their current settings from it).
        router: Where LLM requests go.
        events: Optional event sink (profiling, metrics); None costs nothing.
        max_concurrent: Optional cap on LLM requests in flight across all aliases.
    """

    def __init__(
        self,
        graph: InferenceGraph,
        root: Module,
        router: Router,
        *,
        events: EventSink | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        self.graph = graph
        self.root = root
        self.router = router
        self.events = events
        self._global = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        ids = list(graph.nodes)
        self._index = {nid: i for i, nid in enumerate(ids)}
        self._nodes = [_Compiled(i, graph.nodes[nid]) for i, nid in enumerate(ids)]
        for c in self._nodes:
            c.deps = [self._index[d] for d in c.node.deps]
            for d in c.deps:
                self._nodes[d].dependents.append(c.index)
            self._bind(c)
        self._dep_counts = [len(c.deps) for c in self._nodes]
        self._roots = [c.index for c in self._nodes if not c.deps]

    # --- compile: resolve modules and functions once per graph -----------------------------
    def _bind(self, c: _Compiled) -> None:
        node = c.node
        if node.kind == "llm":
            c.fn = self.root.get_submodule(node.target)
            c.is_async = True
        elif node.kind == "module":
            module = self.root.get_submodule(node.target)
            c.fn = module.forward
            c.is_async = inspect.iscoroutinefunction(module.forward)
        elif node.kind == "call":
            c.fn = resolve_import_path(node.target)
            c.is_async = inspect.iscoroutinefunction(c.fn)
        elif node.kind == "param":
            c.fn = self.root.get_parameter(node.target)

    # --- one row ---------------------------------------------------------------------------
    async def run_row(
        self,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        row: int | None = None,
        preset: Mapping[str, Any] | None = None,
        record: bool = False,
        on_node: Callable[[str, Any, Usage | None], None] | None = None,
    ) -> RowOutcome:
        """Run one row and return its outcome.

        Args:
            args: Positional inputs of forward().
            kwargs: Keyword inputs of forward().
            row: The row index (for events and errors).
            preset: Node id -> value already known (from a checkpoint); not re-run.
            record: Keep every node's value in the outcome (for backward()).
            on_node: Called after each LLM node completes (for checkpoints).

        Raises:
            NodeExecutionError: The first node that failed, with its cause.
        """
        n = len(self._nodes)
        values: list[Any] = [_MISSING] * n
        remaining = self._dep_counts.copy()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        tasks: set[asyncio.Task[Any]] = set()
        usage = [0, 0]
        outstanding = [n]
        events = self.events
        started = time.perf_counter()
        nodes = self._nodes
        # Nodes whose inputs are all known, not yet started. The scheduler is a loop over this
        # queue, never a recursion per node: a chain of 10,000 string steps is 10,000
        # iterations, not 10,000 nested calls (which would overflow the stack).
        ready: deque[int] = deque(self._roots)

        def fail(c: _Compiled, exc: BaseException) -> None:
            if not done.done():
                done.set_exception(_node_error(c.node, exc))

        def complete(i: int, value: Any) -> None:
            values[i] = value
            outstanding[0] -= 1
            for j in nodes[i].dependents:
                remaining[j] -= 1
                if remaining[j] == 0:
                    ready.append(j)

        def drain() -> None:
            # Runs every ready synchronous node and launches the asynchronous ones.
            while ready and not done.done():
                i = ready.popleft()
                c = nodes[i]
                if preset is not None and c.node.id in preset:
                    complete(i, preset[c.node.id])
                elif c.is_async:
                    task = loop.create_task(self._run_async(c, values, args, kwargs, row, usage,
                                                            on_node))
                    tasks.add(task)
                    task.add_done_callback(lambda t, c=c: finished(t, c))
                else:
                    try:
                        value = self._run_sync(c, values, args, kwargs)
                    except Exception as exc:
                        fail(c, exc)
                        return
                    complete(i, value)
            if outstanding[0] == 0 and not done.done():
                done.set_result(None)

        def finished(task: asyncio.Task[Any], c: _Compiled) -> None:
            # A done-callback must never raise: the loop would only log it and the row would
            # wait forever. Any failure here ends the row instead.
            tasks.discard(task)
            if done.done():
                return
            if task.cancelled():  # cancelled by someone else: the row cannot finish
                done.cancel()
                return
            try:
                exc = task.exception()
                if exc is not None:
                    fail(c, exc)
                    return
                complete(c.index, task.result())
                drain()
            except Exception as exc:  # handed to the row's awaiter
                fail(c, exc)

        try:
            try:
                drain()
            except Exception as exc:  # same contract as in finished()
                if not done.done():
                    done.set_exception(exc)
            await done
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        if events is not None:
            events(Event("row", started, time.perf_counter(), row=row))
        output = _materialize(self.graph.output, values, self._index)
        recorded = None
        if record:
            recorded = {c.node.id: values[c.index] for c in self._nodes}
        return RowOutcome(output, usage[0], usage[1], recorded)

    # --- node kinds ---------------------------------------------------------------------------
    def _run_sync(self, c: _Compiled, values: list[Any], args: tuple[Any, ...],
                  kwargs: Mapping[str, Any]) -> Any:
        node = c.node
        kind = node.kind
        if kind == "input":
            target = node.target
            return args[target] if isinstance(target, int) else kwargs[target]
        if kind == "param":
            return c.fn.value
        a = self._args(c, values)
        if kind == "format":
            return _format(node.target, a)
        if kind == "getitem":
            return a[0][node.target]
        if kind == "getattr":
            return _get_attribute(a[0], node.target)
        if kind == "method":
            kw = _materialize(c.kwargs, values, self._index)
            return getattr(a[0], node.target)(*a[1:], **kw)
        kw = _materialize(c.kwargs, values, self._index)
        return c.fn(*a, **kw)  # "call" and sync "module"

    async def _run_async(
        self,
        c: _Compiled,
        values: list[Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        row: int | None,
        usage: list[int],
        on_node: Callable[[str, Any, Usage | None], None] | None,
    ) -> Any:
        node = c.node
        a = self._args(c, values)
        if node.kind != "llm":
            kw = _materialize(c.kwargs, values, self._index)
            return await c.fn(*a, **kw)
        prompt = a[0]
        if not isinstance(prompt, str):
            raise TraceError(
                f"The prompt is a {type(prompt).__name__}, not a string. Format structured "
                "values into text first, e.g. with an f-string or plait.functional.to_json."
            )
        module = c.fn
        request = module.build_request(prompt)
        events = self.events
        ready = time.perf_counter() if events is not None else 0.0
        if events is not None:
            events(Event("ready", ready, ready, alias=node.alias, node_id=node.id, row=row))
        if self._global is not None:
            async with self._global:
                value, used = await self.router.complete(
                    node.alias or "", request, parse=module.parse, node_id=node.id, row=row)
        else:
            value, used = await self.router.complete(
                node.alias or "", request, parse=module.parse, node_id=node.id, row=row)
        usage[0] += used.input_tokens
        usage[1] += used.output_tokens
        if events is not None:
            events(Event("node", ready, time.perf_counter(), alias=node.alias, node_id=node.id,
                         row=row, attrs={"kind": "llm"}))
        if on_node is not None:
            on_node(node.id, value, used)
        return value

    def _args(self, c: _Compiled, values: list[Any]) -> tuple[Any, ...]:
        if c.plain_args:
            index = self._index
            return tuple(values[index[a.node]] if isinstance(a, Ref) else a
                         for a in c.node.args)
        return tuple(_materialize(a, values, self._index) for a in c.node.args)


def _materialize(value: Any, values: list[Any], index: dict[str, int]) -> Any:
    if isinstance(value, Ref):
        return values[index[value.node]]
    if isinstance(value, list):
        return [_materialize(v, values, index) for v in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, tuple):
        return tuple(_materialize(v, values, index) for v in value)  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return {k: _materialize(v, values, index) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    return value


def _get_attribute(base: Any, name: str) -> Any:
    if isinstance(base, dict):
        mapping = cast(dict[str, Any], base)
        if name in mapping:
            return mapping[name]  # value.key works on dict outputs as on models
    return getattr(cast(object, base), name)


def _format(segments: tuple[str | FormatField, ...], args: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for seg in segments:
        if isinstance(seg, str):
            parts.append(seg)
            continue
        value = args[seg.index]
        if seg.conversion == "r":
            value = repr(value)
        elif seg.conversion == "s":
            value = str(value)
        parts.append(format(value, seg.spec))
    return "".join(parts)


def _node_error(node: GraphNode, exc: BaseException) -> BaseException:
    if isinstance(exc, NodeExecutionError) or not isinstance(exc, Exception):
        return exc  # already attributed, or KeyboardInterrupt/CancelledError: passed through
    module_path = node.target if node.kind in ("llm", "module") else node.module_path
    err = NodeExecutionError(
        node_id=node.id, module_path=module_path, module_type=node.module_type,
        alias=node.alias, source=node.source, cause=exc,
    )
    # The original exception (with the user's frames in its traceback) is the cause, so the
    # printed traceback shows the line in the user's leaf module or op that failed.
    err.__cause__ = exc
    return err


def resolve_import_path(target: str) -> Callable[..., Any]:
    """Import ``"package.module:qualname"`` and return the object."""
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if hasattr(obj, "__plait_op__"):
        obj = obj.__plait_op__
    return obj

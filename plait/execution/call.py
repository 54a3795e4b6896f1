"""Calling a pipeline: ``await pipeline(x)``, batches, streams, ``run()`` and ``run_sync``.

The calling rule (README, "Running"):

* While tracing, a call is recorded in the graph (``Tracer.call_module``).
* From synchronous code (no event loop running in this thread), a module that is not bound
  and makes no LLM call runs at once and returns its result, as in PyTorch.
* Every other call returns a ``PendingCall``: a coroutine, so ``await``, ``asyncio.run``,
  ``asyncio.create_task`` and ``asyncio.gather`` take it, and ``async for`` streams it.
  Using one as a value (``str``, ``bool``, f-strings) raises ``CallError``, and one that is
  dropped without running warns like a coroutine that was never awaited.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import warnings
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import TYPE_CHECKING, Any, NoReturn

from plait.errors import CallError
from plait.execution.results import BatchResult
from plait.execution.running import CallSpec, await_call, stream_call
from plait.execution.settings import ExecutionSettings

if TYPE_CHECKING:
    from plait.module import Module

__all__ = ["PendingCall", "call_module", "run", "run_sync"]

_NEW, _AWAITED, _STREAMED, _CLOSED = "new", "awaited", "streamed", "closed"


class PendingCall(Coroutine[Any, Any, Any]):
    """A pipeline call not yet run: a coroutine that can also be streamed.

    ``await`` it (or pass it to ``asyncio.run`` / ``asyncio.create_task``) for the result, or
    ``async for`` over it to receive ``BatchResult``s as rows finish. It runs once.

    Awaiting a single input returns the output or raises the row's error. Awaiting a batch
    returns the outputs in input order, or raises ``BatchError`` carrying every failure and
    the successful outputs; with ``streaming=True`` it returns ``BatchResult``s instead.
    """

    __slots__ = ("_coro", "_spec", "_state")

    def __init__(self, spec: CallSpec) -> None:
        self._spec = spec
        self._coro: Coroutine[Any, Any, Any] | None = None
        self._state = _NEW

    @property
    def module(self) -> Module:
        """The called module."""
        return self._spec.module

    @property
    def args(self) -> tuple[Any, ...]:
        """The call's positional arguments."""
        return self._spec.args

    @property
    def kwargs(self) -> dict[str, Any]:
        """The call's keyword arguments."""
        return self._spec.kwargs

    @property
    def overrides(self) -> dict[str, Any]:
        """The call's own settings (``run(..., **settings)``)."""
        return self._spec.overrides

    @property
    def __name__(self) -> str:  # pyright: ignore[reportIncompatibleVariableOverride]
        # asyncio's task repr names the coroutine by its __name__.
        return f"{type(self._spec.module).__name__}.__call__"

    # --- the coroutine protocol: delegated to one await_call() coroutine -------------------
    def _coroutine(self) -> Coroutine[Any, Any, Any]:
        if self._coro is None:
            self._check_new()
            self._state = _AWAITED
            self._coro = await_call(self._spec)
        return self._coro

    def _check_new(self) -> None:
        if self._state != _NEW:
            raise CallError(f"This call of {type(self._spec.module).__name__} was already "
                            f"{self._state}; a call runs once. Call the module again for "
                            "another run.")

    def __await__(self) -> Generator[Any, None, Any]:
        self._check_new()  # each `await` asks anew; asyncio's tasks use send() instead
        return self._coroutine().__await__()

    def send(self, value: Any) -> Any:
        """Advance the call (used by asyncio's tasks)."""
        return self._coroutine().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """Raise an exception inside the call (used by asyncio for cancellation)."""
        coro = self._coroutine()
        if val is None and tb is None:
            return coro.throw(typ)
        return coro.throw(typ, val, tb)  # pyright: ignore[reportDeprecated]

    def close(self) -> None:
        """Stop the call; a call closed before it started never runs."""
        if self._coro is not None:
            self._coro.close()
        elif self._state == _NEW:
            self._state = _CLOSED

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        self._check_new()
        self._state = _STREAMED
        return stream_call(self._spec)

    # --- misuse: a call used as if it were its result ---------------------------------------
    def _not_a_value(self, use: str) -> NoReturn:
        self.close()
        name = type(self._spec.module).__name__
        raise CallError(
            f"{use} was applied to a call of {name} that has not run: calling a module that is "
            "bound or makes LLM calls, or calling any module while an event loop is running, "
            f"returns an awaitable. Use `await pipeline(x)` in async code, "
            f"`asyncio.run(pipeline(x))` or `pipeline.run_sync(x)` in synchronous code."
        )

    def __str__(self) -> str:
        self._not_a_value("str()")

    def __format__(self, spec: str) -> str:
        self._not_a_value("format() (an f-string)")

    def __bool__(self) -> bool:
        self._not_a_value("bool() (an if/while test)")

    def __repr__(self) -> str:
        return (f"<PendingCall of {type(self._spec.module).__name__} ({self._state}): await it, "
                "async-for it, or use run_sync>")

    def __del__(self) -> None:
        if getattr(self, "_state", None) == _NEW:
            try:
                warnings.warn(
                    f"The call of {type(self._spec.module).__name__} was never awaited, so it "
                    "never ran. Await it, pass it to asyncio.run(), or use run_sync().",
                    RuntimeWarning, stacklevel=2,
                )
            except Exception:  # interpreter shutting down: nothing to warn to
                pass


def call_module(module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``module(*args, **kwargs)`` outside tracing: its result now, or a ``PendingCall``.

    The result comes at once when no event loop runs in this thread, the module is not bound,
    and its graph makes no LLM call (see the module docstring for the whole rule).
    """
    spec = CallSpec(module, args, kwargs)
    if module.__dict__.get("_bound") is None and _running_loop() is None:
        inputs = spec.split()  # a generator is read once: the spec keeps the rows
        if inputs.total != 0 and not module.graph_for(*inputs.shape).llm_nodes():
            return _run_on_plait_loop(spec)
    return PendingCall(spec)


def run(module: Module, *args: Any, **settings: Any) -> PendingCall:
    """Run ``module`` on ``args`` with per-call settings (highest priority).

    Always returns an awaitable, whatever the module does.

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
    return PendingCall(CallSpec(module, args, {}, settings))


def run_sync(module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a call to completion from synchronous code, even inside a running event loop.

    The call runs on plait's own event loop in a daemon thread, so it works the same in a
    script and in Jupyter (whose loop is already running), and clients shared by an
    ``ExecutionSettings`` block stay on one loop across calls. The caller's context
    (active ExecutionSettings) is carried over.

    Raises:
        CallError: When called from code running on plait's own loop (a leaf module's
            forward() inside a ``run_sync`` call), which would wait for itself forever.
    """
    return _run_on_plait_loop(CallSpec(module, args, kwargs))


def _run_on_plait_loop(spec: CallSpec) -> Any:
    loop = _background_loop()
    if _running_loop() is loop:
        name = type(spec.module).__name__
        raise CallError(
            f"{name} was run synchronously (run_sync, or a call that runs at once) from code "
            "that is itself running on plait's event loop, such as a leaf module's forward() "
            "inside a run_sync call; it would wait for itself forever. Make that forward "
            f"`async def` and `await` the call ({name.lower()}(...)), or make {name} a "
            "submodule called in the traced forward()."
        )
    ctx = contextvars.copy_context()
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def start() -> None:
        task = loop.create_task(await_call(spec), context=ctx)
        task.add_done_callback(lambda t: _copy_outcome(t, done))

    loop.call_soon_threadsafe(start)
    return done.result()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


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

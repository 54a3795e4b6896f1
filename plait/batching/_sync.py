"""``Batcher``: a thread-safe micro-batcher with a private event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections import deque
from typing import Any, Generic, TypeVar

from plait.batching._core import BatchEngine
from plait.batching._types import (
    Backpressure,
    BatcherClosedError,
    BatcherStats,
    Executor,
)
from plait.errors import BatchingError

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")

_EXIT_TIMEOUT_S = 5.0  # at interpreter exit or GC, never wait longer than this for a drain


class Batcher(Generic[T, R]):
    """Batches items from many threads (and coroutines) into one executor call per batch.

    ``run`` may be called from any number of threads at once: concurrent callers are
    collected into batches of up to ``max_batch`` items, each waiting at most ``max_wait_ms``
    for company. The batching itself happens on a private event loop in a daemon thread,
    started on first use and stopped by ``close()``, by garbage collection or at interpreter
    exit. Arguments are those of :class:`plait.batching.AsyncBatcher`.

    Inside a single event loop, :class:`AsyncBatcher` is faster: it avoids the hop to the
    batcher's thread.

    Do not call ``run`` from inside this batcher's own executor with
    ``max_concurrent_batches=1``: the executor would wait for a batch that cannot start.

    Example:
        >>> batcher = Batcher[str, str](max_batch=32, max_wait_ms=10)
        >>> def batch_executor(items: list[str]) -> list[str]:
        ...     return [s + "!" for s in items]
        >>> batcher.run("hi", executor=batch_executor)
        'hi!'
        >>> batcher.close()
    """

    def __init__(
        self,
        max_batch: int = 32,
        max_wait_ms: float = 10,
        *,
        executor: Executor[T, R] | None = None,
        max_queue: int | None = None,
        backpressure: Backpressure = "block",
        max_concurrent_batches: int | None = 1,
        sync_in_thread: bool = True,
    ) -> None:
        self._engine = BatchEngine[T, R](
            max_batch,
            max_wait_ms,
            executor=executor,
            max_queue=max_queue,
            backpressure=backpressure,
            max_concurrent_batches=max_concurrent_batches,
            sync_in_thread=sync_in_thread,
        )
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize[..., Any] | None = None
        self._closed = False
        self._inbox: deque[tuple[T, Executor[T, R], concurrent.futures.Future[R]]] = deque()
        self._wake_pending = False

    def run(self, item: T, executor: Executor[T, R] | None = None, *,
            timeout: float | None = None) -> R:
        """Add one item to the next batch and block until its output is ready.

        Args:
            item: The input.
            executor: The batch function for this item; defaults to the batcher's.
            timeout: Seconds to wait for the output; None waits as long as it takes.

        Returns:
            The executor's output for this item.

        Raises:
            QueueFullError: The queue was full and ``backpressure="drop"``.
            ExecutorOutputError: The executor returned the wrong number of outputs.
            BatcherClosedError: The batcher was closed.
            BatchingError: No output within ``timeout`` (the item is withdrawn if its batch
                has not started), or ``run`` was called on the batcher's own thread.
            Exception: Whatever the executor raised for this item's batch.
        """
        waiter = self._send(item, executor)
        try:
            return waiter.result(timeout)
        except concurrent.futures.TimeoutError:
            waiter.cancel()
            raise BatchingError(
                f"Batcher.run() got no output within timeout={timeout}s. The executor may "
                "be slow or stuck; raise the timeout or check the executor."
            ) from None

    async def submit(self, item: T, executor: Executor[T, R] | None = None) -> R:
        """Like ``run`` but awaitable from any event loop (the batching loop is shared)."""
        return await asyncio.wrap_future(self._send(item, executor))

    def _send(self, item: T, executor: Executor[T, R] | None) -> concurrent.futures.Future[R]:
        if self._closed:
            raise BatcherClosedError()
        loop = self._loop or self._start()
        if threading.current_thread() is self._thread:
            raise BatchingError(
                "Batcher.run()/submit() was called on the batcher's own event-loop thread "
                "(from an async executor?); it would deadlock. Call the executor's logic "
                "directly instead."
            )
        waiter: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._inbox.append((item, self._engine.resolve(executor), waiter))
        # One loop wake-up per burst rather than per item: waking the loop writes to a pipe.
        # Flag races are benign: the drain clears the flag before it empties the inbox, so
        # an item appended before the flag was seen set is always drained.
        if not self._wake_pending:
            self._wake_pending = True
            try:
                loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:  # the loop was stopped between the check and the call
                raise BatcherClosedError() from None
        return waiter

    def _drain_inbox(self) -> None:
        self._wake_pending = False
        inbox, enqueue = self._inbox, self._engine.enqueue
        while inbox:
            enqueue(*inbox.popleft())

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._closed:
                raise BatcherClosedError()
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            self._engine.bind(loop)
            thread = threading.Thread(
                target=_run_loop, args=(loop,), name="plait-batcher", daemon=True
            )
            thread.start()
            self._thread = thread
            # Stops the thread when the Batcher is collected or the interpreter exits; it
            # holds no reference to self, or the Batcher could never be collected.
            self._finalizer = weakref.finalize(
                self, _shutdown, loop, thread, self._engine, _EXIT_TIMEOUT_S
            )
            self._loop = loop
            return loop

    def close(self, timeout: float | None = None) -> None:
        """Run every item already accepted, refuse new ones, stop the thread. Idempotent.

        Args:
            timeout: Seconds to wait for in-flight batches; None waits as long as it takes.
        """
        with self._start_lock:
            self._closed = True
            self._engine.closed = True
            finalizer = self._finalizer
        if finalizer is None:
            return
        if threading.current_thread() is self._thread:
            raise BatchingError(
                "Batcher.close() was called on the batcher's own thread (from an async "
                "executor?); it would deadlock. Close it from another thread."
            )
        finalizer.detach()
        _shutdown(self._loop, self._thread, self._engine, timeout)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def stats(self) -> BatcherStats:
        """Counters since creation: batches, items, average batch size, queue high water."""
        return self._engine.stats()


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


async def _drain(loop: asyncio.AbstractEventLoop, engine: BatchEngine[T, R]) -> None:
    await engine.drain()
    await loop.shutdown_default_executor()


def _shutdown(
    loop: asyncio.AbstractEventLoop | None,
    thread: threading.Thread | None,
    engine: BatchEngine[T, R],
    timeout: float | None,
) -> None:
    if loop is None or thread is None or loop.is_closed():
        return
    if thread.is_alive():
        done = asyncio.run_coroutine_threadsafe(_drain(loop, engine), loop)
        try:
            done.result(timeout)
        except concurrent.futures.TimeoutError:
            done.cancel()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
    if not thread.is_alive():
        loop.close()

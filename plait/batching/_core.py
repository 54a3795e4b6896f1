"""The batching engine: collects items into batches on one event loop and runs executors.

Every caller is represented by a *waiter* (an ``asyncio.Future`` for async callers, a
``concurrent.futures.Future`` for threads); the engine never creates a task per item. A batch
is sealed when it reaches ``max_batch`` items or when ``max_wait_ms`` has passed since its
first item, and then runs as one task. All engine state is touched only on its loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Generic, Protocol, TypeVar, cast

from plait.batching._types import (
    Backpressure,
    BatcherClosedError,
    BatcherStats,
    Executor,
    ExecutorOutputError,
    QueueFullError,
    executor_name,
)
from plait.errors import BatchingError
from plait.values import Value, error_of

T = TypeVar("T")
R = TypeVar("R")
R_contra = TypeVar("R_contra", contravariant=True)

_SETTLE_RACES = (asyncio.InvalidStateError, concurrent.futures.InvalidStateError)
_BACKPRESSURE: tuple[Backpressure, ...] = ("block", "drop", "passthrough")


class Waiter(Protocol[R_contra]):
    """What the engine needs from a caller's future (asyncio or concurrent.futures)."""

    def done(self) -> bool: ...
    def set_result(self, result: R_contra, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class _Batch(Generic[T, R]):
    __slots__ = ("due", "executor", "items", "key", "sealed", "timer", "waiters")

    def __init__(self, executor: Executor[T, R], key: Hashable) -> None:
        self.executor = executor
        self.key = key
        self.items: list[T] = []
        self.waiters: list[Waiter[R]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.due = False  # max_wait passed; leaves as soon as a slot is free
        self.sealed = False  # no longer accepts items


def _settle_result(waiter: Waiter[R], result: R) -> None:
    if not waiter.done():
        try:
            waiter.set_result(result)
        except _SETTLE_RACES:  # a thread cancelled its future between done() and here
            pass


def _settle_error(waiter: Waiter[R], error: BaseException) -> None:
    if not waiter.done():
        try:
            waiter.set_exception(error)
        except _SETTLE_RACES:
            pass


def validate_options(max_batch: int, max_wait_ms: float, max_queue: int | None,
                     backpressure: str, max_concurrent_batches: int | None) -> None:
    """Raise ``BatchingError`` naming the first bad option."""
    if max_batch < 1:
        raise BatchingError(f"max_batch must be >= 1, got {max_batch}.")
    if max_wait_ms < 0:
        raise BatchingError(f"max_wait_ms must be >= 0, got {max_wait_ms}.")
    if max_queue is not None and max_queue < 1:
        raise BatchingError(f"max_queue must be >= 1, got {max_queue}. Use None for no limit.")
    if backpressure not in _BACKPRESSURE:
        raise BatchingError(
            f"backpressure must be one of {', '.join(map(repr, _BACKPRESSURE))}, "
            f"got {backpressure!r}."
        )
    if max_concurrent_batches is not None and max_concurrent_batches < 1:
        raise BatchingError(
            f"max_concurrent_batches must be >= 1, got {max_concurrent_batches}. "
            "Use None for no limit."
        )


class BatchEngine(Generic[T, R]):
    """Loop-bound batching state shared by ``AsyncBatcher`` and the thread-safe ``Batcher``.

    Every method except ``stats`` must be called on the loop given to ``bind``.
    """

    def __init__(
        self,
        max_batch: int,
        max_wait_ms: float,
        *,
        executor: Executor[T, R] | None,
        max_queue: int | None,
        backpressure: Backpressure,
        max_concurrent_batches: int | None,
        sync_in_thread: bool,
    ) -> None:
        validate_options(max_batch, max_wait_ms, max_queue, backpressure, max_concurrent_batches)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.backpressure: Backpressure = backpressure
        self.max_concurrent = max_concurrent_batches
        self.sync_in_thread = sync_in_thread
        self.default_executor = executor
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._is_async: dict[Hashable, bool] = {}
        self._batches = self._items = self._high_water = 0
        self._dropped = self._passthrough = self._failed = 0
        self._reset()

    def _reset(self) -> None:
        self._open: dict[Hashable, _Batch[T, R]] = {}
        self._ready: deque[_Batch[T, R]] = deque()  # full batches waiting for a slot
        self._due: deque[_Batch[T, R]] = deque()  # open batches past their deadline
        self._blocked: deque[tuple[T, Executor[T, R], Waiter[R]]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued = 0
        self._running = 0
        self._dispatching = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to ``loop``; allowed again only once the previous loop is closed."""
        if self.loop is not None and not self.loop.is_closed():
            raise BatchingError(
                "This batcher is already bound to another event loop that is still open. "
                "Use one AsyncBatcher per event loop, or the thread-safe Batcher to share "
                "one between loops and threads."
            )
        self._reset()  # whatever was pending died with the old loop
        self.loop = loop

    def resolve(self, executor: Executor[T, R] | None) -> Executor[T, R]:
        """The executor to use for one call, or a clear error when there is none."""
        chosen = executor if executor is not None else self.default_executor
        if chosen is None:
            raise BatchingError(
                "No executor for this item: pass executor=... to submit()/run(), or give "
                "the batcher a default with Batcher(..., executor=fn)."
            )
        return chosen

    def enqueue(self, item: T, executor: Executor[T, R], waiter: Waiter[R]) -> None:
        """Admit one item (or apply backpressure); ``waiter`` later gets its output."""
        if self.closed:
            _settle_error(waiter, BatcherClosedError())
            return
        if self.max_queue is not None and self._queued >= self.max_queue:
            if self.backpressure == "drop":
                self._dropped += 1
                _settle_error(waiter, QueueFullError(self.max_queue))
            elif self.backpressure == "passthrough":
                self._passthrough += 1
                batch = _Batch[T, R](executor, None)
                batch.items.append(item)
                batch.waiters.append(waiter)
                self._start(batch, counted=False)
            else:
                self._blocked.append((item, executor, waiter))
                # Nobody can join the open batches until room appears; waiting for their
                # deadline would only stall the blocked callers.
                self._mark_all_due()
                self._dispatch()
            return
        self._admit(item, executor, waiter)

    def _admit(self, item: T, executor: Executor[T, R], waiter: Waiter[R]) -> None:
        key = self._key(executor)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(executor, key)
            loop = cast(asyncio.AbstractEventLoop, self.loop)
            batch.timer = loop.call_at(loop.time() + self.max_wait, self._on_deadline, batch)
        batch.items.append(item)
        batch.waiters.append(waiter)
        self._queued += 1
        if self._queued > self._high_water:
            self._high_water = self._queued
        if len(batch.items) >= self.max_batch:
            self._seal(batch)
            self._ready.append(batch)
            self._dispatch()

    @staticmethod
    def _key(executor: Executor[T, R]) -> Hashable:
        try:
            hash(executor)
        except TypeError:  # e.g. an eq=True dataclass; identity is the best we can do
            return id(executor)
        return executor

    def _seal(self, batch: _Batch[T, R]) -> None:
        batch.sealed = True
        if batch.timer is not None:
            batch.timer.cancel()
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]

    def _on_deadline(self, batch: _Batch[T, R]) -> None:
        if not batch.sealed:
            self._mark_due(batch)
            self._dispatch()

    def _mark_due(self, batch: _Batch[T, R]) -> None:
        if not batch.due:
            batch.due = True
            self._due.append(batch)

    def _mark_all_due(self) -> None:
        for batch in self._open.values():
            self._mark_due(batch)

    def _has_slot(self) -> bool:
        return self.max_concurrent is None or self._running < self.max_concurrent

    def _next_batch(self) -> _Batch[T, R] | None:
        if self._ready:
            return self._ready.popleft()
        while self._due:
            batch = self._due.popleft()
            if not batch.sealed:
                self._seal(batch)
                return batch
        if self.closed and self._open:  # draining: nothing waits for its deadline
            batch = next(iter(self._open.values()))
            self._seal(batch)
            return batch
        return None

    def _dispatch(self) -> None:
        # Starting a batch can admit blocked items, which can fill a batch again: one loop
        # here instead of recursion.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while True:
                while self._has_slot() and (batch := self._next_batch()) is not None:
                    self._start(batch, counted=True)
                if not self._admit_blocked():
                    break
        finally:
            self._dispatching = False

    def _admit_blocked(self) -> bool:
        admitted = False
        limit = self.max_queue
        while self._blocked and (limit is None or self._queued < limit):
            item, executor, waiter = self._blocked.popleft()
            if not waiter.done():  # skip callers that gave up while blocked
                self._admit(item, executor, waiter)
                admitted = True
        if admitted or self._blocked:
            # Blocked callers have waited already: their batch leaves as soon as a slot is
            # free (it keeps filling until then) instead of starting a fresh max_wait.
            self._mark_all_due()
        return admitted

    def _start(self, batch: _Batch[T, R], *, counted: bool) -> None:
        if counted:
            self._queued -= len(batch.items)
            self._running += 1
        loop = cast(asyncio.AbstractEventLoop, self.loop)
        task = loop.create_task(self._execute(batch, counted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: _Batch[T, R], counted: bool) -> None:
        try:
            await self._run_batch(batch)
        finally:
            if counted:
                self._running -= 1
                self._dispatch()

    async def _run_batch(self, batch: _Batch[T, R]) -> None:
        items, waiters = batch.items, batch.waiters
        if any(w.done() for w in waiters):  # callers cancelled while queued
            live = [(i, w) for i, w in zip(items, waiters, strict=True) if not w.done()]
            items, waiters = [i for i, _ in live], [w for _, w in live]
            if not items:
                return
        self._batches += 1
        self._items += len(items)
        try:
            outputs = await self._call(batch.executor, items)
        except asyncio.CancelledError:
            error = BatchingError("The batcher's event loop was shut down while this batch ran.")
            for waiter in waiters:
                _settle_error(waiter, error)
            raise
        except Exception as exc:
            self._failed += 1
            for waiter in waiters:
                _settle_error(waiter, exc)
            return
        for waiter, output in zip(waiters, outputs, strict=True):
            if isinstance(output, Value) and output.is_error:
                # One item failed (e.g. OpenAIResponsesExecutor): only its caller sees it.
                _settle_error(waiter, error_of(output))
            else:
                _settle_result(waiter, output)

    async def _call(self, executor: Executor[T, R], items: list[T]) -> Sequence[R]:
        key = self._key(executor)
        is_async = self._is_async.get(key)
        if is_async is None:
            # An instance with ``async def __call__`` is an async executor too.
            is_async = inspect.iscoroutinefunction(executor) or inspect.iscoroutinefunction(
                type(executor).__call__
            )
            self._is_async[key] = is_async
        if not is_async and self.sync_in_thread:
            # Keep the loop free to collect the next batch while a blocking executor runs.
            result = await asyncio.to_thread(executor, items)
        else:
            result = executor(items)
        if inspect.isawaitable(result):
            result = await result
        try:
            count = len(result)
        except TypeError:
            count = None
        if count != len(items):
            raise ExecutorOutputError(executor_name(executor), len(items), count)
        return result

    async def drain(self) -> None:
        """Stop accepting items, run everything already accepted, wait for it to finish."""
        self.closed = True
        self._mark_all_due()
        self._dispatch()
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def stats(self) -> BatcherStats:
        """A snapshot of the counters (safe from any thread)."""
        batches, items = self._batches, self._items
        return BatcherStats(
            batches=batches,
            items=items,
            avg_batch_size=items / batches if batches else 0.0,
            queue_high_water=self._high_water,
            dropped=self._dropped,
            passthrough=self._passthrough,
            failed_batches=self._failed,
        )

"""``@autobatch``: turn a function over a list into a function over one item."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar, overload

from plait.batching._async import AsyncBatcher
from plait.batching._core import validate_options
from plait.batching._sync import Batcher
from plait.batching._types import Backpressure, BatcherStats, ExecutorOutputError, executor_name

__all__ = ["AsyncAutoBatched", "AutoBatched", "autobatch"]

T = TypeVar("T")
R = TypeVar("R")


def _checked(fn: object, items: list[Any], outputs: Sequence[R]) -> list[R]:
    if len(outputs) != len(items):
        raise ExecutorOutputError(executor_name(fn), len(items), len(outputs))
    return list(outputs)


class AutoBatched(Generic[T, R]):
    """A blocking batch function called one item at a time, from any number of threads.

    Made by ``@autobatch`` from ``def fn(items: list[T]) -> list[R]``.
    """

    __name__: str
    __qualname__: str

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], batcher: Batcher[T, R]) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self.batcher = batcher

    def __call__(self, item: T) -> R:
        """Batch ``item`` with concurrent callers and return its output."""
        return self.batcher.run(item)

    def batch(self, items: Sequence[T]) -> list[R]:
        """Call the wrapped function once with the whole list, bypassing the batcher."""
        items_list = list(items)
        return _checked(self._fn, items_list, self._fn(items_list))

    def close(self, timeout: float | None = None) -> None:
        """Finish pending items and stop the batcher's thread (also done at exit)."""
        self.batcher.close(timeout)

    def stats(self) -> BatcherStats:
        """The batcher's counters."""
        return self.batcher.stats()


class AsyncAutoBatched(Generic[T, R]):
    """A coroutine batch function awaited one item at a time.

    Made by ``@autobatch`` from ``async def fn(items: list[T]) -> list[R]``. Calls from one
    event loop are batched together (see :class:`AsyncBatcher`).
    """

    __name__: str
    __qualname__: str

    def __init__(
        self,
        fn: Callable[[list[T]], Coroutine[Any, Any, Sequence[R]]],
        batcher: AsyncBatcher[T, R],
    ) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self.batcher = batcher

    async def __call__(self, item: T) -> R:
        """Batch ``item`` with concurrent callers and return its output."""
        return await self.batcher.submit(item)

    async def batch(self, items: Sequence[T]) -> list[R]:
        """Await the wrapped function once with the whole list, bypassing the batcher."""
        items_list = list(items)
        return _checked(self._fn, items_list, await self._fn(items_list))

    async def close(self) -> None:
        """Finish pending items and refuse new ones."""
        await self.batcher.close()

    def stats(self) -> BatcherStats:
        """The batcher's counters."""
        return self.batcher.stats()


class _AutobatchDecorator:
    def __init__(self, **options: Any) -> None:
        self._options = options

    @overload
    def __call__(
        self, fn: Callable[[list[T]], Coroutine[Any, Any, Sequence[R]]]
    ) -> AsyncAutoBatched[T, R]: ...

    @overload
    def __call__(self, fn: Callable[[list[T]], Sequence[R]]) -> AutoBatched[T, R]: ...

    def __call__(self, fn: Callable[[list[T]], Any]) -> AutoBatched[T, R] | AsyncAutoBatched[T, R]:
        if inspect.iscoroutinefunction(fn):
            return AsyncAutoBatched(fn, AsyncBatcher[T, R](executor=fn, **self._options))
        return AutoBatched(fn, Batcher[T, R](executor=fn, **self._options))


def autobatch(
    max_batch: int = 32,
    max_wait_ms: float = 10,
    *,
    max_queue: int | None = None,
    backpressure: Backpressure = "block",
    max_concurrent_batches: int | None = 1,
    sync_in_thread: bool = True,
) -> _AutobatchDecorator:
    """Decorate a function over a list so that it can be called with one item at a time.

    Concurrent single-item calls are collected into batches (up to ``max_batch`` items, each
    waiting at most ``max_wait_ms``) and the function runs once per batch. It must return
    one output per input, in order. The arguments are those of :class:`AsyncBatcher`.

    A sync function gives a blocking, thread-safe ``f(item) -> R`` that batches across
    threads; an ``async def`` gives ``async f(item) -> R``. Either way ``f.batch(items)``
    calls the function with a whole list directly, and ``f.close()`` (awaited for async)
    stops the batcher; sync batchers are also stopped at interpreter exit.

    Example:
        >>> @autobatch(max_batch=32, max_wait_ms=10)
        ... def call_llm(prompts: list[str]) -> list[str]:
        ...     return [p.upper() for p in prompts]
        >>> call_llm("hello")
        'HELLO'
        >>> call_llm.batch(["a", "b"])
        ['A', 'B']
        >>> call_llm.close()
    """
    # Fail at decoration time, not on the first call.
    validate_options(max_batch, max_wait_ms, max_queue, backpressure, max_concurrent_batches)
    return _AutobatchDecorator(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        backpressure=backpressure,
        max_concurrent_batches=max_concurrent_batches,
        sync_in_thread=sync_in_thread,
    )

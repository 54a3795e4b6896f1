"""``AsyncBatcher``: micro-batching for coroutines that share one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Generic, TypeVar

from plait.batching._core import BatchEngine
from plait.batching._types import Backpressure, BatcherStats, Executor
from plait.errors import BatchingError

__all__ = ["AsyncBatcher"]

T = TypeVar("T")
R = TypeVar("R")


class AsyncBatcher(Generic[T, R]):
    """Collects items submitted by many coroutines into batches for one executor call.

    A batch leaves when it holds ``max_batch`` items or ``max_wait_ms`` after its first item
    arrived, whichever comes first. The executor gets the batch as a list and must return one
    output per input, in order; each caller gets its own output. If the executor raises (or
    returns the wrong number of outputs) every caller of that batch gets the error and
    nobody else does.

    The batcher binds to the event loop of its first ``submit``; after that loop is closed
    it rebinds to the next one (so ``asyncio.run`` may be called repeatedly). To share a
    batcher between threads use :class:`plait.batching.Batcher`.

    Args:
        max_batch: The most items per executor call.
        max_wait_ms: How long the first item of a batch waits for company.
        executor: The default executor; ``submit(..., executor=...)`` overrides it. Items
            with different executors are batched separately.
        max_queue: The most items waiting to be dispatched; None for no limit.
        backpressure: What to do when ``max_queue`` is reached: ``"block"`` (wait),
            ``"drop"`` (raise ``QueueFullError``) or ``"passthrough"`` (run the item alone,
            at once).
        max_concurrent_batches: Batches that may run at the same time. The default 1 suits
            a GPU model that runs one batch at a time; raise it for an HTTP API; None means
            no limit. While all slots are busy, due batches keep filling up to ``max_batch``.
        sync_in_thread: Run a blocking (non-async) executor in a worker thread so the loop
            stays free (default); False calls it inline on the loop, which is faster for
            executors that return at once.

    Example:
        >>> import asyncio
        >>> async def shout(texts: list[str]) -> list[str]:
        ...     return [t.upper() for t in texts]
        >>> async def main() -> list[str]:
        ...     batcher = AsyncBatcher[str, str](max_batch=8, max_wait_ms=5, executor=shout)
        ...     try:
        ...         return await asyncio.gather(*(batcher.submit(t) for t in ["a", "b"]))
        ...     finally:
        ...         await batcher.close()
        >>> asyncio.run(main())
        ['A', 'B']
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

    async def submit(self, item: T, executor: Executor[T, R] | None = None) -> R:
        """Add one item to the next batch and wait for its output.

        Args:
            item: The input.
            executor: The batch function for this item; defaults to the batcher's.

        Returns:
            The executor's output for this item.

        Raises:
            QueueFullError: The queue was full and ``backpressure="drop"``.
            ExecutorOutputError: The executor returned the wrong number of outputs.
            BatcherClosedError: The batcher was closed.
            Exception: Whatever the executor raised for this item's batch.
        """
        engine = self._engine
        loop = asyncio.get_running_loop()
        if loop is not engine.loop:
            engine.bind(loop)
        waiter: asyncio.Future[R] = loop.create_future()
        engine.enqueue(item, engine.resolve(executor), waiter)
        return await waiter

    async def submit_many(
        self, items: Sequence[T], executor: Executor[T, R] | None = None
    ) -> list[R]:
        """Submit several items at once; outputs come back in input order."""
        return list(await asyncio.gather(*(self.submit(i, executor) for i in items)))

    async def close(self) -> None:
        """Run every item already accepted, then refuse new ones. Safe to call twice."""
        engine = self._engine
        loop = engine.loop
        if loop is None or loop.is_closed():
            engine.closed = True
            return
        if asyncio.get_running_loop() is not loop:
            raise BatchingError(
                "AsyncBatcher.close() must be awaited on the event loop the batcher is "
                "bound to (the loop of its first submit())."
            )
        await engine.drain()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._engine.closed

    def stats(self) -> BatcherStats:
        """Counters since creation: batches, items, average batch size, queue high water."""
        return self._engine.stats()

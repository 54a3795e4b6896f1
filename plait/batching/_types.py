"""Shared types of the micro-batcher: executors, policies, stats and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from plait.errors import BatchingError

__all__ = [
    "AsyncExecutor",
    "Backpressure",
    "BatcherClosedError",
    "BatcherStats",
    "Executor",
    "ExecutorOutputError",
    "QueueFullError",
    "SyncExecutor",
]

T = TypeVar("T")
R = TypeVar("R")

#: What happens when ``max_queue`` items are already waiting: ``"block"`` waits for room,
#: ``"drop"`` fails the call with :class:`QueueFullError`, ``"passthrough"`` runs the item
#: at once as a batch of one, bypassing the queue and ``max_concurrent_batches``.
Backpressure = Literal["block", "drop", "passthrough"]

#: A blocking executor: one call per batch, one output per input, in input order.
SyncExecutor = Callable[[list[T]], Sequence[R]]
#: A coroutine executor: one call per batch, one output per input, in input order.
AsyncExecutor = Callable[[list[T]], Awaitable[Sequence[R]]]
#: Either kind; the batcher tells them apart when it calls them.
Executor = Callable[[list[T]], Sequence[R] | Awaitable[Sequence[R]]]


class QueueFullError(BatchingError):
    """The batcher's queue was full and the backpressure policy is ``"drop"``."""

    def __init__(self, max_queue: int) -> None:
        super().__init__(
            f"Batcher queue is full ({max_queue} items waiting, max_queue={max_queue}); "
            "the item was dropped because backpressure='drop'. Retry later, raise "
            "max_queue, or use backpressure='block' to wait for room."
        )
        self.max_queue = max_queue


class ExecutorOutputError(BatchingError):
    """An executor returned a different number of outputs than it was given inputs."""

    def __init__(self, executor_name: str, expected: int, got: int | None) -> None:
        got_text = "a value without len()" if got is None else str(got)
        super().__init__(
            f"Executor '{executor_name}' returned the wrong number of outputs for a batch "
            f"of {expected} inputs: expected {expected}, got {got_text}. An executor must "
            "return a sequence with exactly one output per input, in input order."
        )
        self.executor_name = executor_name
        self.expected = expected
        self.got = got


class BatcherClosedError(BatchingError):
    """An item was submitted after the batcher was closed."""

    def __init__(self) -> None:
        super().__init__(
            "Batcher is closed; it accepts no new items. Create a new Batcher, or submit "
            "before calling close()."
        )


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters of one batcher since it was created.

    Attributes:
        batches: Executor calls made (passthrough calls included).
        items: Items handed to executors.
        avg_batch_size: ``items / batches`` (0.0 before the first batch).
        queue_high_water: The most items ever waiting to be dispatched at once.
        dropped: Items rejected because the queue was full (``backpressure="drop"``).
        passthrough: Items run alone because the queue was full
            (``backpressure="passthrough"``).
        failed_batches: Batches whose executor raised or returned the wrong count.
    """

    batches: int
    items: int
    avg_batch_size: float
    queue_high_water: int
    dropped: int
    passthrough: int
    failed_batches: int


def executor_name(executor: object) -> str:
    """A readable name of an executor for error messages."""
    name = getattr(executor, "__qualname__", None) or getattr(executor, "__name__", None)
    return name if isinstance(name, str) else type(executor).__name__

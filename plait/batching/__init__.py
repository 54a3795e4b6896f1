"""Micro-batching: collect single-item calls into one executor call per batch.

``AsyncBatcher`` batches coroutines of one event loop (the fast path, used by local-model
replicas); ``Batcher`` is thread-safe and batches callers from many threads; ``@autobatch``
turns a function over a list into a function over one item. Errors are ``BatchingError``
subclasses: ``QueueFullError``, ``ExecutorOutputError``, ``BatcherClosedError``.
"""

from plait.batching._async import AsyncBatcher
from plait.batching._autobatch import AsyncAutoBatched, AutoBatched, autobatch
from plait.batching._sync import Batcher
from plait.batching._types import (
    AsyncExecutor,
    Backpressure,
    BatcherClosedError,
    BatcherStats,
    Executor,
    ExecutorOutputError,
    QueueFullError,
    SyncExecutor,
)
from plait.errors import BatchingError

__all__ = [
    "AsyncAutoBatched",
    "AsyncBatcher",
    "AsyncExecutor",
    "AutoBatched",
    "Backpressure",
    "Batcher",
    "BatcherClosedError",
    "BatcherStats",
    "BatchingError",
    "Executor",
    "ExecutorOutputError",
    "QueueFullError",
    "SyncExecutor",
    "autobatch",
]

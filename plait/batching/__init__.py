"""Micro-batching: collect single-item calls into one executor call per batch.

``AsyncBatcher`` batches coroutines of one event loop (the fast path, used by local-model
replicas); ``Batcher`` is thread-safe and batches callers from many threads; ``@autobatch``
turns a function over a list into a function over one item. Errors are ``BatchingError``
subclasses: ``QueueFullError``, ``ExecutorOutputError``, ``BatcherClosedError``.

``OpenAIResponsesExecutor`` (also in ``plait.batching.http``) is the HTTP adapter: a batch
of prompts as concurrent OpenAI Responses API calls on one connection pool.
``TorchExecutor`` (also in ``plait.batching.torch``; needs the ``[torch]`` extra) runs a
PyTorch model once per collated micro-batch.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from plait.batching._http import OpenAIResponsesExecutor
    from plait.batching._torch import TorchExecutor

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
    "OpenAIResponsesExecutor",
    "QueueFullError",
    "SyncExecutor",
    "TorchExecutor",
    "autobatch",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the HTTP client stack is not needed by the batcher itself.
    if name == "OpenAIResponsesExecutor":
        from plait.batching._http import OpenAIResponsesExecutor

        return OpenAIResponsesExecutor
    if name == "TorchExecutor":
        from plait.batching._torch import TorchExecutor

        return TorchExecutor
    raise AttributeError(f"module 'plait.batching' has no attribute {name!r}")

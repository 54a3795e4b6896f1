"""Provider batch APIs: an endpoint's calls at about half price, results within hours.

``EndpointConfig(batch=True)`` (or ``batch=BatchPolicy(...)``) sends that endpoint's calls
through OpenAI's Batch API or Anthropic's Message Batches instead of one HTTP request each;
the pipeline code does not change. The calls that are ready at once (one graph level across
the rows in flight) are collected into batches within the provider's limits (OpenAI 50,000
requests / 200 MB, Anthropic 100,000 / 256 MB), submitted, polled every ``poll_interval``
seconds and their results fed back to the waiting rows, whose next level then proceeds.
A call that failed in its batch is retried per the endpoint's ``max_retries`` (in a later
batch). A batch is never waited for longer than ``max_wait``.

Every submitted batch is journaled (fsync'ed) before the submission returns, under
``<checkpoint_dir>/batch_api/<alias>/`` (or ``BatchPolicy.journal_dir``): a driver killed
while polling is re-run with the same ``checkpoint_dir`` and polls the same batches, never
paying twice. Keys never reach the journal or any uploaded file on disk.

Example:
    >>> resources = ResourceConfig(endpoints={
    ...     "bulk": OpenAIEndpointConfig("gpt-4o-mini", batch=True)})
    >>> results = pipeline.bind(resources=resources).run_sync(rows, checkpoint_dir="ckpt")
"""

from typing import TYPE_CHECKING, Any

from plait.batch_api._policy import PROVIDER_LIMITS, BatchPolicy, as_policy

if TYPE_CHECKING:
    from plait.batch_api._client import BatchClient
    from plait.batch_api._journal import BatchJournal
    from plait.batch_api._providers import AnthropicBatches, OpenAIBatches

__all__ = [
    "PROVIDER_LIMITS",
    "AnthropicBatches",
    "BatchClient",
    "BatchJournal",
    "BatchPolicy",
    "OpenAIBatches",
    "as_policy",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the endpoint config imports this package for BatchPolicy, and
    # the clients below import the endpoint config.
    if name == "BatchClient":
        from plait.batch_api._client import BatchClient

        return BatchClient
    if name == "BatchJournal":
        from plait.batch_api._journal import BatchJournal

        return BatchJournal
    if name in ("AnthropicBatches", "OpenAIBatches"):
        from plait.batch_api import _providers

        return getattr(_providers, name)
    raise AttributeError(f"module 'plait.batch_api' has no attribute {name!r}")

"""How an endpoint batches: ``BatchPolicy``, the value of ``EndpointConfig(batch=...)``.

This module imports nothing from the rest of plait but ``plait.errors``, so the endpoint
config can hold a policy without importing the batch clients.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from plait.errors import ConfigError

__all__ = ["PROVIDER_LIMITS", "BatchPolicy", "as_policy"]

PROVIDER_LIMITS: dict[str, tuple[int, int]] = {
    "openai": (50_000, 200 * 2**20),  # requests per batch, bytes of the JSONL file
    "vllm": (50_000, 200 * 2**20),
    "anthropic": (100_000, 256 * 2**20),  # requests per batch, bytes of the request body
}
"""Each provider's documented cap on one batch: (requests, bytes)."""


@dataclass(frozen=True)
class BatchPolicy:
    """How calls to a batched endpoint are collected, submitted and waited for.

    ``EndpointConfig(batch=True)`` uses the defaults; ``batch=BatchPolicy(...)`` tunes them.

    Args:
        linger: Seconds without a new call after which the collected calls are submitted
            (the calls of one graph level arrive together, so a short quiet spell ends a
            level).
        max_linger: Seconds after the first collected call after which they are submitted
            even if calls keep arriving.
        poll_interval: Seconds between two status requests for one batch.
        max_wait: Seconds a batch may take from submission; past it the batch is cancelled
            and its unfinished calls fail with a retryable error (retried per the endpoint's
            ``max_retries``). Never unbounded.
        completion_window: The provider's completion window (OpenAI's ``"24h"``).
        max_requests: Most calls per batch; None takes the provider's limit.
        max_bytes: Most bytes per batch upload; None takes the provider's limit.
        rows_in_flight: Rows a run keeps in flight when it calls this endpoint: a batch
            can hold only the calls of rows that are running.
        journal_dir: Directory of the batch-id journal. None: the run's ``checkpoint_dir``
            (``<checkpoint_dir>/batch_api``); without either, a killed run cannot resume
            its batches.

    Example:
        >>> OpenAIEndpointConfig("gpt-4o-mini", batch=BatchPolicy(poll_interval=60))
    """

    linger: float = 2.0
    max_linger: float = 60.0
    poll_interval: float = 30.0
    max_wait: float = 25 * 3600.0
    completion_window: str = "24h"
    max_requests: int | None = None
    max_bytes: int | None = None
    rows_in_flight: int = 10_000
    journal_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("linger", "max_linger", "poll_interval", "max_wait"):
            value: object = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0):
                raise ConfigError(f"BatchPolicy.{name} must be a finite number of seconds "
                                  f">= 0, got {value!r}.")
        for name in ("max_requests", "max_bytes", "rows_in_flight"):
            count: object = getattr(self, name)
            if count is None and name != "rows_in_flight":
                continue
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigError(f"BatchPolicy.{name} must be an integer >= 1, got "
                                  f"{count!r}.")
        if self.journal_dir is not None and not isinstance(self.journal_dir, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(f"BatchPolicy.journal_dir must be a string path, got "
                              f"{self.journal_dir!r}.")

    def limits(self, provider_api: str) -> tuple[int, int]:
        """(requests, bytes) one batch may hold: ours, capped by the provider's."""
        requests, size = PROVIDER_LIMITS.get(provider_api, PROVIDER_LIMITS["openai"])
        return (min(requests, self.max_requests or requests),
                min(size, self.max_bytes or size))

    def with_journal_dir(self, path: Path) -> BatchPolicy:
        """This policy with ``journal_dir`` set to ``path`` (kept if already set)."""
        if self.journal_dir is not None:
            return self
        return dataclasses.replace(self, journal_dir=str(path))


def as_policy(value: object) -> BatchPolicy | None:
    """``EndpointConfig.batch`` as a policy: None for False, defaults for True.

    Raises:
        ConfigError: ``value`` is neither a bool, a ``BatchPolicy`` nor a mapping of its
            fields.
    """
    if value is False or value is None:
        return None
    if value is True:
        return BatchPolicy()
    if isinstance(value, BatchPolicy):
        return value
    if isinstance(value, dict):
        fields = {f.name for f in dataclasses.fields(BatchPolicy)}
        entries = cast("dict[object, Any]", value)
        data: dict[str, Any] = {str(k): v for k, v in entries.items()}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"Unknown batch setting(s) {unknown}. Valid: {sorted(fields)}.")
        return BatchPolicy(**data)
    raise ConfigError(f"batch must be True, False or a BatchPolicy, got {value!r}.")

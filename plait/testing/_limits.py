"""Server-side rate and concurrency caps, as a real provider enforces them.

Time comes from an injected clock so the bucket is testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ALL_MODELS", "Limits", "TokenBucket"]

ALL_MODELS = "*"
"""The key that means "every request together" in per-model settings."""


class TokenBucket:
    """``rate`` tokens per second, holding at most ``capacity``; starts full."""

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate")

    def __init__(
        self, rate: float, capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()

    def try_take(self) -> float:
        """Take one token; return 0.0 on success, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        if self.rate <= 0:
            return 60.0  # a zero rate never refills; tell clients to go away for a while
        return (1.0 - self._tokens) / self.rate


class Limits:
    """The rate buckets and concurrency caps of one server configuration.

    Args:
        rate_limit: Requests/second, as a number (all requests) or ``{model: rate}``.
        rate_burst: Bucket capacity (default one second's worth).
        max_concurrency: In-flight cap, as a number (all requests) or ``{model: cap}``.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        rate_limit: float | dict[str, float] | None,
        rate_burst: float | None,
        max_concurrency: int | dict[str, int] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        rates = _per_key(rate_limit)
        self._buckets = {k: TokenBucket(r, rate_burst, clock) for k, r in rates.items()}
        self._global_bucket = self._buckets.pop(ALL_MODELS, None)
        caps = _per_key(max_concurrency)
        self._global_cap = caps.pop(ALL_MODELS, None)
        self._caps = caps
        self.active = bool(self._buckets or self._global_bucket or caps or self._global_cap)

    def rate_wait(self, model: str) -> float:
        """0.0 if the request may pass the rate caps, else the seconds to wait."""
        bucket = self._buckets.get(model)
        wait = bucket.try_take() if bucket is not None else 0.0
        if wait == 0.0 and self._global_bucket is not None:
            wait = self._global_bucket.try_take()
        return wait

    def over_concurrency(self, model: str, model_in_flight: int, total_in_flight: int) -> bool:
        """Whether one more request would exceed a concurrency cap."""
        cap = self._caps.get(model)
        if cap is not None and model_in_flight >= cap:
            return True
        return self._global_cap is not None and total_in_flight >= self._global_cap


def _per_key(value: float | dict[str, float] | dict[str, int] | None) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: float(v) for k, v in value.items()}
    return {ALL_MODELS: float(value)}

"""Per-endpoint counters for the run summary: requests, outcomes, tokens, cost, latency.

Updating is a handful of integer adds plus one reservoir-sampling step, cheap enough to do
on every attempt whether or not anyone reads the numbers.
"""

from __future__ import annotations

import contextvars
import math
import random
from typing import Any

__all__ = ["CALL_STATS", "EndpointStats", "LatencyReservoir"]

CALL_STATS: contextvars.ContextVar[dict[str, EndpointStats] | None] = contextvars.ContextVar(
    "plait_call_stats", default=None
)
"""Per-call counters (alias -> stats) of the call whose row runs in this context.

A pool may serve several calls (a manager reused across calls keeps its connections warm);
it counts every attempt in its own cumulative stats and, when set, in the running call's.
"""


class LatencyReservoir:
    """A uniform sample of at most ``size`` latencies (reservoir sampling) for percentiles.

    Bounded memory however many calls a run makes; exact while fewer than ``size``
    samples have been seen.
    """

    __slots__ = ("_rng", "count", "samples", "size", "total")

    def __init__(self, size: int = 2048, seed: int = 0) -> None:
        self.size = size
        self.samples: list[float] = []
        self.count = 0
        self.total = 0.0
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        """Record one latency in seconds."""
        self.count += 1
        self.total += value
        if len(self.samples) < self.size:
            self.samples.append(value)
            return
        index = self._rng.randrange(self.count)
        if index < self.size:
            self.samples[index] = value

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0..100, nearest rank), or None without samples."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
        return ordered[rank]


class EndpointStats:
    """Counters of one endpoint.

    Attributes:
        requests: HTTP attempts sent (retries included).
        successes: Attempts that returned a usable (validated) response.
        failures: Calls that gave up (non-retryable error or retry budget spent).
        retries: Attempts that failed and were retried (429s included).
        rate_limited: Attempts answered with HTTP 429.
        errors: Failed attempts by error class name.
        input_tokens: Input tokens reported by the provider, summed.
        output_tokens: Output tokens reported by the provider, summed.
        usage_unknown: Successes whose reply had missing or malformed usage (kept; their
            tokens are not in the sums, so token and cost figures are lower bounds).
    """

    __slots__ = (
        "_input_cost", "_output_cost", "errors", "failures", "input_tokens", "latency",
        "output_tokens", "rate_limited", "requests", "retries", "successes", "usage_unknown",
    )

    def __init__(self, input_cost_per_1m: float = 0.0, output_cost_per_1m: float = 0.0) -> None:
        self._input_cost = input_cost_per_1m
        self._output_cost = output_cost_per_1m
        self.requests = 0
        self.successes = 0
        self.failures = 0
        self.retries = 0
        self.rate_limited = 0
        self.errors: dict[str, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.usage_unknown = 0
        self.latency = LatencyReservoir()

    @property
    def cost(self) -> float:
        """Estimated cost from the endpoint's per-million-token prices."""
        return (self.input_tokens * self._input_cost
                + self.output_tokens * self._output_cost) / 1_000_000

    def record_success(self, latency: float, input_tokens: int, output_tokens: int,
                       usage_known: bool = True) -> None:
        """One attempt succeeded after ``latency`` seconds."""
        self.successes += 1
        if not usage_known:
            self.usage_unknown += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.latency.add(latency)

    def record_error(self, error: BaseException, status: int | None) -> None:
        """One attempt failed (whether or not it will be retried)."""
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        if status == 429:
            self.rate_limited += 1

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the run summary (latencies in seconds, None when unknown)."""
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "errors": dict(self.errors),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usage_unknown": self.usage_unknown,
            "cost": self.cost,
            "latency_mean": (self.latency.total / self.latency.count
                             if self.latency.count else None),
            "latency_p50": self.latency.percentile(50),
            "latency_p95": self.latency.percentile(95),
            "latency_p99": self.latency.percentile(99),
        }

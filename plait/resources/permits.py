"""The seam between an endpoint pool and whoever owns that endpoint's limits.

An ``EndpointPool`` (retries, client, stats) asks a ``PermitSource`` for permission before
every attempt and tells it what happened after. Locally the source is in-process
(``LocalPermitSource``: a slot pool plus adaptive token buckets); on Ray it leases permits in
blocks from the one actor that owns the endpoint's limits for the whole cluster. Either way
there is exactly one owner of an endpoint's limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Permit", "PermitSource"]


@dataclass(slots=True)
class Permit:
    """Permission for one attempt.

    Attributes:
        slot: The concurrency slot held (0..max_concurrent-1), -1 when unlimited. Profiling
            draws one track per slot.
        tokens: Tokens reserved for the attempt (estimate), returned or corrected on release.
        queue_wait: Seconds spent waiting for a concurrency slot.
        rate_wait: Seconds spent waiting for the rate limiter (requests or tokens).
        in_flight: Requests in flight when this one was sent, itself included (0: not
            counted). A local source learns a server's concurrency cap from it.
    """

    slot: int
    tokens: int
    queue_wait: float = 0.0
    rate_wait: float = 0.0
    in_flight: int = 0


class PermitSource(Protocol):
    """Owner (or lessee) of one endpoint's concurrency and rate limits."""

    async def acquire(self, tokens: int) -> Permit:
        """Wait for a concurrency slot and rate budget for one attempt of ``tokens``."""
        ...

    def release(self, permit: Permit, *, used_tokens: int | None) -> None:
        """Return the slot; correct the token reservation with the real usage if known."""
        ...

    def on_rate_limited(self, retry_after: float | None) -> float | None:
        """A 429 arrived: pause and lower the rate (adaptive).

        Args:
            retry_after: The server's hint in seconds (already capped), or None.

        Returns:
            The pause imposed, in seconds, or None if the source does not say (the caller
            then assumes ``retry_after``).
        """
        ...

    def on_success(self) -> None:
        """An attempt succeeded: let an adaptively lowered rate recover."""
        ...

"""A call's global ``max_concurrent`` on Ray: one cap for every worker of the call.

``max_concurrent`` (all endpoints together) belongs to one call, not to an endpoint: two
calls at once each get their own. Splitting it over workers (``cap // workers``, floor 1)
let a cap of 2 run 8 requests at once on 8 workers, so the cap is leased like an endpoint's
slots instead: a slots-only ``LimiterCore`` per running call, keyed by the call's job id.

The cores live in the limiter actor of the call's first alias (``call_caps.CallCaps``,
served by ``EndpointLimiterActor.cap_*``): that actor already exists and is held by the
driver, while an actor of its own would cost a process start (seconds on a loaded box).

Example:
    >>> caps = cap_holder(job.graph.aliases(), resources, namespace)   # in the driver
    >>> permits = call_cap_permits(caps, job_id, 2)                     # in each worker
    >>> permit = await permits.acquire(0)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from plait.resources.config import ResourceConfig
from plait_ray.limits.client import call_limiter
from plait_ray.limits.lease import LeaseGrant, LeaseRequest
from plait_ray.limits.leased_permits import LeasedPermitSource

__all__ = ["CallCapClient", "call_cap_permits", "cap_holder"]


class CallCapClient:
    """``LimiterClient`` for one call's cap on the limiter actor hosting it.

    Args:
        handle: The ``EndpointLimiterActor`` hosting the call's cap.
        key: The call's job id.
        cap: The call's ``max_concurrent``.
    """

    def __init__(self, handle: Any, key: str, cap: int) -> None:
        self.handle = handle
        self.key = key
        self.cap = cap

    async def lease(self, request: LeaseRequest) -> LeaseGrant:
        """Sync with the call's core (see ``RayLimiterClient.lease``)."""
        return await call_limiter(self.handle.cap_lease.remote(self.key, self.cap, request),
                                  request.max_wait, f"max_concurrent={self.cap}")

    def return_slots(self, lease_id: str, slots: tuple[int, ...]) -> None:
        """Give slots back without waiting."""
        self.handle.cap_return_slots.remote(self.key, lease_id, slots)

    def report_rate_limited(self, retry_after: float | None) -> None:
        """A global cap has no rate: nothing to report."""

    def release(self, lease_id: str) -> None:
        """End the lease without waiting."""
        self.handle.cap_release.remote(self.key, lease_id)


def cap_holder(aliases: Iterable[str], resources: ResourceConfig, namespace: str) -> Any:
    """The limiter actor that hosts a call's global cap: its first alias's (None if none)."""
    from plait_ray.limits.registry import limiter_for

    names = sorted(aliases)
    if not names:
        return None
    return limiter_for(names[0], resources[names[0]], namespace)


def call_cap_permits(handle: Any, key: str, cap: int) -> LeasedPermitSource:
    """The permit source a worker takes one permit from per LLM request of call ``key``."""
    return LeasedPermitSource(CallCapClient(handle, key, cap), "max_concurrent",
                              max_concurrent=cap, rate_limit=None, tokens_per_minute=None)

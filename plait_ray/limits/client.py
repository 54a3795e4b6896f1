"""How a worker talks to an endpoint's limiter: a small contract and its Ray implementation.

``LeasedPermitSource`` only needs ``LimiterClient``. ``RayLimiterClient`` is the real one
(calls on the limiter actor); ``CoreLimiterClient`` calls a ``LimiterCore`` in the same
process, so the worker-side logic is tested with a fake clock and no Ray, the way httpx
tests its client against ``MockTransport``.

Failures of the transport (actor restarting, dead, call timed out) all surface as
``LimiterUnavailableError``; the caller decides how long to keep retrying.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

from ray.exceptions import GetTimeoutError, RayActorError

from plait_ray.limits.actor import LimiterHandle
from plait_ray.limits.core import LimiterCore
from plait_ray.limits.lease import LeaseGrant, LeaseRequest, LimiterUnavailableError

__all__ = ["CoreLimiterClient", "LimiterClient", "RayLimiterClient"]

_CALL_TIMEOUT = 10.0  # seconds on top of the request's own max_wait


class LimiterClient(Protocol):
    """The calls a worker makes on its endpoint's limiter."""

    async def lease(self, request: LeaseRequest) -> LeaseGrant:
        """Sync with the limiter (renew, report, want); raises LimiterUnavailableError."""
        ...

    def return_slots(self, lease_id: str, slots: tuple[int, ...]) -> None:
        """Give slots back (fire-and-forget)."""
        ...

    def report_rate_limited(self, retry_after: float | None) -> None:
        """Report a 429 so the whole cluster slows down (fire-and-forget)."""
        ...

    def release(self, lease_id: str) -> None:
        """End the lease (fire-and-forget)."""
        ...


class RayLimiterClient:
    """``LimiterClient`` over a Ray handle of an ``EndpointLimiterActor``.

    Args:
        handle: The limiter actor.
        name: The actor's name, for error messages.
    """

    def __init__(self, handle: LimiterHandle, name: str = "limiter") -> None:
        self.handle = handle
        self._name = name

    async def lease(self, request: LeaseRequest) -> LeaseGrant:
        """Call ``lease`` on the actor, bounded by ``max_wait`` plus a call timeout."""
        ref: Any = self.handle.lease.remote(request)
        return await call_limiter(ref, request.max_wait, self._name)

    def return_slots(self, lease_id: str, slots: tuple[int, ...]) -> None:
        """Submit ``return_slots`` without waiting (a lost call is healed by lease expiry)."""
        self.handle.return_slots.remote(lease_id, slots)

    def report_rate_limited(self, retry_after: float | None) -> None:
        """Submit ``report_rate_limited`` without waiting."""
        self.handle.report_rate_limited.remote(retry_after)

    def release(self, lease_id: str) -> None:
        """Submit ``release`` without waiting."""
        self.handle.release.remote(lease_id)


async def _await(ref: Any) -> Any:
    return await ref


async def call_limiter(ref: Any, max_wait: float, name: str) -> LeaseGrant:
    """Await a limiter's ``lease`` call ``ref``, bounded by ``max_wait`` plus a call timeout.

    Raises:
        LimiterUnavailableError: The actor died, is restarting, or did not answer in time.
    """
    try:
        grant = await asyncio.wait_for(_await(ref), max_wait + _CALL_TIMEOUT)
    except (RayActorError, GetTimeoutError, TimeoutError) as exc:
        raise LimiterUnavailableError(
            f"Limiter actor '{name}' did not answer: {type(exc).__name__}: {exc}") from exc
    return cast(LeaseGrant, grant)


class CoreLimiterClient:
    """``LimiterClient`` calling a ``LimiterCore`` directly (tests, single process).

    Args:
        core: The limiter state to call.
    """

    def __init__(self, core: LimiterCore) -> None:
        self.core = core
        self.calls = 0
        self.down = False  # set to simulate an unreachable actor

    async def lease(self, request: LeaseRequest) -> LeaseGrant:
        """Call the core; raises LimiterUnavailableError while ``down``."""
        self.calls += 1
        if self.down:
            raise LimiterUnavailableError("limiter is down (simulated)")
        return await self.core.lease(request)

    def return_slots(self, lease_id: str, slots: tuple[int, ...]) -> None:
        """Return slots to the core at once."""
        self.calls += 1
        if not self.down:
            self.core.return_slots(lease_id, slots)

    def report_rate_limited(self, retry_after: float | None) -> None:
        """Report a 429 to the core at once."""
        self.calls += 1
        if not self.down:
            self.core.report_rate_limited(retry_after)

    def release(self, lease_id: str) -> None:
        """End the lease in the core at once."""
        self.calls += 1
        if not self.down:
            self.core.release(lease_id)

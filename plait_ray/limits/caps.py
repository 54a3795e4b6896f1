"""A call's global ``max_concurrent`` on Ray: one cap for every worker of the call.

``max_concurrent`` (all endpoints together) belongs to one call, not to an endpoint: two
calls at once each get their own. Splitting it over workers (``cap // workers``, floor 1)
let a cap of 2 run 8 requests at once on 8 workers, so the cap is leased like an endpoint's
slots instead. One ``CallCapsActor`` per Ray session and namespace holds a ``LimiterCore``
(slots only) per running call, keyed by the call's job id: starting an actor per call would
cost a process start (about a second) per call.

Example:
    >>> caps = call_caps(namespace)                        # in the driver
    >>> ray.get(caps.open.remote(job_id, 2))
    >>> permits = call_cap_permits(caps, job_id, 2)       # in each worker
    >>> permit = await permits.acquire(0)
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from plait_ray._ray_init import ray_session_key
from plait_ray.limits.actor import was_restarted
from plait_ray.limits.client import call_limiter
from plait_ray.limits.core import LimiterCore
from plait_ray.limits.lease import LeaseGrant, LeaseRequest, LimiterLimits
from plait_ray.limits.leased_permits import LeasedPermitSource

__all__ = ["CallCapClient", "CallCapsActor", "call_cap_permits", "call_caps"]

CAPS_NAME = "plait:limits:max_concurrent"
_LEASE_TTL = 6.0


class CallCapsActor:
    """Slot limiters of running calls' global caps, by job id (an async Ray actor)."""

    def __init__(self) -> None:
        self._cores: dict[str, LimiterCore] = {}
        # After a crash Ray restarts this actor empty: cores made again then are fenced.
        self._restarted = was_restarted()
        self._sweeper: asyncio.Task[None] | None = None

    def _core(self, key: str, cap: int) -> LimiterCore:
        core = self._cores.get(key)
        if core is None:
            core = self._cores[key] = LimiterCore(
                LimiterLimits(cap, None, None, lease_ttl=_LEASE_TTL), fenced=self._restarted)
        return core

    async def open(self, key: str, cap: int) -> None:
        """Start the cap of call ``key`` (called by the driver before its workers run)."""
        self._core(key, cap)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self, key: str) -> None:
        """Forget call ``key`` (its workers are done)."""
        self._cores.pop(key, None)

    async def lease(self, key: str, cap: int, request: LeaseRequest) -> LeaseGrant:
        """``LimiterCore.lease`` on call ``key``'s core (made again after a restart)."""
        return await self._core(key, cap).lease(request)

    async def return_slots(self, key: str, lease_id: str, slots: tuple[int, ...]) -> None:
        """Give back slots of a lease of call ``key``."""
        core = self._cores.get(key)
        if core is not None:
            core.return_slots(lease_id, slots)

    async def release(self, key: str, lease_id: str) -> None:
        """End a lease of call ``key``."""
        core = self._cores.get(key)
        if core is not None:
            core.release(lease_id)

    async def stats(self, key: str) -> dict[str, Any]:
        """The core's counters of call ``key`` (empty if unknown)."""
        core = self._cores.get(key)
        return core.stats() if core is not None else {}

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_LEASE_TTL / 4)
            for core in list(self._cores.values()):
                core.sweep()


class CallCapClient:
    """``LimiterClient`` for one call's cap on the ``CallCapsActor``.

    Args:
        handle: The caps actor.
        key: The call's job id.
        cap: The call's ``max_concurrent``.
    """

    def __init__(self, handle: Any, key: str, cap: int) -> None:
        self.handle = handle
        self.key = key
        self.cap = cap

    async def lease(self, request: LeaseRequest) -> LeaseGrant:
        """Sync with the call's core (see ``RayLimiterClient.lease``)."""
        return await call_limiter(self.handle.lease.remote(self.key, self.cap, request),
                                  request.max_wait, "max_concurrent")

    def return_slots(self, lease_id: str, slots: tuple[int, ...]) -> None:
        """Give slots back without waiting."""
        self.handle.return_slots.remote(self.key, lease_id, slots)

    def report_rate_limited(self, retry_after: float | None) -> None:
        """A global cap has no rate: nothing to report."""

    def release(self, lease_id: str) -> None:
        """End the lease without waiting."""
        self.handle.release.remote(self.key, lease_id)


_RemoteCaps: Any = ray.remote(CallCapsActor)
_HELD: dict[tuple[str, str], Any] = {}


def call_caps(namespace: str) -> Any:
    """The session's ``CallCapsActor`` in ``namespace`` (started once, held by the driver)."""
    key = (ray_session_key(), namespace)
    handle = _HELD.get(key)
    if handle is None:
        for stale in [k for k in _HELD if k[0] != key[0]]:
            del _HELD[stale]  # an earlier ray.init(): its actors are gone
        handle = _HELD[key] = _RemoteCaps.options(
            name=CAPS_NAME, namespace=namespace, get_if_exists=True, max_restarts=-1,
            max_task_retries=-1, num_cpus=0).remote()
    return handle


def call_cap_permits(handle: Any, key: str, cap: int) -> LeasedPermitSource:
    """The permit source a worker takes one permit from per LLM request of call ``key``."""
    return LeasedPermitSource(CallCapClient(handle, key, cap), "max_concurrent",
                              max_concurrent=cap, rate_limit=None, tokens_per_minute=None)

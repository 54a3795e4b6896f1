"""The Ray actor that owns one endpoint's limits for the whole cluster.

One ``EndpointLimiterActor`` per alias, named ``plait:limits:<alias>`` in the ``plait``
namespace (see ``registry.limiter_for``). It is an async actor: every method runs on one
event loop, so the ``LimiterCore`` it wraps needs no locks beyond asyncio's.

It receives numbers only (``LimiterLimits``), never an ``EndpointConfig``: the actor's
state, arguments and object refs cannot hold an API key. After a crash Ray restarts it
(``max_restarts=-1``) with fresh state; workers' next sync opens new leases naming the slots
they hold, so the restart costs them one round trip. The restarted state is *fenced*: it
does not know which slots the dead incarnation's leases hold, so it grants only the slots a
worker names as its own until every old lease has expired (``lease_ttl``); otherwise the
first worker to sync would be handed slots still busy elsewhere and the cluster would run
over its cap. Calls are safe to retry after a restart (``max_task_retries=-1``): a lease is
re-granted from the fresh state, and a give-back or 429 report on unknown state is
harmless.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any, TypeAlias

import ray
from ray.actor import ActorHandle

from plait_ray.limits.call_caps import CallCaps
from plait_ray.limits.core import LimiterCore
from plait_ray.limits.lease import LeaseGrant, LeaseRequest, LimiterLimits

__all__ = ["EndpointLimiterActor", "LimiterHandle", "was_restarted"]


def was_restarted() -> bool:
    """True inside an actor that Ray restarted after a crash (its state is new)."""
    with warnings.catch_warnings():
        # Ray's own property reads a deprecated attribute internally.
        warnings.simplefilter("ignore", DeprecationWarning)
        context: Any = ray.get_runtime_context()
        return bool(context.was_current_actor_reconstructed)


class EndpointLimiterActor:
    """Cluster-wide slots, request/token rates and 429 backoff of one endpoint.

    Not used directly: ``limiter_for`` wraps it with ``ray.remote`` and the right options.

    Args:
        alias: The endpoint alias (for stats).
        limits: The numbers to enforce.
    """

    def __init__(self, alias: str, limits: LimiterLimits) -> None:
        self._alias = alias
        restarted = was_restarted()
        self._core = LimiterCore(limits, fenced=restarted)
        self._caps = CallCaps(restarted)  # global caps of calls (plait_ray.limits.caps)
        self._sweeper: asyncio.Task[None] | None = None

    async def lease(self, request: LeaseRequest) -> LeaseGrant:
        """Renew or open a lease, apply its reports, grant slots and budget."""
        self._start_sweeper()
        return await self._core.lease(request)

    async def return_slots(self, lease_id: str, slots: tuple[int, ...]) -> None:
        """Give back some of a lease's slots."""
        self._core.return_slots(lease_id, slots)

    async def release(self, lease_id: str) -> None:
        """End a lease, freeing its slots."""
        self._core.release(lease_id)

    async def report_rate_limited(self, retry_after: float | None) -> None:
        """Pause the cluster and halve its rate (at most once per second)."""
        self._core.report_rate_limited(retry_after)

    async def report_success(self, count: int) -> None:
        """Let a lowered rate recover by ``count`` successes."""
        self._core.report_success(count)

    async def stats(self) -> dict[str, Any]:
        """Counters, slots out, current rate and the limits this actor received."""
        return {"alias": self._alias, **self._core.stats()}

    # -- calls' global max_concurrent, hosted here (see plait_ray.limits.caps) ---------------

    async def cap_close(self, key: str) -> None:
        """Forget call ``key``'s cap (its workers are done)."""
        self._caps.close(key)

    async def cap_lease(self, key: str, cap: int, request: LeaseRequest) -> LeaseGrant:
        """``lease`` on call ``key``'s cap (made again, fenced, after a restart)."""
        self._start_sweeper()
        return await self._caps.core(key, cap).lease(request)

    async def cap_return_slots(self, key: str, lease_id: str, slots: tuple[int, ...]) -> None:
        """Give back slots of call ``key``'s cap."""
        core = self._caps.get(key)
        if core is not None:
            core.return_slots(lease_id, slots)

    async def cap_release(self, key: str, lease_id: str) -> None:
        """End a lease on call ``key``'s cap."""
        core = self._caps.get(key)
        if core is not None:
            core.release(lease_id)

    def _start_sweeper(self) -> None:
        # Started on the first call: the actor's event loop is not running in __init__.
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        # Expire dead workers' leases even when nobody calls, so waiters get their slots.
        interval = min(1.0, max(0.05, self._core.limits.lease_ttl / 4))
        while True:
            await asyncio.sleep(interval)
            self._core.sweep()
            self._caps.sweep()


#: A Ray handle on an ``EndpointLimiterActor``.
LimiterHandle: TypeAlias = ActorHandle[EndpointLimiterActor]

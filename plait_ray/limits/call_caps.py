"""The state behind calls' global caps: one slots-only ``LimiterCore`` per running call.

Hosted by an ``EndpointLimiterActor`` (see ``plait_ray.limits.caps`` for why and how workers
lease from it).
"""

from __future__ import annotations

from plait_ray.limits.core import LimiterCore
from plait_ray.limits.lease import LimiterLimits

__all__ = ["CallCaps"]

_LEASE_TTL = 6.0


class CallCaps:
    """Slot limiters of running calls' global caps, by job id (state of a limiter actor).

    Args:
        restarted: The hosting actor was restarted by Ray: cores made again are fenced
            (see ``LimiterCore``), since leases of the lost ones may still hold slots.
    """

    def __init__(self, restarted: bool = False) -> None:
        self._cores: dict[str, LimiterCore] = {}
        self._restarted = restarted

    def core(self, key: str, cap: int) -> LimiterCore:
        """Call ``key``'s core, made on first use (after a restart: fenced)."""
        core = self._cores.get(key)
        if core is None:
            core = self._cores[key] = LimiterCore(
                LimiterLimits(cap, None, None, lease_ttl=_LEASE_TTL), fenced=self._restarted)
        return core

    def get(self, key: str) -> LimiterCore | None:
        """Call ``key``'s core, or None when unknown (closed, or lost in a restart)."""
        return self._cores.get(key)

    def close(self, key: str) -> None:
        """Forget call ``key`` (its workers are done)."""
        self._cores.pop(key, None)

    def sweep(self) -> None:
        """Expire dead workers' leases in every core."""
        for core in list(self._cores.values()):
            core.sweep()

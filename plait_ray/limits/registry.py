"""Finding (or creating) the one limiter actor of each endpoint, and the permit factory.

The driver should create the limiters before starting workers (``ensure_limiters``): a
non-detached actor shares the fate of the process that created it, so a limiter created
by a worker would die with that worker. Workers then find it by name; the factory still
creates it if missing (``get_if_exists``, so racing workers get the same actor).

Example:
    >>> ensure_limiters(resources)                       # in the driver
    >>> manager = ResourceManager(                       # in each worker
    ...     resources, permit_factory=leased_permit_factory())
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import ray

from plait.resources.config import EndpointConfig, ResourceConfig
from plait.resources.manager import PermitFactory
from plait.resources.permits import PermitSource
from plait_ray.limits.actor import EndpointLimiterActor, LimiterHandle
from plait_ray.limits.lease import LimiterLimits
from plait_ray.limits.leased_permits import LeasedPermitSource

__all__ = [
    "DEFAULT_NAMESPACE",
    "actor_name",
    "ensure_limiters",
    "leased_permit_factory",
    "limiter_for",
    "limits_of",
]

#: Ray namespace of the limiter actors: shared by every job that uses the same cluster,
#: so two runs against the same endpoint share its limits. Pass another to isolate runs.
DEFAULT_NAMESPACE = "plait"

_RemoteLimiter: Any = ray.remote(EndpointLimiterActor)


def actor_name(alias: str) -> str:
    """The Ray name of ``alias``'s limiter actor."""
    return f"plait:limits:{alias}"


def limits_of(config: EndpointConfig, *, lease_ttl: float = 6.0) -> LimiterLimits:
    """The numbers of ``config`` a limiter needs (no URL, no key)."""
    return LimiterLimits(
        max_concurrent=config.max_concurrent,
        rate_limit=config.rate_limit,
        tokens_per_minute=config.tokens_per_minute,
        lease_ttl=lease_ttl,
    )


def limiter_for(
    alias: str,
    config: EndpointConfig | LimiterLimits,
    namespace: str | None = None,
    *,
    detached: bool = False,
    lease_ttl: float = 6.0,
) -> LimiterHandle:
    """Get or create ``alias``'s limiter actor.

    The first creator's limits win; later callers get the existing actor as is.

    Args:
        alias: The endpoint alias.
        config: The endpoint (only its limits are sent) or the limits themselves.
        namespace: Ray namespace; ``DEFAULT_NAMESPACE`` if None.
        detached: Keep the actor after the creating job ends (then kill it yourself).
        lease_ttl: Seconds until a lease not renewed expires (ignored if ``config`` is
            already ``LimiterLimits``).

    Returns:
        The actor handle; pass it to ``LeasedPermitSource``.
    """
    limits = config if isinstance(config, LimiterLimits) else limits_of(config,
                                                                        lease_ttl=lease_ttl)
    options: dict[str, Any] = {
        "name": actor_name(alias),
        "namespace": namespace or DEFAULT_NAMESPACE,
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
        "num_cpus": 0,
    }
    if detached:
        options["lifetime"] = "detached"
    return cast(LimiterHandle, _RemoteLimiter.options(**options).remote(alias, limits))


def ensure_limiters(
    resources: ResourceConfig,
    aliases: Iterable[str] | None = None,
    namespace: str | None = None,
    *,
    detached: bool = False,
    lease_ttl: float = 6.0,
) -> dict[str, LimiterHandle]:
    """Create (or find) the limiter of every alias; call this in the driver first."""
    names = list(resources.aliases() if aliases is None else aliases)
    return {
        alias: limiter_for(alias, resources[alias], namespace, detached=detached,
                           lease_ttl=lease_ttl)
        for alias in names
    }


def leased_permit_factory(
    namespace: str | None = None,
    *,
    block_size: int = 256,
    lease_ttl: float = 6.0,
    worker_id: str | None = None,
) -> PermitFactory:
    """A ``permit_factory`` for ``ResourceManager`` in Ray workers.

    Each alias gets a ``LeasedPermitSource`` on that alias's limiter actor.

    Args:
        namespace: Ray namespace of the limiters; ``DEFAULT_NAMESPACE`` if None.
        block_size: Most request permits leased in one call.
        lease_ttl: Lease TTL used if this call creates the limiter.
        worker_id: Names the worker in the limiters' stats.
    """

    def factory(alias: str, config: EndpointConfig) -> PermitSource:
        handle = limiter_for(alias, config, namespace, lease_ttl=lease_ttl)
        return LeasedPermitSource(
            handle, alias,
            max_concurrent=config.max_concurrent,
            rate_limit=config.rate_limit,
            tokens_per_minute=config.tokens_per_minute,
            block_size=block_size,
            worker_id=worker_id,
        )

    return factory

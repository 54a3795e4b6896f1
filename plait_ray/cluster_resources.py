"""The cluster-wide owners of a run's endpoints, started by the driver.

Each endpoint alias has exactly one limiter actor for the whole cluster (its rate and
concurrency) and each local-model alias one pool of replica actors. The driver creates them
before any worker starts and keeps their handles: a non-detached actor shares the fate of the
process that created it, so one created by a worker would die with that worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from plait.resources.config import ResourceConfig
from plait_ray._ray_init import ray_session_key
from plait_ray.limits import ensure_limiters
from plait_ray.replicas import ensure_replica_pools

__all__ = ["hold_cluster_resources"]

# (Ray session, namespace) -> alias -> handle: held so the actors live as long as the driver.
_HELD: dict[tuple[str, str], dict[str, Any]] = {}


def hold_cluster_resources(
    resources: ResourceConfig, aliases: Iterable[str], options: Mapping[str, Any]
) -> str:
    """Start (once per Ray session) the limiters and replicas of ``aliases``.

    Returns:
        The limiter namespace workers lease permits from. It is derived from the limits, so
        calls with the same limits share limiter actors and a call with other limits gets its
        own (a limiter keeps the limits it was created with), unless
        ``options["limits_namespace"]`` names one.
    """
    names = sorted(aliases)
    limits = [(a, getattr(resources[a], "max_concurrent", None),
               getattr(resources[a], "rate_limit", None),
               getattr(resources[a], "tokens_per_minute", None)) for a in names]
    namespace = str(options.get("limits_namespace") or "plait-limits-" + hashlib.sha256(
        repr(limits).encode()).hexdigest()[:10])
    key = (ray_session_key(), namespace)
    held = _HELD.setdefault(key, {})
    missing = [a for a in names if a not in held]
    if missing:
        held.update(ensure_limiters(resources, missing, namespace))
        held.update({f"replicas:{a}": pool for a, pool in
                     ensure_replica_pools(resources, missing).items()})
    return namespace

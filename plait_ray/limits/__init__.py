"""Endpoint limits on Ray: one limiter actor per endpoint, permits leased in blocks.

``ensure_limiters(resources)`` in the driver, then
``ResourceManager(resources, permit_factory=leased_permit_factory())`` in each worker.
"""

from plait_ray.limits.actor import EndpointLimiterActor, LimiterHandle
from plait_ray.limits.client import CoreLimiterClient, LimiterClient, RayLimiterClient
from plait_ray.limits.core import LimiterCore, fair_shares
from plait_ray.limits.lease import (
    LeaseGrant,
    LeaseRequest,
    LimiterLimits,
    LimiterUnavailableError,
)
from plait_ray.limits.leased_permits import LeasedPermitSource
from plait_ray.limits.registry import (
    DEFAULT_NAMESPACE,
    actor_name,
    ensure_limiters,
    leased_permit_factory,
    limiter_for,
    limits_of,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "CoreLimiterClient",
    "EndpointLimiterActor",
    "LeaseGrant",
    "LeaseRequest",
    "LeasedPermitSource",
    "LimiterClient",
    "LimiterCore",
    "LimiterHandle",
    "LimiterLimits",
    "LimiterUnavailableError",
    "RayLimiterClient",
    "actor_name",
    "ensure_limiters",
    "fair_shares",
    "leased_permit_factory",
    "limiter_for",
    "limits_of",
]

"""What crosses the wire between a worker and an endpoint's limiter actor: numbers only.

Every field is a plain number, string or tuple, so nothing here can carry an API key, a
client or a clock. Times are durations ("pause for 2.0 s", "valid for 6.0 s"), never
absolute clock readings, because each process (and node) has its own monotonic clock.

Errors raised by ``plait_ray.limits``, under plait's one base:

```
PlaitError
└── LimiterUnavailableError   the endpoint's limiter actor stayed unreachable too long
```
"""

from __future__ import annotations

from dataclasses import dataclass

from plait.errors import PlaitError

__all__ = ["LeaseGrant", "LeaseRequest", "LimiterLimits", "LimiterUnavailableError"]


class LimiterUnavailableError(PlaitError):
    """The limiter actor of an endpoint could not be reached within the patience window."""


@dataclass(frozen=True, slots=True)
class LimiterLimits:
    """The limits one limiter actor enforces for the whole cluster (no endpoint, no key).

    Attributes:
        max_concurrent: Requests in flight at once across all workers, or None.
        rate_limit: Requests per minute across all workers, or None.
        tokens_per_minute: Tokens per minute across all workers, or None.
        lease_ttl: Seconds a lease lives without renewal; a dead worker's slots come back
            after at most this long.
        recovery_period: Seconds without a 429 after which a lowered rate is restored.
    """

    max_concurrent: int | None
    rate_limit: float | None
    tokens_per_minute: float | None
    lease_ttl: float = 6.0
    recovery_period: float = 3.0


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """One worker's sync with the limiter: heartbeat, give-backs, reports and wants.

    Attributes:
        worker_id: Who asks (for stats and debugging only).
        lease_id: The worker's current lease, or "" for a new one.
        held_slots: Slots the worker holds (in use or idle). When the lease is unknown
            (expired, or the actor restarted) the actor adopts those still free, so
            in-flight requests stay counted.
        return_slots: Slots given back.
        demand: Slots the worker could use now (in use + waiting), for the fair share.
        want_slots: More slots wanted.
        want_requests: Request permits wanted (0 when requests are unlimited).
        want_tokens: Token budget wanted.
        min_tokens: Smallest useful token grant (the waiting request's estimate).
        successes: Successful attempts since the last sync (additive rate recovery).
        max_wait: Seconds the actor may wait for slots or budget before answering.
    """

    worker_id: str
    lease_id: str = ""
    held_slots: tuple[int, ...] = ()
    return_slots: tuple[int, ...] = ()
    demand: int = 0
    want_slots: int = 0
    want_requests: int = 0
    want_tokens: float = 0.0
    min_tokens: float = 0.0
    successes: int = 0
    max_wait: float = 0.0


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """The limiter's answer to a ``LeaseRequest``.

    Attributes:
        lease_id: The lease to name next time (new when the old one was unknown).
        epoch: Identifies the actor incarnation; changes after a restart.
        slots: Newly granted slot ids.
        revoked_slots: Held slots the actor could not adopt (another worker has them).
        requests: Request permits granted, or None when requests are unlimited right now.
        tokens: Token budget granted, or None when tokens are unlimited.
        ttl: Seconds until the lease expires unless renewed.
        pause_for: Seconds the cluster is paused after a 429 (0 when not paused).
        rate_per_s: Request rate now enforced cluster-wide, or None.
        slot_quota: This worker's fair share of slots, or None when nobody is short of
            slots; a worker above it gives back slots as they free up.
    """

    lease_id: str
    epoch: str
    slots: tuple[int, ...] = ()
    revoked_slots: tuple[int, ...] = ()
    requests: int | None = None
    tokens: float | None = None
    ttl: float = 6.0
    pause_for: float = 0.0
    rate_per_s: float | None = None
    slot_quota: int | None = None

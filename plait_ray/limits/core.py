"""The cluster-wide limit state of one endpoint, as plain asyncio code (no Ray).

``LimiterCore`` is what the limiter actor runs; it is kept free of Ray so that it is tested
with a ``FakeClock`` and never sleeps. It reuses ``plait.resources.limiter`` rather than
re-deriving the limiting rules:

* **Request and token buckets** are that module's ``_Bucket``: lazy refill, 0.1 s of budget
  as capacity, debt allowed. A grant takes up to a whole block out of the bucket at once;
  the capacity therefore also caps a block, so blocks shrink with the rate and the burst a
  provider sees is the same as with one local limiter.
* **AIMD** (pause on 429, halve at most once per second, +1% of the target per success,
  restore after ``recovery_period``, derive a rate from observed completions when none is
  configured) is a ``LocalPermitSource`` used purely as a state machine: the core never
  acquires from it, it only feeds it 429s and completions and reads back
  ``effective_rate_per_min`` and ``paused_until``.

Slots are numbered 0..max_concurrent-1 and belong to at most one lease. A lease not renewed
within ``lease_ttl`` expires and its slots return to the pool; that is how a dead worker's
permits come back. Waiters for slots are served FIFO, and a freed slot is handed straight
to the first waiter.

Fairness: each sync reports the worker's demand (slots in use + waiting). When the total
demand exceeds ``max_concurrent``, every grant carries the worker's max-min fair share
(``slot_quota``); a worker above its share gives slots back as they free up, so a busy
worker cannot keep every slot while another one waits.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from plait.resources.clock import Clock, MonotonicClock
from plait.resources.limiter import (
    LocalPermitSource,
    _Bucket,  # pyright: ignore[reportPrivateUsage]  # same bucket rules as the local limiter
)
from plait.resources.permits import Permit
from plait_ray.limits.lease import LeaseGrant, LeaseRequest, LimiterLimits

__all__ = ["OLD_STOCK_S", "LimiterCore", "fair_shares"]

OLD_STOCK_S = 1.0
"""Seconds a worker may keep spending leased request/token stock (``LeasedPermitSource``'s
``stock_ttl``); a restarted limiter starts that much budget in debt."""


@dataclass(slots=True, eq=False)
class _Lease:
    lease_id: str
    worker_id: str
    expires_at: float
    slots: set[int] = field(default_factory=set[int])
    demand: int = 0


def fair_shares(demands: dict[str, int], capacity: int) -> dict[str, int]:
    """Max-min fair split of ``capacity`` slots over ``demands`` (water filling).

    Example:
        >>> fair_shares({"a": 10, "b": 1}, 4)
        {'b': 1, 'a': 3}
    """
    shares: dict[str, int] = {}
    remaining = capacity
    ordered = sorted(demands.items(), key=lambda item: item[1])
    for index, (key, demand) in enumerate(ordered):
        share = min(demand, remaining // (len(ordered) - index))
        shares[key] = share
        remaining -= share
    return shares


class LimiterCore:
    """Concurrency slots, request/token buckets and AIMD for one endpoint, for all workers.

    Args:
        limits: The numbers to enforce.
        clock: Time source; ``MonotonicClock()`` if None.
        fenced: This core replaces a dead one (the actor restarted): leases of the dead
            core may still hold any slot. Slots are then only *adopted* by the workers that
            name them, and the rest are granted only once every old lease has expired
            (``lease_ttl`` from now), so the old generation's in-flight requests never add
            to the new one's budget; the request and token buckets start ``OLD_STOCK_S``
            of budget in debt (stock workers may still spend).
    """

    def __init__(self, limits: LimiterLimits, clock: Clock | None = None, *,
                 fenced: bool = False) -> None:
        self._clock: Clock = clock or MonotonicClock()
        now = self._clock.now()
        self.limits = limits
        self.epoch = uuid.uuid4().hex[:12]
        slots = list(range(limits.max_concurrent or 0))[::-1]
        # Fenced slots: possibly held by a lease of the previous generation.
        self._fenced: set[int] = set(slots) if fenced else set()
        self._fence_until = now + limits.lease_ttl if fenced else float("-inf")
        self._free: list[int] = [] if fenced else slots
        self._slot_waiters: deque[tuple[_Lease, asyncio.Future[int]]] = deque()
        self._leases: dict[str, _Lease] = {}
        self._ids = itertools.count(1)
        self._governor = LocalPermitSource(
            None, limits.rate_limit, None, self._clock, recovery_period=limits.recovery_period,
        )
        self._requests: _Bucket | None = None
        self._sync_rate(now)
        tpm = limits.tokens_per_minute
        self._tokens: _Bucket | None = _Bucket(tpm / 60.0, now) if tpm else None
        if fenced:
            # Workers may still spend request/token stock the dead incarnation granted (it
            # lives OLD_STOCK_S at most): that budget is owed before new grants.
            for bucket in (self._requests, self._tokens):
                if bucket is not None:
                    bucket.level = -bucket.rate * OLD_STOCK_S
        self._rate_lock = asyncio.Lock()
        self._counters = {"granted_requests": 0, "granted_tokens": 0.0, "granted_slots": 0,
                          "rate_limited": 0, "leases_created": 0, "leases_expired": 0,
                          "successes": 0}

    # -- the actor's methods ---------------------------------------------------------------

    async def lease(self, req: LeaseRequest) -> LeaseGrant:
        """Renew (or open) the worker's lease, apply its reports, and grant what it wants.

        Waits at most ``req.max_wait`` seconds (on the core's clock) for budget or slots;
        then grants what is available, possibly nothing.
        """
        clock = self._clock
        now = clock.now()
        self.sweep()
        lease, revoked = self._lease_for(req, now)
        for slot in req.return_slots:
            if slot in lease.slots:
                lease.slots.discard(slot)
                self._free_slot(slot)
        self._apply_reports(req)
        lease.demand = max(req.demand, 0)
        deadline = now + max(req.max_wait, 0.0)
        requests, tokens = await self._grant_rate(req, deadline)
        if requests or tokens:
            # Deliver budget at once: holding it here while waiting for a slot (all of the
            # worker's slots may be held by requests waiting for this very budget) would
            # cap the worker at one bucket's worth per max_wait.
            deadline = clock.now()
        slots = await self._grant_slots(lease, req.want_slots, deadline)
        now = clock.now()
        lease.expires_at = now + self.limits.lease_ttl
        rate = self._requests.rate if self._requests is not None else None
        return LeaseGrant(
            lease_id=lease.lease_id, epoch=self.epoch, slots=slots, revoked_slots=revoked,
            requests=requests, tokens=tokens, ttl=self.limits.lease_ttl,
            pause_for=max(0.0, self._governor.paused_until - now), rate_per_s=rate,
            slot_quota=self._quota(lease),
        )

    def return_slots(self, lease_id: str, slots: tuple[int, ...]) -> None:
        """Give back some of a lease's slots (unknown leases and slots are ignored)."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        for slot in slots:
            if slot in lease.slots:
                lease.slots.discard(slot)
                self._free_slot(slot)

    def release(self, lease_id: str) -> None:
        """End a lease and free all its slots."""
        lease = self._leases.pop(lease_id, None)
        if lease is not None:
            self._drop(lease)

    def report_rate_limited(self, retry_after: float | None) -> None:
        """A worker saw a 429: pause every worker and lower the cluster's rate."""
        self._counters["rate_limited"] += 1
        self._governor.on_rate_limited(retry_after)
        self._sync_rate(self._clock.now())

    def report_success(self, count: int) -> None:
        """``count`` attempts succeeded somewhere: let a lowered rate recover."""
        self._counters["successes"] += count
        done = Permit(slot=-1, tokens=0)
        for _ in range(max(count, 0)):
            # Completions let the governor derive a rate on a 429 when none is configured.
            self._governor.release(done, used_tokens=None)
            self._governor.on_success()
        self._sync_rate(self._clock.now())

    def sweep(self) -> int:
        """Expire leases past their TTL, freeing their slots; returns how many expired."""
        now = self._clock.now()
        if self._fenced and now >= self._fence_until:
            # Every lease of the previous generation has expired: its slots are free.
            fenced, self._fenced = self._fenced, set()
            for slot in sorted(fenced, reverse=True):
                self._free_slot(slot)
        expired = [lease for lease in self._leases.values() if lease.expires_at <= now]
        for lease in expired:
            del self._leases[lease.lease_id]
            self._counters["leases_expired"] += 1
            self._drop(lease)
        return len(expired)

    def stats(self) -> dict[str, Any]:
        """Counters and current state, for tests, benchmarks and the run summary."""
        now = self._clock.now()
        max_concurrent = self.limits.max_concurrent
        return {
            **self._counters,
            "epoch": self.epoch,
            "leases": len(self._leases),
            "slots_out": (max_concurrent - len(self._free)) if max_concurrent else 0,
            "slot_waiters": len(self._slot_waiters),
            "slots_fenced": len(self._fenced),
            "rate_per_min": self._governor.effective_rate_per_min,
            "paused_for": max(0.0, self._governor.paused_until - now),
            "limits": {
                "max_concurrent": max_concurrent,
                "rate_limit": self.limits.rate_limit,
                "tokens_per_minute": self.limits.tokens_per_minute,
                "lease_ttl": self.limits.lease_ttl,
            },
        }

    # -- leases and slots ------------------------------------------------------------------

    def _lease_for(self, req: LeaseRequest, now: float) -> tuple[_Lease, tuple[int, ...]]:
        lease = self._leases.get(req.lease_id)
        if lease is not None:
            return lease, ()
        # Unknown lease (new worker, expired lease, or this actor restarted): open one and
        # adopt the slots the worker still holds, so its in-flight requests stay counted.
        lease = _Lease(f"{self.epoch}-{next(self._ids)}", req.worker_id,
                       now + self.limits.lease_ttl)
        self._leases[lease.lease_id] = lease
        self._counters["leases_created"] += 1
        free = set(self._free)
        adopted = [slot for slot in req.held_slots if slot in free or slot in self._fenced]
        if adopted:
            lease.slots.update(adopted)
            self._fenced.difference_update(adopted)
            self._free = [slot for slot in self._free if slot not in lease.slots]
        revoked = tuple(slot for slot in req.held_slots if slot not in lease.slots)
        return lease, revoked

    def _drop(self, lease: _Lease) -> None:
        slots, lease.slots = lease.slots, set()
        for slot in sorted(slots):
            self._free_slot(slot)

    def _free_slot(self, slot: int) -> None:
        while self._slot_waiters:
            lease, fut = self._slot_waiters.popleft()
            if not fut.done() and lease.lease_id in self._leases:
                lease.slots.add(slot)
                fut.set_result(slot)
                return
        self._free.append(slot)

    async def _grant_slots(self, lease: _Lease, want: int, deadline: float) -> tuple[int, ...]:
        if self.limits.max_concurrent is None or want <= 0:
            return ()
        got: list[int] = []
        if not self._free:
            slot = await self._wait_for_slot(lease, deadline)
            if slot is None:
                return ()
            got.append(slot)
        while self._free and len(got) < want:
            slot = self._free.pop()
            lease.slots.add(slot)
            got.append(slot)
        self._counters["granted_slots"] += len(got)
        return tuple(got)

    async def _wait_for_slot(self, lease: _Lease, deadline: float) -> int | None:
        now = self._clock.now()
        if deadline <= now:
            return None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append((lease, fut))
        timer = asyncio.ensure_future(self._clock.sleep(deadline - now))
        try:
            await asyncio.wait({fut, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Handed a slot just as the call was cancelled: pass it on.
                lease.slots.discard(fut.result())
                self._free_slot(fut.result())
            else:
                fut.cancel()
            raise
        finally:
            timer.cancel()
        if not fut.done():
            fut.cancel()
            return None
        return fut.result()

    def _quota(self, lease: _Lease) -> int | None:
        capacity = self.limits.max_concurrent
        if capacity is None:
            return None
        demands = {key: max(other.demand, 0) for key, other in self._leases.items()}
        waiting = sum(1 for _, fut in self._slot_waiters if not fut.done())
        if sum(demands.values()) <= capacity and waiting == 0:
            return None
        return fair_shares(demands, capacity).get(lease.lease_id, 0)

    # -- rate ------------------------------------------------------------------------------

    def _apply_reports(self, req: LeaseRequest) -> None:
        if req.successes:
            self.report_success(req.successes)

    def _sync_rate(self, now: float) -> None:
        per_min = self._governor.effective_rate_per_min
        if per_min is None:
            self._requests = None
        elif self._requests is None:
            self._requests = _Bucket(per_min / 60.0, now)
        elif not math.isclose(self._requests.rate, per_min / 60.0):
            self._requests.set_rate(per_min / 60.0, now)

    async def _grant_rate(self, req: LeaseRequest,
                          deadline: float) -> tuple[int | None, float | None]:
        want_requests = req.want_requests if self._requests is not None else 0
        want_tokens = req.want_tokens if self._tokens is not None else 0.0
        if want_requests <= 0 and want_tokens <= 0:
            return (0 if self._requests is not None else None,
                    0.0 if self._tokens is not None else None)
        clock = self._clock
        # One waiter at a time sleeps on the buckets (FIFO through the lock): N waiting
        # workers cost N wake-ups and none of them starves.
        async with self._rate_lock:
            while True:
                now = clock.now()
                delay = self._delay(now, want_requests, want_tokens, req.min_tokens)
                if delay <= 0 or now >= deadline:
                    return self._take(now, want_requests, want_tokens, req.min_tokens)
                await clock.sleep(min(delay, deadline - now))

    def _delay(self, now: float, want_requests: int, want_tokens: float,
               min_tokens: float) -> float:
        """Seconds until a full grant (capped by bucket capacity) is available."""
        paused_until = self._governor.paused_until
        if now < paused_until:
            return paused_until - now
        delay = 0.0
        if want_requests > 0 and self._requests is not None:
            self._requests.refill(now)
            delay = self._requests.delay(float(want_requests))
        if want_tokens > 0 and self._tokens is not None:
            self._tokens.refill(now)
            delay = max(delay, self._tokens.delay(max(want_tokens, min_tokens)))
        return delay

    def _take(self, now: float, want_requests: int, want_tokens: float,
              min_tokens: float) -> tuple[int | None, float | None]:
        requests = self._requests
        tokens = self._tokens
        got_requests: int | None = None if requests is None else 0
        got_tokens: float | None = None if tokens is None else 0.0
        if now < self._governor.paused_until:
            return got_requests, got_tokens
        if requests is not None and want_requests > 0:
            requests.refill(now)
            got_requests = min(want_requests, math.floor(max(requests.level, 0.0)))
            if got_requests < 1:
                return 0, got_tokens  # a grant of tokens alone would be stranded
        if tokens is not None and want_tokens > 0:
            tokens.refill(now)
            # A request larger than the bucket may start when the bucket is full (debt).
            if tokens.level < min(min_tokens, tokens.capacity):
                return (0 if requests is not None else None), 0.0
            got_tokens = max(min(want_tokens, tokens.level), min_tokens)
            tokens.level -= got_tokens
            self._counters["granted_tokens"] += got_tokens
        if requests is not None and got_requests:
            requests.level -= got_requests
            self._counters["granted_requests"] += got_requests
        return got_requests, got_tokens

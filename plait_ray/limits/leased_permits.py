"""A worker's ``PermitSource`` that leases slots and rate budget in blocks from one actor.

``acquire`` is served from a local stock (slots, request permits, token budget) in
microseconds; one background *sync* task keeps the stock topped up with at most one call to
the limiter in flight. Steady state costs about one actor round trip per block, not per
request:

* **Requests and tokens** are refilled when the stock falls to half of the last grant, so a
  busy worker rarely waits. The size asked for follows use (twice what was consumed since
  the previous grant, at most ``block_size``), so an idle worker does not hoard the
  cluster's budget. Stock older than ``stock_ttl`` is dropped: budget granted long ago must
  not turn into a burst the provider would see.
* **Slots** are kept while in use, and idle ones go back to the pool: at each heartbeat,
  slots that stayed idle for the whole interval are returned. When the limiter says other
  workers are short of slots (``slot_quota``), a worker above its fair share returns slots
  as they free up instead of reusing them.
* **429s**: ``on_rate_limited`` pauses this worker at once, drops its request stock and
  reports to the actor, which pauses and slows every worker (they see it at their next
  sync, within one block or one heartbeat). Successes are reported in batches on the sync.
  A precise hint (``retry-after-ms``) is paused here in full. A whole-second hint or none is
  only an upper bound (token buckets round a 10 ms wait up to 1 s): the worker pauses
  ``_PROBE_PAUSE`` and the actor's governor learns how long the cluster must pause (a probe
  that doubles while refusals go on, as in ``LocalPermitSource``), sent as
  ``LeaseGrant.pause_for``. Pausing the whole hint made Ray runs ~8x slower than the rate.
* **Actor restart or expiry**: the next sync opens a new lease naming the slots still held;
  the actor adopts them, so in-flight requests stay counted. A limiter unreachable for
  ``patience`` seconds fails every waiting and later ``acquire`` with
  ``LimiterUnavailableError``.
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid

from ray.actor import ActorHandle

from plait.resources.clock import Clock, MonotonicClock
from plait.resources.permits import Permit
from plait.resources.slots import SlotPool
from plait_ray.limits.actor import LimiterHandle
from plait_ray.limits.client import LimiterClient, RayLimiterClient
from plait_ray.limits.lease import LeaseGrant, LeaseRequest, LimiterUnavailableError

__all__ = ["LeasedPermitSource"]

_PROBE_PAUSE = 0.02  # seconds paused locally after a 429 without a precise hint (see above)
_MAX_HEARTBEAT = 0.5  # seconds: how stale a worker's view of quotas and pauses may get


def _local_pause(retry_after: float | None) -> float:
    if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
        return _PROBE_PAUSE
    if retry_after != int(retry_after):
        return retry_after  # precise (retry-after-ms): the server knows when it accepts
    return min(_PROBE_PAUSE, retry_after)


class LeasedPermitSource:
    """``PermitSource`` for a Ray worker: permits leased in blocks from the limiter actor.

    Args:
        limiter: The endpoint's limiter actor handle (see ``limiter_for``), or any
            ``LimiterClient``.
        alias: The endpoint alias, for messages.
        max_concurrent: The endpoint's slot limit (None: no slots are leased).
        rate_limit: Requests per minute (None: unlimited until a 429 says otherwise).
        tokens_per_minute: Tokens per minute, or None.
        block_size: Most request permits asked for in one call.
        worker_id: Names this worker in the limiter's stats (host:pid:random if None).
        clock: Time source; ``MonotonicClock()`` if None.
        max_wait: Seconds the actor may hold a call of a starving worker for budget.
        stock_ttl: Seconds after which unspent leased requests/tokens are dropped.
        patience: Seconds the limiter may stay unreachable before acquire fails.

    Example:
        >>> permits = LeasedPermitSource(limiter_for("fast", config), "fast",
        ...                              max_concurrent=32, rate_limit=6000,
        ...                              tokens_per_minute=None)
        >>> permit = await permits.acquire(300)
        >>> permits.release(permit, used_tokens=280)
    """

    def __init__(
        self,
        limiter: LimiterHandle | LimiterClient,
        alias: str,
        *,
        max_concurrent: int | None,
        rate_limit: float | None,
        tokens_per_minute: float | None,
        block_size: int = 256,
        worker_id: str | None = None,
        clock: Clock | None = None,
        max_wait: float = 0.5,
        stock_ttl: float = 1.0,
        patience: float = 60.0,
    ) -> None:
        self._client: LimiterClient = (RayLimiterClient(limiter, alias)
                                       if isinstance(limiter, ActorHandle) else limiter)
        self.alias = alias
        self._clock: Clock = clock or MonotonicClock()
        self._worker_id = worker_id or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._block_size = max(1, block_size)
        self._max_wait = max_wait
        self._stock_ttl = stock_ttl
        self._patience = patience
        # Slots: granted by the limiter; idle, revoked and surplus ones go back to it.
        self._wake = asyncio.Event()  # wakes the sync task
        self._slots = SlotPool(None if max_concurrent is None else (),
                               on_wait=self._wake.set, on_surplus=self._give_back)
        self._to_return: list[int] = []
        # Rate budget: None means unlimited (as of the last grant).
        self._requests: int | None = None if rate_limit is None else 0
        self._tokens: float | None = None if tokens_per_minute is None else 0.0
        self._stock_expires = float("-inf")
        self._low_water = 0
        self._consumed_requests = 0
        self._consumed_tokens = 0.0
        self._paused_until = float("-inf")
        self.paused_s = 0.0  # seconds this worker spent paused by 429s (stats)
        self._rate_lock = asyncio.Lock()
        self._rate_waiters = 0
        self._waiting_tokens = 0
        self._successes = 0
        # The sync task and its signals.
        self._lease_id = ""
        self._heartbeat = _MAX_HEARTBEAT
        self._next_idle_check = float("-inf")
        self._stock_changed = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        self._failure: LimiterUnavailableError | None = None
        self.syncs = 0

    # -- introspection ---------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Slots in use by this worker (permits held when slots are limited)."""
        return len(self._slots.in_use)

    @property
    def held_slots(self) -> int:
        """Slots leased by this worker, in use or idle."""
        return self._slots.held

    # -- PermitSource ----------------------------------------------------------------------

    async def acquire(self, tokens: int) -> Permit:
        """Take a slot and rate budget from the local stock, waiting for a refill if empty.

        Raises:
            LimiterUnavailableError: The limiter actor stayed unreachable for ``patience``.
        """
        self._start()
        if self._failure is not None:
            raise self._failure
        return await self._slots.acquire(self._clock, tokens, self._take_now, self._wait_for_rate)

    def release(self, permit: Permit, *, used_tokens: int | None) -> None:
        """Return the slot locally; correct the token stock with the real usage."""
        if used_tokens is not None and self._tokens is not None:
            self._tokens += permit.tokens - used_tokens
        self._slots.give_back(permit.slot)

    def on_rate_limited(self, retry_after: float | None) -> float:
        """Pause here at once, drop the request stock, and slow the whole cluster.

        Returns:
            The pause started here, in seconds: a precise hint in full, else a short probe;
            the limiter's learned pause follows with the next sync (``pause_for``).
        """
        pause = _local_pause(retry_after)
        self._pause(self._clock.now(), pause)
        self._requests = 0
        self._client.report_rate_limited(retry_after)
        self._wake.set()
        return pause

    def on_success(self) -> None:
        """Count a success; reported to the limiter with the next sync."""
        self._successes += 1

    async def aclose(self) -> None:
        """Stop syncing and end the lease so its slots go back at once."""
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._lease_id:
            self._client.release(self._lease_id)
            self._lease_id = ""

    # -- slots -----------------------------------------------------------------------------

    def _give_back(self, slots: list[int]) -> None:
        if not slots:
            return
        if not self._to_return:
            asyncio.get_running_loop().call_soon(self._flush_returns)
        self._to_return.extend(slots)

    def _flush_returns(self) -> None:
        slots, self._to_return = self._to_return, []
        if slots and self._lease_id:
            self._client.return_slots(self._lease_id, tuple(slots))

    # -- rate ------------------------------------------------------------------------------

    def _take_now(self, now: float, tokens: int) -> bool:
        return self._rate_waiters == 0 and self._try_take(now, tokens)  # no barging either

    def _try_take(self, now: float, tokens: int) -> bool:
        if now < self._paused_until:
            return False
        if now >= self._stock_expires:
            self._drop_stock()
        requests = self._requests
        if requests is not None and requests < 1:
            self._wake.set()
            return False
        if self._tokens is not None:
            if self._tokens < tokens:
                self._wake.set()
                return False
            self._tokens -= tokens
            self._consumed_tokens += tokens
        if requests is not None:
            self._requests = requests - 1
            self._consumed_requests += 1
            if requests - 1 <= self._low_water:
                self._wake.set()
        return True

    def _pause(self, now: float, seconds: float) -> None:
        until = now + seconds
        if until > self._paused_until:
            # Count only the extension: overlapping pauses cost the worker their union.
            self.paused_s += until - max(self._paused_until, now)
            self._paused_until = until

    def _drop_stock(self) -> None:
        if self._requests is not None:
            self._requests = 0
        if self._tokens is not None:
            self._tokens = min(self._tokens, 0.0)  # debt stays owed

    async def _wait_for_rate(self, tokens: int) -> float:
        clock = self._clock
        start = clock.now()
        self._rate_waiters += 1
        try:
            async with self._rate_lock:
                self._waiting_tokens = tokens
                while not self._try_take(now := clock.now(), tokens):
                    if self._failure is not None:
                        raise self._failure
                    if now < self._paused_until:
                        await clock.sleep(self._paused_until - now)
                        continue
                    self._stock_changed.clear()
                    self._wake.set()
                    await self._stock_changed.wait()
        finally:
            self._rate_waiters -= 1
            self._waiting_tokens = 0
        return clock.now() - start

    # -- the sync task ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._sync_task is None:
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        while True:
            await self._wait_for_wake(self._heartbeat)
            woken = self._wake.is_set()
            self._wake.clear()
            if woken:
                await asyncio.sleep(0)  # let woken acquirers take what just arrived
                if not self._sync_needed():
                    continue
            elif not (self._slots.held or self._successes or self._slots.waiters):
                continue  # heartbeat, but holding and wanting nothing: no lease to keep
            try:
                request = self._build_request()
                grant = await self._lease_patiently(request)
            except LimiterUnavailableError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # a bug or a foreign error must not strand waiters
                self._fail(LimiterUnavailableError(
                    f"Syncing with the limiter of endpoint '{self.alias}' failed: "
                    f"{type(exc).__name__}: {exc}"))
                return
            self._apply(grant)

    async def _wait_for_wake(self, seconds: float) -> None:
        if self._wake.is_set():
            return
        woken = asyncio.ensure_future(self._wake.wait())
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({woken, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            timer.cancel()

    def _build_request(self) -> LeaseRequest:
        now = self._clock.now()
        returns, self._to_return = self._to_return, []
        if now >= self._next_idle_check:
            # Slots idle for a whole heartbeat go back, so an idle worker starves nobody.
            returns.extend(self._slots.take_idle())
            self._next_idle_check = now + self._heartbeat
        slots = self._slots
        starving = bool(slots.waiters) or self._rate_waiters > 0
        successes, self._successes = self._successes, 0
        request = LeaseRequest(
            worker_id=self._worker_id,
            lease_id=self._lease_id,
            held_slots=tuple(slots.in_use | set(slots.free)),
            return_slots=tuple(returns),
            demand=len(slots.in_use) + len(slots.waiters),
            want_slots=len(slots.waiters),
            want_requests=self._want_requests(),
            want_tokens=self._want_tokens(),
            min_tokens=float(self._waiting_tokens),
            successes=successes,
            max_wait=self._max_wait if starving else 0.0,
        )
        self._consumed_requests = 0
        self._consumed_tokens = 0.0
        return request

    def _want_requests(self) -> int:
        # Ask for twice what was consumed during the last sync cycle (one round trip):
        # a starving worker doubles its block each cycle, a steady one gets a refill just
        # as its stock runs out, an idle one asks for nothing. Requests already waiting
        # are asked for outright (no doubling from 1 at the start of a run).
        stock, cycle = self._requests, self._consumed_requests
        if stock is None:
            return 0
        if self._rate_waiters == 0 and (stock > self._low_water or cycle == 0):
            return 0
        return min(self._block_size, max(1, 2 * cycle, self._rate_waiters))

    def _want_tokens(self) -> float:
        stock, cycle = self._tokens, self._consumed_tokens
        if stock is None:
            return 0.0
        if self._waiting_tokens == 0 and (stock > cycle or cycle == 0):
            return 0.0
        return max(float(self._waiting_tokens), 2.0 * cycle)

    def _sync_needed(self) -> bool:
        return bool(self._slots.waiters or self._to_return or self._want_requests()
                    or self._want_tokens())

    async def _lease_patiently(self, request: LeaseRequest) -> LeaseGrant:
        clock = self._clock
        give_up_at = clock.now() + self._patience
        attempt = 0
        while True:
            try:
                self.syncs += 1
                return await self._client.lease(request)
            except LimiterUnavailableError as exc:
                if clock.now() >= give_up_at:
                    raise LimiterUnavailableError(
                        f"The limiter of endpoint '{self.alias}' has been unreachable for "
                        f"{self._patience:g} s ({exc}). It restarts by itself after a crash; "
                        "if it was killed for good, start the run again (the driver "
                        "recreates it with plait_ray.limits.ensure_limiters)."
                    ) from exc
                await clock.sleep(min(2.0, 0.05 * 2**attempt))
                attempt += 1

    def _apply(self, grant: LeaseGrant) -> None:
        now = self._clock.now()
        self._lease_id = grant.lease_id
        self._heartbeat = min(_MAX_HEARTBEAT, grant.ttl / 3)
        slots = self._slots
        for slot in grant.revoked_slots:
            slots.revoke(slot)
        slots.quota = grant.slot_quota
        for slot in grant.slots:
            slots.add(slot)
        if slots.waiters:
            self._wake.set()  # still short of slots: ask again (the actor paces us)
        else:
            self._give_back(slots.take_surplus())
        if grant.requests is None:
            self._requests = None
        else:
            self._requests = max(self._requests or 0, 0) + grant.requests
            if grant.requests:
                self._low_water = grant.requests // 2
        if grant.tokens is not None:
            self._tokens = (self._tokens or 0.0) + grant.tokens
        if grant.requests or grant.tokens:
            self._stock_expires = now + self._stock_ttl
        if grant.pause_for > 0:
            self._pause(now, grant.pause_for)
        self._stock_changed.set()

    def _fail(self, exc: LimiterUnavailableError) -> None:
        self._failure = exc
        self._slots.fail(exc)
        self._stock_changed.set()

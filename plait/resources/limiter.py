"""The in-process owner of one endpoint's limits: slots, request rate, token rate, 429 pauses.

``LocalPermitSource`` implements ``PermitSource`` for a single process:

* **Slots.** ``max_concurrent`` numbered slots in a ``SlotPool`` (FIFO, no barging).
* **Request bucket.** A token bucket refilled at the effective rate. Its capacity is 0.1 s
  of budget (at least 1 request): enough to absorb event-loop scheduling lag so the achieved
  rate matches the configured one, yet far from the whole minute's budget a naive
  per-minute bucket would fire at t=0 (providers enforce per-minute limits over much
  shorter windows, so such a burst earns 429s).
* **Token bucket.** ``tokens_per_minute`` with the same 0.1 s capacity; a request larger
  than the capacity may start when the bucket is full and leaves it in debt. The estimate
  reserved at acquire time is corrected with the real usage on release.
* **Adaptive (AIMD).** ``on_rate_limited`` pauses every acquisition and lowers the effective
  rate (at most once per second, since a burst of 429s reports one overload) to 95% of the
  success rate observed over the last 1-2 s, but never below half the current rate: while
  overloaded, the server's acceptance rate IS its limit, so halving blindly would waste half
  of it. With no configured rate, a 429 derives one from that observed rate once there is
  enough of it (0.5 s of activity, 5 successes); before that, 429s only pause. Only
  successes count: refused requests return at once and would inflate the estimate. A
  lowered rate regrows with time, by 5% of the configured rate per second without a 429
  (15% of the current rate when derived: a low estimate must not cost the run): growth per
  success would scale with the request rate and overshoot a busy endpoint at once. After
  ``recovery_period`` (3 s) without a 429 the configured rate is restored (or a derived
  limit removed): an isolated 429 costs seconds, not the rest of the run, while a rate set
  above what the server accepts keeps drawing 429s and so stays adaptive.
* **How long a 429 pauses** is learned, not read off the header's precision. A precise hint
  (``retry-after-ms``, or any non-whole number of seconds) is honoured. A whole-second
  ``retry-after`` (Anthropic's style; token-bucket servers round a 10 ms wait up to 1 s)
  or no hint at all is only an upper bound: the pause is a probe, 20 ms at first, doubled
  each time requests sent after the previous pause are refused again before any is
  accepted (the server really wants a longer pause), and back to 20 ms after an
  acceptance. So a coarse hint costs a few 429s, not a second per 429, and a server that
  keeps refusing still gets its full hint after a few doublings.
* **In-flight window.** A server may refuse by concurrency, not rate (429 above N in
  flight). A 429 for a request sent with more in flight than any recently accepted one is
  taken as such: a learned window (``InflightWindow``) caps requests in flight at one less,
  with no pause and no rate cut (unless the hint is precise: then the pause is honoured),
  and grows back slowly at its edge. Other 429s go to the rate logic above.

Fast path (free slot, budget available, no pause, no waiters): no task, no future, a few
attribute updates.
"""

from __future__ import annotations

import asyncio
import math

from plait.resources.clock import Clock, MonotonicClock
from plait.resources.permits import Permit
from plait.resources.slots import SlotPool
from plait.resources.window import InflightWindow

__all__ = ["LocalPermitSource"]

_BURST_WINDOW = 0.1  # seconds of budget a bucket may hold
_DECREASE = 0.5  # the most a 429 may cut the rate by (multiplicative)
_OBSERVED_FRACTION = 0.95  # a 429 sets the rate to this fraction of the observed success rate
_MIN_OBSERVATION = 0.5  # seconds of activity before an observed rate is trusted
_MIN_SUCCESSES = 5  # successes in the window before an observed rate is trusted
_DECREASE_COOLDOWN = 1.0  # seconds: one decrease per overload episode
# Additive increase per second without a 429, as a fraction of the target rate. Time-based,
# not per success: per-success growth scales with the request rate and overshoots a busy
# endpoint within a fraction of a second (measured: 7.7% of requests got 429s vs 3.6%).
_RECOVERY_PER_SECOND = 0.05
# A derived rate (none configured) regrows faster: it was measured over a second or two of a
# busy, maybe loaded, client, and a low one would otherwise cost the rest of a short run
# (measured: 69/s derived against a server taking 100/s, 1.3x the run time); overshooting
# costs a 429 and a 20 ms pause.
_DERIVED_RECOVERY_PER_SECOND = 0.15
_MIN_RATE = 0.05  # requests/s floor of an adaptively lowered rate
_PROBE_PAUSE = 0.02  # seconds: first pause after a 429 without a precise retry hint
_MAX_PROBE_PAUSE = 60.0  # seconds: most a probe pause grows to when the server gave no hint


def _precise(retry_after: float | None) -> bool:
    """Whether a hint is finer than whole seconds (``retry-after-ms``, an HTTP date...)."""
    return (retry_after is not None and math.isfinite(retry_after)
            and retry_after != int(retry_after))


class _Bucket:
    """A token bucket with lazy refill; ``level`` may go negative (debt)."""

    __slots__ = ("capacity", "last", "level", "rate")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * _BURST_WINDOW)
        self.level = self.capacity
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
            self.last = now

    def set_rate(self, rate: float, now: float) -> None:
        self.refill(now)
        self.rate = rate
        self.capacity = max(1.0, rate * _BURST_WINDOW)
        self.level = min(self.level, self.capacity)

    def delay(self, amount: float) -> float:
        """Seconds until ``amount`` (capped at capacity) is available; 0 if it is now."""
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate


class LocalPermitSource:
    """Concurrency slots plus adaptive request/token rate limits, owned by this process.

    Args:
        max_concurrent: Slots, or None for no concurrency limit (permits get slot -1).
        rate_limit_per_min: Requests per minute, or None (may become adaptive after a 429).
        tokens_per_min: Tokens per minute, or None.
        clock: Time source; ``MonotonicClock()`` if None.
        recovery_period: Seconds without a 429 after which the configured rate is restored
            (or a derived limit removed).
    """

    def __init__(
        self,
        max_concurrent: int | None,
        rate_limit_per_min: float | None = None,
        tokens_per_min: float | None = None,
        clock: Clock | None = None,
        *,
        recovery_period: float = 3.0,
    ) -> None:
        self._clock: Clock = clock or MonotonicClock()
        now = self._clock.now()
        self._slots = SlotPool(None if max_concurrent is None else range(max_concurrent))
        self._configured_rate = rate_limit_per_min / 60.0 if rate_limit_per_min else None
        self._requests = _Bucket(self._configured_rate, now) if self._configured_rate else None
        self._tokens = _Bucket(tokens_per_min / 60.0, now) if tokens_per_min else None
        self._rate_lock = asyncio.Lock()
        self._rate_waiters = 0
        self._paused_until = float("-inf")
        self._probe = _PROBE_PAUSE  # pause after a coarse hint or none (learned, see docstring)
        self._accepted_since_429 = True
        self._window = InflightWindow()
        self._done_in_flight = 0  # Permit.in_flight of the last release (see on_rate_limited)
        self._last_decrease = float("-inf")
        self._last_rate_limited = float("-inf")
        self._last_increase = float("-inf")
        self._recovery_period = recovery_period
        # Completions per 1-second bucket (current and previous) to derive a rate on 429.
        self._created = now
        self._active_since: float | None = None  # first acquire: the observation window start
        self._first_done: float | None = None  # first completion
        self._done_second = int(now)
        self._done_now = 0
        self._done_prev = 0

    # -- introspection ---------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Permits currently held."""
        return self._slots.in_flight

    @property
    def effective_rate_per_min(self) -> float | None:
        """The request rate now enforced (requests/min), or None when unlimited."""
        return self._requests.rate * 60.0 if self._requests else None

    @property
    def max_in_flight(self) -> int | None:
        """The learned cap on requests in flight (a concurrency-capped server), or None."""
        limit = self._window.limit
        return None if limit is None else int(limit)

    @property
    def paused_until(self) -> float:
        """Clock time until which acquisitions wait after a 429 (-inf if never paused)."""
        return self._paused_until

    # -- PermitSource ----------------------------------------------------------------------

    async def acquire(self, tokens: int) -> Permit:
        """Wait for a slot, then for the rate budget, and return a permit for one attempt."""
        if self._active_since is None:
            self._active_since = self._clock.now()
        permit = await self._slots.acquire(self._clock, tokens, self._take_now,
                                           self._wait_for_rate)
        permit.in_flight = self._window.sent  # counted by _try_take, no await since
        return permit

    def release(self, permit: Permit, *, used_tokens: int | None) -> None:
        """Return the permit's slot and correct its token reservation with real usage."""
        if used_tokens is not None and self._tokens is not None:
            bucket = self._tokens
            bucket.refill(self._clock.now())
            bucket.level = min(bucket.capacity, bucket.level + permit.tokens - used_tokens)
        self._slots.give_back(permit.slot)
        self._window.on_done(permit.in_flight)
        # The pool reports the outcome (on_rate_limited / on_success) right after releasing
        # the permit, with no await in between: keep what it needs of the permit until then.
        self._done_in_flight = permit.in_flight

    def on_rate_limited(self, retry_after: float | None) -> float:
        """Pause all acquisitions and lower the rate; return the pause, in seconds.

        Args:
            retry_after: The server's hint (seconds), or None. A precise one (not a whole
                number of seconds) is the pause; a whole-second one, or none, bounds a
                learned probe pause (see the module docstring). Callers cap absurd hints.
        """
        now = self._clock.now()
        in_flight, self._done_in_flight = self._done_in_flight, 0
        by_concurrency = self._window.on_refused(in_flight, now)
        if by_concurrency and not _precise(retry_after):
            return 0.0  # the smaller window paces the retry; no pause, no rate cut
        pause = self._pause_for(retry_after, now)
        self._paused_until = max(self._paused_until, now + pause)
        self._last_rate_limited = now
        self._accepted_since_429 = False
        if by_concurrency:
            return pause  # the server's precise wait, but its rate was not what overflowed
        observed = self._observed_rate(now)
        bucket = self._requests
        if now - self._last_decrease < _DECREASE_COOLDOWN:
            # Same overload episode: no second cut, but what was regained since the cut stops
            # at what the server accepts (else a derived rate compounds past it).
            if bucket is not None and observed and bucket.rate > observed:
                bucket.set_rate(observed, now)
            return pause
        if bucket is None:
            if not observed:
                return pause  # too little seen to derive a rate: pause only; a later 429 decides
            self._requests = _Bucket(max(_MIN_RATE, observed * _OBSERVED_FRACTION), now)
        else:
            rate = bucket.rate
            if observed:
                lowered = max(rate * _DECREASE, min(rate, observed) * _OBSERVED_FRACTION)
            else:  # too little seen (start of a run): the pause is the remedy; trim lightly
                lowered = rate * _OBSERVED_FRACTION
            bucket.set_rate(max(_MIN_RATE, lowered), now)
        self._last_decrease = now
        return pause

    def on_success(self) -> None:
        """Raise a lowered rate additively; restore it fully after a quiet period."""
        self._count_completion()
        in_flight, self._done_in_flight = self._done_in_flight, 0
        if in_flight:
            self._window.on_accepted(in_flight, self._clock.now())
        if not self._accepted_since_429:
            self._accepted_since_429 = True
            self._probe = _PROBE_PAUSE  # the server accepts again: the short pause sufficed
        bucket = self._requests
        if bucket is None or bucket.rate == self._configured_rate:
            return
        now = self._clock.now()
        if now - self._last_rate_limited >= self._recovery_period:
            if self._configured_rate is None:
                self._requests = None
            else:
                bucket.set_rate(self._configured_rate, now)
            return
        since = now - max(self._last_increase, self._last_rate_limited)
        self._last_increase = now
        if self._configured_rate is None:
            new_rate = bucket.rate * (1.0 + _DERIVED_RECOVERY_PER_SECOND * since)
        else:
            new_rate = bucket.rate + self._configured_rate * _RECOVERY_PER_SECOND * since
        if self._configured_rate is not None:
            new_rate = min(new_rate, self._configured_rate)
        bucket.set_rate(new_rate, now)

    # -- internals -------------------------------------------------------------------------

    def _pause_for(self, retry_after: float | None, now: float) -> float:
        if retry_after is not None and not math.isfinite(retry_after):
            retry_after = None  # nan/inf: no usable hint (callers cap huge finite ones)
        if retry_after is not None and _precise(retry_after):
            return max(0.0, retry_after)  # the server knows when it will accept
        bound = retry_after if retry_after is not None and retry_after > 0 else _MAX_PROBE_PAUSE
        if now >= self._paused_until and not self._accepted_since_429:
            # Requests sent after the previous pause were refused again, none accepted: that
            # pause was too short for this server.
            self._probe = min(self._probe * 2.0, max(bound, _PROBE_PAUSE))
        return min(self._probe, bound)

    def _take_now(self, now: float, tokens: int) -> bool:
        return self._rate_waiters == 0 and self._try_take(now, tokens)  # no barging either

    def _try_take(self, now: float, tokens: int) -> bool:
        if now < self._paused_until or self._window.full:
            return False
        requests, token_bucket = self._requests, self._tokens
        if requests is not None:
            requests.refill(now)
            if requests.level < 1.0:
                return False
        if token_bucket is not None:
            token_bucket.refill(now)
            if token_bucket.delay(tokens) > 0:
                return False
            token_bucket.level -= tokens
        if requests is not None:
            requests.level -= 1.0
        self._window.on_sent()
        return True

    async def _wait_for_rate(self, tokens: int) -> float:
        # One waiter at a time sleeps on the buckets (FIFO through the lock), so N waiters
        # cost N wake-ups, not N^2, and nobody starves.
        clock = self._clock
        start = clock.now()
        self._rate_waiters += 1
        try:
            async with self._rate_lock:
                while not self._try_take(now := clock.now(), tokens):
                    if self._window.full and now >= self._paused_until:
                        await self._window.wait_open()  # until a request in flight is done
                    else:
                        await clock.sleep(self._delay(now, tokens))
        finally:
            self._rate_waiters -= 1
        return clock.now() - start

    def _delay(self, now: float, tokens: int) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        delay = 0.0
        if self._requests is not None:
            delay = self._requests.delay(1.0)
        if self._tokens is not None:
            delay = max(delay, self._tokens.delay(tokens))
        # Guard against float rounding leaving a zero-length sleep in a busy loop.
        return max(delay, 1e-6)

    def _count_completion(self) -> None:
        now = self._clock.now()
        if self._first_done is None:
            self._first_done = now
        second = int(now)
        if second != self._done_second:
            self._done_prev = self._done_now if second == self._done_second + 1 else 0
            self._done_now = 0
            self._done_second = second
        self._done_now += 1

    def _observed_rate(self, now: float) -> float:
        second = int(now)
        if second == self._done_second:
            count = self._done_now + self._done_prev
        elif second == self._done_second + 1:
            count = self._done_now
        else:
            return 0.0
        # Measure from the first acquire if that is later, so a 429 in the first second does
        # not spread a handful of completions over a whole second (or over idle set-up time).
        # Locally, from the first completion rather than the first acquire: completions lag
        # sends by a latency, and counting that lag (10-20% of a 0.5 s window) derived rates
        # well below the server's. (Without acquires, completions arrive in batches: the
        # first batch holds earlier ones, so the window starts at creation.)
        start = self._active_since or self._created
        if self._active_since is not None and self._first_done is not None:
            start = self._first_done
        span = now - max(second - 1, start)
        if span < _MIN_OBSERVATION or count < _MIN_SUCCESSES:
            return 0.0
        return count / span

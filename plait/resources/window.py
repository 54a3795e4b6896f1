"""A learned cap on requests in flight, for servers that refuse by concurrency, not by rate.

Some servers answer 429 above N requests in flight, whatever the rate. Pausing and lowering
the rate then only half works: the acceptance rate N / latency becomes the rate, 5% is kept
in reserve, and every latency spike above it draws 429s. The window learns N instead, from
the in-flight count at which each request was sent (``Permit.in_flight``):

* A refusal sent with more requests in flight than any accepted in the last 1-2 s looks
  like a concurrency cap: the window shrinks to one less than that count. (A rate cap
  refuses at counts it also accepts, so its 429s go to the rate logic instead.) Until an
  acceptance has been seen nothing is known, and refusals go to the rate logic: with
  latencies of seconds, a storm of 429s before the first reply would otherwise shrink the
  window to one. Once there is a window, a refusal at its edge cuts it, one below it goes
  to the rate logic.
* A rate cap refusing a burst (all sent at once, the bucket held a few) looks, one refusal
  at a time, exactly like a concurrency cap. So no cut is made within ``_HOLD`` seconds of
  a refusal the rate explains, and a cut followed within ``_HOLD`` by such a refusal is
  undone: the rate binds, and a window must not shrink in lockstep with it.
* Refusals at or below the window as last cut are the rate's; those above it (the window
  grew past the cap, as replies still on their way back let the server accept requests
  this side counts above its cap) cut it back.
* An acceptance at the window's edge (or one below, sent before the last growth), no cut
  for ``_HOLD`` seconds, grows it by one, so a window set too small is regained within a
  window's worth of replies, and a real cap costs a 429 per probe, about one per
  ``_HOLD`` seconds.
"""

from __future__ import annotations

import asyncio

__all__ = ["InflightWindow"]

_HOLD = 1.0  # seconds after a cut before the window may grow again


class InflightWindow:
    """Requests in flight now, and the learned most the server takes (None: no cap seen).

    Attributes:
        limit: The learned cap, or None.
        sent: Requests counted in flight now.
    """

    __slots__ = ("_cut_from", "_floor", "_floor_from", "_last_cut", "_last_rate_refusal",
                 "_max_now", "_max_prev", "_opened", "_second", "limit", "sent")

    def __init__(self) -> None:
        self.limit: float | None = None
        self.sent = 0
        # Most in flight at an accepted request's sending, this second and the one before.
        self._second: int = 0
        self._max_now = 0
        self._max_prev = 0
        self._last_cut = float("-inf")
        self._cut_from: float | None = None  # the window before the last cut
        self._floor = 0.0  # the window as last cut (refusals within it are the rate's)
        self._floor_from = 0.0
        self._last_rate_refusal = float("-inf")
        self._opened: asyncio.Future[None] | None = None

    @property
    def full(self) -> bool:
        """Whether one more request would exceed the learned cap."""
        return self.limit is not None and self.sent >= self.limit

    def on_sent(self) -> int:
        """Count a request sent; returns the count in flight, itself included."""
        self.sent += 1
        return self.sent

    def on_done(self, in_flight: int) -> None:
        """A request counted by ``on_sent`` (``in_flight`` > 0) is done; wake a waiter."""
        if in_flight <= 0:
            return
        self.sent -= 1
        opened, self._opened = self._opened, None
        if opened is not None and not opened.done():
            opened.set_result(None)

    def on_accepted(self, in_flight: int, now: float) -> None:
        """A request sent with ``in_flight`` in flight was accepted."""
        self._roll(now)
        if in_flight > self._max_now:
            self._max_now = in_flight
        limit = self.limit
        # At the edge: sent with the window full, or one below (sent before the last
        # growth): growth per reply, not per round trip, which with replies taking seconds
        # would take minutes to undo a window set too small.
        if limit is not None and in_flight >= limit - 1 and now - self._last_cut >= _HOLD:
            self.limit = limit + 1.0

    def on_refused(self, in_flight: int, now: float) -> bool:
        """Classify a 429 of a request sent with ``in_flight`` in flight.

        Returns:
            True if it looks like a concurrency cap (the window then shrinks), False if
            like a rate cap, or unknown.
        """
        self._roll(now)
        if in_flight <= 0:
            return False  # unknown
        limit = self.limit
        if in_flight == 1 or (limit is not None and in_flight <= self._floor) or (
                limit is None and in_flight <= max(self._max_now, self._max_prev)):
            # Alone in flight, within the window as last cut, or at a count accepted
            # lately: a rate cap. (Within the window, acceptances are no guide: replies
            # still on their way back let the server accept requests this side counts above
            # its cap, so the window grows past it and is cut back by refusals above the
            # last cut.) A cut just made was the same burst refused by the rate: undo it.
            self._last_rate_refusal = now
            if now - self._last_cut < _HOLD:
                self.limit, self._floor = self._cut_from, self._floor_from
                self._last_cut = float("-inf")
            return False
        if limit is None and not (self._max_now or self._max_prev):
            return False  # nothing accepted yet: nothing known
        if now - self._last_rate_refusal < _HOLD:
            # The rate refuses too: it binds, not concurrency; a window must not shrink in
            # lockstep with it (a burst refused above what a rate bucket held looks, alone,
            # exactly like a concurrency cap).
            return False
        cap = in_flight - 1
        if limit is None or cap < limit:
            self._cut_from, self._floor_from = limit, self._floor
            self.limit = self._floor = float(cap)
            self._last_cut = now
        return True

    def _roll(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._max_prev = self._max_now if second == self._second + 1 else 0
            self._max_now = 0
            self._second = second

    async def wait_open(self) -> None:
        """Wait until a request in flight is done."""
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._opened)

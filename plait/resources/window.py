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
  window to one. Once there is a window, a refusal at its edge cuts it, one below goes to
  the rate logic.
* An acceptance at the window's edge, no refusal having cut it for ``_HOLD`` seconds, grows
  it by one, so a window set too small (a rate cap's burst taken for a concurrency cap) is
  regained within a window's worth of replies, and a real cap costs one 429 per probe,
  about one per ``_HOLD`` seconds.
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

    __slots__ = ("_last_cut", "_max_now", "_max_prev", "_opened", "_second", "limit", "sent")

    def __init__(self) -> None:
        self.limit: float | None = None
        self.sent = 0
        # Most in flight at an accepted request's sending, this second and the one before.
        self._second: int = 0
        self._max_now = 0
        self._max_prev = 0
        self._last_cut = float("-inf")
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
        if limit is not None and in_flight >= limit and now - self._last_cut >= _HOLD:
            self.limit = limit + 1.0

    def on_refused(self, in_flight: int, now: float) -> bool:
        """Classify a 429 of a request sent with ``in_flight`` in flight.

        Returns:
            True if it looks like one (the window then shrinks), False if like a rate cap
            or unknown.
        """
        self._roll(now)
        if in_flight <= 1:
            return False  # unknown (0), or alone in flight: no concurrency to blame
        if self.limit is not None:
            # Refused at the window's edge (probing one more): the cap. Below it: the rate.
            # (Acceptances are no guide here: one reply still on its way back lets the
            # server accept a request this side counts one above its cap.)
            if in_flight < self.limit:
                return False
        else:
            accepted = max(self._max_now, self._max_prev)
            if not accepted or in_flight <= accepted:
                return False  # nothing accepted lately, or not above what was
        cap = in_flight - 1
        if self.limit is None or cap < self.limit:
            self.limit = float(cap)
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

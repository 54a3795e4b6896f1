"""Clocks: the one source of time for limiters, backoff and event timestamps.

Time-dependent code takes a ``Clock`` so that tests drive time by hand (``FakeClock``) and
never sleep. ``MonotonicClock.now()`` is ``time.perf_counter()``, the same clock events use.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


class Clock(Protocol):
    """A source of monotonic time in seconds, and a way to wait on it."""

    def now(self) -> float:
        """Current time in seconds (arbitrary origin, never goes back)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (returns at once for ``seconds <= 0``)."""
        ...


class MonotonicClock:
    """The real clock: ``time.perf_counter()`` and ``asyncio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        """Current ``time.perf_counter()``."""
        return time.perf_counter()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``; negative values sleep 0."""
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A hand-driven clock for tests: sleeps resolve only when time is advanced.

    Deterministic: sleepers wake in deadline order (ties in the order they slept), and time
    stands exactly at each sleeper's deadline when it wakes.

    Example:
        >>> clock = FakeClock()
        >>> async def main():
        ...     task = asyncio.create_task(clock.sleep(5))
        ...     await clock.advance(5)   # task is now done
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        """The current fake time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock is advanced past ``now() + seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def pending(self) -> int:
        """Number of sleepers still waiting (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        """The earliest pending wake-up time, or None when nobody sleeps."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in order and letting them run.

        Sleeps started by woken tasks are honoured if they fall inside the window.
        """
        target = self._now + seconds
        await settle()
        while True:
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            fut.set_result(None)
            await settle()
        self._now = max(self._now, target)
        await settle()

    async def run_until_idle(self, limit: float = 3600.0) -> None:
        """Advance to each next deadline until nobody sleeps (or ``limit`` seconds pass)."""
        end = self._now + limit
        await settle()
        while (deadline := self.next_deadline()) is not None and deadline <= end:
            await self.advance(deadline - self._now)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


async def settle(rounds: int = 20) -> None:
    """Yield to the event loop ``rounds`` times so that woken tasks run to their next await."""
    for _ in range(rounds):
        await asyncio.sleep(0)

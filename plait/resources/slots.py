"""Numbered concurrency slots with FIFO waiters, shared by every ``PermitSource``.

A permit carries its slot id so profiling can draw one track per slot. A freed slot is
handed straight to the first waiter, so latecomers cannot barge in. Waiting is
cancellation-safe: a cancelled waiter never holds or loses a slot.

The slot set may change while in use (a leased source grows it as the limiter grants slots
and shrinks it on revocation or above a quota); locally it is fixed at ``max_concurrent``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from plait.resources.clock import Clock
from plait.resources.permits import Permit

__all__ = ["SlotPool"]


class SlotPool:
    """Slots handed out FIFO, or slot -1 to everyone when there is no concurrency limit.

    Args:
        slots: The initial slot ids (the lowest is taken first), or None for no limit.
        on_wait: Called when an acquirer starts waiting for a slot.
        on_surplus: Receives slots that leave the pool because it holds ``quota`` or more.

    Attributes:
        free: Idle slot ids; the last one is taken next.
        in_use: Slot ids handed out and not yet given back.
        waiters: Acquirers waiting for a slot, first come first served.
        in_flight: Slots (or unlimited permits) taken and not yet given back.
        quota: Most slots to hold; a slot given back at or above it goes to ``on_surplus``.
    """

    def __init__(
        self,
        slots: Iterable[int] | None,
        *,
        on_wait: Callable[[], None] | None = None,
        on_surplus: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.limited = slots is not None
        self.free: list[int] = sorted(slots or (), reverse=True)
        self.in_use: set[int] = set()
        self.waiters: deque[asyncio.Future[int]] = deque()
        self.in_flight = 0
        self.quota: int | None = None
        self._revoked: set[int] = set()
        self._free_floor = 0
        self._on_wait = on_wait
        self._on_surplus = on_surplus

    @property
    def held(self) -> int:
        """Slots in the pool, in use or idle."""
        return len(self.in_use) + len(self.free)

    async def acquire(
        self,
        clock: Clock,
        tokens: int,
        take_budget: Callable[[float, int], bool],
        wait_for_budget: Callable[[int], Awaitable[float]],
    ) -> Permit:
        """Take a slot (waiting if none is free), then the rate budget.

        Args:
            clock: The permit source's clock, to time the waits.
            tokens: Tokens to reserve for the attempt.
            take_budget: Takes the budget at once if it can (and nobody is waiting for it).
            wait_for_budget: Waits for the budget; returns the seconds waited. If it raises
                (cancellation included), the slot goes back before the error propagates.
        """
        now = clock.now()
        queue_wait = 0.0
        slot = self.take_nowait()
        if slot is None:
            slot = await self.wait()
            start, now = now, clock.now()
            queue_wait = now - start
        try:
            rate_wait = 0.0 if take_budget(now, tokens) else await wait_for_budget(tokens)
        except BaseException:
            self.give_back(slot)
            raise
        return Permit(slot=slot, tokens=tokens, queue_wait=queue_wait, rate_wait=rate_wait)

    def take_nowait(self) -> int | None:
        """A free slot (-1 when unlimited), or None if the caller must ``wait``."""
        if not self.limited:
            slot = -1
        elif self.free and not self.waiters:
            slot = self.free.pop()
            self._free_floor = min(self._free_floor, len(self.free))
            self.in_use.add(slot)
        else:
            return None
        self.in_flight += 1
        return slot

    async def wait(self) -> int:
        """Wait in line for a slot."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        if self._on_wait is not None:
            self._on_wait()
        try:
            slot = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._put_back(fut.result())  # handed over just as we were cancelled
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise
        self.in_flight += 1
        return slot

    def give_back(self, slot: int) -> None:
        """Return a slot from ``take_nowait`` or ``wait`` (-1 included)."""
        self.in_flight -= 1
        if slot != -1:
            self._put_back(slot)

    def add(self, slot: int) -> None:
        """Put a new (or returned) slot in the pool: to the first waiter, else free."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                self.in_use.add(slot)
                fut.set_result(slot)
                return
        self.free.append(slot)

    def revoke(self, slot: int) -> None:
        """Remove a slot: at once if free, else when it is given back."""
        if slot in self.free:
            self.free.remove(slot)
        elif slot in self.in_use:
            self._revoked.add(slot)

    def take_surplus(self) -> list[int]:
        """Remove and return free slots held above ``quota``."""
        surplus = 0 if self.quota is None else min(len(self.free), self.held - self.quota)
        return [self.free.pop() for _ in range(surplus)]

    def take_idle(self) -> list[int]:
        """Remove and return the slots free since the previous call (none while anyone waits)."""
        idle = 0 if self.waiters else min(self._free_floor, len(self.free))
        slots = self.free[:idle]
        del self.free[:idle]
        self._free_floor = len(self.free)
        return slots

    def fail(self, exc: BaseException) -> None:
        """Raise ``exc`` in every waiter."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def _put_back(self, slot: int) -> None:
        self.in_use.discard(slot)
        if slot in self._revoked:
            self._revoked.discard(slot)
        elif self._on_surplus and self.quota is not None and self.held >= self.quota:
            self._on_surplus([slot])  # over our share: others are waiting
        else:
            self.add(slot)

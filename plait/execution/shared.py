"""Resource managers that outlive one call: per ``ExecutionSettings`` block, and per loop.

Calls inside an ``ExecutionSettings`` block share that block's manager (closed when the block
ends). Other calls share a manager per event loop and ``ResourceConfig`` value, so a second
``await pipeline(x)`` reuses the first one's connections (no new TCP/TLS handshake) and its
limiters; it is closed when the loop shuts down (``asyncio.run`` finalises async generators)
or, for plait's own ``run_sync`` loop, at interpreter exit. Each call still gets its own
events and counters (``CALL_EVENTS``, ``CALL_STATS``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from plait.events import Event, EventSink
from plait.resources.config import ResourceConfig
from plait.resources.manager import ResourceManager

if TYPE_CHECKING:
    from plait.execution.settings import ExecutionSettings, ResolvedSettings

__all__ = ["CALL_EVENTS", "SharedRuntime", "loop_manager", "route_call_events"]

CALL_EVENTS: contextvars.ContextVar[EventSink | None] = contextvars.ContextVar(
    "plait_call_events", default=None
)
"""The event sink of the call whose row is running in this context (set per row task)."""


def route_call_events(event: Event) -> None:
    """Send a shared pool's event to the sink of the call that made the request.

    A shared manager outlives calls and may serve several at once, so its pools cannot hold
    one call's profiler; each row task carries its call's sink in ``CALL_EVENTS`` instead.
    """
    sink = CALL_EVENTS.get()
    if sink is not None:
        sink(event)


class SharedRuntime:
    """One ResourceManager per event loop for an ``ExecutionSettings`` block.

    Clients and locks belong to the loop that made them, so a manager is made per loop (in
    practice one: the caller's, or plait's background loop for ``run_sync``).
    """

    def __init__(self, settings: ExecutionSettings) -> None:
        self.settings = settings
        self._managers: dict[asyncio.AbstractEventLoop, ResourceManager] = {}

    def owns(self, resolved: ResolvedSettings) -> bool:
        """True if the call uses this block's resources (not ones bound to the module)."""
        return resolved.resources is self.settings.values.get("resources")

    def manager(self, resolved: ResolvedSettings) -> ResourceManager:
        """This loop's shared manager, created on first use."""
        loop = asyncio.get_running_loop()
        manager = self._managers.get(loop)
        if manager is None:
            manager = ResourceManager(resolved.resources, events=route_call_events)
            self._managers[loop] = manager
        return manager

    async def aclose(self) -> None:
        """Close the managers; those of other loops are closed on their own loop."""
        current = asyncio.get_running_loop()
        for loop, manager in list(self._managers.items()):
            if loop is current:
                await manager.aclose()
            elif not loop.is_closed():
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(manager.aclose(), loop))
        self._managers.clear()

    def close_sync(self) -> None:
        """Close from synchronous code (a plain ``with`` block)."""
        for loop, manager in list(self._managers.items()):
            if not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(manager.aclose(), loop).result(timeout=30)
        self._managers.clear()


class _LoopManagers:
    """The managers of one event loop, closed when the loop finalises its async generators."""

    def __init__(self) -> None:
        self.managers: list[tuple[ResourceConfig, ResourceManager]] = []
        self.closer: AsyncIterator[None] | None = None

    async def close_all(self) -> None:
        managers, self.managers = self.managers, []
        for _, manager in managers:
            await manager.aclose()


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopManagers] = (
    weakref.WeakKeyDictionary()
)


async def _close_at_loop_shutdown(entry: _LoopManagers) -> AsyncIterator[None]:
    # Suspended here for the loop's lifetime; asyncio.run() calls aclose() on every live
    # async generator before closing the loop, which runs the finally clause.
    try:
        yield
    finally:
        await entry.close_all()


async def loop_manager(resources: ResourceConfig) -> ResourceManager:
    """The running loop's manager for ``resources`` (the same object), created on first use."""
    loop = asyncio.get_running_loop()
    entry = _BY_LOOP.get(loop)
    if entry is None:
        entry = _BY_LOOP[loop] = _LoopManagers()
        closer = _close_at_loop_shutdown(entry)
        await closer.__anext__()  # registers it with the loop's async-generator hooks
        entry.closer = closer
    for _, manager in entry.managers:
        if manager.serves(resources):  # by value: a dict rebuilt per call is one config
            return manager
    manager = ResourceManager(resources, events=route_call_events)
    entry.managers.append((resources, manager))
    return manager


@atexit.register
def _close_running_loops() -> None:
    # Loops that never shut down (plait's run_sync loop thread) are closed here, bounded.
    for loop, entry in list(_BY_LOOP.items()):
        if loop.is_running() and not loop.is_closed() and entry.managers:
            future = asyncio.run_coroutine_threadsafe(entry.close_all(), loop)
            try:
                future.result(timeout=5)
            except Exception:  # exiting anyway; nothing to report to
                pass

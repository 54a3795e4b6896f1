"""The resource manager shared by every call inside one ``ExecutionSettings`` block."""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING

from plait.events import Event, EventSink
from plait.resources.manager import ResourceManager

if TYPE_CHECKING:
    from plait.execution.settings import ExecutionSettings, ResolvedSettings

__all__ = ["CALL_EVENTS", "SharedRuntime", "route_call_events"]

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

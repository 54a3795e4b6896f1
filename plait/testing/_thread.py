"""Running an ``LLMServer`` on its own event loop in a daemon thread, for sync code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from plait.testing._config import Fault, ServerConfig
from plait.testing._resources import ServerURLs
from plait.testing._stats import ServerStats

if TYPE_CHECKING:
    from plait.testing.server import LLMServer, RecordedRequest

__all__ = ["ThreadedServer"]

_T = TypeVar("_T")


class ThreadedServer(ServerURLs):
    """A handle on an ``LLMServer`` served from a background thread.

    Every method is safe to call from any thread: it runs on the server's loop. Made by
    ``LLMServer.run_in_thread()``; start and stop wait at most ``timeout`` seconds.
    """

    def __init__(self, server: LLMServer, *, timeout: float = 10.0) -> None:
        self.server = server
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quit: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> Self:
        """Start the thread and wait until the server listens."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._main, name="plait-testing-server",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise TimeoutError(f"plait.testing server did not start within {self._timeout}s.")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop the server and join the thread (bounded by ``timeout``)."""
        thread, loop, quit_event = self._thread, self._loop, self._quit
        if thread is None:
            return
        if loop is not None and quit_event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(quit_event.set)
            except RuntimeError:
                pass  # the loop already finished
        thread.join(self._timeout)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced to start() in the caller's thread
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._quit = asyncio.Event()
        await self.server.start()
        try:
            self._ready.set()
            await self._quit.wait()
        finally:
            await self.server.stop()

    def _call(self, fn: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("The server is not running; use 'with server.run_in_thread():'.")

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(self._timeout)

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        return self.server.base_url

    @property
    def _api_key(self) -> str | None:
        return self.server._api_key  # pyright: ignore[reportPrivateUsage]

    @property
    def config(self) -> ServerConfig:
        """The current settings."""
        return self.server.config

    @property
    def requests(self) -> list[RecordedRequest]:
        """The recorded request bodies, oldest first (a copy)."""
        return self._call(lambda: list(self.server.requests))

    def configure(self, **settings: Any) -> None:
        """See ``LLMServer.configure``."""
        self._call(lambda: self.server.configure(**settings))

    def add_faults(self, *faults: Fault | dict[str, Any] | str) -> None:
        """See ``LLMServer.add_faults``."""
        self._call(lambda: self.server.add_faults(*faults))

    def stats(self) -> ServerStats:
        """See ``LLMServer.stats``."""
        return self._call(self.server.stats)

    def reset_stats(self) -> None:
        """See ``LLMServer.reset_stats``."""
        self._call(self.server.reset_stats)

"""A response-size bound for the official SDKs' HTTP client (``transport="sdk"``).

The SDKs read a whole body into memory before looking at it, error bodies included. A
response hook (it runs once the headers are in, before the body is read) refuses a declared
length over the limit and wraps the body stream so reading stops at the limit. The
``BodyTooLarge`` it raises reaches the SDK's connection-error path, where
``plait.clients.sdk.map_sdk_error`` turns it into a retryable ``ResponseFormatError``.

A hook rather than a custom transport: the SDK client keeps its own transport, connection
limits and proxy mounts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx2 as _http
else:
    try:  # the SDKs' HTTP library: httpx2 in current releases, httpx in older ones
        import httpx2 as _http
    except ImportError:  # pragma: no cover - depends on the installed SDK release
        import httpx as _http

__all__ = ["BodyTooLarge", "bounded_http_client"]


class BodyTooLarge(Exception):
    """A response body over the endpoint's ``max_response_bytes`` (internal)."""

    def __init__(self, limit: int, status: int, declared: int | None = None) -> None:
        super().__init__(f"response body over {limit} bytes")
        self.limit = limit
        self.status = status
        self.declared = declared


class _BoundedStream(_http.AsyncByteStream):
    def __init__(self, inner: Any, limit: int, status: int) -> None:
        self._inner = inner
        self._limit = limit
        self._status = status

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise BodyTooLarge(self._limit, self._status)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def bounded_http_client(factory: Callable[..., Any], limit: int) -> Any:
    """The SDK's default async HTTP client (``factory``), reading at most ``limit`` bytes.

    Args:
        factory: ``openai.DefaultAsyncHttpxClient`` or ``anthropic.DefaultAsyncHttpxClient``
            (they keep the SDK's own timeouts, limits and redirects).
        limit: The endpoint's ``max_response_bytes``.
    """

    async def bound(response: Any) -> None:
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(limit, response.status_code, int(length))
        response.stream = _BoundedStream(response.stream, limit, response.status_code)

    return factory(event_hooks={"response": [bound]})

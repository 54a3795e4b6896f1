"""A response-size bound for the official SDKs' HTTP client (``transport="sdk"``).

The SDKs read a whole body into memory before looking at it, error bodies included. A
response hook (it runs once the headers are in, before the body is read) refuses a declared
length over the limit and wraps the body stream so reading stops at the limit; a gzip or
deflate body is decoded by that wrapper, so the limit applies to decoded bytes (a small
compressed body cannot inflate past it). The
``BodyTooLarge`` it raises reaches the SDK's connection-error path, where
``plait.clients.sdk.map_sdk_error`` turns it into a retryable ``ResponseFormatError``.

A hook rather than a custom transport: the SDK client keeps its own transport, connection
limits and proxy mounts.
"""

from __future__ import annotations

import zlib
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


_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib framing per Content-Encoding


class _BoundedStream(_http.AsyncByteStream):
    """The body, decoded here when gzip/deflate (so the bound is on decoded bytes)."""

    def __init__(self, inner: Any, limit: int, status: int, wbits: int | None) -> None:
        self._inner = inner
        self._limit = limit
        self._status = status
        self._wbits = wbits

    async def __aiter__(self) -> AsyncIterator[bytes]:
        limit = self._limit
        seen = 0
        decoder = zlib.decompressobj(self._wbits) if self._wbits is not None else None
        async for chunk in self._inner:
            data: bytes = chunk
            while data:
                if decoder is None:
                    out, data = data, b""
                else:
                    try:  # at most limit + 1 bytes out of each step: a bomb never inflates
                        out = decoder.decompress(data, limit + 1 - seen)
                    except zlib.error as exc:
                        raise _http.DecodingError(f"invalid compressed body: {exc}") from exc
                    data = decoder.unconsumed_tail
                seen += len(out)
                if seen > limit:
                    raise BodyTooLarge(limit, self._status)
                if out:
                    yield out
        if decoder is not None and (tail := decoder.flush()):
            if seen + len(tail) > limit:
                raise BodyTooLarge(limit, self._status)
            yield tail

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
        headers = response.headers
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(limit, response.status_code, int(length))
        wbits = _WBITS.get(headers.get("content-encoding", "").strip().lower())
        if wbits is not None:
            # Decoded (and bounded) by the stream below, so httpx must not decode again;
            # the declared length was of the encoded body.
            del headers["content-encoding"]
            headers.pop("content-length", None)
        response.stream = _BoundedStream(response.stream, limit, response.status_code, wbits)

    return factory(event_hooks={"response": [bound]})

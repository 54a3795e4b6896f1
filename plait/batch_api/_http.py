"""The HTTP requests of the batch APIs: one session per loop, every failure mapped.

Batch requests are few and large (a JSONL upload, a results file), so they share nothing
with the chat clients' connection pools. Credentials live in the session's headers only;
every error text passes through the endpoint's ``Redactor``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from plait.clients._errors import error_from_exception, error_from_status, format_error
from plait.clients._redact import Redactor
from plait.errors import LLMError

__all__ = ["BatchHTTP"]


class BatchHTTP:
    """GET/POST to one provider with fixed headers; returns bodies, raises ``LLMError``.

    Args:
        headers: Request headers, credentials included (never logged or kept on errors).
        alias: Endpoint alias, for error messages.
        redactor: Masks the key in error text.
        timeout: Seconds for one request (uploads and result files can be large).
        max_bytes: Largest body read.
    """

    def __init__(self, headers: dict[str, str], alias: str, redactor: Redactor, *,
                 timeout: float, max_bytes: int) -> None:
        self._headers = headers
        self._alias = alias
        self._redactor = redactor
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._seconds = timeout
        self._max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.requests = 0  # HTTP requests sent, for the run summary and tests

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers,
                                                  skip_auto_headers=("User-Agent",))
            self._loop = loop
        return self._session

    async def send(self, method: str, url: str, *, body: Any = None,
                   data: bytes | aiohttp.FormData | None = None) -> bytes:
        """Send one request; the body of a 2xx reply.

        Raises:
            LLMError: The mapped error of a non-2xx status or a transport failure.
        """
        session = self._session_now()
        redact = self._redactor
        payload = json.dumps(body).encode() if body is not None else data
        headers = {"Content-Type": "application/json"} if body is not None else None
        self.requests += 1
        try:
            async with session.request(method, url, data=payload, headers=headers,
                                       timeout=self._timeout) as resp:
                raw = await self._read(resp)
                if resp.status >= 300:
                    raise error_from_status(resp.status, resp.headers, redact.body(raw) or "",
                                            self._alias)
                return raw
        except LLMError as exc:
            raise redact.error(exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise redact.error(error_from_exception(exc, self._alias, self._seconds)) from None

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        body = bytearray()
        async for chunk in resp.content.iter_chunked(1 << 20):
            body += chunk
            if len(body) > self._max_bytes:
                raise format_error(f"a batch reply over {self._max_bytes} bytes", None,
                                   self._alias)
        return bytes(body)

    async def send_json(self, method: str, url: str, *, body: Any = None,
                        data: bytes | aiohttp.FormData | None = None) -> dict[str, Any]:
        """``send``, then decode a JSON object.

        Raises:
            LLMError: As ``send``, or a ``ResponseFormatError`` for a body that is no object.
        """
        raw = await self.send(method, url, body=body, data=data)
        try:
            decoded: object = json.loads(raw)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise format_error("a batch reply that is not a JSON object",
                               self._redactor.body(raw[:500]), self._alias)
        return decoded  # pyright: ignore[reportUnknownVariableType]

    async def aclose(self) -> None:
        """Close the session (if it belongs to the running loop)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

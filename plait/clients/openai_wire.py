"""OpenAI Chat Completions over a lean aiohttp transport (also vLLM and other compatibles).

``JSONPoster`` is the shared transport of both wire clients: one ``aiohttp.ClientSession``
per event loop with a keep-alive connector sized to ``max_concurrent``, bodies encoded and
decoded with the stdlib ``json`` on bytes. It costs a fraction of the official SDK's
per-call CPU (see ``bench/bench_client_cpu.py``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from plait.clients._errors import (
    body_too_large,
    error_from_exception,
    error_from_status,
    format_error,
    json_list,
    json_object,
)
from plait.clients._redact import Redactor
from plait.clients.base import LLMRequest, LLMResponse, Usage
from plait.errors import LLMError
from plait.resources.config import DEFAULT_MAX_RESPONSE_BYTES, EndpointConfig

__all__ = ["JSONPoster", "OpenAIWireClient", "openai_payload", "parse_openai_reply"]


class JSONPoster:
    """POSTs JSON to one URL and returns the decoded 2xx reply; maps every failure.

    The session is created lazily inside the running loop (sessions are bound to the loop
    that made them); a call from a different loop gets a fresh session.

    Args:
        url: Full URL to POST to.
        headers: Request headers (including credentials; never logged or kept on errors).
        max_concurrent: Connection-pool size, or None for unlimited.
        alias: Endpoint alias, for error messages.
        max_bytes: Largest body read; a longer one fails the attempt (retryable).
        redactor: Masks the key in every error text; default: masks credential headers.
    """

    def __init__(
        self, url: str, headers: dict[str, str], max_concurrent: int | None, alias: str,
        *, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, redactor: Redactor | None = None,
    ) -> None:
        self._url = url
        self._headers = headers
        self._limit = max_concurrent or 0
        self._alias = alias
        self._max_bytes = max_bytes
        self._redactor = redactor or Redactor()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _session_for_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, skip_auto_headers=("User-Agent",),
            )
            self._loop = loop
        return self._session

    async def post(self, payload: dict[str, Any], timeout: float) -> Any:
        """POST ``payload``; return the parsed JSON of a 2xx reply.

        Raises:
            LLMError: The mapped error for a non-2xx status, a transport failure, a
                timeout, or a body that is not JSON.
        """
        session = self._session_for_loop()
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = self._timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
        data = json.dumps(payload).encode()
        redact = self._redactor
        try:
            async with session.post(self._url, data=data, timeout=client_timeout) as resp:
                body = await self._read(resp)
                status = resp.status
                if status >= 300:
                    raise error_from_status(status, resp.headers, redact.body(body) or "",
                                            self._alias)
        except LLMError as exc:
            raise redact.error(exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise redact.error(error_from_exception(exc, self._alias, timeout)) from exc
        try:
            return json.loads(body)
        except ValueError:
            raise format_error("the body is not valid JSON", redact.body(body),
                               self._alias) from None

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        # The common reply declares a small Content-Length: one read, no per-chunk loop. A
        # compressed body's length says nothing of its decoded size: count what is decoded.
        limit = self._max_bytes
        length = resp.content_length
        encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
        if length is not None and length <= limit and not encoded:
            return await resp.read()
        if length is not None and length > limit:
            raise body_too_large(limit, self._alias, resp.status, declared=length)
        body = bytearray()
        async for chunk in resp.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > limit:
                raise body_too_large(limit, self._alias, resp.status)
        return bytes(body)

    async def aclose(self) -> None:
        """Close the session (if it belongs to the running loop)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def openai_payload(model: str, request: LLMRequest) -> dict[str, Any]:
    """The Chat Completions body for ``request``."""
    messages: list[dict[str, str]] = []
    if request.system_prompt:
        messages.append({"role": "system", "content": request.system_prompt})
    messages.append({"role": "user", "content": request.prompt})
    payload: dict[str, Any] = {
        "model": model, "messages": messages, "temperature": request.temperature,
    }
    if request.max_tokens is not None:
        payload["max_tokens"] = request.max_tokens
    if request.json_schema is not None:
        # strict=False: strict mode demands additionalProperties=false on every object,
        # which user (pydantic) schemas rarely have; the pool validates the reply anyway.
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": request.schema_name, "schema": request.json_schema, "strict": False,
            },
        }
    return payload


def parse_openai_reply(data: Any, alias: str | None) -> LLMResponse:
    """Turn a decoded Chat Completions reply into an ``LLMResponse``.

    Raises:
        ResponseFormatError: No choices, no message, or no text content.
    """
    obj = json_object(data)
    if obj is None:
        raise format_error("expected a JSON object", json.dumps(data)[:600], alias)
    choices = json_list(obj.get("choices"))
    if not choices:
        raise format_error("'choices' is missing or empty", json.dumps(data), alias)
    choice = json_object(choices[0]) or {}
    message = json_object(choice.get("message")) or {}
    content: object = message.get("content")
    if not isinstance(content, str):
        refusal: object = message.get("refusal")
        what = f"the model refused: {refusal}" if refusal else "choices[0].message.content"
        raise format_error(f"no text in {what}", json.dumps(data), alias)
    finish: object = choice.get("finish_reason")
    return LLMResponse(
        text=content,
        usage=Usage.from_reply(obj.get("usage"), "prompt_tokens", "completion_tokens"),
        model=str(obj.get("model") or ""),
        finish_reason=finish if isinstance(finish, str) else None,
    )


class OpenAIWireClient:
    """``LLMClient`` for the OpenAI Chat Completions wire format over aiohttp.

    Args:
        config: The endpoint; ``resolved_base_url`` + ``/chat/completions`` is called.
        alias: The endpoint alias, for errors.

    Raises:
        MissingAPIKeyError: The provider needs a key and none is set (at construction,
            before any request).
    """

    def __init__(self, config: EndpointConfig, alias: str) -> None:
        self._model = config.model
        self._alias = alias
        headers = {"Content-Type": "application/json"}
        key = config.resolve_api_key(alias)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._redactor = Redactor(key)
        self._poster = JSONPoster(
            f"{config.resolved_base_url}/chat/completions", headers, config.max_concurrent,
            alias, max_bytes=config.max_response_bytes, redactor=self._redactor,
        )

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Send one chat request; raise an ``LLMError`` subclass on any failure."""
        data = await self._poster.post(openai_payload(self._model, request), timeout)
        try:
            return parse_openai_reply(data, self._alias)
        except LLMError as exc:  # a 2xx body may echo the key too
            raise self._redactor.error(exc) from None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._poster.aclose()

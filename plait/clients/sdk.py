"""Clients built on the official async SDKs (``transport="sdk"``).

The SDKs' own retries are off (``max_retries=0``): the endpoint pool owns every retry so
that one owner sees every attempt and every 429. SDK exceptions are mapped through
``plait.clients._errors`` (the same status mapping as the wire clients); the SDK's parsed
reply is dumped to plain data and parsed by the wire parsers, so both transports agree on
what a malformed reply is.

The SDKs cost more CPU per call than the aiohttp wire clients (httpx + pydantic models);
prefer ``transport="aiohttp"`` for throughput, ``"sdk"`` for parity with official tooling.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import anthropic
import openai

from plait.clients._errors import error_from_status, format_error
from plait.clients.anthropic_wire import anthropic_payload, parse_anthropic_reply
from plait.clients.base import LLMRequest, LLMResponse
from plait.clients.openai_wire import openai_payload, parse_openai_reply
from plait.errors import APIConnectionError, APITimeoutError, LLMError
from plait.resources.config import EndpointConfig

__all__ = ["AnthropicSDKClient", "OpenAISDKClient", "map_sdk_error"]

_SDK_ERRORS = (openai.APIError, anthropic.APIError)


def map_sdk_error(exc: Exception, alias: str | None, timeout: float) -> LLMError:
    """Map an ``openai`` or ``anthropic`` SDK exception to the plait error tree."""
    where = f"endpoint '{alias}'" if alias else "the endpoint"
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        response = exc.response
        return error_from_status(exc.status_code, response.headers, response.content, alias)
    if isinstance(exc, openai.APITimeoutError | anthropic.APITimeoutError):
        return APITimeoutError(
            f"No complete answer from {where} within {timeout:g}s. Raise timeout= in the "
            "EndpointConfig if the model is slow.", alias=alias,
        )
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        cause = exc.__cause__ or exc
        if type(cause).__name__ == "RemoteProtocolError" and "message body" in str(cause):
            # httpx (or httpx2, per SDK version: matched by name) has no distinct type for a
            # body cut short ("peer closed connection without sending complete message
            # body"); aiohttp's is ClientPayloadError.
            return format_error(f"truncated body ({cause})", None, alias)
        return APIConnectionError(
            f"Connection to {where} failed ({type(cause).__name__}: {cause}). Check base_url "
            "and that the server is up.", alias=alias,
        )
    # APIResponseValidationError and friends: a 2xx body the SDK could not use.
    body = getattr(exc, "body", None)
    return format_error(f"{type(exc).__name__}: {exc}", _body_text(body), alias)


def _body_text(body: object) -> str | None:
    if body is None or isinstance(body, str):
        return body
    try:
        return json.dumps(body)
    except (TypeError, ValueError):
        return repr(body)


def _as_data(reply: object) -> object:
    # Non-JSON 2xx bodies come back from the SDKs as plain str rather than a model.
    if isinstance(reply, str):
        try:
            return json.loads(reply)
        except ValueError:
            return reply
    dump = getattr(reply, "model_dump", None)
    return dump() if callable(dump) else reply


class _LoopBound:
    """Creates the SDK client lazily per event loop (its HTTP pool is bound to the loop)."""

    def __init__(self) -> None:
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _make(self) -> Any:
        raise NotImplementedError

    def _get(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._make()
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the SDK client's connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()


class OpenAISDKClient(_LoopBound):
    """``LLMClient`` over ``openai.AsyncOpenAI`` (OpenAI and OpenAI-compatible servers).

    Raises:
        MissingAPIKeyError: The provider needs a key and none is set (at construction).
    """

    def __init__(self, config: EndpointConfig, alias: str) -> None:
        super().__init__()
        self._config = config
        self._alias = alias
        # The SDK insists on a key; servers that need none (vLLM) ignore this placeholder.
        self._key = config.resolve_api_key(alias) or "unused"

    def _make(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self._config.resolved_base_url, api_key=self._key, max_retries=0,
            timeout=self._config.timeout,
        )

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Send one chat request; raise an ``LLMError`` subclass on any failure."""
        client: openai.AsyncOpenAI = self._get()
        body = openai_payload(self._config.model, request)
        try:
            reply = cast("object", await client.chat.completions.create(**body, timeout=timeout))
        except _SDK_ERRORS as exc:
            raise map_sdk_error(exc, self._alias, timeout) from exc
        except ValueError as exc:  # the SDK's json.loads on a malformed 2xx body
            raise format_error(f"the body is not valid JSON ({exc})", None, self._alias) from exc
        return parse_openai_reply(_as_data(reply), self._alias)


class AnthropicSDKClient(_LoopBound):
    """``LLMClient`` over ``anthropic.AsyncAnthropic``.

    Raises:
        MissingAPIKeyError: No key is set (at construction).
    """

    def __init__(self, config: EndpointConfig, alias: str) -> None:
        super().__init__()
        self._config = config
        self._alias = alias
        self._key = config.resolve_api_key(alias) or "unused"

    def _make(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url=self._config.resolved_base_url, api_key=self._key, max_retries=0,
            timeout=self._config.timeout,
        )

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Send one message request; raise an ``LLMError`` subclass on any failure."""
        client: anthropic.AsyncAnthropic = self._get()
        body = anthropic_payload(self._config.model, request)
        # anthropic 2.x dropped ``temperature`` from create()'s signature; send it as the
        # wire client does, through extra_body.
        extra = {"temperature": body.pop("temperature")}
        try:
            reply = cast("object", await client.messages.create(
                **body, extra_body=extra, timeout=timeout))
        except _SDK_ERRORS as exc:
            raise map_sdk_error(exc, self._alias, timeout) from exc
        except ValueError as exc:  # the SDK's json.loads on a malformed 2xx body
            raise format_error(f"the body is not valid JSON ({exc})", None, self._alias) from exc
        return parse_anthropic_reply(_as_data(reply), self._alias)

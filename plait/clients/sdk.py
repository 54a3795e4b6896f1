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

from plait.clients._errors import body_too_large, error_from_status, format_error
from plait.clients._redact import Redactor
from plait.clients._sdk_http import BodyTooLarge, bounded_http_client
from plait.clients.anthropic_wire import anthropic_payload, parse_anthropic_reply
from plait.clients.base import LLMRequest, LLMResponse
from plait.clients.openai_wire import openai_payload, parse_openai_reply
from plait.errors import APIConnectionError, APITimeoutError, LLMError
from plait.resources.config import EndpointConfig

__all__ = ["AnthropicSDKClient", "OpenAISDKClient", "map_sdk_error"]

_SDK_ERRORS = (openai.APIError, anthropic.APIError)


def map_sdk_error(
    exc: Exception, alias: str | None, timeout: float, redactor: Redactor | None = None
) -> LLMError:
    """Map an ``openai`` or ``anthropic`` SDK exception to the plait error tree.

    Every text taken from the exchange passes through ``redactor`` (credential headers are
    masked even without one).
    """
    redact = redactor or Redactor()
    return redact.error(_map_sdk_error(exc, alias, timeout, redact))


def _map_sdk_error(exc: Exception, alias: str | None, timeout: float,
                   redact: Redactor) -> LLMError:
    where = f"endpoint '{alias}'" if alias else "the endpoint"
    too_large = exc if isinstance(exc, BodyTooLarge) else exc.__cause__
    too_large = too_large if isinstance(too_large, BodyTooLarge) else None
    if too_large is not None:
        return body_too_large(too_large.limit, alias, too_large.status,
                              declared=too_large.declared)
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        response = exc.response
        return error_from_status(exc.status_code, response.headers,
                                 redact.body(response.content) or "", alias)
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
    return format_error(f"{type(exc).__name__}: {exc}", redact.body(_body_text(body)), alias)


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
    # warnings=False: a field of an unexpected type ("n/a" token counts) is the parsers'
    # business (they record it as unknown), not a reason for pydantic to warn.
    return dump(warnings=False) if callable(dump) else reply


class _LoopBound:
    """Creates the SDK client lazily per event loop (its HTTP pool is bound to the loop)."""

    _alias: str
    _redactor: Redactor

    def __init__(self) -> None:
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _mapped(self, exc: Exception, timeout: float) -> LLMError:
        mapped = map_sdk_error(exc, self._alias, timeout, self._redactor)
        # A status error's own message quotes the raw (unmasked) error body: keep it out
        # of the chain, so no traceback shows it.
        status_error = isinstance(exc, openai.APIStatusError | anthropic.APIStatusError)
        mapped.__cause__ = None if status_error else exc
        mapped.__suppress_context__ = True
        return mapped

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
        self._redactor = Redactor(self._key)

    def _make(self) -> openai.AsyncOpenAI:
        http = bounded_http_client(openai.DefaultAsyncHttpxClient,
                                   self._config.max_response_bytes)
        return openai.AsyncOpenAI(
            base_url=self._config.resolved_base_url, api_key=self._key, max_retries=0,
            timeout=self._config.timeout, http_client=http,
        )

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Send one chat request; raise an ``LLMError`` subclass on any failure."""
        client: openai.AsyncOpenAI = self._get()
        body = openai_payload(self._config.model, request)
        try:
            reply = cast("object", await client.chat.completions.create(**body, timeout=timeout))
        except _SDK_ERRORS as exc:
            raise self._mapped(exc, timeout)  # noqa: B904 (the cause is set by _mapped)
        except BodyTooLarge as exc:  # SDK releases that do not wrap a hook's exception
            raise self._mapped(exc, timeout) from None
        except ValueError as exc:  # the SDK's json.loads on a malformed 2xx body
            raise format_error(f"the body is not valid JSON ({exc})", None, self._alias) from exc
        try:
            return parse_openai_reply(_as_data(reply), self._alias)
        except LLMError as exc:  # a 2xx body may echo the key too
            raise self._redactor.error(exc) from None


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
        self._redactor = Redactor(self._key)

    def _make(self) -> anthropic.AsyncAnthropic:
        http = bounded_http_client(anthropic.DefaultAsyncHttpxClient,
                                   self._config.max_response_bytes)
        return anthropic.AsyncAnthropic(
            base_url=self._config.resolved_base_url, api_key=self._key, max_retries=0,
            timeout=self._config.timeout, http_client=http,
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
            raise self._mapped(exc, timeout)  # noqa: B904 (the cause is set by _mapped)
        except BodyTooLarge as exc:  # SDK releases that do not wrap a hook's exception
            raise self._mapped(exc, timeout) from None
        except ValueError as exc:  # the SDK's json.loads on a malformed 2xx body
            raise format_error(f"the body is not valid JSON ({exc})", None, self._alias) from exc
        try:
            return parse_anthropic_reply(_as_data(reply), self._alias)
        except LLMError as exc:  # a 2xx body may echo the key too
            raise self._redactor.error(exc) from None

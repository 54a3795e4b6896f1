"""Anthropic Messages over the lean aiohttp transport.

Structured output uses a forced tool: the request carries one tool whose ``input_schema`` is
the JSON schema, and ``tool_choice`` forces the model to call it. Anthropic recommends this
for JSON output, and the reply's ``tool_use.input`` is already parsed JSON, so it cannot
arrive as prose around a JSON block. The response text is that input re-encoded as JSON
(the pool's validator then parses it like any provider's JSON reply). If a server ignores
the tool and answers in text, the text is returned and validation decides.
"""

from __future__ import annotations

import json
from typing import Any

from plait.clients._errors import format_error, json_list, json_object
from plait.clients._redact import Redactor
from plait.clients.base import LLMRequest, LLMResponse, Usage
from plait.clients.openai_wire import JSONPoster
from plait.errors import LLMError
from plait.resources.config import EndpointConfig

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicWireClient",
    "anthropic_payload",
    "parse_anthropic_reply",
]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024  # Anthropic requires max_tokens; used when the request has None


def anthropic_payload(model: str, request: LLMRequest) -> dict[str, Any]:
    """The Messages API body for ``request``."""
    payload: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens if request.max_tokens is not None
        else DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": request.prompt}],
        "temperature": request.temperature,
    }
    if request.system_prompt:
        payload["system"] = request.system_prompt
    if request.json_schema is not None:
        payload["tools"] = [{
            "name": request.schema_name,
            "description": "Reply by calling this tool with the answer as its input.",
            "input_schema": request.json_schema,
        }]
        payload["tool_choice"] = {"type": "tool", "name": request.schema_name}
    return payload


def parse_anthropic_reply(data: Any, alias: str | None) -> LLMResponse:
    """Turn a decoded Messages reply into an ``LLMResponse``.

    Text is the concatenation of the text blocks, or the JSON of the first ``tool_use``
    block's input when there is one.

    Raises:
        ResponseFormatError: No content blocks, or neither text nor tool input.
    """
    obj = json_object(data)
    if obj is None:
        raise format_error("expected a JSON object", json.dumps(data)[:600], alias)
    content = json_list(obj.get("content"))
    if not content:
        raise format_error("'content' is missing or empty", json.dumps(data), alias)
    texts: list[str] = []
    tool_input: object = None
    for raw in content:
        block = json_object(raw) or {}
        kind: object = block.get("type")
        piece: object = block.get("text")
        if kind == "text" and isinstance(piece, str):
            texts.append(piece)
        elif kind == "tool_use" and tool_input is None and "input" in block:
            tool_input = block["input"]
    if tool_input is not None:
        text = json.dumps(tool_input)
    elif texts:
        text = "".join(texts)
    else:
        raise format_error("no text or tool_use block in 'content'", json.dumps(data), alias)
    stop: object = obj.get("stop_reason")
    return LLMResponse(
        text=text,
        usage=Usage.from_reply(obj.get("usage"), "input_tokens", "output_tokens"),
        model=str(obj.get("model") or ""),
        finish_reason=stop if isinstance(stop, str) else None,
    )


class AnthropicWireClient:
    """``LLMClient`` for the Anthropic Messages wire format over aiohttp.

    Args:
        config: The endpoint; ``resolved_base_url`` + ``/v1/messages`` is called.
        alias: The endpoint alias, for errors.

    Raises:
        MissingAPIKeyError: No key is set (at construction, before any request).
    """

    def __init__(self, config: EndpointConfig, alias: str) -> None:
        self._model = config.model
        self._alias = alias
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        key = config.resolve_api_key(alias)
        if key:
            headers["x-api-key"] = key
        self._redactor = Redactor(key)
        self._poster = JSONPoster(
            f"{config.resolved_base_url}/v1/messages", headers, config.max_concurrent, alias,
            max_bytes=config.max_response_bytes, redactor=self._redactor,
        )

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Send one message request; raise an ``LLMError`` subclass on any failure."""
        data = await self._poster.post(anthropic_payload(self._model, request), timeout)
        try:
            return parse_anthropic_reply(data, self._alias)
        except LLMError as exc:  # a 2xx body may echo the key too
            raise self._redactor.error(exc) from None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._poster.aclose()

"""Reply bodies: the default echo, scripted responders, schema-valid JSON, and faults."""

from __future__ import annotations

import importlib
import inspect
import json
import math
from typing import Any

from aiohttp import web

from plait.errors import ConfigError
from plait.testing._config import Fault, Responder, RetryHint
from plait.testing._schema_fake import fake_json
from plait.testing._wire import AnthropicFormat, ChatRequest, OpenAIFormat

__all__ = ["Replier", "default_reply", "fault_response", "json_response", "retry_headers"]

_JSON = "application/json"
# Cut inside the first choice, so no JSON parser can accept it.
_MALFORMED = b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{"ind'


def default_reply(req: ChatRequest) -> str:
    """The reply when no responder is set: names the model and echoes the user's text."""
    return f"[{req.model}] echo: {req.user_text[:200]}"


def load_responder(path: str) -> Responder:
    """Import ``"module:function"`` (or ``"module.function"``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"Cannot import responder {path!r}: {exc}. Give it as 'package.module:function'."
        ) from exc
    if not callable(fn):
        raise ConfigError(f"Responder {path!r} is not callable.")
    return fn


class Replier:
    """Makes the reply text (and, for a forced Anthropic tool, its input object)."""

    def __init__(self, responder: Responder | str | None) -> None:
        self._responder = load_responder(responder) if isinstance(responder, str) else responder

    async def reply(self, req: ChatRequest) -> tuple[str, Any]:
        """``(text, tool_input)``; ``tool_input`` is None unless a tool was forced."""
        text = await self._text(req)
        if req.tool_name is None:
            return text, None
        try:
            tool_input = json.loads(text)
        except ValueError:
            tool_input = {"text": text}
        return text, tool_input

    async def _text(self, req: ChatRequest) -> str:
        responder = self._responder
        if responder is not None:
            out = responder(req)
            if inspect.isawaitable(out):
                out = await out
            # Responders may return a dict/list for JSON replies; anything else is text.
            return out if isinstance(out, str) else json.dumps(out)
        if req.json_schema is not None:
            return json.dumps(fake_json(req.json_schema, seed_text=req.user_text))
        if req.json_mode:
            return json.dumps({"reply": default_reply(req)})
        return default_reply(req)


def retry_headers(retry_after: float, hint: RetryHint = "both") -> dict[str, str]:
    """The headers stating ``retry_after`` in the form ``hint`` names (see ``RetryHint``)."""
    headers: dict[str, str] = {}
    # Whole seconds rounded up (never 0, which clients read as "now"), as OpenAI and
    # Anthropic send them; exact milliseconds as OpenAI's retry-after-ms.
    if hint in ("both", "seconds"):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    if hint in ("both", "ms"):
        headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    return headers


def json_response(
    status: int, payload: Any, *, retry_after: float | None = None,
    retry_hint: RetryHint = "both", headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON response; a ``retry_after`` adds the hint headers ``retry_hint`` names.

    ``headers`` are added verbatim (after the hint, so they may replace it).
    """
    if retry_after is not None:
        headers = retry_headers(retry_after, retry_hint) | (headers or {})
    return web.Response(
        status=status, body=json.dumps(payload).encode(), content_type=_JSON, headers=headers
    )


async def fault_response(
    request: web.BaseRequest, fmt: OpenAIFormat | AnthropicFormat, req: ChatRequest,
    fault: Fault, retry_hint: RetryHint = "both",
) -> web.StreamResponse:
    """The response (or broken connection) that ``fault`` scripts."""
    kind = fault.kind
    if kind == "429":
        message = f"Rate limit reached for {req.model} (scripted fault)."
        if fault.headers is not None:  # verbatim, instead of the computed hint
            return json_response(429, fmt.error(429, message), headers=dict(fault.headers))
        return json_response(429, fmt.error(429, message), retry_after=fault.retry_after,
                             retry_hint=retry_hint)
    if kind in ("500", "503", "400"):
        status = int(kind)
        return json_response(status, fmt.error(status, f"Scripted {kind} fault."))
    if kind == "malformed":
        return web.Response(status=200, body=_MALFORMED, content_type=_JSON)
    if kind == "empty_choices":
        return json_response(200, fmt.reply(req, "", empty=True))
    if kind == "truncated":
        return await _truncated(request, fmt, req)
    # "close" and "hang" (after its wait): drop the connection without a response.
    _drop(request)
    return web.Response(status=200)


async def _truncated(
    request: web.BaseRequest, fmt: OpenAIFormat | AnthropicFormat, req: ChatRequest
) -> web.StreamResponse:
    full = json.dumps(fmt.reply(req, "truncated")).encode()
    response = web.StreamResponse(status=200)
    response.content_type = _JSON
    response.content_length = len(full)
    await response.prepare(request)
    await response.write(full[: len(full) // 2])
    _drop(request)
    return response


def _drop(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()

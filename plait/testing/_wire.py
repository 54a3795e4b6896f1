"""The two wire formats the loopback server speaks: OpenAI chat and Anthropic messages.

Plain dicts and ``json`` only: this is the server's hot path, so no validation library.
A malformed request raises ``WireError``, which the server turns into a 400 in the
provider's own error shape.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

__all__ = ["ChatRequest", "Provider", "WireError", "anthropic_format", "openai_format"]

Provider = Literal["openai", "anthropic"]


class WireError(ValueError):
    """A request body the provider would reject with 400."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat request as a responder sees it, whichever wire format it came in.

    Attributes:
        provider: "openai" or "anthropic".
        model: The requested model name.
        system: The system prompt ("" if none).
        messages: Every message as ``{"role": ..., "content": <text>}``, system excluded.
        user_text: The text of the last user message.
        temperature: The sampling temperature, if sent.
        max_tokens: The output cap, if sent.
        json_schema: The JSON schema the reply must follow, or None.
        schema_name: The schema's (or forced tool's) name, or None.
        json_mode: True for OpenAI ``response_format={"type": "json_object"}``.
        tool_name: For Anthropic, the tool forced by ``tool_choice`` (reply is a tool_use).
        body: The raw request body.
    """

    provider: Provider
    model: str
    system: str
    messages: tuple[dict[str, str], ...]
    user_text: str
    temperature: float | None
    max_tokens: int | None
    json_schema: dict[str, Any] | None
    schema_name: str | None
    json_mode: bool
    tool_name: str | None
    body: dict[str, Any]

    @property
    def input_chars(self) -> int:
        """Characters of prompt text (system + messages), for usage accounting."""
        return len(self.system) + sum(len(m["content"]) for m in self.messages)


def estimate_tokens(chars: int) -> int:
    """Tokens for ``chars`` characters: about four characters per token, at least one."""
    return max(1, math.ceil(chars / 4))


def _as_dict(value: object) -> dict[str, Any] | None:
    return cast("dict[str, Any]", value) if isinstance(value, dict) else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [_as_dict(p) or {} for p in cast("list[Any]", content)]
        return "".join(t for p in parts if isinstance(t := p.get("text", ""), str))
    if content is None:
        return ""
    raise WireError(f"message content must be a string or a list of parts, got {content!r}")


def _common(body: Any) -> tuple[dict[str, Any], str, list[Any]]:
    obj = _as_dict(body)
    if obj is None:
        raise WireError("request body must be a JSON object")
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise WireError("'model' is required and must be a non-empty string")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError("'messages' is required and must be a non-empty list")
    return obj, model, cast("list[Any]", messages)


def _last_user(messages: list[dict[str, str]]) -> str:
    for m in reversed(messages):
        if m["role"] == "user":
            return m["content"]
    return ""


def _normalize(raw: list[Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in raw:
        m = _as_dict(item)
        role = m.get("role") if m is not None else None
        if m is None or not isinstance(role, str):
            raise WireError("each message must be an object with a 'role'")
        out.append({"role": role, "content": _text_of(m.get("content"))})
    return out


_ids = itertools.count(1)


class OpenAIFormat:
    """OpenAI Chat Completions: request parsing, replies and errors."""

    provider: Provider = "openai"

    def parse(self, body: Any) -> ChatRequest:
        """Parse a ``/v1/chat/completions`` body into a ``ChatRequest``."""
        body, model, raw = _common(body)
        messages = _normalize(raw)
        system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
        convo = tuple(m for m in messages if m["role"] not in ("system", "developer"))
        schema: dict[str, Any] | None = None
        name: str | None = None
        json_mode = False
        fmt = _as_dict(body.get("response_format"))
        if fmt is not None:
            if fmt.get("type") == "json_schema":
                spec = _as_dict(fmt.get("json_schema")) or {}
                schema = _as_dict(spec.get("schema"))
                if schema is None:
                    raise WireError("response_format.json_schema.schema must be an object")
                name = spec.get("name")
            json_mode = fmt.get("type") == "json_object"
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return ChatRequest(
            "openai", model, system, convo, _last_user(list(convo)), body.get("temperature"),
            max_tokens, schema, name, json_mode, None, body,
        )

    def reply(
        self, req: ChatRequest, text: str, *, empty: bool = False, tool_input: Any = None
    ) -> dict[str, Any]:
        """A ``chat.completion`` object carrying ``text`` (``tool_input`` is unused)."""
        prompt = estimate_tokens(req.input_chars)
        completion = estimate_tokens(len(text))
        choices: list[Any] = [] if empty else [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }]
        return {
            "id": f"chatcmpl-plait{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def error(self, status: int, message: str) -> dict[str, Any]:
        """An error body shaped like OpenAI's."""
        kind, code = _OPENAI_ERRORS.get(status, ("server_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}


_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


class AnthropicFormat:
    """Anthropic Messages: request parsing, replies and errors."""

    provider: Provider = "anthropic"

    def parse(self, body: Any) -> ChatRequest:
        """Parse a ``/v1/messages`` body into a ``ChatRequest``."""
        body, model, raw = _common(body)
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise WireError("max_tokens: field required (a positive integer)")
        convo = tuple(_normalize(raw))
        system = _text_of(body.get("system"))
        schema: dict[str, Any] | None = None
        name: str | None = None
        tool: str | None = None
        choice = _as_dict(body.get("tool_choice"))
        if choice is not None and choice.get("type") == "tool":
            tool = str(choice.get("name"))
            for raw_tool in body.get("tools") or ():
                t = _as_dict(raw_tool) or {}
                if t.get("name") == tool:
                    schema, name = _as_dict(t.get("input_schema")), tool
            if schema is None:
                raise WireError(f"tool_choice names tool {tool!r}, which is not in 'tools'")
        fmt = _as_dict(body.get("output_format"))
        if fmt is not None and fmt.get("type") == "json_schema":
            schema = _as_dict(fmt.get("schema"))
        return ChatRequest(
            "anthropic", model, system, convo, _last_user(list(convo)),
            body.get("temperature"), max_tokens, schema, name, False, tool, body,
        )

    def reply(
        self, req: ChatRequest, text: str, *, empty: bool = False, tool_input: Any = None
    ) -> dict[str, Any]:
        """A ``message`` object carrying ``text`` (or a tool_use of ``tool_input``)."""
        content: list[Any]
        if empty:
            content = []
        elif req.tool_name is not None:
            content = [{"type": "tool_use", "id": f"toolu_plait{next(_ids)}",
                        "name": req.tool_name, "input": tool_input}]
        else:
            content = [{"type": "text", "text": text}]
        return {
            "id": f"msg_plait{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": content,
            "stop_reason": "tool_use" if req.tool_name is not None else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": estimate_tokens(req.input_chars),
                "output_tokens": estimate_tokens(len(text)),
            },
        }

    def error(self, status: int, message: str) -> dict[str, Any]:
        """An error body shaped like Anthropic's."""
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}


_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}

openai_format = OpenAIFormat()
anthropic_format = AnthropicFormat()


def formats() -> Mapping[Provider, OpenAIFormat | AnthropicFormat]:
    """The wire formats by provider name."""
    return {"openai": openai_format, "anthropic": anthropic_format}

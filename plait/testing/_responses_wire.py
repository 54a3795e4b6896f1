"""The OpenAI Responses API (``POST /v1/responses``) as the loopback server speaks it.

Requests carry ``input`` (a string, or a list of messages whose content is a string or
``input_text`` parts), optional ``instructions`` (the system prompt), ``max_output_tokens``,
``temperature`` and ``text.format`` (``json_schema``). Replies are ``response`` objects with
one assistant message of ``output_text`` and ``usage.input_tokens/output_tokens``. Errors use
the OpenAI error shape. Faults, limits and responders work as for chat completions.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, cast

from plait.testing._wire import ChatRequest, OpenAIFormat, WireError, estimate_tokens

__all__ = ["ResponsesFormat", "responses_format"]

_ids = itertools.count(1)


def _dict(value: object) -> dict[str, Any] | None:
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in cast(list[Any], content):
            text = (_dict(part) or {}).get("text")
            if not isinstance(text, str):
                raise WireError("input content parts must be objects with a 'text' string")
            texts.append(text)
        return "".join(texts)
    raise WireError(f"message content must be a string or a list of parts, got {content!r:.80}")


def _messages(raw: object) -> list[dict[str, str]]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise WireError("'input' is required: a string or a non-empty list of messages")
    out: list[dict[str, str]] = []
    for item in cast(list[Any], raw):
        message = _dict(item)
        role = message.get("role") if message is not None else None
        if message is None or not isinstance(role, str):
            raise WireError("each input message must be an object with a 'role'")
        out.append({"role": role, "content": _content_text(message.get("content"))})
    return out


class ResponsesFormat(OpenAIFormat):
    """OpenAI Responses: request parsing and replies; errors as OpenAI's."""

    def parse(self, body: Any) -> ChatRequest:
        """Parse a ``/v1/responses`` body into a ``ChatRequest``."""
        obj = _dict(body)
        if obj is None:
            raise WireError("request body must be a JSON object")
        model = obj.get("model")
        if not isinstance(model, str) or not model:
            raise WireError("'model' is required and must be a non-empty string")
        messages = _messages(obj.get("input"))
        instructions = obj.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise WireError("'instructions' must be a string")
        system_parts = [instructions or ""] + [
            m["content"] for m in messages if m["role"] in ("system", "developer")]
        convo = tuple(m for m in messages if m["role"] not in ("system", "developer"))
        user = next((m["content"] for m in reversed(convo) if m["role"] == "user"), "")
        fmt = _dict((_dict(obj.get("text")) or {}).get("format")) or {}
        schema = _dict(fmt.get("schema")) if fmt.get("type") == "json_schema" else None
        if fmt.get("type") == "json_schema" and schema is None:
            raise WireError("text.format.schema must be an object")
        name = fmt.get("name") if isinstance(fmt.get("name"), str) else None
        return ChatRequest(
            "openai", model, "\n".join(p for p in system_parts if p), convo, user,
            obj.get("temperature"), obj.get("max_output_tokens"), schema, name,
            fmt.get("type") == "json_object", None, obj,
        )

    def reply(
        self, req: ChatRequest, text: str, *, empty: bool = False, tool_input: Any = None
    ) -> dict[str, Any]:
        """A ``response`` object carrying ``text`` (``empty``: no output items)."""
        n = next(_ids)
        prompt = estimate_tokens(req.input_chars)
        completion = estimate_tokens(len(text))
        output: list[Any] = [] if empty else [{
            "type": "message", "id": f"msg_plait{n}", "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }]
        return {
            "id": f"resp_plait{n}", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": req.model, "output": output,
            "usage": {"input_tokens": prompt, "output_tokens": completion,
                      "total_tokens": prompt + completion},
        }


responses_format = ResponsesFormat()

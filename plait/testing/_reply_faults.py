"""Faults in what a reply carries rather than in whether it arrives.

"bad_usage": a good reply with unusable token counts; "endless": a 200 whose body never
ends; "echo_key": an error body quoting the request's credentials, as careless proxies do;
"gzip_bomb": a small compressed body that inflates far beyond its Content-Length.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from aiohttp import web

from plait.testing._config import Fault
from plait.testing._wire import AnthropicFormat, ChatRequest, OpenAIFormat

__all__ = ["REPLY_FAULTS", "reply_fault_response"]

REPLY_FAULTS = frozenset({"bad_usage", "endless", "echo_key", "gzip_bomb"})
_CHUNK = b"x" * (1 << 16)


async def reply_fault_response(
    request: web.BaseRequest, fmt: OpenAIFormat | AnthropicFormat, req: ChatRequest,
    fault: Fault, text: str, tool_input: Any = None,
) -> web.StreamResponse:
    """The response for one of ``REPLY_FAULTS``; ``text`` (``tool_input``) is the normal reply."""
    if fault.kind == "bad_usage":
        reply = fmt.reply(req, text, tool_input=tool_input)
        usage: dict[str, Any] = reply["usage"]
        for key in usage:
            usage[key] = "n/a"
        return _json(200, reply)
    if fault.kind == "echo_key":
        headers = request.headers
        message = (
            "Unauthorized. Received Authorization: "
            f"{headers.get('Authorization', '(none)')}, x-api-key: "
            f"{headers.get('x-api-key', '(none)')} (plait.testing echo_key)."
        )
        return _json(401, fmt.error(401, message))
    if fault.kind == "gzip_bomb":
        return _gzip_bomb(fault.body_bytes, fmt.provider)
    return await _endless(request, fault.body_bytes)


async def _endless(request: web.BaseRequest, limit: int) -> web.StreamResponse:
    # Starts like a real reply, so nothing short of reading it all could tell it is bad.
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    head = b'{"id": "chatcmpl-endless", "choices": [{"message": {"content": "'
    await response.write(head)
    sent = len(head)
    try:
        while sent < limit:
            await response.write(_CHUNK)  # waits while the client does not read
            sent += len(_CHUNK)
    except (ConnectionError, RuntimeError):  # the client hung up
        return response
    await response.write_eof()
    return response


def _gzip_bomb(size: int, provider: str) -> web.Response:
    # A JSON reply whose text is `size` spaces: gzip shrinks it about a thousandfold.
    if provider == "anthropic":
        head, tail = b'{"id": "msg_bomb", "content": [{"type": "text", "text": "', b'"}]}'
    else:
        head, tail = b'{"id": "chatcmpl-bomb", "choices": [{"message": {"content": "', b'"}}]}'
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    parts = [compressor.compress(head)]
    block = b" " * (1 << 20)
    for _ in range(size // len(block)):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(tail))
    parts.append(compressor.flush())
    return web.Response(status=200, body=b"".join(parts), content_type="application/json",
                        headers={"Content-Encoding": "gzip"})


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode(),
                        content_type="application/json")

"""The one place where HTTP statuses, headers, bodies and transport exceptions become plait errors.

Both wire clients and both SDK clients funnel through here, so a 429 means the same thing
(``RateLimitError`` with ``retry_after``) whichever transport carried it. Error messages
carry at most ``BODY_EXCERPT`` characters of the body and never any header (headers hold
keys).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, cast

import aiohttp

from plait.errors import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    LLMError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)

__all__ = [
    "BODY_EXCERPT",
    "body_too_large",
    "error_from_exception",
    "error_from_status",
    "excerpt",
    "format_error",
    "json_list",
    "json_object",
    "parse_retry_after",
]

BODY_EXCERPT = 500

_HINTS = {
    401: "Check the API key (wrong key, or a key for another provider/base_url).",
    403: "The key lacks access to this model or endpoint.",
    404: "Check base_url and model: the server has no such route or model.",
    413: "The request is too large; shorten the prompt.",
    422: "The server rejected the request's parameters.",
}


def json_object(value: object) -> dict[str, Any] | None:
    """``value`` as a JSON object, or None if it is not one (for parsing untrusted replies)."""
    return cast("dict[str, Any]", value) if isinstance(value, dict) else None


def json_list(value: object) -> list[Any] | None:
    """``value`` as a JSON array, or None if it is not one."""
    return cast("list[Any]", value) if isinstance(value, list) else None


def excerpt(body: bytes | str | None) -> str:
    """The first ``BODY_EXCERPT`` characters of a body, decoded leniently."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text[:BODY_EXCERPT] + ("..." if len(text) > BODY_EXCERPT else "")


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` (preferred) or ``retry-after``.

    Args:
        headers: Response headers (case-insensitive mapping or lower-cased dict).
        now: Wall-clock time (``time.time()``) to resolve an HTTP-date ``retry-after``.

    Returns:
        Non-negative seconds, or None when the server gave no usable hint.
    """
    if not headers:
        return None
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        # Plain dicts are case-sensitive; multidict/httpx headers are not.
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def _provider_message(body: bytes | str) -> str | None:
    # OpenAI: {"error": {"message": ...}}; Anthropic: {"type": "error", "error": {...}}.
    try:
        data: Any = json.loads(body)
    except (ValueError, TypeError):
        return None
    obj = json_object(data)
    err: object = obj.get("error") if obj else None
    if isinstance(err, str):
        return err[:BODY_EXCERPT]
    err_obj = json_object(err)
    msg: object = err_obj.get("message") if err_obj else None
    return msg[:BODY_EXCERPT] if isinstance(msg, str) else None


def error_from_status(
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes | str,
    alias: str | None,
) -> LLMError:
    """Map a non-2xx HTTP response to the matching ``LLMError`` subclass.

    Args:
        status: HTTP status code.
        headers: Response headers; only ``retry-after(-ms)`` is read, none is kept.
        body: Response body; an excerpt is kept on the error.
        alias: Endpoint alias, for the message.

    Returns:
        ``RateLimitError`` (429), ``ServerError`` (5xx), ``APITimeoutError`` (408),
        ``ServerError`` retryable (409, a transient conflict), else ``BadRequestError``.
    """
    retry_after = parse_retry_after(headers)
    text = excerpt(body)
    detail = _provider_message(body) or text or "(empty body)"
    where = f"Endpoint '{alias}'" if alias else "The endpoint"
    if status == 429:
        wait = f" (retry-after {retry_after:g}s)" if retry_after is not None else ""
        cls: type[LLMError] = RateLimitError
        message = f"{where} is rate limiting (HTTP 429){wait}: {detail}"
    elif status >= 500 or status == 409:
        cls, message = ServerError, f"{where} failed with HTTP {status}: {detail}"
    elif status == 408:
        cls, message = APITimeoutError, f"{where} timed out the request (HTTP 408): {detail}"
    else:
        hint = _HINTS.get(status, "The request is invalid for this endpoint; it is not retried.")
        cls = BadRequestError
        message = f"{where} rejected the request with HTTP {status}: {detail}. {hint}"
    return cls(message, status=status, retry_after=retry_after, alias=alias, body=text)


def format_error(
    what: str, body: bytes | str | None, alias: str | None, *, status: int | None = 200
) -> ResponseFormatError:
    """A retryable ``ResponseFormatError`` for a 2xx reply plait cannot use."""
    where = f"Endpoint '{alias}'" if alias else "The endpoint"
    text = excerpt(body)
    return ResponseFormatError(
        f"{where} returned a malformed response: {what}. Body: {text or '(empty)'}",
        status=status, alias=alias, body=text,
    )


def body_too_large(
    limit: int, alias: str | None, status: int | None, *, declared: int | None = None
) -> ResponseFormatError:
    """A retryable ``ResponseFormatError`` for a body longer than ``max_response_bytes``.

    Reading stops at the limit, so an endless or huge body costs at most ``limit`` bytes.
    """
    where = f"Endpoint '{alias}'" if alias else "The endpoint"
    size = f"declares {declared} bytes" if declared is not None else "kept going"
    return ResponseFormatError(
        f"{where} sent a response body that {size}, over max_response_bytes={limit}; "
        "reading stopped there. Raise max_response_bytes in the EndpointConfig if replies "
        "this large are expected.", status=status, alias=alias,
    )


def error_from_exception(exc: BaseException, alias: str | None, timeout: float) -> LLMError:
    """Map an aiohttp / asyncio transport exception to ``LLMError``.

    Timeouts become ``APITimeoutError``; a body cut off mid-way or an unparsable payload
    becomes ``ResponseFormatError``; everything else (refused, reset, DNS, disconnect)
    becomes ``APIConnectionError``. All are retryable.
    """
    where = f"endpoint '{alias}'" if alias else "the endpoint"
    name = type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return APITimeoutError(
            f"No complete answer from {where} within {timeout:g}s ({name}). Raise timeout= "
            "in the EndpointConfig if the model is slow.", alias=alias,
        )
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ContentTypeError):
        return format_error(f"truncated or invalid payload ({name}: {exc})", None, alias)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(
            f"Cannot connect to {where}: {exc}. Check base_url and that the server is up.",
            alias=alias,
        )
    return APIConnectionError(f"Connection to {where} failed ({name}: {exc}).", alias=alias)

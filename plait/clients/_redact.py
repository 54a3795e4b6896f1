"""Keeping API keys out of error text.

A server or proxy may echo the request's key in its error body ("invalid key sk-..."), and
that body becomes the error message, the checkpointed error and the Parquet ``error`` column.
Every error text a client records passes through a ``Redactor`` first: the endpoint's own
key, and any ``Authorization`` / ``x-api-key`` / bearer value, become ``***``.
"""

from __future__ import annotations

import re

from plait.errors import LLMError

__all__ = ["MASK", "Redactor"]

MASK = "***"
_MIN_SECRET = 8  # shorter "keys" (test placeholders like "k") are not secrets worth masking

# A header name, its separator as text/JSON/repr writes it, an optional scheme, the value.
_HEADER_VALUE = re.compile(
    r"""(?i)(\b(?:authorization|x-api-key)\b["']?\s*[:=]\s*["']?)((?:bearer|basic)\s+)?"""
    r"""[^\s"',;}\]\)]+"""
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=:-]{6,}")


class Redactor:
    """Masks the given secrets and any echoed credential header in text and errors.

    Args:
        *secrets: The endpoint's key(s); None and very short values are ignored.
    """

    __slots__ = ("_secrets",)

    def __init__(self, *secrets: str | None) -> None:
        found = {s for s in secrets if s and len(s) >= _MIN_SECRET}
        # Longest first, so a key that contains another is masked whole.
        self._secrets = tuple(sorted(found, key=len, reverse=True))

    def text(self, text: str) -> str:
        """``text`` with every secret and credential header value masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        lowered = text.lower()
        if "authoriz" in lowered or "api-key" in lowered or "bearer" in lowered:
            text = _HEADER_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}{MASK}", text)
            text = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)
        return text

    def body(self, body: bytes | str | None) -> str | None:
        """A response body decoded (leniently) and masked; None stays None."""
        if body is None:
            return None
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return self.text(text)

    def error(self, error: LLMError) -> LLMError:
        """``error`` itself if its text holds no secret, else a masked copy of it.

        The copy keeps the type and every field (status, retry_after, retryable, alias) and
        has no cause or context, so no traceback can show the unmasked original.
        """
        message = str(error)
        body = error.body
        masked = self.text(message)
        masked_body = self.text(body) if body else body
        if masked == message and masked_body == body:
            return error
        copy = LLMError.__new__(type(error))
        LLMError.__init__(
            copy, masked, status=error.status, retry_after=error.retry_after,
            retryable=error.retryable, alias=error.alias, body=masked_body,
        )
        copy.__suppress_context__ = True
        return copy

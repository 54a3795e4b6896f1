"""The contract between plait and a wire-format client.

A client turns an ``LLMRequest`` into one HTTP call in its provider's wire format and returns
an ``LLMResponse``, or raises an ``plait.errors.LLMError`` subclass. Clients never retry,
never rate-limit and never sleep: the endpoint pool owns those decisions, so that one owner
sees every attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, cast

__all__ = ["LLMClient", "LLMRequest", "LLMResponse", "Usage"]


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One chat request, provider-neutral.

    Attributes:
        prompt: The user message.
        system_prompt: The system message ("" for none).
        temperature: Sampling temperature.
        max_tokens: Output token cap, or None for the provider default.
        json_schema: A JSON schema the reply must follow, or None for free text.
        schema_name: The schema's name (OpenAI requires one).
    """

    prompt: str
    system_prompt: str = ""
    temperature: float = 1.0
    max_tokens: int | None = None
    json_schema: dict[str, Any] | None = None
    schema_name: str = "response"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one call.

    Attributes:
        input_tokens: Prompt tokens the provider reported (0 when unknown).
        output_tokens: Completion tokens the provider reported (0 when unknown).
        known: False when the reply's usage was missing or malformed; the reply itself is
            kept (usage is bookkeeping) and the endpoint's stats count it as unknown.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    known: bool = True

    @classmethod
    def from_reply(cls, usage: object, input_key: str, output_key: str) -> Usage:
        """Usage from a reply's ``usage`` object, tolerating any malformed value.

        Args:
            usage: The decoded ``usage`` value (any JSON, or None when absent).
            input_key: Its prompt-token field ("prompt_tokens" / "input_tokens").
            output_key: Its completion-token field.

        Returns:
            The counts, or ``Usage(0, 0, known=False)`` if either is not a whole number
            >= 0 ("n/a", null, -1, a float with a fraction, a missing object).
        """
        if not isinstance(usage, dict):
            return cls(0, 0, known=False)
        fields = cast("dict[str, object]", usage)
        counts = (_token_count(fields.get(input_key)), _token_count(fields.get(output_key)))
        if counts[0] is None or counts[1] is None:
            return cls(counts[0] or 0, counts[1] or 0, known=False)
        return cls(counts[0], counts[1])


def _token_count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**53:
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """One chat reply, provider-neutral."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None


class LLMClient(Protocol):
    """A wire-format client for one endpoint; one instance per endpoint, reused."""

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        """Send one request; raise an ``LLMError`` subclass on any failure."""
        ...

    async def aclose(self) -> None:
        """Close connections; the client is not used after this."""
        ...

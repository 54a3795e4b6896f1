"""The contract between plait and a wire-format client.

A client turns an ``LLMRequest`` into one HTTP call in its provider's wire format and returns
an ``LLMResponse``, or raises an ``plait.errors.LLMError`` subclass. Clients never retry,
never rate-limit and never sleep: the endpoint pool owns those decisions, so that one owner
sees every attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

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
    """Token usage of one call."""

    input_tokens: int = 0
    output_tokens: int = 0


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

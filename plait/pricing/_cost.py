"""Prices of endpoints, and the cost of calls before (estimates) and after (usage) they run."""

from __future__ import annotations

from typing import Any

from plait.clients.base import LLMRequest
from plait.pricing._table import Price, lookup_price

__all__ = ["CHARS_PER_TOKEN", "DEFAULT_OUTPUT_TOKENS", "endpoint_price", "estimate_tokens",
           "request_cost_bound"]

CHARS_PER_TOKEN = 4
"""The stated approximation used without a tokenizer: ~4 characters per token (English
text with OpenAI/Anthropic tokenizers; code and non-Latin scripts use more tokens)."""

DEFAULT_OUTPUT_TOKENS = 1024
"""Output tokens assumed for a request without ``max_tokens`` when reserving budget."""

_FREE = Price(0.0, 0.0, 0.0, 0.0, 0.0, source="none (no table price; set input_cost_per_1m)")


def endpoint_price(config: Any) -> Price:
    """The price an endpoint is billed at.

    ``input_cost_per_1m`` / ``output_cost_per_1m`` of the endpoint when either is non-zero
    (a per-endpoint override; cached input is then billed as input, batch at the table's
    batch ratio of one half), else the built-in table's price for its provider and model,
    else zero (self-hosted models, unknown names: ``source`` says so).
    """
    given_in = float(getattr(config, "input_cost_per_1m", 0.0) or 0.0)
    given_out = float(getattr(config, "output_cost_per_1m", 0.0) or 0.0)
    if given_in or given_out:
        return Price(given_in, given_in, given_out, given_in / 2, given_out / 2,
                     source="endpoint config")
    found = lookup_price(str(getattr(config, "provider_api", "")),
                         str(getattr(config, "model", "")))
    return found if found is not None else _FREE


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the stated approximation (``CHARS_PER_TOKEN``), at least 1."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def request_cost_bound(price: Price, request: LLMRequest, *, batch: bool = False) -> float:
    """A pessimistic cost of ``request`` before it runs (for budget reservations).

    Prompt tokens by the approximation, plus ``max_tokens`` (or ``DEFAULT_OUTPUT_TOKENS``)
    output tokens: a reply can be shorter, never longer than max_tokens.
    """
    tokens_in = estimate_tokens(request.system_prompt) + estimate_tokens(request.prompt)
    tokens_out = request.max_tokens or DEFAULT_OUTPUT_TOKENS
    return price.cost(tokens_in, tokens_out, batch=batch)

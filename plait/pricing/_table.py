"""The built-in price table: USD per million tokens for current OpenAI and Anthropic models.

PRICES AS OF 2025-08-01 (Anthropic's claude-haiku-4-5 / claude-sonnet-4-5 / claude-opus-4-5
as announced at their launch), taken from https://openai.com/api/pricing/ and
https://www.anthropic.com/pricing#api (and https://docs.anthropic.com/en/docs/about-claude/
pricing). Prices change: verify them at those pages before trusting a bill to this table,
and override any endpoint with ``input_cost_per_1m`` / ``output_cost_per_1m`` in its
``EndpointConfig`` (a non-zero value there wins over this table).

Columns: input, cached input (OpenAI's cached-prompt rate; Anthropic's cache-read rate,
cache writes are not modelled), output, and the Batch API rates (both providers bill batch
requests at half the synchronous price). Dated snapshots ("gpt-4o-2024-08-06",
"claude-sonnet-4-5-20250929") take the price of the longest listed name they start with.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRICES", "PRICES_AS_OF", "Price", "lookup_price"]

PRICES_AS_OF = "2025-08-01"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of one model.

    Attributes:
        input: Input (prompt) tokens.
        cached_input: Input tokens served from the provider's prompt cache.
        output: Output tokens.
        batch_input: Input tokens sent through the provider's Batch API.
        batch_output: Output tokens through the Batch API.
        source: Where the figures come from ("table 2025-08-01", "endpoint config", ...).
    """

    input: float
    cached_input: float
    output: float
    batch_input: float
    batch_output: float
    source: str = f"table {PRICES_AS_OF}"

    def cost(self, input_tokens: int, output_tokens: int, *, batch: bool = False,
             cached_input_tokens: int = 0) -> float:
        """USD for one call's tokens (``cached_input_tokens`` is part of ``input_tokens``)."""
        if batch:
            return (input_tokens * self.batch_input + output_tokens * self.batch_output) / 1e6
        fresh = max(0, input_tokens - cached_input_tokens)
        return (fresh * self.input + cached_input_tokens * self.cached_input
                + output_tokens * self.output) / 1e6


def _p(input_: float, cached: float, output: float) -> Price:
    return Price(input_, cached, output, input_ / 2, output / 2)


PRICES: dict[str, dict[str, Price]] = {
    "openai": {
        "gpt-5": _p(1.25, 0.125, 10.00),
        "gpt-5-mini": _p(0.25, 0.025, 2.00),
        "gpt-5-nano": _p(0.05, 0.005, 0.40),
        "gpt-4.1": _p(2.00, 0.50, 8.00),
        "gpt-4.1-mini": _p(0.40, 0.10, 1.60),
        "gpt-4.1-nano": _p(0.10, 0.025, 0.40),
        "gpt-4o": _p(2.50, 1.25, 10.00),
        "gpt-4o-mini": _p(0.15, 0.075, 0.60),
        "o1": _p(15.00, 7.50, 60.00),
        "o3": _p(2.00, 0.50, 8.00),
        "o3-mini": _p(1.10, 0.55, 4.40),
        "o4-mini": _p(1.10, 0.275, 4.40),
    },
    "anthropic": {
        "claude-opus-4-5": _p(5.00, 0.50, 25.00),
        "claude-opus-4-1": _p(15.00, 1.50, 75.00),
        "claude-opus-4": _p(15.00, 1.50, 75.00),
        "claude-sonnet-4-5": _p(3.00, 0.30, 15.00),
        "claude-sonnet-4": _p(3.00, 0.30, 15.00),
        "claude-3-7-sonnet": _p(3.00, 0.30, 15.00),
        "claude-haiku-4-5": _p(1.00, 0.10, 5.00),
        "claude-3-5-haiku": _p(0.80, 0.08, 4.00),
        "claude-3-haiku": _p(0.25, 0.03, 1.25),
    },
}
"""provider_api -> model -> Price. Self-hosted (``vllm``) endpoints have no table price."""


def lookup_price(provider: str, model: str) -> Price | None:
    """The table price of ``model`` (exact name, else longest listed prefix), or None."""
    table = PRICES.get(provider)
    if table is None:
        return None
    found = table.get(model)
    if found is not None:
        return found
    best = ""
    for name in table:
        if model.startswith(name + "-") and len(name) > len(best):
            best = name
    return table[best] if best else None

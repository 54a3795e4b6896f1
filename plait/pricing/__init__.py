"""Prices, estimates and budgets.

* ``PRICES``: the dated built-in table (input, cached input, output, batch, per 1M tokens)
  for current OpenAI and Anthropic models; ``endpoint_price(config)`` is what an endpoint is
  billed at (its own ``input_cost_per_1m`` / ``output_cost_per_1m`` win when set).
* ``estimate(pipeline, source)`` (``plait run --estimate``): requests, tokens and cost of a
  whole run, sync vs batch, before paying for it.
* ``budget_usd=`` on a run: ``Budget`` admits rows while spent + reservations fit.

Token counts use a stated approximation (``CHARS_PER_TOKEN`` = 4 characters per token):
no tokenizer is a dependency of plait.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plait.pricing._bound import RowBound
from plait.pricing._budget import Budget, BudgetReport
from plait.pricing._cost import (
    CHARS_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    endpoint_price,
    estimate_tokens,
    request_cost_bound,
)
from plait.pricing._table import PRICES, PRICES_AS_OF, Price, lookup_price

if TYPE_CHECKING:
    from plait.pricing._estimate import Estimate

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "PRICES",
    "PRICES_AS_OF",
    "Budget",
    "BudgetReport",
    "Estimate",
    "Price",
    "RowBound",
    "aestimate",
    "endpoint_price",
    "estimate",
    "estimate_tokens",
    "lookup_price",
    "request_cost_bound",
]


def estimate(pipeline: Any, source: Any, **options: Any) -> Estimate:
    """Price a run before paying for it; see ``plait.pricing._estimate.estimate``."""
    from plait.pricing._estimate import estimate as _estimate

    return _estimate(pipeline, source, **options)


async def aestimate(pipeline: Any, source: Any, **options: Any) -> Estimate:
    """``estimate`` for async code (Jupyter, a running event loop)."""
    from plait.pricing._estimate import aestimate as _aestimate

    return await _aestimate(pipeline, source, **options)


def __getattr__(name: str) -> Any:
    if name == "Estimate":
        from plait.pricing._estimate import Estimate

        return Estimate
    raise AttributeError(f"module 'plait.pricing' has no attribute {name!r}")

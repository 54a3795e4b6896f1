"""The price table, endpoint prices, row bounds and the budget: no sockets, no Ray."""

from __future__ import annotations

import pytest

from plait import LLMInference, Module
from plait.clients.base import LLMRequest
from plait.errors import ConfigError
from plait.pricing import (
    PRICES,
    PRICES_AS_OF,
    Budget,
    RowBound,
    endpoint_price,
    estimate_tokens,
    lookup_price,
    request_cost_bound,
)
from plait.profiling.progress import _TqdmProgress  # pyright: ignore[reportPrivateUsage]
from plait.resources import AnthropicEndpointConfig, EndpointConfig, OpenAIEndpointConfig


def test_table_is_dated_and_covers_both_providers() -> None:
    assert PRICES_AS_OF[:4].isdigit()
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1"} <= set(PRICES["openai"])
    assert {"claude-sonnet-4-5", "claude-haiku-4-5"} <= set(PRICES["anthropic"])
    for table in PRICES.values():
        for price in table.values():
            assert price.batch_input == price.input / 2
            assert price.batch_output == price.output / 2
            assert 0 < price.cached_input <= price.input < price.output


def test_lookup_takes_the_longest_listed_prefix() -> None:
    assert lookup_price("openai", "gpt-4o-2024-08-06") is PRICES["openai"]["gpt-4o"]
    assert lookup_price("openai", "gpt-4o-mini-2024-07-18") is PRICES["openai"]["gpt-4o-mini"]
    sonnet = lookup_price("anthropic", "claude-sonnet-4-5-20250929")
    assert sonnet is PRICES["anthropic"]["claude-sonnet-4-5"]
    assert lookup_price("openai", "gpt-4oops") is None
    assert lookup_price("vllm", "gpt-4o") is None


def test_endpoint_prices_table_override_and_unknown() -> None:
    assert endpoint_price(OpenAIEndpointConfig("gpt-4o")) is PRICES["openai"]["gpt-4o"]
    own = endpoint_price(AnthropicEndpointConfig("claude-sonnet-4-5", input_cost_per_1m=1.0,
                                                 output_cost_per_1m=2.0))
    assert (own.input, own.output, own.batch_input, own.source) == (1.0, 2.0, 0.5,
                                                                    "endpoint config")
    local = endpoint_price(EndpointConfig("vllm", "mistral", base_url="http://h:1/v1"))
    assert local.input == local.output == 0 and local.source.startswith("none")


def test_costs_sync_cached_and_batch() -> None:
    price = PRICES["openai"]["gpt-4o"]
    assert price.cost(1_000_000, 0) == price.input
    assert price.cost(1_000_000, 1_000_000, batch=True) == price.batch_input + price.batch_output
    assert price.cost(1_000_000, 0, cached_input_tokens=1_000_000) == price.cached_input
    assert estimate_tokens("") == 1 and estimate_tokens("abcde") == 2
    bound = request_cost_bound(price, LLMRequest("x" * 400, max_tokens=10))
    assert bound == price.cost(100 + 1, 10)


class Chain(Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = LLMInference(alias="a", system_prompt="x" * 40, max_tokens=100)
        self.second = LLMInference(alias="b", max_tokens=None)

    def forward(self, text: str) -> str:
        return self.second(f"about: {self.first(text)}")


def test_row_bound_counts_prompts_upstream_replies_and_caps() -> None:
    pipeline = Chain()
    graph = pipeline.graph_for(1, ())
    price_a = PRICES["openai"]["gpt-4o-mini"]
    price_b = PRICES["openai"]["gpt-4o"]
    bound = RowBound(graph, pipeline, {"a": price_a, "b": price_b}.__getitem__)
    text = "y" * 80  # 20 tokens
    expected = (price_a.cost(10 + 20, 100)  # system 10 + input 20; cap 100
                + price_b.cost(1 + 100 + 20, 1024))  # quotes the first reply; default cap
    assert bound.row((text,), {}) == pytest.approx(expected)


def test_budget_admits_while_spent_plus_reserved_fits() -> None:
    budget = Budget(1.0)
    assert budget.reservation(0.4) == 0.4  # the bound
    assert budget.admit(0.4) and budget.admit(0.4)
    assert not budget.admit(0.4) and budget.stopped
    assert not budget.admit(0.0)  # once stopped, no row starts
    budget.settle(0.4, 0.1)
    assert budget.reservation(0.4) == 0.4  # always the bound: observed costs may be $0 hits
    report = budget.report()
    assert (report.spent_usd, report.rows_done, report.stopped) == (0.1, 1, True)
    for bad in (0, -1, "1", True, float("nan")):
        with pytest.raises(ConfigError, match="budget_usd"):
            Budget(bad)  # type: ignore[arg-type]


class _Bar:
    def __init__(self) -> None:
        self.n = 0
        self.postfix = ""

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        pass


def test_progress_bar_shows_spend_and_cost_per_row() -> None:
    bar = _Bar()
    progress = _TqdmProgress(bar)
    progress.update(1)
    assert bar.postfix == ""
    progress.update(1, cost_usd=0.5)
    progress.update(1, failed=True, cost_usd=0.25)
    assert bar.postfix == "failed=1, $0.7500 ($0.250000/row)"

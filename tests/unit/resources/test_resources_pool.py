import asyncio
import random
from collections.abc import Callable

import pytest

from plait.clients.base import LLMRequest, LLMResponse, Usage
from plait.errors import (
    APIConnectionError,
    BadRequestError,
    ConfigError,
    LLMError,
    MissingAPIKeyError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)
from plait.events import Event
from plait.resources.clock import FakeClock, settle
from plait.resources.config import EndpointConfig, ResourceConfig
from plait.resources.limiter import LocalPermitSource
from plait.resources.manager import ResourceManager
from plait.resources.pool import EndpointPool, backoff_delay, estimate_tokens

OK = LLMResponse("ok", Usage(10, 5))


class ScriptedClient:
    """Replays outcomes: an LLMResponse is returned, an exception raised; last one repeats."""

    def __init__(self, *outcomes: LLMResponse | BaseException | Callable[[], None]):
        self.outcomes = list(outcomes)
        self.calls = 0
        self.closed = False

    async def complete(self, request: LLMRequest, *, timeout: float) -> LLMResponse:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        await asyncio.sleep(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            await asyncio.Event().wait()  # hangs until cancelled
        return outcome

    async def aclose(self) -> None:
        self.closed = True


def make_pool(client, clock, *, max_retries=3, events=None, **kw):
    config = EndpointConfig("vllm", "m", base_url="http://x/v1", max_concurrent=2,
                            max_retries=max_retries, input_cost_per_1m=1.0,
                            output_cost_per_1m=2.0)
    permits = LocalPermitSource(2, None, None, clock)
    return EndpointPool("fast", config, client=client, permits=permits, clock=clock,
                        events=events, rng=random.Random(7), **kw)


def drive(clock: FakeClock, coro):
    """Run ``coro`` to completion, advancing fake time whenever everything sleeps."""

    async def main():
        task = asyncio.create_task(coro)
        for _ in range(10_000):
            await settle()
            if task.done():
                return task.result()
            deadline = clock.next_deadline()
            assert deadline is not None, "deadlock: nothing sleeps and the call is not done"
            await clock.advance(deadline - clock.now())
        raise AssertionError("call did not finish")

    return asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_success_updates_stats():
    clock = FakeClock()
    pool = make_pool(ScriptedClient(OK), clock)
    response, parsed = drive(clock, pool.call(LLMRequest("hi")))
    assert response.text == "ok" and parsed is None
    stats = pool.stats.to_dict()
    assert stats["requests"] == 1 and stats["successes"] == 1 and stats["retries"] == 0
    assert stats["input_tokens"] == 10 and stats["output_tokens"] == 5
    assert stats["cost"] == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)
    assert pool.permits.in_flight == 0  # type: ignore[attr-defined]


def test_server_error_is_retried_with_bounded_backoff():
    clock = FakeClock()
    client = ScriptedClient(ServerError("boom", status=500), OK)
    pool = make_pool(client, clock)
    response, _ = drive(clock, pool.call(LLMRequest("hi")))
    assert response.text == "ok" and client.calls == 2
    assert 0.0 <= clock.now() <= 0.5  # first retry: uniform(0, 0.5)
    assert pool.stats.retries == 1


def test_retry_after_on_5xx_is_honoured():
    clock = FakeClock()
    client = ScriptedClient(ServerError("busy", status=503, retry_after=7.0), OK)
    pool = make_pool(client, clock)
    drive(clock, pool.call(LLMRequest("hi")))
    assert clock.now() == 7.0


def test_bad_request_is_not_retried_and_gets_the_alias():
    clock = FakeClock()
    client = ScriptedClient(BadRequestError("nope", status=400), OK)
    pool = make_pool(client, clock)
    with pytest.raises(BadRequestError) as info:
        drive(clock, pool.call(LLMRequest("hi")))
    assert client.calls == 1
    assert info.value.alias == "fast"
    assert pool.stats.failures == 1


def test_retry_budget_spent_raises_last_error():
    clock = FakeClock()
    client = ScriptedClient(APIConnectionError("refused"))
    pool = make_pool(client, clock, max_retries=2)
    with pytest.raises(APIConnectionError, match="gave up after 3 attempts") as info:
        drive(clock, pool.call(LLMRequest("hi")))
    assert client.calls == 3
    assert info.value.alias == "fast" and info.value.retryable


def test_429s_do_not_spend_max_retries():
    clock = FakeClock()
    client = ScriptedClient(*[RateLimitError("slow", status=429, retry_after=1.5)] * 5, OK)
    pool = make_pool(client, clock, max_retries=1)
    response, _ = drive(clock, pool.call(LLMRequest("hi")))
    assert response.text == "ok" and client.calls == 6
    assert pool.stats.rate_limited == 5 and pool.stats.retries == 5
    assert clock.now() == pytest.approx(7.5)  # a precise hint pauses exactly that long


def test_whole_second_hints_bound_a_learned_pause_that_doubles_while_refused():
    clock = FakeClock()
    client = ScriptedClient(*[RateLimitError("slow", status=429, retry_after=1.0)] * 7, OK)
    events: list[Event] = []
    pool = make_pool(client, clock, events=events.append)
    response, _ = drive(clock, pool.call(LLMRequest("hi")))
    assert response.text == "ok" and client.calls == 8
    pauses = [e.attrs["pause"] for e in events if e.kind == "rate_limited"]
    # Before: 1 s per 429 (the hint's rounding); now a probe, up to the hint.
    assert pauses == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0])


def test_429_budget_is_bounded():
    clock = FakeClock()
    client = ScriptedClient(RateLimitError("slow", status=429, retry_after=0.5))
    pool = make_pool(client, clock, rate_limit_retries=3)
    with pytest.raises(RateLimitError, match="429 budget"):
        drive(clock, pool.call(LLMRequest("hi")))
    assert client.calls == 4


def test_429_patience_is_bounded_in_time():
    clock = FakeClock()
    client = ScriptedClient(RateLimitError("slow", status=429, retry_after=10.5))
    pool = make_pool(client, clock, rate_limit_patience=35.0)
    with pytest.raises(RateLimitError, match="past rate_limit_patience=35s"):
        drive(clock, pool.call(LLMRequest("hi")))
    # 429s at t=0, 10.5, 21 retried; the one at 31.5 would wait past 35 s: it fails at once.
    assert client.calls == 4 and clock.now() == pytest.approx(31.5)


def make_config_pool(client, clock, *, events=None, **config):
    cfg = EndpointConfig("vllm", "m", base_url="http://x/v1", **config)
    permits = LocalPermitSource(cfg.max_concurrent, cfg.rate_limit, cfg.tokens_per_minute,
                                clock)
    return EndpointPool("fast", cfg, client=client, permits=permits, clock=clock,
                        events=events, rng=random.Random(7))


@pytest.mark.parametrize("hint", [99999.5, float("inf"), 1e9])
def test_an_absurd_hint_is_capped_at_max_retry_wait_with_a_warning(hint):
    clock = FakeClock()
    client = ScriptedClient(RateLimitError("slow", status=429, retry_after=hint), OK)
    events: list[Event] = []
    pool = make_config_pool(client, clock, events=events.append, max_retry_wait=120.0)
    response, _ = drive(clock, pool.call(LLMRequest("hi")))
    assert response.text == "ok"
    assert clock.now() <= 120.0  # before: paused for the hint (a day, forever)
    [warning] = [e for e in events if e.kind == "warning"]
    assert warning.attrs["capped_to"] == 120.0
    assert "max_retry_wait=120s" in warning.attrs["message"]


def test_an_absurd_hint_on_a_5xx_is_capped_too():
    clock = FakeClock()
    client = ScriptedClient(ServerError("down", status=503, retry_after=1e7), OK)
    pool = make_config_pool(client, clock, max_retry_wait=30.0)
    response, _ = drive(clock, pool.call(LLMRequest("hi")))
    assert response.text == "ok" and clock.now() == pytest.approx(30.0)


def test_a_pause_past_the_patience_fails_the_call_at_once():
    clock = FakeClock()
    client = ScriptedClient(RateLimitError("slow", status=429, retry_after=250.5), OK)
    pool = make_config_pool(client, clock, rate_limit_patience=60.0)
    with pytest.raises(RateLimitError, match=r"paused 250.5s, past rate_limit_patience=60s"):
        drive(clock, pool.call(LLMRequest("hi")))
    assert client.calls == 1 and clock.now() == 0.0  # before: waited 250.5 s


def test_a_request_larger_than_tokens_per_minute_fails_at_once():
    clock = FakeClock()
    client = ScriptedClient(OK)
    pool = make_config_pool(client, clock, tokens_per_minute=500)
    with pytest.raises(BadRequestError) as info:
        drive(clock, pool.call(LLMRequest("x" * 4000, max_tokens=100)))
    message = str(info.value)
    assert "about 1,100 tokens" in message and "4,000 characters" in message
    assert "tokens_per_minute=500" in message
    assert client.calls == 0 and clock.now() == 0.0  # before: minutes of token debt
    assert pool.stats.failures == 1


def test_validation_failure_is_a_retryable_format_error():
    clock = FakeClock()
    client = ScriptedClient(LLMResponse("not json"), LLMResponse("42"))
    pool = make_pool(client, clock)
    _, parsed = drive(clock, pool.call(LLMRequest("hi"), validate=lambda r: int(r.text)))
    assert parsed == 42 and client.calls == 2
    assert pool.stats.errors == {"ResponseFormatError": 1}


def test_validation_failures_spend_the_retry_budget():
    clock = FakeClock()
    pool = make_pool(ScriptedClient(LLMResponse("x")), clock, max_retries=1)
    with pytest.raises(ResponseFormatError, match="failed validation") as info:
        drive(clock, pool.call(LLMRequest("hi"), validate=lambda r: int(r.text)))
    assert isinstance(info.value.__cause__, ValueError | ResponseFormatError)


def test_events_only_when_a_sink_is_attached():
    clock = FakeClock()
    events: list[Event] = []
    client = ScriptedClient(RateLimitError("slow", status=429), ServerError("x", status=500), OK)
    pool = make_pool(client, clock, events=events.append)
    drive(clock, pool.call(LLMRequest("hi"), node_id="n1", row=3))
    kinds = [e.kind for e in events]
    assert kinds.count("request") == 3
    assert "rate_limited" in kinds and kinds.count("retry") == 2 and "rate_wait" in kinds
    assert all(e.alias == "fast" for e in events)
    assert {e.row for e in events} == {3}


def test_cancelled_call_releases_its_permit():
    async def main():
        clock = FakeClock()
        pool = make_pool(ScriptedClient(lambda: None), clock)
        task = asyncio.create_task(pool.call(LLMRequest("hi")))
        await settle()
        assert pool.permits.in_flight == 1  # type: ignore[attr-defined]
        task.cancel()
        await settle()
        assert pool.permits.in_flight == 0  # type: ignore[attr-defined]

    asyncio.run(main())


def test_backoff_is_capped_with_full_jitter():
    rng = random.Random(1)
    for retry in range(12):
        bound = min(20.0, 0.5 * 2**retry)
        draws = [backoff_delay(retry, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in draws)
        assert max(draws) > bound * 0.5  # jitter spans the range
    assert backoff_delay(10_000, rng) <= 20.0


def test_estimate_tokens():
    assert estimate_tokens(LLMRequest("x" * 400, system_prompt="y" * 40)) == 110 + 256
    assert estimate_tokens(LLMRequest("x" * 8, max_tokens=10)) == 12


def test_error_classification_is_by_data():
    assert RateLimitError("x").retryable and ServerError("x").retryable
    assert not BadRequestError("x").retryable
    assert not LLMError("x", retryable=False).retryable


def test_manager_unknown_alias_and_stats_and_close():
    clients: dict[str, ScriptedClient] = {}

    def factory(config, alias):
        clients[alias] = ScriptedClient(OK)
        return clients[alias]

    resources = ResourceConfig(endpoints={
        "fast": EndpointConfig("vllm", "m", base_url="http://x/v1"),
    })
    manager = ResourceManager(resources, client_factory=factory)
    with pytest.raises(ConfigError, match=r"known: \['fast'\]"):
        manager.pool("slow")

    async def main():
        await manager.start()
        await manager.pool("fast").call(LLMRequest("hi"))
        assert manager.stats()["fast"]["successes"] == 1
        await manager.aclose()

    asyncio.run(main())
    assert clients["fast"].closed


def test_manager_start_checks_keys_before_building_anything(monkeypatch):
    monkeypatch.delenv("PLAIT_TEST_MISSING_KEY", raising=False)
    built: list[str] = []
    resources = ResourceConfig(endpoints={
        "a": EndpointConfig("vllm", "m", base_url="http://x/v1"),
        "b": EndpointConfig("openai", "m", api_key_env="PLAIT_TEST_MISSING_KEY"),
    })
    manager = ResourceManager(resources,
                              client_factory=lambda c, a: built.append(a) or ScriptedClient(OK))
    with pytest.raises(MissingAPIKeyError, match="PLAIT_TEST_MISSING_KEY"):
        asyncio.run(manager.start(["a", "b"]))
    assert built == []

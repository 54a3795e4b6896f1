"""Rate limits against the real loopback server: four 429 styles, absurd hints, huge prompts.

The settling tests run in simulated time: the server's rate buckets, its replies' latency
(a responder sleeping on the clock) and plait's limiter all share one ``FakeClock``, and
``drive`` advances it only when every HTTP request in flight is parked on it. Requests
travel over real sockets, but no figure depends on how fast this machine is: the elapsed
time asserted is the fake clock's, which moves only by the waits plait and the server
decide.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
import pytest

from plait import LLMInference, Module
from plait.clients.base import LLMRequest
from plait.errors import BadRequestError
from plait.events import Event
from plait.resources.clock import FakeClock, settle
from plait.resources.config import EndpointConfig, ResourceConfig
from plait.resources.manager import ResourceManager
from plait.resources.pool import EndpointPool
from plait.testing import ChatRequest, Fault, LLMServer, default_reply

KEY = "plait-testing-key"
MODEL = "model-fast"
CALLS = 300
RATE = 100.0  # requests/s the server accepts
TARGET = 1.15  # the bound, as a ratio to the rate-bound limit


def arun(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    """Run ``coro`` on a fresh loop, bounded by ``timeout`` real seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))  # pyright: ignore[reportArgumentType]


def endpoint(server: LLMServer, **options: Any) -> EndpointConfig:
    return EndpointConfig("openai", MODEL, base_url=server.openai_base_url, api_key=KEY,
                          **{"max_concurrent": 32} | options)


async def drive(clock: FakeClock, server: LLMServer, pool: EndpointPool,
                calls: list[Awaitable[Any]]) -> list[Any]:
    """Run ``calls`` to the end, advancing fake time whenever nothing else can happen.

    Time moves only when every request the pool has sent is parked on the fake clock inside
    the server (a reply's latency): then all that is left is waiting, and the clock jumps
    to the next deadline (a reply, a limiter pause, a rate-bucket refill).
    """
    tasks = [asyncio.ensure_future(c) for c in calls]
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.001)  # real time: let the sockets deliver
        await settle()
        stats = pool.stats
        sent = stats.requests - stats.successes - sum(stats.errors.values())
        if sent != server.stats().in_flight:
            continue  # a request or a reply is on the wire
        deadline = clock.next_deadline()
        if deadline is not None:
            await clock.advance(deadline - clock.now())
    return [t.result() for t in tasks]


def fake_latency(clock: FakeClock, seconds: float) -> Any:
    """A responder whose reply takes ``seconds`` of fake time."""

    async def respond(req: ChatRequest) -> str:
        await clock.sleep(seconds)
        return default_reply(req)

    return respond


async def settle_run(clock: FakeClock, latency: float, calls: int = CALLS,
                     **server_settings: Any) -> tuple[float, int, int]:
    """``calls`` calls with no limit configured; returns (fake seconds, 429s, accepted)."""
    async with LLMServer(clock=clock.now, responder=fake_latency(clock, latency),
                         record_requests=0, **server_settings) as server:
        manager = ResourceManager(ResourceConfig(endpoints={"fast": endpoint(server)}),
                                  clock=clock)
        pool = manager.pool("fast")
        start = clock.now()
        try:
            results = await drive(clock, server, pool,
                                  [pool.call(LLMRequest(f"doc {i}")) for i in range(calls)])
        finally:
            await manager.aclose()
        assert len(results) == calls  # every call succeeded (a failure would have raised)
        stats = server.stats()
        return clock.now() - start, stats.rate_limited, stats.responses_ok


@pytest.mark.parametrize("hint", ["both", "seconds", "none"])
def test_a_rate_capped_server_is_used_at_its_rate_whatever_its_retry_hint(hint: str):
    # 100 req/s, burst 10; "seconds" rounds a 10 ms wait up to `retry-after: 1` (Anthropic),
    # "none" sends no hint. Before: a whole-second or missing hint paused the endpoint 1 s
    # per 429, about 8x the rate bound.
    clock = FakeClock(start=1000.0)
    elapsed, refused, accepted = arun(settle_run(
        clock, 0.05, rate_limit={MODEL: RATE}, rate_burst=10, retry_hint=hint))
    bound = CALLS / RATE
    assert accepted == CALLS
    assert elapsed <= TARGET * bound, (elapsed / bound, refused / accepted)


@pytest.mark.parametrize("hint", ["both", "seconds", "none"])
def test_slow_replies_do_not_make_a_rate_cap_look_like_a_concurrency_cap(hint: str):
    # Replies take 2 s (an LLM), 10 req/s with a burst of 2: 20 must be in flight. Refusals
    # come back long before the first reply, and a bucket's burst refused all at once looks
    # like a concurrency cap. Before: 1.5x / 5.1x / 5.1x of the bound (a second per 429).
    # Not yet within 1.15x here (1.09x / 1.25x / 1.24x): the pause is learned before any
    # reply can show what the server accepts; this bounds the regression.
    clock = FakeClock(start=1000.0)
    elapsed, _, accepted = arun(settle_run(
        clock, 2.0, calls=200, rate_limit={MODEL: 10.0}, rate_burst=2, retry_hint=hint))
    assert accepted == 200
    assert elapsed <= 1.4 * 200 / 10.0, elapsed / 20.0


def test_a_concurrency_capped_server_is_used_at_its_capacity():
    # 429 (whole-second retry-after) above 8 in flight, replies take 80 ms: 100 req/s.
    clock = FakeClock(start=1000.0)
    elapsed, refused, accepted = arun(settle_run(
        clock, 0.08, max_concurrency={MODEL: 8}, busy_retry_after=0.05, retry_hint="seconds"))
    bound = CALLS * 0.08 / 8
    assert accepted == CALLS
    assert elapsed <= TARGET * bound, (elapsed / bound, refused / accepted)


def _next_year_date() -> str:
    return email.utils.formatdate(time.time() + 365 * 86400.0, usegmt=True)


@pytest.mark.parametrize("headers", [
    {"retry-after": "99999"},
    {"retry-after": "99999.5"},
    {"retry-after": "inf"},
    {"retry-after-ms": "1e12"},
    {"retry-after": "next-year"},
], ids=["99999s", "99999.5s", "inf", "1e12ms", "http-date"])
def test_an_absurd_retry_hint_is_capped_and_reported(headers: dict[str, str]):
    if headers.get("retry-after") == "next-year":
        headers = {"retry-after": _next_year_date()}

    async def main() -> list[Event]:
        events: list[Event] = []
        async with LLMServer(faults=[Fault("429", headers=headers)]) as server:
            config = ResourceConfig(endpoints={"fast": endpoint(server, max_retry_wait=0.2)})
            manager = ResourceManager(config, events=events.append)
            try:
                response, _ = await manager.pool("fast").call(LLMRequest("hello"))
            finally:
                await manager.aclose()
        assert "echo: hello" in response.text
        return events

    # Before: the endpoint paused for the hint (a day, a year, forever): the test hung.
    events = arun(main(), timeout=30)
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 1, events
    assert "max_retry_wait=0.2s" in warnings[0].attrs["message"]
    assert warnings[0].attrs["capped_to"] == 0.2
    limited = [e for e in events if e.kind == "rate_limited"]
    assert len(limited) == 1 and limited[0].attrs["pause"] <= 0.2


class One(Module):
    def __init__(self, max_tokens: int = 16) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", max_tokens=max_tokens)

    def forward(self, text: str) -> str:
        return self.llm(text)


def test_a_wait_past_the_callers_patience_fails_the_row_at_once():
    date = _next_year_date()

    async def main() -> Any:
        faults = [Fault("429", match="late", headers={"retry-after": date})]
        async with LLMServer(faults=faults) as server:
            config = ResourceConfig(endpoints={"fast": endpoint(
                server, rate_limit_patience=30.0, max_retry_wait=300.0)})
            pipeline = One().bind(resources=config, streaming=True, progress=False)
            return await pipeline(["early", "late"]), server.stats()

    # Before: the row waited for the hint (a year), or with a cap for 300 s.
    results, stats = arun(main(), timeout=60)
    assert results[0].ok
    assert not results[1].ok
    message = str(results[1].error)
    assert "rate_limit_patience=30s" in message, message
    assert "capped to max_retry_wait=300s" in message, message
    assert stats.rate_limited == 1


def test_a_prompt_larger_than_tokens_per_minute_fails_its_row_at_once():
    async def main() -> Any:
        async with LLMServer() as server:
            config = ResourceConfig(endpoints={"fast": endpoint(
                server, tokens_per_minute=1000)})
            pipeline = One().bind(resources=config, streaming=True, progress=False)
            return await pipeline(["short", "x" * 8000, "also short"]), server.stats()

    # Before: the big prompt went into minutes of token debt, stalling the endpoint.
    results, stats = arun(main(), timeout=60)
    assert [r.ok for r in results] == [True, False, True]
    message = str(results[1].error)
    assert "tokens_per_minute=1000" in message and "8,000 characters" in message, message
    assert "2,016 tokens" in message, message
    assert stats.total_requests == 2  # the big prompt was never sent


def test_the_big_prompt_error_is_a_bad_request():
    async def main() -> None:
        async with LLMServer() as server:
            config = ResourceConfig(endpoints={"fast": endpoint(server, tokens_per_minute=100)})
            manager = ResourceManager(config)
            try:
                with pytest.raises(BadRequestError, match="more than tokens_per_minute=100"):
                    await manager.pool("fast").call(LLMRequest("y" * 1000, max_tokens=10))
            finally:
                await manager.aclose()

    arun(main())


@pytest.mark.parametrize(("hint", "expected"), [
    ("both", {"retry-after": "1", "retry-after-ms": "250"}),
    ("seconds", {"retry-after": "1"}),
    ("ms", {"retry-after-ms": "250"}),
    ("none", {}),
])
def test_the_server_states_its_wait_in_the_style_asked(hint: str, expected: dict[str, str]):
    async def main() -> list[dict[str, str]]:
        faults = [Fault("429", retry_after=0.25), Fault("429", headers={"retry-after": "inf"})]
        async with LLMServer(retry_hint=hint, faults=faults) as server, \
                aiohttp.ClientSession() as session:
            seen: list[dict[str, str]] = []
            for _ in range(2):
                async with session.post(
                    f"{server.openai_base_url}/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {KEY}"},
                ) as resp:
                    assert resp.status == 429
                    seen.append({k: v for k, v in resp.headers.items()
                                 if k.lower().startswith("retry-after")})
            return seen

    computed, verbatim = arun(main())
    assert {k.lower(): v for k, v in computed.items()} == expected
    assert {k.lower(): v for k, v in verbatim.items()} == {"retry-after": "inf"}

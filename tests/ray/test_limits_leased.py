"""LeasedPermitSource against an in-process LimiterCore on a fake clock (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from plait.resources.clock import FakeClock
from plait_ray.limits import (
    CoreLimiterClient,
    LeasedPermitSource,
    LimiterCore,
    LimiterLimits,
    LimiterUnavailableError,
)


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 20))  # type: ignore[arg-type]


async def drive(clock: FakeClock, work: Awaitable[Any], step: float = 0.01,
                limit: float = 120.0) -> Any:
    """Advance fake time in small steps until ``work`` is done."""
    task = asyncio.ensure_future(work)
    spent = 0.0
    while not task.done():
        assert spent < limit, "work did not finish within the fake-time limit"
        await clock.advance(step)
        spent += step
    return task.result()


def _setup(clock: FakeClock, **limits: Any) -> tuple[LimiterCore, CoreLimiterClient]:
    base: dict[str, Any] = {"max_concurrent": None, "rate_limit": None,
                            "tokens_per_minute": None, "lease_ttl": 3.0}
    base.update(limits)
    core = LimiterCore(LimiterLimits(**base), clock)
    return core, CoreLimiterClient(core)


def _source(client: CoreLimiterClient, clock: FakeClock, limits: LimiterLimits,
            **kwargs: Any) -> LeasedPermitSource:
    return LeasedPermitSource(client, "fast", max_concurrent=limits.max_concurrent,
                              rate_limit=limits.rate_limit,
                              tokens_per_minute=limits.tokens_per_minute, clock=clock, **kwargs)


def test_steady_state_costs_about_one_call_per_block() -> None:
    async def main() -> None:
        clock = FakeClock()
        core, client = _setup(clock, max_concurrent=8, rate_limit=600_000)  # 10k/s
        permits = _source(client, clock, core.limits, block_size=256)

        async def work() -> None:
            for _ in range(2000):
                permit = await permits.acquire(10)
                permits.release(permit, used_tokens=10)
                await clock.sleep(0.0005)  # 2,000 requests/s

        await drive(clock, work(), step=0.001)
        assert core.stats()["granted_requests"] >= 2000
        assert client.calls < 2000 / 20, client.calls
    run(main)


async def _hammer(permits: LeasedPermitSource, clock: FakeClock, gauge: dict[str, int],
                  n: int) -> None:
    for i in range(n):
        permit = await permits.acquire(1)
        gauge["now"] += 1
        gauge["peak"] = max(gauge["peak"], gauge["now"])
        await clock.sleep(0.003 + 0.001 * (i % 3))
        gauge["now"] -= 1
        permits.release(permit, used_tokens=1)
        permits.on_success()


def test_workers_jointly_never_exceed_max_concurrent_and_all_progress() -> None:
    async def main() -> None:
        clock = FakeClock()
        core, client = _setup(clock, max_concurrent=4)
        gauge = {"now": 0, "peak": 0}
        sources = [_source(client, clock, core.limits) for _ in range(3)]
        jobs = [_hammer(s, clock, gauge, 60) for s in sources for _ in range(3)]
        await drive(clock, asyncio.gather(*jobs), step=0.001)
        assert gauge["peak"] <= 4
        assert core.stats()["slots_out"] <= 4
    run(main)


def test_an_idle_worker_gives_its_slots_back() -> None:
    async def main() -> None:
        clock = FakeClock()
        core, client = _setup(clock, max_concurrent=2)
        idle = _source(client, clock, core.limits)
        busy = _source(client, clock, core.limits)
        held = [await drive(clock, idle.acquire(1)) for _ in range(2)]
        for permit in held:
            idle.release(permit, used_tokens=None)
        assert idle.held_slots == 2
        permit = await drive(clock, busy.acquire(1))  # idle's slots go back after a beat
        assert permit.slot in (0, 1) and idle.held_slots <= 1
    run(main)


def test_429_on_one_worker_pauses_and_slows_another() -> None:
    async def main() -> None:
        clock = FakeClock()
        core, client = _setup(clock, rate_limit=6000)
        a, b = _source(client, clock, core.limits), _source(client, clock, core.limits)
        await drive(clock, b.acquire(1))
        a.on_rate_limited(2.5)  # a precise hint (retry-after-ms) pauses the cluster that long
        start = clock.now()
        # b may still spend the little stock it leased before the 429 (at most one block);
        # its next refill sees the cluster-wide pause.
        waits = [(await drive(clock, b.acquire(1))).rate_wait for _ in range(4)]
        assert clock.now() - start >= 1.9 and max(waits) >= 1.9
        assert core.stats()["rate_per_min"] == 5700  # trimmed (no acceptance observed yet)
    run(main)


def test_tokens_are_reserved_and_corrected_locally() -> None:
    async def main() -> None:
        clock = FakeClock()
        core, client = _setup(clock, tokens_per_minute=60_000)
        permits = _source(client, clock, core.limits)
        permit = await drive(clock, permits.acquire(80))
        permits.release(permit, used_tokens=20)  # 60 come back to the local stock
        calls = client.calls
        permit = await drive(clock, permits.acquire(50))
        assert client.calls == calls  # served from the corrected stock
    run(main)


def test_unreachable_limiter_fails_waiters_after_patience() -> None:
    async def main() -> None:
        clock = FakeClock()
        core, client = _setup(clock, max_concurrent=1)
        permits = _source(client, clock, core.limits, patience=5.0)
        client.down = True
        with pytest.raises(LimiterUnavailableError, match="unreachable for 5 s"):
            await drive(clock, permits.acquire(1), step=0.1)
        with pytest.raises(LimiterUnavailableError):
            await permits.acquire(1)
    run(main)


def test_restarted_limiter_adopts_in_flight_slots() -> None:
    async def main() -> None:
        clock = FakeClock()
        core, client = _setup(clock, max_concurrent=2)
        permits = _source(client, clock, core.limits)
        first = await drive(clock, permits.acquire(1))
        client.core = LimiterCore(core.limits, clock)  # the actor restarted: fresh state
        second = await drive(clock, permits.acquire(1))
        permits.release(first, used_tokens=None)
        permits.release(second, used_tokens=None)
        assert {first.slot, second.slot} == {0, 1}
        assert client.core.stats()["leases_created"] == 1
    run(main)

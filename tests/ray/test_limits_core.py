"""LimiterCore (the limiter actor's state) on a fake clock: no Ray, no sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from plait.resources.clock import FakeClock
from plait_ray.limits import LeaseRequest, LimiterCore, LimiterLimits, fair_shares
from plait_ray.limits.core import OLD_STOCK_S


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 10))  # type: ignore[arg-type]


def _core(clock: FakeClock, **limits: object) -> LimiterCore:
    base: dict[str, object] = {"max_concurrent": None, "rate_limit": None,
                               "tokens_per_minute": None, "lease_ttl": 5.0}
    base.update(limits)
    return LimiterCore(LimiterLimits(**base), clock)  # type: ignore[arg-type]


def test_request_grants_over_a_window_respect_the_rate() -> None:
    async def main() -> None:
        clock = FakeClock()
        core = _core(clock, rate_limit=6000)  # 100/s, bucket capacity 10
        total = 0
        for _ in range(200):  # 10 s of fake time, polled faster than the bucket fills
            grant = await core.lease(LeaseRequest("w", want_requests=64))
            assert grant.requests is not None and grant.requests <= 10
            total += grant.requests
            await clock.advance(0.05)
        assert 990 <= total <= 1010  # rate * 10 s, +- one bucket
    run(main)


def test_a_starving_worker_waits_boundedly_for_a_full_block() -> None:
    async def main() -> None:
        clock = FakeClock()
        core = _core(clock, rate_limit=6000)
        await core.lease(LeaseRequest("a", want_requests=64))  # empties the bucket
        task = asyncio.create_task(core.lease(LeaseRequest("b", want_requests=64, max_wait=1)))
        await clock.advance(0.05)
        assert not task.done()
        await clock.advance(0.05)
        assert (await task).requests == 10
    run(main)


def test_unlimited_requests_are_granted_as_none() -> None:
    async def main() -> None:
        grant = await _core(FakeClock()).lease(LeaseRequest("w", want_requests=5))
        assert grant.requests is None and grant.tokens is None
    run(main)


def test_slots_never_exceed_max_concurrent_and_pass_fifo() -> None:
    async def main() -> None:
        clock = FakeClock()
        core = _core(clock, max_concurrent=3)
        a = await core.lease(LeaseRequest("a", want_slots=5, demand=5))
        assert sorted(a.slots) == [0, 1, 2]
        b = await core.lease(LeaseRequest("b", want_slots=1, demand=1, max_wait=0))
        assert b.slots == ()
        waiting = asyncio.create_task(
            core.lease(LeaseRequest("b", b.lease_id, want_slots=1, demand=1, max_wait=1)))
        await clock.advance(0.1)
        core.return_slots(a.lease_id, (a.slots[0],))
        got = await waiting
        assert got.slots == (a.slots[0],)
        assert core.stats()["slots_out"] == 3
    run(main)


def test_expired_lease_gives_its_slots_back() -> None:
    async def main() -> None:
        clock = FakeClock()
        core = _core(clock, max_concurrent=2)
        await core.lease(LeaseRequest("dead", want_slots=2, demand=2))
        await clock.advance(5.0)
        assert core.sweep() == 1
        grant = await core.lease(LeaseRequest("alive", want_slots=2, demand=2))
        assert len(grant.slots) == 2 and core.stats()["leases_expired"] == 1
    run(main)


def test_rate_limited_pauses_and_slows_everyone() -> None:
    async def main() -> None:
        clock = FakeClock()
        core = _core(clock, rate_limit=6000)
        core.report_rate_limited(2.5)  # a precise hint (retry-after-ms) is the pause
        grant = await core.lease(LeaseRequest("other", want_requests=10))
        assert grant.requests == 0 and grant.pause_for == 2.5
        assert grant.rate_per_s == 95.0  # no acceptance observed yet: trimmed, not halved
        await clock.advance(2.5)
        assert (await core.lease(LeaseRequest("other", want_requests=10))).requests == 9
        core.report_success(10)  # regrowth with time: +5% of 100/s per second, capped
        assert core.stats()["rate_per_min"] == 6000
    run(main)


def test_429_without_a_configured_rate_derives_one() -> None:
    async def main() -> None:
        clock = FakeClock()
        core = _core(clock)
        await clock.advance(1.0)
        core.report_success(200)
        await clock.advance(0.5)
        core.report_rate_limited(None)
        grant = await core.lease(LeaseRequest("w", want_requests=1))
        assert grant.rate_per_s is not None and 0 < grant.rate_per_s < 200
    run(main)


def test_token_grant_may_exceed_capacity_when_the_bucket_is_full() -> None:
    async def main() -> None:
        clock = FakeClock()
        core = _core(clock, tokens_per_minute=60_000)  # 1000/s, capacity 100
        grant = await core.lease(LeaseRequest("w", want_tokens=500, min_tokens=500))
        assert grant.tokens == 500
        grant = await core.lease(LeaseRequest("w", grant.lease_id, want_tokens=50,
                                              min_tokens=50))
        assert grant.tokens == 0.0  # in debt: -400 must refill first
    run(main)


def test_restarted_core_adopts_held_slots_and_revokes_conflicts() -> None:
    async def main() -> None:
        core = _core(FakeClock(), max_concurrent=4)
        a = await core.lease(LeaseRequest("a", "old-lease", held_slots=(0, 1)))
        b = await core.lease(LeaseRequest("b", "old-lease-2", held_slots=(1, 2)))
        assert a.revoked_slots == () and b.revoked_slots == (1,)
        assert core.stats()["slots_out"] == 3
    run(main)


def test_fair_shares_and_quota() -> None:
    assert fair_shares({"a": 10, "b": 1}, 4) == {"b": 1, "a": 3}
    assert fair_shares({"a": 10, "b": 10}, 8) == {"a": 4, "b": 4}

    async def main() -> None:
        core = _core(FakeClock(), max_concurrent=4)
        a = await core.lease(LeaseRequest("a", want_slots=4, demand=4))
        assert a.slot_quota is None  # nobody else wants slots
        b = await core.lease(LeaseRequest("b", want_slots=2, demand=2))
        a2 = await core.lease(LeaseRequest("a", a.lease_id, demand=4))
        assert b.slots == () and a2.slot_quota == 2
    run(main)


def test_fenced_core_grants_no_slot_an_old_lease_may_hold_until_the_ttl() -> None:
    # After a restart the first worker to sync must not be handed slots another worker of
    # the dead generation still uses (that ran the cluster 2-3 over a cap of 4).
    async def main() -> None:
        clock = FakeClock()
        core = LimiterCore(LimiterLimits(4, None, None, lease_ttl=5.0), clock, fenced=True)
        a = await core.lease(LeaseRequest("a", "old-a", held_slots=(0, 1), want_slots=2))
        assert a.revoked_slots == () and a.slots == ()
        b = await core.lease(LeaseRequest("b", want_slots=4, demand=4))
        assert b.slots == ()  # slots 2 and 3 may still be in use by an old lease
        c = await core.lease(LeaseRequest("c", "old-c", held_slots=(2,)))
        assert c.revoked_slots == ()  # adopted: its holder named it
        core.return_slots(c.lease_id, (2,))
        b = await core.lease(LeaseRequest("b", b.lease_id, want_slots=4, demand=4))
        assert b.slots == (2,)  # known free: granted at once
        await clock.advance(3.0)
        await core.lease(LeaseRequest("a", a.lease_id, held_slots=(0, 1)))
        b = await core.lease(LeaseRequest("b", b.lease_id, want_slots=4, demand=4))
        assert b.slots == ()
        await clock.advance(2.0)
        core.sweep()  # every old lease has expired: the last unknown slot is free
        b = await core.lease(LeaseRequest("b", b.lease_id, want_slots=4, demand=4))
        assert b.slots == (3,)
        assert core.stats()["slots_out"] == 4 and core.stats()["slots_fenced"] == 0
    run(main)


def test_fenced_core_owes_the_budget_workers_may_still_hold() -> None:
    # Request stock granted by the dead incarnation may be spent for up to OLD_STOCK_S.
    async def main() -> None:
        clock = FakeClock()
        core = LimiterCore(LimiterLimits(None, 600.0, None, lease_ttl=5.0), clock, fenced=True)
        grant = await core.lease(LeaseRequest("a", want_requests=5))
        assert grant.requests == 0  # 10/s x 1 s owed first (a fresh core grants 1 at once)
        await clock.advance(OLD_STOCK_S + 0.2)
        grant = await core.lease(LeaseRequest("a", grant.lease_id, want_requests=5))
        assert grant.requests is not None and grant.requests >= 1  # the debt is paid
    run(main)

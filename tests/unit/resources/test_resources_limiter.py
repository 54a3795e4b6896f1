import asyncio

import pytest

from plait.resources.clock import FakeClock, settle
from plait.resources.limiter import LocalPermitSource
from plait.resources.permits import Permit


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def completes_without_suspending(coro) -> Permit:
    # The fast path must not yield to the loop (no task, no future).
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("acquire suspended on the fast path")


def test_fast_path_does_not_suspend():
    permits = LocalPermitSource(4, 6000, 600_000, FakeClock())
    permit = completes_without_suspending(permits.acquire(10))
    assert permit.slot in range(4)
    assert permit.queue_wait == 0 and permit.rate_wait == 0


def test_unlimited_source_gives_slot_minus_one():
    permits = LocalPermitSource(None, None, None, FakeClock())
    permit = completes_without_suspending(permits.acquire(10))
    assert permit.slot == -1
    assert permits.in_flight == 1
    permits.release(permit, used_tokens=None)
    assert permits.in_flight == 0


def test_slot_ids_unique_and_reused_fifo():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(3, None, None, clock)
        held = [await permits.acquire(1) for _ in range(3)]
        assert sorted(p.slot for p in held) == [0, 1, 2]
        waiter1 = asyncio.create_task(permits.acquire(1))
        waiter2 = asyncio.create_task(permits.acquire(1))
        await settle()
        assert not waiter1.done() and not waiter2.done()
        await clock.advance(2.0)
        permits.release(held[1], used_tokens=None)
        await settle()
        assert waiter1.done() and not waiter2.done()  # FIFO
        got = waiter1.result()
        assert got.slot == held[1].slot
        assert got.queue_wait == 2.0
        permits.release(held[0], used_tokens=None)
        assert (await waiter2).slot == held[0].slot
        assert permits.in_flight == 3

    run(main())


def test_cancelled_waiter_does_not_leak_or_lose_a_slot():
    async def main():
        permits = LocalPermitSource(1, None, None, FakeClock())
        first = await permits.acquire(1)
        waiter = asyncio.create_task(permits.acquire(1))
        await settle()
        waiter.cancel()
        await settle()
        permits.release(first, used_tokens=None)
        again = completes_without_suspending(permits.acquire(1))
        assert again.slot == 0
        assert permits.in_flight == 1

    run(main())


def test_waiter_cancelled_after_slot_was_handed_over_passes_it_on():
    async def main():
        permits = LocalPermitSource(1, None, None, FakeClock())
        first = await permits.acquire(1)
        doomed = asyncio.create_task(permits.acquire(1))
        patient = asyncio.create_task(permits.acquire(1))
        await settle()
        permits.release(first, used_tokens=None)  # slot handed to `doomed`...
        doomed.cancel()  # ...which is cancelled before it runs
        await settle()
        assert doomed.cancelled()
        assert (await patient).slot == 0
        assert permits.in_flight == 1

    run(main())


def test_cancelled_rate_waiter_returns_its_slot():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(2, 60, None, clock)  # 1 request/s
        await permits.acquire(1)
        waiter = asyncio.create_task(permits.acquire(1))
        await settle()
        assert permits.in_flight == 2
        waiter.cancel()
        await settle()
        assert permits.in_flight == 1

    run(main())


def test_request_bucket_paces_at_the_configured_rate():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(None, 600, None, clock)  # 10/s, burst 1
        tasks = [asyncio.create_task(permits.acquire(1)) for _ in range(11)]
        await clock.advance(0.55)
        assert sum(t.done() for t in tasks) == 6  # t = 0, 0.1, ..., 0.5
        await clock.advance(0.45 + 1e-3)  # float rounding of 0.1 s steps
        assert all(t.done() for t in tasks)
        assert tasks[-1].result().rate_wait == pytest.approx(1.0, abs=1e-3)

    run(main())


def test_burst_is_a_tenth_of_a_second_not_a_minute():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(None, 6000, None, clock)  # 100/s -> burst 10
        tasks = [asyncio.create_task(permits.acquire(1)) for _ in range(30)]
        await settle()
        assert sum(t.done() for t in tasks) == 10
        await clock.advance(0.1)
        assert sum(t.done() for t in tasks) == 20

    run(main())


def test_429_with_a_precise_hint_pauses_every_acquisition_that_long():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(4, None, None, clock)
        assert permits.on_rate_limited(2.5) == 2.5  # retry-after-ms: 2500
        task = asyncio.create_task(permits.acquire(1))
        await clock.advance(2.4)
        assert not task.done()
        await clock.advance(0.1)
        assert task.done()
        assert task.result().rate_wait == pytest.approx(2.5)

    run(main())


def test_aimd_cuts_once_per_episode_and_recovers():
    clock = FakeClock()
    permits = LocalPermitSource(None, 600, None, clock, recovery_period=30.0)
    permits.on_rate_limited(None)  # nothing observed yet: the pause is the remedy, trim 5%
    assert permits.effective_rate_per_min == pytest.approx(570)
    permits.on_rate_limited(None)  # same overload episode: no second decrease
    assert permits.effective_rate_per_min == pytest.approx(570)
    asyncio.run(clock.advance(1.0))
    permits.on_rate_limited(None)
    assert permits.effective_rate_per_min == pytest.approx(541.5)
    for _ in range(10):  # many successes at one instant regain nothing...
        permits.on_success()
    assert permits.effective_rate_per_min == pytest.approx(541.5)
    asyncio.run(clock.advance(1.0))
    permits.on_success()  # ...time does: +5% of the configured 600/min per second
    assert permits.effective_rate_per_min == pytest.approx(541.5 + 0.05 * 600)
    asyncio.run(clock.advance(30.0))
    permits.on_success()
    assert permits.effective_rate_per_min == pytest.approx(600)
    for _ in range(100):
        permits.on_success()
    assert permits.effective_rate_per_min == pytest.approx(600)  # never above configured


def test_429_without_configured_rate_derives_one_and_later_removes_it():
    async def main():
        clock = FakeClock(start=10.0)
        permits = LocalPermitSource(None, None, None, clock, recovery_period=5.0)
        for _ in range(40):  # 40 successes within 1.0 s
            permits.release(await permits.acquire(1), used_tokens=None)
            permits.on_success()
            await clock.advance(0.025)
        assert permits.effective_rate_per_min is None
        permits.on_rate_limited(0.5)
        derived = permits.effective_rate_per_min
        assert derived is not None
        # observed ~20-40/s over the 1-2 s window, times 0.95
        assert 19 * 60 <= derived <= 38 * 60
        await clock.advance(0.5)
        permits.on_success()
        assert permits.effective_rate_per_min is not None
        assert permits.effective_rate_per_min > derived
        await clock.advance(5.0)
        permits.on_success()
        assert permits.effective_rate_per_min is None

    run(main())


def test_refused_requests_and_too_little_data_derive_no_rate():
    async def main():
        clock = FakeClock(start=10.0)
        permits = LocalPermitSource(None, None, None, clock)
        for _ in range(200):  # 429s come back at once; they are not throughput
            permits.release(await permits.acquire(1), used_tokens=None)
            permits.on_rate_limited(0.001)
            assert permits.paused_until > clock.now()
            await clock.advance(0.005)
        assert permits.effective_rate_per_min is None  # paused only

    run(main())


def test_lowered_rate_regrows_with_time_not_with_request_count():
    async def main():
        clock = FakeClock(start=10.0)
        permits = LocalPermitSource(None, None, None, clock)
        for _ in range(100):  # 100 successes over 1.0 s: ~100/s accepted
            permits.release(await permits.acquire(1), used_tokens=None)
            permits.on_success()
            await clock.advance(0.01)
        permits.on_rate_limited(0.01)
        derived = permits.effective_rate_per_min
        assert derived == pytest.approx(0.95 * 100 * 60, rel=0.05)
        for _ in range(500):  # a burst of successes does not overshoot the server
            permits.on_success()
        assert permits.effective_rate_per_min == pytest.approx(derived)
        await clock.advance(1.0)
        permits.on_success()
        assert permits.effective_rate_per_min == pytest.approx(derived * 1.15)  # derived: 15%/s

    run(main())


def test_token_reservation_is_corrected_with_real_usage():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(None, None, 60_000, clock)  # 1000 tok/s, capacity 100
        first = await permits.acquire(100)
        permits.release(first, used_tokens=20)  # 80 tokens come back
        completes_without_suspending(permits.acquire(80))
        uncorrected = await permits.acquire(0)
        permits.release(uncorrected, used_tokens=None)  # None keeps the reservation
        blocked = asyncio.create_task(permits.acquire(10))
        await settle()
        assert not blocked.done()
        await clock.advance(0.01)
        assert blocked.done()

    run(main())


def test_request_larger_than_token_capacity_goes_into_debt():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(None, None, 60_000, clock)
        await permits.acquire(500)  # bucket full (100): allowed, leaves -400
        nxt = asyncio.create_task(permits.acquire(100))
        await clock.advance(0.49)
        assert not nxt.done()
        await clock.advance(0.011)
        assert nxt.done()

    run(main())


def test_coarse_hint_pause_is_a_probe_that_doubles_until_an_acceptance():
    async def main():
        clock = FakeClock(start=10.0)
        permits = LocalPermitSource(None, None, None, clock)
        # Before: a whole-second retry-after (or none: 1 s) paused for the whole second.
        assert permits.on_rate_limited(1.0) == pytest.approx(0.02)
        assert permits.on_rate_limited(1.0) == pytest.approx(0.02)  # same pause: no doubling
        await clock.advance(0.02)
        assert permits.on_rate_limited(None) == pytest.approx(0.04)  # refused again after it
        await clock.advance(0.04)
        assert permits.on_rate_limited(1.0) == pytest.approx(0.08)
        for _ in range(5):
            await clock.advance(1.0)
            permits.on_rate_limited(1.0)
        assert permits.paused_until - clock.now() == pytest.approx(1.0)  # the hint bounds it
        await clock.advance(1.0)
        permits.release(await permits.acquire(1), used_tokens=None)
        permits.on_success()
        assert permits.on_rate_limited(1.0) == pytest.approx(0.02)  # accepted: short again

    run(main())


async def accepted_at(permits: LocalPermitSource, in_flight: int) -> list[Permit]:
    """Hold ``in_flight`` - 1 permits after one sent with ``in_flight`` was accepted."""
    held = [await permits.acquire(1) for _ in range(in_flight)]
    assert held[-1].in_flight == in_flight
    permits.release(held.pop(), used_tokens=None)
    permits.on_success()
    return held


def test_concurrency_refusal_shrinks_the_in_flight_window_without_pausing():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(8, None, None, clock)
        held = await accepted_at(permits, 4)
        held += [await permits.acquire(1) for _ in range(2)]
        assert [p.in_flight for p in held] == [1, 2, 3, 4, 5]
        refused = held.pop()  # sent with 5 in flight, above any accepted: the server takes 4
        permits.release(refused, used_tokens=None)
        assert permits.on_rate_limited(1.0) == 0.0
        assert permits.max_in_flight == 4 and permits.paused_until == float("-inf")
        waiter = asyncio.create_task(permits.acquire(1))  # the retry waits for the window
        await settle()
        assert not waiter.done()
        permits.release(held.pop(), used_tokens=None)
        permits.on_success()
        await settle()
        assert waiter.done() and waiter.result().in_flight == 4

    run(main())


def test_refusals_before_any_acceptance_go_to_the_rate_logic():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(8, None, None, clock)
        held = [await permits.acquire(1) for _ in range(6)]
        # Long latencies: a storm of 429s before the first reply must not shrink a window.
        permits.release(held.pop(), used_tokens=None)
        assert permits.on_rate_limited(None) == pytest.approx(0.02)
        assert permits.max_in_flight is None

    run(main())


def test_refusal_at_an_accepted_in_flight_count_is_a_rate_limit():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(8, None, None, clock)
        held = await accepted_at(permits, 3)
        permits.release(held.pop(), used_tokens=None)  # sent with 2 in flight: refused
        assert permits.on_rate_limited(None) == pytest.approx(0.02)  # paused: a rate cap
        assert permits.max_in_flight is None

    run(main())


def test_concurrency_refusal_with_a_precise_hint_still_pauses():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(8, None, None, clock)
        held = await accepted_at(permits, 2)
        held += [await permits.acquire(1) for _ in range(2)]
        permits.release(held.pop(), used_tokens=None)  # sent with 3 in flight
        assert permits.on_rate_limited(0.25) == 0.25
        assert permits.max_in_flight == 2

    run(main())


def test_in_flight_window_grows_back_at_its_edge_after_a_quiet_second():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(8, None, None, clock)
        held = await accepted_at(permits, 2)
        held += [await permits.acquire(1) for _ in range(2)]
        permits.release(held.pop(), used_tokens=None)
        permits.on_rate_limited(None)
        assert permits.max_in_flight == 2 and len(held) == 2
        permits.release(held.pop(), used_tokens=None)  # at the edge, but within the hold
        permits.on_success()
        assert permits.max_in_flight == 2
        held.append(await permits.acquire(1))
        await clock.advance(1.0)
        permits.release(held.pop(), used_tokens=None)  # at the edge after a quiet second
        permits.on_success()
        assert permits.max_in_flight == 3

    run(main())


def test_a_cut_followed_by_a_refusal_the_rate_explains_is_undone():
    async def main():
        clock = FakeClock()
        permits = LocalPermitSource(8, None, None, clock)
        held = await accepted_at(permits, 2)
        held += [await permits.acquire(1) for _ in range(4)]  # a burst: 2..5 in flight
        permits.release(held.pop(), used_tokens=None)  # sent with 5, above any accepted
        assert permits.on_rate_limited(None) == 0.0 and permits.max_in_flight == 4
        permits.release(held.pop(1), used_tokens=None)  # sent with 2: accepted lately
        assert permits.on_rate_limited(None) == pytest.approx(0.02)  # the rate's refusal
        assert permits.max_in_flight is None  # the cut was the rate's burst: undone
        permits.release(held.pop(), used_tokens=None)  # sent with 4, within the second
        permits.on_rate_limited(None)
        assert permits.max_in_flight is None  # no cut while the rate refuses

    run(main())

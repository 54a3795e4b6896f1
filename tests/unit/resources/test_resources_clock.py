import asyncio

from plait.resources.clock import FakeClock, MonotonicClock


def test_fake_clock_wakes_sleepers_in_deadline_order():
    async def main():
        clock = FakeClock()
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, delay: float):
            await clock.sleep(delay)
            woke.append((name, clock.now()))

        tasks = [asyncio.create_task(sleeper(n, d)) for n, d in [("b", 2.0), ("a", 1.0),
                                                                  ("c", 5.0)]]
        await clock.advance(3.0)
        assert woke == [("a", 1.0), ("b", 2.0)]
        assert clock.now() == 3.0
        assert clock.pending == 1
        await clock.advance(2.0)
        assert woke[-1] == ("c", 5.0)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_fake_clock_honours_sleeps_started_inside_the_window():
    async def main():
        clock = FakeClock()
        times: list[float] = []

        async def twice():
            await clock.sleep(1.0)
            times.append(clock.now())
            await clock.sleep(1.0)
            times.append(clock.now())

        task = asyncio.create_task(twice())
        await clock.advance(10.0)
        assert times == [1.0, 2.0]
        await task

    asyncio.run(main())


def test_fake_clock_skips_cancelled_sleepers_and_zero_sleeps():
    async def main():
        clock = FakeClock()
        task = asyncio.create_task(clock.sleep(1.0))
        await asyncio.sleep(0)
        task.cancel()
        await clock.advance(2.0)
        assert task.cancelled()
        assert clock.next_deadline() is None
        await clock.sleep(0)  # returns without advancing
        assert clock.now() == 2.0

    asyncio.run(main())


def test_fake_clock_run_until_idle():
    async def main():
        clock = FakeClock(start=100.0)
        task = asyncio.create_task(clock.sleep(7.5))
        await clock.run_until_idle()
        assert task.done()
        assert clock.now() == 107.5

    asyncio.run(main())


def test_monotonic_clock_moves_forward():
    clock = MonotonicClock()
    a = clock.now()
    asyncio.run(clock.sleep(-1))  # negative sleeps return at once
    assert clock.now() >= a

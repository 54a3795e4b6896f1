"""AsyncBatcher: batching rules, errors, backpressure and close, on one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import pytest

from plait.batching import (
    AsyncBatcher,
    BatcherClosedError,
    BatchingError,
    ExecutorOutputError,
    QueueFullError,
)

BOUND_S = 10.0  # every wait in these tests ends by then, pass or fail


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, BOUND_S))


class Recorder:
    """Executor in three flavours that records every batch it was given."""

    def __init__(self, mode: str, fn: Callable[[int], Any] = lambda x: x * 10) -> None:
        self.mode = mode
        self.fn = fn
        self.batches: list[list[Any]] = []

    def _apply(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        return [self.fn(i) for i in items]

    def executor(self) -> Callable[[list[Any]], Sequence[Any] | Awaitable[Sequence[Any]]]:
        if self.mode == "async":

            async def run_async(items: list[Any]) -> list[Any]:
                await asyncio.sleep(0)
                return self._apply(items)

            return run_async
        return self._apply

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


MODES = ["async", "sync_thread", "sync_inline"]


def make(mode: str, rec: Recorder, **kw: Any) -> AsyncBatcher[Any, Any]:
    return AsyncBatcher(executor=rec.executor(), sync_in_thread=mode != "sync_inline", **kw)


@pytest.mark.parametrize("mode", MODES)
def test_outputs_match_inputs_in_order_and_max_batch_is_respected(mode: str) -> None:
    rec = Recorder(mode)

    async def main() -> list[int]:
        batcher = make(mode, rec, max_batch=8, max_wait_ms=5)
        out = await batcher.submit_many(range(100))
        await batcher.close()
        return out

    assert run(main()) == [i * 10 for i in range(100)]
    assert max(rec.sizes) == 8
    assert sum(rec.sizes) == 100
    assert [i for b in rec.batches for i in b] == list(range(100))


@pytest.mark.parametrize("mode", MODES)
def test_partial_batch_is_flushed_after_max_wait(mode: str) -> None:
    rec = Recorder(mode)

    async def main() -> list[int]:
        batcher = make(mode, rec, max_batch=100, max_wait_ms=10)
        return await batcher.submit_many([1, 2, 3])  # no close(): only the deadline flushes

    assert run(main()) == [10, 20, 30]
    assert rec.batches == [[1, 2, 3]]


def test_wrong_output_count_names_expected_and_got() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def main() -> None:
        batcher = AsyncBatcher[int, int](max_batch=3, max_wait_ms=5, executor=short)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(3)),
                                       return_exceptions=True)
        for r in results:
            assert isinstance(r, ExecutorOutputError) and isinstance(r, BatchingError)
            assert "expected 3, got 2" in str(r) and "'" + short.__qualname__ + "'" in str(r)
        assert batcher.stats().failed_batches == 1

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_executor_error_fails_only_its_batch(mode: str) -> None:
    def explode_on_bad(x: Any) -> Any:
        if x == "bad":
            raise ValueError("bad item")
        return x

    rec = Recorder(mode, fn=explode_on_bad)

    async def main() -> list[Any]:
        batcher = make(mode, rec, max_batch=2, max_wait_ms=5)
        tasks = [batcher.submit(x) for x in ["a", "bad", "c", "d"]]
        return await asyncio.gather(*tasks, return_exceptions=True)

    a, bad, c, d = run(main())
    assert isinstance(a, ValueError) and isinstance(bad, ValueError)
    assert (c, d) == ("c", "d")


def test_drop_policy_raises_queue_full_with_clear_message() -> None:
    rec = Recorder("async")

    async def main() -> list[Any]:
        batcher = make("async", rec, max_batch=100, max_wait_ms=10_000, max_queue=2,
                       backpressure="drop")
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        await batcher.close()  # flushes the two accepted items without the long wait
        out = await asyncio.gather(*tasks, return_exceptions=True)
        assert batcher.stats().dropped == 1
        return out

    first, second, third = run(main())
    assert (first, second) == (0, 10)
    assert isinstance(third, QueueFullError) and isinstance(third, BatchingError)
    assert "max_queue=2" in str(third) and "backpressure='block'" in str(third)


def test_block_policy_waits_for_room_and_serves_everyone() -> None:
    rec = Recorder("async")

    async def main() -> list[int]:
        batcher = make("async", rec, max_batch=4, max_wait_ms=10_000, max_queue=2,
                       backpressure="block")
        out = await batcher.submit_many(range(7))
        assert batcher.stats().queue_high_water <= 2
        return out

    # Blocked callers seal the open batch at once, so no 10 s deadline is ever waited for.
    assert run(main()) == [i * 10 for i in range(7)]
    assert max(rec.sizes) <= 2


def test_passthrough_runs_the_overflow_item_alone_at_once() -> None:
    rec = Recorder("async")

    async def main() -> None:
        batcher = make("async", rec, max_batch=100, max_wait_ms=10_000, max_queue=1,
                       backpressure="passthrough")
        queued = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        assert await batcher.submit(2) == 20  # did not wait for the queued item's deadline
        assert not queued.done()
        assert rec.batches == [[2]]
        await batcher.close()
        assert await queued == 10
        assert batcher.stats().passthrough == 1

    run(main())


def test_concurrent_batch_limit() -> None:
    running = peak = 0

    async def slow(items: list[int]) -> list[int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.002)
        running -= 1
        return items

    async def main(limit: int | None) -> int:
        nonlocal peak
        peak = 0
        batcher = AsyncBatcher[int, int](max_batch=2, max_wait_ms=1, executor=slow,
                                         max_concurrent_batches=limit)
        assert await batcher.submit_many(range(20)) == list(range(20))
        return peak

    assert run(main(1)) == 1
    assert run(main(None)) > 1


def test_due_batches_keep_filling_while_the_slot_is_busy() -> None:
    gate = asyncio.Event()
    sizes: list[int] = []

    async def gated(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await gate.wait()
        return items

    async def main() -> None:
        batcher = AsyncBatcher[int, int](max_batch=50, max_wait_ms=0, executor=gated)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # batch [0] is running and holds the only slot
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 11)]
        await asyncio.sleep(0.01)  # their deadline passes while no slot is free
        gate.set()
        assert await asyncio.gather(first, *rest) == list(range(11))

    run(main())
    assert sizes == [1, 10]


def test_stats_count_batches_items_and_average() -> None:
    rec = Recorder("async")

    async def main() -> None:
        batcher = make("async", rec, max_batch=4, max_wait_ms=5)
        assert batcher.stats().avg_batch_size == 0.0
        await batcher.submit_many(range(10))
        stats = batcher.stats()
        assert (stats.batches, stats.items) == (3, 10)
        assert stats.avg_batch_size == pytest.approx(10 / 3)
        # The first full batch leaves at once; the other 6 items wait together.
        assert stats.queue_high_water == 6
        assert (stats.dropped, stats.passthrough, stats.failed_batches) == (0, 0, 0)

    run(main())


def test_close_flushes_pending_items_then_refuses_new_ones() -> None:
    rec = Recorder("async")

    async def main() -> None:
        batcher = make("async", rec, max_batch=100, max_wait_ms=10_000)
        pending = asyncio.ensure_future(batcher.submit(5))
        await asyncio.sleep(0)
        await batcher.close()
        assert pending.done() and pending.result() == 50
        assert batcher.closed
        with pytest.raises(BatcherClosedError, match="closed"):
            await batcher.submit(6)
        await batcher.close()  # idempotent

    run(main())


def test_cancelled_caller_is_left_out_of_the_batch() -> None:
    rec = Recorder("async")

    async def main() -> None:
        batcher = make("async", rec, max_batch=100, max_wait_ms=10_000)
        gone = asyncio.ensure_future(batcher.submit(1))
        kept = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        await batcher.close()
        assert await kept == 20

    run(main())
    assert rec.batches == [[2]]


def test_items_for_different_executors_are_batched_apart() -> None:
    async def double(items: list[int]) -> list[int]:
        return [i * 2 for i in items]

    async def negate(items: list[int]) -> list[int]:
        return [-i for i in items]

    async def main() -> list[int]:
        batcher = AsyncBatcher[int, int](max_batch=10, max_wait_ms=5, executor=double)
        return list(await asyncio.gather(batcher.submit(1), batcher.submit(2, executor=negate),
                                         batcher.submit(3)))

    assert run(main()) == [2, -2, 6]


def test_batcher_rebinds_after_its_loop_closes() -> None:
    rec = Recorder("async")
    batcher = make("async", rec, max_batch=4, max_wait_ms=1)
    assert run(batcher.submit(1)) == 10
    assert run(batcher.submit(2)) == 20
    assert batcher.stats().items == 2


def test_missing_executor_and_bad_options_are_clear() -> None:
    with pytest.raises(BatchingError, match="max_batch must be >= 1, got 0"):
        AsyncBatcher[int, int](max_batch=0)
    with pytest.raises(BatchingError, match="backpressure must be one of"):
        AsyncBatcher[int, int](backpressure="maybe")  # type: ignore[arg-type]
    with pytest.raises(BatchingError, match="max_queue must be >= 1"):
        AsyncBatcher[int, int](max_queue=0)
    with pytest.raises(BatchingError, match="pass executor="):
        run(AsyncBatcher[int, int]().submit(1))

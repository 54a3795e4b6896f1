"""Batcher: thread-safe batching across threads, errors, timeouts and shutdown."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from plait.batching import (
    Batcher,
    BatcherClosedError,
    BatchingError,
    ExecutorOutputError,
    QueueFullError,
)

BOUND_S = 10.0


class SlowRecorder:
    """A blocking executor that takes a moment, so concurrent callers pile up."""

    def __init__(self, delay_s: float = 0.005) -> None:
        self.delay_s = delay_s
        self.batches: list[list[Any]] = []
        self._lock = threading.Lock()

    def __call__(self, items: list[Any]) -> list[Any]:
        with self._lock:
            self.batches.append(list(items))
        time.sleep(self.delay_s)  # runs in a worker thread, not on the batcher's loop
        return [(i, "ok") for i in items]


def test_run_from_many_threads_forms_real_batches() -> None:
    rec = SlowRecorder()
    batcher = Batcher[Any, Any](max_batch=16, max_wait_ms=5, executor=rec)
    start = threading.Barrier(8, timeout=BOUND_S)

    def worker(t: int) -> list[Any]:
        start.wait()
        return [batcher.run((t, k), timeout=BOUND_S) for k in range(10)]

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(worker, range(8), timeout=BOUND_S * 2))
    finally:
        batcher.close(timeout=BOUND_S)
    for t, outs in enumerate(results):
        assert outs == [((t, k), "ok") for k in range(10)]
    sizes = [len(b) for b in rec.batches]
    assert sum(sizes) == 80 and max(sizes) > 1 and max(sizes) <= 16
    assert batcher.stats().avg_batch_size > 1


def test_readme_usage_and_per_call_executor() -> None:
    batcher = Batcher[str, str](max_batch=32, max_wait_ms=10)

    def batch_executor(items: list[str]) -> list[str]:
        return [s + "!" for s in items]

    try:
        assert batcher.run("hi", executor=batch_executor, timeout=BOUND_S) == "hi!"
    finally:
        batcher.close(timeout=BOUND_S)


def test_errors_reach_only_the_failing_batch_callers() -> None:
    def executor(items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("bad batch")
        return items

    batcher = Batcher[str, str](max_batch=1, max_wait_ms=1, executor=executor)
    try:
        with pytest.raises(ValueError, match="bad batch"):
            batcher.run("bad", timeout=BOUND_S)
        assert batcher.run("good", timeout=BOUND_S) == "good"
    finally:
        batcher.close(timeout=BOUND_S)


def test_wrong_output_count_is_a_clear_error() -> None:
    batcher = Batcher[int, int](max_batch=1, max_wait_ms=1, executor=lambda xs: [*xs, *xs])
    try:
        with pytest.raises(ExecutorOutputError, match="expected 1, got 2"):
            batcher.run(1, timeout=BOUND_S)
    finally:
        batcher.close(timeout=BOUND_S)


def test_drop_policy_from_threads() -> None:
    release = threading.Event()

    def held(items: list[int]) -> list[int]:
        release.wait(BOUND_S)
        return items

    batcher = Batcher[int, int](max_batch=1, max_wait_ms=0, executor=held, max_queue=1,
                                backpressure="drop")
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(batcher.run, 1, timeout=BOUND_S)  # holds the only slot
            _wait_until(lambda: batcher.stats().batches == 1)
            queued = pool.submit(batcher.run, 2, timeout=BOUND_S)  # fills the queue
            _wait_until(lambda: batcher.stats().queue_high_water == 1)
            with pytest.raises(QueueFullError, match="max_queue=1"):
                batcher.run(3, timeout=BOUND_S)
            release.set()
            assert (running.result(BOUND_S), queued.result(BOUND_S)) == (1, 2)
    finally:
        release.set()
        batcher.close(timeout=BOUND_S)
    assert batcher.stats().dropped == 1


def test_run_timeout_is_a_batching_error() -> None:
    release = threading.Event()

    def held(items: list[int]) -> list[int]:
        release.wait(BOUND_S)
        return items

    batcher = Batcher[int, int](max_batch=1, max_wait_ms=0, executor=held)
    try:
        with pytest.raises(BatchingError, match=r"timeout=0.05s"):
            batcher.run(1, timeout=0.05)
    finally:
        release.set()
        batcher.close(timeout=BOUND_S)


def test_submit_is_awaitable_from_an_event_loop() -> None:
    batcher = Batcher[int, int](max_batch=8, max_wait_ms=5, executor=lambda xs: [x + 1
                                                                              for x in xs])

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)))

    try:
        assert asyncio.run(asyncio.wait_for(main(), BOUND_S)) == [1, 2, 3, 4, 5]
    finally:
        batcher.close(timeout=BOUND_S)


def test_close_drains_stops_the_thread_and_refuses_new_items() -> None:
    before = threading.active_count()
    batcher = Batcher[int, int](max_batch=100, max_wait_ms=10_000, executor=lambda xs: xs)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(batcher.run, 7, timeout=BOUND_S)
        _wait_until(lambda: batcher.stats().queue_high_water == 1)
        batcher.close(timeout=BOUND_S)  # must not wait for the 10 s deadline
        assert pending.result(BOUND_S) == 7
    assert batcher.closed
    with pytest.raises(BatcherClosedError):
        batcher.run(8, timeout=BOUND_S)
    batcher.close(timeout=BOUND_S)  # idempotent
    _wait_until(lambda: threading.active_count() <= before)


def test_collected_batcher_stops_its_thread() -> None:
    # This batcher's own thread: other tests' batchers may still be winding down.
    before = set(threading.enumerate())
    batcher = Batcher[int, int](max_batch=4, max_wait_ms=1, executor=lambda xs: xs)
    assert batcher.run(1, timeout=BOUND_S) == 1
    thread = next(t for t in threading.enumerate()
                  if t.name == "plait-batcher" and t not in before)
    del batcher
    gc.collect()
    thread.join(BOUND_S)
    assert not thread.is_alive()


def test_calling_run_on_the_batchers_own_thread_is_refused() -> None:
    holder: dict[str, Batcher[int, int]] = {}

    async def reentrant(items: list[int]) -> list[int]:
        return [holder["b"].run(i) for i in items]

    batcher = Batcher[int, int](max_batch=1, max_wait_ms=0, executor=reentrant)
    holder["b"] = batcher
    try:
        with pytest.raises(BatchingError, match="would deadlock"):
            batcher.run(1, timeout=BOUND_S)
    finally:
        batcher.close(timeout=BOUND_S)


def _wait_until(condition: Any) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)

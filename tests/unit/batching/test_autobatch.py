"""@autobatch on sync and async functions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from plait.batching import (
    AsyncAutoBatched,
    AutoBatched,
    BatchingError,
    ExecutorOutputError,
    autobatch,
)

BOUND_S = 10.0


def test_sync_function_becomes_a_thread_safe_single_item_call() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    @autobatch(max_batch=32, max_wait_ms=10)
    def call_llm(prompts: list[str]) -> list[str]:
        """Upper-case every prompt."""
        with lock:
            calls.append(len(prompts))
        return [p.upper() for p in prompts]

    try:
        assert isinstance(call_llm, AutoBatched)
        assert call_llm.__name__ == "call_llm" and call_llm.__doc__ == "Upper-case every prompt."
        assert call_llm("hello") == "HELLO"
        assert call_llm.batch(["a", "b"]) == ["A", "B"]  # straight through
        words = [f"w{i}" for i in range(64)]
        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(call_llm, words, timeout=BOUND_S)) == [w.upper() for w in words]
        stats = call_llm.stats()
        assert stats.items == 65 and stats.batches < 65  # .batch() is not counted
    finally:
        call_llm.close(timeout=BOUND_S)
    assert calls[1] == 2


def test_async_function_becomes_an_awaitable_single_item_call() -> None:
    @autobatch(max_batch=8, max_wait_ms=5)
    async def embed(texts: list[str]) -> list[int]:
        return [len(t) for t in texts]

    async def main() -> None:
        assert isinstance(embed, AsyncAutoBatched)
        assert await asyncio.gather(*(embed("x" * i) for i in range(20))) == list(range(20))
        assert await embed.batch(["ab", "c"]) == [2, 1]
        assert embed.stats().batches == 3
        await embed.close()

    asyncio.run(asyncio.wait_for(main(), BOUND_S))


def test_batch_checks_the_output_count() -> None:
    @autobatch()
    def broken(items: list[int]) -> list[int]:
        return []

    try:
        with pytest.raises(ExecutorOutputError, match="expected 2, got 0"):
            broken.batch([1, 2])
    finally:
        broken.close(timeout=BOUND_S)


def test_bad_options_fail_at_decoration_time() -> None:
    with pytest.raises(BatchingError, match="max_wait_ms must be >= 0, got -1"):
        autobatch(max_wait_ms=-1)


def test_unclosed_batcher_does_not_hang_interpreter_exit() -> None:
    script = (
        "from plait.batching import autobatch\n"
        "@autobatch(max_batch=4, max_wait_ms=1)\n"
        "def f(xs: list[int]) -> list[int]:\n"
        "    return xs\n"
        "print(f(3))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert done.stderr == ""

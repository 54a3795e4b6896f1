"""Provider batch APIs end to end: the real batch clients against the loopback emulation.

What is proven: a 2-level pipeline with both levels batched sends each level as one batch
(OpenAI Batch and Anthropic Message Batches); failed items are retried per the endpoint's
policy in a later batch, or fail only their row; expired items are retried; a batch past
``max_wait`` is cancelled and its rows fail with a clear error; no file written holds the
key; and a run SIGKILLed while polling is re-run with 0 duplicate submissions and every row
exactly once (10,000 rows).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from plait import LLMInference, Module
from plait.batch_api import BatchClient, BatchPolicy
from plait.clients.base import LLMRequest
from plait.errors import BadRequestError, BatchError, LLMError
from plait.execution import run
from plait.resources.config import ProviderAPI
from plait.testing import LLMServer

T = TypeVar("T")
FAST = {"linger": 0.2, "max_linger": 5.0, "poll_interval": 0.05}


class TwoCalls(Module):
    """Draft on ``fast`` then judge on ``smart``: two dependent calls per row."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="fast")
        self.judge = LLMInference(alias="smart")

    def forward(self, text: str) -> str:
        return self.judge(f"Judge: {self.draft(text)}")


def expected(text: str) -> str:
    return f"[m-b] echo: {f'Judge: [m-a] echo: {text}'[:200]}"


def rows(n: int) -> list[str]:
    return [f"row-{i}" for i in range(n)]


def with_server(body: Callable[[LLMServer], Awaitable[T]], **script: Any) -> T:
    async def main() -> T:
        async with LLMServer() as server:
            server.batches.script(**({"delay": 0.1} | script))
            return await asyncio.wait_for(body(server), 60)

    return asyncio.run(main())


def pipeline(server: LLMServer, provider: ProviderAPI = "openai", max_retries: int = 5,
             **policy: Any) -> Module:
    resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, provider_api=provider,
                                       batch=FAST | policy, max_retries=max_retries)
    return TwoCalls().bind(resources=resources, progress=False)


async def outputs_or_failures(module: Module, inputs: list[str]) -> tuple[list[Any],
                                                                        dict[int, Any]]:
    try:
        return list(await module(inputs)), {}
    except BatchError as exc:
        return exc.outputs, exc.failures


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_each_level_travels_in_one_batch(provider: ProviderAPI) -> None:
    async def body(server: LLMServer) -> None:
        out = await pipeline(server, provider)(rows(300))
        assert out == [expected(r) for r in rows(300)]
        stats = server.batches.stats()
        assert (stats.batches_created, stats.items_submitted) == (2, 600)
        assert stats.duplicate_custom_ids == stats.duplicate_bodies == 0
        assert server.stats().total_requests == 0  # no synchronous chat request at all
        assert stats.requests <= 4 * 2 + 2 * 40  # create(+upload), polls, results

    with_server(body)


def test_a_batched_endpoint_costs_its_batch_price() -> None:
    async def body(server: LLMServer) -> tuple[float, float]:
        costs: list[float] = []
        for batch in (False, FAST):
            resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, batch=batch,
                                               input_cost_per_1m=2.0, output_cost_per_1m=8.0)
            module = TwoCalls().bind(resources=resources, progress=False)
            assert await module(rows(20)) == [expected(r) for r in rows(20)]
            report = module.last_run
            assert report is not None
            costs.append(report.cost_usd)
        return costs[0], costs[1]

    sync, batched = with_server(body)
    assert sync > 0 and batched == pytest.approx(sync / 2)


def test_the_run_cap_on_requests_in_flight_does_not_split_batches() -> None:
    async def body(server: LLMServer) -> None:
        out = await run(pipeline(server), rows(200), max_concurrent=8)
        assert out == [expected(r) for r in rows(200)]
        assert server.batches.stats().batches_created == 2

    with_server(body)


def test_failed_items_are_retried_in_a_later_batch() -> None:
    async def body(server: LLMServer) -> None:
        out = await pipeline(server)(rows(40))
        assert out == [expected(r) for r in rows(40)]
        stats = server.batches.stats()
        assert stats.items_failed == 2
        assert stats.batches_created >= 3  # the retries went in their own batch
        assert stats.duplicate_custom_ids == 0  # a retry is a new item id

    with_server(body, fail_match="row-7", fail_limit=2, fail_status=500)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_refused_item_fails_only_its_row(provider: ProviderAPI) -> None:
    async def body(server: LLMServer) -> None:
        outputs, failures = await outputs_or_failures(pipeline(server, provider), rows(20))
        assert sorted(failures) == [3]
        error = failures[3].__cause__ or failures[3]
        assert isinstance(error, BadRequestError) and error.status == 400
        assert "scripted failure" in str(failures[3])
        assert [o for i, o in enumerate(outputs) if i != 3] == [
            expected(r) for i, r in enumerate(rows(20)) if i != 3]
        assert server.batches.stats().items_failed == 1  # not retried: a 400 is final

    with_server(body, fail_match="row-3", fail_status=400)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_expired_items_are_retried(provider: ProviderAPI) -> None:
    async def body(server: LLMServer) -> None:
        out = await pipeline(server, provider)(rows(10))
        assert out == [expected(r) for r in rows(10)]
        assert server.batches.stats().items_expired == 1

    with_server(body, expire_match="row-5", expire_limit=1)


def test_a_batch_past_max_wait_is_cancelled_and_its_rows_fail_clearly() -> None:
    async def body(server: LLMServer) -> None:
        module = pipeline(server, max_retries=1, max_wait=0.3)
        started = time.monotonic()
        _, failures = await outputs_or_failures(module, rows(5))
        assert sorted(failures) == list(range(5))
        assert "max_wait=0.3s" in str(failures[0])
        assert "gave up after 2 attempts" in str(failures[0])
        stats = server.batches.stats()
        assert stats.items_submitted == 10  # each row's call, then its one retry
        assert stats.cancelled == stats.batches_created >= 2  # every batch, none left running
        assert time.monotonic() - started < 30

    with_server(body, never_end=True)


def test_a_refused_batch_fails_its_rows_after_the_retries() -> None:
    async def body(server: LLMServer) -> None:
        _, failures = await outputs_or_failures(pipeline(server, max_retries=1), rows(4))
        assert sorted(failures) == [0, 1, 2, 3]
        assert "failed as a whole: plait.testing refused this batch" in str(failures[0])
        assert server.batches.stats().items_submitted == 8  # each row twice: call, retry

    with_server(body, refuse=True)


def test_no_file_written_holds_the_key(tmp_path: Path) -> None:
    canary = "sk-PLAIT-BATCH-CANARY-0042"
    ckpt = tmp_path / "ckpt"

    async def main() -> None:
        async with LLMServer(require_api_key=canary) as server:
            server.batches.script(delay=0.05)
            resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, api_key=canary,
                                               api_key_env="PLAIT_BATCH_CANARY_KEY",
                                               batch=FAST)
            module = TwoCalls().bind(resources=resources, progress=False, checkpoint_dir=ckpt)
            assert await module(rows(30)) == [expected(r) for r in rows(30)]

    asyncio.run(main())
    journals = list((ckpt / "batch_api").rglob("journal-*.jsonl"))
    assert {p.parent.name for p in journals} == {"fast", "smart"}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if canary.encode() in p.read_bytes()]
    os.environ.pop("PLAIT_BATCH_CANARY_KEY", None)


def test_a_wrong_key_fails_rows_without_echoing_it() -> None:
    async def main() -> dict[int, Any]:
        async with LLMServer(require_api_key="the-right-key-123") as server:
            resources = server.resource_config({"fast": "m-a", "smart": "m-b"},
                                               api_key="sk-WRONG-KEY-456789",
                                               api_key_env="PLAIT_BATCH_WRONG_KEY", batch=FAST)
            module = TwoCalls().bind(resources=resources, progress=False)
            return (await outputs_or_failures(module, rows(2)))[1]

    failures = asyncio.run(main())
    os.environ.pop("PLAIT_BATCH_WRONG_KEY", None)
    assert sorted(failures) == [0, 1]
    assert "401" in str(failures[0]) and "sk-WRONG-KEY-456789" not in str(failures[0])
    assert isinstance(failures[0].__cause__ or failures[0], LLMError)


def test_a_batch_created_but_not_journaled_is_found_by_its_tag(tmp_path: Path) -> None:
    """The kill window between OpenAI creating a batch and its id reaching the journal."""
    async def main(server: LLMServer) -> None:
        config = server.resource_config({"fast": "m-a"})["fast"]
        policy = BatchPolicy(**FAST, journal_dir=str(tmp_path))
        first = BatchClient(config, "fast", policy)

        async def crash(*_: object) -> None:
            raise RuntimeError("killed before the batch id was written")

        first.journal.record = crash  # type: ignore[method-assign]
        with pytest.raises(LLMError, match="killed before"):
            await first.complete(LLMRequest("tagged"), timeout=5)
        await first.aclose()
        second = BatchClient(config, "fast", policy)
        try:
            reply = await second.complete(LLMRequest("tagged"), timeout=5)
        finally:
            await second.aclose()
        assert reply.text == "[m-a] echo: tagged"
        stats = server.batches.stats()
        assert stats.batches_created == 1 and stats.duplicate_bodies == 0
        assert stats.requests_by_route["GET ^/v1/batches$"] == 1

    with_server(main)


CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from plait import LLMInference, Module
    from plait.testing._resources import resource_config_for

    class TwoCalls(Module):
        def __init__(self):
            super().__init__()
            self.draft = LLMInference(alias="fast")
            self.judge = LLMInference(alias="smart")

        def forward(self, text):
            return self.judge(f"Judge: {self.draft(text)}")

    async def main(url, ckpt, n, out):
        policy = {"linger": 0.5, "max_linger": 30.0, "poll_interval": 0.1}
        resources = resource_config_for(url, {"fast": "m-a", "smart": "m-b"}, "openai", None,
                                        "PLAIT_TESTING_API_KEY", {"batch": policy})
        module = TwoCalls().bind(resources=resources, checkpoint_dir=ckpt, progress=False)
        outputs = await module([f"row-{i}" for i in range(n)])
        Path(out).write_text(json.dumps(outputs))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
""")
KILL_ROWS = 10_000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_while_polling_then_rerun_pays_nothing_twice(tmp_path: Path) -> None:
    script, ckpt, out = tmp_path / "child.py", tmp_path / "ckpt", tmp_path / "out.json"
    script.write_text(CHILD)
    server = LLMServer()  # served from a thread; its emulator is read from here
    with server.run_in_thread() as handle:
        server.batches.script(delay=600.0)  # level 1 stays in progress: the kill is mid-poll
        argv = [sys.executable, str(script), handle.base_url, str(ckpt), str(KILL_ROWS),
                str(out)]
        child = subprocess.Popen(argv, stderr=subprocess.PIPE)
        try:
            _wait_for(lambda: _polls(server) >= 3, child, 240)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        at_kill = server.batches.stats()
        assert (at_kill.batches_created, at_kill.items_submitted) == (1, KILL_ROWS)
        assert not out.exists()

        server.batches.script(delay=0.2)  # the provider finishes the batch meanwhile
        rerun = subprocess.run(argv, capture_output=True, timeout=240)
        assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
        stats = server.batches.stats()

    assert json.loads(out.read_text()) == [expected(r) for r in rows(KILL_ROWS)]
    assert stats.duplicate_custom_ids == 0 and stats.duplicate_bodies == 0
    assert (stats.batches_created, stats.items_submitted) == (2, 2 * KILL_ROWS)
    assert stats.requests <= 300  # a few hundred HTTP requests for 20,000 calls


def _polls(server: LLMServer) -> int:
    by_route: dict[str, int] = server.batches.stats().requests_by_route
    return sum(n for route, n in by_route.items() if route.startswith("GET ^/v1/batches/"))


def _wait_for(ready: Callable[[], bool], child: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if child.poll() is not None:
            err = child.stderr.read().decode() if child.stderr else ""
            raise AssertionError(f"child exited early ({child.returncode}): {err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready within {seconds}s")
        time.sleep(0.05)

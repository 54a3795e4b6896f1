"""Checkpoints end to end: the local executor, the real clients and the loopback server.

What is proven: a re-run skips completed rows without a request; writes happen off the
event loop and nothing is lost; a SIGKILLed run resumes with every row exactly once and a
bounded number of repeated requests; no file written holds the API key. (Partial rows reusing
their finished nodes, and changed pipelines or inputs being refused, are in ``tests/contract/``:
every executor.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import plait.checkpoint._store as store_module
from plait import LLMInference, Module
from plait.checkpoint import CheckpointStore
from plait.errors import BatchError
from plait.execution import run
from plait.execution.checkpointing import pipeline_hash
from plait.testing import Fault, LLMServer, SpawnedServer

T = TypeVar("T")
KILL_CHILD = Path(__file__).with_name("_kill_child.py")
CANARY = "sk-PLAIT-CANARY-123"


class TwoCalls(Module):
    """Draft on ``fast`` then judge on ``smart``: two dependent requests per row."""

    def __init__(self, prompt: str = "Draft briefly.") -> None:
        super().__init__()
        self.draft = LLMInference(alias="fast", system_prompt=prompt)
        self.judge = LLMInference(alias="smart")

    def forward(self, text: str) -> str:
        return self.judge(f"Judge: {self.draft(text)}")


def expected(text: str) -> str:
    """What the loopback server's echo makes of one row (the uninterrupted result)."""
    return f"[m-b] echo: {f'Judge: [m-a] echo: {text}'[:200]}"


def with_server(body: Callable[[LLMServer], Awaitable[T]], **settings: Any) -> T:
    async def main() -> T:
        async with LLMServer(**settings) as server:
            return await asyncio.wait_for(body(server), 30)

    return asyncio.run(main())


def requests_by_model(server: LLMServer) -> dict[str, int]:
    return dict(server.stats().requests_by_model)


def test_rerun_skips_completed_rows_without_requests(tmp_path: Path) -> None:
    rows = [f"text {i}" for i in range(40)]

    async def body(server: LLMServer) -> None:
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, max_concurrent=8)
        pipeline = TwoCalls().bind(resources=resources, checkpoint_dir=tmp_path)
        first = await pipeline(rows)
        assert server.stats().total_requests == 80
        assert pipeline.last_run.resumed == 0
        second = await pipeline(rows)
        assert server.stats().total_requests == 80  # nothing was asked again
        assert pipeline.last_run.resumed == 40 and pipeline.last_run.rows == 40
        assert first == second == [expected(t) for t in rows]

    with_server(body, latency=0.005)


def test_writes_run_off_the_loop_and_nothing_is_lost(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [f"text {i}" for i in range(300)]
    writers: list[str] = []
    real_write = store_module.write_segment

    def spy(*args: Any, **kwargs: Any) -> None:
        writers.append(threading.current_thread().name)
        real_write(*args, **kwargs)

    monkeypatch.setattr(store_module, "write_segment", spy)

    async def body(server: LLMServer) -> None:
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, max_concurrent=16)
        pipeline = TwoCalls()
        await run(pipeline, rows, resources=resources, checkpoint_dir=tmp_path)
        return None

    with_server(body)
    # 900 records (2 nodes + 1 row each) at flush_every=64: several flushes during the run
    # (not only the final one), all written from worker threads, never from the loop's thread.
    assert len(writers) > 2
    assert threading.main_thread().name not in writers
    graph = TwoCalls().graph_for(1, ())
    store = CheckpointStore(tmp_path, graph_hash=pipeline_hash(TwoCalls(), graph),
                            input_fingerprint="unused", resume="force").open()
    assert store.completed_row_ids() == frozenset(range(300))
    assert {r.row_id: r.output for r in store.iter_completed_rows()} == {
        i: expected(t) for i, t in enumerate(rows)}


def test_failed_write_fails_the_run_and_loses_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [f"text {i}" for i in range(200)]
    real_write = store_module.write_segment
    calls: list[int] = []

    def first_write_fails(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_write(*args, **kwargs)

    monkeypatch.setattr(store_module, "write_segment", first_write_fails)

    async def body(server: LLMServer) -> None:
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, max_concurrent=8)
        with pytest.raises(OSError, match="No space left"):
            await run(TwoCalls(), rows, resources=resources, checkpoint_dir=tmp_path)
        assert server.stats().total_requests < 400  # the run stopped at the error
        outputs = await run(TwoCalls(), rows, resources=resources, checkpoint_dir=tmp_path)
        assert outputs == [expected(t) for t in rows]
        # The failed batch went back to the buffer and was written at close, so nothing the
        # first run finished is asked again; only requests in flight at the abort (at most
        # the 8 + 8 slots) are repeated.
        assert 400 <= server.stats().total_requests <= 400 + 16

    with_server(body)


def test_no_file_written_holds_the_api_key(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIT_CANARY_KEY", CANARY)
    checkpoints, trace = tmp_path / "ckpt", tmp_path / "trace.json"
    rows = [f"text {i}" for i in range(30)]

    async def body(server: LLMServer) -> None:
        server.configure(faults=[Fault("429", retry_after=0.01), Fault("400", match="text 7")])
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"},
                                           api_key_env="PLAIT_CANARY_KEY", max_concurrent=4)
        assert resources["fast"].api_key == CANARY  # the key really is in play
        with pytest.raises(BatchError):
            await run(TwoCalls(), rows, resources=resources, checkpoint_dir=checkpoints,
                      profile_path=trace)

    with_server(body, require_api_key=CANARY)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert trace in written and any(p.suffix == ".arrow" for p in written)
    for path in written:
        data = path.read_bytes()
        assert CANARY.encode() not in data and b"PLAIT-CANARY" not in data, path


# -- the kill test -------------------------------------------------------------------------

KILL_ROWS = 2000
KILL_INFLIGHT = 16
CALLS_PER_ROW = 2
FLUSH_EVERY = 64  # CheckpointStore's default


def test_sigkill_mid_run_resumes_every_row_once(tmp_path: Path) -> None:
    """SIGKILL a run at about half its requests; the re-run completes it.

    Bound on repeated requests: what the killed process had sent but not committed. That is
    (a) requests in flight, at most ``max_inflight x calls per row`` (32), plus (b) finished
    node records not yet on disk: the buffer below ``flush_every`` and the one batch being
    written, each at most ``flush_every`` while writes keep up (2 x 64). Total: 160.
    """
    needed = KILL_ROWS * CALLS_PER_ROW
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.json"
    with SpawnedServer(settings={"latency": 0.02}) as server:
        child = _start_child(server, ckpt, out)
        try:
            _wait_for(lambda: server.stats().total_requests >= needed // 2, child, 60)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        at_kill = server.stats().total_requests
        assert not out.exists() and at_kill < needed, "the child finished before the kill"
        rerun = _start_child(server, ckpt, out)
        try:
            # Generous bounds for a loaded shared box; the whole test takes ~8 s on a quiet one.
            assert rerun.wait(60) == 0
        finally:
            if rerun.poll() is None:
                rerun.kill()
                rerun.wait(10)
        total = server.stats().total_requests
    result = json.loads(out.read_text())
    assert result["outputs"] == [expected(f"row-{i}") for i in range(KILL_ROWS)]
    assert result["rows"] == KILL_ROWS and 0 < result["resumed"] < KILL_ROWS
    repeated = total - needed
    bound = KILL_INFLIGHT * CALLS_PER_ROW + 2 * FLUSH_EVERY
    print(f"\nkill test: {at_kill} requests before SIGKILL, {total} in all for {needed} "
          f"needed; repeated {repeated} (bound {bound}); resumed {result['resumed']} rows")
    assert 0 <= repeated <= bound


def _start_child(server: SpawnedServer, ckpt: Path, out: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(KILL_CHILD), server.base_url, str(ckpt), str(KILL_ROWS),
            str(KILL_INFLIGHT), str(out)]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL)


def _wait_for(condition: Callable[[], bool], child: subprocess.Popen[bytes],
              timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert child.poll() is None, f"the child exited early with code {child.returncode}"
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.01)

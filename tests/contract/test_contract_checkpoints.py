"""Checkpoints: partial rows resume from their finished nodes, changes are refused, on every
executor.

Moved here from ``tests/integration/test_checkpoint_resume.py`` (they ran on the local
executor only); each test now takes the ``executor`` fixture (``local`` and ``ray``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from plait import LLMInference, Module
from plait.errors import BatchError, CheckpointError
from plait.execution import ExecutionSettings, run
from plait.testing import Fault, LLMServer

T = TypeVar("T")


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
            return await asyncio.wait_for(body(server), 60)

    return asyncio.run(main())


def test_rows_with_completed_nodes_reuse_them(executor: str, tmp_path: Path) -> None:
    rows = [f"bad {i}" if i % 4 == 0 else f"good {i}" for i in range(20)]
    bad = sum(1 for t in rows if t.startswith("bad"))

    async def body(server: LLMServer) -> None:
        # The judge call of every "bad" row fails (400 is not retried): those rows end with
        # their draft node done and recorded, but no row output.
        server.configure(faults=[Fault("400", model="m-b", match="bad", every=1)])
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, max_concurrent=4)
        with pytest.raises(BatchError) as info:
            await run(TwoCalls(), rows, resources=resources, checkpoint_dir=tmp_path,
                      executor=executor)
        assert len(info.value.failures) == bad
        server.configure(faults=[])
        server.reset_stats()
        outputs = await run(TwoCalls(), rows, resources=resources, checkpoint_dir=tmp_path,
                            executor=executor)
        assert outputs == [expected(t) for t in rows]
        # Only the failed judge calls were sent again; no draft was repeated.
        assert dict(server.stats().requests_by_model) == {"m-b": bad}

    with_server(body)


def test_a_single_call_resumes_from_its_finished_node(executor: str, tmp_path: Path) -> None:
    async def body(server: LLMServer) -> None:
        server.configure(faults=[Fault("400", model="m-b", every=1)])
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"})
        pipeline = TwoCalls().bind(resources=resources, checkpoint_dir=tmp_path,
                                   executor=executor)
        with pytest.raises(Exception, match="400"):
            await pipeline("one")
        server.configure(faults=[])
        server.reset_stats()
        assert await pipeline("one") == expected("one")
        assert dict(server.stats().requests_by_model) == {"m-b": 1}

    with_server(body)


def test_changed_pipeline_or_inputs_is_refused_then_force_and_fresh(executor: str,
                                                                    tmp_path: Path) -> None:
    rows = [f"text {i}" for i in range(10)]

    async def body(server: LLMServer) -> None:
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, max_concurrent=4)
        async with ExecutionSettings(resources=resources, checkpoint_dir=tmp_path,
                                     executor=executor):
            await TwoCalls()(rows)
            with pytest.raises(CheckpointError, match=r"pipeline changed.*resume='force'"):
                await TwoCalls(prompt="Draft at length.")(rows)
            with pytest.raises(CheckpointError, match="resume='fresh'"):
                await TwoCalls()([*rows, "one more"])
            server.reset_stats()
            # force: keep the completed rows (no request) and adopt the new pipeline.
            changed = TwoCalls(prompt="Draft at length.")
            await run(changed, rows, resume="force")
            assert server.stats().total_requests == 0
            await changed(rows)  # now matches with resume="auto"
            assert server.stats().total_requests == 0
            # fresh: the old records are deleted and every row runs again.
            outputs = await run(changed, rows, resume="fresh")
            assert server.stats().total_requests == 20
            assert outputs == [expected(t) for t in rows]

    with_server(body)

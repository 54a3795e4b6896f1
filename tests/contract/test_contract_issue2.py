"""Scheduling, retry and error behaviour that must hold on EVERY executor.

Written once against the ``executor`` fixture (params ``local`` and ``ray``, from
``tests/contract/conftest.py``); the value is passed as the ``executor=`` setting. Each test
starts its own loopback server on the test's loop, so Ray workers reach it over loopback too.
Every wait is bounded by ``arun``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from plait import BatchResult, ExecutionSettings, LLMInference, Module, NodeExecutionError
from plait.errors import APITimeoutError, BadRequestError, ServerError
from plait.testing import ChatRequest, Fault, LLMServer


def arun(coro: Any, timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Answer(BaseModel):
    verdict: str
    score: int


class Two(Module):
    """Two dependent calls per row: enough graph for ordering and error attribution."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="fast")
        self.judge = LLMInference(alias="judge")

    def forward(self, text: str) -> Any:
        return self.judge(f"judge: {self.draft(text)}")


class Structured(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", response_format=Answer)

    def forward(self, text: str) -> Any:
        answer = self.llm(text)
        return {"verdict": answer.verdict, "score": answer.score, "whole": answer}


async def slow_when_asked(request: ChatRequest) -> str:
    """Server-side responder: rows mentioning "slow" answer late (order tests)."""
    if "slow" in request.user_text:
        await asyncio.sleep(0.3)
    return f"ok: {request.user_text}"


def expected(text: str) -> str:
    return f"ok: judge: ok: {text}"


async def wait_until(predicate: Any, seconds: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``seconds`` (no timing assertions)."""
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.02)


def test_batch_outputs_keep_input_order(executor: Any) -> None:
    async def main() -> list[Any]:
        async with LLMServer(responder=slow_when_asked) as server:
            res = server.resource_config({"fast": "m", "judge": "j"})
            pipeline = Two().bind(resources=res, executor=executor)
            return await pipeline(["slow 0", "b", "slow 2", "d", "e"])

    rows = ["slow 0", "b", "slow 2", "d", "e"]
    assert arun(main()) == [expected(r) for r in rows]


def test_streaming_yields_batch_results_with_errors(executor: Any) -> None:
    async def main() -> tuple[list[BatchResult], list[BatchResult]]:
        faults = [Fault("400", match="bad", every=1)]
        async with LLMServer(responder=slow_when_asked, faults=faults) as server:
            res = server.resource_config({"fast": "m", "judge": "j"})
            rows = ["slow a", "bad b", "c"]
            async with ExecutionSettings(resources=res, executor=executor, streaming=True):
                pipeline = Two()
                streamed = [r async for r in pipeline(rows)]
                async with ExecutionSettings(preserve_order=True):
                    ordered = [r async for r in pipeline(rows)]
            return streamed, ordered

    streamed, ordered = arun(main())
    by_index = {r.index: r for r in streamed}
    assert sorted(by_index) == [0, 1, 2] and len(streamed) == 3
    assert by_index[0].ok and by_index[0].output == expected("slow a")
    assert by_index[0].input == "slow a"
    bad = by_index[1]
    assert not bad.ok and bad.output is None and isinstance(bad.error, NodeExecutionError)
    assert bad.error.status == 400 and bad.error.node_id == "draft"
    assert [r.index for r in ordered] == [0, 1, 2]
    assert [r.ok for r in ordered] == [True, False, True]


def test_server_errors_are_retried(executor: Any) -> None:
    async def main() -> tuple[Any, Any]:
        async with LLMServer(faults=[Fault("500", model="m", times=2)]) as server:
            res = server.resource_config({"fast": "m", "judge": "j"}, max_retries=3)
            out = await Two().bind(resources=res, executor=executor)("x")
            return out, server.stats()

    out, stats = arun(main())
    assert out == "[j] echo: judge: [m] echo: x"
    assert stats.server_errors == 2
    assert stats.requests_by_model == {"m": 3, "j": 1}


def test_server_errors_exhaust_max_retries_and_are_reported(executor: Any) -> None:
    async def main() -> tuple[NodeExecutionError, Any]:
        async with LLMServer(faults=[Fault("500", model="j", every=1)]) as server:
            res = server.resource_config({"fast": "m", "judge": "j"}, max_retries=1)
            with pytest.raises(NodeExecutionError) as info:
                await Two().bind(resources=res, executor=executor)("x")
            return info.value, server.stats()

    err, stats = arun(main())
    assert isinstance(err.cause, ServerError) and err.status == 500
    assert err.node_id == "judge" and err.alias == "judge"
    assert "max_retries=1" in str(err)
    assert stats.requests_by_model["j"] == 2


def test_bad_requests_are_not_retried_and_are_reported(executor: Any) -> None:
    async def main() -> tuple[NodeExecutionError, Any]:
        async with LLMServer(faults=[Fault("400", model="j")]) as server:
            res = server.resource_config({"fast": "m", "judge": "j"}, max_retries=5)
            with pytest.raises(NodeExecutionError) as info:
                await Two().bind(resources=res, executor=executor)("x")
            return info.value, server.stats()

    err, stats = arun(main())
    assert isinstance(err.cause, BadRequestError)
    assert (err.status, err.node_id, err.alias) == (400, "judge", "judge")
    assert "alias='judge'" in str(err) and "400" in str(err)
    assert stats.requests_by_model == {"m": 1, "j": 1}


def test_a_hung_request_times_out_then_retries(executor: Any) -> None:
    async def main() -> tuple[NodeExecutionError, str, int]:
        async with LLMServer(faults=[Fault("hang", hang_seconds=20, every=1, times=2)]) as s:
            res = s.resource_config({"fast": "m", "judge": "j"}, timeout=0.3, max_retries=0)
            with pytest.raises(NodeExecutionError) as info:
                await Two().bind(resources=res, executor=executor)("x")
            # The second hang is the only one left: one retry gets past it.
            res = s.resource_config({"fast": "m", "judge": "j"}, timeout=0.3, max_retries=1)
            out = await Two().bind(resources=res, executor=executor)("y")
            return info.value, out, s.stats().total_requests

    err, out, total = arun(main())
    assert isinstance(err.cause, APITimeoutError) and err.node_id == "draft"
    assert out == "[j] echo: judge: [m] echo: y"
    assert total == 4


def test_structured_output(executor: Any) -> None:
    async def main() -> list[Any]:
        async with LLMServer() as server:
            res = server.resource_config({"fast": "m"})
            return await Structured().bind(resources=res, executor=executor)(["a", "b"])

    outputs = arun(main())
    for out in outputs:
        assert isinstance(out["whole"], Answer)
        assert out["verdict"] == out["whole"].verdict and out["score"] == out["whole"].score


def _new_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    # The loopback server's handlers of idle keep-alive connections are not leaks: plait keeps
    # its connections warm across calls on the same loop.
    return {t for t in asyncio.all_tasks() - before
            if "RequestHandler.start" not in repr(t.get_coro())}


def test_breaking_out_of_a_stream_cancels_pending_work(executor: Any) -> None:
    async def main() -> tuple[int, int, set[asyncio.Task[Any]]]:
        faults = [Fault("hang", match="slow", every=1, hang_seconds=30)]
        async with LLMServer(faults=faults) as server:
            res = server.resource_config({"fast": "m", "judge": "j"})
            pipeline = Two().bind(resources=res, executor=executor)
            rows = ["fast row"] + [f"slow {i}" for i in range(8)]
            first = None
            before = asyncio.all_tasks()  # this test's own tasks (runner, wait_for)
            async for result in pipeline(rows):
                first = result
                # Every slow row's first request is hanging at the server when we break.
                await wait_until(lambda: server.stats().in_flight == 8)
                break
            assert first is not None and first.ok and first.index == 0
            await wait_until(lambda: server.stats().in_flight == 0)
            await wait_until(lambda: not _new_tasks(before))
            stats = server.stats()
            return stats.in_flight, stats.total_requests, _new_tasks(before)

    in_flight, total, leaked = arun(main())
    assert in_flight == 0 and not leaked
    assert total == 10  # 2 for the fast row, 1 per hung row: abandoned, not retried

"""Errors, retries, limits and streaming settings: the same tests for every executor.

Moved here from ``tests/integration/test_pipelines.py`` (they ran on the local executor only);
each test now takes the ``executor`` fixture (``local`` and ``ray``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from plait import BatchError, LLMInference, Module, NodeExecutionError
from plait.errors import BadRequestError
from plait.execution import run
from plait.testing import ChatRequest, Fault, LLMServer


def arun(coro: Any, timeout: float = 60.0) -> Any:
    """Run ``coro`` on a fresh loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class TwoStep(Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = LLMInference(alias="fast")
        self.judge = LLMInference(alias="judge")

    def forward(self, text: str) -> Any:
        return self.judge(f"judge: {self.first(text)}")


class One(Module):
    def __init__(self, alias: str = "fast") -> None:
        super().__init__()
        self.llm = LLMInference(alias=alias, system_prompt="sys")

    def forward(self, text: str) -> Any:
        return self.llm(text)


class Fan(Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = LLMInference(alias="a")
        self.b = LLMInference(alias="b")

    def forward(self, text: str) -> Any:
        return [self.a(text), self.b(text), self.a(text + "!"), self.b(text + "!")]


def test_a_failed_single_call_names_node_alias_status_and_cause(executor: str) -> None:
    async def main() -> tuple[Any, NodeExecutionError]:
        async with LLMServer(faults=[Fault("400", model="judge-model")]) as server:
            res = server.resource_config({"fast": "m", "judge": "judge-model"})
            pipeline = TwoStep().bind(resources=res, executor=executor)
            with pytest.raises(NodeExecutionError) as info:
                await pipeline("x")
            return server.stats(), info.value

    stats, err = arun(main())
    assert err.node_id == "judge" and err.alias == "judge" and err.status == 400
    assert isinstance(err.cause, BadRequestError)
    msg = str(err)
    assert "'judge'" in msg and "alias='judge'" in msg and "400" in msg
    assert "test_contract_behaviour.py:" in msg
    assert stats.requests_by_model == {"m": 1, "judge-model": 1}  # 400: no retry


def test_a_batch_raises_batch_error_with_every_failure_and_the_outputs(executor: str) -> None:
    async def main() -> BatchError:
        faults = [Fault("400", match="bad", times=None, every=1)]
        async with LLMServer(faults=faults) as server:
            res = server.resource_config({"fast": "m", "judge": "m"})
            pipeline = TwoStep().bind(resources=res, executor=executor)
            with pytest.raises(BatchError) as info:
                await pipeline(["ok 0", "bad 1", "ok 2", "bad 3"])
            return info.value

    err = arun(main())
    assert sorted(err.failures) == [1, 3]
    assert all(isinstance(e, NodeExecutionError) and e.status == 400
               for e in err.failures.values())
    assert err.outputs[0] == "[m] echo: judge: [m] echo: ok 0"
    assert err.outputs[2] == "[m] echo: judge: [m] echo: ok 2"
    assert err.outputs[1] is None and err.outputs[3] is None
    assert "2 of 4 rows failed" in str(err) and "row 1" in str(err)


def test_429_storm_is_survived_and_concurrency_is_held(executor: str) -> None:
    async def main() -> tuple[Any, list[Any]]:
        faults = [Fault("429", every=2, times=12, retry_after=0.05)]
        async with LLMServer(latency=0.05, faults=faults) as server:
            res = server.resource_config({"fast": "m"}, max_concurrent=3)
            pipeline = One().bind(resources=res, executor=executor)
            outputs = await pipeline([f"row {i}" for i in range(20)])
            return server.stats(), outputs

    stats, outputs = arun(main())
    assert outputs == [f"[m] echo: row {i}" for i in range(20)]
    assert stats.rate_limited == 12
    assert stats.responses_ok == 20
    assert stats.max_in_flight <= 3


def test_max_concurrent_caps_requests_across_endpoints(executor: str) -> None:
    async def main() -> tuple[int, int]:
        async with LLMServer(latency=0.1) as server:
            res = server.resource_config({"a": "ma", "b": "mb"}, max_concurrent=10)
            rows = [f"r{i}" for i in range(4)]
            await Fan().bind(resources=res, executor=executor)(rows)
            uncapped = server.stats().max_in_flight
            server.reset_stats()
            await Fan().bind(resources=res, executor=executor, max_concurrent=2)(rows)
            return uncapped, server.stats().max_in_flight

    uncapped, capped = arun(main())
    assert uncapped > 2
    assert capped == 2


async def _slow_first(request: ChatRequest) -> str:
    if "slow" in request.user_text:
        await asyncio.sleep(0.3)
    return f"echo: {request.user_text}"


def test_preserve_order_setting_orders_the_stream(executor: str) -> None:
    async def main() -> tuple[list[int], list[int]]:
        async with LLMServer(responder=_slow_first) as server:
            res = server.resource_config({"fast": "m"})
            rows = ["slow", "b", "c"]
            pipeline = One().bind(resources=res, streaming=True, executor=executor)
            completion = [r.index async for r in pipeline(rows)]
            ordered = [r.index async for r in run(pipeline, rows, preserve_order=True)]
            return completion, ordered

    completion, ordered = arun(main())
    assert completion[-1] == 0  # unordered: the slow row comes last
    assert ordered == [0, 1, 2]


def test_on_progress_reports_done_and_total(executor: str) -> None:
    seen: list[tuple[int, int | None]] = []

    async def main() -> None:
        async with LLMServer() as server:
            res = server.resource_config({"fast": "m"})
            pipeline = One().bind(resources=res, executor=executor,
                                  on_progress=lambda d, t: seen.append((d, t)))
            await pipeline(["a", "b", "c"])

    arun(main())
    assert seen == [(1, 3), (2, 3), (3, 3)]

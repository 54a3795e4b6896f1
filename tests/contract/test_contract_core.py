"""Scheduling, errors, retries and checkpoints: the same tests for every executor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from plait import LLMInference, Module
from plait.errors import BadRequestError, BatchError, NodeExecutionError
from plait.execution.call import run
from plait.execution.results import BatchResult
from plait.testing import Fault


def wait(call: Any) -> Any:
    """Await a pipeline call from a sync test."""

    async def main() -> Any:
        return await call

    return asyncio.run(main())


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.ask = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.ask(f"q: {text}")


class Branches(Module):
    """Two independent calls, then one that joins them."""

    def __init__(self) -> None:
        super().__init__()
        self.left = LLMInference(alias="fast")
        self.right = LLMInference(alias="fast")

    def forward(self, text: str) -> dict[str, Any]:
        return {"left": self.left(f"L {text}"), "right": self.right(f"R {text}")}


def test_single_call_output(executor: str, make_resources: Any) -> None:
    pipeline = Echo().bind(resources=make_resources(), executor=executor)
    assert wait(pipeline("hello")) == "[m] echo: q: hello"


def test_batch_preserves_order(executor: str, make_resources: Any, llm_server: Any) -> None:
    llm_server.configure(latency=0.01, latency_jitter=0.02)
    pipeline = Echo().bind(resources=make_resources(), executor=executor)
    outputs = wait(pipeline([f"row {i}" for i in range(40)]))
    assert outputs == [f"[m] echo: q: row {i}" for i in range(40)]


def test_independent_calls_overlap(executor: str, make_resources: Any, llm_server: Any) -> None:
    llm_server.configure(latency=0.5)
    pipeline = Branches().bind(resources=make_resources(), executor=executor)
    # A cold Ray may start the second branch's worker process only after the first branch
    # ended; once two processes are warm the branches must overlap. Bounded attempts.
    for _ in range(5):
        llm_server.reset_stats()
        out = wait(pipeline("x"))
        assert out == {"left": "[m] echo: L x", "right": "[m] echo: R x"}
        if llm_server.stats().max_in_flight >= 2:
            break
    assert llm_server.stats().max_in_flight >= 2


def test_endpoint_max_concurrent_holds_for_a_batch(executor: str, make_resources: Any,
                                                   llm_server: Any) -> None:
    llm_server.configure(latency=0.02)
    pipeline = Branches().bind(resources=make_resources(max_concurrent=3), executor=executor)
    outputs = wait(pipeline([str(i) for i in range(30)]))
    assert len(outputs) == 30
    stats = llm_server.stats()
    assert stats.total_requests == 60
    assert stats.max_in_flight <= 3


def test_streaming_yields_every_row_with_errors(executor: str, make_resources: Any,
                                                llm_server: Any) -> None:
    llm_server.add_faults(Fault("400", match="bad", times=None, every=1))
    rows = ["ok 0", "bad 1", "ok 2", "bad 3", "ok 4"]

    async def collect() -> list[BatchResult]:
        return [r async for r in run(Echo(), rows, resources=make_resources(),
                                     executor=executor)]

    results = sorted(asyncio.run(collect()), key=lambda r: r.index)
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert results[2].output == "[m] echo: q: ok 2" and results[2].input == "ok 2"
    error = results[1].error
    assert isinstance(error, NodeExecutionError) and error.status == 400


def test_server_error_is_retried_then_succeeds(executor: str, make_resources: Any,
                                               llm_server: Any) -> None:
    llm_server.add_faults(Fault("500"))
    pipeline = Echo().bind(resources=make_resources(), executor=executor)
    assert wait(pipeline("again")) == "[m] echo: q: again"
    assert llm_server.stats().total_requests == 2


def test_bad_request_is_not_retried_and_names_the_node(executor: str, make_resources: Any,
                                                       llm_server: Any) -> None:
    llm_server.add_faults(Fault("400"))
    pipeline = Echo().bind(resources=make_resources(), executor=executor)
    with pytest.raises(NodeExecutionError) as info:
        wait(pipeline("x"))
    err = info.value
    assert (err.node_id, err.alias, err.status, err.module_path) == ("ask", "fast", 400, "ask")
    assert isinstance(err.cause, BadRequestError) and err.cause.status == 400
    assert "test_contract_core.py" in err.source
    assert llm_server.stats().total_requests == 1


def test_batch_error_carries_failures_and_outputs(executor: str, make_resources: Any,
                                                  llm_server: Any) -> None:
    llm_server.add_faults(Fault("400", match="bad", every=1))
    pipeline = Echo().bind(resources=make_resources(), executor=executor)
    with pytest.raises(BatchError) as info:
        wait(pipeline(["a", "bad", "c"]))
    assert sorted(info.value.failures) == [1]
    assert isinstance(info.value.failures[1], NodeExecutionError)
    assert info.value.outputs == ["[m] echo: q: a", None, "[m] echo: q: c"]


def test_checkpoint_resume_skips_completed_rows(executor: str, make_resources: Any,
                                                llm_server: Any, tmp_path: Path) -> None:
    rows = [f"row {i}" for i in range(12)]
    resources = make_resources()
    first = wait(run(Echo(), rows, resources=resources, executor=executor,
                            checkpoint_dir=tmp_path))
    assert llm_server.stats().total_requests == 12
    llm_server.reset_stats()
    second = wait(run(Echo(), rows, resources=resources, executor=executor,
                             checkpoint_dir=tmp_path))
    assert second == first
    assert llm_server.stats().total_requests == 0

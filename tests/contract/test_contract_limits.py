"""Concurrency caps hold exactly on every executor (the loopback server counts in flight)."""

from __future__ import annotations

import asyncio
from typing import Any

from plait import LLMInference, Module
from plait.execution.call import run


def wait(call: Any) -> Any:
    """Await a pipeline call from a sync test."""

    async def main() -> Any:
        return await call

    return asyncio.run(main())


class Wide(Module):
    """Three independent calls on two endpoints per row."""

    def __init__(self) -> None:
        super().__init__()
        self.a = LLMInference(alias="fast")
        self.b = LLMInference(alias="fast")
        self.c = LLMInference(alias="slow")

    def forward(self, text: str) -> str:
        return f"{self.a('a ' + text)}|{self.b('b ' + text)}|{self.c('c ' + text)}"


def _options(executor: str, workers: int) -> dict[str, Any]:
    # More workers than the cap: a cap split per worker (floor 1) would be exceeded.
    return {"workers": workers, "rows_per_chunk": 1} if executor == "ray" else {}


def test_global_max_concurrent_holds_for_a_batch(executor: str, make_resources: Any,
                                                 llm_server: Any) -> None:
    llm_server.configure(latency=0.05)
    resources = make_resources({"fast": "m", "slow": "s"})
    rows = [str(i) for i in range(16)]
    outputs = wait(run(Wide(), rows, resources=resources, executor=executor,
                       max_concurrent=2, executor_options=_options(executor, 3)))
    assert len(outputs) == len(rows)
    stats = llm_server.stats()
    assert stats.total_requests == 3 * len(rows)
    assert 1 <= stats.max_in_flight <= 2


def test_global_max_concurrent_holds_for_a_single_call(executor: str, make_resources: Any,
                                                       llm_server: Any) -> None:
    llm_server.configure(latency=0.05)
    resources = make_resources({"fast": "m", "slow": "s"})
    out = wait(run(Wide(), "x", resources=resources, executor=executor, max_concurrent=1))
    assert out == "[m] echo: a x|[m] echo: b x|[s] echo: c x"
    assert llm_server.stats().max_in_flight == 1


def test_endpoint_caps_hold_together_with_the_global_cap(executor: str, make_resources: Any,
                                                         llm_server: Any) -> None:
    llm_server.configure(latency=0.05)
    resources = make_resources({"fast": "m", "slow": "s"}, max_concurrent=1)
    rows = [str(i) for i in range(8)]
    wait(run(Wide(), rows, resources=resources, executor=executor, max_concurrent=3,
             executor_options=_options(executor, 3)))
    stats = llm_server.stats()
    assert stats.max_in_flight_by_model == {"m": 1, "s": 1}
    assert stats.max_in_flight <= 2

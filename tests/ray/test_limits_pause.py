"""429s with a whole-second hint or none do not pause a Ray worker a full second each.

Such a hint is only an upper bound (a token bucket rounds a 10 ms wait up to 1 s). The
local limiter learns a short probe pause; Ray workers used to pause for the whole hint (or
1 s without one) on every 429, so a Ray run against an Anthropic-style or hint-less server
ran ~8x slower than the server's rate. Each worker now pauses briefly and takes the pause
the cluster's limiter learned from ``LeaseGrant.pause_for``. Workers report the seconds they
spent paused (``paused_s`` in the endpoint stats), so the test counts pauses, not wall time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from plait import LLMInference, Module
from plait.execution.call import run
from plait.testing import LLMServer
from plait.testing._resources import DEFAULT_KEY, DEFAULT_KEY_ENV
from plait_ray import shutdown_workers

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROWS = 80
RATE = 40.0  # requests/s the server accepts


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ.setdefault(DEFAULT_KEY_ENV, DEFAULT_KEY)
    here = Path(__file__).resolve().parent
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(here), str(here.parent.parent)])}})
    yield
    shutdown_workers()
    ray.shutdown()


@pytest.mark.parametrize("hint", ["seconds", "none"])
def test_coarse_or_missing_hints_pause_workers_briefly(local_ray: None, hint: str) -> None:
    async def main() -> tuple[list[Any], dict[str, Any], Any]:
        async with LLMServer(rate_limit=RATE, rate_burst=4, latency=0.01,
                             retry_hint=hint) as server:
            # No rate configured: the cluster must find the server's rate from its 429s.
            resources = server.resource_config({"fast": "m"}, max_concurrent=8)
            pipeline = Echo()
            outputs = await run(pipeline, [f"r{i}" for i in range(ROWS)],
                                resources=resources, executor="ray",
                                executor_options={"workers": 2, "rows_per_chunk": 4,
                                                  "limits_namespace": f"plait-pause-{hint}"})
            return outputs, pipeline.last_run.endpoints["fast"], server.stats()

    outputs, endpoint, stats = asyncio.run(main())
    assert outputs == [f"[m] echo: Say: r{i}" for i in range(ROWS)]  # 0 failed rows
    assert stats.responses_ok == ROWS
    assert stats.rate_limited >= 4, stats  # the server did refuse: pauses were needed
    assert endpoint["rate_limited"] == stats.rate_limited
    paused, refused = float(endpoint["paused_s"]), stats.rate_limited
    # Pausing the whole hint (old code) gave 8.0 s for 21 429s here (0.38 s per 429;
    # overlapping pauses count once); learned pauses gave 0.25 s for 38 (7 ms per 429).
    assert paused <= 0.1 * refused, (paused, refused)

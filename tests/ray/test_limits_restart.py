"""A limiter actor killed mid-run (Ray restarts it): the endpoint's cap still holds.

Before fencing, the restarted limiter started with every slot free, so the first worker to
sync was handed slots other workers were still using: the loopback server saw 6-7 requests
in flight against a cap of 4 in every trial. The restarted limiter now grants only slots
their holders name until every old lease has expired.
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
from plait_ray.limits import actor_name

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CAP = 4
NAMESPACE = "plait-test-restart"


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


async def _kill_limiter_while_busy(server: LLMServer, kills: int) -> int:
    """Kill the limiter (Ray restarts it) each time the cap is in full use."""
    done = 0
    async with asyncio.timeout(60):
        while done < kills:
            await asyncio.sleep(0.02)
            if server.stats().in_flight < CAP:
                continue
            ray.kill(ray.get_actor(actor_name("fast"), namespace=NAMESPACE), no_restart=False)
            done += 1
            await asyncio.sleep(1.0)  # let the restart happen and the workers re-sync
    return done


def test_restarted_limiter_never_lets_the_cluster_over_its_cap(local_ray: None) -> None:
    async def main() -> tuple[list[Any], int, Any]:
        async with LLMServer(latency=0.1) as server:
            resources = server.resource_config({"fast": "m"}, max_concurrent=CAP)
            rows = [f"r{i}" for i in range(160)]
            options = {"workers": 4, "rows_per_chunk": 2, "limits_namespace": NAMESPACE}
            # Warm up: workers and the limiter exist before the measured call.
            await run(Echo(), rows[:8], resources=resources, executor="ray",
                      executor_options=options)
            server.reset_stats()
            call = asyncio.ensure_future(run(Echo(), rows, resources=resources,
                                             executor="ray", executor_options=options))
            kills = await _kill_limiter_while_busy(server, 2)
            outputs = await asyncio.wait_for(call, 90)
            return outputs, kills, server.stats()

    outputs, kills, stats = asyncio.run(main())
    assert kills == 2
    assert outputs == [f"[m] echo: Say: r{i}" for i in range(160)]
    assert stats.max_in_flight <= CAP, stats

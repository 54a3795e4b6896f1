"""The node holding a limiter actor is removed mid-run: Ray restarts the limiter elsewhere and
the endpoint's cap still holds (the restarted limiter fences the old leases' slots).

A ``ray.cluster_utils.Cluster``: the head runs the driver and the row workers; a second node
with no CPUs (row workers cannot go there) holds only the ``fast`` limiter, placed there by
creating it first under its well-known name with a soft node affinity (the executor then
finds it by name). Removing that node while every slot is in use restarts the limiter on
the head. (On this box the kill in ``test_limits_restart.py`` reproduced the overshoot before
the fence; the node loss did not, its outage outlasting the requests in flight. It is kept
to cover the other way a limiter restarts.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from plait import LLMInference, Module
from plait.execution.call import run
from plait.testing import LLMServer
from plait.testing._resources import DEFAULT_KEY, DEFAULT_KEY_ENV
from plait_ray import shutdown_workers
from plait_ray.limits import EndpointLimiterActor, LimiterLimits, actor_name

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

CAP = 4
NAMESPACE = "plait-test-node-loss"
HEALTH = {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
          "health_check_failure_threshold": 3}


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, Any]]:
    os.environ.setdefault(DEFAULT_KEY_ENV, DEFAULT_KEY)
    here = Path(__file__).resolve().parent
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "_system_config": HEALTH})
    node = cluster.add_node(num_cpus=0)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {
        "PYTHONPATH": os.pathsep.join([str(here), str(here.parent.parent)])}})
    try:
        yield cluster, node
    finally:
        shutdown_workers()
        ray.shutdown()
        cluster.shutdown()


def _place_limiter_on(node: Any) -> Any:
    remote: Any = ray.remote(EndpointLimiterActor)
    node_id = next(n["NodeID"] for n in ray.nodes()
                   if n["Alive"] and n["NodeManagerPort"] == node.node_manager_port)
    return remote.options(
        name=actor_name("fast"), namespace=NAMESPACE, max_restarts=-1, max_task_retries=-1,
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=True),
    ).remote("fast", LimiterLimits(CAP, None, None))


def test_limiter_node_removed_mid_run_keeps_the_cap(cluster: tuple[Cluster, Any]) -> None:
    ray_cluster, node = cluster
    limiter = _place_limiter_on(node)
    ray.get(limiter.stats.remote(), timeout=60)

    async def main() -> tuple[list[Any], Any]:
        # Long requests: slots are still in use when the restarted limiter answers.
        async with LLMServer(latency=1.0) as server:
            resources = server.resource_config({"fast": "m"}, max_concurrent=CAP)
            rows = [f"r{i}" for i in range(24)]
            options = {"workers": 4, "rows_per_chunk": 2, "limits_namespace": NAMESPACE}
            server.configure(latency=0.05)
            await run(Echo(), rows[:8], resources=resources, executor="ray",
                      executor_options=options)
            server.configure(latency=1.0)
            server.reset_stats()
            call = asyncio.ensure_future(run(Echo(), rows, resources=resources,
                                             executor="ray", executor_options=options))
            async with asyncio.timeout(60):
                while server.stats().in_flight < CAP:
                    await asyncio.sleep(0.02)
            ray_cluster.remove_node(node)
            outputs = await asyncio.wait_for(call, 120)
            return outputs, server.stats()

    outputs, stats = asyncio.run(main())
    assert outputs == [f"[m] echo: Say: r{i}" for i in range(24)]
    assert stats.max_in_flight <= CAP, stats

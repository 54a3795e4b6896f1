"""A single call on Ray reuses one runtime (HTTP session, limiter lease) per worker.

Each LLM node used to build a fresh runtime in its task: a new HTTP session and a new lease
on the endpoint's limiter per call. The limiter actor counts the leases it opened, which is
a cross-process count of the runtimes that were built.
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

NAMESPACE = "plait-test-single-call"
STEPS = 6


class Chain(Module):
    """Six dependent LLM calls."""

    def __init__(self) -> None:
        super().__init__()
        for i in range(STEPS):
            setattr(self, f"step{i}", LLMInference(alias="fast"))

    def forward(self, text: str) -> Any:
        value = text
        for i in range(STEPS):
            value = getattr(self, f"step{i}")(f"{i}: {value}")
        return value


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


def _leases() -> int:
    limiter = ray.get_actor(actor_name("fast"), namespace=NAMESPACE)
    return int(ray.get(limiter.stats.remote(), timeout=30)["leases_created"])


def test_one_runtime_per_worker_not_per_llm_node(local_ray: None) -> None:
    async def main() -> tuple[Any, int, int]:
        async with LLMServer() as server:
            resources = server.resource_config({"fast": "m"}, max_concurrent=2)
            options = {"limits_namespace": NAMESPACE, "workers": 2}
            await run(Chain(), "warm", resources=resources, executor="ray",
                      executor_options=options)
            before = _leases()
            out = await run(Chain(), "x", resources=resources, executor="ray",
                            executor_options=options)
            return out, _leases() - before, server.stats().total_requests

    out, leases, requests = asyncio.run(main())
    assert out.startswith("[m] echo: 5: [m] echo: 4:") and out.endswith("0: x")
    assert requests == 2 * STEPS
    assert 1 <= leases <= 2  # one per worker used, not one per LLM node (6)

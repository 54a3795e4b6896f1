"""Local-model replica actors on a two-node Ray cluster with fake GPUs.

The head declares no GPU, the worker node two; compute stays on CPU (``device="cpu"``),
but placement and pinning are Ray's real ones: each replica lands on the GPU node and sees
its own ``ray.get_gpu_ids()`` / ``CUDA_VISIBLE_DEVICES``. Every test kills its replicas.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray import cloudpickle
from ray.cluster_utils import Cluster

from plait import LLMInference, Module
from plait.clients.base import LLMRequest, LLMResponse
from plait.errors import ServerError
from plait.local_models import TorchEndpointConfig
from plait.resources.config import ResourceConfig
from plait.resources.manager import ResourceManager
from plait.testing import LLMServer
from plait.testing._resources import DEFAULT_KEY, DEFAULT_KEY_ENV
from plait_ray.replica_client import RayReplicaClient, replica_client_factory
from plait_ray.replicas import (
    ReplicaPool,
    ReplicaUnavailableError,
    ensure_replica_pools,
    replica_name,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

# Replicas cannot import test modules: ship this module's generate_fn by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TINY = "plait.local_models.tiny:tiny_char_lm"
NAMESPACE = "plait-test-replicas"
BOUND_S = 120.0  # every wait here ends by then, pass or fail


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0})
    gpu_node = c.add_node(num_cpus=2, num_gpus=2)
    # The row workers need the loopback server's key; keys are never shipped with configs.
    ray.init(address=c.address, namespace=NAMESPACE,
             runtime_env={"env_vars": {DEFAULT_KEY_ENV: DEFAULT_KEY}})
    c.wait_for_nodes()
    try:
        yield {"gpu_node": gpu_node.node_id}
    finally:
        ray.shutdown()
        c.shutdown()


def _config(**kwargs: Any) -> TorchEndpointConfig:
    base: dict[str, Any] = {"model_factory": TINY, "device": "cpu", "max_new_tokens": 4,
                            "temperature": 0.0, "num_cpus_per_replica": 0.25,
                            "max_wait_ms": 20}
    return TorchEndpointConfig(**(base | kwargs))


async def _call_many(pool: ReplicaPool, n: int) -> list[Any]:
    async with asyncio.timeout(BOUND_S):
        return await asyncio.gather(*(
            pool.call(LLMRequest(prompt=f"prompt {i}"), timeout=BOUND_S) for i in range(n)))


def test_replicas_are_pinned_to_their_own_gpus(cluster: dict[str, str]) -> None:
    pool = ReplicaPool("pinned", _config(replicas=2, num_gpus_per_replica=1), NAMESPACE)
    try:
        infos = pool.wait_ready(timeout=BOUND_S)
        assert all(info.node_id == cluster["gpu_node"] for info in infos)
        gpu_ids = sorted(info.gpu_ids for info in infos)
        assert gpu_ids == [("0",), ("1",)]
        assert all(info.cuda_visible_devices == info.gpu_ids[0] for info in infos)
        responses = asyncio.run(_call_many(pool, 24))
        assert all(r.usage.output_tokens == 4 for r in responses)
        assert [r.usage.input_tokens for r in responses] == [len(f"prompt {i}")
                                                              for i in range(24)]
        served = asyncio.run(pool.infos())
        # The burst leaves this process as one micro-batch, spread by items in flight:
        # one actor call per replica, half the requests each, batched again inside.
        assert [info.items for info in served] == [12, 12]
        assert [info.calls for info in served] == [1, 1]
        assert sum(info.batches for info in served) < 24
    finally:
        pool.kill()


def test_fractional_gpus_share_one_device(cluster: dict[str, str]) -> None:
    pool = ReplicaPool("shared", _config(replicas=2, num_gpus_per_replica=0.5), NAMESPACE)
    try:
        infos = pool.wait_ready(timeout=BOUND_S)
        assert all(info.node_id == cluster["gpu_node"] for info in infos)
        assert all(len(info.gpu_ids) == 1 for info in infos)
    finally:
        pool.kill()


def test_killed_replica_is_replaced_and_requests_still_succeed(cluster: dict[str, str]) -> None:
    resources = ResourceConfig(endpoints={"victim": _config(replicas=2, num_gpus_per_replica=1,
                                                            max_retries=8)})
    pools = ensure_replica_pools(resources, namespace=NAMESPACE, wait_timeout=BOUND_S)

    async def run() -> list[Any]:
        manager = ResourceManager(resources, client_factory=replica_client_factory(NAMESPACE))
        pool = manager.pool("victim")
        assert isinstance(pool.client, RayReplicaClient)
        async with asyncio.timeout(BOUND_S):
            first = await asyncio.gather(*(pool.call(LLMRequest(prompt=f"a{i}"))
                                           for i in range(4)))
            ray.kill(ray.get_actor(replica_name("victim", 0), NAMESPACE), no_restart=True)
            second = await asyncio.gather(*(pool.call(LLMRequest(prompt=f"b{i}"))
                                            for i in range(8)))
        await manager.aclose()
        return [r for r, _ in [*first, *second]]

    try:
        responses = asyncio.run(run())
        assert len(responses) == 12 and all(r.usage.output_tokens == 4 for r in responses)
    finally:
        pools["victim"].kill()


def _fail_on_boom(model: Any, tokenizer: Any, prompt_ids: list[list[int]],
                  max_new_tokens: int, temperature: float, generator: Any) -> list[list[int]]:
    del model, temperature, generator
    if any("boom" in tokenizer.decode(ids) for ids in prompt_ids):
        raise RuntimeError("this prompt always fails")
    return [tokenizer.encode("x" * max_new_tokens) for _ in prompt_ids]


def test_errors_map_to_their_own_request_within_a_micro_batch(cluster: dict[str, str]) -> None:
    # The replica runs one request per model batch, so only the "boom" request fails, though
    # all four travel in one actor call.
    config = _config(replicas=1, num_gpus_per_replica=1, max_batch=1,
                     generate_fn=_fail_on_boom)
    pool = ReplicaPool("errors", config, NAMESPACE, caller_max_batch=8)
    prompts = ["ok 0", "boom", "ok 2", "ok 3"]

    async def run() -> list[Any]:
        async with asyncio.timeout(BOUND_S):
            return await asyncio.gather(*(pool.call(LLMRequest(prompt=p), timeout=BOUND_S)
                                          for p in prompts), return_exceptions=True)

    try:
        before = pool.wait_ready(timeout=BOUND_S)[0]
        outcomes = asyncio.run(run())
        after = asyncio.run(pool.infos())[0]
    finally:
        pool.kill()
    assert isinstance(outcomes[1], ServerError) and outcomes[1].retryable
    assert "this prompt always fails" in str(outcomes[1])
    others = [outcomes[i] for i in (0, 2, 3)]
    assert all(isinstance(o, LLMResponse) and o.text == "xxxx" for o in others)
    assert after.calls - before.calls == 1 and after.items - before.items == 4


def _wait_until_gone(name: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while True:
        try:
            ray.get_actor(name, NAMESPACE)
        except ValueError:  # a dead actor's name is freed
            return
        assert time.monotonic() < deadline, f"{name} still alive after {BOUND_S}s"
        time.sleep(0.1)


def test_dead_replica_fails_each_request_of_its_micro_batch_retryably(
        cluster: dict[str, str]) -> None:
    pool = ReplicaPool("dying", _config(replicas=1, num_gpus_per_replica=1), NAMESPACE)

    async def burst(n: int) -> list[Any]:
        async with asyncio.timeout(BOUND_S):
            return await asyncio.gather(*(pool.call(LLMRequest(prompt=f"p{i}"),
                                                    timeout=BOUND_S) for i in range(n)),
                                        return_exceptions=True)

    try:
        pool.wait_ready(timeout=BOUND_S)
        assert all(isinstance(r, LLMResponse) for r in asyncio.run(burst(3)))
        ray.kill(ray.get_actor(replica_name("dying", 0), NAMESPACE), no_restart=True)
        _wait_until_gone(replica_name("dying", 0))  # the pool still holds the dead handle
        failed = asyncio.run(burst(5))
        # Each request gets its own retryable error, so the endpoint pool retries each.
        assert all(isinstance(e, ReplicaUnavailableError) and e.retryable for e in failed)
        assert len({id(e) for e in failed}) == 5
        recovered = asyncio.run(burst(3))  # the pool looked the name up again: a new replica
        assert all(isinstance(r, LLMResponse) for r in recovered)
    finally:
        pool.kill()


class _Mixed(Module):
    def __init__(self) -> None:
        super().__init__()
        self.hosted = LLMInference(alias="hosted")
        self.local = LLMInference(alias="local", max_tokens=5)

    def forward(self, text: str) -> Any:
        return self.local(self.hosted(text))


def test_mixed_pipeline_on_the_ray_executor(cluster: dict[str, str]) -> None:
    with LLMServer().run_in_thread() as server:
        hosted = server.resource_config({"hosted": "model-a"})["hosted"]
        resources = ResourceConfig(endpoints={
            "hosted": hosted,
            "local": _config(replicas=1, num_gpus_per_replica=1),
        })
        pools = ensure_replica_pools(resources, namespace="plait", wait_timeout=BOUND_S)
        try:
            pipeline = _Mixed().bind(resources=resources, executor="ray")
            outputs = asyncio.run(asyncio.wait_for(
                pipeline([f"row {i}" for i in range(6)]), BOUND_S))
            served = asyncio.run(pools["local"].infos())
        finally:
            pools["local"].kill()
    assert len(outputs) == 6 and all(len(o) == 5 for o in outputs)
    assert served[0].items == 6  # the local calls ran on the GPU replica, not in workers
    usage = pipeline.last_run.endpoints
    assert usage["local"]["output_tokens"] == 30 and usage["local"]["input_tokens"] > 0
    assert usage["hosted"]["requests"] == 6

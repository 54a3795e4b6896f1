"""A pipeline mixing a hosted model and a local Torch model, run on Ray, written to Parquet.

Offline: the hosted alias is plait's loopback server, the local alias a tiny char-level
model built in code. On Ray the hosted calls run in the CPU row workers and the local calls
on a replica actor that reserves a GPU (this script declares 1 fake GPU, so it runs on any
machine; compute stays on CPU with device="cpu"; on a real GPU node use device="cuda").

Run: .venv/bin/python examples/07_local_model_mix.py [out.parquet]
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from plait import LLMInference, Module
from plait.local_models import TorchEndpointConfig
from plait.resources import ResourceConfig
from plait.testing import LLMServer
from plait.testing._resources import DEFAULT_KEY, DEFAULT_KEY_ENV
from plait_ray.replicas import ensure_replica_pools


class DraftThenPolish(Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="hosted", system_prompt="Write a short draft.")
        self.polish = LLMInference(alias="local", max_tokens=16)

    def forward(self, topic: str) -> Any:
        return self.polish(self.draft(topic))


async def run(pipeline: DraftThenPolish, rows: list[str]) -> list[Any]:
    return await pipeline(rows)


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "local_model_mix.parquet"
    # Row workers need the loopback server's key in their environment (keys never ship).
    ray.init(address="local", num_cpus=2, num_gpus=1,
             runtime_env={"env_vars": {DEFAULT_KEY_ENV: DEFAULT_KEY}})
    try:
        with LLMServer(latency=0.01).run_in_thread() as server:
            resources = ResourceConfig(endpoints={
                "hosted": server.resource_config({"hosted": "model-a"})["hosted"],
                "local": TorchEndpointConfig(
                    model_factory="plait.local_models.tiny:tiny_char_lm", device="cpu",
                    replicas=1, num_gpus_per_replica=1, num_cpus_per_replica=0.5,
                    max_batch=32, temperature=0.0),
            })
            # The driver owns the replicas; every row worker finds them by name.
            pools = ensure_replica_pools(resources, wait_timeout=300)
            info = pools["local"].wait_ready(timeout=300)[0]
            print(f"replica on node {info.node_id[:8]}, gpu_ids={info.gpu_ids}, "
                  f"CUDA_VISIBLE_DEVICES={info.cuda_visible_devices}")
            pipeline = DraftThenPolish().bind(resources=resources, executor="ray")
            topics = [f"topic {i}" for i in range(40)]
            outputs = asyncio.run(run(pipeline, topics))
            served = asyncio.run(pools["local"].infos())[0]
            pools["local"].kill()
        pq.write_table(pa.table({"topic": topics, "output": outputs}), out)
        usage = pipeline.last_run.endpoints
        print(f"wrote {len(outputs)} rows to {out}")
        print(f"local replica: {served.items} requests in {served.batches} batches")
        for alias, stats in usage.items():
            print(f"{alias}: {stats['requests']} requests, {stats['input_tokens']} in / "
                  f"{stats['output_tokens']} out tokens")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

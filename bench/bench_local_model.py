"""Local Torch model through a Ray replica actor: batching throughput and per-request overhead.

1. Throughput: N concurrent requests to one replica of the tiny char LM (CPU), with
   max_batch=32 vs max_batch=1 (one item at a time). Target: >= 5x.
2. Overhead: with ``trivial_lm`` (almost no compute, 1 token), the mean latency of one
   request at a time through the pool (actor round trip + batching window) vs the same
   model called in-process without Ray or batching.

Run: .venv/bin/python bench/bench_local_model.py [--requests 256]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import ray

from plait.clients.base import LLMRequest
from plait.local_models import GenerationRequest, TorchEndpointConfig
from plait_ray.replicas import ReplicaPool

TINY = "plait.local_models.tiny:tiny_char_lm"
TRIVIAL = "plait.local_models.tiny:trivial_lm"


def config(factory: str, max_batch: int, max_new: int) -> TorchEndpointConfig:
    return TorchEndpointConfig(model_factory=factory, device="cpu", max_batch=max_batch,
                               max_wait_ms=2, max_new_tokens=max_new, temperature=0.0,
                               num_gpus_per_replica=1, num_cpus_per_replica=0.5)


async def burst(pool: ReplicaPool, n: int) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(pool.call(LLMRequest(prompt=f"prompt number {i}"), timeout=600)
                           for i in range(n)))
    return time.perf_counter() - start


async def one_by_one(pool: ReplicaPool, n: int) -> list[float]:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await pool.call(LLMRequest(prompt=f"p{i}"), timeout=60)
        lat.append(time.perf_counter() - t)
    return lat


def run_pool(alias: str, cfg: TorchEndpointConfig, fn: Any, n: int) -> Any:
    pool = ReplicaPool(alias, cfg, "plait-bench")
    try:
        pool.wait_ready(timeout=300)
        asyncio.run(fn(pool, 8))  # warm up
        return asyncio.run(fn(pool, n))
    finally:
        pool.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    n = args.requests
    ray.init(address="local", num_cpus=2, num_gpus=1, namespace="plait-bench")
    try:
        batched = run_pool("bench-b32", config(TINY, 32, args.tokens), burst, n)
        single = run_pool("bench-b1", config(TINY, 1, args.tokens), burst, n)
        print(f"throughput tiny_char_lm, {n} requests x {args.tokens} tokens, 1 replica (CPU):")
        print(f"  max_batch=32: {n / batched:8.1f} req/s ({batched:.2f}s)")
        print(f"  max_batch=1 : {n / single:8.1f} req/s ({single:.2f}s)")
        print(f"  speedup     : {single / batched:8.1f}x")
        lat = run_pool("bench-trivial", config(TRIVIAL, 32, 1), one_by_one, 200)
        gen = config(TRIVIAL, 1, 1).load_generator()
        req = [GenerationRequest("p", 1, 0.0)]
        t = time.perf_counter()
        for _ in range(200):
            gen.generate(req)
        direct = (time.perf_counter() - t) / 200
        print("overhead per request, trivial_lm, one request at a time:")
        print(f"  through replica actor: mean {statistics.mean(lat) * 1e3:.2f} ms, "
              f"p50 {statistics.median(lat) * 1e3:.2f} ms")
        print(f"  in-process generate  : mean {direct * 1e3:.2f} ms")
        print(f"  overhead (round trip + batching window): "
              f"{(statistics.median(lat) - direct) * 1e3:.2f} ms")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

"""Local Torch model through a Ray replica actor: batching throughput and per-request overhead.

1. Throughput: N concurrent requests to one replica of the tiny char LM (CPU), with
   max_batch=32 vs max_batch=1 (one item at a time). Target: >= 5x. The batched pool is
   measured twice: through ``ReplicaPool.call`` (caller-side micro-batches, one
   ``generate_many`` actor call each) and with one ``generate`` actor call per request
   (the path before caller-side batching), so before/after share one machine state.
2. Overhead: with ``trivial_lm`` (almost no compute, 1 token), the latency of one request
   at a time through the pool (actor round trip + both batching windows), and through one
   bare ``generate`` actor call per request (before), vs the model called in-process.

Each figure is the best of ``--repeats`` runs (the machine is shared; best-of is the least
disturbed run).

Run: .venv/bin/python bench/bench_local_model.py [--requests 256 --tokens 64 --repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from plait.clients.base import LLMRequest
from plait.local_models import GenerationRequest, TorchEndpointConfig
from plait_ray.replicas import ReplicaPool

TINY = "plait.local_models.tiny:tiny_char_lm"
TRIVIAL = "plait.local_models.tiny:trivial_lm"

Send = Callable[[ReplicaPool, LLMRequest], Awaitable[Any]]


def config(factory: str, max_batch: int, max_new: int, cpus: float = 0.5
           ) -> TorchEndpointConfig:
    # Ray sets the replica's OMP_NUM_THREADS (torch's threads) from its CPUs: max(1, int(cpus)).
    return TorchEndpointConfig(model_factory=factory, device="cpu", max_batch=max_batch,
                               max_wait_ms=2, max_new_tokens=max_new, temperature=0.0,
                               num_gpus_per_replica=1, num_cpus_per_replica=cpus)


def in_process_ratio(n: int, tokens: int, threads: int, repeats: int) -> tuple[float, float]:
    """The model's own batching gain: n prompts in batches of 32 vs one at a time."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = config(TINY, 32, tokens).load_generator()
        reqs = [GenerationRequest(f"prompt number {i}", tokens, 0.0) for i in range(n)]
        gen.generate(reqs[:32])

        def timed(size: int) -> float:
            t = time.perf_counter()
            for i in range(0, n, size):
                gen.generate(reqs[i:i + size])
            return time.perf_counter() - t

        return min(timed(32) for _ in range(repeats)), min(timed(1) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)


async def via_pool(pool: ReplicaPool, request: LLMRequest) -> Any:
    return await pool.call(request, timeout=600)


async def per_request_call(pool: ReplicaPool, request: LLMRequest) -> Any:
    # The path before caller-side batching: one actor call per request.
    ref: Any = pool.handle(0).generate.remote(request)
    return await ref


async def burst(pool: ReplicaPool, send: Send, n: int) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(send(pool, LLMRequest(prompt=f"prompt number {i}"))
                           for i in range(n)))
    return time.perf_counter() - start


async def one_by_one(pool: ReplicaPool, send: Send, n: int) -> list[float]:
    lat: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        await send(pool, LLMRequest(prompt=f"p{i}"))
        lat.append(time.perf_counter() - t)
    return lat


def best_burst(pool: ReplicaPool, send: Send, n: int, repeats: int) -> float:
    asyncio.run(burst(pool, send, 8))  # warm up
    return min(asyncio.run(burst(pool, send, n)) for _ in range(repeats))


def best_latency(pool: ReplicaPool, send: Send, n: int, repeats: int) -> float:
    asyncio.run(one_by_one(pool, send, 8))  # warm up
    return min(statistics.median(asyncio.run(one_by_one(pool, send, n)))
               for _ in range(repeats))


def with_pool(alias: str, cfg: TorchEndpointConfig, body: Callable[[ReplicaPool], Any],
              **pool_options: Any) -> Any:
    pool = ReplicaPool(alias, cfg, "plait-bench", **pool_options)
    try:
        pool.wait_ready(timeout=300)
        return body(pool)
    finally:
        pool.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--replica-cpus", type=float, default=0.5)
    args = ap.parse_args()
    n, reps, cpus = args.requests, args.repeats, args.replica_cpus
    threads = max(1, int(cpus))
    print(f"load average at start: {os.getloadavg()}")
    b32, b1 = in_process_ratio(n, args.tokens, threads, reps)
    print(f"model alone, in-process, torch threads={threads}, best of {reps}: batches of 32 "
          f"{b32:.2f}s, one at a time {b1:.2f}s, ratio {b1 / b32:.1f}x")
    ray.init(address="local", num_cpus=2, num_gpus=1, namespace="plait-bench")
    try:
        batched, legacy = with_pool("bench-b32", config(TINY, 32, args.tokens, cpus),
                                    lambda p: (best_burst(p, via_pool, n, reps),
                                               best_burst(p, per_request_call, n, reps)))
        single = with_pool("bench-b1", config(TINY, 1, args.tokens, cpus),
                           lambda p: best_burst(p, via_pool, n, reps))
        print(f"throughput tiny_char_lm, {n} requests x {args.tokens} tokens, 1 replica (CPU, "
              f"num_cpus_per_replica={cpus}, torch threads={threads}), best of {reps}:")
        print(f"  max_batch=32, caller micro-batches: {n / batched:8.1f} req/s ({batched:.2f}s)")
        print(f"  max_batch=32, 1 call per request  : {n / legacy:8.1f} req/s ({legacy:.2f}s)")
        print(f"  max_batch=1                       : {n / single:8.1f} req/s ({single:.2f}s)")
        print(f"  speedup now (micro-batches)       : {single / batched:8.1f}x")
        print(f"  speedup before (1 call/request)   : {single / legacy:8.1f}x")
        after, before = with_pool("bench-trivial", config(TRIVIAL, 32, 1), lambda p: (
            best_latency(p, via_pool, 200, reps), best_latency(p, per_request_call, 200, reps)))
        window = with_pool("bench-trivial1", config(TRIVIAL, 32, 1),
                           lambda p: best_latency(p, via_pool, 200, reps), caller_wait_ms=1)
        gen = config(TRIVIAL, 1, 1).load_generator()
        req = [GenerationRequest("p", 1, 0.0)]
        t = time.perf_counter()
        for _ in range(200):
            gen.generate(req)
        direct = (time.perf_counter() - t) / 200
        print(f"overhead per request, trivial_lm, one request at a time (p50, best of {reps}):")
        print(f"  ReplicaPool.call (caller batcher + generate_many): {after * 1e3:.2f} ms")
        print(f"  the same with caller_wait_ms=1                   : {window * 1e3:.2f} ms")
        print(f"  one generate actor call (before)                 : {before * 1e3:.2f} ms")
        print(f"  in-process generate                              : {direct * 1e3:.2f} ms")
        print(f"  overhead now   : {(after - direct) * 1e3:.2f} ms")
        print(f"  overhead before: {(before - direct) * 1e3:.2f} ms")
    finally:
        ray.shutdown()
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Permits/s one limiter actor grants to Ray workers: block leases vs one call per permit.

Usage: .venv/bin/python bench/bench_leases.py [--workers 2] [--tasks 16] [--seconds 3]

Each worker actor runs ``--tasks`` asyncio loops of acquire -> release against the same
endpoint limiter (max_concurrent=64, a rate limit high enough not to bind). "leased" uses
``LeasedPermitSource``; "per-permit" calls the actor once per permit (the naive design).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import ray

from plait_ray.limits import LeasedPermitSource, LeaseRequest, LimiterLimits, limiter_for

LIMITS = LimiterLimits(max_concurrent=64, rate_limit=60_000_000, tokens_per_minute=None)


@ray.remote(num_cpus=0)
class BenchWorker:
    def __init__(self, namespace: str) -> None:
        self.handle = limiter_for("bench", LIMITS, namespace)
        self.permits = LeasedPermitSource(self.handle, "bench", max_concurrent=64,
                                          rate_limit=LIMITS.rate_limit, tokens_per_minute=None)

    async def leased(self, tasks: int, seconds: float) -> dict[str, float]:
        end = time.perf_counter() + seconds

        async def loop() -> int:
            n = 0
            while time.perf_counter() < end:
                permit = await self.permits.acquire(1)
                await asyncio.sleep(0)  # the request would run here
                self.permits.release(permit, used_tokens=None)
                n += 1
            return n

        done = sum(await asyncio.gather(*(loop() for _ in range(tasks))))
        return {"permits": done, "actor_calls": self.permits.syncs}

    async def per_permit(self, tasks: int, seconds: float) -> dict[str, float]:
        end = time.perf_counter() + seconds
        worker = uuid.uuid4().hex

        async def loop() -> int:
            n = 0
            while time.perf_counter() < end:
                grant = await self.handle.lease.remote(
                    LeaseRequest(worker, want_slots=1, want_requests=1, demand=1))
                await self.handle.release.remote(grant.lease_id)
                n += 1
            return n

        done = sum(await asyncio.gather(*(loop() for _ in range(tasks))))
        return {"permits": done, "actor_calls": 2 * done}


def run(mode: str, workers: list[Any], tasks: int, seconds: float) -> dict[str, float]:
    results = ray.get([getattr(w, mode).remote(tasks, seconds) for w in workers],
                      timeout=seconds + 120)
    permits = sum(r["permits"] for r in results)
    calls = sum(r["actor_calls"] for r in results)
    return {"permits_per_s": permits / seconds, "actor_calls_per_s": calls / seconds,
            "permits_per_call": permits / max(calls, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        limiter_for("bench", LIMITS, namespace)
        workers = [BenchWorker.remote(namespace) for _ in range(args.workers)]
        run("leased", workers, 2, 0.5)  # warm-up: processes, imports, first lease
        for mode in ("leased", "per_permit"):
            r = run(mode, workers, args.tasks, args.seconds)
            print(f"{mode:11s} permits/s={r['permits_per_s']:>10,.0f}  "
                  f"actor calls/s={r['actor_calls_per_s']:>7,.0f}  "
                  f"permits/call={r['permits_per_call']:>8.1f}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

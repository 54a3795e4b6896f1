"""Endpoint limiter actors on a real local Ray runtime: one owner per alias, leases, faults."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from plait.resources.config import OpenAIEndpointConfig
from plait_ray.limits import (
    LeasedPermitSource,
    LimiterLimits,
    actor_name,
    leased_permit_factory,
    limiter_for,
)

pytestmark = pytest.mark.ray
TIMEOUT = 60  # seconds: every wait on Ray is bounded


@pytest.fixture(scope="module", autouse=True)
def ray_runtime() -> Iterator[None]:
    # address="local": always a private runtime, never a cluster someone else started.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_runtime: None) -> list[Any]:
    return [Worker.remote() for _ in range(3)]


def _connect(workers: list[Any], limits: LimiterLimits, namespace: str) -> list[Any]:
    ray.get([w.connect.remote("fast", limits, namespace) for w in workers], timeout=TIMEOUT)
    return workers


@pytest.fixture
def namespace() -> str:
    return f"plait-test-{uuid.uuid4().hex[:8]}"


@ray.remote(num_cpus=0)
class Gauge:
    """Counts permits held across all workers; remembers the peak."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def exit(self) -> None:
        self.now -= 1

    def get_peak(self) -> int:
        return self.peak


@ray.remote(num_cpus=0)
class Worker:
    """A stand-in for a plait worker actor: one LeasedPermitSource per endpoint."""

    async def connect(self, alias: str, limits: LimiterLimits, namespace: str) -> None:
        """(Re)point this worker at an endpoint; tests reuse workers to save start-ups."""
        self.handle = limiter_for(alias, limits, namespace)
        self.permits = LeasedPermitSource(
            self.handle, alias, max_concurrent=limits.max_concurrent,
            rate_limit=limits.rate_limit, tokens_per_minute=limits.tokens_per_minute)
        self.held: list[Any] = []

    async def epoch(self) -> str:
        return (await self.handle.stats.remote())["epoch"]

    async def hammer(self, gauge: Any, tasks: int, per_task: int) -> int:
        async def one_task() -> int:
            for _ in range(per_task):
                permit = await self.permits.acquire(1)
                await gauge.enter.remote()
                await asyncio.sleep(0.005)
                await gauge.exit.remote()
                self.permits.release(permit, used_tokens=1)
                self.permits.on_success()
            return per_task
        return sum(await asyncio.gather(*(one_task() for _ in range(tasks))))

    async def hold(self, n: int) -> list[int]:
        for _ in range(n):
            self.held.append(await self.permits.acquire(1))
        return [p.slot for p in self.held]

    async def acquire_waits(self, n: int) -> list[float]:
        waits = []
        for _ in range(n):
            permit = await self.permits.acquire(1)
            self.permits.release(permit, used_tokens=None)
            waits.append(permit.rate_wait)
        return waits

    async def rate_limited(self, retry_after: float) -> None:
        self.permits.on_rate_limited(retry_after)


def _stats(alias: str, namespace: str) -> dict[str, Any]:
    handle = ray.get_actor(actor_name(alias), namespace=namespace)
    return ray.get(handle.stats.remote(), timeout=TIMEOUT)


def test_one_limiter_per_alias_even_when_workers_race(pool: list[Any], namespace: str) -> None:
    limits = LimiterLimits(max_concurrent=4, rate_limit=None, tokens_per_minute=None)
    workers = _connect(pool, limits, namespace)  # concurrently, each get-or-creates
    epochs = ray.get([w.epoch.remote() for w in workers], timeout=TIMEOUT)
    assert len(set(epochs)) == 1
    named = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == namespace]
    assert named == [{"name": "plait:limits:fast", "namespace": namespace}]


def test_workers_jointly_never_exceed_max_concurrent(pool: list[Any], namespace: str) -> None:
    limits = LimiterLimits(max_concurrent=3, rate_limit=None, tokens_per_minute=None)
    limiter_for("fast", limits, namespace)  # the driver owns the limiter
    gauge = Gauge.remote()
    workers = _connect(pool, limits, namespace)
    done = ray.get([w.hammer.remote(gauge, 3, 8) for w in workers], timeout=TIMEOUT)
    assert done == [24, 24, 24]
    assert 1 <= ray.get(gauge.get_peak.remote(), timeout=TIMEOUT) <= 3


def test_a_killed_workers_slots_come_back_after_the_lease_ttl(pool: list[Any],
                                                              namespace: str) -> None:
    limits = LimiterLimits(max_concurrent=2, rate_limit=None, tokens_per_minute=None,
                           lease_ttl=1.0)
    limiter_for("fast", limits, namespace)
    doomed = Worker.remote()
    survivor, = _connect([*pool[:1], doomed], limits, namespace)[:1]
    assert sorted(ray.get(doomed.hold.remote(2), timeout=TIMEOUT)) == [0, 1]
    ray.kill(doomed)
    assert sorted(ray.get(survivor.hold.remote(2), timeout=TIMEOUT)) == [0, 1]
    assert _stats("fast", namespace)["leases_expired"] >= 1


def test_a_429_on_one_worker_slows_another(pool: list[Any], namespace: str) -> None:
    limits = LimiterLimits(max_concurrent=None, rate_limit=6000, tokens_per_minute=None)
    limiter_for("fast", limits, namespace)
    a, b = _connect(pool[:2], limits, namespace)
    ray.get(b.acquire_waits.remote(2), timeout=TIMEOUT)
    ray.get(a.rate_limited.remote(1.5), timeout=TIMEOUT)
    waits = ray.get(b.acquire_waits.remote(12), timeout=TIMEOUT)
    assert max(waits) > 0.5  # b waited out the pause a's 429 put on the whole cluster
    assert _stats("fast", namespace)["rate_per_min"] < 6000


def test_the_limiter_restarts_after_a_crash_and_workers_continue(pool: list[Any],
                                                                 namespace: str) -> None:
    limits = LimiterLimits(max_concurrent=2, rate_limit=None, tokens_per_minute=None)
    handle = limiter_for("fast", limits, namespace)
    worker, = _connect(pool[:1], limits, namespace)
    assert len(ray.get(worker.hold.remote(1), timeout=TIMEOUT)) == 1
    before = _stats("fast", namespace)["epoch"]
    ray.kill(handle, no_restart=False)
    # The held slot is adopted by the restarted limiter, so exactly one more fits.
    assert len(ray.get(worker.hold.remote(1), timeout=TIMEOUT)) == 2
    stats = _stats("fast", namespace)
    assert stats["epoch"] != before and stats["slots_out"] == 2


def test_no_api_key_reaches_the_limiter(namespace: str) -> None:
    secret = "sk-test-" + uuid.uuid4().hex
    config = OpenAIEndpointConfig(model="gpt-x", api_key=secret, max_concurrent=2,
                                  rate_limit=60)
    permits = leased_permit_factory(namespace)("fast", config)
    assert isinstance(permits, LeasedPermitSource)
    stats = _stats("fast", namespace)
    assert stats["limits"] == {"max_concurrent": 2, "rate_limit": 60,
                               "tokens_per_minute": None, "lease_ttl": 6.0}
    assert secret not in repr(stats)

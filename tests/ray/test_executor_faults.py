"""Worker death in the Ray executor: a node removed, a row worker killed, mid-batch.

One ``ray.cluster_utils.Cluster`` (head + 2 worker nodes, fast health checks) serves both
tests. The batch's two ``RowWorker`` actors are placed one per worker node (the pool is
filled with pinned actors before the call), so removing a node always takes exactly one
worker with it.

What is asserted is ``RayExecutor``'s behaviour: the call completes, every row is reported
exactly once, rows of a dead worker that had not finished are re-run on a surviving worker
(nothing of theirs was committed), and the pool replaces the dead worker for the next call.
Results are streamed (``run(...)`` iterated) so a lost row cannot hide as a ``None`` output.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray import cloudpickle
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from plait import LLMInference, Module
from plait.execution import run
from plait.execution.results import BatchResult
from plait.resources.config import ResourceConfig
from plait.testing import LLMServer
from plait.testing._thread import ThreadedServer
from plait_ray import shutdown_workers
from plait_ray.worker import WORKER_CPUS, RowWorker, worker_pool

pytestmark = [pytest.mark.ray, pytest.mark.slow]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS = 240
WAIT_S = 40
HEALTH = {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
          "health_check_failure_threshold": 3}
OPTIONS = {"workers": 2, "rows_per_chunk": 4}


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


def expected(i: int) -> str:
    return f"[m] echo: Say: t{i}"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with LLMServer(latency=0.05).run_in_thread() as srv:
        srv.resource_config({"fast": "m"})  # the key env var, inherited by the cluster
        yield srv


@pytest.fixture(scope="module")
def cluster(server: ThreadedServer) -> Iterator[Cluster]:
    if ray.is_initialized():
        pytest.skip("needs its own Ray cluster (another test module left Ray initialized)")
    cl = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": HEALTH})
    cl.add_node(num_cpus=1)
    cl.add_node(num_cpus=1)
    cl.wait_for_nodes()
    ray.init(address=cl.address)
    yield cl
    shutdown_workers()
    ray.shutdown()
    cl.shutdown()


def resources(server: ThreadedServer) -> ResourceConfig:
    return server.resource_config({"fast": "m"}, max_concurrent=12, max_retries=0)


def pin_workers(cluster: Cluster) -> list[Any]:
    """Fill the executor's warm pool with one RowWorker per worker node; return them."""
    shutdown_workers()
    pool = worker_pool(Echo.__name__)
    actor: Any = ray.remote(num_cpus=WORKER_CPUS, max_restarts=0)(RowWorker)
    nodes = [n for n in cluster.list_all_nodes() if not n.head]
    for i, node in enumerate(nodes[:2]):
        strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        pool.handles.append(actor.options(
            name=f"plait:worker:Echo:pinned{i}:{time.monotonic_ns()}", max_concurrency=1000,
            scheduling_strategy=strategy).remote())
    ray.get([h.ready.remote() for h in pool.handles], timeout=WAIT_S)
    return list(pool.handles)


class Batch:
    """A streamed batch running in a thread; ``results`` fills in as rows finish."""

    def __init__(self, server: ThreadedServer) -> None:
        self.results: list[BatchResult] = []
        self.error: BaseException | None = None
        config = resources(server)

        async def consume() -> None:
            async for result in run(Echo(), [f"t{i}" for i in range(ROWS)], resources=config,
                                    executor="ray", executor_options=OPTIONS):
                self.results.append(result)

        def target() -> None:
            try:
                asyncio.run(asyncio.wait_for(consume(), WAIT_S))
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def wait_for_rows(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.results) < count:
            if not self.thread.is_alive():
                pytest.fail(f"the batch ended before {count} rows ({self.error!r}); "
                            "raise ROWS or the server's latency")
            assert time.monotonic() < deadline, f"fewer than {count} rows in {WAIT_S} s"
            time.sleep(0.02)

    def finish(self) -> dict[int, BatchResult]:
        self.thread.join(WAIT_S + 5)
        assert not self.thread.is_alive(), "the batch did not finish after the fault"
        assert self.error is None, repr(self.error)
        counts = Counter(r.index for r in self.results)
        assert sorted(counts) == list(range(ROWS)), f"rows lost: {set(range(ROWS)) - set(counts)}"
        assert [i for i, n in counts.items() if n > 1] == [], "rows reported twice"
        return {r.index: r for r in self.results}


def assert_every_row_done(rows: dict[int, BatchResult], server: ThreadedServer) -> None:
    failed = {i: repr(r.error) for i, r in rows.items() if not r.ok}
    assert failed == {}, f"{len(failed)} rows failed: {list(failed.items())[:3]}"
    assert [rows[i].output for i in range(ROWS)] == [expected(i) for i in range(ROWS)]
    # The dead worker had requests in flight (8 rows of its 2 chunks): those rows were sent
    # again, so the fault really hit unfinished rows.
    assert server.stats().total_requests > ROWS


def assert_next_call_works(server: ThreadedServer) -> None:
    """The pool dropped the dead worker: a new call gets a live replacement."""
    async def again() -> list[str]:
        return await run(Echo(), [f"t{i}" for i in range(8)], resources=resources(server),
                         executor="ray", executor_options=OPTIONS)

    assert asyncio.run(asyncio.wait_for(again(), WAIT_S)) == [expected(i) for i in range(8)]


@pytest.mark.timeout(120)
def test_removed_node_rows_are_rerun_once(cluster: Cluster, server: ThreadedServer) -> None:
    handles = pin_workers(cluster)
    assert len(handles) == 2
    server.reset_stats()
    batch = Batch(server)
    batch.wait_for_rows(ROWS // 4)
    victim = [n for n in cluster.list_all_nodes() if not n.head][-1]
    cluster.remove_node(victim, allow_graceful=False)
    rows = batch.finish()
    assert_every_row_done(rows, server)
    cluster.add_node(num_cpus=1)  # back to two worker nodes for the next test
    cluster.wait_for_nodes()
    assert_next_call_works(server)


@pytest.mark.timeout(120)
def test_killed_row_worker_rows_are_rerun_once(cluster: Cluster,
                                               server: ThreadedServer) -> None:
    handles = pin_workers(cluster)
    server.reset_stats()
    batch = Batch(server)
    batch.wait_for_rows(ROWS // 4)
    ray.kill(handles[0], no_restart=True)
    rows = batch.finish()
    assert_every_row_done(rows, server)
    assert_next_call_works(server)

"""The response cache on a real multi-node Ray cluster, shared through one directory.

A ``ray.cluster_utils.Cluster`` with two worker nodes (custom resources ``node_a`` and
``node_b``). The first run's dataset workers are pinned to node A, the rerun's to node B, so
every hit of the rerun is an entry written on another node. The shared storage is a
directory both nodes see (here one machine's disk; on a real cluster an NFS/EFS mount).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import cloudpickle
from ray.cluster_utils import Cluster

from plait import LLMInference, Module
from plait.io import read_output
from plait.testing import LLMServer
from plait_ray.dataset import run_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS = 120


class TwoStep(Module):
    """A sampled call (keyed per row and node) feeding a greedy one."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="fast", temperature=0.8, max_tokens=16)
        self.polish = LLMInference(alias="fast", temperature=0.0, max_tokens=16)

    def forward(self, text: str) -> str:
        return self.polish(f"Polish: {self.draft(text)}")


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with LLMServer(latency=0.01).run_in_thread() as srv:
        srv.resource_config({"fast": "gpt-4o-mini"})  # the key env var, inherited by the nodes
        yield srv


@pytest.fixture(scope="module")
def cluster(server: Any) -> Iterator[Cluster]:
    cl = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                       "include_dashboard": False})
    cl.add_node(num_cpus=1, resources={"node_a": 1})
    cl.add_node(num_cpus=1, resources={"node_b": 1})
    cl.wait_for_nodes()
    ray.init(address=cl.address)
    yield cl
    ray.shutdown()
    cl.shutdown()


def _on(node: str) -> dict[str, Any]:
    return {"worker_resources": {node: 0.5}, "worker_num_cpus": 0.1}


def test_rerun_on_another_node_hits_entries_written_by_the_first(
        cluster: Cluster, server: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    resources = server.resource_config({"fast": "gpt-4o-mini"})
    rows = [{"text": f"t{i}"} for i in range(ROWS)]
    cache = tmp_path / "shared-cache"
    first = run_dataset(TwoStep(), rows, tmp_path / "a", resources=resources, cache=cache,
                        workers=2, rows_per_chunk=30, progress=True,
                        executor_options=_on("node_a"))
    assert (first.rows, first.errors) == (ROWS, 0)
    assert "/row)" in capsys.readouterr().err  # the bar showed the spend and $/row
    sent = server.stats().total_requests
    assert sent == 2 * ROWS
    assert len(list(cache.rglob("*.json"))) == 2 * ROWS

    second = run_dataset(TwoStep(), rows, tmp_path / "b", resources=resources, cache=cache,
                         workers=2, rows_per_chunk=30, progress=False,
                         executor_options=_on("node_b"))
    assert (second.rows, second.errors) == (ROWS, 0)
    assert server.stats().total_requests == sent  # every call answered from the cache
    a = read_output(tmp_path / "a").sort_by("row_id")
    b = read_output(tmp_path / "b").sort_by("row_id")
    assert b.column("output").to_pylist() == a.column("output").to_pylist()
    assert a.column("cache_hits").to_pylist() == [0] * ROWS
    assert b.column("cache_hits").to_pylist() == [2] * ROWS
    assert second.cost == 0.0 and first.cost > 0


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", temperature=0.0)

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


def test_ray_executor_calls_share_the_cache(cluster: Cluster, server: Any,
                                            tmp_path: Path) -> None:
    import asyncio

    from plait import run

    resources = server.resource_config({"fast": "gpt-4o-mini"})
    rows = [f"x{i}" for i in range(40)]
    cache = tmp_path / "c"

    async def go() -> Any:
        return await run(Echo(), rows, resources=resources, executor="ray", cache=cache)


    before = server.stats().total_requests
    first = asyncio.run(go())
    assert server.stats().total_requests == before + 40
    pipeline = Echo()
    again = asyncio.run(run(pipeline, rows, resources=resources, executor="ray", cache=cache))
    assert again == first
    assert server.stats().total_requests == before + 40
    assert pipeline.last_run.cache == {"hits": 40}
    assert pipeline.last_run.endpoints["fast"]["cache_hits"] == 40


def test_budget_on_ray_executor_is_refused(cluster: Cluster, server: Any) -> None:
    import asyncio

    from plait import run
    from plait.errors import ConfigError

    resources = server.resource_config({"fast": "gpt-4o-mini"})
    with pytest.raises(ConfigError, match="local executor only"):
        asyncio.run(run(Echo(), ["a"], resources=resources, executor="ray", budget_usd=1.0))


class Capped(Module):
    """One call with max_tokens set, so a row's pre-run bound is close to its real cost."""

    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", temperature=0.0, max_tokens=16)

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


def _short(_request: Any) -> str:
    return "ok"  # within max_tokens, as a real provider's reply is


def test_run_dataset_budget_stops_new_chunks_and_a_rerun_finishes(
        cluster: Cluster, tmp_path: Path) -> None:
    with LLMServer(latency=0.01, responder=_short).run_in_thread() as server:
        _budget_run(server, tmp_path)


def _budget_run(server: Any, tmp_path: Path) -> None:
    resources = server.resource_config({"fast": "gpt-4o-mini"})
    rows = [{"text": f"budget row {i} " + "words " * 20} for i in range(200)]
    probe = run_dataset(Capped(), rows[:20], tmp_path / "probe", resources=resources,
                        workers=1, rows_per_chunk=20, progress=False)
    per_row = probe.cost / 20
    budget = 60 * per_row
    before = server.stats().total_requests
    first = run_dataset(Capped(), rows, tmp_path / "out", resources=resources, workers=2,
                        rows_per_chunk=10, progress=False, budget_usd=budget)
    assert first.budget is not None and first.budget.stopped
    assert 0 < first.rows < len(rows)
    assert first.budget.rows_not_started == len(rows) - first.rows
    assert first.cost <= budget
    sent = server.stats().total_requests - before
    assert sent == first.rows  # every call sent belongs to a committed row
    assert "not started" in first.format()
    second = run_dataset(Capped(), rows, tmp_path / "out", resources=resources, workers=2,
                         rows_per_chunk=10, progress=False)
    assert (second.rows, second.errors) == (len(rows), 0)
    assert server.stats().total_requests - before == len(rows)  # nothing paid twice

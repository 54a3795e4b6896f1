"""map_dataset as one stage of a Ray Data pipeline, on a real two-node local Cluster.

read_parquet -> plait -> filter -> write_parquet: lazy until the write, every row once, failed
rows kept as an ``error`` column, and the requests limited by the cluster-wide limiter.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from ray import cloudpickle
from ray.cluster_utils import Cluster

from plait import LLMInference, Module
from plait.errors import ConfigError, InputError
from plait.testing import Fault, LLMServer

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

ray_data = pytest.importorskip("ray.data", reason="needs ray[data] (pandas)")

from ray.data.expressions import col  # noqa: E402

import plait_ray  # noqa: E402  (after the ray.data check)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS = 120


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer(latency=0.02).run_in_thread() as srv:
        srv.resource_config({"fast": "m"})  # the key env var, inherited by the cluster
        yield srv  # type: ignore[misc]


@pytest.fixture(scope="module")
def cluster(server: LLMServer) -> Iterator[Cluster]:
    if ray.is_initialized():
        ray.shutdown()
    cl = Cluster(initialize_head=True, head_node_args={"num_cpus": 2,
                                                       "include_dashboard": False})
    cl.add_node(num_cpus=2)
    cl.wait_for_nodes()
    ray.init(address=cl.address)
    yield cl
    ray.shutdown()
    cl.shutdown()


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for part in range(3):
        pq.write_table(pa.table({"body": [f"p{part}-{j}" for j in range(ROWS // 3)],
                                 "n": list(range(part * 40, part * 40 + 40))}),
                       src / f"part-{part}.parquet")
    return src


def test_read_plait_filter_write(cluster: Cluster, server: LLMServer, tmp_path: Path) -> None:
    resources = server.resource_config({"fast": "m"}, max_retries=0, max_concurrent=3)
    server.add_faults(Fault("500", match="p1-5", times=1))
    before = server.stats().total_requests
    ds = ray_data.read_parquet(str(_source(tmp_path)))
    ds = plait_ray.map_dataset(ds, Echo(), resources=resources, columns={"text": "body"},
                               workers=2, batch_size=16)
    assert server.stats().total_requests == before  # lazy: nothing ran yet
    ds.filter(expr=col("error").is_null()).write_parquet(str(tmp_path / "out"))

    table = pq.read_table(tmp_path / "out")
    assert table.column_names == ["body", "n", "output", "error", "input_tokens",
                                  "output_tokens", "latency_s", "cost_usd", "cache_hits"]
    rows = table.to_pylist()
    assert len(rows) == ROWS - 1
    assert sorted(r["n"] for r in rows) == sorted(set(range(ROWS)) - {45})
    assert all(r["output"] == f"[m] echo: Say: {r['body']}" for r in rows)
    assert all(r["output_tokens"] > 0 for r in rows)
    assert server.stats().total_requests - before == ROWS  # each row paid once
    # The cluster-wide limiter held all four actors' requests to max_concurrent=3.
    assert server.stats().max_in_flight <= 3


def test_errors_are_a_column(cluster: Cluster, server: LLMServer) -> None:
    resources = server.resource_config({"fast": "m"}, max_retries=0)
    server.add_faults(Fault("500", match="bad", times=1))
    ds = ray_data.from_items([{"text": "good"}, {"text": "bad"}])
    rows = sorted(plait_ray.map_dataset(ds, Echo(), resources=resources, workers=1).take_all(),
                  key=lambda r: r["text"])
    assert [r["error"] is None for r in rows] == [False, True]
    assert rows[1]["output"] == "[m] echo: Say: good"
    assert rows[0]["output"] is None and "500" in rows[0]["error"]


def test_bad_arguments_are_refused_before_anything_runs(cluster: Cluster, server: LLMServer,
                                                        tmp_path: Path) -> None:
    resources: Any = server.resource_config({"fast": "m"})
    ds = ray_data.from_items([{"body": "x"}])
    with pytest.raises(InputError, match="--columns text=COLUMN"):
        plait_ray.map_dataset(ds, Echo(), resources=resources)
    with pytest.raises(ConfigError, match="Unknown executor_options"):
        plait_ray.map_dataset(ds, Echo(), resources=resources, columns={"text": "body"},
                              executor_options={"rows_per_chunk": 3})

"""run_dataset over ``ray.data.Dataset`` sources (needs ``ray[data]``) on a private local Ray.

The output is read back with plain pyarrow: every source row exactly once, with its own
reply from the loopback server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from ray import cloudpickle

from plait import LLMInference, Module
from plait.testing import LLMServer
from plait_ray.dataset import run_dataset

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

ray_data = pytest.importorskip("ray.data", reason="needs ray[data] (pandas)")

# Ray workers cannot import test modules: ship this module's pipelines by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer().run_in_thread() as srv:
        srv.resource_config({"fast": "m"})  # puts the key in the env before Ray starts
        yield srv  # type: ignore[misc]


@pytest.fixture(scope="module")
def local_ray(server: LLMServer) -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    # address="local": never join another cluster running on this shared machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _output_rows(out: Path) -> list[dict[str, object]]:
    # Plain pyarrow: the output directory is an ordinary Parquet dataset.
    table = pq.read_table(out)
    return sorted(table.to_pylist(), key=lambda row: int(str(row["row_id"])))


def test_from_items_every_row_once(local_ray: None, server: LLMServer, tmp_path: Path) -> None:
    texts = [f"item-{i}" for i in range(120)]
    dataset = ray_data.from_items([{"text": t, "n": i} for i, t in enumerate(texts)],
                                  override_num_blocks=4)
    out = tmp_path / "out"
    summary = run_dataset(Echo(), dataset, out, resources=server.resource_config({"fast": "m"}),
                          rows_per_chunk=25, workers=2, progress=False)
    assert (summary.rows, summary.errors, summary.rows_run) == (120, 0, 120)
    rows = _output_rows(out)
    assert [row["row_id"] for row in rows] == list(range(120))
    assert [row["text"] for row in rows] == texts  # row ids follow the dataset's order
    assert [row["n"] for row in rows] == list(range(120))
    assert all(row["error"] is None for row in rows)
    assert [row["output"] for row in rows] == [f"[m] echo: Say: {t}" for t in texts]


def test_from_items_rerun_skips_committed_rows(local_ray: None, server: LLMServer,
                                               tmp_path: Path) -> None:
    resources = server.resource_config({"fast": "m"})
    items = [{"text": f"r{i}"} for i in range(30)]
    out = tmp_path / "out"
    run_dataset(Echo(), ray_data.from_items(items), out, resources=resources,
                rows_per_chunk=10, workers=1, progress=False)
    requests = server.stats().total_requests
    again = run_dataset(Echo(), ray_data.from_items(items), out, resources=resources,
                        rows_per_chunk=10, workers=1, progress=False)
    assert (again.rows, again.rows_run) == (30, 0)
    assert server.stats().total_requests == requests  # nothing paid twice
    assert [row["row_id"] for row in _output_rows(out)] == list(range(30))


def test_read_parquet_source(local_ray: None, server: LLMServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    expected: list[str] = []
    for part in range(3):
        bodies = [f"p{part}-{j}" for j in range(20)]
        expected += bodies
        pq.write_table(pa.table({"body": bodies}), src / f"part-{part}.parquet")
    dataset = ray_data.read_parquet(str(src))
    out = tmp_path / "out"
    summary = run_dataset(Echo(), dataset, out, resources=server.resource_config({"fast": "m"}),
                          columns={"text": "body"}, rows_per_chunk=16, workers=2,
                          progress=False)
    assert (summary.rows, summary.errors) == (60, 0)
    rows = _output_rows(out)
    assert [row["row_id"] for row in rows] == list(range(60))
    # Each row exactly once, answered for its own text (file order is Ray's to choose).
    assert sorted(str(row["body"]) for row in rows) == sorted(expected)
    assert all(row["output"] == f"[m] echo: Say: {row['body']}" for row in rows)

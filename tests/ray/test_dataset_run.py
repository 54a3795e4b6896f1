"""run_dataset on a private local Ray: schema, failures kept, resume, sources, metrics."""

from __future__ import annotations

import re
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from pydantic import BaseModel
from ray import cloudpickle

from plait import LLMInference, Module
from plait.errors import CheckpointError
from plait.io import read_output
from plait.testing import Fault, LLMServer
from plait_ray.dataset import run_dataset

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

# Ray workers cannot import test modules: ship this module's pipelines by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


class Label(BaseModel):
    label: str
    score: int


class Classify(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", response_format=Label)

    def forward(self, text: str) -> Label:
        return self.llm(text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


METRICS_PORT = _free_port()


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer().run_in_thread() as srv:
        srv.resource_config({"fast": "m"})  # puts the key in the env before Ray starts
        yield srv  # type: ignore[misc]


@pytest.fixture(scope="module")
def local_ray(server: LLMServer) -> Iterator[None]:
    # address="local": never join another cluster running on this shared machine.
    ray.init(address="local", num_cpus=2, include_dashboard=True,
             _metrics_export_port=METRICS_PORT)
    yield
    ray.shutdown()


def _rows(n: int) -> list[dict[str, object]]:
    return [{"text": f"t{i}", "n": i} for i in range(n)]


def test_list_source_schema_and_resume(local_ray: None, server: LLMServer, tmp_path: Path
                                       ) -> None:
    resources = server.resource_config({"fast": "m"})
    out = tmp_path / "out"
    summary = run_dataset(Echo(), _rows(250), out, resources=resources, rows_per_chunk=100,
                          workers=2, progress=False)
    assert (summary.rows, summary.errors, summary.rows_run) == (250, 0, 250)
    table = pq.read_table(out)  # plain Parquet readers see only the parts
    assert sorted(table.column("row_id").to_pylist()) == list(range(250))
    assert table.column_names == ["text", "n", "output", "error", "input_tokens",
                                  "output_tokens", "latency_s", "row_id", "cost_usd",
                                  "cache_hits"]
    row = read_output(out).slice(7, 1).to_pylist()[0]
    assert row["text"] == "t7" and row["output"] == "[m] echo: Say: t7"
    assert row["error"] is None and row["output_tokens"] > 0
    requests = server.stats().total_requests
    again = run_dataset(Echo(), _rows(250), out, resources=resources, rows_per_chunk=100,
                        progress=False)
    assert (again.rows, again.rows_run) == (250, 0)
    assert server.stats().total_requests == requests  # nothing paid twice


def test_failed_rows_are_kept_with_their_error(local_ray: None, server: LLMServer,
                                               tmp_path: Path) -> None:
    resources = server.resource_config({"fast": "m"}, max_retries=0)
    server.add_faults(Fault("500", times=3))
    summary = run_dataset(Echo(), _rows(40), tmp_path / "o", resources=resources,
                          rows_per_chunk=10, workers=1, progress=False)
    table = read_output(tmp_path / "o")
    assert table.num_rows == 40 and summary.rows == 40
    errors = [e for e in table.column("error").to_pylist() if e is not None]
    assert len(errors) == summary.errors == 3
    assert all("500" in e or "Server" in e for e in errors)


def test_parquet_directory_source_struct_output_and_columns(local_ray: None, server: LLMServer,
                                                           tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"body": [f"r{i}-{j}" for j in range(30)]}),
                       src / f"part-{i}.parquet")
    out = tmp_path / "out"
    run_dataset(Classify(), src, out, resources=server.resource_config({"fast": "m"}),
                columns={"text": "body"}, rows_per_chunk=25, progress=False)
    table = read_output(out)
    assert table.column("row_id").to_pylist() == list(range(90))
    assert table.column("body").to_pylist()[31] == "r1-1"  # row ids follow file order
    assert pa.types.is_struct(table.schema.field("output").type)
    assert set(table.column("output").to_pylist()[0]) == {"label", "score"}


def test_changed_pipeline_refuses_to_mix_outputs(local_ray: None, server: LLMServer,
                                                 tmp_path: Path) -> None:
    resources = server.resource_config({"fast": "m"})
    run_dataset(Echo(), _rows(5), tmp_path / "o", resources=resources, progress=False)
    with pytest.raises(CheckpointError, match="resume='fresh'"):
        run_dataset(Classify(), _rows(5), tmp_path / "o", resources=resources, progress=False)
    fresh = run_dataset(Classify(), _rows(5), tmp_path / "o", resources=resources,
                        resume="fresh", progress=False)
    assert fresh.rows_run == 5


def test_metrics_reach_the_prometheus_endpoint(local_ray: None, server: LLMServer,
                                               tmp_path: Path) -> None:
    resources = server.resource_config({"fast": "m"})
    run_dataset(Echo(), _rows(60), tmp_path / "o", resources=resources, rows_per_chunk=20,
                workers=1, progress=False)
    wanted = {"ray_plait_requests_total", "ray_plait_output_tokens_total",
              "ray_plait_rows_total", "ray_plait_request_latency_s_bucket"}
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as r:
            text = r.read().decode()
        if all(name in text for name in wanted):
            break
        time.sleep(1)
    missing = [name for name in wanted if name not in text]
    assert not missing, f"missing {missing}; plait lines: " + "\n".join(
        line for line in text.splitlines() if "plait" in line)[:3000]
    rows = [float(m) for m in re.findall(
        r'^ray_plait_rows_total\{[^}]*status="ok"[^}]*\} ([0-9.e+]+)', text, re.M)]
    assert sum(rows) >= 60
    requests = re.findall(r'^ray_plait_requests_total\{[^}]*alias="fast"[^}]*\} ([0-9.e+]+)',
                          text, re.M)
    assert sum(float(v) for v in requests) >= 60

"""Exactly-once dataset output on a real multi-node cluster: a node lost, a driver killed.

One ``ray.cluster_utils.Cluster`` (head + 2 worker nodes, one CPU each, fast health checks)
serves both tests. Dataset workers are pinned to the worker nodes by a custom resource, so a
removed node always takes a worker with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import cloudpickle
from ray.cluster_utils import Cluster

from plait import LLMInference, Module
from plait.io import DatasetSummary, read_output
from plait.testing import LLMServer
from plait_ray.dataset import run_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS = 400
WAIT_S = 45
HEALTH = {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
          "health_check_failure_threshold": 3}
WORKER_OPTIONS = {"worker_resources": {"plait_worker": 1}, "worker_num_cpus": 0.1}


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with LLMServer(latency=0.05).run_in_thread() as srv:
        srv.resource_config({"fast": "m"})  # the key env var, inherited by the cluster
        yield srv


@pytest.fixture(scope="module")
def cluster(server: Any) -> Iterator[Cluster]:
    cl = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": HEALTH})
    cl.add_node(num_cpus=1, resources={"plait_worker": 1})
    cl.add_node(num_cpus=1, resources={"plait_worker": 1})
    cl.wait_for_nodes()
    yield cl
    if ray.is_initialized():
        ray.shutdown()
    cl.shutdown()


def _rows() -> list[dict[str, str]]:
    return [{"text": f"t{i}"} for i in range(ROWS)]


def _wait_for_parts(out: Path, count: int, still_running: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if len(list(out.glob("part-*.parquet"))) >= count:
            return
        if not still_running():
            pytest.fail("The run ended before the fault could be injected; raise ROWS.")
        time.sleep(0.1)
    pytest.fail(f"fewer than {count} parts committed in {WAIT_S} s")


def _assert_exactly_once(out: Path) -> None:
    table = read_output(out)
    assert table.column("row_id").to_pylist() == list(range(ROWS))
    assert table.column("text").to_pylist() == [f"t{i}" for i in range(ROWS)]
    assert table.column("error").null_count == ROWS


DRIVER = textwrap.dedent("""
    import json, sys
    import ray
    from plait import LLMInference, Module
    from plait.resources import ResourceConfig
    from plait_ray.dataset import run_dataset

    class Echo(Module):
        def __init__(self):
            super().__init__()
            self.llm = LLMInference(alias="fast")
        def forward(self, text):
            return self.llm(f"Say: {text}")

    address, out, resources, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ray.init(address=address)
    summary = run_dataset(Echo(), [{"text": f"t{i}"} for i in range(rows)], out,
                          resources=ResourceConfig.from_dict(json.loads(resources)),
                          rows_per_chunk=20, workers=2, progress=False,
                          executor_options=OPTIONS)
    print(json.dumps({"rows": summary.rows, "rows_run": summary.rows_run}))
""").replace("OPTIONS)", repr(WORKER_OPTIONS) + ")")


@pytest.mark.timeout(120)
def test_killed_driver_then_rerun_gives_every_row_once(cluster: Cluster, server: Any,
                                                       tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / "out"
    config = {"endpoints": {"fast": {
        "provider_api": "openai", "model": "m", "base_url": server.openai_base_url,
        "api_key_env": "PLAIT_TESTING_API_KEY", "max_concurrent": 4}}}
    argv = [sys.executable, str(script), cluster.address, str(out), json.dumps(config),
            str(ROWS)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        _wait_for_parts(out, 3, lambda: first.poll() is None)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    committed = len(list(out.glob("part-*.parquet")))
    second = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads(second.stdout.strip().splitlines()[-1])
    assert report["rows"] == ROWS
    assert report["rows_run"] <= ROWS - 20 * committed  # committed chunks were not re-run
    _assert_exactly_once(out)


@pytest.mark.timeout(120)
def test_removed_node_chunks_are_redone_once(cluster: Cluster, server: Any,
                                             tmp_path: Path) -> None:
    ray.init(address=cluster.address)
    resources = server.resource_config({"fast": "m"}, max_concurrent=4)
    out = tmp_path / "out"
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["summary"] = run_dataset(Echo(), _rows(), out, resources=resources,
                                         rows_per_chunk=20, workers=2, progress=False,
                                         executor_options=WORKER_OPTIONS)
        except BaseException as exc:
            box["error"] = exc

    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    _wait_for_parts(out, 2, runner.is_alive)
    victim = cluster.list_all_nodes()[-1]
    cluster.remove_node(victim, allow_graceful=False)
    runner.join(timeout=90)
    assert not runner.is_alive(), "run_dataset did not finish after the node was removed"
    assert "error" not in box, box.get("error")
    summary: DatasetSummary = box["summary"]
    assert (summary.rows, summary.errors) == (ROWS, 0)
    _assert_exactly_once(out)

"""Provider batch APIs on a multi-node Ray cluster: a driver killed while polling resumes.

A ``ray.cluster_utils.Cluster`` (head + 2 worker nodes) runs a 2-level pipeline with both
levels batched (``executor="ray"``, two row workers, a ``checkpoint_dir`` both nodes see).
Each worker collects its rows' calls into batches and journals them under
``<checkpoint_dir>/batch_api``. The driver is SIGKILLed while the first level's batches are
being polled; the re-run (its rows may land on other workers) claims the journaled items of
every worker, waits for those batches and submits only the second level: 0 duplicate
submissions, every row exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
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

ROWS = 2_000

DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import ray
    from plait import LLMInference, Module
    from plait.testing._resources import resource_config_for

    class TwoCalls(Module):
        def __init__(self):
            super().__init__()
            self.draft = LLMInference(alias="fast")
            self.judge = LLMInference(alias="smart")

        def forward(self, text):
            return self.judge(f"Judge: {self.draft(text)}")

    address, url, ckpt, rows, out = sys.argv[1:6]
    ray.init(address=address)
    policy = {"linger": 0.5, "max_linger": 30.0, "poll_interval": 0.1}
    resources = resource_config_for(url, {"fast": "m-a", "smart": "m-b"}, "openai", None,
                                    "PLAIT_TESTING_API_KEY", {"batch": policy})
    module = TwoCalls().bind(resources=resources, checkpoint_dir=ckpt, progress=False,
                             executor="ray", executor_options={"workers": 2})
    outputs = module.run_sync([f"row-{i}" for i in range(int(rows))])
    Path(out).write_text(json.dumps(outputs))
""")


def expected(i: int) -> str:
    return f"[m-b] echo: Judge: [m-a] echo: row-{i}"


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    srv = LLMServer()
    with srv.run_in_thread() as handle:
        handle.resource_config({"fast": "m-a"})  # the key env var, inherited by the nodes
        yield srv


@pytest.fixture(scope="module")
def cluster(server: LLMServer) -> Iterator[Cluster]:
    cl = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                       "include_dashboard": False})
    cl.add_node(num_cpus=1)
    cl.add_node(num_cpus=1)
    cl.wait_for_nodes()
    ray.init(address=cl.address)
    yield cl
    ray.shutdown()
    cl.shutdown()


def _journaled(ckpt: Path, subdir: str = "batch_api") -> int:
    lines = 0
    for path in (ckpt / subdir).rglob("journal-*.jsonl"):
        lines += sum(1 for line in path.read_text().splitlines()
                     if line.endswith("}") and '"batch": ' in line)  # not intent lines
    return lines


def _polls(server: LLMServer) -> int:
    by_route = server.batches.stats().requests_by_route
    return sum(n for route, n in by_route.items() if route.startswith("GET ^/v1/batches/"))


def _wait_for(ready: Callable[[], bool], child: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if child.poll() is not None:
            err = child.stderr.read().decode() if child.stderr else ""
            raise AssertionError(f"driver exited early ({child.returncode}): {err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready within {seconds}s")
        time.sleep(0.1)


@pytest.mark.timeout(400)
def test_killed_driver_rerun_polls_the_same_batches(cluster: Cluster, server: LLMServer,
                                                    tmp_path: Path) -> None:
    script, ckpt, out = tmp_path / "driver.py", tmp_path / "ckpt", tmp_path / "out.json"
    script.write_text(DRIVER)
    handle_url = f"http://{server.host}:{server.port}"
    argv = [sys.executable, str(script), cluster.address, handle_url, str(ckpt), str(ROWS),
            str(out)]
    server.batches.reset_stats()
    server.batches.script(delay=600.0)  # the first level stays in progress until the kill
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, start_new_session=True)
    try:
        # Killed while polling, once every created batch is journaled.
        _wait_for(lambda: _polls(server) >= 6
                  and _journaled(ckpt) == server.batches.stats().batches_created, first, 240)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    at_kill = server.batches.stats()
    assert at_kill.batches_created >= 1 and not out.exists()
    time.sleep(3)  # Ray ends the dead driver's row workers; their batches stay unfinished

    server.batches.script(delay=0.2)  # the provider finishes the batches meanwhile
    rerun = subprocess.run(argv, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    stats = server.batches.stats()
    assert json.loads(out.read_text()) == [expected(i) for i in range(ROWS)]
    assert stats.duplicate_custom_ids == 0 and stats.duplicate_bodies == 0
    assert stats.items_submitted == 2 * ROWS
    assert stats.requests <= 300
    assert server.stats().total_requests == 0  # nothing went through the synchronous API


class TwoCalls(Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="fast")
        self.judge = LLMInference(alias="smart")

    def forward(self, text: str) -> str:
        return self.judge(f"Judge: {self.draft(text)}")


def test_run_dataset_batches_and_journals_in_the_output_dir(
        cluster: Cluster, server: LLMServer, tmp_path: Path) -> None:
    rows = 300
    resources = server.resource_config(
        {"fast": "m-a", "smart": "m-b"},
        batch={"linger": 0.3, "max_linger": 30.0, "poll_interval": 0.1})
    server.batches.reset_stats()
    server.batches.script(delay=0.2)
    out = tmp_path / "out"
    summary = run_dataset(TwoCalls(), [{"text": f"row-{i}"} for i in range(rows)], out,
                          resources=resources, workers=2, progress=False)
    assert (summary.rows, summary.errors) == (rows, 0)
    table = read_output(out).sort_by("row_id")
    assert table.column("output").to_pylist() == [expected(i) for i in range(rows)]
    assert pq.ParquetDataset(out).read().num_rows == rows  # the journal is not a part
    stats = server.batches.stats()
    assert stats.items_submitted == 2 * rows and stats.duplicate_bodies == 0
    assert stats.requests <= 100 and server.stats().total_requests == 0
    assert _journaled(out, "_batch_api") == stats.batches_created

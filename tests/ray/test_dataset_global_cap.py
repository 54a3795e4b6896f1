"""A global ``max_concurrent`` is exact on the dataset paths (run_dataset, map_dataset).

Both used to split the cap over workers (``cap // workers``, floor 1): a cap of 2 over 3
workers let 3 requests run at once. They now lease it cluster-wide from the limiter actor
of the first alias, like the Ray executor (``plait_ray.limits.caps``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray import cloudpickle

import plait_ray
from plait import LLMInference, Module
from plait.testing import LLMServer
from plait_ray.dataset import run_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(180)]

# Ray workers cannot import test modules: ship this module's pipelines by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CAP = 2
WORKERS = 3
ROWS = 60


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    # Slow replies, so every worker has requests waiting while others are in flight.
    with LLMServer(latency=0.1).run_in_thread() as srv:
        srv.resource_config({"fast": "m"})  # puts the key in the env before Ray starts
        yield srv  # type: ignore[misc]


@pytest.fixture(scope="module")
def local_ray(server: LLMServer) -> Iterator[None]:
    here = Path(__file__).resolve().parent
    # 4 logical CPUs: Ray Data's read task and three 0.1-CPU actors all fit.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(here), str(here.parent.parent)])}})
    yield
    ray.shutdown()


def test_run_dataset_holds_a_global_cap_over_more_workers(local_ray: None, server: LLMServer,
                                                          tmp_path: Path) -> None:
    # The endpoint's own cap is far above: only the call's global cap binds.
    resources = server.resource_config({"fast": "m"}, max_concurrent=32)
    server.reset_stats()
    summary = run_dataset(Echo(), [{"text": f"t{i}"} for i in range(ROWS)], tmp_path / "out",
                          resources=resources, rows_per_chunk=5, workers=WORKERS,
                          progress=False, executor_options={"max_concurrent": CAP})
    stats = server.stats()
    assert (summary.rows, summary.errors) == (ROWS, 0)
    assert stats.responses_ok == ROWS
    assert stats.max_in_flight <= CAP, stats


def test_map_dataset_holds_a_global_cap_over_more_actors(local_ray: None,
                                                         server: LLMServer) -> None:
    resources = server.resource_config({"fast": "m"}, max_concurrent=32)
    server.reset_stats()
    ds = ray.data.from_items([{"text": f"m{i}"} for i in range(ROWS)],  # pyright: ignore[reportUnknownMemberType]
                             override_num_blocks=12)
    out = plait_ray.map_dataset(ds, Echo(), resources=resources, workers=WORKERS,
                                batch_size=5, executor_options={"max_concurrent": CAP})
    rows = out.take_all()
    stats = server.stats()
    assert len(rows) == ROWS and all(r["error"] is None for r in rows)
    assert stats.responses_ok == ROWS
    assert stats.max_in_flight <= CAP, stats

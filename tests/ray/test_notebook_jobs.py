"""From a notebook to a cluster: submit examples/06_ray_dataset.py as a Ray Job, read Parquet.

The cluster is `ray start --head` with token auth, managed by the fixtures of test_jobs.py
(own process group, free ports, never `ray stop`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from plait.io import read_output
from plait_ray.jobs import submit_pipeline_job

ROOT = Path(__file__).resolve().parents[2]


def _load_job_fixtures() -> object:
    spec = importlib.util.spec_from_file_location("plait_tests_jobs_fixtures",
                                                  Path(__file__).with_name("test_jobs.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_jobs = _load_job_fixtures()
head_node = _jobs.head_node  # type: ignore[attr-defined]
client_auth = _jobs.client_auth  # type: ignore[attr-defined]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_example_job_writes_parquet(head_node: object, client_auth: None,
                                    tmp_path: Path) -> None:
    out = tmp_path / "reviews"
    result = submit_pipeline_job(
        head_node.dashboard_url,  # type: ignore[attr-defined]
        f"python examples/06_ray_dataset.py --output {out} --rows 60",
        working_dir=ROOT,
        excludes=(".venv", ".git", "__pycache__", "out", "*.pyc", ".ruff_cache"),
        pass_env=(),
        timeout_s=240,
    )
    assert "rows:    60 in output" in result.logs
    table = read_output(out)
    assert table.column("row_id").to_pylist() == list(range(60))
    assert table.column("error").null_count == 60
    assert set(table.column("output").to_pylist()[0]) == {"sentiment", "score"}

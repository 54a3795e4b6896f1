"""The first hour on a real cluster (issue 10 §2), on a private local Ray and real subprocesses.

Each test is one thing a new user hit: the README import, worker shutdown noise, an address
nothing answers on, keys missing on the workers, failed rows that never retried, Ctrl-C, and
a 500-row job that ran as one chunk on one worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import yaml
from ray import cloudpickle

from plait import LLMInference, Module
from plait.cli import main
from plait.errors import MissingAPIKeyError
from plait.io import OutputDir, read_output
from plait.testing import Fault, LLMServer
from plait_ray.dataset._worker import WorkerImportError

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

NOISE = ("Task was destroyed but it is pending", "Event loop is closed", "Traceback")

PIPELINE = textwrap.dedent("""
    from plait import LLMInference, Module

    class Shout(Module):
        def __init__(self):
            super().__init__()
            self.llm = LLMInference(alias="fast")

        def forward(self, text):
            from shout_helpers import prompt  # a sibling module the workers cannot import
            return self.llm(prompt(text))
""")
HELPERS = "def prompt(text):\n    return f'Shout: {text}'\n"


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer().run_in_thread() as srv:
        srv.resource_config({"fast": "m"})  # the key env var, inherited by Ray's workers
        yield srv  # type: ignore[misc]


@pytest.fixture(scope="module")
def local_ray(server: LLMServer) -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _project(root: Path, server: LLMServer, rows: int, key_env: str = "PLAIT_TESTING_API_KEY"
             ) -> list[str]:
    (root / "pipe.py").write_text(PIPELINE)
    (root / "shout_helpers.py").write_text(HELPERS)
    pq.write_table(pa.table({"text": [f"r{i}" for i in range(rows)]}), root / "in.parquet")
    (root / "resources.yaml").write_text(yaml.safe_dump({"endpoints": {"fast": {
        "provider_api": "openai", "model": "m", "base_url": server.openai_base_url,
        "api_key_env": key_env, "max_retries": 0}}}))
    return ["run", f"{root / 'pipe.py'}:Shout", "--input", str(root / "in.parquet"),
            "--output", str(root / "out"), "--resources", str(root / "resources.yaml"),
            "--no-progress", "--executor", "ray"]


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PLAIT_TESTING_API_KEY"}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", **extra})
    return env


def test_readme_names_exist() -> None:
    import plait_ray

    assert callable(plait_ray.run_dataset) and callable(plait_ray.map_dataset)


def test_cli_key_from_env_file_sibling_module_and_clean_shutdown(
        server: LLMServer, tmp_path: Path) -> None:
    # The key is only in a file the workers read; the pipeline calls a sibling module.
    args = _project(tmp_path, server, 40, key_env="FIRST_HOUR_KEY")
    (tmp_path / "keys.env").write_text("# provider keys\nexport FIRST_HOUR_KEY='k-1'\n")
    done = subprocess.run(
        [sys.executable, "-m", "plait", *args, "--address", "local",
         "--env-file", str(tmp_path / "keys.env")],
        capture_output=True, text=True, timeout=150, env=_subprocess_env(), cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    table = read_output(tmp_path / "out")
    assert table.column("error").null_count == 40, table.column("error").to_pylist()[:3]
    assert table.column("output").to_pylist()[5] == "[m] echo: Shout: r5"
    noise = [n for n in NOISE if n in done.stderr]
    assert not noise, done.stderr[-3000:]


def test_unreachable_address_fails_fast_with_the_fix(server: LLMServer, tmp_path: Path
                                                     ) -> None:
    args = _project(tmp_path, server, 3)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "plait", *args, "--address", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=90, env=_subprocess_env())
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Nothing answered as a Ray cluster at" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 90  # bounded (the subprocess timeout is the bound)


def test_key_set_in_driver_but_missing_on_workers(local_ray: None, server: LLMServer,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import plait_ray

    # Set after ray.init: the workers' environment (from the raylet) does not have it.
    monkeypatch.setenv("LATE_KEY", "k-2")
    resources: Any = {"endpoints": {"fast": {
        "provider_api": "openai", "model": "m", "base_url": server.openai_base_url,
        "api_key_env": "LATE_KEY"}}}
    with pytest.raises(MissingAPIKeyError) as info:
        plait_ray.run_dataset(Echo(), [{"text": "a"}], tmp_path / "o", resources=resources,
                              workers=1, progress=False)
    message = str(info.value)
    assert "missing on the Ray workers" in message
    assert "set in this driver's environment" in message and "env_file" in message
    env_file = tmp_path / "keys.env"
    env_file.write_text("LATE_KEY=k-2\n")
    summary = plait_ray.run_dataset(Echo(), [{"text": "a"}], tmp_path / "o",
                                    resources=resources, workers=1, progress=False,
                                    executor_options={"env_file": str(env_file)})
    assert (summary.rows, summary.errors) == (1, 0)


def test_failed_rows_exit_nonzero_then_resume_retries_them(
        local_ray: None, server: LLMServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = _project(tmp_path, server, 30)
    server.add_faults(Fault("500", match="r7", times=1), Fault("500", match="r21", times=1))
    assert main([*args, "--rows-per-chunk", "10"]) == 1
    err = capsys.readouterr().err
    assert "2 rows failed" in err and "row 7:" in err and "row 21:" in err
    before = server.stats().total_requests
    assert main([*args, "--rows-per-chunk", "10"]) == 0  # the endpoint is "fixed" now
    out = capsys.readouterr().out
    assert "errors:  0" in out and "(2 run now" in out
    assert server.stats().total_requests - before == 2  # only the failed rows ran again
    table = read_output(tmp_path / "out")
    assert table.column("row_id").to_pylist() == list(range(30))
    assert table.column("output").to_pylist()[21] == "[m] echo: Shout: r21"
    assert len(OutputDir(tmp_path / "out").part_paths()) == 3  # rewritten in place


def test_keep_failed_leaves_failed_rows(local_ray: None, server: LLMServer,
                                        tmp_path: Path) -> None:
    import plait_ray

    resources = server.resource_config({"fast": "m"}, max_retries=0)
    server.add_faults(Fault("500", match="x3", times=1))
    rows = [{"text": f"x{i}"} for i in range(6)]
    first = plait_ray.run_dataset(Echo(), rows, tmp_path / "o", resources=resources,
                                  progress=False)
    assert first.errors == 1
    kept = plait_ray.run_dataset(Echo(), rows, tmp_path / "o", resources=resources,
                                 retry_failed=False, progress=False)
    assert (kept.errors, kept.rows_run) == (1, 0)


def test_chunks_sized_from_the_dataset_and_workers(local_ray: None, server: LLMServer,
                                                   tmp_path: Path) -> None:
    import plait_ray

    resources = server.resource_config({"fast": "m"})
    rows = [{"text": f"c{i}"} for i in range(500)]
    summary = plait_ray.run_dataset(Echo(), rows, tmp_path / "o", resources=resources,
                                    workers=2, progress=False)
    assert summary.rows == 500
    assert len(OutputDir(tmp_path / "o").part_paths()) == 8  # 63 rows each, not one part


def test_ctrl_c_reports_committed_rows_and_how_to_resume(tmp_path: Path) -> None:
    with LLMServer(latency=0.2).run_in_thread() as slow:
        args = _project(tmp_path, slow, 400)
        proc = subprocess.Popen(
            [sys.executable, "-m", "plait", *args, "--address", "local", "--rows-per-chunk",
             "10", "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=_subprocess_env(PLAIT_TESTING_API_KEY="k"))
        try:
            deadline = time.monotonic() + 120
            while (not list((tmp_path / "out").glob("part-*.parquet"))
                   and time.monotonic() < deadline and proc.poll() is None):
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "rows are committed in" in err and "rerun the same command" in err
    assert "Traceback" not in err, err[-3000:]


def test_progress_advances_per_row_within_a_chunk(local_ray: None, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import re

    import plait_ray

    with LLMServer(latency=0.1).run_in_thread() as slow:
        resources = slow.resource_config({"fast": "m"}, max_concurrent=2)
        rows = [{"text": f"p{i}"} for i in range(40)]
        plait_ray.run_dataset(Echo(), rows, tmp_path / "o", resources=resources,
                              rows_per_chunk=40, workers=1, progress=True)
    counts = {int(n) for n in re.findall(r"\b(\d+)/40\b", capsys.readouterr().err)}
    # One chunk of 40 rows: a per-chunk bar would only ever show 0/40 and 40/40.
    assert counts & set(range(1, 40)), sorted(counts)


def test_module_the_workers_cannot_import_is_named(local_ray: None, server: LLMServer,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import plait_ray

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "fh_labels.py").write_text(
        "from pydantic import BaseModel\n\nclass Label(BaseModel):\n    label: str\n")
    monkeypatch.syspath_prepend(str(lib))  # importable here, not on the workers
    labels = importlib.import_module("fh_labels")

    class Classify(Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = LLMInference(alias="fast", response_format=labels.Label)

        def forward(self, text: str) -> Any:
            return self.llm(text)

    with pytest.raises(WorkerImportError) as info:
        plait_ray.run_dataset(Classify(), [{"text": "a"}], tmp_path / "o", workers=1,
                              resources=server.resource_config({"fast": "m"}), progress=False,
                              executor_options={"worker_start_timeout_s": 60})
    assert "No module named 'fh_labels' on the Ray worker" in str(info.value)
    assert "py_modules" in str(info.value) and "register_pickle_by_value" in str(info.value)

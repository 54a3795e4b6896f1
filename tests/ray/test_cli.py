"""`plait run` end to end: the local executor in-process, the Ray executor as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from plait.cli import main, parse_columns, parse_env
from plait.errors import ConfigError
from plait.io import read_output
from plait.testing import Fault, LLMServer

PIPELINE = textwrap.dedent("""
    from plait import LLMInference, Module

    class Shout(Module):
        def __init__(self):
            super().__init__()
            self.llm = LLMInference(alias="fast")

        def forward(self, text):
            return self.llm(f"Shout: {text}")
""")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    with LLMServer().run_in_thread() as server:
        (tmp_path / "pipe.py").write_text(PIPELINE)
        pq.write_table(pa.table({"body": [f"r{i}" for i in range(30)]}),
                       tmp_path / "in.parquet")
        (tmp_path / "resources.yaml").write_text(yaml.safe_dump({"endpoints": {"fast": {
            "provider_api": "openai", "model": "m", "base_url": server.openai_base_url,
            "api_key_env": "PLAIT_TESTING_API_KEY"}}}))
        server.resource_config({"fast": "m"})  # sets PLAIT_TESTING_API_KEY
        yield tmp_path, server


def _args(root: Path, *extra: str) -> list[str]:
    return ["run", f"{root / 'pipe.py'}:Shout", "--input", str(root / "in.parquet"),
            "--output", str(root / "out"), "--resources", str(root / "resources.yaml"),
            "--columns", "text=body", "--rows-per-chunk", "8", "--no-progress", *extra]


def test_local_executor_writes_parquet_and_summary(project: tuple[Path, Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = project
    assert main(_args(root)) == 0
    table = read_output(root / "out")
    assert table.column("row_id").to_pylist() == list(range(30))
    assert table.column("output").to_pylist()[3] == "[m] echo: Shout: r3"
    printed = capsys.readouterr().out
    assert "rows:    30 in output" in printed and "errors:  0" in printed


def test_bad_columns_are_reported_with_the_fix(project: tuple[Path, Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = project
    args = [a for a in _args(root) if a not in ("--columns", "text=body")]
    assert main(args) == 2
    assert "--columns text=COLUMN" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="arg=column"):
        parse_columns("text")


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_ray_executor_subprocess(project: tuple[Path, Any]) -> None:
    root, _ = project
    # A private local Ray (never another cluster on this machine): address "local".
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-m", "plait", *_args(root, "--executor", "ray",
                                                                 "--address", "local")],
                          capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows:    30 in output" in done.stdout
    assert read_output(root / "out").column("row_id").to_pylist() == list(range(30))


NEEDS_ARGS = textwrap.dedent("""
    from plait import LLMInference, Module

    class Tuned(Module):
        def __init__(self, model, temperature=0.0):
            super().__init__()
            self.llm = LLMInference(alias=model)

        def forward(self, text):
            return self.llm(text)
""")


def test_class_needing_arguments_is_refused_with_the_fix(
        project: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = project
    (root / "tuned.py").write_text(NEEDS_ARGS)
    args = _args(root)
    args[1] = f"{root / 'tuned.py'}:Tuned"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Tuned.__init__ needs arguments (model)" in err
    assert "pipeline = Tuned(model=...)" in err and "tuned.py:pipeline" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--rows-per-chunk", "--workers"])
def test_zero_sizes_are_refused_naming_the_flag(project: tuple[Path, Any], flag: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = project
    args = [a for a in _args(root) if a not in ("--rows-per-chunk", "8")]
    assert main([*args, flag, "0"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} 0" in err and "leave it out" in err
    assert not (root / "out").exists()  # refused before anything ran


def test_env_names_must_be_set_to_be_copied() -> None:
    assert parse_env(["A=1", "B"], {"B": "2"}) == {"A": "1", "B": "2"}
    with pytest.raises(ConfigError, match="--env NOPE=VALUE"):
        parse_env(["NOPE"], {})


def test_local_failed_rows_exit_1_then_resume_retries_only_them(
        project: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    root, server = project
    yaml_path = root / "resources.yaml"
    config = yaml.safe_load(yaml_path.read_text())
    config["endpoints"]["fast"]["max_retries"] = 0
    yaml_path.write_text(yaml.safe_dump(config))
    server.add_faults(Fault("500", match="r4", times=1), Fault("500", match="r17", times=1))
    assert main(_args(root)) == 1
    err = capsys.readouterr().err
    assert "2 rows failed" in err and "row 4:" in err and "row 17:" in err
    before = server.stats().total_requests
    assert main(_args(root)) == 0
    out = capsys.readouterr().out
    assert "errors:  0" in out and "(2 run now" in out
    assert server.stats().total_requests - before == 2
    table = read_output(root / "out")
    assert table.column("row_id").to_pylist() == list(range(30))
    assert table.column("output").to_pylist()[17] == "[m] echo: Shout: r17"
    server.add_faults(Fault("500", match="r9", times=1))
    assert main([*_args(root), "--resume", "fresh"]) == 1
    capsys.readouterr()
    assert main([*_args(root), "--keep-failed"]) == 1  # kept: nothing ran, still failing
    assert "(0 run now" in capsys.readouterr().out

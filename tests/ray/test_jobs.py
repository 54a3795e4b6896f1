"""submit_pipeline_job against a real `ray start --head` cluster with token auth on.

The cluster runs in its own process group and temp dir and is torn down by killing that
group: `ray stop --force` kills every Ray process on the host, including clusters other test
runs on this shared machine are using.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobSubmissionClient

from plait.errors import ConfigError
from plait_ray.auth import auth_headers, ray_auth_env
from plait_ray.jobs import (
    JobFailedError,
    JobSubmissionError,
    JobTimeoutError,
    submit_pipeline_job,
)

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HeadNode:
    dashboard_url: str
    env: dict[str, str] = field(repr=False)
    gcs_address: str = ""


@dataclass
class JobSpec:
    """One job to run: what the lead swaps for a real plait example pipeline."""

    working_dir: Path
    entrypoint: str
    output: Path
    env_vars: dict[str, str] = field(default_factory=dict)
    check: Callable[[dict[str, list[object]]], None] = lambda _table: None


def tiny_parquet_job(tmp_path: Path) -> JobSpec:
    """A driver script that writes a Parquet file and records which key it was given."""
    work = tmp_path / "job"
    work.mkdir()
    output = tmp_path / "out" / "result.parquet"
    (work / "write_parquet.py").write_text(textwrap.dedent("""
        import os, sys
        from pathlib import Path
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = Path(sys.argv[1])
        out.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({"row": [0, 1, 2], "text": ["a", "b", "c"],
                          "key_seen": [os.environ.get("OPENAI_API_KEY", "")] * 3,
                          "venv_uploaded": [Path(".venv").exists()] * 3})
        pq.write_table(table, out)
        print("wrote", out)
    """))
    # Must never be uploaded: stands in for a virtualenv in the project directory.
    (work / ".venv").mkdir()
    (work / ".venv" / "big.bin").write_bytes(b"\0" * 1024)

    def check(table: dict[str, list[object]]) -> None:
        assert table["row"] == [0, 1, 2]
        assert table["key_seen"] == ["test-key-passed-through"] * 3
        assert table["venv_uploaded"] == [False] * 3

    return JobSpec(
        working_dir=work,
        entrypoint=f"python write_parquet.py {output}",
        output=output,
        check=check,
    )


def _kill_cluster(pgid: int, temp_dir: Path) -> None:
    """Kill our cluster's process group, then any stray process naming our temp dir."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(str(temp_dir) in arg for arg in cmdline):
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture(scope="module")
def head_node() -> Iterator[HeadNode]:
    # Short path: Ray's unix socket paths live under the temp dir and must stay < 108 bytes,
    # which pytest's nested tmp paths plus Ray's session dir name can exceed.
    temp_dir = Path(tempfile.mkdtemp(prefix="plaitray", dir="/tmp"))
    token_file = temp_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    dashboard_port = _free_port()
    gcs_port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head",
        f"--port={gcs_port}",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--num-cpus=1",
        f"--temp-dir={temp_dir / 't'}",
    ]
    # A new session gives every daemon `ray start` spawns one process group we can kill.
    proc = subprocess.Popen(
        cmd, env=env, cwd=temp_dir, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out, _ = proc.communicate(timeout=START_TIMEOUT_S)
        if proc.returncode != 0:
            pytest.fail(f"ray start failed ({proc.returncode}):\n{out[-3000:]}")
        url = f"http://127.0.0.1:{dashboard_port}"
        _wait_for_job_api(url, token_file.read_text(), START_TIMEOUT_S)
        yield HeadNode(dashboard_url=url, env=env, gcs_address=f"127.0.0.1:{gcs_port}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        _kill_cluster(proc.pid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_job_api(url: str, token: str, timeout_s: float) -> None:
    """The dashboard's job module comes up some seconds after `ray start` returns."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(
        f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}
    )
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.5)
    pytest.fail(f"Ray job API at {url} not up after {timeout_s} s: {last}")


@pytest.fixture
def client_auth(head_node: HeadNode, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give this (submitting) process the cluster's token the way a user would."""
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", head_node.env["RAY_AUTH_TOKEN_PATH"])
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(JOB_TIMEOUT_S + START_TIMEOUT_S + 30)
@pytest.mark.parametrize("make_job", [tiny_parquet_job])
def test_job_writes_parquet(
    head_node: HeadNode,
    client_auth: None,
    make_job: Callable[[Path], JobSpec],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = make_job(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-passed-through")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    result = submit_pipeline_job(
        head_node.dashboard_url,
        spec.entrypoint,
        working_dir=spec.working_dir,
        env_vars=spec.env_vars,
        timeout_s=JOB_TIMEOUT_S,
    )

    assert str(result.status) == "SUCCEEDED", result.logs
    table = pq.read_table(spec.output).to_pydict()
    assert len(next(iter(table.values()))) > 0
    spec.check(table)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(JOB_TIMEOUT_S + START_TIMEOUT_S + 30)
def test_failing_job_raises_with_log_tail(
    head_node: HeadNode, client_auth: None, tmp_path: Path
) -> None:
    (tmp_path / "fail.py").write_text("print('marker-before-failure')\nraise SystemExit(3)\n")

    with pytest.raises(JobFailedError) as info:
        submit_pipeline_job(
            head_node.dashboard_url, "python fail.py", working_dir=tmp_path, pass_env=(),
            timeout_s=JOB_TIMEOUT_S,
        )

    assert str(info.value.status) == "FAILED"
    assert "marker-before-failure" in info.value.logs_tail
    assert "marker-before-failure" in str(info.value)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(JOB_TIMEOUT_S + START_TIMEOUT_S + 30)
def test_timeout_stops_the_job(head_node: HeadNode, client_auth: None, tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text("import time\nprint('started')\ntime.sleep(600)\n")

    with pytest.raises(JobTimeoutError) as info:
        submit_pipeline_job(
            head_node.dashboard_url, "python slow.py", working_dir=tmp_path, pass_env=(),
            timeout_s=3, poll_interval_s=0.5,
        )

    client = JobSubmissionClient(head_node.dashboard_url, headers=auth_headers())
    deadline = time.monotonic() + 60
    while not client.get_job_status(info.value.job_id).is_terminal():
        assert time.monotonic() < deadline, "job still running 60 s after stop_job"
        time.sleep(0.5)
    assert str(client.get_job_status(info.value.job_id)) == "STOPPED"


@pytest.mark.ray
@pytest.mark.timeout(START_TIMEOUT_S + 30)
def test_dashboard_requires_the_token(head_node: HeadNode, client_auth: None) -> None:
    url = f"{head_node.dashboard_url}/api/jobs/"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=10)
    assert info.value.code == 401

    request = urllib.request.Request(url, headers=auth_headers())
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


@pytest.mark.ray
@pytest.mark.timeout(START_TIMEOUT_S + 30)
def test_wrong_token_is_a_submission_error(
    head_node: HeadNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-cluster-token")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)

    with pytest.raises(JobSubmissionError, match="rejected"):
        submit_pipeline_job(head_node.dashboard_url, "true", working_dir=tmp_path, timeout_s=5)


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(JOB_TIMEOUT_S + START_TIMEOUT_S + 60)
def test_job_runs_with_the_built_wheel(head_node: HeadNode, client_auth: None,
                                       tmp_path: Path) -> None:
    # `make wheel` builds this project's distribution; the job installs it (pip from a path
    # every node can read) and imports plait from that install, not from the source tree.
    dist = tmp_path / "dist"
    built = subprocess.run(["make", "-s", "wheel", f"WHEEL_DIR={dist}"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("plait_pipelines-*.whl")
    work = tmp_path / "job"
    work.mkdir()
    (work / "show.py").write_text(
        "import importlib.metadata as m, plait, plait_ray.map_dataset\n"
        "print('PLAIT_FILE', plait.__file__)\n"
        "print('DIST', m.version('plait-pipelines'))\n")
    result = submit_pipeline_job(head_node.dashboard_url, "python show.py", working_dir=work,
                                 requirements=[str(wheel)], pass_env=(),
                                 timeout_s=JOB_TIMEOUT_S)
    plait_file = next(line.split(" ", 1)[1] for line in result.logs.splitlines()
                      if line.startswith("PLAIT_FILE "))
    assert "runtime_resources" in plait_file and not plait_file.startswith(str(REPO))
    assert "DIST 0.1.0" in result.logs


@pytest.mark.ray
@pytest.mark.timeout(START_TIMEOUT_S + 90)
def test_driver_detects_token_auth_and_says_what_to_do(head_node: HeadNode,
                                                       tmp_path: Path) -> None:
    code = ("from plait_ray import ensure_ray\n"
            f"ensure_ray({{'address': '{head_node.gcs_address}'}})\n"
            "import ray; print('CONNECTED', ray.cluster_resources().get('CPU'))\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    started = time.monotonic()
    refused = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=60)
    assert refused.returncode != 0
    assert "uses token authentication" in refused.stderr, refused.stderr[-2000:]
    assert "ray get-auth-token" in refused.stderr
    assert "InvalidAuthToken" not in refused.stderr  # no 20 s of Ray's retry log lines
    assert time.monotonic() - started < 60
    env["RAY_AUTH_TOKEN_PATH"] = head_node.env["RAY_AUTH_TOKEN_PATH"]  # RAY_AUTH_MODE unset
    joined = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=60)
    assert "CONNECTED 1.0" in joined.stdout, joined.stderr[-2000:]
    assert "InvalidAuthToken" not in joined.stderr


# --- plait_ray.auth without a cluster -------------------------------------------------------


def test_no_token_means_no_auth(tmp_path: Path) -> None:
    assert ray_auth_env({}, home=tmp_path) == {}
    assert auth_headers({}, home=tmp_path) == {}


def test_default_token_file_is_forwarded_by_path(tmp_path: Path) -> None:
    token_file = tmp_path / ".ray" / "auth_token"
    token_file.parent.mkdir()
    token_file.write_text("abc123\n")

    assert ray_auth_env({}, home=tmp_path) == {
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
    }
    assert auth_headers({}, home=tmp_path) == {"Authorization": "Bearer abc123"}


def test_token_env_wins_and_disabled_mode_sends_nothing(tmp_path: Path) -> None:
    env = {"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": "/nonexistent"}
    assert ray_auth_env(env, home=tmp_path) == {
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "from-env",
    }
    assert auth_headers({**env, "RAY_AUTH_MODE": "disabled"}, home=tmp_path) == {}


def test_token_mode_without_token_explains_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ray get-auth-token"):
        ray_auth_env({"RAY_AUTH_MODE": "token"}, home=tmp_path)
    with pytest.raises(ConfigError, match="RAY_AUTH_TOKEN_PATH"):
        auth_headers({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}, home=tmp_path)


def test_missing_working_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        submit_pipeline_job("http://127.0.0.1:1", "true", working_dir=tmp_path / "nope")

"""The security canary: an API key never reaches anything a run writes or ships.

A recognisable fake key (``sk-PLAIT-CANARY-<random hex>``) lives only in the environment
variable an endpoint's ``api_key_env`` names, and the loopback server requires it, so every
call really authenticates with it. Runs with checkpoints, traces, 429 and 401 "echo_key"
faults (whose error bodies quote the key and become error messages) and Python logging at
DEBUG go through the local executor, the Ray executor (batches on worker actors and a single
call lowered to tasks) and ``run_dataset`` (Parquet). Then every file written is scanned for
the key: checkpoints, Parquet, traces, the log file, and the whole Ray session directory
(logs, GCS and dashboard state, runtime_env files). Also scanned: every object the driver
sent to Ray or got back from it (captured in Ray's serializer), the Ray state API (what the
dashboard shows), and the errors the runs raised.

Forms looked for: the key's random part as text, the whole key hex-encoded, and the key
base64-encoded at each of the three byte alignments (standard and URL-safe alphabets).
Parquet and Arrow files are also decoded, since their pages may be compressed.

The key *is* in the environment of the driver and of Ray's worker processes: that is how
workers read it. Environment is not a file a run writes; Ray does not copy it into the
session directory (checked here with no allow-list).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import secrets
import shutil
import socket
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import ray
from ray import cloudpickle
from ray._private import serialization

from plait import LLMInference, Module
from plait.errors import BatchError, NodeExecutionError
from plait.execution import run
from plait.resources.config import ResourceConfig
from plait.testing import Fault, LLMServer
from plait.testing._thread import ThreadedServer
from plait_ray import shutdown_workers
from plait_ray.dataset import read_output, run_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

KEY_ENV = "PLAIT_CANARY_API_KEY"
TOKEN = secrets.token_hex(12)
KEY = f"sk-PLAIT-CANARY-{TOKEN}"
ROWS = [f"text {i}" for i in range(24)]
LOGGERS = ("", "plait", "plait_ray", "aiohttp")  # "" is the root: everything else too


class TwoCalls(Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="fast", system_prompt="Draft briefly.")
        self.judge = LLMInference(alias="smart")

    def forward(self, text: str) -> str:
        return self.judge(f"Judge: {self.draft(text)}")


# -- what a leak looks like ----------------------------------------------------------------

def _base64_forms(raw: bytes) -> list[bytes]:
    """Base64 of ``raw`` at each byte alignment, cut to the characters only ``raw`` decides."""
    forms: list[bytes] = []
    for pad in range(3):
        first = -(-pad * 8 // 6)
        last = (pad + len(raw)) * 8 // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.append(encode(b"\0" * pad + raw)[first:last])
    return forms


def _needles(token: str, key: str) -> list[bytes]:
    return [token.encode(), key.encode().hex().encode(), *_base64_forms(key.encode())]


NEEDLES = _needles(TOKEN, KEY)
# A decoy a Ray worker prints and logs on purpose: the scan must find it (positive control).
DECOY_TOKEN = secrets.token_hex(12)
DECOY = f"sk-PLAIT-DECOY-{DECOY_TOKEN}"


def leaks(data: bytes, needles: list[bytes] = NEEDLES) -> list[bytes]:
    """The forms of the key (or of ``needles``) found in ``data``."""
    return [needle for needle in needles if needle in data]


def _decoded(path: Path) -> bytes:
    """A file's content as stored and, for compressed formats, decoded."""
    data = path.read_bytes()
    extra = b""
    try:
        if path.suffix == ".parquet":
            extra = repr(pq.read_table(path).to_pylist()).encode()
        elif path.suffix == ".arrow":
            with ipc.open_file(path) as reader:
                extra = repr(reader.read_all().to_pylist()).encode()
        elif path.suffix == ".gz":
            extra = gzip.decompress(data)
    except Exception as exc:  # an unreadable file is scanned as stored, and reported
        extra = f"<cannot decode {path}: {exc!r}>".encode()
    return data + b"\n" + extra


def scan_files(root: Path, needles: list[bytes] = NEEDLES
               ) -> tuple[int, dict[str, list[bytes]]]:
    """(files scanned, path -> forms of the key found) for every file under ``root``."""
    found: dict[str, list[bytes]] = {}
    count = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue  # sockets, pipes; symlinks point at files scanned anyway
        count += 1
        hits = leaks(_decoded(path), needles)
        if hits:
            found[str(path.relative_to(root))] = hits
    return count, found


def error_texts(exc: BaseException) -> bytes:
    """Everything an error shows or ships: messages, tracebacks and its pickle."""
    errors = [exc, *getattr(exc, "failures", {}).values()]
    parts = [cloudpickle.dumps(exc)]
    for error in errors:
        parts.append("".join(traceback.format_exception(error)).encode())
        parts.append(repr(error).encode() + repr(vars(error)).encode())
    return b"\n".join(parts)


# -- the runs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def canary_env() -> Iterator[None]:
    """The key in ``KEY_ENV`` only (Ray workers started later inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, KEY)
        yield


@pytest.fixture(scope="module")
def server(canary_env: None) -> Iterator[ThreadedServer]:
    with LLMServer(require_api_key=KEY).run_in_thread() as srv:
        yield srv


def resources_for(server: ThreadedServer) -> ResourceConfig:
    config = server.resource_config({"fast": "m-a", "smart": "m-b"}, api_key_env=KEY_ENV,
                                    max_concurrent=4, max_retries=3)
    # Keep the key out of the config object itself: it must come from the environment.
    endpoints = {a: c.__class__(**c.to_dict()) for a, c in config.endpoints.items()}
    fresh = ResourceConfig(endpoints=endpoints)
    assert all(c.api_key is None for c in fresh.endpoints.values())
    assert fresh["fast"].resolve_api_key() == KEY
    return fresh


def arm_faults(server: ThreadedServer) -> None:
    """A 429 (retried) and, on one row's judge call, a 401 whose error body quotes the key.

    The body becomes the error message, so the key reaches every place a row's error is
    recorded unless it is masked (``plait.clients._redact``).
    """
    server.configure(faults=[Fault("429", retry_after=0.01), Fault("429", retry_after=0.01),
                             Fault("echo_key", model="m-b", match="text 7")])


class _DebugLog:
    """Python logging at DEBUG, for every logger, into one file."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path)
        self.handler.setLevel(logging.DEBUG)
        self.levels: dict[str, int] = {}

    def __enter__(self) -> None:
        for name in LOGGERS:
            logger = logging.getLogger(name)
            self.levels[name] = logger.level
            logger.setLevel(logging.DEBUG)
        logging.getLogger().addHandler(self.handler)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)


def _debug_logging_in_workers() -> None:
    """Ray workers log at DEBUG too (into the session's worker-*.err files)."""
    logging.basicConfig(level=logging.DEBUG)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)


class _RayTraffic:
    """Captures the bytes of every object the driver serializes for Ray or gets from it.

    Hooks Ray's private serializer (``ray._private.serialization``): pickle5 payloads the
    driver sends (``ray.put``, task and actor-call arguments) and every object it reads back
    (chunk results, task returns, errors).
    """

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self._patch = pytest.MonkeyPatch()

    def __enter__(self) -> _RayTraffic:
        context = serialization.SerializationContext
        send, receive = context._serialize_to_pickle5, context._deserialize_object

        def spy_send(ctx: Any, metadata: Any, value: Any) -> Any:
            self.sent.append(cloudpickle.dumps(value))
            return send(ctx, metadata, value)

        def spy_receive(ctx: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
            if data is not None:
                self.received.append(bytes(memoryview(data)))
            return receive(ctx, data, *args, **kwargs)

        self._patch.setattr(context, "_serialize_to_pickle5", spy_send)
        self._patch.setattr(context, "_deserialize_object", spy_receive)
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.undo()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _state_api_dump(dashboard_url: str) -> bytes:
    """What the dashboard shows: jobs, actors, tasks, workers, runtime envs, nodes."""
    from ray.util import state

    listed: dict[str, Any] = {}
    for name in ("list_jobs", "list_actors", "list_tasks", "list_workers",
                 "list_runtime_envs", "list_nodes", "list_placement_groups"):
        kwargs: dict[str, Any] = {"address": f"http://{dashboard_url}",
                                  "raise_on_missing_output": False}
        if name != "list_runtime_envs":
            kwargs["detail"] = True
        listed[name] = getattr(state, name)(**kwargs)
    return json.dumps(listed, default=repr).encode()


@pytest.fixture(scope="module")
def ray_run(server: ThreadedServer) -> Iterator[dict[str, Any]]:
    """(b) and (c) on a fresh local Ray with its own temp dir and dashboard, at DEBUG.

    Yields what to scan: ``root`` (every file the runs and Ray wrote), ``errors`` (what the
    runs raised), ``sent``/``received`` (Ray objects) and ``state`` (the state API's view).
    """
    if ray.is_initialized():
        pytest.skip("needs its own Ray session (another test module left Ray initialized)")
    # Short: Ray puts unix sockets under it (path length limit ~107).
    root = Path(tempfile.mkdtemp(prefix="plait-canary-", dir="/tmp"))
    box: dict[str, Any] = {"root": root}
    out = root / "out"
    out.mkdir()
    try:
        with _DebugLog(out / "driver-debug.log"), _RayTraffic() as traffic:
            context = ray.init(address="local", num_cpus=2, _temp_dir=str(root / "ray"),
                               include_dashboard=True, dashboard_port=_free_port(),
                               runtime_env={"worker_process_setup_hook":
                                            _debug_logging_in_workers})
            try:
                box["errors"] = _ray_runs(server, out)
                box["state"] = _state_api_dump(context.dashboard_url)
            finally:
                shutdown_workers()
                ray.shutdown()
        box["sent"], box["received"] = traffic.sent, traffic.received
        yield box
    finally:
        shutil.rmtree(root, ignore_errors=True)


@ray.remote(num_cpus=0)
def _leak_decoy() -> str:
    print(f"stdout {DECOY}")
    logging.getLogger("plait").debug("debug %s", base64.b64encode(DECOY.encode()).decode())
    return DECOY


def _ray_runs(server: ThreadedServer, out: Path) -> list[BaseException]:
    resources = resources_for(server)
    errors: list[BaseException] = []

    async def executor_runs() -> None:
        arm_faults(server)
        with pytest.raises(BatchError) as info:
            await run(TwoCalls(), ROWS, resources=resources, executor="ray",
                      executor_options={"workers": 2}, checkpoint_dir=out / "ckpt",
                      profile_path=out / "ray-trace.json")
        errors.append(info.value)
        assert sorted(info.value.failures) == [7]
        # A single call: LLM nodes lowered to Ray tasks; its 401 comes back as a task error.
        server.configure(faults=[Fault("echo_key", model="m-a")])
        with pytest.raises(NodeExecutionError) as single:
            await run(TwoCalls(), "one", resources=resources, executor="ray",
                      profile_path=out / "ray-single-trace.json")
        errors.append(single.value)
        server.configure(faults=[])
        assert await run(TwoCalls(), "two", resources=resources, executor="ray",
                         profile_path=out / "ray-single-ok.json") == (
            "[m-b] echo: Judge: [m-a] echo: two")

    asyncio.run(asyncio.wait_for(executor_runs(), 45))
    assert ray.get(_leak_decoy.remote(), timeout=30) == DECOY
    arm_faults(server)
    summary = run_dataset(TwoCalls(), [{"text": t} for t in ROWS], out / "dataset",
                          resources=resources, rows_per_chunk=6, workers=2, progress=False,
                          profile=out / "dataset-trace.json")
    server.configure(faults=[])
    assert (summary.rows, summary.errors) == (len(ROWS), 1)
    messages = [m for m in read_output(out / "dataset").column("error").to_pylist() if m]
    assert messages and "HTTP 401" in messages[0]  # the error body made it into the output
    assert "Bearer ***" in messages[0]  # ... with the echoed key masked
    return errors


# -- the tests -----------------------------------------------------------------------------

def test_key_forms_are_found_when_present() -> None:
    """The scanner itself: every encoding of the key in a blob is caught."""
    for blob in (KEY.encode(), base64.b64encode(b"x" + KEY.encode()), KEY.encode().hex().encode(),
                 base64.urlsafe_b64encode(b"Bearer " + KEY.encode()),
                 json.dumps({"Authorization": f"Bearer {KEY}"}).encode()):
        assert leaks(b"prefix " + blob + b" suffix"), blob
    assert not leaks(b"sk-PLAIT-CANARY-" + secrets.token_hex(12).encode())


def test_local_run_writes_and_raises_nothing_with_the_key(server: ThreadedServer,
                                                          tmp_path: Path) -> None:
    """(a) Local executor: checkpoints, trace, DEBUG log, 429 + 400 faults."""
    resources = resources_for(server)

    async def body() -> BatchError:
        arm_faults(server)
        with pytest.raises(BatchError) as info:
            await run(TwoCalls(), ROWS, resources=resources, checkpoint_dir=tmp_path / "ckpt",
                      profile_path=tmp_path / "trace.json")
        server.configure(faults=[])
        return info.value

    server.reset_stats()
    with _DebugLog(tmp_path / "debug.log"):
        error = asyncio.run(asyncio.wait_for(body(), 30))
    assert sorted(error.failures) == [7] and "HTTP 401" in str(error.failures[7])
    assert "Bearer ***" in str(error.failures[7])
    stats = server.stats()
    assert stats.total_requests >= 2 * len(ROWS) - 1  # every call authenticated: no 401s
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {"trace.json", "debug.log"} <= written and any(n.endswith(".arrow") for n in written)
    assert (tmp_path / "debug.log").stat().st_size > 0  # DEBUG logging really was captured
    count, found = scan_files(tmp_path)
    assert count >= 3 and found == {}
    assert leaks(error_texts(error)) == []


def test_ray_runs_write_no_file_with_the_key(ray_run: dict[str, Any]) -> None:
    """(b) + (c): outputs, traces, the driver's DEBUG log and the whole Ray session dir."""
    root: Path = ray_run["root"]
    out = root / "out"
    names = {p.name for p in out.rglob("*") if p.is_file()}
    assert {"ray-trace.json", "ray-single-trace.json", "dataset-trace.json",
            "driver-debug.log"} <= names
    assert any(n.endswith(".parquet") for n in names) and any(n.endswith(".arrow")
                                                              for n in names)
    sessions = list((root / "ray").glob("session_*"))
    assert sessions and any((s / "logs").is_dir() for s in sessions)
    worker_logs = list((root / "ray").glob("session_*/logs/worker-*"))
    assert worker_logs, "no worker logs: were the Ray workers' logs written elsewhere?"
    _, decoys = scan_files(root / "ray", _needles(DECOY_TOKEN, DECOY))
    assert any(p.endswith(".out") for p in decoys), f"a worker's print not found: {decoys}"
    assert any(p.endswith(".err") for p in decoys), f"a worker's DEBUG log not found: {decoys}"
    count, found = scan_files(root)
    assert count > 20
    assert found == {}, f"the key is in these files (forms found): {found}"


def test_ray_objects_and_dashboard_hold_no_key(ray_run: dict[str, Any]) -> None:
    """(b) + (c): what the driver shipped to Ray and got back, and the state API's view."""
    sent: list[bytes] = ray_run["sent"]
    received: list[bytes] = ray_run["received"]
    assert any(b"TwoCalls" in blob for blob in sent)  # the payloads were really captured
    assert any(KEY_ENV.encode() in blob for blob in sent)  # workers read this variable
    assert any(b"echo" in blob for blob in received)
    assert any(leaks(blob, _needles(DECOY_TOKEN, DECOY)) for blob in received)
    assert [i for i, blob in enumerate(sent) if leaks(blob)] == []
    assert [i for i, blob in enumerate(received) if leaks(blob)] == []
    assert b"TwoCalls" in ray_run["state"] or b"RowWorker" in ray_run["state"]
    assert leaks(ray_run["state"]) == []


def test_ray_run_errors_hold_no_key(ray_run: dict[str, Any]) -> None:
    """Error messages built from key-echoing 401 bodies, tracebacks and pickles of the errors."""
    errors: list[BaseException] = ray_run["errors"]
    assert len(errors) == 2
    for error in errors:
        assert leaks(error_texts(error)) == [], error


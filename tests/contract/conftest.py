"""Fixtures for the contract suite: every test here runs on every executor.

Fixtures (use these names in new files of ``tests/contract/``):

- ``executor``: ``"local"`` or ``"ray"`` (parametrized). Pass it as ``executor=`` to
  ``bind``/``run``. The Ray runtime is started once for the suite (``num_cpus=2``, no
  dashboard) and shut down after its last test; worker processes get the test directories
  on ``PYTHONPATH`` so pipelines defined in test modules unpickle there.
- ``llm_server``: the session's loopback LLM server (thread mode), reset before each test:
  no faults, no latency, no caps, zeroed stats. Script it with ``configure`` / ``add_faults``.
- ``make_resources``: ``make_resources({"fast": "model"}, max_concurrent=4, ...)`` returns a
  ``ResourceConfig`` pointing at ``llm_server`` (aliases default to ``{"fast": "m"}``; extra
  keywords are ``EndpointConfig`` fields). Its key reaches Ray workers through the
  environment variable ``PLAIT_TESTING_API_KEY``, never through pickles.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plait.resources.config import ResourceConfig
from plait.testing import LLMServer
from plait.testing._resources import DEFAULT_KEY, DEFAULT_KEY_ENV
from plait.testing._thread import ThreadedServer

_TESTS = Path(__file__).resolve().parent.parent


_STARTED: list[bool] = []  # Ray was started here (and is shut down when the suite ends)


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """A local Ray for the contract suite (started on first use, kept across its modules).

    One Ray for every module of ``tests/contract`` (starting one costs seconds); it is shut
    down after the suite's last test (``pytest_runtest_teardown`` below), because tests in
    tests/ray start their own clusters.
    """
    ray = pytest.importorskip("ray")

    # Workers inherit the driver's environment: set the key before they start.
    os.environ.setdefault(DEFAULT_KEY_ENV, DEFAULT_KEY)
    paths = [str(_TESTS / "contract"), str(_TESTS / "ray"), str(_TESTS.parent)]
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})
        _STARTED.append(True)
    yield


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Shut down the suite's Ray after its last test (before any other directory's)."""
    here = Path(__file__).resolve().parent
    if not _STARTED or (nextitem is not None and here in Path(nextitem.path).parents):
        return
    import ray

    from plait_ray import shutdown_workers

    _STARTED.clear()
    shutdown_workers()
    ray.shutdown()


@pytest.fixture(params=["local", "ray"])
def executor(request: pytest.FixtureRequest) -> str:
    """The executor's name; the Ray runtime is started for ``"ray"``."""
    if request.param == "ray":
        request.getfixturevalue("ray_runtime")
    return str(request.param)


@pytest.fixture(scope="session")
def _server() -> Iterator[ThreadedServer]:
    with LLMServer().run_in_thread() as server:
        yield server


@pytest.fixture
def llm_server(_server: ThreadedServer) -> ThreadedServer:
    """The session's loopback server, reset to defaults for this test."""
    _server.configure(faults=[], latency=0.0, latency_jitter=0.0, max_concurrency=None,
                      rate_limit=None)
    _server.reset_stats()
    return _server


@pytest.fixture
def make_resources(llm_server: ThreadedServer) -> Callable[..., ResourceConfig]:
    """Build a ResourceConfig pointing at ``llm_server``."""

    def make(aliases: dict[str, str] | None = None, **options: Any) -> ResourceConfig:
        return llm_server.resource_config(aliases or {"fast": "m"}, **options)

    return make

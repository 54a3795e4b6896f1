"""Suite-wide hooks.

One full run (1,200 tests in one process: hundreds of event loops, background threads, Ray
connections, torch) crashed with SIGSEGV during interpreter finalization, after pytest had
reported every result, turning a green run red. The cause was not found in native teardown
code; so after the summary the process shuts Ray down and leaves with pytest's own exit
status, skipping finalization. A failure inside any test is unaffected.
"""

from __future__ import annotations

import os
import sys

import pytest


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = getattr(config, "_plait_exit_status", None)
    if status is None or os.environ.get("PLAIT_TESTS_NORMAL_EXIT"):
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._plait_exit_status = exitstatus  # type: ignore[attr-defined]

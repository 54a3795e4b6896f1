"""Pytest fixtures for ``plait.testing``.

Enable with ``pytest_plugins = ["plait.testing.pytest_plugin"]`` in a ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plait.testing._thread import ThreadedServer
from plait.testing.server import LLMServer

__all__ = ["plait_testing_server"]


@pytest.fixture
def plait_testing_server() -> Iterator[ThreadedServer]:
    """A fresh loopback LLM server for one test, served from a background thread.

    Works for sync tests and for async tests on any event loop. Script it with
    ``.configure(...)``/``.add_faults(...)``; point plait at it with
    ``.resource_config({"alias": "model"})`` or the SDKs at ``.openai_base_url`` /
    ``.anthropic_base_url``.
    """
    with LLMServer().run_in_thread() as server:
        yield server

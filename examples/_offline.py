"""Shared by the examples: real providers when a key is set, else the built-in server.

Every example runs offline (no key, no network) against ``plait.testing.LLMServer``, a real
HTTP server on 127.0.0.1 speaking the OpenAI wire format. Set ``OPENAI_API_KEY`` to run the
same pipelines against OpenAI instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from plait.resources import OpenAIEndpointConfig, ResourceConfig
from plait.testing import LLMServer

MODELS = {"fast": "gpt-4o-mini", "smart": "gpt-4o", "optimizer": "gpt-4o"}


@contextlib.contextmanager
def example_resources(latency: float = 0.05, **limits: int) -> Iterator[ResourceConfig]:
    """Yield resources for aliases fast/smart/optimizer, offline unless OPENAI_API_KEY is set."""
    concurrency = {"fast": 20, "smart": 5, "optimizer": 2} | limits
    if os.environ.get("OPENAI_API_KEY"):
        yield ResourceConfig(endpoints={
            alias: OpenAIEndpointConfig(model=model, max_concurrent=concurrency[alias])
            for alias, model in MODELS.items()
        })
        return
    with LLMServer(latency=latency).run_in_thread() as server:
        print(f"(offline: built-in LLM server at {server.base_url}, "
              f"{latency * 1000:.0f} ms latency)")
        endpoints = {}
        for alias, model in MODELS.items():
            endpoints |= server.resource_config(
                {alias: model}, max_concurrent=concurrency[alias]
            ).endpoints
        yield ResourceConfig(endpoints=endpoints)

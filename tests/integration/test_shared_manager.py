"""Equal resource configs share one owner: ``run(p, x, resources=<dict or YAML>)`` ten times
builds one resource manager (one HTTP session, one limiter per endpoint), not ten, and the
loop's shutdown closes what the calls opened. Against the real loopback server.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from plait import LLMInference, Module, run
from plait.execution import shared
from plait.resources.config import ResourceConfig
from plait.resources.manager import ResourceManager, resources_key
from plait.testing import LLMServer


class One(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> Any:
        return self.llm(text)


def endpoints(server: LLMServer, key: str = "sk-shared-manager-key") -> dict[str, Any]:
    return {"endpoints": {"fast": {
        "provider_api": "openai", "model": "m", "base_url": server.openai_base_url,
        "api_key": key, "rate_limit": 6000,
    }}}


def live_sessions() -> list[aiohttp.ClientSession]:
    gc.collect()
    # type(), not isinstance(): isinstance reads __class__, which some libraries' objects
    # (torch's deprecated reduce_op) answer with a warning.
    return [o for o in gc.get_objects() if issubclass(type(o), aiohttp.ClientSession)]


def loop_managers() -> list[ResourceManager]:
    entry = shared._BY_LOOP.get(asyncio.get_running_loop())  # pyright: ignore[reportPrivateUsage]
    return [] if entry is None else [m for _, m in entry.managers]


@pytest.mark.parametrize("form", ["dict", "yaml"])
def test_ten_calls_with_equal_configs_share_one_manager(form: str, tmp_path: Path) -> None:
    # Strong references: a session freed during the test must not hand its id to a new one.
    alive_before = live_sessions()
    before = {id(s) for s in alive_before}

    async def main() -> list[aiohttp.ClientSession]:
        async with LLMServer() as server:
            config: Any = endpoints(server)
            if form == "yaml":
                import yaml

                config = tmp_path / "resources.yaml"
                config.write_text(yaml.safe_dump(endpoints(server)))
            outputs = [await run(One(), f"call {i}", resources=config) for i in range(10)]
            assert outputs == [f"[m] echo: call {i}" for i in range(10)]
            managers = loop_managers()
            assert len(managers) == 1  # not one per call
            pool = managers[0].pool("fast")
            assert pool.stats.requests == 10  # one pool, one limiter served every call
            opened = [s for s in live_sessions() if id(s) not in before]
            assert len(opened) == 1  # one HTTP session for all ten calls
            return opened

    opened = asyncio.run(main())
    assert all(s.closed for s in opened)  # the loop's shutdown closed it
    del alive_before


def test_configs_that_differ_keep_their_own_managers() -> None:
    async def main() -> int:
        async with LLMServer() as server:
            await run(One(), "a", resources=endpoints(server, "sk-first-key-000000"))
            await run(One(), "b", resources=endpoints(server, "sk-second-key-11111"))
            await run(One(), "c", resources=endpoints(server, "sk-first-key-000000"))
            return len(loop_managers())

    assert asyncio.run(main()) == 2  # different keys never share a client


def test_resources_key_is_by_value_and_includes_the_key() -> None:
    def config(key: str, **extra: Any) -> ResourceConfig:
        return ResourceConfig.from_dict({"endpoints": {"fast": {
            "provider_api": "openai", "model": "m", "api_key": key, **extra}}})

    assert resources_key(config("sk-aaaaaaaa")) == resources_key(config("sk-aaaaaaaa"))
    assert resources_key(config("sk-aaaaaaaa")) != resources_key(config("sk-bbbbbbbb"))
    assert resources_key(config("sk-aaaaaaaa")) != resources_key(
        config("sk-aaaaaaaa", max_concurrent=3))

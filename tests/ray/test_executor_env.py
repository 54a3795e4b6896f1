"""Keys for the Ray executor's workers given through ``executor_options`` (issue 10 §2).

The endpoints name key variables that are set nowhere in this process nor in Ray's: the only
way a worker can get the key is the option under test. The loopback server refuses any
request whose ``Authorization`` header lacks the key (``require_api_key``), counting it as a
client error, so ``responses_ok`` proves the worker sent the key it was given.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from plait import LLMInference, Module
from plait.errors import ConfigError, MissingAPIKeyError
from plait.execution.call import run
from plait.resources.config import OpenAIEndpointConfig, ResourceConfig
from plait.testing import LLMServer
from plait_ray import shutdown_workers

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SECRET = "sk-only-in-executor-options-51c2"
VARS_KEY = "PLAIT_TEST_EXECUTOR_ENV_VARS_KEY"
FILE_KEY = "PLAIT_TEST_EXECUTOR_ENV_FILE_KEY"
ROWS = [f"r{i}" for i in range(6)]


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(f"Say: {text}")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    here = Path(__file__).resolve().parent
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(here), str(here.parent.parent)])}})
    yield
    shutdown_workers()
    ray.shutdown()


def _resources(server: LLMServer, key_env: str) -> ResourceConfig:
    # No inline key: nothing in this process knows the key, only the option under test.
    return ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(
        model="m", base_url=server.openai_base_url, api_key_env=key_env)})


def _run(server: LLMServer, key_env: str, options: dict[str, Any]) -> Any:
    return run(Echo(), ROWS, resources=_resources(server, key_env), executor="ray",
               executor_options={"workers": 2, **options})


def test_a_key_given_only_as_env_vars_reaches_the_server(local_ray: None) -> None:
    assert VARS_KEY not in os.environ

    async def main() -> tuple[list[Any], Any]:
        async with LLMServer(require_api_key=SECRET) as server:
            outputs = await _run(server, VARS_KEY, {"env_vars": {VARS_KEY: SECRET}})
            return outputs, server.stats()

    outputs, stats = asyncio.run(main())
    assert len(outputs) == len(ROWS)
    assert stats.responses_ok == len(ROWS)
    assert stats.client_errors == 0  # every request carried the key: none was refused
    assert VARS_KEY not in os.environ


def test_a_key_given_only_as_env_file_reaches_the_server(local_ray: None,
                                                          tmp_path: Path) -> None:
    assert FILE_KEY not in os.environ
    env_file = tmp_path / "keys.env"
    env_file.write_text(f"# read by each worker\nexport {FILE_KEY}={SECRET}\n")

    async def main() -> tuple[BaseException | None, Any, Any]:
        async with LLMServer(require_api_key=SECRET) as server:
            # Without the option the workers lack the key, and the error says how to give it.
            try:
                await _run(server, FILE_KEY, {})
            except MissingAPIKeyError as exc:
                missing: BaseException | None = exc
            else:
                missing = None
            before = server.stats()
            await _run(server, FILE_KEY, {"env_file": str(env_file)})
            return missing, before, server.stats()

    missing, before, stats = asyncio.run(main())
    assert missing is not None and FILE_KEY in str(missing)
    assert "env_file" in str(missing) and "env_vars" in str(missing)
    assert before.total_requests == 0
    assert stats.responses_ok == len(ROWS)
    assert stats.client_errors == 0
    assert FILE_KEY not in os.environ  # only the workers read the file


def test_an_unreadable_env_file_names_the_path(local_ray: None, tmp_path: Path) -> None:
    missing_file = tmp_path / "absent.env"

    async def main() -> None:
        async with LLMServer(require_api_key=SECRET) as server:
            await _run(server, FILE_KEY, {"env_file": str(missing_file)})

    with pytest.raises(ConfigError, match="cannot be read on the Ray worker") as info:
        asyncio.run(main())
    assert str(missing_file) in str(info.value)


@pytest.mark.parametrize("options, culprit", [
    ({"env_var": {VARS_KEY: SECRET}}, "env_var"),
    ({"env_vars": {VARS_KEY: 42}}, "env_vars"),
    ({"env_file": 3}, "env_file"),
])
def test_a_bad_option_is_refused_naming_it(options: dict[str, Any], culprit: str) -> None:
    async def main() -> None:
        async with LLMServer() as server:
            await run(Echo(), ROWS, resources=_resources(server, VARS_KEY), executor="ray",
                      executor_options=options)

    with pytest.raises(ConfigError, match=culprit) as info:
        asyncio.run(main())
    assert SECRET not in str(info.value)  # a refused option never echoes a key value

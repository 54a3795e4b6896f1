"""Both wire formats x both transports against the plait.testing loopback server."""

import asyncio
import json
import socket

import pytest

from plait.clients.base import LLMRequest
from plait.clients.factory import make_client
from plait.errors import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    MissingAPIKeyError,
    ResponseFormatError,
)
from plait.resources.config import EndpointConfig, ResourceConfig
from plait.resources.manager import ResourceManager
from plait.testing import Fault, LLMServer

CASES = [("openai", "aiohttp"), ("openai", "sdk"), ("anthropic", "aiohttp"),
         ("anthropic", "sdk")]


@pytest.fixture(params=CASES, ids=[f"{p}-{t}" for p, t in CASES])
def case(request):
    return request.param


def run(coro, timeout=30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def with_manager(server, case, body, **options):
    provider, transport = case
    resources = server.resource_config({"fast": "model-a"}, provider_api=provider,
                                       transport=transport, **options)
    manager = ResourceManager(resources)
    await manager.start(["fast"])
    try:
        return await body(manager.pool("fast"))
    finally:
        await manager.aclose()


def test_success_and_usage(case):
    async def main():
        async with LLMServer() as server:
            async def body(pool):
                response, _ = await pool.call(LLMRequest("hello there", system_prompt="be brief",
                                                         max_tokens=50))
                assert "hello there" in response.text
                assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
                assert pool.stats.successes == 1
                return response

            await with_manager(server, case, body)
            assert server.stats().total_requests == 1

    run(main())


def test_json_schema_request(case):
    schema = {"type": "object", "properties": {"label": {"type": "string"},
                                               "score": {"type": "integer"}},
              "required": ["label", "score"]}

    async def main():
        async with LLMServer() as server:
            async def body(pool):
                _, parsed = await pool.call(
                    LLMRequest("classify", json_schema=schema, schema_name="verdict"),
                    validate=lambda r: json.loads(r.text))
                return parsed

            parsed = await with_manager(server, case, body)
            assert set(parsed) >= {"label", "score"}
            assert isinstance(parsed["score"], int)

    run(main())


def test_429_storm_is_survived_within_max_concurrent(case):
    async def main():
        async with LLMServer(rate_limit=40, rate_burst=4, latency=0.005) as server:
            async def body(pool):
                results = await asyncio.gather(
                    *(pool.call(LLMRequest(f"row {i}")) for i in range(40)))
                assert len(results) == 40
                return pool.stats.to_dict()

            stats = await with_manager(server, case, body, max_concurrent=6, max_retries=1)
            server_stats = server.stats()
            assert server_stats.rate_limited > 0  # the storm happened
            assert stats["rate_limited"] == server_stats.rate_limited
            assert server_stats.max_in_flight <= 6
            assert stats["successes"] == 40

    run(main())


def test_500_is_retried_then_succeeds(case):
    async def main():
        async with LLMServer(faults=[Fault("500"), Fault("503")]) as server:
            async def body(pool):
                await pool.call(LLMRequest("hi"))
                return pool.stats.retries

            assert await with_manager(server, case, body) == 2
            assert server.stats().total_requests == 3

    run(main())


def test_400_is_not_retried(case):
    async def main():
        async with LLMServer(faults=[Fault("400")]) as server:
            async def body(pool):
                with pytest.raises(BadRequestError) as info:
                    await pool.call(LLMRequest("hi"))
                assert info.value.status == 400 and info.value.alias == "fast"

            await with_manager(server, case, body)
            assert server.stats().total_requests == 1

    run(main())


@pytest.mark.parametrize("kind", ["malformed", "empty_choices", "truncated"])
def test_bad_replies_are_format_errors_and_retried(case, kind):
    async def main():
        async with LLMServer(faults=[Fault(kind), Fault(kind)]) as server:
            async def fails(pool):
                with pytest.raises((ResponseFormatError, APIConnectionError)) as info:
                    await pool.call(LLMRequest("hi"))
                assert info.value.retryable
                return type(info.value)

            error_type = await with_manager(server, case, fails, max_retries=0)

            async def recovers(pool):
                return (await pool.call(LLMRequest("hi")))[0]

            assert "hi" in (await with_manager(server, case, recovers, max_retries=2)).text
            return error_type

    error_type = run(main())
    assert error_type is ResponseFormatError


def test_timeout(case):
    async def main():
        async with LLMServer(faults=[Fault("hang", hang_seconds=10)]) as server:
            async def body(pool):
                with pytest.raises(APITimeoutError):
                    await pool.call(LLMRequest("hi"))

            await with_manager(server, case, body, timeout=0.3, max_retries=0)

    run(main())


def test_connection_refused_is_retried_then_reported(case):
    provider, transport = case
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}" + ("/v1" if provider == "openai" else "")
    config = EndpointConfig(provider, "m", base_url=base, api_key="k", transport=transport,
                            max_retries=1, timeout=5)
    manager = ResourceManager(ResourceConfig(endpoints={"fast": config}))

    async def main():
        try:
            with pytest.raises(APIConnectionError, match="gave up after 2 attempts") as info:
                await manager.pool("fast").call(LLMRequest("hi"))
            assert not isinstance(info.value, APITimeoutError)
            assert manager.stats()["fast"]["requests"] == 2
        finally:
            await manager.aclose()

    run(main())


def test_missing_key_raises_before_any_request(case, monkeypatch):
    provider, transport = case
    monkeypatch.delenv("PLAIT_INTEGRATION_NO_KEY", raising=False)

    async def main():
        async with LLMServer() as server:
            url = server.openai_base_url if provider == "openai" else server.anthropic_base_url
            config = EndpointConfig(provider, "m", base_url=url, transport=transport,
                                    api_key_env="PLAIT_INTEGRATION_NO_KEY")
            manager = ResourceManager(ResourceConfig(endpoints={"fast": config}))
            with pytest.raises(MissingAPIKeyError, match="PLAIT_INTEGRATION_NO_KEY"):
                await manager.start(["fast"])
            with pytest.raises(MissingAPIKeyError):
                make_client(config, "fast")
            assert server.stats().total_requests == 0

    run(main())

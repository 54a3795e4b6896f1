"""The HTTP adapter: OpenAIResponsesExecutor behind a batcher, against the loopback server."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from plait.batching import AsyncBatcher, Batcher
from plait.batching.http import OpenAIResponsesExecutor
from plait.errors import BadRequestError, MissingAPIKeyError, TransientError
from plait.testing import LLMServer
from plait.testing._thread import ThreadedServer
from plait.values import Value

KEY = "sk-test-responses-key"


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with LLMServer(latency=0.02, require_api_key=KEY).run_in_thread() as running:
        yield running


def make_executor(server: ThreadedServer, **options: object) -> OpenAIResponsesExecutor:
    return OpenAIResponsesExecutor(api_key=KEY, model="model-r",
                                   base_url=server.openai_base_url, **options)  # type: ignore[arg-type]


def test_batcher_runs_prompts_as_concurrent_requests_in_input_order(
    server: ThreadedServer,
) -> None:
    executor = make_executor(server)
    batcher = Batcher[str, str](max_batch=8, max_wait_ms=20)
    prompts = [f"prompt {i}" for i in range(24)]
    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            outputs = list(pool.map(lambda p: batcher.run(p, executor=executor), prompts))
    finally:
        batcher.close()
    assert outputs == [f"[model-r] echo: {p}" for p in prompts]
    stats = batcher.stats()
    assert stats.items == 24 and stats.batches < 24  # micro-batches, not one call per item
    served = server.stats()
    assert served.total_requests == 24 and served.responses_ok == 24
    assert served.max_in_flight > 1  # a batch's items are in flight together


def test_a_failed_item_fails_only_its_caller(server: ThreadedServer) -> None:
    server.add_faults({"kind": "400", "match": "bad", "times": 100})
    executor = make_executor(server)

    async def main() -> None:
        direct = await executor(["good 1", "bad 2", "good 3"])
        assert direct[0] == "[model-r] echo: good 1" and direct[2] == "[model-r] echo: good 3"
        error = direct[1]
        assert isinstance(error, Value) and error.is_error
        assert isinstance(error.payload, BadRequestError) and error.meta["index"] == 1

        batcher = AsyncBatcher[str, str](max_batch=4, max_wait_ms=20, executor=executor)
        results = await asyncio.gather(*(batcher.submit(p) for p in ["a", "bad b", "c"]),
                                       return_exceptions=True)
        assert results[0] == "[model-r] echo: a" and results[2] == "[model-r] echo: c"
        assert isinstance(results[1], BadRequestError)
        assert "HTTP 400" in str(results[1]) and KEY not in str(results[1])
        await batcher.close()
        await executor.aclose()

    asyncio.run(main())


def test_retryable_failures_are_retried_then_raised(server: ThreadedServer) -> None:
    server.add_faults({"kind": "503", "match": "flaky", "times": 1},
                      {"kind": "429", "match": "down", "times": 100, "retry_after": 0.01})
    executor = make_executor(server, max_retries=2)

    async def main() -> None:
        assert await executor.complete("flaky") == "[model-r] echo: flaky"
        with pytest.raises(TransientError, match="HTTP 429"):
            await executor.complete("down")
        await executor.aclose()

    asyncio.run(main())
    assert server.stats().rate_limited == 3  # the first try and two retries


def test_the_wire_format_matches_the_official_sdk(server: ThreadedServer) -> None:
    async def main() -> None:
        client = openai.AsyncOpenAI(api_key=KEY, base_url=server.openai_base_url)
        reply = await client.responses.create(model="model-r", input="hello",
                                              instructions="Be brief.")
        assert reply.output_text == "[model-r] echo: hello"
        assert reply.usage is not None and reply.usage.input_tokens > 0
        await client.close()

    asyncio.run(main())
    body = {"model": "model-r", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "parts"}]}]}
    executor = make_executor(server)
    assert asyncio.run(executor.complete(body)) == "[model-r] echo: parts"


def test_keys_are_required_and_never_pickled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY is not set"):
        OpenAIResponsesExecutor(model="m")
    executor = OpenAIResponsesExecutor(api_key=KEY, model="m")
    assert KEY not in repr(executor)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(executor)

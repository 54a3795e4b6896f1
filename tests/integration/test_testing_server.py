"""plait.testing.LLMServer against the real OpenAI and Anthropic SDKs over real sockets."""

from __future__ import annotations

import asyncio
import enum
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import aiohttp
import anthropic
import openai
import pydantic
import pytest

from plait.testing import ChatRequest, Fault, LLMServer, ThreadedServer

pytest_plugins = ["plait.testing.pytest_plugin"]

T = TypeVar("T")
KEY = "sk-secret-do-not-record"
USER = [{"role": "user", "content": "hello plait"}]


def run(coro_fn: Callable[[LLMServer], Awaitable[T]], **settings: Any) -> T:
    """Start a server on a fresh loop, run the test body, stop; bounded by 20 s."""

    async def main() -> T:
        async with LLMServer(**settings) as server:
            return await asyncio.wait_for(coro_fn(server), 20)

    return asyncio.run(main())


def oai(server: LLMServer | ThreadedServer, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=KEY, max_retries=0,
                              timeout=kw.pop("timeout", 10.0), **kw)


def ant(server: LLMServer | ThreadedServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key=KEY,
                                    max_retries=0, timeout=10.0)


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def raw_post(server: LLMServer, path: str, body: Any, timeout: float = 10.0) -> Any:
    timeouts = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=timeouts) as s,
        s.post(server.base_url + path, json=body) as r,
    ):
        return r.status, dict(r.headers), await r.read()


CHAT = {"model": "m", "messages": USER}


# ---------------------------------------------------------------- round trips


def test_openai_sdk_round_trip() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            reply = await client.chat.completions.create(
                model="gpt-x", temperature=0.2, max_tokens=50,
                messages=[{"role": "system", "content": "be brief"}, *USER],
            )
        assert reply.object == "chat.completion"
        assert reply.model == "gpt-x"
        assert reply.id.startswith("chatcmpl-")
        choice = reply.choices[0]
        assert choice.message.role == "assistant"
        assert choice.finish_reason == "stop"
        assert choice.message.content == "[gpt-x] echo: hello plait"
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == 5  # ceil(len("be brief" + "hello plait") / 4)
        assert reply.usage.completion_tokens == 7  # ceil(25 / 4)
        assert reply.usage.total_tokens == 12
        stats = server.stats()
        assert stats.requests_by_model == {"gpt-x": 1}
        assert (stats.prompt_tokens, stats.completion_tokens, stats.total_tokens) == (5, 7, 12)
        [rec] = server.requests
        assert rec.provider == "openai" and rec.body["temperature"] == 0.2

    run(body)


def test_anthropic_sdk_round_trip() -> None:
    async def body(server: LLMServer) -> None:
        async with ant(server) as client:
            msg = await client.messages.create(
                model="claude-x", system="sys", max_tokens=20, messages=USER  # type: ignore[arg-type]
            )
        assert msg.type == "message" and msg.role == "assistant" and msg.model == "claude-x"
        assert msg.stop_reason == "end_turn"
        assert msg.content[0].type == "text"
        assert msg.content[0].text == "[claude-x] echo: hello plait"
        assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 7)
        [rec] = server.requests
        assert rec.provider == "anthropic" and rec.body["system"] == "sys"

    run(body)


def test_models_endpoint() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            models = await client.models.list()
        assert [m.id for m in models.data] == ["plait-test-model"]

    run(body)


def test_responder_sync_and_async_see_the_request() -> None:
    seen: list[ChatRequest] = []

    async def responder(req: ChatRequest) -> str:
        seen.append(req)
        return f"{req.provider}:{req.user_text.upper()}"

    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            r = await client.chat.completions.create(model="m", messages=USER)
        assert r.choices[0].message.content == "openai:HELLO PLAIT"
        server.configure(responder=lambda req: f"sync {req.model}")
        async with ant(server) as aclient:
            m = await aclient.messages.create(model="c", max_tokens=5, messages=USER)  # type: ignore[arg-type]
        assert m.content[0].type == "text" and m.content[0].text == "sync c"
        assert seen[0].messages == ({"role": "user", "content": "hello plait"},)

    run(body, responder=responder)


# ---------------------------------------------------------------- structured output


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(pydantic.BaseModel):
    name: str = pydantic.Field(min_length=3, max_length=20)
    qty: int = pydantic.Field(ge=5, le=9)
    price: float = pydantic.Field(gt=1.0)


class Answer(pydantic.BaseModel):
    title: str
    ok: bool
    color: Color
    kind: Literal["a", "b"]
    items: list[Item] = pydantic.Field(min_length=2)
    note: str | None
    tags: list[str]
    nested: dict[str, int]


def test_json_schema_reply_validates_openai() -> None:
    async def body(server: LLMServer) -> None:
        schema = Answer.model_json_schema()
        async with oai(server) as client:
            r = await client.chat.completions.create(
                model="m", messages=USER,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "Answer", "schema": schema,
                                                 "strict": True}},
            )
        content = r.choices[0].message.content
        assert content is not None
        answer = Answer.model_validate_json(content)
        assert "hello plait" in answer.title  # data flow is visible in strings
        again = await raw_post(server, "/v1/chat/completions", {
            "model": "m", "messages": USER,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "Answer", "schema": schema}}})
        assert json.loads(again[2])["choices"][0]["message"]["content"] == content

    run(body)


def test_json_object_mode_and_anthropic_forced_tool() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            r = await client.chat.completions.create(
                model="m", messages=USER, response_format={"type": "json_object"})
        assert json.loads(r.choices[0].message.content or "") == {"reply": "[m] echo: hello plait"}
        async with ant(server) as aclient:
            m = await aclient.messages.create(
                model="c", max_tokens=100, messages=USER,  # type: ignore[arg-type]
                tools=[{"name": "answer", "description": "d",
                        "input_schema": Answer.model_json_schema()}],  # type: ignore[list-item]
                tool_choice={"type": "tool", "name": "answer"},
            )
        assert m.stop_reason == "tool_use"
        block = m.content[0]
        assert block.type == "tool_use" and block.name == "answer"
        Answer.model_validate(block.input)

    run(body)


# ---------------------------------------------------------------- latency and limits


def test_latency_is_applied_per_model() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            start = time.monotonic()
            await client.chat.completions.create(model="slow", messages=USER)
            slow = time.monotonic() - start
        assert slow >= 0.2  # asyncio.sleep never wakes early; no upper bound asserted

        async def one(model: str) -> None:
            async with oai(server) as c:
                await c.chat.completions.create(model=model, messages=USER)

        # Latency keeps requests in flight together: the overlap proves it without timing.
        await asyncio.gather(*(one("slow") for _ in range(4)))
        assert server.stats().max_in_flight_by_model["slow"] == 4

    run(body, latency={"slow": 0.25, "*": 0.0}, latency_jitter=0.01)


def test_rate_cap_enforced_with_fake_clock() -> None:
    now = [100.0]

    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            for _ in range(2):
                await client.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.RateLimitError) as info:
                await client.chat.completions.create(model="m", messages=USER)
            # Other models are not capped by a per-model limit.
            await client.chat.completions.create(model="other", messages=USER)
            now[0] += 0.5  # half a second at 2/s refills one token
            await client.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="m", messages=USER)
        headers = info.value.response.headers
        assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "500"
        assert info.value.body == {"message": "Rate limit reached for m (plait.testing).",
                                   "type": "requests", "param": None,
                                   "code": "rate_limit_exceeded"}
        stats = server.stats()
        assert stats.rate_limited == 2 and stats.responses_ok == 4
        assert stats.requests_by_model == {"m": 5, "other": 1}

    run(body, rate_limit={"m": 2}, clock=lambda: now[0])


def test_global_rate_limit_counts_all_models() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            await client.chat.completions.create(model="a", messages=USER)
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="b", messages=USER)

    run(body, rate_limit=1, clock=lambda: 0.0)


def test_concurrency_cap_and_max_in_flight() -> None:
    gate = asyncio.Event()

    async def responder(req: ChatRequest) -> str:
        await gate.wait()  # hold requests in flight until the test has seen the 429s
        return "done"

    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            async def one() -> str:
                try:
                    r = await client.chat.completions.create(model="m", messages=USER)
                    return r.choices[0].message.content or ""
                except openai.RateLimitError as exc:
                    assert exc.response.headers["retry-after-ms"] == "100"
                    return "429"

            tasks = [asyncio.create_task(one()) for _ in range(5)]
            await wait_until(lambda: server.stats().rate_limited == 3)
            assert server.stats().in_flight == 2
            gate.set()
            results = await asyncio.gather(*tasks)
        assert sorted(results) == ["429", "429", "429", "done", "done"]
        stats = server.stats()
        assert stats.max_in_flight == 2 and stats.max_in_flight_by_model == {"m": 2}
        assert stats.in_flight == 0

    run(body, max_concurrency={"m": 2}, responder=responder)


# ---------------------------------------------------------------- faults through the SDKs


def test_scripted_429_has_both_retry_headers_in_both_formats() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            with pytest.raises(openai.RateLimitError) as oinfo:
                await client.chat.completions.create(model="m", messages=USER)
        async with ant(server) as aclient:
            with pytest.raises(anthropic.RateLimitError) as ainfo:
                await aclient.messages.create(model="m", max_tokens=5, messages=USER)  # type: ignore[arg-type]
        for headers in (oinfo.value.response.headers, ainfo.value.response.headers):
            assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "1500"
        assert ainfo.value.body == {"type": "error", "error": {
            "type": "rate_limit_error", "message": "Rate limit reached for m (scripted fault)."}}
        stats = server.stats()
        assert stats.rate_limited == 2 and stats.faults_by_kind == {"429": 2}

    run(body, faults=[Fault("429", retry_after=1.5, times=2)])


def test_500_503_400_map_to_sdk_errors() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            with pytest.raises(openai.InternalServerError) as e500:
                await client.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.InternalServerError) as e503:
                await client.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(model="m", messages=USER)
        assert (e500.value.status_code, e503.value.status_code) == (500, 503)
        server.configure(faults=["500", "400"])
        async with ant(server) as aclient:
            with pytest.raises(anthropic.InternalServerError) as a500:
                await aclient.messages.create(model="m", max_tokens=5, messages=USER)  # type: ignore[arg-type]
            with pytest.raises(anthropic.BadRequestError):
                await aclient.messages.create(model="m", max_tokens=5, messages=USER)  # type: ignore[arg-type]
            ok = await aclient.messages.create(model="m", max_tokens=5, messages=USER)  # type: ignore[arg-type]
        assert ok.content[0].type == "text"
        assert a500.value.body == {"type": "error",
                                   "error": {"type": "api_error", "message": "Scripted 500 fault."}}
        stats = server.stats()
        assert stats.server_errors == 3 and stats.client_errors == 2 and stats.faults_injected == 5

    run(body, faults=["500", "503", Fault("400")])


def test_real_bad_request_is_400_in_provider_shape() -> None:
    async def body(server: LLMServer) -> None:
        status, _, raw = await raw_post(server, "/v1/messages", {"model": "m", "messages": USER})
        assert status == 400
        assert json.loads(raw)["error"]["type"] == "invalid_request_error"
        status, _, raw = await raw_post(server, "/v1/chat/completions", {"model": "m"})
        assert status == 400 and "messages" in json.loads(raw)["error"]["message"]

    run(body)


def test_body_faults_malformed_empty_truncated() -> None:
    async def body(server: LLMServer) -> None:
        status, _, raw = await raw_post(server, "/v1/chat/completions", CHAT)
        assert status == 200
        with pytest.raises(ValueError):
            json.loads(raw)
        status, _, raw = await raw_post(server, "/v1/chat/completions", CHAT)
        assert status == 200 and json.loads(raw)["choices"] == []
        with pytest.raises(aiohttp.ClientPayloadError):
            await raw_post(server, "/v1/chat/completions", CHAT)
        status, _, raw = await raw_post(server, "/v1/messages", {**CHAT, "max_tokens": 5})
        assert status == 200 and json.loads(raw)["content"] == []
        assert server.stats().responses_ok == 0  # faults are not successes

    run(body, faults=["malformed", "empty_choices", "truncated",
                      Fault("empty_choices", model="m")])


def test_close_and_hang_faults() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server, timeout=0.5) as client:
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.APITimeoutError):
                await client.chat.completions.create(model="hangs", messages=USER)
            ok = await client.chat.completions.create(model="m", messages=USER)
        assert ok.choices[0].message.content == "[m] echo: hello plait"
        assert server.stats().faults_by_kind == {"close": 1, "hang": 1}

    run(body, faults=[Fault("close", model="m"), Fault("hang", model="hangs", hang_seconds=10)])


def test_hang_ends_when_server_stops() -> None:
    async def main() -> None:
        server = await LLMServer(faults=[Fault("hang", hang_seconds=30)]).start()
        task = asyncio.create_task(raw_post(server, "/v1/chat/completions", CHAT, timeout=20))
        await wait_until(lambda: server.stats().in_flight == 1)
        await asyncio.wait_for(server.stop(), 10)
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_fault_filters_every_and_probability() -> None:
    async def body(server: LLMServer) -> None:
        statuses = []
        for text in ["a", "b", "boom 1", "c", "boom 2", "d"]:
            status, _, _ = await raw_post(server, "/v1/chat/completions", {
                "model": "m", "messages": [{"role": "user", "content": text}]})
            statuses.append(status)
        # "match" fault fires for the first "boom"; every=2 hits every 2nd matching request.
        assert statuses == [200, 500, 400, 500, 200, 500]

    run(body, faults=[Fault("400", match="boom"), Fault("500", every=2)])

    def draws(seed: int) -> list[int]:
        async def body(server: LLMServer) -> list[int]:
            return [(await raw_post(server, "/v1/chat/completions", CHAT))[0]
                    for _ in range(12)]
        return run(body, faults=[Fault("503", probability=0.5)], seed=seed)

    first = draws(7)
    assert first == draws(7) and set(first) == {200, 503}


# ---------------------------------------------------------------- control, auth, records


def test_control_endpoint_scripts_the_server() -> None:
    async def body(server: LLMServer) -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(server.base_url + "/_control", json={
                "faults": [{"kind": "500", "times": 1}], "latency": 0.01, "seed": 3,
            }) as r:
                assert r.status == 200
                assert (await r.json())["latency"] == 0.01
            async with s.post(server.base_url + "/_control", json={"bogus": 1}) as r:
                assert r.status == 400 and "bogus" in (await r.json())["error"]["message"]
            assert (await raw_post(server, "/v1/chat/completions", CHAT))[0] == 500
            async with s.post(server.base_url + "/_control",
                              json={"add_faults": ["400"]}) as r:
                assert r.status == 200
            assert (await raw_post(server, "/v1/chat/completions", CHAT))[0] == 400
            async with s.get(server.base_url + "/_stats") as r:
                stats = await r.json()
            assert stats["total_requests"] == 2 and stats["server_errors"] == 1
            async with s.get(server.base_url + "/_requests") as r:
                assert len((await r.json())["requests"]) == 2
            async with s.post(server.base_url + "/_control", json={"reset_stats": True}) as r:
                assert r.status == 200
        assert server.stats().total_requests == 0 and not server.requests

    run(body)


def test_require_api_key_and_headers_never_recorded() -> None:
    async def body(server: LLMServer) -> None:
        async with oai(server) as client:
            await client.chat.completions.create(model="m", messages=USER)
        async with ant(server) as aclient:
            await aclient.messages.create(model="m", max_tokens=5, messages=USER)  # type: ignore[arg-type]
        bad = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="wrong", max_retries=0)
        async with bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.chat.completions.create(model="m", messages=USER)
        abad = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="no", max_retries=0)
        async with abad:
            with pytest.raises(anthropic.AuthenticationError):
                await abad.messages.create(model="m", max_tokens=5, messages=USER)  # type: ignore[arg-type]
        assert len(server.requests) == 2
        assert KEY not in repr(list(server.requests))
        assert KEY not in json.dumps(server.config.to_dict())

    run(body, require_api_key=KEY)


def test_resource_config_points_at_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAIT_TESTING_API_KEY", raising=False)

    async def body(server: LLMServer) -> None:
        rc = server.resource_config({"fast": "model-a"}, max_concurrent=4)
        ep = rc["fast"]
        assert (ep.model, ep.base_url, ep.max_concurrent) == ("model-a", server.openai_base_url, 4)
        assert ep.api_key_env == "PLAIT_TESTING_API_KEY"
        assert ep.resolve_api_key() == KEY
        assert os.environ["PLAIT_TESTING_API_KEY"] == KEY
        arc = server.resource_config({"a": "claude"}, provider_api="anthropic")
        assert arc["a"].base_url == server.base_url

    run(body, require_api_key=KEY)


# ---------------------------------------------------------------- thread, fixture, spawn


def test_thread_mode_with_sync_sdk() -> None:
    with LLMServer(latency=0.0).run_in_thread() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key=KEY, max_retries=0,
                               timeout=10)
        with client:
            r = client.chat.completions.create(model="m", messages=USER)
            assert r.choices[0].message.content == "[m] echo: hello plait"
            server.add_faults(Fault("503"))
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="m", messages=USER)
        assert server.stats().total_requests == 2
        assert [r.model for r in server.requests] == ["m", "m"]
        server.reset_stats()
        assert server.stats().total_requests == 0


def test_pytest_fixture(plait_testing_server: ThreadedServer) -> None:
    plait_testing_server.configure(responder=lambda req: "scripted")

    async def main() -> str:
        async with oai(plait_testing_server) as client:
            r = await client.chat.completions.create(model="m", messages=USER)
        return r.choices[0].message.content or ""

    assert asyncio.run(main()) == "scripted"


def test_spawn_mode_scripted_over_http() -> None:
    with LLMServer.spawn(latency=0.0, faults=[{"kind": "500"}]) as server:
        pid = server.pid
        assert pid is not None
        client = openai.OpenAI(base_url=server.openai_base_url, api_key=KEY, max_retries=0,
                               timeout=10)
        with client:
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="m", messages=USER)
            r = client.chat.completions.create(model="m", messages=USER)
            assert r.choices[0].message.content == "[m] echo: hello plait"
            server.configure(rate_limit={"m": 1}, rate_burst=1)
            client.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="m", messages=USER)
        stats = server.stats()
        assert stats.total_requests == 4 and stats.rate_limited == 1
        assert len(server.requests) == 4
        server.reset_stats()
        assert server.stats().total_requests == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

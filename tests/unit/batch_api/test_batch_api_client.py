"""``BatchClient``: collecting, flushing, polling and resuming, on a fake clock.

The provider is an in-memory ``BatchAPI`` (the seam the real OpenAI/Anthropic adapters
implement); the real adapters are exercised against the loopback server in
``tests/integration/test_batch_api.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from plait.batch_api import BatchClient, BatchPolicy
from plait.batch_api._providers import BatchState, ItemOutcome
from plait.clients.base import LLMRequest, LLMResponse
from plait.errors import BadRequestError, LLMError, ServerError, TransientError
from plait.resources.clock import FakeClock
from plait.resources.config import OpenAIEndpointConfig

T = TypeVar("T")
CONFIG = OpenAIEndpointConfig("m", api_key="sk-unit-test-key")


class FakeHTTP:
    requests = 0

    async def aclose(self) -> None:
        return None


class FakeAPI:
    """Batches end after ``polls_to_end`` polls; prompts listed in ``fail`` fail."""

    provider = "openai"

    def __init__(self, *, polls_to_end: int = 1, fail: Mapping[str, LLMError] | None = None,
                 state_errors: Sequence[LLMError] = (), submit_error: LLMError | None = None,
                 never_end: bool = False) -> None:
        self.http = FakeHTTP()
        self.polls_to_end = polls_to_end
        self.fail = dict(fail or {})
        self.state_errors = list(state_errors)
        self.submit_error = submit_error
        self.never_end = never_end
        self.batches: dict[str, list[dict[str, Any]]] = {}
        self.polls: dict[str, int] = {}
        self.cancelled: list[str] = []
        self.tags: dict[str, str] = {}
        self.finds = 0

    def payload(self, request: LLMRequest) -> dict[str, Any]:
        return {"model": "m", "prompt": request.prompt}

    def line(self, custom_id: str, payload: Mapping[str, Any]) -> bytes:
        return json.dumps({"custom_id": custom_id, "body": payload}).encode()

    async def submit(self, lines: Sequence[bytes], intent: str) -> str:
        if self.submit_error is not None:
            raise self.submit_error
        batch_id = f"batch_{len(self.batches)}"
        self.batches[batch_id] = [json.loads(line) for line in lines]
        self.tags[intent] = batch_id
        return batch_id

    async def find(self, intent: str) -> str | None:
        self.finds += 1
        return self.tags.get(intent)

    async def state(self, batch_id: str) -> BatchState:
        if self.state_errors:
            raise self.state_errors.pop(0)
        self.polls[batch_id] = self.polls.get(batch_id, 0) + 1
        if self.never_end or self.polls[batch_id] < self.polls_to_end:
            return BatchState("running", "in_progress")
        return BatchState("ended", "completed")

    async def results(self, state: BatchState) -> dict[str, ItemOutcome]:
        out: dict[str, ItemOutcome] = {}
        for entries in self.batches.values():
            for entry in entries:
                prompt = entry["body"]["prompt"]
                out[entry["custom_id"]] = self.fail.get(prompt) or LLMResponse(f"re: {prompt}")
        return out

    async def cancel(self, batch_id: str) -> None:
        self.cancelled.append(batch_id)


def drive(body: Callable[[FakeClock], Awaitable[T]]) -> T:
    """Run ``body`` while advancing the fake clock until it finishes."""
    async def main() -> T:
        clock = FakeClock()
        task = asyncio.ensure_future(body(clock))
        for _ in range(10_000):
            if task.done():
                break
            await clock.advance(0.5)
        return await asyncio.wait_for(task, 5)

    return asyncio.run(main())


def client(api: FakeAPI, clock: FakeClock, journal: Path | None = None,
           **policy: Any) -> BatchClient:
    settings: dict[str, Any] = {"linger": 1.0, "max_linger": 10.0, "poll_interval": 1.0,
                                "journal_dir": str(journal) if journal else None} | policy
    return BatchClient(CONFIG, "bulk", BatchPolicy(**settings), clock=clock,
                       api=api)  # type: ignore[arg-type]


async def ask(c: BatchClient, prompts: Sequence[str]) -> list[str | LLMError]:
    async def one(p: str) -> str | LLMError:
        try:
            return (await c.complete(LLMRequest(p), timeout=1)).text
        except LLMError as exc:
            return exc
    try:
        return list(await asyncio.gather(*(one(p) for p in prompts)))
    finally:
        await c.aclose()


def test_calls_arriving_together_travel_in_one_batch() -> None:
    api = FakeAPI(polls_to_end=3)
    out = drive(lambda clock: ask(client(api, clock), [f"q{i}" for i in range(50)]))
    assert out == [f"re: q{i}" for i in range(50)]
    assert len(api.batches) == 1 and len(api.batches["batch_0"]) == 50
    assert api.polls == {"batch_0": 3}


def test_a_batch_is_cut_at_the_request_limit() -> None:
    api = FakeAPI()
    out = drive(lambda clock: ask(client(api, clock, max_requests=7), [str(i) for i in range(20)]))
    assert out == [f"re: {i}" for i in range(20)]
    assert [len(b) for b in api.batches.values()] == [7, 7, 6]


def test_a_batch_is_cut_at_the_byte_limit() -> None:
    api = FakeAPI()
    size = len(api.line("x" * 34, {"model": "m", "prompt": "p00"})) + 1
    out = drive(lambda clock: ask(client(api, clock, max_bytes=3 * size),
                                  [f"p{i:02d}" for i in range(10)]))
    assert len(out) == 10
    assert [len(b) for b in api.batches.values()] == [3, 3, 3, 1]


def test_a_request_larger_than_a_batch_is_refused_naming_its_size() -> None:
    api = FakeAPI()
    (error,) = drive(lambda clock: ask(client(api, clock, max_bytes=50), ["x" * 100]))
    assert isinstance(error, BadRequestError)
    assert "over the batch limit of 50 bytes" in str(error)
    assert api.batches == {}


def test_calls_trickling_in_are_cut_by_max_linger() -> None:
    api = FakeAPI()

    async def trickle(clock: FakeClock) -> list[str | LLMError]:
        c = client(api, clock, linger=2.0, max_linger=5.0)
        async def late(i: int) -> str:
            await clock.sleep(i * 1.0)  # a new call every second: linger never elapses
            return (await c.complete(LLMRequest(f"t{i}"), timeout=1)).text
        try:
            return list(await asyncio.gather(*(late(i) for i in range(12))))
        finally:
            await c.aclose()

    assert drive(trickle) == [f"re: t{i}" for i in range(12)]
    assert len(api.batches) >= 2
    assert sum(len(b) for b in api.batches.values()) == 12


def test_item_errors_reach_only_their_call() -> None:
    api = FakeAPI(fail={"bad": BadRequestError("no", status=400),
                        "busy": ServerError("later", status=500)})
    out = drive(lambda clock: ask(client(api, clock), ["ok", "bad", "busy"]))
    assert out[0] == "re: ok"
    assert isinstance(out[1], BadRequestError) and isinstance(out[2], ServerError)


def test_a_failed_submission_fails_its_calls_with_the_error() -> None:
    api = FakeAPI(submit_error=ServerError("upload failed", status=503))
    out = drive(lambda clock: ask(client(api, clock), ["a", "b"]))
    assert all(isinstance(e, ServerError) and "upload failed" in str(e) for e in out)


def test_transient_poll_errors_are_polled_through() -> None:
    api = FakeAPI(state_errors=[ServerError("blip", status=502)] * 3)
    assert drive(lambda clock: ask(client(api, clock), ["a"])) == ["re: a"]


def test_a_refused_poll_fails_the_calls_at_once() -> None:
    api = FakeAPI(state_errors=[BadRequestError("no such batch", status=404)])
    (error,) = drive(lambda clock: ask(client(api, clock), ["a"]))
    assert isinstance(error, BadRequestError) and "no such batch" in str(error)


def test_a_batch_past_max_wait_is_cancelled_and_its_calls_fail_retryably() -> None:
    api = FakeAPI(never_end=True)
    (error,) = drive(lambda clock: ask(client(api, clock, max_wait=30.0), ["a"]))
    assert isinstance(error, TransientError) and error.retryable
    assert "max_wait=30s" in str(error)
    assert api.cancelled == ["batch_0"]


def test_a_rerun_waits_for_journaled_batches_instead_of_submitting(tmp_path: Path) -> None:
    first = FakeAPI(never_end=True)

    async def killed(clock: FakeClock) -> None:
        c = client(first, clock, tmp_path)
        calls = [asyncio.ensure_future(c.complete(LLMRequest(p), timeout=1)) for p in "abc"]
        while not c.trackers:  # submitted and journaled: the run dies while polling
            await clock.sleep(0.5)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await c.aclose()

    drive(killed)
    assert len(first.batches) == 1
    second = FakeAPI()
    second.batches = first.batches  # the provider still has the batch
    out = drive(lambda clock: ask(client(second, clock, tmp_path), ["a", "b", "c", "d"]))
    assert out == ["re: a", "re: b", "re: c", "re: d"]
    assert list(second.batches) == ["batch_0", "batch_1"]
    assert [e["body"]["prompt"] for e in second.batches["batch_1"]] == ["d"]


def test_pool_retries_a_failed_item_in_a_new_batch() -> None:
    from plait.resources.limiter import LocalPermitSource
    from plait.resources.pool import EndpointPool

    api = FakeAPI()

    async def body(clock: FakeClock) -> str:
        c = client(api, clock)
        flaky = {"n": 0}
        results = api.results

        async def once_failing(state: BatchState) -> dict[str, ItemOutcome]:
            out = await results(state)
            flaky["n"] += 1
            if flaky["n"] == 1:
                return {k: ServerError("item failed", status=500) for k in out}
            return out

        api.results = once_failing  # type: ignore[method-assign]
        pool = EndpointPool("bulk", CONFIG, client=c, permits=LocalPermitSource(
            None, None, None, clock), clock=clock)
        try:
            response, _ = await pool.call(LLMRequest("again"))
            return response.text
        finally:
            await c.aclose()

    assert drive(body) == "re: again"
    assert len(api.batches) == 2
    ids = [e["custom_id"] for b in api.batches.values() for e in b]
    assert len(set(ids)) == 2 and ids[0].endswith("-0") and ids[1].endswith("-1")


@pytest.mark.parametrize("policy", [{"linger": 0.0}, {"max_linger": 0.0}])
def test_zero_linger_still_collects_what_is_ready(policy: dict[str, float]) -> None:
    api = FakeAPI()
    out = drive(lambda clock: ask(client(api, clock, **policy), ["a", "b", "c"]))
    assert out == ["re: a", "re: b", "re: c"]


def test_a_kill_before_the_batch_id_was_journaled_finds_the_batch_by_its_tag(
        tmp_path: Path) -> None:
    first = FakeAPI(never_end=True)

    async def killed(clock: FakeClock) -> None:
        c = client(first, clock, tmp_path)

        async def crash(*_: object) -> None:  # the process dies before the id is written
            raise RuntimeError("killed")

        c.journal.record = crash  # type: ignore[method-assign]
        results = await ask(c, ["a", "b"])
        assert all(isinstance(r, LLMError) for r in results)

    drive(killed)
    assert len(first.batches) == 1  # the provider created (and bills) it
    second = FakeAPI()
    second.batches, second.tags = first.batches, first.tags
    out = drive(lambda clock: ask(client(second, clock, tmp_path), ["a", "b", "c"]))
    assert out == ["re: a", "re: b", "re: c"]
    assert second.finds == 1
    assert [e["body"]["prompt"] for e in second.batches["batch_1"]] == ["c"]

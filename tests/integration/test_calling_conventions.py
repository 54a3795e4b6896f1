"""Calling a module the ways asyncio and PyTorch users already do, against the loopback server.

The rule under test (README, "Running"): while tracing a call is recorded; from synchronous
code an unbound module that makes no LLM call runs at once; every other call returns a
``PendingCall``, a real coroutine (``await``, ``asyncio.run``, ``create_task``, ``gather``)
that can also be streamed with ``async for``. Misuse is a ``CallError``.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from plait import (
    Batch,
    BatchResult,
    CallError,
    ExecutionSettings,
    InputError,
    LLMInference,
    Module,
    Sequential,
    run,
)
from plait.execution import PendingCall
from plait.testing import LLMServer


@pytest.fixture
def server() -> Iterator[Any]:
    with LLMServer().run_in_thread() as running:
        yield running


def prompts(server: Any) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in server.requests]


class Echo(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.llm(text)


class Shout(Module):
    """Plain Python, no LLM call."""

    leaf = True

    def forward(self, text: str) -> str:
        return text.upper()


class Plain(Module):
    """A composite with no LLM call: PyTorch-style, it runs at once from sync code."""

    def __init__(self) -> None:
        super().__init__()
        self.shout = Shout()

    def forward(self, text: str) -> str:
        return self.shout(f"<{text}>")


def bound_echo(server: Any) -> Echo:
    return Echo().bind(resources=server.resource_config({"fast": "m"}))


# --- asyncio conventions ------------------------------------------------------------------------


def test_asyncio_run_takes_a_call(server: Any) -> None:
    assert asyncio.run(bound_echo(server)("hi")) == "[m] echo: hi"
    assert asyncio.run(bound_echo(server)(["a", "b"])) == ["[m] echo: a", "[m] echo: b"]


def test_create_task_and_gather_take_calls(server: Any) -> None:
    pipeline = bound_echo(server)

    async def main() -> tuple[Any, Any]:
        task = asyncio.create_task(pipeline("task"))
        gathered = await asyncio.gather(pipeline("g1"), pipeline("g2"))
        return await task, gathered

    single, gathered = asyncio.run(asyncio.wait_for(main(), 30))
    assert single == "[m] echo: task" and gathered == ["[m] echo: g1", "[m] echo: g2"]


def test_a_call_is_a_coroutine(server: Any) -> None:
    call = bound_echo(server)("x")
    assert isinstance(call, PendingCall) and asyncio.iscoroutine(call)
    call.close()  # closed before it started: it never runs, and says nothing
    assert server.requests == []


def test_a_call_never_awaited_warns_like_a_coroutine(server: Any) -> None:
    with pytest.warns(RuntimeWarning, match="call of Echo was never awaited"):
        bound_echo(server)("dropped")
        gc.collect()
    assert server.requests == []


def test_a_call_runs_once(server: Any) -> None:
    async def main() -> None:
        call = bound_echo(server)("once")
        assert await call == "[m] echo: once"
        with pytest.raises(CallError, match="already awaited; a call runs once"):
            await call

    asyncio.run(asyncio.wait_for(main(), 30))


def test_streaming_keeps_working(server: Any) -> None:
    pipeline = bound_echo(server)

    async def main() -> tuple[list[int], list[Any], list[int]]:
        streamed = [r.index async for r in pipeline(["a", "b", "c"])]
        async with ExecutionSettings(streaming=True):
            awaited = await pipeline(["d", "e"])
            in_block = [r.output async for r in pipeline(["f"])]
        via_run = [r.index async for r in run(pipeline, ["g", "h"], streaming=True)]
        return sorted(streamed), [awaited, in_block], sorted(via_run)

    streamed, (awaited, in_block), via_run = asyncio.run(asyncio.wait_for(main(), 30))
    assert streamed == [0, 1, 2] and via_run == [0, 1]
    assert all(isinstance(r, BatchResult) and r.ok for r in awaited)
    assert [r.output for r in awaited] == ["[m] echo: d", "[m] echo: e"]
    assert in_block == ["[m] echo: f"]


# --- direct execution from synchronous code ----------------------------------------------------


def test_a_module_without_llm_calls_returns_its_result_from_sync_code() -> None:
    assert Plain()("hi") == "<HI>"
    assert Plain()(["a", "b"]) == ["<A>", "<B>"]
    assert Sequential(Shout(), Plain())("x") == "<X>"


def test_the_same_module_is_awaitable_in_async_code() -> None:
    async def main() -> Any:
        return await Plain()("hi")

    assert asyncio.run(asyncio.wait_for(main(), 30)) == "<HI>"


def test_run_is_always_awaitable() -> None:
    assert asyncio.run(run(Plain(), "x")) == "<X>"


def test_a_bound_module_returns_a_call_even_without_llm_calls(server: Any) -> None:
    plain = Plain().bind(resources=server.resource_config({"fast": "m"}))
    call = plain("x")
    assert isinstance(call, PendingCall)
    assert asyncio.run(call) == "<X>"


@pytest.mark.parametrize("use", [str, repr, bool, lambda c: f"{c}"])
def test_using_a_call_as_its_result_is_a_clear_error(server: Any, use: Any) -> None:
    call = Echo()("x")  # makes an LLM call: a PendingCall, even unbound
    if use is repr:
        assert "PendingCall of Echo" in repr(call) and "run_sync" in repr(call)
        call.close()
        return
    with pytest.raises(CallError, match=r"has not run.*pipeline\.run_sync\(x\)"):
        use(call)
    assert server.requests == []


def test_a_call_passed_as_an_input_is_a_clear_error(server: Any) -> None:
    pipeline = bound_echo(server)

    async def main() -> None:
        with pytest.raises(CallError, match="un-awaited call"):
            await pipeline(pipeline("inner"))

    asyncio.run(asyncio.wait_for(main(), 30))
    assert server.requests == []


# --- a list is a batch, unless forward takes a list --------------------------------------------


class Join(Module):
    leaf = True

    def forward(self, docs: list[str]) -> str:
        return " | ".join(docs)


class Digest(Module):
    def __init__(self) -> None:
        super().__init__()
        self.join = Join()
        self.llm = LLMInference(alias="fast")

    def forward(self, docs: list[str]) -> str:
        return self.llm(self.join(docs))


class Ask(Module):
    def __init__(self) -> None:
        super().__init__()
        self.join = Join()
        self.llm = LLMInference(alias="fast")

    def forward(self, docs: list[str], question: str) -> str:
        return self.llm(f"{question}: {self.join(docs)}")


def test_a_list_annotated_input_takes_one_list_as_one_row(server: Any) -> None:
    digest = Digest().bind(resources=server.resource_config({"fast": "m"}))
    assert digest.run_sync(["doc a", "doc b"]) == "[m] echo: doc a | doc b"
    assert prompts(server) == ["doc a | doc b"]  # one request, not one per character


def test_batch_runs_list_inputs_row_by_row(server: Any) -> None:
    digest = Digest().bind(resources=server.resource_config({"fast": "m"}))
    out = digest.run_sync(Batch([["a", "b"], ["c"]]))
    assert out == ["[m] echo: a | b", "[m] echo: c"]
    assert sorted(prompts(server)) == ["a | b", "c"]


def test_a_list_of_lists_for_a_list_input_is_ambiguous_and_says_how(server: Any) -> None:
    digest = Digest().bind(resources=server.resource_config({"fast": "m"}))
    with pytest.raises(InputError, match=r"holds 2 lists.*Batch\(rows\)"):
        digest.run_sync([["a", "b"], ["c"]])
    assert server.requests == []


def test_a_list_annotated_input_next_to_others_is_a_value(server: Any) -> None:
    ask = Ask().bind(resources=server.resource_config({"fast": "m"}))
    assert ask.run_sync(["x", "y"], "why") == "[m] echo: why: x | y"
    assert ask.run_sync([(["p"], "q1"), (["r", "s"], "q2")]) == [
        "[m] echo: q1: p", "[m] echo: q2: r | s"]


def test_an_unannotated_list_is_still_a_batch(server: Any) -> None:
    assert bound_echo(server).run_sync(["a", "b"]) == ["[m] echo: a", "[m] echo: b"]


# --- an LLMInference on its own -----------------------------------------------------------------


def test_an_llm_inference_can_be_called_on_its_own(server: Any) -> None:
    llm = LLMInference(alias="fast", system_prompt="Be brief.").bind(
        resources=server.resource_config({"fast": "m"}))

    async def main() -> tuple[Any, Any]:
        return await llm("prompt"), await llm(["p1", "p2"])

    one, many = asyncio.run(asyncio.wait_for(main(), 30))
    assert one == "[m] echo: prompt" and many == ["[m] echo: p1", "[m] echo: p2"]
    assert llm.run_sync("sync") == "[m] echo: sync"
    first = server.requests[0].body["messages"]
    assert first[0] == {"role": "system", "content": "Be brief."}


# --- run_sync inside a leaf that runs under run_sync -------------------------------------------


class NestedSync(Module):
    """A leaf whose forward() runs another pipeline synchronously."""

    leaf = True

    def __init__(self, inner: Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, text: str) -> Any:
        return self.inner.run_sync(text)


class NestedAsync(Module):
    """The right way: an async leaf awaits the other pipeline on the same loop."""

    leaf = True

    def __init__(self, inner: Module) -> None:
        super().__init__()
        self.inner = inner

    async def forward(self, text: str) -> Any:
        return await self.inner(text)


def test_run_sync_inside_a_leaf_under_run_sync_is_an_error_not_a_deadlock(server: Any) -> None:
    outer = NestedSync(bound_echo(server))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            outer.run_sync("x")
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(60)  # a deadlock would leave the thread waiting: fail instead of hanging
    assert not thread.is_alive(), "run_sync inside run_sync deadlocked"
    (error,) = outcome
    cause = error.__cause__ or error
    assert isinstance(cause, CallError) or isinstance(error, CallError)
    assert "wait for itself forever" in str(error) and "async def" in str(error)
    assert server.requests == []


def test_an_async_leaf_awaits_another_pipeline_under_run_sync(server: Any) -> None:
    assert NestedAsync(bound_echo(server)).run_sync("x") == "[m] echo: x"


# --- a named Sequential of LLM calls ------------------------------------------------------------


def test_a_named_sequential_of_llm_calls_runs_in_order(server: Any) -> None:
    from collections import OrderedDict

    chain = Sequential(OrderedDict([
        ("translate", LLMInference(alias="fast", system_prompt="Translate.")),
        ("fix", LLMInference(alias="fast", system_prompt="Fix.")),
    ])).bind(resources=server.resource_config({"fast": "m"}))
    assert chain.run_sync("hola") == "[m] echo: [m] echo: hola"
    assert prompts(server) == ["hola", "[m] echo: hola"]
    assert list(chain.state_dict()) == ["translate.system_prompt", "fix.system_prompt"]
    assert [n.target for n in chain.graph_for(1).llm_nodes()] == ["translate", "fix"]

"""The interpreter on its own: scheduling, node kinds, failures, long chains."""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from plait import Module, Parameter
from plait.clients.base import LLMRequest, Usage
from plait.errors import NodeExecutionError
from plait.execution.interpreter import Interpreter
from plait.graph import FormatField, GraphNode, InferenceGraph, Ref


class EchoRouter:
    """Answers every LLM request with its prompt (a stand-in endpoint for scheduling tests)."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def complete(self, alias: str, request: LLMRequest, *, parse: Callable[[str], Any],
                       node_id: str, row: int | None) -> tuple[Any, Usage]:
        self.prompts.append(request.prompt)
        await asyncio.sleep(0)
        return parse(f"echo:{request.prompt}"), Usage(input_tokens=1, output_tokens=2)


class AsyncUpper(Module):
    leaf = True

    async def forward(self, text: str) -> str:
        await asyncio.sleep(0)
        return text.upper()


class Exploding(Module):
    leaf = True

    def forward(self, text: str) -> str:
        return {"a": 1}[text]  # KeyError raised on this line: USER LINE


class Root(Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = AsyncUpper()
        self.boom = Exploding()
        self.style = Parameter("terse", requires_grad=False)


def node(node_id: str, kind: Any, target: Any, *args: Any, **kwargs: Any) -> GraphNode:
    deps = tuple(dict.fromkeys(a.node for a in (*args, *kwargs.values()) if isinstance(a, Ref)))
    return GraphNode(id=node_id, kind=kind, target=target, args=args, kwargs=kwargs, deps=deps,
                     module_type="Root", source="test_interpreter.py:1")


def graph_of(*nodes: GraphNode, output: Any) -> InferenceGraph:
    return InferenceGraph(nodes={n.id: n for n in nodes},
                          input_ids=[n.id for n in nodes if n.kind == "input"], output=output)


def run(graph: InferenceGraph, *args: Any, **options: Any) -> Any:
    interp = Interpreter(graph, Root(), EchoRouter())
    return asyncio.run(interp.run_row(args, {}, **options))


def chain(length: int) -> InferenceGraph:
    """input -> async leaf -> `length` format steps, each appending one character."""
    nodes = [node("input:x", "input", 0), node("up", "module", "up", Ref("input:x"))]
    prev = "up"
    for i in range(length):
        nid = f"format_{i}"
        nodes.append(node(nid, "format", (FormatField(0, "", ""), "."), Ref(prev)))
        prev = nid
    return graph_of(*nodes, output=Ref(prev))


def test_a_chain_of_10000_nodes_finishes_without_recursion() -> None:
    # Run with a small stack budget: a scheduler that recursed once per node would overflow.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        outcome = run(chain(10_000), "ab")
    finally:
        sys.setrecursionlimit(limit)
    assert outcome.output == "AB" + "." * 10_000


def test_a_chain_after_an_async_node_does_not_hang_in_a_callback() -> None:
    # 700 steps after an async node: the old scheduler recursed inside the task's done
    # callback; the RecursionError was only logged and the row never finished.
    outcome = run(chain(700), "x")
    assert outcome.output == "X" + "." * 700


def test_node_kinds_compute_the_python_result() -> None:
    g = graph_of(
        node("input:x", "input", 0),
        node("input:k", "input", "k"),
        node("param:style", "param", "style"),
        node("strip", "method", "strip", Ref("input:x")),
        node("cut", "getitem", slice(None, 3), Ref("strip")),
        node("fmt", "format", ("[", FormatField(0, "r", ""), "|", FormatField(1, "", ">7"), "]"),
             Ref("cut"), Ref("param:style")),
        node("llm", "llm", "llm", Ref("fmt")),
        node("call", "call", "operator:concat", Ref("cut"), Ref("input:k")),
        output={"fmt": Ref("fmt"), "call": Ref("call"), "lit": 3},
    )

    class WithLLM(Root):
        def __init__(self) -> None:
            super().__init__()
            from plait import LLMInference

            self.llm = LLMInference(alias="a")

    router = EchoRouter()
    interp = Interpreter(g, WithLLM(), router)
    outcome = asyncio.run(interp.run_row(("  hello  ",), {"k": "K"}, record=True))
    assert outcome.output == {"fmt": "['hel'|  terse]", "call": "helK", "lit": 3}
    assert router.prompts == ["['hel'|  terse]"]
    assert outcome.values is not None and outcome.values["llm"] == "echo:['hel'|  terse]"
    assert (outcome.input_tokens, outcome.output_tokens) == (1, 2)


def test_parameters_are_read_when_the_row_runs() -> None:
    g = graph_of(node("param:style", "param", "style"), output=Ref("param:style"))
    root = Root()
    interp = Interpreter(g, root, EchoRouter())
    assert asyncio.run(interp.run_row((), {})).output == "terse"
    root.style.value = "verbose"
    assert asyncio.run(interp.run_row((), {})).output == "verbose"


def test_real_text_with_private_use_characters_reaches_the_model_unchanged() -> None:
    # U+E000/U+E001 appear in real data (icon fonts, PDF extraction); they are only data.
    text = "icon \ue000\ue001 and \ue0000:1\ue001"
    g = graph_of(node("input:x", "input", 0),
                 node("fmt", "format", ("Q: ", FormatField(0, "", "")), Ref("input:x")),
                 node("llm", "llm", "llm", Ref("fmt")), output=Ref("llm"))

    class WithLLM(Root):
        def __init__(self) -> None:
            super().__init__()
            from plait import LLMInference

            self.llm = LLMInference(alias="a")

    router = EchoRouter()
    outcome = asyncio.run(Interpreter(g, WithLLM(), router).run_row((text,), {}))
    assert router.prompts == [f"Q: {text}"] and outcome.output == f"echo:Q: {text}"


def test_a_failing_leaf_keeps_the_users_frame_as_the_cause() -> None:
    g = graph_of(node("input:x", "input", 0), node("boom", "module", "boom", Ref("input:x")),
                 output=Ref("boom"))
    with pytest.raises(NodeExecutionError) as info:
        run(g, "missing")
    err = info.value
    assert isinstance(err.__cause__, KeyError) and err.__cause__ is err.cause
    assert err.node_id == "boom" and err.module_path == "boom"
    printed = "".join(traceback.format_exception(err))
    assert "USER LINE" in printed and "test_interpreter.py" in printed
    assert "The above exception was the direct cause" in printed


def test_a_failure_stops_the_row_and_cancels_nodes_still_running() -> None:
    cancelled: list[str] = []

    class Slow(Module):
        leaf = True

        async def forward(self, text: str) -> str:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(text)
                raise
            return text

    root = Root()
    root.slow = Slow()
    g = graph_of(node("input:x", "input", 0), node("slow", "module", "slow", Ref("input:x")),
                 node("up", "module", "up", Ref("input:x")),
                 node("boom", "module", "boom", Ref("up")),
                 output=[Ref("slow"), Ref("boom")])

    async def main() -> None:
        interp = Interpreter(g, root, EchoRouter())
        with pytest.raises(NodeExecutionError, match="boom"):
            await asyncio.wait_for(interp.run_row(("k",), {}), timeout=30)

    asyncio.run(main())
    assert cancelled == ["k"]  # started before the failure, cancelled by it


def test_independent_async_nodes_run_concurrently() -> None:
    # Each waits for the other to have started: only finishes if both run at once.
    started: dict[str, asyncio.Event] = {}

    class Meet(Module):
        leaf = True

        def __init__(self, me: str, other: str) -> None:
            super().__init__()
            self.me, self.other = me, other

        async def forward(self, text: str) -> str:
            started.setdefault(self.me, asyncio.Event()).set()
            await started.setdefault(self.other, asyncio.Event()).wait()
            return self.me + text

    root = Root()
    root.a = Meet("a", "b")
    root.b = Meet("b", "a")
    g = graph_of(node("input:x", "input", 0), node("a", "module", "a", Ref("input:x")),
                 node("b", "module", "b", Ref("input:x")), output=(Ref("a"), Ref("b")))

    async def main() -> Any:
        return await asyncio.wait_for(
            Interpreter(g, root, EchoRouter()).run_row(("!",), {}), timeout=30)

    assert asyncio.run(main()).output == ("a!", "b!")


def test_preset_values_are_not_recomputed() -> None:
    g = graph_of(node("input:x", "input", 0), node("boom", "module", "boom", Ref("input:x")),
                 node("fmt", "format", (FormatField(0, "", ""), "!"), Ref("boom")),
                 output=Ref("fmt"))
    outcome = run(g, "missing", preset={"boom": "from checkpoint"})
    assert outcome.output == "from checkpoint!"


def test_a_graph_without_nodes_returns_its_literal_output() -> None:
    assert run(graph_of(output={"a": [1, "b"]})).output == {"a": [1, "b"]}

"""Fixtures: run a forward() body traced (graph + interpreter) and as plain Python.

``same_as_python(body, *inputs)`` checks the contract of the tracer: the traced graph, run on
real values, gives exactly what the same Python gives (output and prompts sent), or tracing
raises a ``TraceError``. ``Pipe(body)`` is a pipeline whose forward() is ``body(self, ...)``,
with ``self.llm`` (an echo model when run) and ``self.template`` (a Parameter).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from plait import LLMInference, Module, Parameter
from plait.clients.base import LLMRequest, Usage
from plait.execution.interpreter import Interpreter
from plait.graph import InferenceGraph
from plait.tracing import trace


class EchoRouter:
    """Answers each LLM request with ``reply(prompt)``; records the prompts sent."""

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    async def complete(self, alias: str, request: LLMRequest, *, parse: Callable[[str], Any],
                       node_id: str, row: int | None) -> tuple[Any, Usage]:
        self.prompts.append(request.prompt)
        return parse(self.reply(request.prompt)), Usage(input_tokens=0, output_tokens=0)


def echo(prompt: str) -> str:
    """The fake model: says what it was asked, with a mark and surrounding whitespace."""
    return f"  Echo: {prompt}  "


class Pipe(Module):
    """A pipeline whose forward() is ``body(self, *inputs)``."""

    def __init__(self, body: Callable[..., Any]) -> None:
        super().__init__()
        self.body = body
        self.llm = LLMInference(alias="fast")
        self.template = Parameter("Answer {input} briefly.", requires_grad=False)

    def forward(self, *inputs: Any) -> Any:
        return self.body(self, *inputs)


class PlainPipe:
    """The same attributes as ``Pipe`` but plain Python: the LLM is ``echo``."""

    def __init__(self, pipe: Pipe, sent: list[str]) -> None:
        def llm(prompt: str) -> str:
            sent.append(prompt)
            return echo(prompt)

        self.llm = llm
        self.template = pipe.template


def run_graph(pipe: Pipe, graph: InferenceGraph, *inputs: Any) -> tuple[Any, list[str]]:
    """Run ``graph`` for one row; returns the output and the prompts sent."""
    router = EchoRouter(echo)
    outcome = asyncio.run(Interpreter(graph, pipe, router).run_row(inputs, {}))
    return outcome.output, router.prompts


def same_as_python(body: Callable[..., Any], *inputs: Any) -> Any:
    """Trace ``body``, run it on ``inputs``, and check it equals plain Python; returns it.

    Raises:
        TraceError: From tracing (the other allowed outcome).
    """
    pipe = Pipe(body)
    graph = trace(pipe, num_args=len(inputs))
    output, prompts = run_graph(pipe, graph, *inputs)
    sent: list[str] = []
    expected = body(PlainPipe(pipe, sent), *inputs)
    assert output == expected
    assert prompts == sent
    return output


@pytest.fixture(name="same_as_python")
def same_as_python_fixture() -> Callable[..., Any]:
    """``same_as_python(body, *inputs)``: see the module docstring."""
    return same_as_python


@pytest.fixture(name="pipe_class")
def pipe_class_fixture() -> type[Pipe]:
    """The ``Pipe`` class."""
    return Pipe


@pytest.fixture(name="run_graph")
def run_graph_fixture() -> Callable[..., tuple[Any, list[str]]]:
    """``run_graph(pipe, graph, *inputs) -> (output, prompts sent)``."""
    return run_graph

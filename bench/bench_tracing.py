"""Tracing and interpreter figures (issue 8): a 10,000-node chain, and the cost of the check trace.

Prints a table; writes nothing. No server: LLM nodes are answered in-process, so the figures are
the tracer's and the interpreter's own cost.

    .venv/bin/python bench/bench_tracing.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from plait import LLMInference, Module, Parameter
from plait.clients.base import LLMRequest, Usage
from plait.execution.interpreter import Interpreter
from plait.tracing import Tracer
from plait.tracing.encoding import compact


class Echo:
    async def complete(self, alias: str, request: LLMRequest, *, parse: Callable[[str], Any],
                       node_id: str, row: int | None) -> tuple[Any, Usage]:
        return parse(request.prompt), Usage(input_tokens=0, output_tokens=0)


class Chain(Module):
    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length
        self.llm = LLMInference(alias="a")

    def forward(self, x: Any) -> Any:
        text = self.llm(x)
        for _ in range(self.length):
            text = text + "."
        return text


class Typical(Module):
    """Five LLM calls, f-strings, a Parameter: the shape of a real extract-and-compare row."""

    def __init__(self) -> None:
        super().__init__()
        self.instruction = Parameter("Extract the facts.", requires_grad=False)
        self.extract = LLMInference(alias="fast")
        self.summarize = LLMInference(alias="fast")
        self.judge = LLMInference(alias="smart")

    def forward(self, a: Any, b: Any) -> Any:
        fa = self.extract(f"{self.instruction}\n\nDocument:\n{a}")
        fb = self.extract(f"{self.instruction}\n\nDocument:\n{b}")
        sa = self.summarize(f"Summarize these facts:\n{fa}")
        sb = self.summarize(f"Summarize these facts:\n{fb}")
        return self.judge(f"Compare.\nA: {sa}\nB: {sb}\nAnswer A or B.")


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rows: list[tuple[str, str]] = []
    chain = Chain(10_000)
    t_trace = best_of(lambda: Tracer(chain).trace(1, ()), 3)
    graph = Tracer(chain).trace(1, ())
    t_compile = best_of(lambda: Interpreter(graph, chain, Echo()), 3)
    interp = Interpreter(graph, chain, Echo())
    limit = sys.getrecursionlimit()
    t_row = best_of(lambda: asyncio.run(interp.run_row(("x",), {})), 5)
    assert sys.getrecursionlimit() == limit
    rows += [
        ("10,000-node chain: trace", f"{t_trace * 1e3:.0f} ms"),
        ("10,000-node chain: compile interpreter", f"{t_compile * 1e3:.0f} ms"),
        ("10,000-node chain: run one row", f"{t_row * 1e3:.0f} ms "
                                           f"({t_row / 10_000 * 1e6:.1f} µs/node)"),
    ]

    typical = Typical()
    both = [best_of(lambda: Tracer(typical).trace(2, ()), 20) for _ in range(3)]
    once = [best_of(lambda: Tracer(typical, compact())._trace_once(2, ()), 20)  # pyright: ignore[reportPrivateUsage]
            for _ in range(3)]
    rows += [
        ("typical pipeline: trace, one pass", f"{statistics.median(once) * 1e3:.2f} ms"),
        ("typical pipeline: trace, both passes (default)",
         f"{statistics.median(both) * 1e3:.2f} ms"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()

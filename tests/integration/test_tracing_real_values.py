"""Issue 8 end to end: what reaches the loopback server is what the same Python would send.

Derived strings computed on real values, live Parameters under a cached graph, real text with
the tracer's private-use characters, and a refused forward() that sends nothing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from plait import LLMInference, Module, Parameter, TraceError
from plait.testing import LLMServer

GLYPHS = "Nerd font \ue000\ue001 icon; \ue0000:1\ue001 and \ue000abcdefghijkl7\ue001 text"


def arun(coro: Any, timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def user_text(body: dict[str, Any]) -> str:
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content)  # pyright: ignore
    return content


class Digest(Module):
    def __init__(self) -> None:
        super().__init__()
        self.template = Parameter("Digest: {input}", description="how to ask for a digest")
        self.head = LLMInference(alias="fast")
        self.digest = LLMInference(alias="fast")

    def forward(self, doc: Any) -> Any:
        head = self.head(f"{doc}"[:24].strip().upper())
        return self.digest(self.template.value.format(input=f"{head}".strip()[:40]))


def python_digest(doc: str, template: str, reply: Any) -> list[str]:
    """The prompts the same forward() sends in plain Python, given the server's replies."""
    first = doc[:24].strip().upper()
    return [first, template.format(input=reply(first).strip()[:40])]


def test_derived_strings_and_live_parameters_reach_the_server_exactly() -> None:
    docs = ["  the quick brown fox jumps over the lazy dog  ", GLYPHS]

    async def main() -> list[list[str]]:
        async with LLMServer() as server:
            pipe = Digest().bind(resources=server.resource_config({"fast": "m"}))
            await pipe(docs)
            graph = pipe.graph_for(1)
            pipe.load_state_dict({"template": "Shorter: {input}"}, strict=False)
            outputs = await pipe(docs)
            assert pipe.graph_for(1) is graph  # cached, yet the new template was sent
            prompts = [user_text(r.body) for r in server.requests]
            return [prompts, [str(o) for o in outputs]]

    prompts, outputs = arun(main())

    def reply(prompt: str) -> str:
        return f"[m] echo: {prompt}"

    expected = [p for template in ("Digest: {input}", "Shorter: {input}") for doc in docs
                for p in python_digest(doc, template, reply)]
    assert sorted(prompts) == sorted(expected)
    assert outputs == [reply(python_digest(d, "Shorter: {input}", reply)[1]) for d in docs]
    assert any("\ue000" in p for p in prompts)  # the glyphs went out as data


class Escapes(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, q: Any) -> Any:
        return self.llm(json.dumps({"question": f"{q}"}))  # ESCAPES


def test_a_refused_forward_sends_nothing_and_names_the_line() -> None:
    async def main() -> int:
        async with LLMServer() as server:
            pipe = Escapes().bind(resources=server.resource_config({"fast": "m"}))
            with pytest.raises(TraceError) as info:
                await pipe(["a", "b"])
            assert "test_tracing_real_values.py:" in str(info.value)
            assert "F.to_json" in str(info.value)
            return server.stats().total_requests

    assert arun(main()) == 0

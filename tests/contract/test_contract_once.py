"""Every node runs exactly once per row, on every executor (side effects are counted).

LLM calls are counted by the loopback server; plain-Python leaf modules append one line per
run to a file (works across Ray's processes), so a node evaluated twice, or a driver output
computed from different values than the ones the LLM saw, shows up as extra lines.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

from plait import LLMInference, Module

_DRAWS = itertools.count()


class Logged(Module):
    """A leaf that logs every run and returns a value that differs on each run."""

    leaf = True

    def __init__(self, path: str, tag: str) -> None:
        super().__init__()
        self.path = path
        self.tag = tag

    def forward(self, text: str) -> str:
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(f"{self.tag}|{text}\n")
        # A sample: a second evaluation elsewhere would give another value.
        return f"{text}#{next(_DRAWS)}"


class Diamond(Module):
    """pre -> (a, b) in parallel -> post; pre feeds both LLM calls."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.pre = Logged(path, "pre")
        self.a = LLMInference(alias="fast")
        self.b = LLMInference(alias="fast")
        self.post = Logged(path, "post")

    def forward(self, text: str) -> Any:
        sample = self.pre(text)
        left = self.a(f"A {sample}")
        right = self.b(f"B {sample}")
        return {"sample": sample, "post": self.post(f"{left} / {right}")}


def wait(call: Any) -> Any:
    """Await a pipeline call from a sync test."""

    async def main() -> Any:
        return await call

    return asyncio.run(main())


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _check(out: dict[str, Any], text: str) -> None:
    sample = out["sample"]
    # The output's sample is the one the LLM calls saw (one evaluation, shared).
    assert sample.startswith(f"{text}#")
    assert out["post"].startswith(f"[m] echo: A {sample} / [m] echo: B {sample}#")


def test_single_call_runs_every_node_once(executor: str, make_resources: Any,
                                          llm_server: Any, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    pipeline = Diamond(str(log)).bind(resources=make_resources(), executor=executor)
    out = wait(pipeline("x"))
    _check(out, "x")
    assert Counter(line.split("|")[0] for line in _lines(log)) == {"pre": 1, "post": 1}
    assert llm_server.stats().total_requests == 2


def test_batch_runs_every_node_once_per_row(executor: str, make_resources: Any,
                                            llm_server: Any, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    rows = [f"r{i}" for i in range(6)]
    pipeline = Diamond(str(log)).bind(resources=make_resources(), executor=executor)
    outputs = wait(pipeline(rows))
    for out, text in zip(outputs, rows, strict=True):
        _check(out, text)
    counts = Counter(line.split("|")[0] for line in _lines(log))
    assert counts == {"pre": len(rows), "post": len(rows)}
    assert llm_server.stats().total_requests == 2 * len(rows)

"""Profiling, run summaries and progress of real runs: local executor, loopback server.

What is proven: ``profile=True`` writes a Chrome trace with one track per concurrency slot,
request and queue-wait spans, counters, 429/retry instants and unique ids, for the module's
own manager and for the manager shared inside ``ExecutionSettings`` (each call's trace holds
only its own requests); ``last_run.to_dict()`` has the per-endpoint figures; a real scheduling
gap is reported as a bubble and a pipeline without one reports (next to) none; the progress bar
and ``on_progress`` follow the settings.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from plait import LLMInference, Module
from plait.execution import ExecutionSettings, run
from plait.testing import Fault, LLMServer

T = TypeVar("T")


class TwoCalls(Module):
    """Draft on ``fast`` then judge on ``smart``."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="fast")
        self.judge = LLMInference(alias="smart")

    def forward(self, text: str) -> str:
        return self.judge(f"Judge: {self.draft(text)}")


class OneCall(Module):
    def __init__(self) -> None:
        super().__init__()
        self.ask = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return self.ask(text)


def with_server(body: Callable[[LLMServer], Awaitable[T]], **settings: Any) -> T:
    async def main() -> T:
        async with LLMServer(**settings) as server:
            return await asyncio.wait_for(body(server), 30)

    return asyncio.run(main())


def load_trace(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(path.read_text())["traceEvents"]
    return events


def tracks(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Process name -> names of its threads (tracks)."""
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    out: dict[str, set[str]] = {name: set() for name in processes.values()}
    for e in events:
        if e["name"] == "thread_name":
            out[processes[e["pid"]]].add(e["args"]["name"])
    return out


def check_ids_unique(events: list[dict[str, Any]]) -> None:
    ids = [e["eid"] if e["ph"] == "C" else e["args"]["id"] for e in events]
    assert len(ids) == len(set(ids))


def test_shared_manager_trace_and_summary(tmp_path: Path) -> None:
    rows = [f"text {i}" for i in range(12)]
    first, second = tmp_path / "first.json", tmp_path / "second.json"

    async def body(server: LLMServer) -> dict[str, Any]:
        server.configure(faults=[Fault("429", model="m-a", retry_after=0.02),
                                 Fault("500", model="m-b")])
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, max_concurrent=2,
                                           input_cost_per_1m=1.0, output_cost_per_1m=2.0)
        pipeline = TwoCalls()
        async with ExecutionSettings(resources=resources, profile=True):
            await run(pipeline, rows, profile_path=first)
            report = pipeline.last_run.to_dict()
            requests_first = server.stats().total_requests
            tokens_first = server.stats().prompt_tokens, server.stats().completion_tokens
            server.reset_stats()
            await run(pipeline, rows[:3], profile_path=second)
        assert requests_first == 2 * len(rows) + 2  # one 429 and one 500 were retried
        report["requests_seen"] = requests_first
        report["tokens_seen"] = tokens_first
        return report

    report = with_server(body, latency=0.02)
    events = load_trace(first)
    check_ids_unique(events)
    by_track = tracks(events)
    # Two slots per endpoint: exactly one track per slot, plus the waits and instants tracks.
    for alias in ("fast", "smart"):
        slots = {t for t in by_track[f"endpoint {alias}"] if t.startswith("slot")}
        assert slots == {"slot 0", "slot 1"}
    cats = Counter(e.get("cat") for e in events if e["ph"] == "X")
    assert cats["request"] == report["requests_seen"]
    assert cats["queue_wait"] > 0  # 12 rows on 2 slots: calls queued
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert {"in_flight", "queued"} <= counters
    instants = Counter(e["name"] for e in events if e["ph"] == "i")
    assert instants["429"] == 1 and instants["retry"] == 2
    # The second call in the same block traced only its own 3 rows (6 requests).
    assert Counter(e.get("cat") for e in load_trace(second))["request"] == 6

    summary = report["summary"]
    fast, smart = summary["endpoints"]["fast"], summary["endpoints"]["smart"]
    assert fast["requests"] == 13 and smart["requests"] == 13
    assert (fast["rate_limited"], fast["retries"]) == (1, 1)
    assert (smart["rate_limited"], smart["retries"]) == (0, 1) and smart["errors"] == 1
    tokens_in = fast["input_tokens"] + smart["input_tokens"]
    tokens_out = fast["output_tokens"] + smart["output_tokens"]
    assert (tokens_in, tokens_out) == report["tokens_seen"]
    assert fast["cost"] == pytest.approx(
        (fast["input_tokens"] * 1.0 + fast["output_tokens"] * 2.0) / 1e6)
    for ep in (fast, smart):
        assert 0 < ep["latency_p50"] <= ep["latency_p95"] <= ep["latency_p99"]
        assert 0 < ep["utilisation"] <= 1 and ep["max_concurrent"] == 2
        assert {"bubble_count", "bubble_seconds", "top_bubbles"} <= set(ep)
    assert report["endpoints"]["fast"]["requests"] == 13  # the pools' own stats agree
    json.dumps(report)  # the whole report is JSON-able


def test_module_manager_writes_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json.gz"

    async def body(server: LLMServer) -> None:
        resources = server.resource_config({"fast": "m-a", "smart": "m-b"}, max_concurrent=3)
        pipeline = TwoCalls().bind(resources=resources, profile=True, profile_path=trace)
        await pipeline([f"text {i}" for i in range(9)])
        assert pipeline.last_run.profile_path == trace

    with_server(body)
    events: list[dict[str, Any]] = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    check_ids_unique(events)
    assert Counter(e.get("cat") for e in events)["request"] == 18
    assert {t for t in tracks(events)["endpoint fast"] if t.startswith("slot")} == {
        "slot 0", "slot 1", "slot 2"}


def bubbles(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    """Run 16 one-call rows on an endpoint with 8 slots; return its summary."""

    async def body(server: LLMServer) -> dict[str, Any]:
        resources = server.resource_config({"fast": "m-a"}, max_concurrent=8)
        pipeline = OneCall()
        await run(pipeline, [f"text {i}" for i in range(16)], resources=resources,
                  profile_path=tmp_path / "trace.json", **settings)
        summary = pipeline.last_run.summary
        assert summary is not None
        return summary.to_dict()["endpoints"]["fast"]

    return with_server(body, latency=0.05)


def test_global_cap_below_endpoint_slots_is_a_bubble(tmp_path: Path) -> None:
    # max_concurrent=2 across all endpoints while "fast" has 8 slots: ready calls wait for
    # the global cap with 6 slots free, a real scheduling gap of about the whole run.
    gap = bubbles(tmp_path, max_concurrent=2)
    control = bubbles(tmp_path)
    assert gap["bubble_count"] >= 1
    top = gap["top_bubbles"][0]
    assert top["node_ids"] == ["ask"]
    # Waiting behind the cap lasts at least one server latency (50 ms) by construction.
    assert top["duration"] >= 0.05
    assert control["bubble_seconds"] < gap["bubble_seconds"] / 4


def test_progress_bar_and_on_progress(capfd: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int | None]] = []

    def on_progress(done: int, total: int | None) -> None:
        calls.append((done, total))

    async def body(server: LLMServer) -> None:
        resources = server.resource_config({"fast": "m-a"}, max_concurrent=4)
        pipeline = OneCall().bind(resources=resources)
        rows = [f"text {i}" for i in range(7)]
        await run(pipeline, rows, progress=True, on_progress=on_progress)
        await asyncio.sleep(0)
        shown = capfd.readouterr().err
        assert "OneCall" in shown and "7/7" in shown
        await run(pipeline, rows)  # default: auto, and stderr is not a terminal here
        await run(pipeline, rows, progress=False)
        await run(pipeline, "single", progress=True)  # one input never shows a bar
        assert capfd.readouterr().err == ""

    with_server(body)
    assert calls == [(i, 7) for i in range(1, 8)]

"""The response cache end to end: plait's clients against the loopback server.

Counts are what the server received; a cache hit must never reach it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from plait import ExecutionSettings, LLMInference, Module, run
from plait.cache import ResponseCache
from plait.io import run_dataset_local
from plait.io._arrow import pq
from plait.testing import LLMServer

ROWS = 1000


def arun(coro: Any, timeout: float = 90.0) -> Any:
    """Run ``coro`` on a fresh loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class FanOut(Module):
    """The issue's workload: 4 ``fast`` calls per row, then 1 ``smart`` call on their answers."""

    def __init__(self, smart_prompt: str = "Aggregate.") -> None:
        super().__init__()
        self.a = LLMInference(alias="fast", system_prompt="Angle A.", max_tokens=16)
        self.b = LLMInference(alias="fast", system_prompt="Angle B.", max_tokens=16)
        self.c = LLMInference(alias="fast", system_prompt="Angle C.", max_tokens=16)
        self.d = LLMInference(alias="fast", system_prompt="Angle D.", max_tokens=16)
        self.agg = LLMInference(alias="smart", system_prompt=smart_prompt, max_tokens=16)

    def forward(self, text: str) -> str:
        a, b, c, d = self.a(text), self.b(text), self.c(text), self.d(text)
        return self.agg(f"1: {a}\n2: {b}\n3: {c}\n4: {d}")


class Twice(Module):
    """The same question asked by two nodes (self-consistency style)."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.x = LLMInference(alias="fast", temperature=temperature)
        self.y = LLMInference(alias="fast", temperature=temperature)

    def forward(self, text: str) -> list[str]:
        return [self.x(text), self.y(text)]


class Facts(BaseModel):
    title: str


def rows(n: int) -> list[str]:
    return [f"document {i}" for i in range(n)]


def test_editing_one_prompt_reruns_only_its_calls(tmp_path: Path) -> None:
    """The issue's figure: 5,000 calls; rerun unchanged: 0; smart prompt edited: 1,000."""
    cache = tmp_path / "cache"
    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "model-fast", "smart": "model-smart"})
        first = FanOut()
        out = arun(run(first, rows(ROWS), resources=resources, cache=cache))
        assert server.stats().total_requests == 5 * ROWS
        report = first.last_run
        assert report.cache is not None
        assert (report.cache["hits"], report.cache["misses"]) == (0, 5 * ROWS)

        again = FanOut()
        assert arun(run(again, rows(ROWS), resources=resources, cache=cache)) == out
        assert server.stats().total_requests == 5 * ROWS  # nothing sent
        assert again.last_run.cache is not None and again.last_run.cache["hits"] == 5 * ROWS
        assert again.last_run.endpoints["fast"]["cache_hits"] == 4 * ROWS
        assert again.last_run.endpoints["smart"]["cache_hits"] == ROWS

        edited = FanOut(smart_prompt="Aggregate, briefly.")
        arun(run(edited, rows(ROWS), resources=resources, cache=cache))
        stats = server.stats()
        assert stats.total_requests == 6 * ROWS
        assert stats.requests_by_model["model-smart"] == 2 * ROWS
        assert edited.last_run.cache is not None
        assert edited.last_run.cache["hits"] == 4 * ROWS


def test_without_cache_setting_nothing_is_stored(tmp_path: Path) -> None:
    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "m", "smart": "m2"})
        arun(run(FanOut(), rows(3), resources=resources))
        arun(run(FanOut(), rows(3), resources=resources))
        assert server.stats().total_requests == 30
    assert not any(tmp_path.iterdir())


def test_execution_settings_cache_and_sampling(tmp_path: Path) -> None:
    """temperature > 0: two nodes asking the same stay two samples, and a rerun hits both.

    temperature 0: identical requests share one entry (across nodes and rows).
    """
    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "m"})

        async def twice(temperature: float, data: list[str]) -> Any:
            async with ExecutionSettings(resources=resources, cache=tmp_path / "c"):
                return await Twice(temperature)(data)

        arun(twice(0.7, ["same", "same"]))
        assert server.stats().total_requests == 4  # 2 nodes x 2 rows: distinct samples
        arun(twice(0.7, ["same", "same"]))
        assert server.stats().total_requests == 4
        arun(twice(0.0, ["q", "q"]))
        # Greedy replies are a function of the request: one entry serves both nodes and rows
        # once written; the first wave of concurrent calls may all miss.
        before = server.stats().total_requests
        assert 5 <= before <= 8
        arun(twice(0.0, ["q", "q", "q"]))
        assert server.stats().total_requests == before


def test_hits_are_marked_in_trace_and_value_meta(tmp_path: Path) -> None:
    class One(Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = LLMInference(alias="fast", as_value=True, response_format=Facts)

        def forward(self, text: str) -> Any:
            return self.llm(text)

    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "gpt-4o-mini"})
        first = arun(run(One(), "doc", resources=resources, cache=tmp_path / "c"))
        assert first.meta["cost_usd"] > 0 and "cached" not in first.meta
        trace = tmp_path / "trace.json"
        pipeline = One()
        second = arun(run(pipeline, "doc", resources=resources, cache=tmp_path / "c",
                          profile_path=trace))
        assert server.stats().total_requests == 1
        assert second.payload == first.payload and isinstance(second.payload, Facts)
        assert second.meta["cached"] is True and second.meta["cost_usd"] == 0.0
        assert second.meta["input_tokens"] == first.meta["input_tokens"]
        events = json.loads(trace.read_text())["traceEvents"]
        assert [e["name"] for e in events if e.get("cat") == "cache_hit"] == ["cache hit"]
        assert pipeline.last_run.cache is not None
        assert pipeline.last_run.cache["saved_usd"] == pytest.approx(first.meta["cost_usd"])


def test_corrupt_entry_is_a_miss_and_a_warning(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    cache_dir = tmp_path / "c"
    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "m"})
        one = LLMInference(alias="fast", temperature=0.0)
        first = arun(run(one, "hello", resources=resources, cache=cache_dir))
        (entry,) = [p for p in cache_dir.rglob("*.json")]
        entry.write_bytes(entry.read_bytes()[:-7])  # torn: as if a write died half way
        with caplog.at_level(logging.WARNING, logger="plait"):
            again = arun(run(one, "hello", resources=resources, cache=cache_dir))
        assert again == first
        assert server.stats().total_requests == 2
        assert any("corrupt" in r.getMessage() and str(entry) in r.getMessage()
                   for r in caplog.records)
        assert one.last_run.cache is not None and one.last_run.cache["corrupt"] == 1
        arun(run(one, "hello", resources=resources, cache=cache_dir))  # rewritten: a hit
        assert server.stats().total_requests == 2


def test_entries_never_hold_the_key(tmp_path: Path) -> None:
    secret = "sk-cache-test-0123456789abcdef"
    with LLMServer(latency=0.0, require_api_key=secret).run_in_thread() as server:
        resources = server.resource_config({"fast": "m", "smart": "m2"}, api_key=secret)
        arun(run(FanOut(), rows(5), resources=resources, cache=tmp_path / "c"))
    files = list((tmp_path / "c").rglob("*"))
    assert any(f.suffix == ".json" for f in files)
    for f in files:
        if f.is_file():
            assert secret not in f.read_text()


def test_dataset_output_marks_cached_rows(tmp_path: Path) -> None:
    source = [{"text": t} for t in rows(20)]
    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "gpt-4o-mini", "smart": "gpt-4o"})
        run_dataset_local(FanOut(), source, tmp_path / "a", resources=resources,
                          cache=tmp_path / "c", progress=False)
        run_dataset_local(FanOut(), source, tmp_path / "b", resources=resources,
                          cache=tmp_path / "c", progress=False)
        assert server.stats().total_requests == 100
    a = pq.read_table(tmp_path / "a").sort_by("row_id")
    b = pq.read_table(tmp_path / "b").sort_by("row_id")
    assert a.column("cache_hits").to_pylist() == [0] * 20
    assert b.column("cache_hits").to_pylist() == [5] * 20
    assert all(c > 0 for c in a.column("cost_usd").to_pylist())
    assert b.column("cost_usd").to_pylist() == [0.0] * 20
    assert b.column("output").to_pylist() == a.column("output").to_pylist()


def test_cache_object_and_bad_setting(tmp_path: Path) -> None:
    from plait.errors import ConfigError

    with pytest.raises(ConfigError, match="cache must be a directory path"):
        ExecutionSettings(cache=42)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        ResponseCache(tmp_path / "file")


PIPELINE_FILE = '''
from plait import LLMInference, Module

class Shout(Module):
    def __init__(self):
        super().__init__()
        self.llm = LLMInference(alias="fast", temperature=0.0)

    def forward(self, text):
        return self.llm(f"Shout: {text}")
'''


def cli_project(root: Path, server: Any) -> list[str]:
    """A pipeline file, a Parquet input and a resources YAML; the common CLI arguments."""
    import pyarrow as pa
    import yaml

    (root / "pipe.py").write_text(PIPELINE_FILE)
    pq.write_table(pa.table({"text": [f"r{i}" for i in range(12)]}), root / "in.parquet")
    (root / "resources.yaml").write_text(yaml.safe_dump({"endpoints": {"fast": {
        "provider_api": "openai", "model": "gpt-4o-mini", "base_url": server.openai_base_url,
        "api_key_env": "PLAIT_TESTING_API_KEY"}}}))
    server.resource_config({"fast": "gpt-4o-mini"})  # sets PLAIT_TESTING_API_KEY
    return ["run", f"{root / 'pipe.py'}:Shout", "--input", str(root / "in.parquet"),
            "--resources", str(root / "resources.yaml"), "--no-progress"]


def test_cli_run_cache_then_stats_and_prune(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from plait.cli import main

    cache = tmp_path / "cache"
    with LLMServer(latency=0.0).run_in_thread() as server:
        args = cli_project(tmp_path, server)
        assert main([*args, "--output", str(tmp_path / "o1"), "--cache", str(cache)]) == 0
        assert main([*args, "--output", str(tmp_path / "o2"), "--cache", str(cache)]) == 0
        assert server.stats().total_requests == 12
    hits = pq.read_table(tmp_path / "o2").column("cache_hits").to_pylist()
    assert hits == [1] * 12
    capsys.readouterr()
    assert main(["cache", "stats", str(cache)]) == 0
    assert "12 entries" in capsys.readouterr().out
    assert main(["cache", "prune", str(cache), "--older-than", "1d"]) == 0
    assert "pruned 0 files" in capsys.readouterr().out
    assert main(["cache", "prune", str(cache), "--older-than", "0s"]) == 0
    assert "pruned 12 files" in capsys.readouterr().out
    assert main(["cache", "prune", str(cache), "--older-than", "soon"]) == 2
    assert "30d, 12h" in capsys.readouterr().err
    assert main(["cache", "stats", str(tmp_path / "nowhere")]) == 2


def test_hits_never_wait_for_max_concurrent(tmp_path: Path) -> None:
    """With max_concurrent=1 held by a slow miss, the cached rows still finish first."""
    class Slow(Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = LLMInference(alias="fast", temperature=0.0)

        def forward(self, text: str) -> str:
            return self.llm(text)

    cache = tmp_path / "c"
    with LLMServer(latency=0.5).run_in_thread() as server:
        resources = server.resource_config({"fast": "m"})
        arun(run(Slow(), ["a", "b", "c"], resources=resources, cache=cache))

        async def order() -> list[int]:
            done: list[int] = []
            async for r in run(Slow(), ["new", "a", "b", "c"], resources=resources,
                               cache=cache, max_concurrent=1):
                done.append(r.index)
            return done

        assert arun(order())[-1] == 0  # the miss, started first, ends last
        assert server.stats().total_requests == 4

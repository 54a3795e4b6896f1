"""Prices, budgets and estimates against the loopback server with plait's clients."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from plait import BatchError, LLMInference, Module, run
from plait.errors import BudgetExceededError
from plait.pricing import PRICES, estimate, estimate_tokens
from plait.testing import LLMServer


def arun(coro: Any, timeout: float = 90.0) -> Any:
    """Run ``coro`` on a fresh loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class FanOut(Module):
    """4 ``fast`` calls on the input, then 1 ``smart`` call on their answers."""

    def __init__(self) -> None:
        super().__init__()
        self.a = LLMInference(alias="fast", system_prompt="Angle A.", max_tokens=16)
        self.b = LLMInference(alias="fast", system_prompt="Angle B.", max_tokens=16)
        self.c = LLMInference(alias="fast", system_prompt="Angle C.", max_tokens=16)
        self.d = LLMInference(alias="fast", system_prompt="Angle D.", max_tokens=16)
        self.agg = LLMInference(alias="smart", system_prompt="Aggregate.", max_tokens=16)

    def forward(self, text: str) -> str:
        a, b, c, d = self.a(text), self.b(text), self.c(text), self.d(text)
        return self.agg(f"1: {a}\n2: {b}\n3: {c}\n4: {d}")


def docs(n: int) -> list[str]:
    return [f"document number {i} " + "lorem ipsum " * (i % 7) for i in range(n)]


def test_table_prices_replace_zero_costs() -> None:
    """Costs come from the dated table; an endpoint's own prices win."""
    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "gpt-4o-mini", "smart": "gpt-4o"})
        pipeline = FanOut()
        arun(run(pipeline, docs(10), resources=resources))
        report = pipeline.last_run
        for alias, model in (("fast", "gpt-4o-mini"), ("smart", "gpt-4o")):
            stats = report.endpoints[alias]
            price = PRICES["openai"][model]
            expected = (stats["input_tokens"] * price.input
                        + stats["output_tokens"] * price.output) / 1e6
            assert stats["cost"] == pytest.approx(expected) and expected > 0
        assert report.cost_usd == pytest.approx(sum(s["cost"] for s in report.endpoints.values()))

        custom = server.resource_config({"fast": "gpt-4o-mini", "smart": "gpt-4o"},
                                        input_cost_per_1m=1000.0, output_cost_per_1m=0.0)
        pipeline = FanOut()
        arun(run(pipeline, docs(2), resources=custom))
        stats = pipeline.last_run.endpoints["fast"]
        assert stats["cost"] == pytest.approx(stats["input_tokens"] * 1000.0 / 1e6)


def short_reply(_request: Any) -> str:
    """A reply within max_tokens, as a real provider's is (the echo default is not)."""
    return "fine"


def test_budget_stops_new_rows_and_resume_runs_the_rest(tmp_path: Path) -> None:
    rows = docs(120)
    with LLMServer(latency=0.0, responder=short_reply).run_in_thread() as server:
        resources = server.resource_config({"fast": "gpt-4o-mini", "smart": "gpt-4o"},
                                           max_concurrent=4)
        probe = FanOut()
        arun(run(probe, rows[:4], resources=resources))
        per_row = probe.last_run.cost_usd / 4
        sent_before = server.stats().total_requests
        budget = 30 * per_row

        pipeline = FanOut()
        with pytest.raises(BatchError) as info:
            arun(run(pipeline, rows, resources=resources, budget_usd=budget,
                     checkpoint_dir=tmp_path / "ckpt", max_inflight=8))
        report = pipeline.last_run.budget
        assert report is not None and report.stopped
        assert report.rows_done + report.rows_not_started == len(rows)
        assert 0 < report.rows_done < len(rows)
        assert report.spent_usd <= budget
        assert report.spent_usd == pytest.approx(pipeline.last_run.cost_usd)
        not_started = [i for i, e in info.value.failures.items()
                       if isinstance(e, BudgetExceededError)]
        assert len(not_started) == report.rows_not_started == len(info.value.failures)
        assert "budget_usd" in str(info.value.failures[not_started[0]])
        assert "checkpoint_dir" in report.format()
        sent = server.stats().total_requests - sent_before
        assert sent == 5 * report.rows_done  # rows not started sent nothing

        resumed = FanOut()
        outputs = arun(run(resumed, rows, resources=resources, checkpoint_dir=tmp_path / "ckpt"))
        assert len(outputs) == len(rows) and all(isinstance(o, str) for o in outputs)
        assert server.stats().total_requests - sent_before - sent == 5 * len(not_started)


def test_budget_too_small_for_one_row_starts_nothing() -> None:
    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "gpt-4o-mini", "smart": "gpt-4o"})
        pipeline = FanOut()
        with pytest.raises(BatchError):
            arun(run(pipeline, docs(3), resources=resources, budget_usd=1e-9))
        assert server.stats().total_requests == 0
        report = pipeline.last_run.budget
        assert report is not None and (report.rows_done, report.rows_not_started) == (0, 3)


def test_estimate_prices_first_level_from_real_inputs_and_samples_the_rest() -> None:
    rows = docs(60)
    with LLMServer(latency=0.0).run_in_thread() as server:
        resources = server.resource_config({"fast": "gpt-4o-mini", "smart": "gpt-4o"})
        pipeline = FanOut().bind(resources=resources)
        est = estimate(pipeline, rows, sample_rows=5)
        assert server.stats().total_requests == 25  # only the sample was sent
        assert est.requests == 5 * len(rows) and est.rows == len(rows)
        by_node = {n.node_id: n for n in est.nodes}
        first = [n for n in est.nodes if n.basis.startswith("real prompts")]
        assert len(first) == 4
        node_a = next(n for n in first if n.input_tokens
                      == sum(estimate_tokens("Angle A.") + estimate_tokens(r) for r in rows))
        assert node_a.alias == "fast"
        (agg,) = [n for n in est.nodes if n.alias == "smart"]
        assert agg.basis.startswith("extrapolated") and by_node[agg.node_id] is agg
        assert 0 < est.batch_usd < est.sync_usd
        assert est.sample_rows == 5 and est.sample_usd > 0
        text = est.format()
        assert "sync $" in text and "batch $" in text and "characters per token" in text

        real = FanOut()
        arun(run(real, rows, resources=resources))
        actual = real.last_run.cost_usd
        assert 0.5 * actual <= est.sync_usd <= 2.0 * actual


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

    from plait.io._arrow import pq

    (root / "pipe.py").write_text(PIPELINE_FILE)
    pq.write_table(pa.table({"text": [f"r{i}" for i in range(12)]}), root / "in.parquet")
    (root / "resources.yaml").write_text(yaml.safe_dump({"endpoints": {"fast": {
        "provider_api": "openai", "model": "gpt-4o-mini", "base_url": server.openai_base_url,
        "api_key_env": "PLAIT_TESTING_API_KEY"}}}))
    server.resource_config({"fast": "gpt-4o-mini"})  # sets PLAIT_TESTING_API_KEY
    return ["run", f"{root / 'pipe.py'}:Shout", "--input", str(root / "in.parquet"),
            "--resources", str(root / "resources.yaml"), "--no-progress"]


def test_cli_estimate_and_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from plait.cli import main
    from plait.io._arrow import pq

    with LLMServer(latency=0.0).run_in_thread() as server:
        args = cli_project(tmp_path, server)
        out = str(tmp_path / "out")
        assert main([*args, "--output", out, "--estimate", "--sample-rows", "2"]) == 0
        printed = capsys.readouterr().out
        assert "over 12 rows" in printed and "batch $" in printed
        assert server.stats().total_requests == 2
        assert not (tmp_path / "out").exists()  # an estimate writes nothing

        assert main([*args, "--output", out, "--budget-usd", "1e-9"]) == 3
        assert server.stats().total_requests == 2  # no row fits: none started
        assert "12 not started" in capsys.readouterr().err
        assert main([*args, "--output", out, "--budget-usd", "10"]) == 0
        assert server.stats().total_requests == 14
        assert pq.read_table(out).num_rows == 12

"""Whole pipelines, as users write them, against the loopback server with plait's clients.

Every test checks what the server actually received (request bodies, counters), never
timings. Each test's waits are bounded by ``arun``'s timeout.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

import plait
from plait import (
    ExecutionSettings,
    LLMInference,
    MissingAPIKeyError,
    Module,
    NodeExecutionError,
    Parameter,
    TraceError,
    functional,
    run,
)
from plait.errors import ConfigError
from plait.execution.local import LocalExecutor
from plait.resources import AnthropicEndpointConfig, OpenAIEndpointConfig, ResourceConfig
from plait.testing import ChatRequest, Fault, LLMServer


def arun(coro: Any, timeout: float = 30.0) -> Any:
    """Run ``coro`` on a fresh loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def user_text(body: dict[str, Any]) -> str:
    """The last user message of a recorded request body (either wire format)."""
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content)  # pyright: ignore
    return content


def system_text(body: dict[str, Any]) -> str:
    """The system prompt of a recorded request body (either wire format)."""
    if "system" in body:
        system = body["system"]
        return system if isinstance(system, str) else "".join(b["text"] for b in system)
    return "".join(m["content"] for m in body["messages"] if m["role"] == "system")


def assert_no_leaks(server: Any) -> None:
    """No trace-time placeholder ever reached the wire."""
    for req in server.requests:
        text = json.dumps(req.body, ensure_ascii=False)
        assert "\ue000" not in text and "\ue001" not in text, text
        assert "Proxy" not in text, text


def bodies_for(server: Any, model: str) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.model == model]


# --- the README and the site, verbatim -------------------------------------------------------


class SummarizeAndAnalyze(Module):
    """A two-stage pipeline: summarize, then analyze."""

    def __init__(self):
        super().__init__()
        # Learnable instruction that can be optimized via backward passes
        self.instructions = Parameter(
            value="Be concise and highlight key insights.",
            description="Controls the style of analysis output.",
        )
        self.summarizer = LLMInference(
            alias="fast",
            system_prompt="Summarize the input text concisely.",
        )
        self.analyzer = LLMInference(
            alias="smart",
            system_prompt=self.instructions,
        )

    def forward(self, text: str) -> str:
        summary = self.summarizer(text)
        return self.analyzer(f"Analyze this summary:\n{summary}")


class CompareFormatter(Module):
    """Format two fact lists for comparison (traced sub-module)."""

    def forward(self, facts1: str, facts2: str) -> str:
        return f"Compare:\n{facts1}\n\nvs:\n{facts2}"


class ExtractAndCompare(Module):
    """Extract facts from two documents and compare them."""

    def __init__(self):
        super().__init__()
        # Learnable parameter - can be optimized via backward pass
        self.comparison_style = Parameter(
            value="Highlight key similarities and differences.",
            description="Controls the style of comparison output.",
        )
        self.extractor = LLMInference(
            alias="fast",
            system_prompt="Extract the main facts as a bulleted list.",
        )
        self.formatter = CompareFormatter()  # Traced sub-module
        self.comparer = LLMInference(
            alias="smart",
            system_prompt=self.comparison_style,
        )

    def forward(self, doc1: str, doc2: str) -> str:
        # These two calls are INDEPENDENT - plait runs them in PARALLEL
        facts1 = self.extractor(doc1)
        facts2 = self.extractor(doc2)

        # Formatter is a sub-module - participates in tracing
        prompt = self.formatter(facts1, facts2)
        return self.comparer(prompt)


def readme_resources(server: Any) -> ResourceConfig:
    # The README's config plus base_url: the key comes from OPENAI_API_KEY, as for users.
    return ResourceConfig(
        endpoints={
            "fast": OpenAIEndpointConfig(
                model="gpt-4o-mini", max_concurrent=20, base_url=server.openai_base_url,
            ),
            "smart": OpenAIEndpointConfig(
                model="gpt-4o", max_concurrent=5, base_url=server.openai_base_url,
            ),
        }
    )


def test_readme_quick_start_sends_the_real_summary_to_the_analyzer(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")

    async def main():
        async with LLMServer(require_api_key="sk-loopback") as server:
            pipeline = SummarizeAndAnalyze().bind(resources=readme_resources(server))
            result = await pipeline("Your input text...")
            return server, result

    server, result = arun(main())
    summary = "[gpt-4o-mini] echo: Your input text..."
    assert result == f"[gpt-4o] echo: Analyze this summary:\n{summary}"
    (fast,) = bodies_for(server, "gpt-4o-mini")
    (smart,) = bodies_for(server, "gpt-4o")
    assert system_text(fast) == "Summarize the input text concisely."
    assert user_text(fast) == "Your input text..."
    assert system_text(smart) == "Be concise and highlight key insights."
    assert user_text(smart) == f"Analyze this summary:\n{summary}"
    # The analyzer waited for the summarizer: its request came second.
    assert [r.model for r in server.requests] == ["gpt-4o-mini", "gpt-4o"]
    assert_no_leaks(server)


def test_site_extract_and_compare_runs_extractions_in_parallel(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")

    async def main():
        async with LLMServer(latency=0.2) as server:
            pipeline = ExtractAndCompare().bind(resources=readme_resources(server))
            result = await pipeline("doc one", "doc two")
            return server, result, pipeline

    server, result, pipeline = arun(main())
    stats = server.stats()
    assert stats.max_in_flight_by_model["gpt-4o-mini"] >= 2  # the two extractions overlapped
    (compare,) = bodies_for(server, "gpt-4o")
    expected = ("Compare:\n[gpt-4o-mini] echo: doc one\n\nvs:\n"
                "[gpt-4o-mini] echo: doc two")
    assert user_text(compare) == expected
    assert system_text(compare) == "Highlight key similarities and differences."
    assert result == f"[gpt-4o] echo: {expected}"
    graph = pipeline.graph_for(2)
    assert [n.target for n in graph.llm_nodes()] == ["extractor", "extractor", "comparer"]
    extract_a, extract_b, comparer = graph.llm_nodes()
    assert extract_a.id not in graph.ancestors(extract_b.id)
    assert {extract_a.id, extract_b.id} <= graph.ancestors(comparer.id)
    assert_no_leaks(server)


# --- tracing through nested modules and Python string building ------------------------------


class Inner(Module):
    def __init__(self):
        super().__init__()
        self.llm = LLMInference(alias="fast", system_prompt="inner")

    def forward(self, text):
        return self.llm(f"inner:{text}")


class Middle(Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.after = LLMInference(alias="fast", system_prompt="middle")

    def forward(self, text):
        return self.after("middle:" + self.inner(text))


class Outer(Module):
    def __init__(self):
        super().__init__()
        self.middle = Middle()
        self.first = LLMInference(alias="fast", system_prompt="outer")

    def forward(self, text):
        head = self.first(text)
        return self.middle("{}|{}".format(head, text))  # noqa: UP032 (str.format is traced)


def test_nested_modules_flatten_into_one_graph_and_run():
    async def main():
        async with LLMServer() as server:
            pipeline = Outer().bind(resources=server.resource_config({"fast": "m"}))
            return server, await pipeline("x"), pipeline

    server, result, pipeline = arun(main())
    graph = pipeline.graph_for(1)
    assert [n.target for n in graph.llm_nodes()] == ["first", "middle.inner.llm",
                                                     "middle.after"]
    assert all(n.module_type == "LLMInference" for n in graph.llm_nodes())
    prompts = [user_text(r.body) for r in server.requests]
    assert prompts == [
        "x",
        "inner:[m] echo: x|x",
        "middle:[m] echo: inner:[m] echo: x|x",
    ]
    assert result == "[m] echo: middle:[m] echo: inner:[m] echo: x|x"
    assert_no_leaks(server)


class Facts(BaseModel):
    title: str
    facts: list[str]
    meta: dict[str, str]


@functional.op
def shout(text: str) -> str:
    """A user op on real values."""
    return text.upper()


class StringOps(Module):
    def __init__(self):
        super().__init__()
        self.extract = LLMInference(alias="fast", response_format=Facts)
        self.say = LLMInference(alias="fast")

    def forward(self, text):
        facts = self.extract(text)
        title = facts.title.strip()
        first = facts.facts[0]
        meta = facts.meta
        rendered = functional.render("T={t}", t=title)
        joined = functional.join(facts.facts, sep=";")
        as_json = functional.to_json(facts)
        return {
            "fstring": self.say(f"title={title}"),
            "format": "{}/{!r}".format(first, title),  # noqa: UP032 (str.format is traced)
            "concat": title + "!" + first,
            "op": shout(title),
            "rendered": rendered,
            "joined": joined,
            "json": as_json,
            "meta": meta,
            "list": [title, first],
            "upper": title.upper(),
        }


def test_structured_output_access_string_building_and_ops_are_traced():
    async def main():
        async with LLMServer() as server:
            pipeline = StringOps().bind(resources=server.resource_config({"fast": "m"}))
            return server, await pipeline("some doc")

    server, out = arun(main())
    requests = list(server.requests)
    assert requests[0].body["response_format"]["type"] == "json_schema"
    facts = Facts.model_validate_json(out["json"])
    title, first = facts.title.strip(), facts.facts[0]
    assert user_text(requests[1].body) == f"title={title}"
    assert out["fstring"] == f"[m] echo: title={title}"
    assert out["format"] == f"{first}/{title!r}"
    assert out["concat"] == f"{title}!{first}"
    assert out["op"] == title.upper() == out["upper"]
    assert out["rendered"] == f"T={title}"
    assert out["joined"] == ";".join(facts.facts)
    assert out["meta"] == facts.meta
    assert out["list"] == [title, first]
    assert_no_leaks(server)


class Branches(Module):
    def __init__(self):
        super().__init__()
        self.summarizer = LLMInference(alias="fast")

    def forward(self, text):
        summary = self.summarizer(text)
        if summary:  # the line the error must name
            return summary
        return text


def test_branching_on_a_traced_value_fails_at_trace_time_with_file_and_line():
    async def main():
        async with LLMServer() as server:
            pipeline = Branches().bind(resources=server.resource_config({"fast": "m"}))
            with pytest.raises(TraceError) as info:
                await pipeline("x")
            return server, info.value

    server, err = arun(main())
    import inspect

    line = inspect.getsource(Branches.forward).splitlines().index(
        "        if summary:  # the line the error must name")
    expected_line = Branches.forward.__code__.co_firstlineno + line
    assert f"test_pipelines.py:{expected_line}" in str(err)
    assert "branch" in str(err) and "leaf" in str(err)
    assert server.stats().total_requests == 0


# --- errors are never silent ----------------------------------------------------------------


class One(Module):
    def __init__(self, alias: str = "fast"):
        super().__init__()
        self.llm = LLMInference(alias=alias, system_prompt="sys")

    def forward(self, text):
        return self.llm(text)


def test_missing_api_key_raises_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def main():
        async with LLMServer() as server:
            res = ResourceConfig(endpoints={
                "fast": OpenAIEndpointConfig(model="m", base_url=server.openai_base_url)})
            with pytest.raises(MissingAPIKeyError) as info:
                await One().bind(resources=res)("x")
            return server.stats().total_requests, str(info.value)

    total, msg = arun(main())
    assert total == 0
    assert "OPENAI_API_KEY" in msg and "'fast'" in msg and "api_key=" in msg


def test_anthropic_path(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-loopback")

    async def main():
        async with LLMServer() as server:
            res = ResourceConfig(endpoints={"fast": AnthropicEndpointConfig(
                model="claude-x", base_url=server.anthropic_base_url)})
            out = await One().bind(resources=res)("hello")
            facts = await StructuredOne().bind(resources=res)("doc")
            return server, out, facts

    server, out, facts = arun(main())
    assert out == "[claude-x] echo: hello"
    assert isinstance(facts, Facts)
    assert {r.path for r in server.requests} == {"/v1/messages"}
    assert system_text(server.requests[0].body) == "sys"
    assert_no_leaks(server)


class StructuredOne(Module):
    def __init__(self):
        super().__init__()
        self.llm = LLMInference(alias="fast", response_format=Facts)

    def forward(self, text):
        return self.llm(text)


# --- settings: priority and each setting's effect ------------------------------------------


def test_settings_priority_call_over_bind_over_context():
    async def main():
        async with LLMServer() as server:
            ctx, bound, call = (server.resource_config({"fast": m})
                                for m in ("ctx-model", "bind-model", "call-model"))
            plain = One()
            async with ExecutionSettings(resources=ctx):
                from_ctx = await plain("x")
                bound_module = One().bind(resources=bound)
                from_bind = await bound_module("x")
                from_call = await run(bound_module, "x", resources=call)
            return from_ctx, from_bind, from_call

    assert arun(main()) == ("[ctx-model] echo: x", "[bind-model] echo: x",
                            "[call-model] echo: x")


def test_max_inflight_priority_is_visible_at_the_server():
    async def main():
        async with LLMServer(latency=0.15) as server:
            res = server.resource_config({"fast": "m"}, max_concurrent=50)
            rows = [f"r{i}" for i in range(6)]
            seen = []
            async with ExecutionSettings(resources=res, max_inflight=1):
                pipeline = One()
                await pipeline(rows)
                seen.append(server.stats().max_in_flight)
                server.reset_stats()
                pipeline.bind(max_inflight=2)
                await pipeline(rows)
                seen.append(server.stats().max_in_flight)
                server.reset_stats()
                await run(pipeline, rows, max_inflight=3)
                seen.append(server.stats().max_in_flight)
            return seen

    assert arun(main()) == [1, 2, 3]


def test_executor_setting_selects_the_executor():
    calls = []

    class Recording(LocalExecutor):
        def execute(self, job):  # type: ignore[override]
            calls.append(len(job.graph.llm_nodes()))
            return super().execute(job)

    async def main():
        async with LLMServer() as server:
            res = server.resource_config({"fast": "m"})
            out = await One().bind(resources=res, executor=Recording())("x")
            with pytest.raises(ConfigError, match="Unknown executor 'nope'"):
                await One().bind(resources=res, executor="nope")("x")
            return out

    assert arun(main()) == "[m] echo: x"
    assert calls == [1]


def test_streaming_setting_makes_await_return_batch_results():
    async def main():
        async with LLMServer(faults=[Fault("400", match="bad")]) as server:
            res = server.resource_config({"fast": "m"})
            return await One().bind(resources=res, streaming=True)(["a", "bad", "c"])

    results = arun(main())
    assert [(r.index, r.input, r.ok) for r in results] == [(0, "a", True), (1, "bad", False),
                                                           (2, "c", True)]
    assert results[0].output == "[m] echo: a"
    assert isinstance(results[1].error, NodeExecutionError)


def test_progress_setting_shows_or_hides_the_bar(capsys):
    async def main(progress):
        async with LLMServer() as server:
            res = server.resource_config({"fast": "m"})
            await One().bind(resources=res, progress=progress)(["a", "b"])

    arun(main(True))
    shown = capsys.readouterr().err
    arun(main(False))
    hidden = capsys.readouterr().err
    assert "One" in shown and "2/2" in shown
    assert hidden == ""


def test_checkpoint_dir_and_resume_settings(tmp_path):
    async def main():
        async with LLMServer() as server:
            res = server.resource_config({"fast": "m"})
            rows = ["a", "b", "c"]
            pipeline = One().bind(resources=res, checkpoint_dir=tmp_path / "ck")
            first = await pipeline(rows)
            counts = [server.stats().total_requests]
            server.reset_stats()
            again = await pipeline(rows)  # resume="auto": everything comes from disk
            counts.append(server.stats().total_requests)
            resumed = pipeline.last_run.resumed
            with pytest.raises(plait.errors.CheckpointError, match="resume='force'"):
                await pipeline([*rows, "d"])  # other inputs: auto refuses to mix runs
            server.reset_stats()
            forced = await run(pipeline, [*rows, "d"], resume="force")
            counts.append(server.stats().total_requests)
            server.reset_stats()
            fresh = await run(pipeline, rows, resume="fresh")
            counts.append(server.stats().total_requests)
            return first, again, forced, fresh, counts, resumed

    first, again, forced, fresh, counts, resumed = arun(main())
    assert first == again == fresh == ["[m] echo: a", "[m] echo: b", "[m] echo: c"]
    assert forced == [*first, "[m] echo: d"]
    assert resumed == 3
    assert counts == [3, 0, 1, 3]


def test_profile_and_profile_path_settings(tmp_path):
    path = tmp_path / "trace.json"

    async def main():
        async with LLMServer() as server:
            res = server.resource_config({"fast": "m"})
            pipeline = One().bind(resources=res)
            await pipeline(["a", "b"])
            plain = pipeline.last_run
            await run(pipeline, ["a", "b"], profile_path=path)
            return plain, pipeline.last_run

    plain, profiled = arun(main())
    assert plain.profile_path is None and plain.summary is None
    assert profiled.profile_path == path and profiled.summary is not None
    events = json.loads(path.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    assert any(e.get("name") for e in events)


def test_resources_setting_accepts_a_yaml_path(tmp_path):
    async def main():
        async with LLMServer() as server:
            yaml_path = tmp_path / "res.yaml"
            yaml_path.write_text(
                "endpoints:\n  fast:\n    provider_api: openai\n    model: yaml-model\n"
                f"    base_url: {server.openai_base_url}\n    api_key_env: PLAIT_TEST_YAML_KEY\n")
            return await One().bind(resources=str(yaml_path))("x")

    import os

    os.environ["PLAIT_TEST_YAML_KEY"] = "k"
    try:
        assert arun(main()) == "[yaml-model] echo: x"
    finally:
        del os.environ["PLAIT_TEST_YAML_KEY"]


# --- calling conventions ---------------------------------------------------------------------


def test_run_sync_inside_a_running_loop():
    with LLMServer().run_in_thread() as server:
        pipeline = One().bind(resources=server.resource_config({"fast": "m"}))

        async def inside_loop():
            return pipeline.run_sync("x"), pipeline.run_sync(["a", "b"])

        single, batch = arun(inside_loop())
        plain = pipeline.run_sync("y")
    assert single == "[m] echo: x"
    assert batch == ["[m] echo: a", "[m] echo: b"]
    assert plain == "[m] echo: y"


def test_await_run_with_resources():
    async def main():
        async with LLMServer() as server:
            res = server.resource_config({"fast": "m"})
            return await run(One(), "x", resources=res), await run(One(), ["a"], resources=res)

    assert arun(main()) == ("[m] echo: x", ["[m] echo: a"])


async def _slow_first(request: ChatRequest) -> str:
    if "slow" in request.user_text:
        await asyncio.sleep(0.3)
    return f"echo: {request.user_text}"


def test_batch_outputs_keep_input_order_under_uneven_latency():
    async def main():
        async with LLMServer(responder=_slow_first) as server:
            res = server.resource_config({"fast": "m"})
            return await One().bind(resources=res)(["slow 0", "b", "slow 2", "d"])

    assert arun(main()) == ["echo: slow 0", "echo: b", "echo: slow 2", "echo: d"]


class StyledPrompt(Module):
    def __init__(self):
        super().__init__()
        self.style = Parameter("Be brief.", description="style of the prompt")
        self.llm = LLMInference(alias="fast")

    def forward(self, text):
        return self.llm(f"{self.style}|{text!r:>8}|{text:<4}|")


def test_parameter_in_a_prompt_follows_value_updates_and_format_specs_hold():
    async def main():
        async with LLMServer() as server:
            pipeline = StyledPrompt().bind(resources=server.resource_config({"fast": "m"}))
            await pipeline("ab")
            graph = pipeline.graph_for(1)
            pipeline.style.apply_update("Be thorough.")  # what an optimizer step does
            await pipeline("ab")
            assert pipeline.graph_for(1) is graph  # same cached graph, new value
            return [user_text(r.body) for r in server.requests]

    assert arun(main()) == [f"Be brief.|{'ab'!r:>8}|ab  |", f"Be thorough.|{'ab'!r:>8}|ab  |"]


def test_a_batch_of_rows_traces_once(monkeypatch):
    from plait.tracing.tracer import Tracer

    traced = []
    real_trace = Tracer.trace

    def counting(self, num_args, kwarg_names):
        traced.append(type(self.root).__name__)
        return real_trace(self, num_args, kwarg_names)

    monkeypatch.setattr(Tracer, "trace", counting)

    async def main():
        async with LLMServer() as server:
            pipeline = SummarizeAndAnalyze().bind(
                resources=server.resource_config({"fast": "m", "smart": "s"}))
            outputs = await pipeline([f"row {i}" for i in range(25)])
            await pipeline([f"again {i}" for i in range(5)])  # same structure: cached
            await pipeline("single")  # same shape as a row: cached too
            return outputs

    outputs = arun(main())
    assert outputs[7] == "[s] echo: Analyze this summary:\n[m] echo: row 7"
    assert traced == ["SummarizeAndAnalyze"]


def test_profile_setting_writes_the_default_trace_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def main():
        async with LLMServer() as server:
            pipeline = One().bind(resources=server.resource_config({"fast": "m"}), profile=True)
            await pipeline(["a"])
            return pipeline.last_run

    report = arun(main())
    assert report.profile_path is not None and report.profile_path.name == "plait-trace.json"
    assert (tmp_path / "plait-trace.json").exists()
    assert report.endpoints["fast"]["requests"] == 1

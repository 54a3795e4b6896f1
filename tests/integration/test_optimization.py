"""The optimization loop against the loopback server: judges, backward LLM, optimizer order."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from plait import LLMInference, Module, Parameter, ResourceConfig
from plait.optim import (
    JudgeReplyError,
    LLMJudge,
    LLMRubricLoss,
    Optimizer,
    PairwisePreferenceLoss,
    RankingLoss,
    VerifierLoss,
)
from plait.testing import ChatRequest, LLMServer

T = TypeVar("T")
ALIASES = {"fast": "model-a", "judge": "model-j", "optimizer": "model-o", "backward": "model-b"}


class Scripted:
    """Replies per model; tests set ``replies[model]`` to a string or a function."""

    def __init__(self) -> None:
        self.replies: dict[str, Any] = {}

    def __call__(self, req: ChatRequest) -> str:
        reply = self.replies.get(req.model)
        if callable(reply):
            return str(reply(req))
        return reply if reply is not None else f"answer to {req.user_text[:40]}"


def run(body: Callable[[LLMServer, ResourceConfig, Scripted], Awaitable[T]]) -> T:
    scripted = Scripted()

    async def main() -> T:
        async with LLMServer(latency=0.0, responder=scripted) as server:
            resources = server.resource_config(ALIASES, max_retries=0)
            return await body(server, resources, scripted)

    return asyncio.run(asyncio.wait_for(main(), timeout=30))


class One(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference("fast", system_prompt=Parameter("Answer.", description="QA"))

    def forward(self, question: str) -> str:
        return self.llm(question)


class Draft(Module):
    """Declared downstream-first, so update order cannot come from declaration order."""

    def __init__(self) -> None:
        super().__init__()
        self.second = LLMInference("fast", system_prompt=Parameter(
            "S2", description="Polishes the draft; must keep a friendly tone."))
        self.first = LLMInference("fast", system_prompt=Parameter(
            "S1", description="Writes the first draft."))
        self.frozen = LLMInference("fast", system_prompt="fixed")

    def forward(self, text: str) -> str:
        return self.second(f"Polish {self.first(text)} / {self.frozen(text)}")


def user_texts(server: LLMServer, model: str) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in server.requests if r.model == model]


def test_llm_judge_parses_fenced_json_sees_inputs_and_feeds_back() -> None:
    async def body(server: LLMServer, resources: ResourceConfig, s: Scripted) -> None:
        pipeline = One().bind(resources=resources).train()
        out = await pipeline("What is 2+2?")
        s.replies["model-j"] = '```json\n{"score": 0.8, "feedback": "Show the sum."}\n```'
        loss = await LLMJudge("judge", criteria="Correct.")(out, target="4")  # unbound
        assert loss.score == 0.8 and loss.feedback == "Show the sum."
        (asked,) = user_texts(server, "model-j")
        assert "What is 2+2?" in asked and "answer to What is 2+2?" in asked and "4" in asked
        report = await loss.backward()
        assert report.parameters == {"llm.system_prompt": 1}
        assert pipeline.llm.system_prompt.feedback[0].endswith("Show the sum.")

    run(body)


def test_judges_reject_garbage_with_a_clear_error() -> None:
    async def body(server: LLMServer, resources: ResourceConfig, s: Scripted) -> None:
        judge = LLMJudge("judge", criteria="Correct.").bind(resources)
        s.replies["model-j"] = "Looks great to me!"
        with pytest.raises(JudgeReplyError, match=r"LLMJudge \(alias 'judge'\).*no JSON"):
            await judge("out")
        s.replies["model-j"] = '{"score": 7, "feedback": ""}'
        with pytest.raises(JudgeReplyError, match=r"outside \[0, 1\]"):
            await judge("out")

    run(body)


def test_rubric_maps_levels_to_scores() -> None:
    async def body(server: LLMServer, resources: ResourceConfig, s: Scripted) -> None:
        rubric = LLMRubricLoss("judge", [(0.0, "wrong"), (1.0, "right"), (0.5, "partly")])
        rubric.bind(resources)
        s.replies["model-j"] = '{"level": 2, "feedback": "half there"}'
        loss = await rubric(["x", "y"])
        assert loss.scores == [0.5, 0.5]
        assert "Level 1: right\nLevel 2: partly\nLevel 3: wrong" in server.requests[0].body[
            "messages"][0]["content"]
        s.replies["model-j"] = '{"level": 9, "feedback": ""}'
        with pytest.raises(JudgeReplyError, match=r"levels 1\.\.3"):
            await rubric("x")

    run(body)


def test_pairwise_and_ranking_score_each_candidate_and_feed_each_back() -> None:
    async def body(server: LLMServer, resources: ResourceConfig, s: Scripted) -> None:
        pipeline = One().bind(resources=resources).train()
        a, b = await pipeline(["q1", "q2"])
        s.replies["model-j"] = '{"winner": "b", "feedback_a": "worse", "feedback_b": "fine"}'
        loss = await PairwisePreferenceLoss("judge").bind(resources)([a, b])
        assert loss.scores == [0.0, 1.0]
        await loss.backward()
        feedback = pipeline.llm.system_prompt.feedback
        assert len(feedback) == 2 and feedback[0].endswith("worse")
        s.replies["model-j"] = '{"ranking": [2, 3, 1], "feedback": ["f1", "f2", "f3"]}'
        ranked = await RankingLoss("judge").bind(resources)(["c1", "c2", "c3"])
        assert ranked.scores == [0.0, 1.0, 0.5]
        assert [i.feedback for i in ranked.items] == ["f1", "f2", "f3"]
        s.replies["model-j"] = '{"ranking": [1, 1, 2], "feedback": ["", "", ""]}'
        with pytest.raises(JudgeReplyError, match="permutation"):
            await RankingLoss("judge").bind(resources)(["c1", "c2", "c3"])

    run(body)


def _optimizer_reply(req: ChatRequest) -> str:
    value = re.search(r"<<<\n(.*?)\n>>>", req.user_text, re.S)
    new = f"NEW {value.group(1) if value else ''}"
    return json.dumps({"summary": "be shorter", "new_value": new})


def test_optimizer_updates_upstream_first_and_shows_downstream_what_changed() -> None:
    async def body(server: LLMServer, resources: ResourceConfig, s: Scripted) -> None:
        s.replies["model-o"] = _optimizer_reply
        pipeline = Draft().bind(resources=resources).train()
        optimizer = Optimizer(pipeline.parameters()).bind(resources)
        optimizer.zero_feedback()
        out = await pipeline("topic")
        loss = await VerifierLoss(lambda o, t: (False, "too wordy"))(out)
        await loss.backward()
        summary = await optimizer.step()
        assert summary.changed == ["first.system_prompt", "second.system_prompt"]
        assert [(u.old, u.new) for u in summary.updates] == [("S1", "NEW S1"), ("S2", "NEW S2")]
        assert pipeline.frozen.system_prompt.value == "fixed"
        assert not pipeline.first.system_prompt.feedback  # cleared by the update
        first, second = user_texts(server, "model-o")
        assert first.startswith("Parameter: first.system_prompt")
        assert "Role (the new value must keep this role): Writes the first draft." in first
        assert "Upstream" not in first
        assert "must keep a friendly tone" in second
        assert "- first.system_prompt: 'S1' -> 'NEW S1'" in second
        assert "too wordy" in second

    run(body)


def test_backward_with_an_llm_splits_blame_and_skips_frozen_branches() -> None:
    async def body(server: LLMServer, resources: ResourceConfig, s: Scripted) -> None:
        s.replies["model-b"] = lambda req: json.dumps({
            "prompt_feedback": f"prompt fix {req.user_text.split()[1]}",
            "input_feedback": "input lacked detail",
        })
        pipeline = Draft().bind(resources=resources).train()
        out = await pipeline("topic")
        loss = await VerifierLoss(lambda o, t: (0.2, "too vague"))(out)
        report = await loss.backward(alias="backward")
        assert report.llm_calls == 2  # second and first; frozen has nothing to learn upstream
        assert pipeline.second.system_prompt.feedback == ["prompt fix second"]
        assert pipeline.first.system_prompt.feedback == ["prompt fix first"]
        asked = user_texts(server, "model-b")
        assert "too vague" in asked[0] and "input lacked detail" in asked[1]

    run(body)


def test_example_score_rises_over_steps() -> None:
    path = Path(__file__).parents[2] / "examples" / "05_optimization.py"
    spec = importlib.util.spec_from_file_location("example_05_optimization", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example  # dataclasses look their module up while decorating
    try:
        spec.loader.exec_module(example)
        result = asyncio.run(asyncio.wait_for(example.main(steps=3, verbose=False), 30))
    finally:
        sys.modules.pop(spec.name, None)
    assert result.scores == [0.0, 0.5, 1.0]
    assert result.final_score == 1.0
    assert result.llm_calls == 18  # 3 x 4 training rows + 2 optimizer calls + 4 eval rows

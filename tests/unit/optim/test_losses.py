"""Verifier and composite losses, lenient reply parsing, records on outputs, saved state."""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from plait import ConfigError, LLMInference, Module, Parameter
from plait.optim import CompositeLoss, JudgeReplyError, VerifierLoss, load_state, save_state
from plait.optim._calls import parse_reply
from plait.optim.judges import JudgeVerdict
from plait.optim.record import RecordedDict, RecordedStr, attach_record, record_of


def exact(out: Any, target: Any) -> tuple[bool, str]:
    ok = out == target
    return ok, "" if ok else f"expected {target}"


def test_verifier_scores_bools_floats_and_batches() -> None:
    loss = asyncio.run(VerifierLoss(exact)(["a", "b"], target=["a", "x"]))
    assert loss.scores == [1.0, 0.0] and loss.score == 0.5
    assert loss.feedback == "[1] expected x"

    async def graded(out: Any, target: Any) -> tuple[float, str]:
        return 0.25, "meh"

    assert asyncio.run(VerifierLoss(graded)("a")).score == 0.25


def test_verifier_rejects_bad_results_and_batch_targets() -> None:
    with pytest.raises(ConfigError, match="must return"):
        asyncio.run(VerifierLoss(lambda o, t: True)("a"))  # pyright: ignore[reportArgumentType]
    with pytest.raises(ConfigError, match=r"float in \[0, 1\]"):
        asyncio.run(VerifierLoss(lambda o, t: (3, ""))("a"))
    with pytest.raises(ConfigError, match="one target per output"):
        asyncio.run(VerifierLoss(exact)(["a", "b"], target=["a"]))


def test_composite_normalises_weights_and_labels_feedback() -> None:
    always = VerifierLoss(lambda o, t: (True, ""), name="always")
    never = VerifierLoss(lambda o, t: (False, "never good"), name="never")
    loss = asyncio.run(CompositeLoss([(always, 3), (never, 1)])("out"))
    assert loss.score == pytest.approx(0.75)
    assert loss.feedback == "[never, weight 0.25, score 0.00] never good"
    with pytest.raises(ConfigError, match="positive"):
        CompositeLoss([(always, 0)])


def test_parse_reply_tolerates_fences_and_prose_and_names_garbage() -> None:
    fenced = 'Sure!\n```json\n{"score": 0.5, "feedback": "ok"}\n```'
    assert parse_reply(fenced, JudgeVerdict, alias="j", role="LLMJudge").score == 0.5
    with pytest.raises(JudgeReplyError, match=r"alias 'j'.*no JSON object"):
        parse_reply("I think it is great", JudgeVerdict, alias="j", role="LLMJudge")
    with pytest.raises(JudgeReplyError, match="does not fit JudgeVerdict"):
        parse_reply('{"score": "high"}', JudgeVerdict, alias="j", role="LLMJudge")


class One(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference("fast", system_prompt=Parameter("v0", description="d"))

    def forward(self, x: str) -> str:
        return self.llm(x)


def test_recorded_outputs_behave_like_plain_values() -> None:
    module = One()
    graph = module.graph_for(1)
    out = attach_record("hello", module, graph, {"input:text": "x"})
    assert isinstance(out, RecordedStr) and out == "hello" and out.upper() == "HELLO"
    assert json.dumps(out) == '"hello"' and hash(out) == hash("hello")
    assert type(pickle.loads(pickle.dumps(out))) is str  # the record never travels
    mapping = attach_record({"k": 1}, module, graph, {})
    assert isinstance(mapping, RecordedDict) and mapping == {"k": 1}

    class Answer(BaseModel):
        text: str

    model = attach_record(Answer(text="t"), module, graph, {})
    assert type(model) is Answer and model.model_dump() == {"text": "t"}
    assert record_of(model) is not None
    assert attach_record(None, module, graph, {}) is None


def test_save_and_load_state_round_trip(tmp_path: Path) -> None:
    trained = One()
    trained.llm.system_prompt.value = "learned prompt"
    path = save_state(trained, tmp_path / "state.json")
    assert json.loads(path.read_text())["parameters"] == {"llm.system_prompt": "learned prompt"}
    fresh = One()
    load_state(fresh, path)
    assert fresh.state_dict() == trained.state_dict()
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(ConfigError, match="not a plait state file"):
        load_state(fresh, tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="No state file"):
        load_state(fresh, tmp_path / "missing.json")

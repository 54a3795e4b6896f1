"""Values end to end: an LLM node's Value with its metadata, checkpoints, streamed errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import plait.functional as F
from plait import ExecutionSettings, LLMInference, Module
from plait.errors import BatchError
from plait.testing import LLMServer
from plait.values import LLM_META_KEYS, Value, ValueKind, batch_values, valueify


class Described(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", as_value=True)

    def forward(self, text: str) -> Any:
        reply = self.llm(F.render("Describe {t}", t=text))
        return {"reply": reply, "shout": F.upper(reply), "tokens": F.extract_meta(reply)}


def test_an_llm_value_carries_the_reply_and_its_metadata(tmp_path: Path) -> None:
    with LLMServer().run_in_thread() as server:
        resources = server.resource_config({"fast": "model-v"}, input_cost_per_1m=2.0,
                                           output_cost_per_1m=4.0)
        pipeline = Described().bind(resources=resources, checkpoint_dir=tmp_path)
        out = pipeline.run_sync("cats")
        reply = out["reply"]
        assert isinstance(reply, Value) and reply.kind is ValueKind.RESPONSE
        assert reply.payload == "[model-v] echo: Describe cats" and reply.ref == "llm"
        assert set(reply.meta) == set(LLM_META_KEYS)
        meta = reply.meta
        assert (meta["alias"], meta["model"]) == ("fast", "model-v")
        assert meta["cost_usd"] == pytest.approx(
            (meta["input_tokens"] * 2.0 + meta["output_tokens"] * 4.0) / 1e6)
        assert meta["latency_s"] > 0
        assert out["shout"] == Value(ValueKind.TEXT, "[MODEL-V] ECHO: DESCRIBE CATS")
        assert out["tokens"] == meta

        requests = server.stats().total_requests
        again = Described().bind(resources=resources, checkpoint_dir=tmp_path).run_sync("cats")
        assert server.stats().total_requests == requests  # served from the checkpoint
        assert again == out  # the Value survives storage exactly, metadata included


def test_streamed_rows_give_error_values_only_when_asked() -> None:
    with LLMServer().run_in_thread() as server:
        server.add_faults({"kind": "400", "match": "bad", "times": 10})
        pipeline = Described().bind(resources=server.resource_config({"fast": "m"}))
        with pytest.raises(BatchError):  # not asked: the failure is raised
            pipeline.run_sync(["ok", "bad"])
        with ExecutionSettings(streaming=True):
            rows = sorted(pipeline.run_sync(["ok", "bad"]), key=lambda r: r.index)
        values = [valueify(r) for r in rows]
        assert not values[0].is_error and values[0].meta == {"row": 0}
        assert values[1].is_error and "400" in str(values[1].payload)
        assert F.unwrap_or(values[1], "n/a") == "n/a"


def test_a_batch_error_gives_every_row_as_a_value() -> None:
    with LLMServer().run_in_thread() as server:
        server.add_faults({"kind": "400", "match": "bad", "times": 10})
        pipeline = Described().bind(resources=server.resource_config({"fast": "m"}))
        with pytest.raises(BatchError) as info:
            pipeline.run_sync(["ok", "bad", "fine"])
    values = batch_values(info.value)
    assert [v.is_error for v in values] == [False, True, False]
    assert [v.meta["row"] for v in values] == [0, 1, 2]
    assert values[0].kind is ValueKind.STRUCTURED and "reply" in values[0].payload
    assert "400" in str(values[1].payload)
    assert F.unwrap_or(values[1], "n/a") == "n/a"

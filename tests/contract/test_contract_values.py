"""Values and functional ops behave the same on every executor."""

from __future__ import annotations

from typing import Any

import plait.functional as F
from plait import LLMInference, Module
from plait.values import LLM_META_KEYS, Value, ValueKind


class ValuePipeline(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", as_value=True)

    def forward(self, text: str) -> Any:
        reply = self.llm(F.render("Say {t}", t=F.strip(text)))
        return {"reply": reply, "upper": F.upper(reply), "tokens": reply.meta["output_tokens"],
                "words": F.select(F.parse_structured(F.to_json({"w": [text]})), "w[0]")}


def test_llm_values_and_ops_on_every_executor(executor: str, make_resources: Any) -> None:
    pipeline = ValuePipeline().bind(resources=make_resources({"fast": "model-c"}),
                                    executor=executor)
    outputs = pipeline.run_sync([" a ", " b "])
    for out, text in zip(outputs, [" a ", " b "], strict=True):
        reply = out["reply"]
        assert isinstance(reply, Value) and reply.kind is ValueKind.RESPONSE
        assert reply.payload == f"[model-c] echo: Say {text.strip()}" and reply.ref == "llm"
        assert set(reply.meta) == set(LLM_META_KEYS) and reply.meta["alias"] == "fast"
        assert out["upper"] == Value(ValueKind.TEXT, reply.payload.upper())
        assert out["tokens"] == reply.meta["output_tokens"] > 0
        assert out["words"] == text

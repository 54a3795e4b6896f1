"""plait.values: the Value container, valueify/unwrap, storage, and Values while tracing."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from pydantic import BaseModel

import plait.functional as F
from plait import LLMInference, Module, trace
from plait.errors import PlaitError, RateLimitError, TraceError
from plait.execution.results import BatchResult, RowResult
from plait.serialize import from_jsonable, model_registry, to_jsonable
from plait.values import LLM_META_KEYS, Value, ValueKind, infer_kind, unwrap, valueify


class Facts(BaseModel):
    title: str
    facts: list[str]


def test_value_fields_and_kinds() -> None:
    v = Value(ValueKind.TEXT, "hi", ref="llm", meta={"alias": "fast"})
    assert (v.kind, v.payload, v.ref, v.meta) == (ValueKind.TEXT, "hi", "llm", {"alias": "fast"})
    assert Value(kind="int", payload=3).kind is ValueKind.INT
    assert {k.name for k in ValueKind} == {"TEXT", "FSTRING", "RESPONSE", "STRUCTURED", "INT",
                                          "FLOAT", "ERROR", "TOOL_RESULT", "BINARY", "OTHER"}
    assert str(v) == "hi" and f"<{v}>" == "<hi>"  # formats as its payload in prompts
    assert repr(v) == "Value(TEXT, 'hi', ref='llm', meta={'alias': 'fast'})"
    assert v.with_meta(tokens=3).meta == {"alias": "fast", "tokens": 3}
    assert v.meta == {"alias": "fast"}  # immutable: with_meta copies
    with pytest.raises(ValueError, match="frozen"):
        v.payload = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "kind"),
    [("a", ValueKind.TEXT), (1, ValueKind.INT), (1.5, ValueKind.FLOAT), (True, ValueKind.OTHER),
     (None, ValueKind.OTHER), (b"x", ValueKind.BINARY), ({"a": 1}, ValueKind.STRUCTURED),
     ([1], ValueKind.STRUCTURED), (Facts(title="t", facts=[]), ValueKind.STRUCTURED),
     (ValueError("x"), ValueKind.ERROR), (object, ValueKind.OTHER)],
)
def test_valueify_infers_the_kind_and_unwrap_returns_the_payload(raw: Any, kind: ValueKind) -> None:
    assert infer_kind(raw) is kind
    v = valueify(raw)
    assert v.kind is kind and v.payload is raw
    assert valueify(v) is v
    assert valueify(v, kind=ValueKind.OTHER).kind is ValueKind.OTHER
    if kind is not ValueKind.ERROR:
        assert unwrap(v) is raw


def test_unwrap_goes_into_containers_and_raises_errors() -> None:
    assert unwrap({"a": [valueify(1), (valueify("x"),)]}) == {"a": [1, ("x",)]}
    err = RateLimitError("slow down", status=429)
    with pytest.raises(RateLimitError, match="slow down"):
        unwrap([valueify(err)])


def test_streamed_rows_become_values_or_error_values() -> None:
    ok = valueify(BatchResult(index=2, input="x", output="out", error=None))
    assert ok == Value(ValueKind.TEXT, "out", meta={"row": 2})
    failure = RateLimitError("429", status=429)
    bad = valueify(BatchResult(index=3, input="y", output=None, error=failure))
    assert bad.is_error and bad.payload is failure and bad.meta == {"row": 3}
    assert valueify(RowResult(index=0, output=1)).payload == 1


def test_values_pickle_and_store_without_pickle() -> None:
    v = Value(ValueKind.STRUCTURED, Facts(title="t", facts=["a"]), ref="extract",
              meta={"alias": "fast", "pair": (1, 2)})
    assert pickle.loads(pickle.dumps(v)) == v
    stored = json.loads(json.dumps(to_jsonable(v)))
    assert from_jsonable(stored, model_registry([Facts])) == v
    error = from_jsonable(json.loads(json.dumps(to_jsonable(valueify(ValueError("bad"))))))
    assert error.is_error and error.payload.message == "bad"  # a record, never re-raised as is
    with pytest.raises(PlaitError, match=r"Error value: .*bad"):
        unwrap(error)


class WithValues(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast", as_value=True)

    def forward(self, text: str) -> Any:
        reply = self.llm(text)
        return {"text": F.extract_text(reply), "tokens": reply.meta["output_tokens"],
                "wrapped": F.valueify(text, kind=ValueKind.FSTRING)}


def test_values_are_traced_like_any_value() -> None:
    graph = trace(WithValues())
    kinds = {n.id: n.kind for n in graph.nodes.values()}
    assert kinds["llm"] == "llm"
    assert sorted(k for k in kinds.values() if k == "call") == ["call", "call"]
    assert any(n.kind == "getitem" and n.target == "output_tokens" for n in graph.nodes.values())


def test_a_value_cannot_wrap_a_placeholder() -> None:
    class Wraps(Module):
        def forward(self, text: str) -> Any:
            return Value(ValueKind.TEXT, text)

    with pytest.raises(TraceError, match=r"plait.functional.valueify"):
        trace(Wraps())


def test_llm_parse_gives_a_value_when_asked() -> None:
    plain = LLMInference(alias="fast")
    assert plain.parse("hi") == "hi"
    as_value = LLMInference(alias="fast", response_format=Facts, as_value=True)
    parsed = as_value.parse('{"title": "t", "facts": []}')
    assert parsed == Value(ValueKind.STRUCTURED, Facts(title="t", facts=[]))
    assert LLM_META_KEYS == ("alias", "model", "input_tokens", "output_tokens", "cost_usd",
                             "latency_s")

"""plait.functional: every op eagerly on real values and traced (a graph node run later)."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

import plait.functional as F
from plait import LLMInference, Module, Parameter, trace
from plait.errors import FunctionalError, NodeExecutionError, TraceError
from plait.values import Value, ValueKind


class Verdict(BaseModel):
    label: str
    score: float


def shout(text: str) -> str:
    return text.upper() + "!"


@dataclass
class Case:
    """op(*args, **kwargs) == expected; in the traced run every data argument is an input."""

    op: Callable[..., Any]
    args: tuple[Any, ...]
    expected: Any
    kwargs: dict[str, Any] = field(default_factory=dict[str, Any])


RESPONSES_BODY = {"output": [{"type": "message", "content": [{"type": "output_text",
                                                                "text": "hi there"}]}]}
CASES: dict[str, Case] = {
    "render": Case(F.render, ("{a} and {b}", {"a": 1}), "1 and 2", {"b": 2}),
    "try_render": Case(F.try_render, ("<{x}>",), "<y>", {"x": "y"}),
    "format": Case(F.format, ("{} + {}", 1, 2), "1 + 2"),
    "concat": Case(F.concat, ("a", "b", 3), "a-b-3", {"sep": "-"}),
    "join": Case(F.join, (["a", "b"],), "a+b", {"sep": "+"}),
    "strip": Case(F.strip, ("  hi \n",), "hi"),
    "lower": Case(F.lower, ("ABC",), "abc"),
    "upper": Case(F.upper, ("abc",), "ABC"),
    "to_json": Case(F.to_json, ({"a": [1, 2]},), '{"a": [1, 2]}'),
    "parse_json": Case(F.parse_json, ('{"a": 1}',), {"a": 1}),
    "parse_structured": Case(F.parse_structured, ('```json\n{"label": "ok", "score": 1}\n```',
                                                  Verdict), Verdict(label="ok", score=1.0)),
    "select": Case(F.select, ({"a": {"b": [10, 20]}}, "a.b[1]"), 20),
    "merge": Case(F.merge, ({"a": 1, "b": 2}, {"b": 3}), {"a": 1, "b": 3}),
    "coerce": Case(F.coerce, ("42", ValueKind.INT), 42),
    "add": Case(F.add, (2, 3), 5),
    "sub": Case(F.sub, (2, 3.5), -1.5),
    "mul": Case(F.mul, (4, 2.5), 10.0),
    "div": Case(F.div, (3, 2), 1.5),
    "sum": Case(F.sum, ([1, 2, 3.5],), 6.5),
    "min": Case(F.min, ([3, 1, 2],), 1),
    "max": Case(F.max, ([3, 1, 2],), 3),
    "mean": Case(F.mean, ([1, 2, 3, 4],), 2.5),
    "extract_text": Case(F.extract_text, (RESPONSES_BODY,), "hi there"),
    "extract_meta": Case(F.extract_meta, ({"model": "m", "usage": {"prompt_tokens": 3,
                                                                   "completion_tokens": 4}},),
                         {"model": "m", "input_tokens": 3, "output_tokens": 4}),
    "with_meta": Case(F.with_meta, ("hi",), Value(ValueKind.TEXT, "hi", meta={"src": "u"}),
                      {"src": "u"}),
    "unwrap_or": Case(F.unwrap_or, ("ok", "fallback"), "ok"),
    "is_error": Case(F.is_error, ("fine",), False),
    "valueify": Case(F.valueify, (3,), Value(ValueKind.INT, 3)),
    "unwrap": Case(F.unwrap, ("plain",), "plain"),
    "map_values": Case(F.map_values, (shout, ["a", "b"]), ["A!", "B!"]),
    "zip_values": Case(F.zip_values, ([1, 2], ["a", "b"]), [(1, "a"), (2, "b")]),
    "stack_structured": Case(F.stack_structured, ([{"a": 1}, {"a": 2}],), [{"a": 1}, {"a": 2}]),
}

CATALOG = {"render", "try_render", "format", "concat", "strip", "lower", "upper",
           "parse_structured", "select", "merge", "coerce", "add", "sub", "mul", "div", "sum",
           "min", "max", "mean", "extract_text", "extract_meta", "with_meta", "unwrap_or",
           "is_error", "map_values", "zip_values", "stack_structured"}


def is_static(arg: Any) -> bool:
    return isinstance(arg, type | ValueKind) or inspect.isfunction(arg)


class OpPipeline(Module):
    """forward(*inputs) applies the case's op with every data argument traced."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.case = case

    def forward(self, *inputs: Any) -> Any:
        it = iter(inputs)
        args = [a if is_static(a) else next(it) for a in self.case.args]
        return self.case.op(*args, **self.case.kwargs)


def test_the_seed_catalog_is_covered() -> None:
    assert set(CASES) >= CATALOG
    assert set(F.__all__) >= CATALOG


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_eager_and_traced(name: str) -> None:
    case = CASES[name]
    assert case.op(*case.args, **case.kwargs) == case.expected

    inputs = [a for a in case.args if not is_static(a)]
    pipeline = OpPipeline(case)
    graph = trace(pipeline, num_args=len(inputs))
    calls = [n for n in graph.nodes.values() if n.kind == "call"]
    assert [n.target.rsplit(":", 1)[1] for n in calls] == [name]
    pickle.loads(pickle.dumps(graph))  # static arguments (classes, functions) stay picklable
    # One row in a batch: a row is a tuple of forward()'s inputs (a bare list would be a batch).
    assert pipeline.run_sync([tuple(inputs)]) == [case.expected]


def test_value_in_gives_value_out_and_errors_flow_through() -> None:
    assert F.lower(Value(ValueKind.TEXT, "AB")) == Value(ValueKind.TEXT, "ab")
    assert F.add(Value(ValueKind.INT, 1), 2.5) == Value(ValueKind.FLOAT, 3.5)
    boom = Value(ValueKind.ERROR, ValueError("upstream failed"), ref="llm")
    assert F.upper(boom) is boom
    assert F.render("{a}", {"a": boom}) is boom
    assert F.stack_structured([{"a": 1}, boom]) is boom
    assert F.unwrap_or(boom, "n/a") == "n/a"
    assert F.is_error(boom) is True
    assert F.map_values(str.upper, [Value(ValueKind.TEXT, "a"), boom]) == [
        Value(ValueKind.TEXT, "A"), boom]
    with pytest.raises(ValueError, match="upstream failed"):
        F.extract_text(boom)


def test_try_render_returns_an_error_value_instead_of_raising() -> None:
    result = F.try_render("{missing} {x}", x=1)
    assert isinstance(result, Value) and result.is_error
    assert "missing" in str(result.payload)
    with pytest.raises(FunctionalError, match=r"needs \['missing'\]"):
        F.render("{missing} {x}", x=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: F.select({"a": {"b": 1}}, "a.c"), r"fails at step 'c'.*keys are \['b'\]"),
        (lambda: F.div(1, 0), "division of 1 by zero"),
        (lambda: F.mean([]), "empty list"),
        (lambda: F.coerce(2.5, ValueKind.INT), "not a whole number"),
        (lambda: F.zip_values([1], [1, 2]), r"differ in length \[1, 2\]"),
        (lambda: F.parse_structured("not json"), "not JSON"),
        (lambda: F.parse_structured('{"label": 1}', Verdict), "does not fit Verdict"),
        (lambda: F.add("1", 2), "needs numbers, got str"),
        (lambda: F.lower(3), "needs text as a str, got int"),
    ],
)
def test_failures_raise_functional_errors_that_name_the_value(
    call: Callable[[], Any], message: str
) -> None:
    with pytest.raises(FunctionalError, match=message):
        call()


def test_select_paths_and_defaults() -> None:
    data = {"items": [{"name": "a"}, {"name": "b"}], "model": Verdict(label="x", score=1)}
    assert F.select(data, "items.1.name") == "b"
    assert F.select(data, ["items", -1, "name"]) == "b"
    assert F.select(data, "model.label") == "x"
    assert F.select(data, "items[5].name", default=None) is None


class Clean(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")
        self.style = Parameter("Be brief.", requires_grad=False)

    def forward(self, text: str) -> Any:
        reply = self.llm(F.render("{style} Summarize: {t}", style=self.style, t=text))
        return F.lower(F.strip(reply))


def test_ops_on_module_outputs_and_parameters_are_nodes() -> None:
    graph = trace(Clean())
    kinds = [(n.kind, n.target) for n in graph.nodes.values()]
    targets = [t for k, t in kinds if k == "call"]
    assert [t.rsplit(":", 1)[1] for t in targets] == ["render", "strip", "lower"]
    render = next(n for n in graph.nodes.values() if n.kind == "call")
    assert "param:style" in render.deps  # the Parameter stays live, not frozen at trace time




def test_local_functions_cannot_be_passed_while_tracing() -> None:
    def nested(x: str) -> str:
        return x

    class Bad(Module):
        def forward(self, items: Any) -> Any:
            return F.map_values(nested, items)

    with pytest.raises(TraceError, match="not importable"):
        trace(Bad())


def test_op_errors_in_a_run_name_the_node() -> None:
    class Divide(Module):
        def forward(self, a: Any, b: Any) -> Any:
            return F.div(a, b)

    with pytest.raises(NodeExecutionError, match="division of 1 by zero"):
        Divide().run_sync(1, 0)


class FormattedInputs(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")
        self.template = Parameter("Tmpl {x}", requires_grad=False)

    def forward(self, text: str) -> Any:
        reply = self.llm(text)
        return [F.upper(f"x {reply}"), F.lower(self.template.value),
                F.render(self.template.value, x=reply), F.strip(str(reply))]


def test_formatted_text_and_parameter_values_flow_into_ops_as_nodes() -> None:
    graph = trace(FormattedInputs())
    calls = [n for n in graph.nodes.values() if n.kind == "call"]
    assert [n.target for n in calls] == ["plait.functional:upper", "plait.functional:lower",
                                         "plait.functional:render", "plait.functional:strip"]
    assert all(n.deps for n in calls)  # each waits for its traced input

"""Backward propagation over recorded graphs: order, fan-out, params, batches, release."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from plait import LLMInference, Module, Parameter
from plait.optim import BackwardContext, BackwardError, ForwardRecord, Loss, LossItem
from plait.optim.backward import combine_feedback, propagate
from plait.optim.order import note_graph, position_of
from plait.optim.record import live_records, record_of


class Tap(Module):
    """A leaf module that logs the feedback it receives and passes it on."""

    leaf = True

    def __init__(self, log: list[tuple[str, str]], name: str) -> None:
        super().__init__()
        self.log = log
        self.name = name

    def forward(self, *values: Any) -> str:
        return f"{self.name}({', '.join(map(str, values))})"

    async def backward(self, feedback: str, ctx: BackwardContext) -> Any:
        self.log.append((self.name, feedback))
        return f"{self.name}<-{feedback}"


class Join(Tap):
    """Routes different feedback to each of its two inputs."""

    async def backward(self, feedback: str, ctx: BackwardContext) -> Any:
        self.log.append((self.name, feedback))
        return {0: f"left: {feedback}", 1: f"right: {feedback}"}


class Net(Module):
    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__()
        self.p = Parameter("P", description="the learnable knob")
        self.a = Tap(log, "a")
        self.b = Tap(log, "b")
        self.c = Tap(log, "c")
        self.join = Join(log, "join")

    def forward(self, x: str) -> str:
        y = self.a(x, self.p)
        return self.join(self.b(y), self.c(y))  # y fans out to b and c


def test_reverse_topological_order_and_fan_out_combine() -> None:
    log: list[tuple[str, str]] = []
    net = Net(log).train()
    out = net.run_sync("x")
    assert out == "join(b(a(x, P)), c(a(x, P)))" and isinstance(out, str)
    report = asyncio.run(Loss([LossItem(out, 0.0, "bad")], name="t").backward())
    assert [name for name, _ in log] == ["join", "b", "c", "a"]
    assert log[1] == ("b", "left: bad") and log[2] == ("c", "right: bad")
    fan_in = log[3][1]
    assert "used in 2 places" in fan_in
    assert "b<-left: bad" in fan_in and "c<-right: bad" in fan_in
    assert net.p.feedback == [f"a<-{fan_in}"]  # the param node received a's feedback
    assert report.parameters == {"p": 1} and report.llm_calls == 0


def test_batch_feedback_accumulates_per_parameter_in_row_order() -> None:
    net = Net([]).train()
    outs = net.run_sync(["x1", "x2", "x3"])
    loss = Loss([LossItem(o, 0.0, f"row {i}") for i, o in enumerate(outs)], name="t")
    asyncio.run(loss.backward())
    assert len(net.p.feedback) == 3
    assert [f.count("row 0") for f in net.p.feedback] == [2, 0, 0]  # via b and via c
    assert "row 2" in net.p.feedback[2]


def test_items_without_feedback_send_nothing() -> None:
    net = Net([]).train()
    out = net.run_sync("x")
    asyncio.run(Loss([LossItem(out, 1.0, "")], name="t").backward())
    assert net.p.feedback == []


def test_records_are_released_after_backward() -> None:
    net = Net([]).train()
    out = net.run_sync("x")
    rec = record_of(out)
    assert rec is not None and rec.values
    asyncio.run(Loss([LossItem(out, 0.0, "bad")], name="t").backward())
    assert rec.released and rec.values == {}
    with pytest.raises(BackwardError, match="already called"):
        asyncio.run(Loss([LossItem(out, 0.0, "bad")], name="t").backward())


def test_eval_mode_records_nothing_and_backward_says_call_train() -> None:
    net = Net([])  # eval by default
    out = net.run_sync("x")
    assert type(out) is str and record_of(out) is None
    with pytest.raises(BackwardError, match=r"eval mode.*pipeline\.train\(\)"):
        asyncio.run(Loss([LossItem(out, 0.0, "bad")], name="t").backward())


class Draft(Module):
    def __init__(self) -> None:
        super().__init__()
        self.second = LLMInference("fast", system_prompt=Parameter("S2", description="polish"))
        self.first = LLMInference("fast", system_prompt=Parameter("S1", description="draft"))
        self.frozen = LLMInference("fast", system_prompt="fixed")

    def forward(self, text: str) -> str:
        draft = self.first(text)
        side = self.frozen(text)
        return self.second(f"Polish {draft} / {side}")


def _hand_record(module: Draft) -> ForwardRecord:
    graph = module.graph_for(1)
    values = {"input:text": "q", "first": "d1", "frozen": "f1", "format": "Polish d1 / f1",
              "second": "final"}
    assert set(values) == set(graph.nodes)
    return ForwardRecord(module=module, graph=graph, values=values)


def test_llm_template_backward_reaches_learnable_prompts_only() -> None:
    module = Draft()
    deliveries = asyncio.run(propagate(_hand_record(module), "too vague", llm=None))
    by_param = {id(p): t for p, t in deliveries}
    second = by_param[id(module.second.system_prompt)]
    first = by_param[id(module.first.system_prompt)]
    assert "'Polish d1 / f1'" in second and second.endswith("too vague")
    assert "'second'" in first and "'d1'" in first and "too vague" in first
    assert len(deliveries) == 2  # the frozen prompt gets nothing


def test_graph_order_knows_upstream_parameters() -> None:
    module = Draft()
    note_graph(module, module.graph_for(1))
    first = position_of(module.first.system_prompt)
    second = position_of(module.second.system_prompt)
    assert first is not None and second is not None
    assert first.rank < second.rank
    assert module.first.system_prompt in second.upstream and not list(first.upstream)
    assert second.name == "second.system_prompt"


def test_combine_feedback() -> None:
    assert combine_feedback(["a"]) == "a"
    assert combine_feedback(["a", "a ", ""]) == "a"
    assert combine_feedback(["a", "b"]).endswith("1. a\n2. b")


def test_pydantic_side_table_entries_go_with_backward_and_with_the_object() -> None:
    from pydantic import BaseModel

    from plait.optim import attach_record

    class Answer(BaseModel):
        text: str

    module = Draft()
    graph = module.graph_for(1)
    before = live_records()
    answer = attach_record(Answer(text="x"), module, graph, {"input:text": "q"})
    assert answer == Answer(text="x") and record_of(answer) is not None
    assert live_records() == before + 1
    asyncio.run(Loss([LossItem(answer, 0.0, "")], name="t").backward())
    assert live_records() == before
    dropped = attach_record(Answer(text="y"), module, graph, {})
    del dropped
    gc.collect()
    assert live_records() == before

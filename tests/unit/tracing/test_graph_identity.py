"""Issue 8, section 2: unique node ids, live Parameters under a cached graph, long chains."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import pytest

from plait import LLMInference, Module, NodeExecutionError, Parameter
from plait.tracing import trace

RunGraph = Callable[..., tuple[Any, list[str]]]


class Siblings(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="a")
        self.llm_1 = LLMInference(alias="b")

    def forward(self, x: Any) -> Any:
        return [self.llm(f"one {x}"), self.llm(f"two {x}"), self.llm_1(f"three {x}")]


class SiblingsOtherOrder(Siblings):
    def forward(self, x: Any) -> Any:
        return [self.llm_1(f"three {x}"), self.llm(f"one {x}"), self.llm(f"two {x}")]


@pytest.mark.parametrize("cls", [Siblings, SiblingsOtherOrder])
def test_every_call_is_its_own_node(cls: type[Siblings], run_graph: RunGraph) -> None:
    pipe = cls()
    g = trace(pipe)
    llm = g.llm_nodes()
    assert len(llm) == 3 and len({n.id for n in llm}) == 3
    assert sorted(n.target for n in llm) == ["llm", "llm", "llm_1"]
    assert sorted(n.alias or "" for n in llm) == ["a", "a", "b"]
    output, prompts = run_graph(pipe, g, "x")
    assert sorted(prompts) == ["one x", "three x", "two x"]
    assert sorted(o.strip() for o in output) == [f"Echo: {p}" for p in sorted(prompts)]


class Templated(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="a")
        self.template = Parameter("Summarize: {input}", description="the instruction")
        self.style = Parameter("Be brief.", description="style")

    def forward(self, x: Any) -> Any:
        return self.llm(self.template.value.format(input=x) + f" {self.style}")


def test_a_parameter_read_in_forward_stays_live_in_the_cached_graph(
    run_graph: RunGraph,
) -> None:
    pipe = Templated()
    graph = pipe.graph_for(1)
    assert {"param:template", "param:style"} <= set(graph.nodes)
    assert not any("Summarize" in repr(n.args) + repr(n.target) for n in graph.nodes.values())
    _, prompts = run_graph(pipe, graph, "doc")
    assert prompts == ["Summarize: doc Be brief."]

    pipe.load_state_dict({"template": "Translate: {input}", "style": "Be formal."},
                         strict=False)
    assert pipe.graph_for(1) is graph  # still the cached graph...
    _, prompts = run_graph(pipe, pipe.graph_for(1), "doc")
    assert prompts == ["Translate: doc Be formal."]  # ...reading today's values

    pipe.template.apply_update("Explain: {input}")  # what optimizer.step() does
    _, prompts = run_graph(pipe, pipe.graph_for(1), "doc")
    assert prompts == ["Explain: doc Be formal."]


def test_a_parameter_used_as_a_plain_python_value_is_refused() -> None:
    class Branchy(Templated):
        def forward(self, x: Any) -> Any:
            if self.style.value.startswith("Be"):  # decided once, on a placeholder
                return self.llm(x)
            return x

    with pytest.raises(Exception, match="branch on") as info:
        trace(Branchy())
    assert "test_graph_identity.py:" in str(info.value)


class Chain(Module):
    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length
        self.llm = LLMInference(alias="a")

    def forward(self, x: Any) -> Any:
        text = self.llm(x)
        for _ in range(self.length):
            text = text + "."
        return text


@pytest.mark.parametrize("length", [700, 10_000])
def test_long_chains_of_string_steps_finish(length: int, run_graph: RunGraph) -> None:
    pipe = Chain(length)
    graph = trace(pipe)
    assert len(graph.nodes) == length + 2
    output, _ = run_graph(pipe, graph, "x")
    assert output == "  Echo: x  " + "." * length


class Parse(Module):
    leaf = True

    def forward(self, text: str) -> int:
        return int(text)  # the user's failing line


class Parses(Module):
    def __init__(self) -> None:
        super().__init__()
        self.parse = Parse()

    def forward(self, x: Any) -> Any:
        return self.parse(x)


def test_a_failing_leaf_keeps_the_users_frame(run_graph: RunGraph) -> None:
    pipe = Parses()
    with pytest.raises(NodeExecutionError) as info:
        run_graph(pipe, trace(pipe), "not a number")
    assert isinstance(info.value.__cause__, ValueError)
    printed = "".join(traceback.format_exception(info.value))
    assert "return int(text)  # the user's failing line" in printed


def test_train_and_eval_are_part_of_the_graph_cache_key() -> None:
    class ModeAware(Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = LLMInference(alias="a")

        def forward(self, x: Any) -> Any:
            return self.llm(f"{'train' if self.training else 'eval'}: {x}")

    pipe = ModeAware()
    eval_graph = pipe.graph_for(1)
    train_graph = pipe.train().graph_for(1)
    assert train_graph is not eval_graph
    assert train_graph.nodes["format"].target[0] == "train: "
    assert pipe.eval().graph_for(1).nodes["format"].target[0] == "eval: "


def test_plain_data_changed_in_place_retraces_and_leaf_state_does_not() -> None:
    class Tally(Module):
        leaf = True

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def forward(self, text: str) -> str:
            self.seen.append(text)  # run-time state of a leaf: not part of any trace
            return text

    class FewShot(Module):
        def __init__(self) -> None:
            super().__init__()
            self.examples = ["2+2=4"]
            self.llm = LLMInference(alias="a")
            self.tally = Tally()

        def forward(self, x: Any) -> Any:
            return self.tally(self.llm("\n".join(self.examples) + f"\n{x}"))

    pipe = FewShot()
    first = pipe.graph_for(1)
    assert pipe.graph_for(1) is first
    pipe.tally.seen.append("row")
    assert pipe.graph_for(1) is first
    pipe.examples.append("3+3=6")  # in place: no __setattr__
    second = pipe.graph_for(1)
    assert second is not first
    assert second.nodes["format"].target[0] == "2+2=4\n3+3=6\n"

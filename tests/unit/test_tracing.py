"""Tracing forward() into a graph: what is captured, and what fails with a clear error."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import pytest
from pydantic import BaseModel

from plait import LLMInference, Module, Parameter, functional, trace
from plait.errors import InputError, TraceError
from plait.graph import FormatField, InferenceGraph, Ref
from plait.tracing.proxy import SENTINEL_CHARS, Proxy


class Facts(BaseModel):
    title: str
    facts: list[str]


class Pipe(Module):
    """A module whose forward is given per test."""

    def __init__(self, body: Any, n_inputs: int = 1) -> None:
        super().__init__()
        self.body = body
        self.llm = LLMInference(alias="fast")
        self.extract = LLMInference(alias="fast", response_format=Facts)
        self.style = Parameter("Be brief.", description="style")

    def forward(self, text: Any) -> Any:
        return self.body(self, text)


def traced(body: Any) -> InferenceGraph:
    return trace(Pipe(body))


def all_literals(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in all_literals(v)]  # pyright: ignore
    if isinstance(value, dict):
        return [x for v in value.values() for x in all_literals(v)]  # pyright: ignore
    return [value]


def assert_no_sentinels(graph: InferenceGraph) -> None:
    for node in graph.nodes.values():
        for lit in all_literals((node.target, node.args, node.kwargs)):
            if isinstance(lit, str):
                assert not SENTINEL_CHARS.intersection(lit), node
    for lit in all_literals(graph.output):
        assert not (isinstance(lit, str) and SENTINEL_CHARS.intersection(lit))


def test_fstring_becomes_a_format_node_that_depends_on_the_call() -> None:
    g = traced(lambda self, text: self.llm(f"Analyze:\n{self.llm(text)!r:>5}"))
    fmt = g.nodes["format"]
    assert fmt.target == ("Analyze:\n", FormatField(0, "r", ">5"))
    assert fmt.args == (Ref("llm"),)
    assert g.nodes["llm_1"].args == (Ref("format"),)
    assert_no_sentinels(g)


def test_a_bare_fstring_of_one_value_is_its_string_form() -> None:
    # f"{x}" is str(x): a model reply of a pydantic type or a number becomes its text.
    g = traced(lambda self, text: self.llm(f"{text}"))
    assert g.nodes["format"].target == (FormatField(0, "", ""),)
    assert g.nodes["llm"].args == (Ref("format"),)


def test_str_format_percent_and_concatenation() -> None:
    def body(self: Any, text: Any) -> Any:
        a = self.llm("{}-{}".format(text, "lit"))
        b = self.llm("pct %s" % text)  # noqa: UP031 (%-formatting is traced)
        c = self.llm("pre " + a + " post")
        return [a, b, c]

    g = traced(body)
    kinds = [n.kind for n in g.nodes.values()]
    assert kinds.count("format") == 4  # format(), %, and two `+`
    assert g.nodes["format"].target == (FormatField(0, "", ""), "-lit")
    assert g.nodes["format_1"].target == ("pct ", FormatField(0, "s", ""))
    assert g.output == [Ref("llm"), Ref("llm_1"), Ref("llm_2")]
    assert_no_sentinels(g)


def test_structured_access_and_method_calls_are_nodes() -> None:
    def body(self: Any, text: Any) -> Any:
        facts = self.extract(text)
        return {"title": facts.title.strip(), "first": facts.facts[0], "n": 3}

    g = traced(body)
    kinds = [n.kind for n in g.nodes.values()]
    assert kinds.count("getattr") == 2  # .title and .facts; `.strip` became the method node
    assert "extract.title.strip" not in g.nodes
    method = next(n for n in g.nodes.values() if n.kind == "method")
    assert method.target == "strip"
    getitem = next(n for n in g.nodes.values() if n.kind == "getitem")
    assert getitem.target == 0
    assert g.output["n"] == 3
    assert set(g.output) == {"title", "first", "n"}


def test_functional_ops_and_user_ops_become_call_nodes() -> None:
    def body(self: Any, text: Any) -> Any:
        facts = self.extract(text)
        return self.llm(functional.render("T={t}", t=functional.to_json(facts)) +
                        functional.join(facts.facts))

    g = traced(body)
    calls = [n.target.rpartition(":")[2] for n in g.nodes.values() if n.kind == "call"]
    assert calls == ["to_json", "render", "join"]
    pickle.dumps(g)  # call nodes name functions by import path: still plain data


def test_ops_on_real_values_run_directly() -> None:
    assert functional.join(["a", "b"], sep="+") == "a+b"
    assert functional.concat("a", 1, sep="-") == "a-1"
    assert functional.parse_json('{"a": 1}') == {"a": 1}
    assert functional.to_json(Facts(title="t", facts=[])) == '{"title":"t","facts":[]}'


def test_local_functions_cannot_be_ops() -> None:
    def local(x: str) -> str:
        return x

    with pytest.raises(TraceError, match="module-level function"):
        functional.op(local)


def test_parameters_used_in_forward_are_param_nodes() -> None:
    g = traced(lambda self, text: self.llm(f"{self.style}: {text}"))
    assert g.nodes["param:style"].kind == "param"
    assert "param:style" in g.nodes["format"].deps


def test_nested_modules_flatten_with_dotted_paths() -> None:
    class Inner(Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = LLMInference(alias="a")

        def forward(self, x: Any) -> Any:
            return self.llm(x)

    class Middle(Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Inner()

        def forward(self, x: Any) -> Any:
            return self.inner(x)

    class Top(Module):
        def __init__(self) -> None:
            super().__init__()
            self.middle = Middle()
            self.other = Middle()

        def forward(self, x: Any) -> Any:
            return self.other(self.middle(x))

    g = trace(Top())
    llm = g.llm_nodes()
    assert [n.target for n in llm] == ["middle.inner.llm", "other.inner.llm"]
    assert [n.module_path for n in llm] == ["middle.inner", "other.inner"]
    assert llm[1].deps == (llm[0].id,)


def test_leaf_modules_are_single_nodes() -> None:
    class Clean(Module):
        leaf = True

        def forward(self, text: str) -> str:
            return text.strip().lower()

    class Top(Module):
        def __init__(self) -> None:
            super().__init__()
            self.clean = Clean()
            self.llm = LLMInference(alias="a")

        def forward(self, x: Any) -> Any:
            return self.llm(self.clean(x))

    g = trace(Top())
    assert g.nodes["clean"].kind == "module" and g.nodes["clean"].module_type == "Clean"


def _line_of(fn: Any, marker: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if marker in line)


class Branchy(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="a")

    def forward(self, x: Any) -> Any:
        summary = self.llm(x)
        if summary:  # BRANCH
            return summary
        return x


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (lambda self, t: [w for w in self.llm(t)], "iterate over"),
        (lambda self, t: len(self.llm(t)), "take len() of"),
        (lambda self, t: "x" in self.llm(t), "membership"),
        (lambda self, t: self.llm(t) == "x", "compare"),
        (lambda self, t: self.extract(t)[self.llm(t)], "index with a traced value"),
        (lambda self, t: self.llm(t)(), "Cannot call a traced value"),
        (lambda self, t: pickle.dumps(self.llm(t)), "pickle"),
        (lambda self, t: self.llm(t) + 3, "only strings concatenate"),
        (lambda self, t: self.llm(f"Doc: {t}"[:8]), "different graph"),
    ],
    ids=["iter", "len", "in", "eq", "index", "call", "pickle", "add-int", "slice"],
)
def test_unsupported_operations_raise_trace_errors(body: Any, words: str) -> None:
    with pytest.raises(TraceError) as info:
        traced(body)
    assert words in str(info.value)
    assert "test_tracing.py:" in str(info.value)


def test_branching_names_file_and_line_and_the_alternative() -> None:
    with pytest.raises(TraceError) as info:
        trace(Branchy())
    msg = str(info.value)
    assert f"test_tracing.py:{_line_of(Branchy.forward, '# BRANCH')}" in msg
    assert "branch on" in msg and "leaf = True" in msg and "functional.op" in msg


def test_proxy_attribute_assignment_and_await_fail() -> None:
    def assign(self: Any, t: Any) -> Any:
        out = self.llm(t)
        out.x = 1
        return out

    with pytest.raises(TraceError, match="assign an attribute"):
        traced(assign)


def test_proxy_private_attributes_are_not_nodes() -> None:
    g = traced(lambda self, t: (hasattr(self.llm(t), "_repr_html_"), self.llm(t))[1])
    assert all(n.kind != "getattr" for n in g.nodes.values())


def test_proxies_format_to_sentinels_only_inside_tracing() -> None:
    seen: list[Any] = []

    def body(self: Any, t: Any) -> Any:
        out = self.llm(t)
        seen.append(out)
        return out

    traced(body)
    (proxy,) = seen
    assert isinstance(proxy, Proxy) and proxy.node_id == "llm"
    assert SENTINEL_CHARS.intersection(str(proxy))


def test_a_stale_placeholder_from_another_trace_is_refused() -> None:
    stale: list[str] = []

    def first(self: Any, t: Any) -> Any:
        stale.append(f"{self.llm(t)}!")
        return self.llm(t)

    traced(first)
    with pytest.raises(TraceError, match="earlier trace"):
        traced(lambda self, t: self.llm(stale[0]))


def test_inputs_must_fit_forward() -> None:
    with pytest.raises(InputError, match="takes 1 input"):
        trace(Pipe(lambda self, t: t), num_args=2)
    with pytest.raises(InputError, match="missing a required argument"):
        trace(Pipe(lambda self, t: t), num_args=0)


def test_kwarg_inputs_and_var_args() -> None:
    class Star(Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = LLMInference(alias="a")

        def forward(self, *docs: Any) -> Any:
            return [self.llm(d) for d in docs]

    g = trace(Star(), num_args=3)
    assert g.input_ids == ["input:docs_0", "input:docs_1", "input:docs_2"]
    g2 = trace(Pipe(lambda self, t: self.llm(t)), num_args=0, kwarg_names=("text",))
    assert g2.nodes["input:text"].target == "text"

"""InferenceGraph: plain data, cached per structure, ordered, visualised (no sockets)."""

from __future__ import annotations

import pickle

from plait import InferenceGraph, LLMInference, Module, Parameter, trace
from plait.graph import GraphNode, Ref
from plait.tracing import tracer as tracer_module


class ExtractAndCompare(Module):
    def __init__(self) -> None:
        super().__init__()
        self.style = Parameter("Compare.", description="style")
        self.extractor = LLMInference(alias="fast", system_prompt="Extract.")
        self.comparer = LLMInference(alias="smart", system_prompt=self.style)

    def forward(self, doc1: str, doc2: str) -> str:
        facts1 = self.extractor(doc1)
        facts2 = self.extractor(doc2)
        return self.comparer(f"Compare:\n{facts1}\n\nvs:\n{facts2}")


def graph() -> InferenceGraph:
    return trace(ExtractAndCompare(), num_args=2)


def test_graph_is_plain_picklable_data_with_a_stable_hash() -> None:
    g = graph()
    copy = pickle.loads(pickle.dumps(g))
    assert copy.structural_hash() == g.structural_hash()
    assert copy.nodes == g.nodes and copy.output == g.output
    assert trace(ExtractAndCompare(), num_args=2).structural_hash() == g.structural_hash()
    for node in g.nodes.values():
        assert isinstance(node, GraphNode)
        assert not isinstance(node.target, Module)


def test_structural_hash_changes_with_structure_not_with_parameter_values() -> None:
    module = ExtractAndCompare()
    before = trace(module, num_args=2).structural_hash()
    module.style.value = "Something else."
    assert trace(module, num_args=2).structural_hash() == before
    module.comparer = LLMInference(alias="other")
    assert trace(module, num_args=2).structural_hash() != before


def test_node_ids_kinds_and_edges() -> None:
    g = graph()
    assert list(g.nodes) == ["input:doc1", "input:doc2", "extractor", "extractor_1", "format",
                             "comparer"]
    assert g.nodes["extractor_1"].deps == ("input:doc2",)
    assert g.nodes["format"].kind == "format"
    assert set(g.nodes["format"].deps) == {"extractor", "extractor_1"}
    assert g.output == Ref("comparer") and g.output_refs() == ["comparer"]
    assert g.aliases() == {"fast", "smart"}
    assert [n.id for n in g.llm_nodes()] == ["extractor", "extractor_1", "comparer"]


def test_topological_order_ancestors_descendants() -> None:
    g = graph()
    order = g.topological_order()
    assert sorted(order) == sorted(g.nodes)
    for nid, node in g.nodes.items():
        assert all(order.index(dep) < order.index(nid) for dep in node.deps)
    assert g.ancestors("comparer") == {"input:doc1", "input:doc2", "extractor", "extractor_1",
                                       "format"}
    assert g.ancestors("extractor") == {"input:doc1"}
    assert g.descendants("input:doc1") == {"extractor", "format", "comparer"}
    assert g.descendants("comparer") == set()
    assert g.dependents()["extractor"] == ["format"]


def test_dot_and_mermaid_show_nodes_edges_and_aliases() -> None:
    g = graph()
    dot = g.to_dot()
    assert dot.startswith("digraph plait {") and dot.endswith("}")
    assert '"extractor" -> "format";' in dot and '"comparer" -> "output";' in dot
    assert 'label="comparer\\n(smart)", shape=box' in dot
    mermaid = g.to_mermaid()
    assert mermaid.startswith("flowchart TD")
    assert 'n5["comparer<br/>smart"]' in mermaid and "n5 --> out" in mermaid
    assert "n2 --> n4" in mermaid and "n3 --> n4" in mermaid
    assert "extractor" in repr(g) or "llm" in repr(g)


def test_graph_is_cached_per_module_structure(monkeypatch) -> None:
    traced: list[int] = []
    real_trace = tracer_module.Tracer.trace

    def counting(self, num_args, kwarg_names):  # type: ignore[no-untyped-def]
        traced.append(num_args)
        return real_trace(self, num_args, kwarg_names)

    monkeypatch.setattr(tracer_module.Tracer, "trace", counting)
    module = ExtractAndCompare()
    first = module.graph_for(2)
    assert module.graph_for(2) is first and traced == [2]
    module.style.value = "new value"  # a Parameter value is data, not structure
    assert module.graph_for(2) is first and traced == [2]
    module.extractor.temperature = 0.5  # any attribute change anywhere re-traces
    assert module.graph_for(2) is not first and traced == [2, 2]
    assert module.graph_for(1, ("doc2",)) is not None and traced == [2, 2, 1]


def test_a_batch_traces_once(monkeypatch) -> None:
    """A batch of N rows traces the graph once, not N times (split_inputs + graph_for)."""
    from plait.execution.inputs import split_inputs

    traced: list[int] = []
    real_trace = tracer_module.Tracer.trace

    def counting(self, num_args, kwarg_names):  # type: ignore[no-untyped-def]
        traced.append(num_args)
        return real_trace(self, num_args, kwarg_names)

    monkeypatch.setattr(tracer_module.Tracer, "trace", counting)
    module = ExtractAndCompare()
    inputs = split_inputs(module, ([(f"a{i}", f"b{i}") for i in range(50)],), {})
    graphs = {id(module.graph_for(*inputs.shape)) for _ in inputs.rows}
    assert len(graphs) == 1 and traced == [2]

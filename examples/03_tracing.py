"""DAG capture: forward() is traced once into an InferenceGraph you can inspect and draw."""

import pickle

from plait import LLMInference, Module, trace


class CompareFormatter(Module):
    def forward(self, facts1: str, facts2: str) -> str:
        return f"Compare:\n{facts1}\n\nvs:\n{facts2}"


class ExtractAndCompare(Module):
    def __init__(self) -> None:
        super().__init__()
        self.extractor = LLMInference(alias="fast", system_prompt="Extract facts.")
        self.formatter = CompareFormatter()
        self.comparer = LLMInference(alias="smart", system_prompt="Compare.")

    def forward(self, doc1: str, doc2: str) -> str:
        return self.comparer(self.formatter(self.extractor(doc1), self.extractor(doc2)))


if __name__ == "__main__":
    graph = trace(ExtractAndCompare(), num_args=2)
    print(graph)
    print("order:", graph.topological_order())
    print("ancestors of comparer:", sorted(graph.ancestors("comparer")))
    print("\nMermaid:\n" + graph.to_mermaid())
    print("\nDOT:\n" + graph.to_dot())
    again = pickle.loads(pickle.dumps(graph))
    print("\npickles, same structural hash:", again.structural_hash() == graph.structural_hash())

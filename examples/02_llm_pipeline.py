"""LLMInference and pipeline patterns: chains, fan-out, structured outputs."""

import asyncio

from _offline import example_resources
from pydantic import BaseModel

from plait import LLMInference, Module


class Facts(BaseModel):
    """What the extractor returns: a pydantic model, validated on arrival."""

    title: str
    facts: list[str]


class ExtractAndCompare(Module):
    def __init__(self) -> None:
        super().__init__()
        self.extractor = LLMInference(alias="fast", response_format=Facts,
                                      system_prompt="Extract the main facts.")
        self.comparer = LLMInference(alias="smart", system_prompt="Compare the two fact lists.")

    def forward(self, doc1: str, doc2: str) -> str:
        facts1 = self.extractor(doc1)  # these two calls are independent: they run in parallel
        facts2 = self.extractor(doc2)
        return self.comparer(
            f"{facts1.title}: {facts1.facts}\n\nvs\n\n{facts2.title}: {facts2.facts}"
        )


async def main() -> None:
    with example_resources() as resources:
        pipeline = ExtractAndCompare().bind(resources=resources)
        print(await pipeline("Cats sleep 16 hours a day.", "Dogs sleep 12 hours a day."))
        print(pipeline.last_run.endpoints["fast"]["requests"], "fast requests")


if __name__ == "__main__":
    asyncio.run(main())

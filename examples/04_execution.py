"""Ways to run: bind, run(), ExecutionSettings, batches, streaming, run_sync."""

import asyncio

from _offline import example_resources

from plait import ExecutionSettings, LLMInference, Module, run


class Summarize(Module):
    def __init__(self) -> None:
        super().__init__()
        self.summarizer = LLMInference(alias="fast", system_prompt="Summarize concisely.")
        self.analyzer = LLMInference(alias="smart", system_prompt="Analyse the summary.")

    def forward(self, text: str) -> str:
        return self.analyzer(f"Analyze this summary:\n{self.summarizer(text)}")


async def main() -> None:
    with example_resources() as resources:
        pipeline = Summarize().bind(resources=resources)
        print("single:", await pipeline("plait runs pipelines."))
        batch = [f"document number {i}" for i in range(10)]
        results = await pipeline(batch)
        print("batch:", len(results), "results, in input order:", results[3][-20:])
        print("run():", await run(Summarize(), "one more", resources=resources, max_inflight=4))

        async with ExecutionSettings(resources=resources, streaming=True, on_progress=None):
            async for r in Summarize()(batch):
                print(f"  row {r.index} ok={r.ok}")
        print(pipeline.last_run.to_dict()["endpoints"]["fast"]["requests"], "fast requests")


if __name__ == "__main__":
    asyncio.run(main())
    with example_resources() as resources:
        print("run_sync:", Summarize().bind(resources=resources).run_sync("from sync code"))

"""A dataset-scale run on Ray: summarize and classify reviews, write Parquet.

Offline by default: a loopback LLM server (plait.testing) stands in for the providers. With
OPENAI_API_KEY set, the real OpenAI API is used instead.

    python examples/06_ray_dataset.py --output out/reviews
    plait run examples/06_ray_dataset.py:ReviewPipeline --input reviews.parquet \
        --output out/ --resources resources.yaml --executor ray
"""

from __future__ import annotations

import argparse
import os
from contextlib import ExitStack
from typing import Literal

from pydantic import BaseModel

from plait import LLMInference, Module
from plait.resources import OpenAIEndpointConfig, ResourceConfig


class Verdict(BaseModel):
    sentiment: Literal["positive", "negative", "mixed"]
    score: int


class ReviewPipeline(Module):
    """Summarize a review, then classify the summary (a struct output column)."""

    def __init__(self) -> None:
        super().__init__()
        self.summarize = LLMInference(alias="fast", system_prompt="Summarize in one sentence.")
        self.classify = LLMInference(alias="fast", system_prompt="Classify the sentiment.",
                                     response_format=Verdict)

    def forward(self, review: str) -> Verdict:
        return self.classify(f"Review summary: {self.summarize(review)}")


def reviews(count: int) -> list[dict[str, object]]:
    moods = ["loved it", "hated it", "it was fine", "would buy again", "broke in a week"]
    return [{"review": f"Review {i}: {moods[i % len(moods)]}.", "stars": i % 5 + 1}
            for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="out/reviews")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--address", help="Ray address (default: the job's cluster, or local)")
    parser.add_argument("--profile", help="Write a Chrome trace here")
    args = parser.parse_args()

    import ray

    from plait_ray.dataset import run_dataset

    with ExitStack() as stack:
        env_vars: dict[str, str] = {}
        if os.environ.get("OPENAI_API_KEY"):
            resources = ResourceConfig(endpoints={
                "fast": OpenAIEndpointConfig(model="gpt-4o-mini", max_concurrent=32),
            })
        else:
            from plait.testing import LLMServer

            server = stack.enter_context(LLMServer.spawn(latency=0.02))
            resources = server.resource_config({"fast": "plait-test-model"}, max_concurrent=32)
            # Workers read keys from their environment; hand them the loopback server's key.
            env_vars = {"PLAIT_TESTING_API_KEY": os.environ["PLAIT_TESTING_API_KEY"]}
        # Inside a Ray Job RAY_ADDRESS names the cluster; alone, start a private local Ray.
        address = args.address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False)
        summary = run_dataset(ReviewPipeline(), reviews(args.rows), args.output,
                              resources=resources, rows_per_chunk=50, profile=args.profile,
                              executor_options={"env_vars": env_vars})
    print(summary.format())


if __name__ == "__main__":
    main()
